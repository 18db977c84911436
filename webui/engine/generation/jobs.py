"""Generation's jobs: text to image and image to image as job kinds, and `stage()`, which runs a
denoising task as turns of a job (the whole job, or one stage of a bigger one: a hires fix pass, an
SD upscale tile, a video frame). `register()` hands the kinds and clip skip to the registries."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Generator

from webui.engine.core.job_kinds import JobKind
from webui.engine.core.jobs import Job
from webui.engine.generation.batching import Txt2ImgWork
from webui.engine.generation.call import builtin_addons
from webui.engine.generation.defaults import fill_defaults, model_defaults
from webui.engine.generation.img2img import Img2ImgRequest, Img2ImgTask, check_pixels, prepare
from webui.engine.generation.requests import GenerationResult, Txt2ImgRequest
from webui.engine.generation.runner import run

if TYPE_CHECKING:
    from webui.engine.context import Engine
    from webui.engine.registries import Registries
    from webui.engine.generation.runner import Task

__all__ = ["stage", "img2img_task", "txt2img_work", "img2img_work", "register"]


def stage(engine: "Engine", task: "Task", job: Job) -> Generator[None, None, GenerationResult]:
    """A denoising task as turns of `job` (`result = yield from stage(engine, task, job)` inside
    another job's work)."""
    return run(engine, task, job)


def img2img_task(engine: "Engine", request: Img2ImgRequest, warnings: list[str]) -> Img2ImgTask:
    """The task for an img2img request: the image and mask prepared (outside any turn)."""
    check_pixels(request.init_image, engine.settings.max_pixels)
    if request.mask is not None:
        check_pixels(request.mask, engine.settings.max_pixels, "mask")
    task = Img2ImgTask(request, prepare(request, warnings))
    if task.denoise_steps == 0:
        warnings.append("Denoising strength x steps is below one step: the init image is returned unchanged.")
    return task


def txt2img_work(engine: "Engine", request: Txt2ImgRequest) -> Txt2ImgWork:
    """The work of a txt2img job: one that may run in one batch with other users' (generation/batching.py)."""
    return Txt2ImgWork(engine, request)


def img2img_work(engine: "Engine", request: Img2ImgRequest) -> Callable[[Job], Generator[None, None, GenerationResult]]:
    """The image and mask are prepared here, in the caller's thread, so a bad picture is refused
    before the job is queued."""
    warnings: list[str] = []
    task = img2img_task(engine, request, warnings)
    return lambda job: _with_warnings(stage(engine, task, job), warnings)


def _with_warnings(work: Generator[None, None, GenerationResult], warnings: list[str]):
    result = yield from work
    result.warnings[:0] = warnings
    return result


def _prepare(engine: "Engine", request: Any) -> Any:
    """The engine's preparation (prompt steps, hooks, validation, add-on defaults), then the model's
    defaults in the fields left unset (a few-step model's sampler, steps and CFG: generation/defaults.py),
    so the job, its batch key and its infotext see them."""
    request = engine.prepare_request(request)
    return fill_defaults(request, model_defaults(engine, request.model, request.prompt))


def register(registries: "Registries") -> None:
    for spec in builtin_addons():
        registries.add_addon(spec)
    registries.add_job_kind(JobKind("txt2img", Txt2ImgRequest, txt2img_work, prepare=_prepare, result_type=GenerationResult))
    registries.add_job_kind(JobKind("img2img", Img2ImgRequest, img2img_work, prepare=_prepare, result_type=GenerationResult))
    # an image to image request that the job it is part of prepared already (a vid2vid frame), run as it is:
    # what engine.part_work runs here or sends to a replica
    registries.add_job_kind(JobKind("img2img_part", Img2ImgRequest, img2img_work, result_type=GenerationResult,
                                    internal=True))
