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

A diffusion upscaler's tiles are denoising calls through the add-on seam: a request may name add-ons
(`addons`), refused by name for upscalers that do not denoise or pipelines an add-on cannot reach.

The package is split by responsibility; this module is the public surface:

    _listing.py    the upscalers there are (Upscaler, find_upscaler, LATENT_MODES)
    _requests.py   UpscaleRequest / UpscaleResult, target sizes and every model pass's size checked
    _passes.py     one picture upscaled: resamplers, model and diffusion passes in tiles
    _extras.py     the Super-resolution job over a request's pictures, saved with infotext
    _models.py, _tiles.py, _hires.py, _sd_upscale.py   files read, tiles, hires fix, SD upscale
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._extras import prepare_upscale, upscale_images, upscale_work
from ._listing import (
    LATENT_MODES, Upscaler, all_upscalers, builtin_upscalers, find_upscaler, latent_upscalers, model_upscalers,
)
from ._passes import model_pass, upscale_one, upscale_tensor_untiled
from ._requests import (
    DIFFUSION_STEPS, MAX_BATCH, MAX_MODEL_PASSES, MAX_OUTPUT_PIXELS, MAX_OUTPUT_SIDE, MAX_OVERLAP, MAX_SCALE, MAX_TILE,
    UpscaleRequest, UpscaleResult, check_model_passes, target_size,
)

if TYPE_CHECKING:
    from webui.engine.context import Engine
    from webui.engine.core.jobs import Job
    from webui.engine.registries import Registries

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


def hires_defaults(engine: "Engine", model: str | None = None) -> tuple[str, float]:
    """(upscaler, denoising strength) of a hires fix that leaves them unset, for this model: see _hires.py."""
    from ._hires import hires_defaults as defaults

    return defaults(engine, model)


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
           "check_hires", "hires_defaults", "sd_upscale_work", "check_sd_upscale", "known_architectures", "upscale_one", "upscale_work",
           "model_pass", "upscale_tensor_untiled", "latent_upscalers", "model_upscalers", "MAX_BATCH", "MAX_MODEL_PASSES",
           "MAX_OUTPUT_PIXELS", "MAX_OUTPUT_SIDE", "MAX_OVERLAP", "MAX_SCALE", "MAX_TILE", "DIFFUSION_STEPS"]


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
    from webui.engine.core.job_kinds import JobKind
    from webui.engine.generation.requests import GenerationResult

    from ._extras import extras_work
    from ._requests import UpscaleRequest, UpscaleResult
    from ._sd_upscale import SDUpscaleTileRequest, tile_work

    registries.add_loader("upscaler", load_upscaler_entry)
    # Super-resolution as a job kind: plain data can ask for it, a dispatcher may run it elsewhere
    registries.add_job_kind(JobKind("extras", UpscaleRequest, extras_work, result_type=UpscaleResult))
    registries.extend_job_kind("txt2img", lambda r: getattr(r, "hires", None) is not None, _hires_job)
    # SD upscale runs each tile as a part (engine.part_work): a dispatcher keeps the job and sends the tiles
    registries.extend_job_kind("img2img", lambda r: getattr(r, "sd_upscale", None) is not None, _sd_upscale_job,
                               parts=True)
    registries.add_job_kind(JobKind("sd_upscale_tile", SDUpscaleTileRequest, tile_work, result_type=GenerationResult,
                                    internal=True))
