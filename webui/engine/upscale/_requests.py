"""Super-resolution's request and result, and the sizes: the target size of a picture and the
pictures every model pass makes on the way, each checked against the output budget before any
pixel work."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from webui.engine.core.errors import InvalidRequest
from webui.engine.core.limits import DEFAULT_MAX_OUTPUT_PIXELS, check_output

if TYPE_CHECKING:
    from PIL import Image

    from ._listing import Upscaler

MAX_OUTPUT_PIXELS = DEFAULT_MAX_OUTPUT_PIXELS  # the ceiling of Settings.max_output_pixels here
MAX_OUTPUT_SIDE = 16384  # a 1 x 67108864 target is within the pixel cap but not a picture anyone wants
MAX_SCALE = 8
MAX_TILE = 4096
MAX_OVERLAP = 256
MAX_BATCH = 100
DIFFUSION_STEPS = 20  # a diffusion upscaler's denoising steps per tile
MAX_MODEL_PASSES = 3  # a x2 model reaching x8 runs three times, as AUTOMATIC1111 does


def target_size(width: int, height: int, scale: float | None = None, to_width: int | None = None,
                to_height: int | None = None, max_pixels: int = MAX_OUTPUT_PIXELS) -> tuple[int, int]:
    """The output size: `to_width` x `to_height` when either is given (A1111's resize_mode 1),
    else the input size times `scale`. Refused before any pixel work when out of range."""
    if to_width is not None or to_height is not None:
        for name, value in (("upscaling_resize_w", to_width), ("upscaling_resize_h", to_height)):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_OUTPUT_SIDE:
                raise InvalidRequest(name, f"{name} must be a whole number of pixels from 1 to {MAX_OUTPUT_SIDE} (got {value!r})")
        size = (to_width, to_height)
        field = "upscaling_resize_w"
    else:
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale <= MAX_SCALE:
            raise InvalidRequest("upscaling_resize", f"scale must be above 0 and at most {MAX_SCALE} (got {scale!r})")
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        field = "upscaling_resize"
    if max(size) > MAX_OUTPUT_SIDE:
        raise InvalidRequest(field, f"{field} would make a picture of {size[0]}x{size[1]}; Kiri makes at most "
                                    f"{MAX_OUTPUT_SIDE} pixels a side")
    check_output(field, size[0], size[1], limit=min(max_pixels, MAX_OUTPUT_PIXELS))
    return size


def check_model_passes(upscaler: Upscaler, width: int, height: int, size: tuple[int, int], field: str,
                       max_pixels: int = MAX_OUTPUT_PIXELS) -> None:
    """Every picture a model upscaler makes on the way from width x height to `size` fits the output
    budget: each pass makes the whole picture x the model's scale (a x4 model on 8000x8000 makes
    32000x32000 before the resize down to the target), repeated as _with() does until it covers
    the target. Classic resamplers make only the target."""
    if upscaler.kind not in ("model", "diffusion"):
        return
    limit = min(max_pixels, MAX_OUTPUT_PIXELS)
    cover = max(size[0] / width, size[1] / height)
    w, h = width, height
    for _ in range(MAX_MODEL_PASSES):
        w, h = w * upscaler.scale, h * upscaler.scale
        check_output(field, w, h, limit=limit, what=f"an intermediate picture ({upscaler.name} is x{upscaler.scale})")
        if w >= width * cover - 0.5:
            break


# --- requests and results --------------------------------------------------------------------

@dataclass
class UpscaleRequest:
    """One Super-resolution request: one picture or a batch, the same settings for each."""

    images: list[Any]  # PIL images
    upscaler_1: str = "Lanczos"
    upscaler_2: str = "None"
    upscaler_2_visibility: float = 0.0
    scale: float = 2.0
    width: int | None = None  # resize to width x height instead of by scale (either may be given)
    height: int | None = None
    crop: bool = True  # with a target size: keep the aspect ratio, cutting the overflow
    tile_size: int = 0  # 0: chosen from free memory
    tile_overlap: int = 32
    names: list[str] = field(default_factory=list)  # file names of a batch, for the results
    save_images: bool | None = None
    image_format: str | None = None
    addons: dict[str, Any] = field(default_factory=dict)  # {add-on name: settings}: a diffusion upscaler's tile calls

    def validate(self) -> None:
        from PIL import Image

        if not isinstance(self.images, list) or not self.images:
            raise InvalidRequest("image", "no image to upscale: upload a picture")
        if len(self.images) > MAX_BATCH:
            raise InvalidRequest("imageList", f"at most {MAX_BATCH} images in one batch (got {len(self.images)})")
        if not isinstance(self.addons, dict):
            raise InvalidRequest("addons", "addons must be an object of {name: settings}")
        if not all(isinstance(image, Image.Image) for image in self.images):
            raise InvalidRequest("image", "an item of the batch is not an image: upload PNG, JPEG or WebP pictures")
        if isinstance(self.upscaler_2_visibility, bool) or not isinstance(self.upscaler_2_visibility, (int, float)) \
                or not 0 <= self.upscaler_2_visibility <= 1:
            raise InvalidRequest("extras_upscaler_2_visibility", f"upscaler 2 visibility must be between 0 and 1 (got {self.upscaler_2_visibility!r})")
        for name, value, low, high in (("tile_size", self.tile_size, 0, MAX_TILE), ("tile_overlap", self.tile_overlap, 0, MAX_OVERLAP)):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise InvalidRequest(name, f"{name} must be a whole number from {low} to {high} (got {value!r})")
        if self.tile_size and self.tile_size < 32:
            raise InvalidRequest("tile_size", f"tile_size must be 0 (automatic) or at least 32 (got {self.tile_size})")
        if self.tile_size and 2 * self.tile_overlap > self.tile_size:  # else tiles would overlap past the next one
            raise InvalidRequest("tile_overlap", f"tile_overlap must be at most half the tile size "
                                                 f"({self.tile_size // 2} for {self.tile_size}-pixel tiles; got {self.tile_overlap})")

    def size_for(self, image: "Image.Image", max_pixels: int = MAX_OUTPUT_PIXELS) -> tuple[int, int]:
        if self.width is not None or self.height is not None:
            to_w, to_h = self.width, self.height
            if to_w is None or to_w == 0:  # only the height given: keep the aspect ratio
                to_w = max(1, round(image.width * to_h / image.height)) if isinstance(to_h, int) and to_h > 0 else to_w
            if to_h is None or to_h == 0:
                to_h = max(1, round(image.height * to_w / image.width)) if isinstance(to_w, int) and to_w > 0 else to_h
            return target_size(image.width, image.height, to_width=to_w, to_height=to_h, max_pixels=max_pixels)
        return target_size(image.width, image.height, scale=self.scale, max_pixels=max_pixels)


@dataclass
class UpscaleResult:
    images: list[Any] = field(default_factory=list)
    infotexts: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    interrupted: bool = False
    tiles: int = 0

