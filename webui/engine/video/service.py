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

Every denoising call goes through the add-on seam (generation.runner.call_with_addons), so the
add-ons a request names in `addons` apply to clips, windows and frames, or are refused by name.

This module is the public surface; the work lives by responsibility in text_to_video.py,
video_to_video.py (and motion_v2v.py), interpolation.py, common.py (result, source, job folder,
the models listed), frames.py (frame plumbing), requests.py, pipelines.py, media.py and flow.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from webui.engine.core.jobs import Job
from webui.engine.video import media, pipelines  # noqa: F401 - media: part of the public surface
from webui.engine.video.common import (  # noqa: F401 - re-exported: the public module
    VideoResult, check_source, decode_video, first_frame, image_to_video_models, is_video_model, motion_modules,
    video_models,
)
from webui.engine.video.frames import MAX_WEBP_FRAMES  # noqa: F401 - part of the module's public limits
from webui.engine.video.interpolation import interpolate_work
from webui.engine.video.requests import (  # noqa: F401 - the requests and limits, re-exported: the public module
    CONSISTENCY, FACTORS, INTERPOLATE_CHUNK, MASK_BLUR, MAX_DURATION_S, MAX_FPS, MAX_FRAMES, MAX_FREE_INIT, MAX_UPLOAD_BYTES,
    MIN_FPS,
    InterpolateRequest, Txt2VideoRequest, Vid2VidRequest,
)
from webui.engine.video.text_to_video import txt2video_work
from webui.engine.video.video_to_video import FrameJob, check_masking, frame_mask, plan_vid2vid, vid2vid_work  # noqa: F401

if TYPE_CHECKING:
    from webui.engine.context import Engine
    from webui.engine.registries import Registries


def txt2video(engine: "Engine", request: Txt2VideoRequest, job: Job | None = None) -> VideoResult:
    job = job or Job(kind="txt2video")
    return engine.run_kind("txt2video", request, job)  # through the engine's dispatcher (Ray Serve replicas)


def vid2vid(engine: "Engine", request: Vid2VidRequest, job: Job | None = None) -> VideoResult:
    job = job or Job(kind="vid2vid")
    return engine.run_kind("vid2vid", request, job)  # through the engine's dispatcher (Ray Serve replicas)


def interpolate(engine: "Engine", request: InterpolateRequest, job: Job | None = None) -> VideoResult:
    job = job or Job(kind="interpolate")
    return engine.run_kind("interpolate", request, job)  # through the engine's dispatcher (Ray Serve replicas)


# --- plain data: POST /kiri/v1/jobs {"kind": "vid2vid", "request": {...}} --------------------------

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

    # result_type: a VideoResult read back from plain data (a replica's, or a record on disk)
    return [JobKind("txt2video", Txt2VideoRequest, txt2video_work, _from_plain(Txt2VideoRequest), result_type=VideoResult),
            # each frame a part (engine.part_work), but a motion module denoises the clip at once
            JobKind("vid2vid", Vid2VidRequest, vid2vid_work, _from_plain(Vid2VidRequest), result_type=VideoResult,
                    parts=lambda request: not getattr(request, "motion_module", None)),
            JobKind("interpolate", InterpolateRequest, interpolate_work, _from_plain(InterpolateRequest),
                    result_type=VideoResult)]


def register(registries: "Registries") -> None:
    """The video jobs, and motion modules and video pipelines for the model manager."""
    for kind in job_kinds():
        registries.add_job_kind(kind)
    registries.add_loader("motion", pipelines.load_motion_module)
    registries.add_loader("video", pipelines.load_video_pipeline)


__all__ = [
    "txt2video_work", "vid2vid_work", "interpolate_work", "job_kinds", "decode_video",
    "Txt2VideoRequest", "Vid2VidRequest", "InterpolateRequest", "VideoResult", "txt2video", "vid2vid", "interpolate",
    "video_models", "motion_modules", "image_to_video_models", "is_video_model", "plan_vid2vid", "check_source", "first_frame", "check_masking", "frame_mask", "CONSISTENCY", "FACTORS",
    "MAX_FRAMES", "MAX_FPS",
]
