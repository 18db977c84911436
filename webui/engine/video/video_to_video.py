"""Video to video: each frame of the clip restyled as an img2img stage of the video job (a turn of
the fair queue each, through the runner), with blend or optical-flow consistency and a mask from
words or clicks; or, with a motion module, in windows of frames denoised together (motion_v2v.py).
Frames stream to the job folder, so an Interrupt keeps the finished ones and a rerun resumes."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generator

from webui.engine.core.errors import InvalidRequest
from webui.engine.core.infotext import build_infotext
from webui.engine.core.jobs import Job
from webui.engine.core.limits import check_output
from webui.engine.generation.requests import MIN_SIZE
from webui.engine.video import media
from webui.engine.video.common import VideoResult, check_source, is_video_model, job_folder, read_source, with_seed
from webui.engine.video.frames import finish, frame_count, frame_path, selected, version
from webui.engine.video.requests import MASK_BLUR, MAX_DURATION_S, MAX_FPS, MIN_FPS, Vid2VidRequest

if TYPE_CHECKING:
    from PIL import Image

    from webui.engine.context import Engine


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
            self.parent.advance(step)

    def show_preview(self, image: Any, step: int) -> None:
        super().show_preview(image, step)
        if self.parent is not None:
            self.parent.show_preview(image, step)

    def finish_images(self, count: int) -> None:
        pass  # the video job counts its frames itself


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
    data = read_source(request.video)
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
    frames = (f.image.convert("RGB").resize((plan.width, plan.height), Image.LANCZOS) for f in selected(plan, request))
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
    from webui.engine.segment import SegmentRequest, mask_tools, segment

    found = segment(engine, SegmentRequest(image=frame, prompt=prompt), owner=owner)
    if not found.masks:
        return None
    return mask_tools.to_image(mask_tools.union(found.arrays())) if len(found.masks) > 1 else found.masks[0].convert("L")


def structure_guide(engine: "Engine", request: Vid2VidRequest, model_name: str) -> dict | None:
    """The ControlNet unit (without its image) that keeps each frame's shapes where the source has them,
    or None: request.structure "off"; "auto" when the checkpoint names no structure ControlNet, it is not
    installed, no add-on reads ControlNet units, or the request brings ControlNet units of its own."""
    choice = request.structure.strip()
    if choice.lower() == "off" or "controlnet" not in engine.addons.names():
        return None
    if choice.lower() == "auto":
        if request.addons.get("controlnet"):
            return None  # the user's own units say how to guide the frames
        entry = engine.catalog.find(model_name)
        guide = entry.structure_guide() if entry is not None else None
        if guide is None or engine.catalog.find_of_kind("controlnet", guide["model"]) is None:
            return None
    else:
        if engine.catalog.find_of_kind("controlnet", choice) is None:
            names = [e.name for e in engine.catalog.of_kind("controlnet")]
            raise InvalidRequest("structure", f"no ControlNet named {choice!r}; installed: {', '.join(names) or '(none)'} "
                                              '(or "auto", "off")')
        guide = {"model": choice, "module": "canny", "weight": 1.0}
    if request.structure_weight is not None:
        guide = {**guide, "weight": float(request.structure_weight)}
    return guide if guide["weight"] > 0 else None


def with_structure(addons: dict, guide: dict | None, source: Any) -> dict:
    """The frame's add-ons: the request's, plus the structure unit on the source frame (not the blended init)."""
    addons = dict(addons)
    if guide is not None:
        addons["controlnet"] = [{**guide, "image": source}, *list(addons.get("controlnet") or [])]
    return addons


def vid2vid_work(engine: "Engine", request: Vid2VidRequest):
    """The job's work; the clip's header, the caps and the mask prompt's segmenter checked first."""
    request.validate()
    request = with_seed(request)
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
    engine.addons.build(request.addons, request.prompt, request.negative_prompt)  # unknown add-ons and bad settings refused before the job is queued
    if request.structure.strip().lower() not in ("auto", "off"):
        structure_guide(engine, request, request.model or engine.selected_model or "")  # an unknown ControlNet, before queueing
    plan = plan_vid2vid(engine, request)
    return lambda job: _vid2vid(engine, request, plan, job)


@dataclass(frozen=True)
class _Checkpoint:
    name: str
    short_hash: str


def _checkpoint(engine: "Engine", request: Vid2VidRequest) -> Any:
    """The clip's checkpoint, loaded (its load is the job's first turn); where a dispatcher sends the frames
    to replicas (engine.part_work), named from the catalog instead, so this process does not load it."""
    if engine.dispatcher is None or request.motion_module:
        return engine.models.get(request.model or engine.selected_model, preferred=engine.settings.default_model)
    entry = engine.catalog.find(request.model) if request.model else engine.current_entry()
    if entry is None:
        raise InvalidRequest("model", f"no checkpoint named {request.model!r}")
    return _Checkpoint(entry.name, engine.catalog.full_hash(entry)[:10])


def _vid2vid(engine: "Engine", request: Vid2VidRequest, plan: _Plan, job: Job) -> Generator[None, None, VideoResult]:
    from PIL import Image, ImageFilter

    from webui.engine.generation.img2img import Img2ImgRequest
    from webui.engine.video.flow import warp_onto

    result = VideoResult(fps=plan.fps, seed=request.seed)
    model = _checkpoint(engine, request)
    fields = {name: getattr(request, name) for name in request.__dataclass_fields__ if name != "video"}
    folder = job_folder(engine, "vid2vid", {**fields, "model": model.name}, plan.data, job.owner)
    if request.motion_module:
        from webui.engine.video import motion_v2v

        return (yield from motion_v2v.run(engine, request, plan, job, folder, result))
    frame_count(job, 0, plan.count)
    yield  # the setup (source read, model loaded) was one turn

    paths: list[Path] = []
    previous_in = previous_out = None
    params: dict[str, object] = {}
    guide = structure_guide(engine, request, model.name)
    tracked = _tracked_masks(engine, request, plan, job) if request.mask_points else None
    for index, frame in enumerate(selected(plan, request)):
        frame_count(job, index, plan.count)
        path = frame_path(folder, index)
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
                    addons=with_structure(request.addons, guide, source)))
                # a part of the clip's job: here, or a turn of its own on a free replica (engine.part_work)
                stage = yield from engine.part_work("img2img_part", frame_request)(
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
        "Structure": f"{guide['model']} ({guide['module']}, weight {guide['weight']:g})" if guide else None,
        "Mask points": json.dumps(request.mask_points) if request.mask_points else None,
        "Version": version(),
    })
    return finish(folder, paths, plan.fps, info, result)
