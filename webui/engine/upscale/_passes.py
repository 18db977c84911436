"""The passes that upscale one picture: a classic resampler, or a model or diffusion upscaler run
in tiles (a turn of the job each) as many times as it takes to cover the target, then fitted to the
exact size. A diffusion upscaler's tile is a denoising call through the add-on seam
(generation.runner.call_with_addons), with the add-ons the request names."""

from __future__ import annotations

from contextlib import ExitStack
from typing import TYPE_CHECKING, Any, Callable, Generator

from webui.engine.core.addons import AddonSession
from webui.engine.core.errors import InvalidRequest
from webui.engine.core.limits import check_output
from webui.engine.generation.call import PipelineCall
from webui.engine.generation.runner import CallModel, call_with_addons, open_session

from ._listing import Upscaler, find_upscaler
from ._requests import DIFFUSION_STEPS, MAX_MODEL_PASSES, MAX_OUTPUT_PIXELS, UpscaleRequest

if TYPE_CHECKING:
    from PIL import Image

    from webui.engine.context import Engine
    from webui.engine.core.jobs import Job

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
    check_addons(upscaler, request.addons, "upscaler_2" if note.get("second") else "upscaler_1")
    loaded = engine.models.get_of_kind("upscaler", upscaler.name).model
    # Model passes until the picture covers the target (at most MAX_MODEL_PASSES), then Lanczos to the exact size.
    cover = max(size[0] / image.width, size[1] / image.height)
    current = image
    limit = engine.settings.max_output_pixels
    with ExitStack() as stack:
        denoise = None
        if loaded.pipeline is not None:  # the request's add-ons, entered for this upscaler's passes
            denoise = _tile_calls(engine, CallModel(upscaler.name, loaded.pipeline), request, job, stack, note)
        for _ in range(MAX_MODEL_PASSES):
            # The list's scale was read from the file without loading it; the loaded model's is the real one.
            check_output("upscaler_2" if note.get("second") else "upscaler_1", current.width * loaded.scale,
                         current.height * loaded.scale, limit=min(limit, MAX_OUTPUT_PIXELS),
                         what=f"an intermediate picture ({upscaler.name} is x{loaded.scale})")
            current = yield from model_pass(loaded, current, request.tile_size, request.tile_overlap, job, note, denoise)
            if note["interrupted"] or current.width >= image.width * cover - 0.5:
                break
    return _fit(current, size, Image.Resampling.LANCZOS, request.crop)


def _tile_calls(engine: "Engine", model: CallModel, request: UpscaleRequest, job, stack: ExitStack,
                note: dict) -> Callable[[PipelineCall], list]:
    """How each tile's call is made: through the add-on seam, with the request's add-ons entered on `stack`."""
    session = open_session(engine, model, request, job, stack)

    def denoise(call: PipelineCall) -> list:
        out = call_with_addons(session, model, call)
        note.setdefault("addons", {}).update(call.infotext)  # the add-ons' infotext, for the extras'
        return out

    return denoise


def check_addons(upscaler: Upscaler, addons: dict[str, Any], field: str) -> None:
    """Add-ons change a denoising call: only a diffusion upscaler makes one. Refused naming the add-on."""
    if addons and upscaler.kind != "diffusion" and upscaler.name != "None":
        name = next(iter(addons))
        raise InvalidRequest(name, f"the add-on {name!r} changes a denoising call, and {field} {upscaler.name!r} is a "
                                   f"{upscaler.kind} upscaler, which does not denoise: choose a diffusion upscaler")


def model_pass(loaded, image: "Image.Image", tile_size: int, overlap: int, job, note: dict,
               denoise: Callable[[PipelineCall], list] | None = None) -> Generator[None, None, "Image.Image"]:
    """One run of a model upscaler over the picture in tiles; each tile a turn of the job. A diffusion
    upscaler runs its pipeline on each tile (DIFFUSION_TILE input pixels unless the request says),
    each tile's call made by `denoise` (through the add-on seam; none: no add-ons)."""
    import numpy as np
    import torch
    from PIL import Image

    from ._models import DIFFUSION_TILE
    from ._tiles import auto_tile_size, run_tiles_retrying

    if loaded.pipeline is not None:
        tile = tile_size or DIFFUSION_TILE[loaded.pipeline_class]
        denoise = denoise or (lambda call: call_with_addons(AddonSession([], None), CallModel("", loaded.pipeline), call))
        network = lambda x: _diffusion_tile(loaded, x, denoise)  # noqa: E731
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


def _diffusion_tile(loaded, x, denoise: Callable[[PipelineCall], list]):
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
    out = _diffusion_pass(loaded, picture, denoise)
    y = torch.from_numpy(np.asarray(out.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    full = (padded_h * loaded.scale, padded_w * loaded.scale)
    if tuple(y.shape[-2:]) != full:
        y = F.interpolate(y, size=full, mode="bicubic").clamp(0, 1)
    return y[:, :, : height * loaded.scale, : width * loaded.scale]


def _diffusion_pass(loaded, image: "Image.Image", denoise: Callable[[PipelineCall], list]) -> "Image.Image":
    """One tile's pipeline call. The x4 upscaler's prompt goes through the conditioning stage as an
    image pipeline's does; the latent upscaler encodes its own (and LDM has none)."""
    import torch

    kwargs: dict[str, Any] = {"image": image, "num_inference_steps": DIFFUSION_STEPS,
                              "generator": torch.Generator("cpu").manual_seed(0)}
    if loaded.pipeline_class != "LDMSuperResolutionPipeline":
        kwargs.update(prompt="", guidance_scale=0 if loaded.pipeline_class == "StableDiffusionLatentUpscalePipeline" else 7.5)
    if loaded.pipeline_class == "StableDiffusionUpscalePipeline":
        kwargs["noise_level"] = 20
    own_prompt = loaded.pipeline_class != "StableDiffusionUpscalePipeline"
    return denoise(PipelineCall(loaded.pipeline, kwargs, prompt_stage=not own_prompt, resolvable=False))[0]


def _fit(image: "Image.Image", size: tuple[int, int], resample, crop: bool) -> "Image.Image":
    from PIL import ImageOps

    if image.size == size:
        return image
    if crop and image.size[0] * size[1] != image.size[1] * size[0]:
        return ImageOps.fit(image, size, method=resample)
    return image.resize(size, resample=resample)


