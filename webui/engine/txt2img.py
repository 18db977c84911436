"""Text to image: validate, pick model and sampler, denoise batch by batch, save with infotext."""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import Interrupted, Skipped
from .hooks import Hooks, StepInfo
from .infotext import build_infotext
from .jobs import Job
from .outputs import dated_dir, save_image
from .requests import MAX_PROMPT_CHARS, Txt2ImgRequest, random_seed
from .samplers import check_fits, default_sampler

if TYPE_CHECKING:
    from PIL import Image

    from .context import Engine
    from .models import LoadedModel

log = logging.getLogger(__name__)


@dataclass
class GenerationResult:
    images: list["Image.Image"] = field(default_factory=list)
    infotexts: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    interrupted: bool = False
    model_name: str = ""
    sampler_name: str = ""
    schedule: str = "Automatic"


def txt2img(engine: "Engine", request: Txt2ImgRequest, job: Job | None = None) -> GenerationResult:
    job = job or Job(kind="txt2img")
    job.image_count, job.batch_count = request.total_images, request.n_iter
    result = GenerationResult()
    with engine.turn(job.owner):
        # 1. The model and the sampler; the model is pinned by name for the later batches.
        model = engine.models.get(request.model, preferred=engine.settings.default_model)
        sampler_name = request.sampler_name or default_sampler(model.prediction)
        sampler, schedule = engine.samplers.resolve(sampler_name, request.scheduler)
        check_fits(engine.samplers, sampler, model.prediction)
        sampler.build(model.base_scheduler_config, schedule, model.prediction)  # refuse a bad pair before any work
        result.model_name, result.sampler_name, result.schedule = model.name, sampler.name, schedule

        # 2. The prompts, checked against what the text encoder can read, with a visible warning.
        prompt = _fit_prompt(model, request.prompt, "prompt", result.warnings)
        negative = _fit_prompt(model, request.negative_prompt, "negative prompt", result.warnings)

    # 3. Denoise batch after batch, each batch a turn of its own so other users are served
    #    in between; each image's noise comes from its own seed.
    base_seed = request.seed if request.seed != -1 else random_seed()
    out_dir = dated_dir(engine.settings.outputs_dir, "txt2img")
    for batch_no in range(1, request.n_iter + 1):
        first = base_seed + (batch_no - 1) * request.batch_size
        seeds = [(first + i) % 2**32 for i in range(request.batch_size)]
        with engine.turn(job.owner):
            if job.interrupted:
                result.interrupted = True
                break
            model = engine.models.get(result.model_name)
            job.start_batch(batch_no, request.steps)
            generators = _generators(seeds)
            scheduler = sampler.build(model.base_scheduler_config, schedule, model.prediction, generators)
            try:
                images = _run_pipeline(model, scheduler, prompt, negative, request, generators, job, engine.hooks,
                                       engine.settings.preview_every)
                images = engine.hooks.transform("after_generate", images, request)
            except Interrupted:
                result.interrupted = True
                break
            except Skipped:
                job.finish_images(0)
                continue
            finally:
                getattr(scheduler, "close", lambda: None)()  # a function sampler's helper thread
            job.finish_images(len(images))
        # 4. Save each image whole, with its parameters, before the next batch starts.
        for seed, image in zip(seeds, images):
            info = build_infotext(prompt, negative, _infotext_params(request, model, sampler.name, schedule, seed))
            if engine.settings.save_images:
                result.paths.append(save_image(image, out_dir, info, seed, engine.settings.image_format))
            result.images.append(image)
            result.infotexts.append(info)
            result.seeds.append(seed)
        if job.interrupted:
            result.interrupted = True
            break
    return result


def _generators(seeds: list[int]) -> list[Any]:
    """One CPU generator per image: the same seed gives the same noise on every device and batch."""
    import torch

    return [torch.Generator("cpu").manual_seed(seed) for seed in seeds]


def _run_pipeline(model: "LoadedModel", scheduler: Any, prompt: str, negative: str, request: Txt2ImgRequest,
                  generators: list[Any], job: Job, hooks: Hooks, preview_every: int = 0) -> list["Image.Image"]:
    import torch

    pipeline = model.pipeline
    pipeline.scheduler = scheduler

    def on_step_end(pipe: Any, step: int, timestep: Any, tensors: dict) -> dict:
        if preview_every and job.preview_step >= 0 and (step + 1) % preview_every == 0 and "latents" in tensors:
            _preview(model, tensors["latents"], request, job, step + 1)
        job.advance(step + 1)
        if hooks.on_step and "latents" in tensors:
            hooks.notify("on_step", StepInfo(job.id, step + 1, job.steps, job.batch_no, tensors["latents"].detach().clone()))
        if job.interrupted:
            raise Interrupted()
        if job.take_skip():
            raise Skipped()
        return tensors

    kwargs: dict[str, Any] = dict(
        prompt=prompt,
        negative_prompt=negative or None,
        num_inference_steps=request.steps,
        guidance_scale=request.cfg_scale,
        width=request.width,
        height=request.height,
        num_images_per_prompt=request.batch_size,
        generator=generators,
        callback_on_step_end=on_step_end,
        output_type="pil",
    )
    accepted = inspect.signature(pipeline.__call__).parameters
    kwargs = {k: v for k, v in kwargs.items() if k in accepted}
    with torch.inference_mode():
        return list(pipeline(**kwargs).images)


def _preview(model: "LoadedModel", latents: Any, request: Txt2ImgRequest, job: Job, step: int) -> None:
    try:
        job.preview, job.preview_step = model.previewer(latents, request.height, request.width), step
    except Exception as exc:  # noqa: BLE001 - a preview must never stop a generation
        log.warning("live preview failed, turning it off for this job: %s", exc)
        job.preview_step = -1


def _fit_prompt(model: "LoadedModel", text: str, what: str, warnings: list[str]) -> str:
    """Warn when the text encoder will not read the whole prompt, rather than cut it silently."""
    if len(text) > MAX_PROMPT_CHARS:
        warnings.append(f"The {what} is {len(text)} characters long; only the first {MAX_PROMPT_CHARS} were read.")
        text = text[:MAX_PROMPT_CHARS]
    tokenizer = getattr(model.pipeline, "tokenizer", None)
    if tokenizer is None or not text:
        return text
    limit = tokenizer.model_max_length
    ids = tokenizer(text, truncation=False, add_special_tokens=True)["input_ids"]
    if len(ids) > limit:
        # The pipeline's tokenizer cuts the same way; the infotext keeps the whole prompt.
        dropped = tokenizer.decode(ids[limit - 1 : -1], skip_special_tokens=True)
        warnings.append(
            f"The {what} is {len(ids) - 2} tokens long and this model reads {limit - 2}; "
            f"this part was ignored: {dropped[:200]!r}"
        )
    return text


def _infotext_params(request: Txt2ImgRequest, model: "LoadedModel", sampler: str, schedule: str, seed: int) -> dict[str, object]:
    from webui import __version__

    return {
        "Steps": request.steps,
        "Sampler": sampler,
        "Schedule type": None if schedule == "Automatic" else schedule,
        "CFG scale": request.cfg_scale,
        "Seed": seed,
        "Size": f"{request.width}x{request.height}",
        "Model hash": model.short_hash,
        "Model": model.name,
        "Version": f"Kiri v{__version__}",
    }
