"""Image to image, inpainting and outpainting: prepare image and mask, denoise, paste back, save.

Kiri does the mask work itself (blur, "only masked" crop at full resolution, feathered
paste-back), so the promise "pixels outside the mask are kept exactly" is Kiri's, not a
pipeline's. diffusers' image-to-image and inpainting pipelines are derived from the loaded
model with `from_pipe` (same weights, no reload); a 9-channel UNet is a dedicated inpainting
checkpoint and is used as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from webui.engine.core.errors import InvalidRequest
from webui.engine.generation.call import PipelineCall
from webui.engine.generation.requests import Txt2ImgRequest, require_range
from webui.engine.generation.runner import common_infotext, version_param
from webui.engine.samplers.registry import Sampler

if TYPE_CHECKING:
    from PIL import Image

    from webui.engine.context import Engine
    from webui.engine.models.manager import LoadedModel

RESIZE_MODES = ("Just resize", "Crop and resize", "Resize and fill")
MASKED_CONTENT = ("fill", "original", "latent noise", "latent nothing")
MAX_MASK_BLUR = 64
MAX_PADDING = 256
MAX_OUTPAINT = 1024
SEAM_FIXES = ("None", "Half tile offset", "Bands")
MAX_SD_UPSCALE = 4
# Kiri's infotext keys for the kept source pictures (core/outputs.keep_source): 10 hex of their sha256
INIT_HASH = "Init image hash"
MASK_HASH = "Mask hash"


@dataclass
class SDUpscale:
    """AUTOMATIC1111's SD upscale script on an img2img request: upscale the init image by `scale`
    with `upscaler`, then image to image tile by tile (the request's width x height is the tile
    size, its denoising strength, seed and checkpoint are the tiles'), tiles blended over `overlap`
    pixels; `seam_fix` then denoises across the tile borders again (half-tile offset regions or
    bands) at `seam_fix_denoise`. The upscaler name is checked by the upscale capability."""

    upscaler: str = "Lanczos"
    scale: float = 2.0
    overlap: int = 64
    seam_fix: str = "None"
    seam_fix_denoise: float = 0.35
    seam_fix_width: int = 64  # Bands: the band denoised fully across each border
    seam_fix_padding: int = 16  # Bands: pixels each side where it fades out
    seed_per_tile: bool = False  # False: every tile with the picture's seed (A1111); True: seed + tile number

    def validate(self, width: int, height: int) -> None:
        if not isinstance(self.upscaler, str) or not self.upscaler.strip():
            raise InvalidRequest("sd_upscale.upscaler", "SD upscale needs an upscaler name")
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)) or not 1 <= self.scale <= MAX_SD_UPSCALE:
            raise InvalidRequest("sd_upscale.scale", f"SD upscale's scale must be between 1 and {MAX_SD_UPSCALE} (got {self.scale!r})")
        require_range("sd_upscale.overlap", self.overlap, 0, min(width, height) // 2)
        if self.seam_fix not in SEAM_FIXES:
            raise InvalidRequest("sd_upscale.seam_fix", f"seam fix must be one of {', '.join(SEAM_FIXES)} (got {self.seam_fix!r})")
        if isinstance(self.seam_fix_denoise, bool) or not isinstance(self.seam_fix_denoise, (int, float)) \
                or not 0 <= self.seam_fix_denoise <= 1:
            raise InvalidRequest("sd_upscale.seam_fix_denoise", f"seam fix denoising strength must be between 0 and 1 (got {self.seam_fix_denoise!r})")
        require_range("sd_upscale.seam_fix_width", self.seam_fix_width, 8, min(width, height))
        require_range("sd_upscale.seam_fix_padding", self.seam_fix_padding, 0, min(width, height) // 2)
        if not isinstance(self.seed_per_tile, bool):
            raise InvalidRequest("sd_upscale.seed_per_tile", "seed_per_tile must be true or false")


@dataclass
class Img2ImgRequest(Txt2ImgRequest):
    """A1111's /sdapi/v1/img2img fields; width and height are the size the model denoises at."""

    init_image: Any = None  # PIL image
    denoising_strength: float = 0.75
    resize_mode: int = 0  # 0 just resize, 1 crop and resize, 2 resize and fill
    mask: Any = None  # PIL image or None; white = repaint
    mask_blur: int = 4
    inpainting_mask_invert: int = 0
    inpainting_fill: int = 1  # 0 fill, 1 original, 2 latent noise, 3 latent nothing
    inpaint_full_res: bool = False  # True: "only masked"
    inpaint_full_res_padding: int = 32
    sd_upscale: SDUpscale | None = None  # the SD upscale script (see SDUpscale)

    def validate(self) -> None:
        super().validate()
        from PIL import Image

        if not isinstance(self.init_image, Image.Image):
            raise InvalidRequest("init_image", "the init image is missing or is not an image: upload a PNG, JPEG or WebP picture")
        if not isinstance(self.denoising_strength, (int, float)) or not 0 <= self.denoising_strength <= 1:
            raise InvalidRequest("denoising_strength", f"denoising strength must be between 0 and 1 (got {self.denoising_strength!r})")
        require_range("resize_mode", self.resize_mode, 0, len(RESIZE_MODES) - 1)
        require_range("mask_blur", self.mask_blur, 0, MAX_MASK_BLUR)
        require_range("inpainting_mask_invert", int(self.inpainting_mask_invert) if isinstance(self.inpainting_mask_invert, bool)
                       else self.inpainting_mask_invert, 0, 1)
        require_range("inpainting_fill", self.inpainting_fill, 0, len(MASKED_CONTENT) - 1)
        require_range("inpaint_full_res_padding", self.inpaint_full_res_padding, 0, MAX_PADDING)
        if self.mask is not None and not isinstance(self.mask, Image.Image):
            raise InvalidRequest("mask", "the mask is not an image: upload a black and white picture (white = repaint)")
        if isinstance(self.sd_upscale, dict):  # plain data (core/plain.py) keeps nested objects as dicts
            self.sd_upscale = SDUpscale(**self.sd_upscale)
        if self.sd_upscale is not None:
            if not isinstance(self.sd_upscale, SDUpscale):
                raise InvalidRequest("script_args", "sd_upscale must be the SD upscale settings")
            if self.mask is not None:
                raise InvalidRequest("mask", "SD upscale works on the whole picture: send no mask (or inpaint first)")
            self.sd_upscale.validate(self.width, self.height)

    def sources(self) -> dict[str, "Image.Image"]:
        """The pictures this request starts from, keyed by the infotext key that records their hash, as
        `prepare` reads them (init image as 8-bit RGB, mask as RGBA): kept as PNG with a saved output,
        they make the same picture again (the Library's Reproduce)."""
        from webui.engine.core.images import to_rgb, to_rgba

        kept = {INIT_HASH: to_rgb(self.init_image, "init_image")}
        if self.mask is not None:
            kept[MASK_HASH] = to_rgba(self.mask, "mask")
        return kept


def check_pixels(image: "Image.Image", max_pixels: int, field: str = "init_image") -> None:
    """The pixel budget (core/limits.py) on the image's header, before it is decoded."""
    from webui.engine.core.limits import check_input

    check_input(field, image.width, image.height, limit=max_pixels)


@dataclass
class Img2ImgTask:
    """Image to image, inpainting and outpainting as a task of the generation runner."""

    request: Img2ImgRequest
    plan: "ImagePlan"
    kind: str = "img2img"

    def check(self, model: "LoadedModel", sampler: Sampler, scheduler: Any, engine: "Engine") -> None:
        # The init image is noised by the sampler: add_noise for SD pipelines, scale_noise for flow ones.
        if not hasattr(scheduler, "scale_noise" if model.prediction == "flow" else "add_noise"):
            fitting = [n for n in engine.samplers.names(model.prediction) if n != sampler.name]
            raise InvalidRequest("sampler_name", f"sampler {sampler.name!r} cannot start from an init image yet; "
                                                 f"choose another, e.g. {', '.join(fitting[:4])}")

    @property
    def denoise_steps(self) -> int:
        return int(self.request.steps * self.request.denoising_strength)

    def steps_per_batch(self) -> int:
        return max(self.denoise_steps, 1)

    def call(self, model: "LoadedModel", prompt: str, negative: str, seeds: list[int], generators: list[Any]) -> PipelineCall:
        from PIL import Image

        r, plan = self.request, self.plan
        if self.denoise_steps == 0:
            return PipelineCall(model.pipeline, passthrough=[plan.model_image.copy() for _ in seeds])
        pipeline, dedicated = _derived_pipeline(model, plan.model_mask is not None)
        if plan.model_mask is not None and not dedicated and not _inpaint_fits(pipeline):
            # The inpainting pipeline refuses this model's latent layout (SD3's wants 16 channels):
            # denoise the prepared image with image to image; Kiri's paste-back still keeps the outside.
            pipeline, dedicated = _derived_pipeline(model, False)
        mask = plan.model_mask
        if mask is None and dedicated:
            mask = Image.new("L", plan.model_image.size, 255)  # an inpainting model repaints everything
        kwargs: dict[str, Any] = dict(
            prompt=prompt, negative_prompt=negative or None, image=plan.model_image, strength=r.denoising_strength,
            num_inference_steps=r.steps, guidance_scale=r.cfg_scale, width=r.width, height=r.height,
            num_images_per_prompt=r.batch_size, generator=generators, output_type="pil",
        )
        if mask is not None:
            kwargs["mask_image"] = mask
        return PipelineCall(pipeline, kwargs)

    def finish(self, images: list[Any]) -> list[Any]:
        return [self.plan.paste_back(image) for image in images]

    def sources(self) -> dict[str, "Image.Image"]:
        """The pictures to keep with the saved outputs (runner.kept_sources)."""
        return self.request.sources()

    def infotext_params(self, model: "LoadedModel", sampler: str, schedule: str, seed: int) -> dict[str, object]:
        params = _infotext_params(self.request, model, sampler, schedule, seed)
        output = self.plan.base.size  # "only masked" (and outpaint, which uses it) pastes into the whole picture
        if output != (self.request.width, self.request.height):
            # "Size" is the saved picture's, as a reader expects; the size the model denoised at follows it.
            params = {**params, "Size": "{}x{}".format(*output),
                      "Processing size": f"{self.request.width}x{self.request.height}"}
        return {**params, **version_param()}


# --- image and mask preparation -------------------------------------------------------------

@dataclass
class ImagePlan:
    """What the model denoises (model_image, model_mask) and how its output goes back into base."""

    base: "Image.Image"  # the picture the output is pasted into, at the output size
    model_image: "Image.Image"  # width x height, masked content already applied
    model_mask: "Image.Image | None"  # width x height, L, blurred
    paste_mask: "Image.Image | None"  # base size, L, blurred: 0 keeps base pixels exactly
    box: tuple[int, int, int, int] | None  # "only masked": crop box in base

    def paste_back(self, image: "Image.Image") -> "Image.Image":
        from PIL import Image

        image = image.convert("RGB")
        if self.paste_mask is None:
            return image
        if self.box is None:
            generated = image.resize(self.base.size, Image.LANCZOS) if image.size != self.base.size else image
        else:
            x0, y0, x1, y1 = self.box
            generated = self.base.copy()
            generated.paste(image.resize((x1 - x0, y1 - y0), Image.LANCZOS), (x0, y0))
        return Image.composite(generated, self.base, self.paste_mask)


def prepare(request: Img2ImgRequest, warnings: list[str]) -> ImagePlan:
    from PIL import Image, ImageFilter

    from webui.engine.core.images import to_rgba, to_rgb

    # Decoded here, after the caller's check_pixels on the header; 16-bit and float by their real range.
    image = to_rgb(request.init_image, "init_image")
    width, height = request.width, request.height
    if request.mask is None:
        model_image = resize_image(image, request.resize_mode, width, height)
        return ImagePlan(model_image, model_image, None, None, None)

    mask = to_rgba(request.mask, "mask")
    if mask.getextrema()[-1][0] < 255:
        mask = mask.getchannel("A")  # a brush layer: painted where opaque
    else:
        mask = mask.convert("L")
    if mask.size != image.size:
        warnings.append(f"The mask is {mask.width}x{mask.height} and the image {image.width}x{image.height}: "
                        "the mask was resized to the image.")
        mask = mask.resize(image.size, Image.NEAREST)
    mask = mask.point(lambda v: 255 if v >= 128 else 0)
    if request.inpainting_mask_invert:
        mask = mask.point(lambda v: 255 - v)
    if mask.getextrema() == (0, 0):
        raise InvalidRequest("mask", "the mask is empty: paint the part to repaint in white"
                             + (" (the mask is inverted)" if request.inpainting_mask_invert else ""))
    if mask.getextrema() == (255, 255):
        warnings.append("The mask covers the whole image: everything is repainted.")

    blurred = mask.filter(ImageFilter.GaussianBlur(request.mask_blur)) if request.mask_blur else mask
    if request.inpaint_full_res:
        # "Only masked": crop around the mask at full resolution, denoise the crop at width x height.
        box = crop_box(mask, request.inpaint_full_res_padding, width, height)
        base = image
        crop, crop_mask = image.crop(box), mask.crop(box)
        model_image = crop.resize((width, height), Image.LANCZOS)
        model_mask = crop_mask.resize((width, height), Image.LANCZOS)
    else:
        box = None
        base = resize_image(image, request.resize_mode, width, height)
        mask = resize_image(mask, request.resize_mode, width, height).point(lambda v: 255 if v >= 128 else 0)
        blurred = mask.filter(ImageFilter.GaussianBlur(request.mask_blur)) if request.mask_blur else mask
        model_image, model_mask = base, mask
    model_image = fill_masked(model_image, model_mask, request.inpainting_fill, request.seed)
    if request.mask_blur:
        model_mask = model_mask.filter(ImageFilter.GaussianBlur(request.mask_blur))
    return ImagePlan(base, model_image, model_mask, blurred, box)


def resize_image(image: "Image.Image", mode: int, width: int, height: int) -> "Image.Image":
    """A1111's resize modes: 0 just resize, 1 crop and resize (cover), 2 resize and fill (fit, edges stretched)."""
    from PIL import Image

    if image.size == (width, height):
        return image.copy()
    if mode == 0:
        return image.resize((width, height), Image.LANCZOS)
    if mode == 1:
        scale = max(width / image.width, height / image.height)
        w, h = max(width, round(image.width * scale)), max(height, round(image.height * scale))
        resized = image.resize((w, h), Image.LANCZOS)
        left, top = (w - width) // 2, (h - height) // 2
        return resized.crop((left, top, left + width, top + height))
    scale = min(width / image.width, height / image.height)
    w, h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    resized = image.resize((w, h), Image.LANCZOS)
    left, top = (width - w) // 2, (height - h) // 2
    import cv2
    import numpy as np

    array = np.asarray(resized)
    padded = cv2.copyMakeBorder(array, top, height - h - top, left, width - w - left, cv2.BORDER_REPLICATE)
    return Image.fromarray(padded)


def crop_box(mask: "Image.Image", padding: int, width: int, height: int) -> tuple[int, int, int, int]:
    """The mask's bounding box plus padding, grown to the width:height ratio, kept inside the image."""
    x0, y0, x1, y1 = mask.getbbox()
    x0, y0, x1, y1 = x0 - padding, y0 - padding, x1 + padding, y1 + padding
    w, h = x1 - x0, y1 - y0
    ratio = width / height
    if w / h < ratio:
        grow = round(h * ratio) - w
        x0, x1 = x0 - grow // 2, x1 + grow - grow // 2
    else:
        grow = round(w / ratio) - h
        y0, y1 = y0 - grow // 2, y1 + grow - grow // 2
    (x0, x1), (y0, y1) = _inside(x0, x1, mask.width), _inside(y0, y1, mask.height)
    return x0, y0, x1, y1


def _inside(start: int, end: int, limit: int) -> tuple[int, int]:
    """Slide the span [start, end) into [0, limit), keeping its length; the whole range if it is longer."""
    if end - start > limit:
        return 0, limit
    if start < 0:
        return 0, end - start
    if end > limit:
        return start - (end - limit), limit
    return start, end


def fill_masked(image: "Image.Image", mask: "Image.Image", mode: int, seed: int) -> "Image.Image":
    """Masked content: 0 fill from the surroundings, 1 original, 2 noise, 3 nothing (flat grey).

    Modes 2 and 3 are applied in pixel space: random colours and mid grey encode to a noisy and
    a near-empty latent."""
    import cv2
    import numpy as np
    from PIL import Image

    if mode == 1:
        return image
    array = np.asarray(image.convert("RGB")).copy()
    hole = np.asarray(mask) >= 128
    if mode == 0:
        array = cv2.inpaint(array, hole.astype(np.uint8) * 255, 5, cv2.INPAINT_TELEA)
    elif mode == 2:
        rng = np.random.default_rng(seed if seed >= 0 else None)
        array[hole] = rng.integers(0, 256, size=(int(hole.sum()), 3), dtype=np.uint8)
    else:
        array[hole] = 127
    return Image.fromarray(array)


def outpaint_canvas(image: "Image.Image", left: int, right: int, up: int, down: int) -> tuple["Image.Image", "Image.Image"]:
    """A bigger canvas with the picture's edges stretched into the new area, and its mask (white = new)."""
    import cv2
    import numpy as np
    from PIL import Image

    for name, value in (("left", left), ("right", right), ("up", up), ("down", down)):
        require_range(f"outpaint_{name}", value, 0, MAX_OUTPAINT)
    if not left + right + up + down:
        raise InvalidRequest("outpaint_left", "choose at least one direction to extend the canvas by some pixels")
    array = np.asarray(image.convert("RGB"))
    canvas = cv2.copyMakeBorder(array, up, down, left, right, cv2.BORDER_REPLICATE)
    canvas = Image.fromarray(canvas)
    mask = Image.new("L", canvas.size, 255)
    mask.paste(0, (left, up, left + image.width, up + image.height))
    return canvas, mask


# --- the pipeline --------------------------------------------------------------------------

def _derived_pipeline(model: "LoadedModel", inpaint: bool) -> Any:
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

    pipeline = model.pipeline
    unet = getattr(pipeline, "unet", None)
    dedicated = unet is not None and unet.config.in_channels == 9
    key = ("pipeline", "inpaint" if dedicated or inpaint else "image2image", type(pipeline).__name__, ())
    if key in model.derived:  # built once per loaded model (the same components), dropped with it
        return model.derived[key], dedicated
    try:
        derived = (AutoPipelineForInpainting if dedicated or inpaint else AutoPipelineForImage2Image).from_pipe(pipeline)
    except ValueError as exc:  # diffusers has no image-to-image / inpainting pipeline for this family (PixArt)
        raise InvalidRequest("init_image", f"{model.name} is a {type(pipeline).__name__} model, and Kiri has no "
                             f"{'inpainting' if inpaint else 'image to image'} pipeline for it yet; use text to image, "
                             "or an SD 1.x, SD 2.x, SDXL, SD3 or Flux model") from exc
    derived.set_progress_bar_config(disable=True)  # Kiri reports progress itself; tqdm would spam the console
    model.derived[key] = derived
    return derived, dedicated


def _inpaint_fits(pipeline: Any) -> bool:
    """Whether this model's denoiser has a channel count the inpainting pipeline takes (diffusers
    checks it only mid-call: UNets 4 or 9, SD3 transformers 16 or 33)."""
    unet, transformer = getattr(pipeline, "unet", None), getattr(pipeline, "transformer", None)
    if unet is not None:
        return unet.config.in_channels in (4, 9)
    if transformer is not None and type(pipeline).__name__.startswith("StableDiffusion3"):
        return transformer.config.in_channels in (16, 33)
    return True


def _infotext_params(request: Img2ImgRequest, model: "LoadedModel", sampler: str, schedule: str, seed: int) -> dict[str, object]:
    params: dict[str, object] = {
        **common_infotext(request, model, sampler, schedule, seed),
        "Denoising strength": request.denoising_strength,
        "Resize mode": RESIZE_MODES[request.resize_mode] if request.resize_mode else None,
    }
    if request.mask is not None:
        params.update({
            "Mask blur": request.mask_blur,
            "Mask mode": "Inpaint not masked" if request.inpainting_mask_invert else None,
            "Masked content": MASKED_CONTENT[request.inpainting_fill],
            "Inpaint area": "Only masked" if request.inpaint_full_res else "Whole picture",
            "Only masked padding": request.inpaint_full_res_padding if request.inpaint_full_res else None,
        })
    return params
