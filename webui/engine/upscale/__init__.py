"""Upscaling: the interpolation upscalers AUTOMATIC1111 always has (Lanczos, Nearest, None).

Model upscalers (ESRGAN and friends through spandrel) belong to the Super-resolution work and
register here when it lands.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from webui.engine.core.errors import InvalidRequest

if TYPE_CHECKING:
    from PIL import Image

MAX_OUTPUT_PIXELS = 8192 * 8192
MAX_OUTPUT_SIDE = 16384  # a 1 x 67108864 target is within the pixel cap but not a picture anyone wants
MAX_SCALE = 8


@dataclass(frozen=True)
class Upscaler:
    name: str
    resample: int | None  # PIL resampling filter; None keeps the image as it is


def builtin_upscalers() -> list[Upscaler]:
    from PIL import Image

    return [Upscaler("None", None), Upscaler("Lanczos", Image.Resampling.LANCZOS), Upscaler("Nearest", Image.Resampling.NEAREST)]


def find_upscaler(name: str | None, field: str = "upscaler_1") -> Upscaler:
    """The upscaler called `name` (case-insensitive); an unknown one is an InvalidRequest naming `field`."""
    if name is not None and not isinstance(name, str):
        raise InvalidRequest(field, f"{field} must be an upscaler name (a string)")
    wanted = (name or "None").strip()
    for upscaler in builtin_upscalers():
        if upscaler.name.lower() == wanted.lower():
            return upscaler
    names = ", ".join(u.name for u in builtin_upscalers())
    raise InvalidRequest(field, f"unknown upscaler {wanted[:100]!r} in {field}; available: {names}")


def target_size(width: int, height: int, scale: float | None = None, to_width: int | None = None,
                to_height: int | None = None) -> tuple[int, int]:
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
    if max(size) > MAX_OUTPUT_SIDE or size[0] * size[1] > MAX_OUTPUT_PIXELS:
        raise InvalidRequest(field, f"{size[0]}x{size[1]} is larger than Kiri makes (at most {MAX_OUTPUT_SIDE} "
                                    f"pixels a side and {MAX_OUTPUT_PIXELS} in all)")
    return size


def upscale(image: "Image.Image", size: tuple[int, int], first: str | None, second: str | None = None,
            second_visibility: float = 0.0, crop: bool = True) -> "Image.Image":
    """Resize with upscaler 1, optionally blended with upscaler 2; `crop` keeps the aspect ratio
    when a target size is given, cutting the overflow, as AUTOMATIC1111 does."""
    from PIL import Image

    from webui.engine.core.images import to_rgb

    one = find_upscaler(first, "upscaler_1")
    two = find_upscaler(second, "upscaler_2")
    rgb = to_rgb(image)  # 16-bit and float pictures by their real range, not clipped white
    result = _resize(rgb, size, one, crop)
    if two.resample is not None and second_visibility > 0:
        other = _resize(rgb, size, two, crop)
        result = Image.blend(result, other, min(1.0, float(second_visibility)))
    return result


def _resize(image: "Image.Image", size: tuple[int, int], upscaler: Upscaler, crop: bool) -> "Image.Image":
    from PIL import ImageOps

    resample = upscaler.resample if upscaler.resample is not None else 1  # "None" still has to reach the size
    if crop and image.size[0] * size[1] != image.size[1] * size[0]:
        return ImageOps.fit(image, size, method=resample)
    return image.resize(size, resample=resample)
