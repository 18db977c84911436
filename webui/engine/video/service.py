"""Video: the public module. Typed requests, and the functions that run them as jobs.

    txt2video(engine, Txt2VideoRequest(...), job)   AnimateDiff on an image checkpoint, or a native
                                                    video pipeline (Wan, LTX-Video, CogVideoX, ...)
    vid2vid(engine, Vid2VidRequest(...), job)       each frame through the engine's img2img, with
                                                    optional blend or optical-flow consistency
    interpolate(engine, InterpolateRequest(...))    x2 / x4 frame rate with flow-based in-betweens

Each is a job of the fair queue: vid2vid's frames and interpolation's chunks are turns of their own,
so another user's picture comes back between two frames. Frames stream to a job folder under
outputs/video/ as PNGs; an Interrupt keeps the finished ones and writes the partial clip, and the
same request run again (same seed) resumes from the frames on disk. Text to video denoises all its
frames together: an Interrupt there keeps every frame as it stood at that step, as a clip of its
own (interrupted/), and the same request runs again from the start. The clip is written as an
H.264 MP4 (infotext in its comment), a GIF, an animated WebP, a zip of the frames and a .txt sidecar.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generator

from webui.engine.core.errors import Interrupted, InvalidRequest
from webui.engine.core.infotext import build_infotext
from webui.engine.core.limits import check_input, check_output, check_video
from webui.engine.core.jobs import Job
from webui.engine.generation.call import PipelineCall
from webui.engine.generation.requests import MIN_SIZE, random_seed
from webui.engine.generation.runner import CallModel, call_with_addons, open_session
from webui.engine.video import media, pipelines
from webui.engine.video.frames import MAX_WEBP_FRAMES  # noqa: F401 - part of the module's public limits
from webui.engine.video.frames import finish as _finish
from webui.engine.video.frames import frame_count as _frame_count
from webui.engine.video.frames import frame_path as _frame_path
from webui.engine.video.frames import selected as _selected
from webui.engine.video.frames import step_callback as _step_callback
from webui.engine.video.frames import version as _version

from webui.engine.video.requests import (  # noqa: F401 - the requests and limits, re-exported: the public module
    CONSISTENCY, FACTORS, INTERPOLATE_CHUNK, MASK_BLUR, MAX_DURATION_S, MAX_FPS, MAX_FRAMES, MAX_FREE_INIT, MAX_UPLOAD_BYTES,
    MIN_FPS,
    InterpolateRequest, Txt2VideoRequest, Vid2VidRequest,
)

if TYPE_CHECKING:
    from PIL import Image

    from webui.engine.context import Engine
    from webui.engine.registries import Registries


@dataclass
class VideoResult:
    frame_paths: list[Path] = field(default_factory=list)
    fps: float = 8.0
    path: Path | None = None  # the MP4
    gif_path: Path | None = None
    webp_path: Path | None = None
    zip_path: Path | None = None
    info: str = ""  # the infotext (also in the MP4's comment and the .txt sidecar)
    folder: Path | None = None  # the job folder: frames/ and the clip files
    interrupted: bool = False
    resumed_frames: int = 0  # frames found on disk from an earlier run of the same request
    seed: int | None = None  # the seed used (a random one resolved): the same request with it resumes
    warnings: list[str] = field(default_factory=list)

    def plain(self) -> dict:
        """What API clients get: the MP4 and the frames as base64, and what the run did."""
        encode = lambda path: base64.b64encode(path.read_bytes()).decode()  # noqa: E731
        return {"video": encode(self.path) if self.path is not None else None,
                "frames": [encode(path) for path in self.frame_paths], "fps": self.fps, "info": self.info,
                "interrupted": self.interrupted, "resumed_frames": self.resumed_frames, "seed": self.seed,
                "warnings": self.warnings}

    def frames(self) -> list["Image.Image"]:
        from PIL import Image

        images = []
        for path in self.frame_paths:
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
        return images


# --- plain data: POST /kiri/v1/jobs {"kind": "vid2vid", "request": {...}} --------------------------

def decode_video(data: Any, field: str = "video") -> bytes:
    """A base64 (or data: URL) video file; anything else is refused naming the field (a remote
    client never names a path on the server)."""
    if not isinstance(data, str) or not data:
        raise InvalidRequest(field, f"{field} must be a base64 string of an MP4, WebM, MOV or GIF file, or a zip of frames")
    if data.startswith("data:") and "," in data[:200]:
        data = data.split(",", 1)[1]
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(field, f"{field} is not valid base64") from exc


def _from_plain(cls: type):
    def load(data: dict) -> Any:
        from webui.engine.core.plain import load as load_plain

        fields = dict(data)
        if cls is not Txt2VideoRequest:
            fields["video"] = decode_video(fields.get("video"))
        return load_plain(cls, fields)

    return load


def job_kinds() -> list:
    """The video jobs plain data can ask for."""
    from webui.engine.core.job_kinds import JobKind

    return [JobKind("txt2video", Txt2VideoRequest, txt2video_work, _from_plain(Txt2VideoRequest)),
            JobKind("vid2vid", Vid2VidRequest, vid2vid_work, _from_plain(Vid2VidRequest)),
            JobKind("interpolate", InterpolateRequest, interpolate_work, _from_plain(InterpolateRequest))]


def register(registries: "Registries") -> None:
    """The video jobs, and motion modules and video pipelines for the model manager."""
    for kind in job_kinds():
        registries.add_job_kind(kind)
    registries.add_loader("motion", pipelines.load_motion_module)
    registries.add_loader("video", pipelines.load_video_pipeline)


# --- what the Video tab lists -----------------------------------------------------------------------

def video_models(engine: "Engine") -> list[str]:
    """Native video models first, then the image checkpoints AnimateDiff can animate."""
    engine.catalog.entries or engine.catalog.scan()
    natives = [e.name for e in engine.catalog.of_kind("video")]
    unets = [e.name for e in engine.catalog.entries if e.family in pipelines.UNET_FAMILIES and e.problem is None]
    return natives + unets


def image_to_video_models(engine: "Engine") -> list[str]:
    """Native video models whose pipeline takes a first frame (an *ImageToVideo* pipeline class)."""
    engine.catalog.entries or engine.catalog.scan()
    found = []
    for entry in engine.catalog.of_kind("video"):
        try:
            class_name = json.loads((entry.path / "model_index.json").read_text()).get("_class_name", "")
        except (OSError, ValueError):
            continue
        if "ImageToVideo" in class_name:
            found.append(entry.name)
    return found


def motion_modules(engine: "Engine") -> list[str]:
    engine.catalog.entries or engine.catalog.scan()
    return [e.name for e in engine.catalog.of_kind("motion")]


def is_video_model(engine: "Engine", name: str | None) -> bool:
    return bool(name) and engine.catalog.find_of_kind("video", name) is not None  # type: ignore[arg-type]


# --- frame jobs: one frame's denoising as a stage of the video job --------------------------------

@dataclass
class FrameJob(Job):
    """The job a frame's img2img stage reports to: its steps and stop requests are the video job's,
    so progress reads "Frame 3/24, step 5/20" and Interrupt stops the clip."""

    parent: Job | None = None

    @property
    def interrupted(self) -> bool:
        return self.parent.interrupted if self.parent is not None else self.interrupt_requested

    def take_skip(self) -> bool:
        return self.parent.take_skip() if self.parent is not None else super().take_skip()

    def start_batch(self, batch_no: int, steps: int) -> None:
        if self.parent is not None:
            self.parent.steps, self.parent.step = steps, 0
            self.parent._notify()

    def advance(self, step: int) -> None:
        if self.parent is not None:
            self.parent.preview = self.preview if self.preview is not None else self.parent.preview
            self.parent.advance(step)

    def finish_images(self, count: int) -> None:
        pass  # the video job counts its frames itself


# --- shared pieces ------------------------------------------------------------------------------

def _read_source(video: Any) -> bytes:
    if isinstance(video, (bytes, bytearray)):
        return bytes(video)
    path = Path(video)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InvalidRequest("video", f"the video file cannot be read: {exc.strerror or exc}") from exc
    if size > MAX_UPLOAD_BYTES:
        raise InvalidRequest("video", f"the video is {size / 2**20:.0f} MB; Kiri reads at most {MAX_UPLOAD_BYTES // 2**20} MB")
    return path.read_bytes()


def _job_folder(engine: "Engine", kind: str, fields: dict[str, Any], source: bytes, owner: str) -> Path:
    """outputs/video/<kind>-<key> (outputs/<login>/video/... with logins): the same request (same seed,
    same source) of the same owner finds the same folder."""
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode())
    digest.update(hashlib.sha256(source).digest())
    folder = engine.outputs_for(owner) / "video" / f"{kind}-{digest.hexdigest()[:16]}"
    (folder / "frames").mkdir(parents=True, exist_ok=True)
    return folder


def check_source(engine: "Engine", info: media.VideoInfo, frames: int, field: str = "video") -> None:
    """The pixel budget (core/limits.py) on the clip's header, before any frame is decoded: each
    frame within Settings.max_pixels, the `frames` the job will read within max_video_pixels."""
    width, height = info.frame_size
    check_video(field, width, height, frames, max_pixels=engine.settings.max_pixels,
                max_video_pixels=engine.settings.max_video_pixels)


def first_frame(engine: "Engine", video: Any) -> "Image.Image":
    """The clip's first frame at its own size (the Video tab shows it for clicks), within the budget."""
    data = _read_source(video)
    info = media.probe(data)
    check_source(engine, info, 1)
    return next(iter(media.read_frames(data, info))).image


def _with_seed(request: Any) -> Any:
    return request if request.seed != -1 else replace(request, seed=random_seed())


# --- text to video -----------------------------------------------------------------------------------

def txt2video(engine: "Engine", request: Txt2VideoRequest, job: Job | None = None) -> VideoResult:
    job = job or Job(kind="txt2video")
    return engine.run(job.owner, "txt2video", txt2video_work(engine, request), job)


def txt2video_work(engine: "Engine", request: Txt2VideoRequest):
    """The job's work, the request checked (and a random seed resolved) in the caller's thread."""
    request.validate()
    check_output("width", request.width, request.height, limit=engine.settings.max_pixels, what="frames",
                 setting="max_pixels")
    if request.image is not None:  # the first frame, on its header before it is decoded
        check_input("image", request.image.width, request.image.height, limit=engine.settings.max_pixels)
    engine.addons.build(request.addons)  # unknown add-ons and bad settings refused before the job is queued
    request = _with_seed(request)
    return lambda job: _txt2video(engine, request, job)


def _txt2video(engine: "Engine", request: Txt2VideoRequest, job: Job) -> Generator[None, None, VideoResult]:
    import torch

    result = VideoResult(fps=request.fps, seed=request.seed)
    keys = pipelines.keyframes(request.prompt, request.frames)
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
    folder = _job_folder(engine, "txt2video", fields, first.tobytes() if first is not None else b"", job.owner)
    params = {
        "Steps": request.steps, "Sampler": sampler_label, "Schedule type": None if schedule == "Automatic" else schedule,
        "CFG scale": request.cfg_scale, "Seed": request.seed, "Size": f"{request.width}x{request.height}",
        "Model hash": model_hash, "Model": model_name, "Motion module": motion_name,
        "Frames": request.frames, "FPS": f"{request.fps:g}", "Prompt travel": "yes" if travel else None,
        "First frame": "given" if first is not None else None, **params,
        "Version": _version(),
    }
    info = build_infotext(request.prompt, request.negative_prompt, params)
    paths = [_frame_path(folder, i) for i in range(request.frames)]
    if all(p.exists() for p in paths):  # made before: the same request with the same seed
        result.resumed_frames = len(paths)
        job.finish_images(len(paths))
        return _finish(folder, paths, request.fps, info, result)
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
            pipeline, prompt=prompt, negative_prompt=request.negative_prompt or None, num_frames=request.frames,
            height=request.height, width=request.width, num_inference_steps=request.steps, guidance_scale=request.cfg_scale,
            generator=generator, output_type="pil", image=first,
        )
        progress = _step_callback(job, stopped)
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
    version = params.pop("Version")
    params.update(added)
    params["Version"] = version
    if len(frames) != request.frames:  # native video models round the count to their own rule (Wan: 4k + 1)
        result.warnings.append(f"{model_name} makes clips of {len(frames)} frames for {request.frames} asked.")
        params["Frames"] = len(frames)
        paths = [_frame_path(folder, i) for i in range(len(frames))]
    if stopped:
        # Interrupted: every frame as it stood at that step (as A1111 keeps an interrupted picture),
        # written as a clip of its own in interrupted/; frames/ stays for the full run, which the same
        # request makes from the start.
        result.interrupted = True
        params["Interrupted"] = f"step {stopped[0]}/{request.steps * rounds}"
        folder = folder / "interrupted"
        (folder / "frames").mkdir(parents=True, exist_ok=True)
        paths = [_frame_path(folder, i) for i in range(len(frames))]
    info = build_infotext(request.prompt, request.negative_prompt, params)
    for image, path in zip(frames, paths):
        media.save_frame(image, path)
    job.finish_images(len(frames))
    yield
    return _finish(folder, paths, request.fps, info, result)


def _then(first: Any, second: Any) -> Any:
    """Two step callbacks, one after the other."""
    return lambda pipe, step, timestep, tensors: second(pipe, step, timestep, first(pipe, step, timestep, tensors))


# --- video to video --------------------------------------------------------------------------------

@dataclass
class _Plan:
    data: bytes
    info: media.VideoInfo
    width: int
    height: int
    count: int  # frames that will be made
    fps: float


def plan_vid2vid(engine: "Engine", request: Vid2VidRequest) -> _Plan:
    """Read the clip's header and apply the caps, in the caller's thread (a bad clip is refused before queueing)."""
    data = _read_source(request.video)
    info = media.probe(data)
    if info.duration > MAX_DURATION_S and request.end_time is None:
        raise InvalidRequest("video", f"the video is {info.duration:.0f} s long; Kiri reads at most {MAX_DURATION_S:g} s: "
                                      "set end_time")
    width, height = _fit(info.width, info.height, request.max_size)
    check_output("max_size", width, height, limit=engine.settings.max_pixels, what="frames", setting="max_pixels")
    end = min(request.end_time if request.end_time is not None else info.duration, info.duration or math.inf)
    in_range = max(0, round((end - request.start_time) * info.fps)) if info.duration else info.frames
    count = min(request.max_frames, max(1, math.ceil(in_range / request.every_nth)) if in_range else 0)
    if count == 0 or (info.duration and request.start_time >= info.duration):
        raise InvalidRequest("start_time", f"no frames between {request.start_time:g} s and the end "
                                           f"({info.duration:.2f} s)")
    # The frames read to make `count`: those skipped before start_time and between every_nth ones too.
    read = math.ceil(request.start_time * info.fps) + count * request.every_nth
    check_source(engine, info, min(read, info.frames) if info.frames else read)
    fps = request.fps or info.fps / request.every_nth
    if fps < MIN_FPS:  # refused before any frame is made: a clip this slow is a slide show, and GIF cannot hold it
        raise InvalidRequest("fps", f"the source's {info.fps:g} fps taking every {request.every_nth} frames makes "
                                    f"{fps:.3g} fps, below {MIN_FPS:g}: set fps ({MIN_FPS:g} to {MAX_FPS:g}) or a "
                                    "smaller every_nth")
    for x, y, _ in request.mask_points or []:
        if not (0 <= x < info.width and 0 <= y < info.height):
            raise InvalidRequest("mask_points", f"the click ({x:g}, {y:g}) is outside the {info.width}x{info.height} frame")
    return _Plan(data, info, width, height, count, fps)


def _fit(width: int, height: int, max_size: int) -> tuple[int, int]:
    """The frame size denoised: the longer side at most max_size, both sides multiples of 8, at least 64."""
    scale = min(1.0, max_size / max(width, height))
    fit = lambda side: max(MIN_SIZE, int(side * scale) // 8 * 8)  # noqa: E731
    return fit(width), fit(height)


def _tracked_masks(engine: "Engine", request: Vid2VidRequest, plan: _Plan, job: Job):
    """The clicked object's mask in each selected frame (at the size denoised), from a SAM 2 video model
    reading the frames a window at a time; the clicks scaled from source pixels."""
    from PIL import Image

    from webui.engine.segment import track

    sx, sy = plan.width / plan.info.width, plan.height / plan.info.height
    frames = (f.image.convert("RGB").resize((plan.width, plan.height), Image.LANCZOS) for f in _selected(plan, request))
    points = [[x * sx, y * sy, label] for x, y, label in request.mask_points]
    return iter(track(engine, frames, points, keep_going=lambda: not job.interrupted))


def _mask_image(mask) -> "Image.Image | None":
    from PIL import Image

    return Image.fromarray(mask.astype("uint8") * 255, "L") if mask.any() else None


def check_masking(engine: "Engine") -> None:
    """mask_prompt needs a segmenter that reads words (models/segmentation/: CLIPSeg, SAM 3, Grounding DINO)."""
    try:
        from webui.engine.segment import find_segmenter
    except ImportError:
        raise InvalidRequest("mask_prompt", "segmentation is not available in this Kiri: leave mask_prompt empty "
                                            "to restyle whole frames") from None
    try:
        find_segmenter(engine, None, ("text",))
    except InvalidRequest as exc:
        raise InvalidRequest("mask_prompt", f"{exc}; or leave mask_prompt empty to restyle whole frames") from None


def frame_mask(engine: "Engine", prompt: str, frame: "Image.Image", owner: str) -> "Image.Image | None":
    """What the segmentation engine finds for `prompt` in the frame (all of it, one L mask), or None.
    Run from inside the video job, the segment job runs inline on the worker."""
    from PIL import Image

    from webui.engine.segment import SegmentRequest, mask_tools, segment

    found = segment(engine, SegmentRequest(image=frame, prompt=prompt), owner=owner)
    if not found.masks:
        return None
    return mask_tools.to_image(mask_tools.union(found.arrays())) if len(found.masks) > 1 else found.masks[0].convert("L")


def vid2vid(engine: "Engine", request: Vid2VidRequest, job: Job | None = None) -> VideoResult:
    job = job or Job(kind="vid2vid")
    return engine.run(job.owner, "vid2vid", vid2vid_work(engine, request), job)


def vid2vid_work(engine: "Engine", request: Vid2VidRequest):
    """The job's work; the clip's header, the caps and the mask prompt's segmenter checked first."""
    request.validate()
    request = _with_seed(request)
    if request.mask_prompt:
        check_masking(engine)
    if request.mask_points:
        from webui.engine.segment import trackers

        if not trackers(engine):
            raise InvalidRequest("mask_points", "following a click through a clip needs a SAM 2 video model in "
                                                "models/segmentation/ (config model_type sam2_video, e.g. facebook/sam2.1-*)")
    if is_video_model(engine, request.model):
        raise InvalidRequest("model", f"{request.model} is a video model; video to video restyles each frame with an "
                                      "image checkpoint: choose one")
    engine.addons.build(request.addons)  # unknown add-ons and bad settings refused before the job is queued
    plan = plan_vid2vid(engine, request)
    return lambda job: _vid2vid(engine, request, plan, job)


def _vid2vid(engine: "Engine", request: Vid2VidRequest, plan: _Plan, job: Job) -> Generator[None, None, VideoResult]:
    from PIL import Image, ImageFilter

    from webui.engine.generation.img2img import Img2ImgRequest
    from webui.engine.generation.jobs import img2img_task
    from webui.engine.generation.jobs import stage as run_stage
    from webui.engine.video.flow import warp_onto

    result = VideoResult(fps=plan.fps, seed=request.seed)
    model = engine.models.get(request.model or engine.selected_model, preferred=engine.settings.default_model)
    fields = {name: getattr(request, name) for name in request.__dataclass_fields__ if name != "video"}
    folder = _job_folder(engine, "vid2vid", {**fields, "model": model.name}, plan.data, job.owner)
    if request.motion_module:
        from webui.engine.video import motion_v2v

        return (yield from motion_v2v.run(engine, request, plan, job, folder, result))
    _frame_count(job, 0, plan.count)
    yield  # the setup (source read, model loaded) was one turn

    paths: list[Path] = []
    previous_in = previous_out = None
    params: dict[str, object] = {}
    tracked = _tracked_masks(engine, request, plan, job) if request.mask_points else None
    for index, frame in enumerate(_selected(plan, request)):
        _frame_count(job, index, plan.count)
        path = _frame_path(folder, index)
        source = frame.image.resize((plan.width, plan.height), Image.LANCZOS) if frame.image.size != (plan.width, plan.height) else frame.image
        if path.exists():  # resumed: made by an earlier run of this request
            with Image.open(path) as done:
                output = done.convert("RGB")
            result.resumed_frames += 1
            if tracked is not None:
                next(tracked)  # the tracker still follows the object through this frame
        else:
            if job.interrupted:
                result.interrupted = True
                break
            init = source
            if previous_out is not None and request.consistency != "none" and request.consistency_strength > 0:
                carried = previous_out if request.consistency == "blend" else warp_onto(previous_out, previous_in, source)
                init = Image.blend(source, carried, request.consistency_strength)
            mask = frame_mask(engine, request.mask_prompt, source, job.owner) if request.mask_prompt else None
            if tracked is not None:
                mask = _mask_image(next(tracked))
            if (request.mask_prompt or tracked is not None) and mask is None:
                output = source  # nothing to repaint in this frame
            else:
                frame_request = engine.prepare_request(Img2ImgRequest(
                    prompt=request.prompt, negative_prompt=request.negative_prompt, sampler_name=request.sampler_name,
                    scheduler=request.scheduler, steps=request.steps, cfg_scale=request.cfg_scale, seed=request.seed,
                    width=plan.width, height=plan.height, model=model.name, save_images=False, init_image=init,
                    denoising_strength=request.denoising_strength, mask=mask, mask_blur=MASK_BLUR,
                    addons=dict(request.addons)))
                warnings: list[str] = []
                stage = yield from run_stage(engine, img2img_task(engine, frame_request, warnings),
                                                FrameJob(kind="vid2vid", owner=job.owner, parent=job))
                if stage.interrupted:
                    result.interrupted = True
                    break
                output = stage.images[0] if stage.images else init  # Skip: the frame as it came in
                if mask is not None:  # outside the mask the source frame stays exactly (not the blended init)
                    output = Image.composite(output, source, mask.filter(ImageFilter.GaussianBlur(MASK_BLUR)))
                params = {"Sampler": stage.sampler_name, "Model hash": stage.model_hash}
            media.save_frame(output, path)
            yield  # each frame is a turn: other users' jobs run in between
        paths.append(path)
        previous_in, previous_out = source, output
        job.images_done = index + 1
        job._notify()
    if not paths:
        if result.interrupted:
            return result
        raise InvalidRequest("video", "the video has no frames in the chosen range")
    info = build_infotext(request.prompt, request.negative_prompt, {
        "Steps": request.steps, "Sampler": params.get("Sampler") or request.sampler_name, "CFG scale": request.cfg_scale,
        "Seed": request.seed, "Size": f"{plan.width}x{plan.height}", "Model hash": params.get("Model hash") or model.short_hash,
        "Model": model.name, "Denoising strength": request.denoising_strength, "Frames": len(paths),
        "FPS": f"{plan.fps:g}", "Consistency": request.consistency if request.consistency == "none"
        else f"{request.consistency} {request.consistency_strength:g}", "Every nth": request.every_nth if request.every_nth > 1 else None,
        "Mask prompt": request.mask_prompt,
        "Mask points": json.dumps(request.mask_points) if request.mask_points else None,
        "Version": _version(),
    })
    return _finish(folder, paths, plan.fps, info, result)


# --- interpolation ---------------------------------------------------------------------------------

def interpolate(engine: "Engine", request: InterpolateRequest, job: Job | None = None) -> VideoResult:
    job = job or Job(kind="interpolate")
    return engine.run(job.owner, "interpolate", interpolate_work(engine, request), job)


def interpolate_work(engine: "Engine", request: InterpolateRequest):
    request.validate()
    data = _read_source(request.video)
    info = media.probe(data)
    if info.duration > MAX_DURATION_S:
        raise InvalidRequest("video", f"the video is {info.duration:.0f} s long; Kiri interpolates at most {MAX_DURATION_S:g} s")
    check_source(engine, info, min(info.frames, request.max_frames) or request.max_frames)
    fps = info.fps * request.factor
    if fps > MAX_FPS * 4:
        raise InvalidRequest("factor", f"{info.fps:g} fps x {request.factor} is above {MAX_FPS * 4:g} fps")
    return lambda job: _interpolate(engine, request, data, info, fps, job)


def _interpolate(engine: "Engine", request: InterpolateRequest, data: bytes, info: media.VideoInfo, fps: float,
                 job: Job) -> Generator[None, None, VideoResult]:
    from webui.engine.video.flow import in_betweens

    folder = _job_folder(engine, "interpolate", {"factor": request.factor, "max_frames": request.max_frames}, data, job.owner)
    total = min(info.frames, request.max_frames) or request.max_frames
    result = VideoResult(fps=fps)
    paths: list[Path] = []
    previous = None
    job.batch_no, job.batch_count, job.steps, job.step = 1, 1, total, 0
    for index, frame in enumerate(media.read_frames(data, info)):
        if index >= request.max_frames:
            break
        if job.interrupted:
            result.interrupted = True
            break
        job.label = f"Frame {index + 1}/{total}"
        images = [frame.image] if previous is None else [*in_betweens(previous, frame.image, request.factor - 1), frame.image]
        for image in images:
            paths.append(media.save_frame(image, _frame_path(folder, len(paths))))
        previous = frame.image
        job.advance(min(index + 1, total))
        if (index + 1) % INTERPOLATE_CHUNK == 0:
            yield
    if not paths:
        raise InvalidRequest("video", "the video has no frames")
    text = build_infotext("", "", {"Interpolation": f"x{request.factor} optical flow", "Frames": len(paths),
                                   "FPS": f"{fps:g}", "Source FPS": f"{info.fps:g}", "Version": _version()})
    return _finish(folder, paths, fps, text, result)


__all__ = [
    "txt2video_work", "vid2vid_work", "interpolate_work", "job_kinds", "decode_video",
    "Txt2VideoRequest", "Vid2VidRequest", "InterpolateRequest", "VideoResult", "txt2video", "vid2vid", "interpolate",
    "video_models", "motion_modules", "image_to_video_models", "is_video_model", "plan_vid2vid", "check_source", "first_frame", "check_masking", "frame_mask", "CONSISTENCY", "FACTORS",
    "MAX_FRAMES", "MAX_FPS",
]
