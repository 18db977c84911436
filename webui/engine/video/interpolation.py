"""Interpolation: x2 or x4 the frame rate with optical-flow in-betweens (flow.py), a few source
frames a turn; nothing denoises."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Generator

from webui.engine.core.errors import InvalidRequest
from webui.engine.core.infotext import build_infotext
from webui.engine.core.jobs import Job
from webui.engine.video import media
from webui.engine.video.common import VideoResult, check_source, job_folder, read_source
from webui.engine.video.frames import finish, frame_path, version
from webui.engine.video.requests import INTERPOLATE_CHUNK, MAX_DURATION_S, MAX_FPS, InterpolateRequest

if TYPE_CHECKING:
    from webui.engine.context import Engine


def interpolate_work(engine: "Engine", request: InterpolateRequest):
    request.validate()
    data = read_source(request.video)
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

    folder = job_folder(engine, "interpolate", {"factor": request.factor, "max_frames": request.max_frames}, data, job.owner)
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
            paths.append(media.save_frame(image, frame_path(folder, len(paths))))
        previous = frame.image
        job.advance(min(index + 1, total))
        if (index + 1) % INTERPOLATE_CHUNK == 0:
            yield
    if not paths:
        raise InvalidRequest("video", "the video has no frames")
    text = build_infotext("", "", {"Interpolation": f"x{request.factor} optical flow", "Frames": len(paths),
                                   "FPS": f"{fps:g}", "Source FPS": f"{info.fps:g}", "Version": version()})
    return finish(folder, paths, fps, text, result)
