"""Hires fix (AUTOMATIC1111's two-pass Text to image) as stages of one job:

1. the first pass at width x height (not saved),
2. each image upscaled to the hires size, with a latent mode or any upscaler,
3. an image-to-image pass per image at that size, with its own steps, sampler, prompt and
   denoising strength, saved with A1111's infotext (Size of the first pass, Hires upscale,
   Hires steps, Hires upscaler, Denoising strength).

The latent modes keep the first pass as latents (output_type "latent"), resize them with the
mode's interpolation (torch.nn.functional.interpolate), and hand them to the image-to-image
pipeline as its `image` (diffusers takes a tensor with the latent channel count as latents), as
AUTOMATIC1111 does. Pipelines whose latents are packed (Flux) get the pixel-space approximation.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Generator

from webui.engine.generation.img2img import Img2ImgRequest, Img2ImgTask, prepare
from webui.engine.generation.jobs import stage
from webui.engine.generation.requests import GenerationResult, HiresFix, Txt2ImgRequest
from webui.engine.generation.runner import common_infotext, version_param
from webui.engine.generation.txt2img import Txt2ImgTask

from . import LATENT_MODES, UpscaleRequest, check_model_passes, find_upscaler, model_upscalers, upscale_one

if TYPE_CHECKING:
    from webui.engine.context import Engine
    from webui.engine.core.jobs import Job
    from webui.engine.models.manager import LoadedModel


SMALL_MODEL_SIDE = 256  # a model trained below this side gets the pixel-upscaler hires default


def hires_defaults(engine: "Engine", model: str | None = None) -> tuple[str, float]:
    """The hires upscaler and second-pass strength Kiri uses where the request leaves them unset.

    Models trained at 256 px or more: AUTOMATIC1111's (Latent, 0.7). Smaller ones (Kiri's embedded
    64 px models) cannot denoise a picture twice their size: measured on 12 held-out prompts, the
    object count of the first pass survived in 0 of 12 at (Latent, 0.7), 3 of 12 with Lanczos at 0.3
    and 10 of 12 even at 0.05; so the picture is upscaled by the first upscaler model installed
    (Lanczos without one) and not denoised again, which keeps it in 12 of 12
    (tools/eval_first_hour_defaults.py)."""
    try:
        entry = engine.catalog.find(model) if model else engine.current_entry()
    except Exception:  # noqa: BLE001 - no model to read: the loader names the problem when the job runs
        entry = None
    if entry is None or (getattr(entry, "native_size", None) or 512) >= SMALL_MODEL_SIDE:
        return "Latent", 0.7
    models = [u.name for u in model_upscalers(engine.catalog) if u.kind == "model"]
    return (models[0] if models else "Lanczos"), 0.0


def with_defaults(engine: "Engine", request: Txt2ImgRequest) -> Txt2ImgRequest:
    """The request with its hires fix's unset upscaler and strength filled in (hires_defaults)."""
    hires = request.hires
    if hires.upscaler is None or hires.denoising_strength is None:
        upscaler, strength = hires_defaults(engine, request.model)
        request.hires = replace(hires, upscaler=hires.upscaler if hires.upscaler is not None else upscaler,
                                denoising_strength=strength if hires.denoising_strength is None else hires.denoising_strength)
    return request


def check(engine: "Engine", request: Txt2ImgRequest) -> None:
    """Refused before the job is queued: an unknown hires upscaler names hr_upscaler, and so does one
    whose model passes would make a picture over the output budget (core/limits.py). The unset
    upscaler and strength are filled in here (hires_defaults), so the job and its infotext see them."""
    with_defaults(engine, request)
    upscaler = find_upscaler(request.hires.upscaler, "hr_upscaler", engine.catalog, latent=True)
    size = request.hires.target(request.width, request.height)
    check_model_passes(upscaler, request.width, request.height, size, "hr_upscaler", engine.settings.max_output_pixels)


# Pipelines whose output_type="latent" gives (N, C, h, w) latents their image-to-image sibling takes as `image`.
LATENT_PIPELINES = ("StableDiffusionPipeline", "StableDiffusionXLPipeline", "StableDiffusion3Pipeline")


@dataclass
class LatentTxt2ImgTask(Txt2ImgTask):
    """The first pass of a latent hires mode: its images are the latents, (C, h, w) each."""

    makes_pictures: bool = False

    def call(self, model: "LoadedModel", prompt: str, negative: str, seeds: list[int], generators: list[Any]):
        call = super().call(model, prompt, negative, seeds, generators)
        call.kwargs["output_type"] = "latent"
        return call


@dataclass
class HiresTask(Img2ImgTask):
    """The second pass: image to image, with the first pass's infotext and the Hires keys; from
    the upscaled latents (1, C, h, w) when given, instead of the plan's picture."""

    first: Txt2ImgRequest | None = None
    first_sampler: str = ""
    latents: Any = None

    def sources(self) -> dict:
        return {}  # the upscaled first pass is made again from the prompt: nothing to keep

    def call(self, model: "LoadedModel", prompt: str, negative: str, seeds: list[int], generators: list[Any]):
        call = super().call(model, prompt, negative, seeds, generators)
        call.first_pass_steps = self.first.steps  # the prompt schedule reads on from the first pass (A1111)
        if self.latents is not None:
            if call.passthrough is not None:  # no denoising step: the upscaled latents, decoded when the call runs
                call.passthrough = _Decoded(call, model, self.latents)
            else:
                call.kwargs["image"] = self.latents
        return call

    def infotext_params(self, model: "LoadedModel", sampler: str, schedule: str, seed: int) -> dict[str, object]:
        hires: HiresFix = self.first.hires
        params: dict[str, object] = {**common_infotext(self.first, model, self.first_sampler or sampler, schedule, seed)}
        params["Denoising strength"] = hires.denoising_strength
        if hires.resize_x or hires.resize_y:
            params["Hires resize"] = f"{self.request.width}x{self.request.height}"
        else:
            params["Hires upscale"] = hires.scale
        params["Hires steps"] = hires.steps or None
        params["Hires upscaler"] = hires.upscaler
        if hires.sampler_name and hires.sampler_name != self.first_sampler:
            params["Hires sampler"] = hires.sampler_name
        if hires.prompt and hires.prompt != self.first.prompt:
            params["Hires prompt"] = hires.prompt
        if hires.negative_prompt and hires.negative_prompt != self.first.negative_prompt:
            params["Hires negative prompt"] = hires.negative_prompt
        return {**params, **version_param()}


def hires_fix(engine: "Engine", request: Txt2ImgRequest, job: "Job") -> Generator[None, None, GenerationResult]:
    from PIL import Image

    hires = with_defaults(engine, request).hires
    upscaler = find_upscaler(hires.upscaler, "hr_upscaler", engine.catalog, latent=True)
    size = hires.target(request.width, request.height)

    # 1. The first pass, kept in memory only: as latents for a latent mode where the pipeline allows.
    first_request = replace(request, hires=None, save_images=False)
    latent = upscaler.kind == "latent" and _takes_latents(engine, request)
    first = yield from stage(engine, (LatentTxt2ImgTask if latent else Txt2ImgTask)(first_request), job)
    result = GenerationResult(warnings=list(first.warnings), model_name=first.model_name, model_hash=first.model_hash,
                              sampler_name=first.sampler_name, schedule=first.schedule, interrupted=first.interrupted)
    for image, seed in zip(first.images, first.seeds):
        if job.interrupted or result.interrupted:
            result.interrupted = True
            break
        # 2. Upscale.
        latents = None
        if latent:
            factor = engine.models.get(first.model_name).pipeline.vae_scale_factor
            latents = upscale_latents(image, size, upscaler.name, factor)
            big = Image.new("RGB", size)  # the request's picture; the pass starts from the latents
        elif upscaler.kind == "latent":
            big = _latent_mode_resize(image, size, upscaler.name)
            if not any("pixel space" in w for w in result.warnings):
                result.warnings.append(f"{upscaler.name}: this model's latents are packed; resized in pixel space instead")
        else:
            note: dict[str, Any] = {}
            big, note = yield from upscale_one(engine, image, size, UpscaleRequest([image], upscaler.name, crop=False), job)
            result.warnings.extend(w for w in note["warnings"] if w not in result.warnings)
        # 3. The second pass, one image at a time with its own seed.
        second_request = Img2ImgRequest(
            prompt=hires.prompt or request.prompt, negative_prompt=hires.negative_prompt or request.negative_prompt,
            sampler_name=hires.sampler_name or request.sampler_name, scheduler=request.scheduler,
            steps=hires.steps or request.steps, cfg_scale=request.cfg_scale, seed=seed, width=size[0], height=size[1],
            model=first.model_name or request.model, addons=dict(request.addons), save_images=request.save_images,
            image_format=request.image_format, init_image=big, denoising_strength=hires.denoising_strength,
        )
        warnings: list[str] = []
        task = HiresTask(second_request, prepare(second_request, warnings), kind="txt2img", first=request,
                         first_sampler=first.sampler_name, latents=latents)
        second = yield from stage(engine, task, job)
        result.images += second.images
        result.infotexts += second.infotexts
        result.seeds += second.seeds
        result.paths += second.paths
        result.warnings.extend(w for w in warnings + second.warnings if w not in result.warnings)
        result.interrupted = result.interrupted or second.interrupted
    return result


def _takes_latents(engine: "Engine", request: Txt2ImgRequest) -> bool:
    model = engine.models.get(request.model or engine.selected_model, preferred=engine.settings.default_model)
    return type(model.pipeline).__name__ in LATENT_PIPELINES


def upscale_latents(latents, size: tuple[int, int], mode: str, factor: int):
    """(C, h, w) latents -> (1, C, height / factor, width / factor) with the mode's interpolation."""
    import torch.nn.functional as F

    interpolation, antialias = LATENT_MODES[mode]
    kwargs: dict[str, Any] = {}
    if interpolation in ("bilinear", "bicubic"):
        kwargs.update(align_corners=False, antialias=antialias)
    resized = F.interpolate(latents[None].float(), size=(size[1] // factor, size[0] // factor), mode=interpolation, **kwargs)
    return resized.to(latents.dtype)


class _Decoded:
    """A passthrough call's picture, decoded only when the call runs: after the add-ons' apply, so
    with the VAE the call swapped in (the "vae" add-on), as the pipeline would decode it."""

    def __init__(self, call: Any, model: "LoadedModel", latents: Any):
        self.call, self.model, self.latents = call, model, latents

    def __iter__(self):
        yield decode_latents(self.model, self.latents, self.call.components.get("vae"))


def decode_latents(model: "LoadedModel", latents, vae=None):
    """Latents (1, C, h, w) in the denoiser's space -> a picture, through `vae` (default: the model's)."""
    import torch

    pipeline = model.pipeline
    vae = vae if vae is not None else pipeline.vae
    z = latents.to(vae.device, vae.dtype) / vae.config.scaling_factor
    if getattr(vae.config, "shift_factor", None):
        z = z + vae.config.shift_factor
    with torch.inference_mode():
        pixels = vae.decode(z).sample
    return pipeline.image_processor.postprocess(pixels, output_type="pil")[0]


def _latent_mode_resize(image, size: tuple[int, int], mode: str):
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image

    interpolation, antialias = LATENT_MODES[mode]
    x = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    kwargs = {"antialias": antialias} if interpolation in ("bilinear", "bicubic") else {}
    if interpolation in ("bilinear", "bicubic"):
        kwargs["align_corners"] = False
    y = F.interpolate(x, size=(size[1], size[0]), mode=interpolation, **kwargs).clamp(0, 1)
    return Image.fromarray((y[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
