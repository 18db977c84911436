"""Video to video through a motion module: AnimateDiff's video-to-video pipeline restyles the clip in
windows of the module's context length, every frame of a window denoised together (the motion
module attends across them), instead of frame by frame.

Each window is a turn of the job; its frames stream to the job folder as it finishes, so Interrupt
keeps the finished windows and the same request run again resumes after them.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generator

from webui.engine.core.errors import Interrupted, InvalidRequest
from webui.engine.core.infotext import build_infotext
from webui.engine.core.jobs import Job
from webui.engine.generation.call import PipelineCall
from webui.engine.generation.runner import call_with_addons, open_session
from webui.engine.video import frames as plumbing
from webui.engine.video import media, pipelines

if TYPE_CHECKING:
    from webui.engine.context import Engine
    from webui.engine.models.manager import LoadedModel

MAX_WINDOW = 16  # frames denoised together at most (memory), even where the module sees more


def windows(frames, size: int):
    """The selected frames in lists of `size` (the last may be shorter)."""
    chunk = []
    for frame in frames:
        chunk.append(frame)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def video_to_video_pipeline(model: "LoadedModel", adapter_name: str, adapter: Any) -> Any:
    """AnimateDiff's video-to-video pipeline over the loaded SD 1.x/2.x checkpoint, kept with the model."""
    key = f"animatediff-v2v:{adapter_name}"
    if key in model.derived:
        return model.derived[key]
    if pipelines.UNET_FAMILIES.get(model.family) != "AnimateDiffPipeline":
        raise InvalidRequest("motion_module", f"video to video with a motion module needs an SD 1.x or 2.x checkpoint; "
                                              f"{model.name} is a {model.family} model: leave the motion module out to "
                                              "restyle frame by frame")
    text_to_video = pipelines.animatediff_pipeline(model, adapter_name, adapter)  # the same fit checks (block channels)
    from diffusers import AnimateDiffVideoToVideoPipeline

    # Its motion UNet is text to video's: one copy of the weights for both.
    pipeline = pipelines.motion_pipeline(AnimateDiffVideoToVideoPipeline, model.pipeline, adapter, unet=text_to_video.unet)
    pipeline.set_progress_bar_config(disable=True)
    model.derived[key] = pipeline
    return pipeline


def run(engine: "Engine", request: Any, plan: Any, job: Job, folder: Path, result: Any) -> Generator[None, None, Any]:
    """The clip restyled window by window; returns the service's VideoResult."""
    import torch
    from PIL import Image

    from webui.engine.samplers.registry import check_fits, default_sampler

    model = engine.models.get(request.model or engine.selected_model, preferred=engine.settings.default_model)
    adapter = engine.models.get_of_kind("motion", request.motion_module)
    video_to_video_pipeline(model, adapter.name, adapter.model)
    sampler, schedule = engine.samplers.resolve(request.sampler_name or default_sampler(model.prediction), request.scheduler)
    check_fits(engine.samplers, sampler, model.prediction)
    size = min(MAX_WINDOW, pipelines.context_length(adapter.model))
    if request.consistency != "none":
        result.warnings.append("The motion module keeps the frames of a window together; the consistency option "
                               "was not used.")
    plumbing.frame_count(job, 0, plan.count)
    added: dict[str, object] = {}  # the add-ons' infotext
    paths: list[Path] = []
    with ExitStack() as stack:
        session = open_session(engine, model, request, job, stack)  # the add-ons, entered for the job
        yield  # the setup (source read, models loaded) was one turn
        for chunk in windows(plumbing.selected(plan, request), size):
            start = len(paths)
            chunk_paths = [plumbing.frame_path(folder, start + i) for i in range(len(chunk))]
            plumbing.frame_count(job, start, plan.count)
            if all(p.exists() for p in chunk_paths):  # resumed: made by an earlier run of this request
                result.resumed_frames += len(chunk)
                paths += chunk_paths
                continue
            if job.interrupted:
                result.interrupted = True
                break
            frames = [f.image.convert("RGB").resize((plan.width, plan.height), Image.LANCZOS)
                      if f.image.size != (plan.width, plan.height) else f.image.convert("RGB") for f in chunk]
            model = engine.models.get(model.name)  # pinned by name: another job may have loaded another model
            pipeline = video_to_video_pipeline(model, adapter.name, adapter.model)
            generator = torch.Generator("cpu").manual_seed(request.seed)
            scheduler = sampler.build(model.base_scheduler_config, schedule, model.prediction, [generator])
            stopped: list[int] = []
            # Each window is one call through the add-on seam (the scheduler swapped in for it only).
            call = PipelineCall(pipeline, pipelines.call_kwargs(
                pipeline, video=frames, prompt=request.prompt, negative_prompt=request.negative_prompt or None,
                height=plan.height, width=plan.width, num_inference_steps=request.steps, guidance_scale=request.cfg_scale,
                strength=request.denoising_strength, generator=generator, output_type="pil"),
                components={"scheduler": scheduler}, frames=True, resolvable=False)
            try:
                made = call_with_addons(session, model, call, plumbing.step_callback(job, stopped))
                added.update(call.infotext)
            except Interrupted:
                stopped.append(0)
                made = []
            finally:
                getattr(scheduler, "close", lambda: None)()
            if stopped:  # a window cut short is not kept: the finished windows are
                result.interrupted = True
                break
            for image, path in zip(made, chunk_paths):
                media.save_frame(image, path)
            paths += chunk_paths
            job.images_done = len(paths)
            job._notify()
            yield  # each window is a turn: other users' jobs run in between
    if not paths:
        if result.interrupted:
            return result
        raise InvalidRequest("video", "the video has no frames in the chosen range")
    info = build_infotext(request.prompt, request.negative_prompt, {
        "Steps": request.steps, "Sampler": sampler.name, "CFG scale": request.cfg_scale, "Seed": request.seed,
        "Size": f"{plan.width}x{plan.height}", "Model hash": model.short_hash, "Model": model.name,
        "Denoising strength": request.denoising_strength, "Motion module": adapter.name, "Window": size,
        "Frames": len(paths), "FPS": f"{plan.fps:g}", "Every nth": request.every_nth if request.every_nth > 1 else None,
        **added, "Version": plumbing.version(),
    })
    return plumbing.finish(folder, paths, plan.fps, info, result)
