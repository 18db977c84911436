"""Text to video: AnimateDiff on an image checkpoint (a motion module from models/motion/, FreeNoise
windows, prompt travel, FreeInit) or a native video pipeline (Wan, LTX-Video, CogVideoX, ...). All
frames are denoised together in one pipeline call (one per FreeInit round) through the add-on seam
(generation.runner.call_with_addons); an Interrupt keeps every frame as it stood at that step."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Generator

from webui.engine.core.errors import Interrupted, InvalidRequest
from webui.engine.core.infotext import build_infotext
from webui.engine.core.jobs import Job
from webui.engine.core.limits import check_input, check_output
from webui.engine.core.prompt_tags import strip_tags
from webui.engine.generation.call import PipelineCall
from webui.engine.generation.runner import CallModel, call_with_addons, open_session
from webui.engine.video import media, pipelines
from webui.engine.video.common import VideoResult, image_to_video_models, is_video_model, job_folder, motion_modules, with_seed
from webui.engine.video.frames import finish, frame_path, step_callback, version
from webui.engine.video.requests import Txt2VideoRequest

if TYPE_CHECKING:
    from webui.engine.context import Engine


def txt2video_work(engine: "Engine", request: Txt2VideoRequest):
    """The job's work, the request checked (and a random seed resolved) in the caller's thread."""
    request.validate()
    check_output("width", request.width, request.height, limit=engine.settings.max_pixels, what="frames",
                 setting="max_pixels")
    if request.image is not None:  # the first frame, on its header before it is decoded
        check_input("image", request.image.width, request.image.height, limit=engine.settings.max_pixels)
    engine.addons.build(request.addons, request.prompt, request.negative_prompt)  # unknown add-ons and bad settings refused before the job is queued
    request = with_seed(request)
    return lambda job: _txt2video(engine, request, job)


def _txt2video(engine: "Engine", request: Txt2VideoRequest, job: Job) -> Generator[None, None, VideoResult]:
    import torch

    result = VideoResult(fps=request.fps, seed=request.seed)
    keys = pipelines.keyframes(strip_tags(request.prompt), request.frames)  # extra-network tags: the add-ons'
    travel = len(keys) > 1
    rounds = max(1, request.free_init_iterations)  # FreeInit runs the steps once per iteration
    job.batch_count, job.image_count, job.batch_no, job.steps = 1, request.frames, 1, request.steps * rounds

    # 1. The model: a native video pipeline, or an image checkpoint with a motion module.
    native = is_video_model(engine, request.model)
    params: dict[str, object] = {}
    if native:
        thing = engine.models.get_of_kind("video", request.model)  # type: ignore[arg-type]
        pipeline, model_name, model_hash = thing.model, thing.name, None
        if request.sampler_name:
            result.warnings.append(f"{model_name} samples with its own scheduler; the sampler choice was not used.")
        if request.motion_module:
            result.warnings.append(f"{model_name} makes motion itself; the motion module was not used.")
        if rounds > 1 and not pipelines.has_free_init(pipeline):
            result.warnings.append(f"{model_name} has no FreeInit; the clip was made once.")
            rounds, job.steps = 1, request.steps
        sampler_label, schedule = type(pipeline.scheduler).__name__, "Automatic"
        motion_name = None
        takes_image = "image" in pipelines.call_kwargs(pipeline, image=True)
        if takes_image and request.image is None:
            raise InvalidRequest("image", f"{model_name} is an image-to-video model: give it the clip's first frame")
        if request.image is not None and not takes_image:
            raise InvalidRequest("image", f"{model_name} makes clips from text only; for a first frame choose an "
                                          f"image-to-video model ({', '.join(image_to_video_models(engine)) or 'none in models/checkpoints/'})")
    else:
        if request.image is not None:
            raise InvalidRequest("image", "a motion module animates from text only; for a first frame choose an "
                                          f"image-to-video model ({', '.join(image_to_video_models(engine)) or 'none in models/checkpoints/'})")
        model = engine.models.get(request.model or engine.selected_model, preferred=engine.settings.default_model)
        motion_name = request.motion_module or next(iter(motion_modules(engine)), None)
        if motion_name is None:
            raise InvalidRequest("motion_module", "no motion module in models/motion/: add an AnimateDiff motion "
                                                  "module there, or choose a native video model")
        adapter = engine.models.get_of_kind("motion", motion_name)
        pipeline = pipelines.animatediff_pipeline(model, adapter.name, adapter.model)
        from webui.engine.samplers.registry import check_fits, default_sampler

        sampler, schedule = engine.samplers.resolve(request.sampler_name or default_sampler(model.prediction), request.scheduler)
        check_fits(engine.samplers, sampler, model.prediction)
        trial = sampler.build(model.base_scheduler_config, schedule, model.prediction)  # a bad pair is refused here
        getattr(trial, "close", lambda: None)()  # a function sampler's helper thread
        model_name, model_hash, sampler_label = model.name, model.short_hash, sampler.name
        window = pipelines.context_length(adapter.model)
        if request.frames > window:
            params["Context"] = f"FreeNoise {window}"
    if rounds > 1:
        params["FreeInit"] = rounds

    first = request.image.convert("RGB").resize((request.width, request.height)) if request.image is not None else None
    fields = {**asdict(request), "model": model_name, "motion_module": motion_name, "image": None}
    folder = job_folder(engine, "txt2video", fields, first.tobytes() if first is not None else b"", job.owner)
    params = {
        "Steps": request.steps, "Sampler": sampler_label, "Schedule type": None if schedule == "Automatic" else schedule,
        "CFG scale": request.cfg_scale, "Seed": request.seed, "Size": f"{request.width}x{request.height}",
        "Model hash": model_hash, "Model": model_name, "Motion module": motion_name,
        "Frames": request.frames, "FPS": f"{request.fps:g}", "Prompt travel": "yes" if travel else None,
        "First frame": "given" if first is not None else None, **params,
        "Version": version(),
    }
    info = build_infotext(request.prompt, request.negative_prompt, params)
    paths = [frame_path(folder, i) for i in range(request.frames)]
    if all(p.exists() for p in paths):  # made before: the same request with the same seed
        result.resumed_frames = len(paths)
        job.finish_images(len(paths))
        return finish(folder, paths, request.fps, info, result)
    with ExitStack() as stack:
        # The add-ons, entered for the job (a native pipeline is handed to them as the model).
        session = open_session(engine, CallModel(model_name, pipeline) if native else model, request, job, stack)
        yield  # the setup was one turn

        # 2. The clip: all frames denoised together (the motion module attends across them).
        generator = torch.Generator("cpu").manual_seed(request.seed)
        swapped, free_noise = None, False
        if not native:
            model = engine.models.get(model_name)  # pinned by name: another job may have loaded another model
            pipeline = pipelines.animatediff_pipeline(model, adapter.name, adapter.model)
            swapped = pipeline.scheduler
            pipeline.scheduler = sampler.build(model.base_scheduler_config, schedule, model.prediction, [generator])
            free_noise = pipelines.set_context(pipeline, request.frames, window, travel)
        prompt: Any = keys if travel else keys[0]
        stopped: list[int] = []
        kwargs = pipelines.call_kwargs(
            pipeline, prompt=prompt, negative_prompt=strip_tags(request.negative_prompt) or None, num_frames=request.frames,
            height=request.height, width=request.width, num_inference_steps=request.steps, guidance_scale=request.cfg_scale,
            generator=generator, output_type="pil", image=first,
        )
        progress = step_callback(job, stopped)
        added: dict[str, object] = {}  # the add-ons' infotext

        def denoise(latents: Any = None, on_step: Any = None) -> list:
            """One call of the clip's pipeline through the add-on seam (each FreeInit round is one)."""
            call = PipelineCall(pipeline, {**kwargs, **({"latents": latents} if latents is not None else {})},
                                frames=True, resolvable=False, prompt_stage=not free_noise)  # FreeNoise encodes per frame
            out = call_with_addons(session, CallModel(model_name, pipeline) if native else model, call,
                                   progress if on_step is None else _then(progress, on_step))
            added.update(call.infotext)
            return out

        try:
            with torch.inference_mode():
                if rounds > 1:
                    frames = pipelines.call_with_free_init(pipeline, kwargs, rounds, stopped, denoise)
                else:
                    frames = denoise()
        except Interrupted:
            result.interrupted = True
            result.warnings.append(f"{model_name} cannot stop between steps and keep its frames: nothing was kept.")
            return result
        finally:
            if swapped is not None:
                getattr(pipeline.scheduler, "close", lambda: None)()
                pipeline.scheduler = swapped
    stamp = params.pop("Version")
    params.update(added)
    params["Version"] = stamp
    if len(frames) != request.frames:  # native video models round the count to their own rule (Wan: 4k + 1)
        result.warnings.append(f"{model_name} makes clips of {len(frames)} frames for {request.frames} asked.")
        params["Frames"] = len(frames)
        paths = [frame_path(folder, i) for i in range(len(frames))]
    if stopped:
        # Interrupted: every frame as it stood at that step (as A1111 keeps an interrupted picture),
        # written as a clip of its own in interrupted/; frames/ stays for the full run, which the same
        # request makes from the start.
        result.interrupted = True
        params["Interrupted"] = f"step {stopped[0]}/{request.steps * rounds}"
        folder = folder / "interrupted"
        (folder / "frames").mkdir(parents=True, exist_ok=True)
        paths = [frame_path(folder, i) for i in range(len(frames))]
    info = build_infotext(request.prompt, request.negative_prompt, params)
    for image, path in zip(frames, paths):
        media.save_frame(image, path)
    job.finish_images(len(frames))
    yield
    return finish(folder, paths, request.fps, info, result)


def _then(first: Any, second: Any) -> Any:
    """Two step callbacks, one after the other."""
    return lambda pipe, step, timestep, tensors: second(pipe, step, timestep, first(pipe, step, timestep, tensors))
