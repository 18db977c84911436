"""Super-resolution: the public surface of upscaling (the one module UI, API and hires fix call).

Upscalers are of four kinds: the classic resamplers (None, Lanczos, Bicubic, Nearest, Area),
model upscalers from models/upscalers/ (ESRGAN, Real-ESRGAN, SwinIR, DAT, HAT, ... read by
spandrel, or by Kiri's own readers; see _models.py), diffusion upscalers (diffusers folders whose
model_index.json names StableDiffusionUpscalePipeline, StableDiffusionLatentUpscalePipeline or
LDMSuperResolutionPipeline), and, for hires fix only, the latent modes. Model upscalers run over
overlapping feathered tiles (_tiles.py), a turn of the job each, so progress is per tile,
Interrupt keeps finished tiles and an out-of-memory tile is retried smaller.

    request = UpscaleRequest(images=[image], upscaler_1="4x-tiny", scale=2)
    result = upscale_images(engine, request, job)      # a job in the fair queue; saved with infotext
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generator

from webui.engine.core.errors import InvalidRequest
from webui.engine.core.limits import DEFAULT_MAX_OUTPUT_PIXELS, check_input, check_output

if TYPE_CHECKING:
    from PIL import Image

    from webui.engine.context import Engine
    from webui.engine.core.jobs import Job
    from webui.engine.registries import Registries
    from webui.engine.models.catalog import Catalog

MAX_OUTPUT_PIXELS = DEFAULT_MAX_OUTPUT_PIXELS  # the ceiling of Settings.max_output_pixels here
MAX_OUTPUT_SIDE = 16384  # a 1 x 67108864 target is within the pixel cap but not a picture anyone wants
MAX_SCALE = 8
MAX_TILE = 4096
MAX_OVERLAP = 256
MAX_BATCH = 100
DIFFUSION_STEPS = 20  # a diffusion upscaler's denoising steps per tile
MAX_MODEL_PASSES = 3  # a x2 model reaching x8 runs three times, as AUTOMATIC1111 does

# AUTOMATIC1111's latent upscale modes for hires fix: (interpolation, antialias).
LATENT_MODES = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}


@dataclass(frozen=True)
class Upscaler:
    name: str
    resample: int | None = None  # PIL filter of a classic resampler; None: no resampling ("None") or not classic
    kind: str = "classic"  # classic, model, diffusion, latent
    scale: int = 1  # the model's own factor (1 for classic)
    path: Path | None = None

    @property
    def label(self) -> str:
        """What the dropdowns show: the name, its kind and scale."""
        if self.kind == "classic":
            return self.name if self.name == "None" else f"{self.name} (resampler)"
        if self.kind == "latent":
            return f"{self.name} (latent)"
        return f"{self.name} ({self.kind} x{self.scale})"


def builtin_upscalers() -> list[Upscaler]:
    from PIL import Image

    R = Image.Resampling
    return [Upscaler("None"), Upscaler("Lanczos", R.LANCZOS), Upscaler("Bicubic", R.BICUBIC),
            Upscaler("Nearest", R.NEAREST), Upscaler("Area", R.BOX)]


def model_upscalers(catalog: "Catalog | None") -> list[Upscaler]:
    """The upscaler files and folders under models/upscalers/ (and A1111's ESRGAN/, RealESRGAN/, ...)."""
    from ._models import diffusion_class, guess_scale

    if catalog is None:
        return []
    found = []
    for entry in catalog.of_kind("upscaler"):
        kind = "diffusion" if entry.path.is_dir() else "model"
        if kind == "diffusion" and diffusion_class(entry.path) is None:
            continue
        found.append(Upscaler(entry.name, None, kind, guess_scale(entry.path), entry.path))
    return found


def latent_upscalers() -> list[Upscaler]:
    return [Upscaler(name, None, "latent") for name in LATENT_MODES]


def all_upscalers(catalog: "Catalog | None" = None, latent: bool = False) -> list[Upscaler]:
    return [*(latent_upscalers() if latent else []), *builtin_upscalers(), *model_upscalers(catalog)]


def find_upscaler(name: str | None, field: str = "upscaler_1", catalog: "Catalog | None" = None,
                  latent: bool = False) -> Upscaler:
    """The upscaler called `name` (case-insensitive; a dropdown label works too); an unknown one is
    an InvalidRequest naming `field` and listing the available ones."""
    if name is not None and not isinstance(name, str):
        raise InvalidRequest(field, f"{field} must be an upscaler name (a string)")
    wanted = (name or "None").strip().lower()
    choices = all_upscalers(catalog, latent)
    for upscaler in choices:
        if wanted in (upscaler.name.lower(), upscaler.label.lower()):
            return upscaler
    if catalog is not None:
        catalog.scan()  # a file added since the last scan
        choices = all_upscalers(catalog, latent)
        for upscaler in choices:
            if wanted in (upscaler.name.lower(), upscaler.label.lower()):
                return upscaler
    names = ", ".join(u.name for u in choices)
    raise InvalidRequest(field, f"unknown upscaler {(name or '').strip()[:100]!r} in {field}; available: {names}")


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

    def validate(self) -> None:
        from PIL import Image

        if not isinstance(self.images, list) or not self.images:
            raise InvalidRequest("image", "no image to upscale: upload a picture")
        if len(self.images) > MAX_BATCH:
            raise InvalidRequest("imageList", f"at most {MAX_BATCH} images in one batch (got {len(self.images)})")
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


def prepare_upscale(engine: "Engine", request: UpscaleRequest) -> list[tuple[int, int]]:
    """Everything checked before any pixel work, on the images' headers (core/limits.py): the
    upscalers, each picture against Settings.max_pixels, each output and every model pass's own
    output against Settings.max_output_pixels."""
    request.validate()
    one = find_upscaler(request.upscaler_1, "upscaler_1", engine.catalog)
    two = find_upscaler(request.upscaler_2, "upscaler_2", engine.catalog)
    blends = two.name != "None" and request.upscaler_2_visibility > 0
    limit = engine.settings.max_output_pixels
    field = "imageList" if len(request.images) > 1 or request.names else "image"
    sizes = []
    for image in request.images:
        check_input(field, image.width, image.height, limit=engine.settings.max_pixels)
        size = request.size_for(image, limit)
        check_model_passes(one, image.width, image.height, size, "upscaler_1", limit)
        if blends:
            check_model_passes(two, image.width, image.height, size, "upscaler_2", limit)
        sizes.append(size)
    return sizes


def upscale_images(engine: "Engine", request: UpscaleRequest, job: "Job | None" = None) -> UpscaleResult:
    """Upscale every image of the request as a job of the fair queue (one tile a turn); saves each
    with its infotext unless the request or Settings say not to."""
    from webui.engine.core.jobs import Job

    job = job or Job(kind="extras")
    sizes = prepare_upscale(engine, request)
    return engine.run(job.owner, job.kind, lambda j: upscale_work(engine, request, sizes, j), job)


def upscale_work(engine: "Engine", request: UpscaleRequest, sizes: list[tuple[int, int]], job: "Job") -> Generator[None, None, UpscaleResult]:
    from webui.engine.core.images import to_rgba
    from webui.engine.core.outputs import dated_dir, save_image

    result = UpscaleResult()
    job.image_count, job.batch_count = len(request.images), len(request.images)
    save = engine.settings.save_images if request.save_images is None else request.save_images
    out_dir = dated_dir(engine.outputs_for(job.owner), "extras")
    for number, (image, size) in enumerate(zip(request.images, sizes), 1):
        if job.interrupted:
            result.interrupted = True
            break
        job.start_batch(number, 1)
        source_info = _infotext_of(image)
        picture = to_rgba(image, "image") if _has_alpha(image) else image
        out, note = yield from upscale_one(engine, picture, size, request, job)
        result.tiles += note["tiles"]
        result.warnings.extend(w for w in note["warnings"] if w not in result.warnings)
        info = _extras_infotext(source_info, request, note)
        if save:
            result.paths.append(save_image(out, out_dir, info, 0, request.image_format or engine.settings.image_format))
        result.images.append(out)
        result.infotexts.append(info)
        result.names.append(request.names[number - 1] if number <= len(request.names) else f"{number:05d}.png")
        job.finish_images(1)
        if note["interrupted"]:
            result.interrupted = True
            break
        if number < len(request.images):
            yield
    return result


def upscale_one(engine: "Engine", image: "Image.Image", size: tuple[int, int], request: UpscaleRequest,
                job: "Job | None" = None) -> Generator[None, None, tuple["Image.Image", dict]]:
    """One picture to `size` with upscaler 1, blended with upscaler 2 at its visibility; an alpha
    channel is resized on its own (Lanczos) and put back."""
    from PIL import Image

    from webui.engine.core.images import to_rgb

    alpha = image.getchannel("A") if image.mode == "RGBA" else None
    rgb = to_rgb(image.convert("RGB") if alpha is not None else image)
    note: dict[str, Any] = {"tiles": 0, "warnings": [], "interrupted": False, "tile": 0}
    one = find_upscaler(request.upscaler_1, "upscaler_1", engine.catalog)
    result = yield from _with(engine, one, rgb, size, request, job, note)
    two = find_upscaler(request.upscaler_2, "upscaler_2", engine.catalog)
    if two.name != "None" and request.upscaler_2_visibility > 0 and not note["interrupted"]:
        note["second"] = True
        other = yield from _with(engine, two, rgb, size, request, job, note)
        result = Image.blend(result, other, min(1.0, float(request.upscaler_2_visibility)))
    if alpha is not None:
        result = result.convert("RGBA")
        result.putalpha(_fit(alpha, size, Image.Resampling.LANCZOS, request.crop))
    return result, note


def _with(engine, upscaler: Upscaler, image, size, request: UpscaleRequest, job, note) -> Generator[None, None, Any]:
    from PIL import Image

    if upscaler.kind == "classic":
        return _fit(image, size, upscaler.resample if upscaler.resample is not None else Image.Resampling.BICUBIC, request.crop)
        yield  # noqa: unreachable - a generator like the model path
    if upscaler.kind == "latent":
        raise InvalidRequest("upscaler_1", f"{upscaler.name} upscales latents: it is for hires fix only")
    loaded = engine.models.get_of_kind("upscaler", upscaler.name).model
    # Model passes until the picture covers the target (at most MAX_MODEL_PASSES), then Lanczos to the exact size.
    cover = max(size[0] / image.width, size[1] / image.height)
    current = image
    limit = engine.settings.max_output_pixels
    for _ in range(MAX_MODEL_PASSES):
        # The list's scale was read from the file without loading it; the loaded model's is the real one.
        check_output("upscaler_2" if note.get("second") else "upscaler_1", current.width * loaded.scale,
                     current.height * loaded.scale, limit=min(limit, MAX_OUTPUT_PIXELS),
                     what=f"an intermediate picture ({upscaler.name} is x{loaded.scale})")
        current = yield from model_pass(loaded, current, request.tile_size, request.tile_overlap, job, note)
        if note["interrupted"] or current.width >= image.width * cover - 0.5:
            break
    return _fit(current, size, Image.Resampling.LANCZOS, request.crop)


def model_pass(loaded, image: "Image.Image", tile_size: int, overlap: int, job, note: dict) -> Generator[None, None, "Image.Image"]:
    """One run of a model upscaler over the picture in tiles; each tile a turn of the job. A diffusion
    upscaler runs its pipeline on each tile (DIFFUSION_TILE input pixels unless the request says)."""
    import numpy as np
    import torch
    from PIL import Image

    from ._models import DIFFUSION_TILE
    from ._tiles import auto_tile_size, run_tiles_retrying

    if loaded.pipeline is not None:
        tile = tile_size or DIFFUSION_TILE[loaded.pipeline_class]
        network = lambda x: _diffusion_tile(loaded, x)  # noqa: E731
    else:
        tile = tile_size or auto_tile_size(loaded.device, scale=loaded.scale)
        network = loaded
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    x = torch.from_numpy(array).permute(2, 0, 1)[None].contiguous()

    def on_tile(done: int, total: int) -> bool:
        if job is not None:
            if job.steps != total:
                job.start_batch(job.batch_no or 1, total)
            job.advance(done)
            return not job.interrupted
        return True

    out, run = yield from run_tiles_retrying(network, x, loaded.scale, tile, overlap, on_tile)
    note["tiles"] += run.tiles_done
    note["tile"] = run.tile
    note["warnings"].extend(run.warnings)
    if run.interrupted:
        note["interrupted"] = True
        note["warnings"].append(f"Interrupted after {run.tiles_done} of {run.tiles_total} tiles: the rest is a bicubic upscale.")
    pixels = out[0, :3].clamp_(0, 1).mul_(255.0).round_().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    del out
    return Image.fromarray(pixels)


def upscale_tensor_untiled(loaded, image: "Image.Image") -> "Image.Image":
    """The model on the whole picture at once (for tests and the benchmark's reference)."""
    import numpy as np
    import torch
    from PIL import Image

    x = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    out = loaded(x).cpu()
    return Image.fromarray((out[0].permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8))


def _diffusion_tile(loaded, x):
    """A diffusion upscaler on one (1, 3, h, w) tile in 0..1: the pipeline on the tile as a picture,
    back as a (1, 3, h * scale, w * scale) tensor (resized when the pipeline rounded the size)."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image

    # Edges repeated up to a size the pipeline takes whole (its VAE and UNet halve it a few times).
    step = {"StableDiffusionLatentUpscalePipeline": 64, "LDMSuperResolutionPipeline": 32}.get(loaded.pipeline_class, 16)
    height, width = x.shape[-2:]
    padded_h, padded_w = max(step, -(-height // step) * step), max(step, -(-width // step) * step)
    padded = F.pad(x, (0, padded_w - width, 0, padded_h - height), mode="replicate") if (padded_h, padded_w) != (height, width) else x
    picture = Image.fromarray((padded[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8))
    out = _diffusion_pass(loaded, picture)
    y = torch.from_numpy(np.asarray(out.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    full = (padded_h * loaded.scale, padded_w * loaded.scale)
    if tuple(y.shape[-2:]) != full:
        y = F.interpolate(y, size=full, mode="bicubic").clamp(0, 1)
    return y[:, :, : height * loaded.scale, : width * loaded.scale]


def _diffusion_pass(loaded, image: "Image.Image") -> "Image.Image":
    import torch

    kwargs: dict[str, Any] = {"image": image, "num_inference_steps": DIFFUSION_STEPS,
                              "generator": torch.Generator("cpu").manual_seed(0)}
    if loaded.pipeline_class != "LDMSuperResolutionPipeline":
        kwargs.update(prompt="", guidance_scale=0 if loaded.pipeline_class == "StableDiffusionLatentUpscalePipeline" else 7.5)
    if loaded.pipeline_class == "StableDiffusionUpscalePipeline":
        kwargs["noise_level"] = 20
    return loaded.pipeline(**kwargs).images[0]


def _fit(image: "Image.Image", size: tuple[int, int], resample, crop: bool) -> "Image.Image":
    from PIL import ImageOps

    if image.size == size:
        return image
    if crop and image.size[0] * size[1] != image.size[1] * size[0]:
        return ImageOps.fit(image, size, method=resample)
    return image.resize(size, resample=resample)


def _has_alpha(image: "Image.Image") -> bool:
    return image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)


def _infotext_of(image: "Image.Image") -> str:
    from webui.engine.core.infotext import read_infotext

    try:
        return read_infotext(image) or ""
    except Exception:  # noqa: BLE001 - a picture without readable metadata has none
        return ""


def _extras_infotext(source: str, request: UpscaleRequest, note: dict) -> str:
    """AUTOMATIC1111's extras parameters, appended to the picture's own infotext when it has one."""
    if request.width is not None or request.height is not None:
        pairs = [f"Postprocess upscale to: {request.width or 0}x{request.height or 0}"]
        if request.crop:
            pairs.append("Postprocess crop to: True")
    else:
        pairs = [f"Postprocess upscale by: {request.scale:g}"]
    pairs.append(f"Postprocess upscaler: {request.upscaler_1}")
    if request.upscaler_2 not in (None, "", "None") and request.upscaler_2_visibility > 0:
        pairs += [f"Postprocess upscaler 2: {request.upscaler_2}", f"Postprocess upscaler 2 visibility: {request.upscaler_2_visibility:g}"]
    if note.get("tiles"):
        pairs += [f"Tile size: {note['tile']}", f"Tile overlap: {request.tile_overlap}", f"Tiles: {note['tiles']}"]
    line = ", ".join(pairs)
    if not source:
        return line
    return f"{source}, {line}" if "\n" in source else f"{source}\n{line}"


# --- the model manager's loader -----------------------------------------------------------

def load_upscaler_entry(entry, device, allow_pickle: bool):
    """The loader the model manager calls for the "upscaler" kind (see Engine.models)."""
    from ._models import load_upscaler

    return load_upscaler(entry.path, getattr(device, "device", "cpu"))


def known_architectures() -> list[str]:
    from ._models import known_architectures as names

    return names()


def hires_work(engine: "Engine", request, job: "Job"):
    """Hires fix as one job: see _hires.py."""
    from ._hires import hires_fix

    return hires_fix(engine, request, job)


def check_hires(engine: "Engine", request) -> None:
    from ._hires import check

    check(engine, request)


def sd_upscale_work(engine: "Engine", request, job: "Job"):
    """SD upscale (an img2img request with sd_upscale set) as one job: see _sd_upscale.py."""
    from ._sd_upscale import sd_upscale

    return sd_upscale(engine, request, job)


def check_sd_upscale(engine: "Engine", request) -> tuple[int, int]:
    from ._sd_upscale import check

    return check(engine, request)


__all__ = ["Upscaler", "UpscaleRequest", "UpscaleResult", "LATENT_MODES", "all_upscalers", "builtin_upscalers",
           "find_upscaler", "target_size", "check_model_passes", "upscale_images", "prepare_upscale", "load_upscaler_entry", "hires_work",
           "check_hires", "sd_upscale_work", "check_sd_upscale", "known_architectures"]


# --- registration ---------------------------------------------------------------------------------

def _hires_job(engine: "Engine", request):
    check_hires(engine, request)  # an unknown hires upscaler is refused before the job is queued
    return lambda job: hires_work(engine, request, job)


def _sd_upscale_job(engine: "Engine", request):
    check_sd_upscale(engine, request)  # upscaler, picture and output size refused before the job is queued
    return lambda job: sd_upscale_work(engine, request, job)


def register(registries: "Registries") -> None:
    """Upscaler files for the model manager, and the variants upscaling adds to generation's jobs:
    text to image with a hires fix, image to image with SD upscale."""
    registries.add_loader("upscaler", load_upscaler_entry)
    registries.extend_job_kind("txt2img", lambda r: getattr(r, "hires", None) is not None, _hires_job)
    registries.extend_job_kind("img2img", lambda r: getattr(r, "sd_upscale", None) is not None, _sd_upscale_job)
