"""The frame plumbing every video job shares: where frames go, the clip files written from them,
progress per frame, the step callback (with Interrupt), and the frames a vid2vid request selects.
Below service.py and motion_v2v.py, so neither imports the other's internals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from webui.engine.core.errors import Interrupted
from webui.engine.core.jobs import Job
from webui.engine.video import media

MAX_WEBP_FRAMES = 240


def frame_path(folder: Path, index: int) -> Path:
    return folder / "frames" / f"{index:05d}.png"


def version() -> str:
    from webui import __version__

    return f"Kiri v{__version__}"


def finish(folder: Path, frame_paths: list[Path], fps: float, info: str, result: Any) -> Any:
    """The clip files, from the frames on disk (each complete before it appears)."""
    from PIL import Image

    result.frame_paths, result.fps, result.info, result.folder = list(frame_paths), fps, info, folder
    if not frame_paths:
        return result

    def images():
        for path in frame_paths:
            with Image.open(path) as image:
                yield image.convert("RGB")

    result.path = media.write_mp4(images(), fps, folder / "clip.mp4", info)
    result.gif_path = media.write_animation(images(), fps, folder / "clip.gif", "GIF")
    if len(frame_paths) <= MAX_WEBP_FRAMES:  # PIL's WebP writer holds every frame in memory
        result.webp_path = media.write_animation(images(), fps, folder / "clip.webp", "WEBP")
    else:
        result.warnings.append(f"No animated WebP: the clip has {len(frame_paths)} frames, more than {MAX_WEBP_FRAMES}.")
    result.zip_path = media.write_zip(frame_paths, folder / "frames.zip")
    sidecar = folder / "clip.txt"
    tmp = sidecar.with_name(".clip.txt.tmp")
    tmp.write_text(info, encoding="utf-8")
    tmp.replace(sidecar)
    return result


def frame_count(job: Job, done: int, total: int) -> None:
    job.batch_no, job.batch_count, job.image_count, job.images_done = done + 1, total, total, done
    job.label = f"Frame {min(done + 1, total)}/{total}"


def step_callback(job: Job, stopped: list[int]):
    """Progress per step (every step of every FreeInit iteration); on Interrupt, a pipeline that can
    skip its remaining steps (diffusers' own `_interrupt`) does so and still decodes its frames (the
    steps done are noted in `stopped`); one that cannot is stopped at once."""
    done = [0]

    def on_step_end(pipe: Any, step: int, timestep: Any, tensors: dict) -> dict:
        done[0] += 1  # counted, not `step + 1`: FreeInit runs the steps once per iteration
        job.advance(done[0])
        if job.interrupted and not stopped:
            if not hasattr(pipe, "_interrupt"):
                raise Interrupted()
            stopped.append(done[0])
            pipe._interrupt = True
        return tensors

    return on_step_end


def selected(plan: Any, request: Any):
    taken = kept = 0
    for frame in media.read_frames(plan.data, plan.info):
        if frame.time + 1e-6 < request.start_time:
            continue
        if request.end_time is not None and frame.time >= request.end_time:
            break
        if taken % request.every_nth == 0:
            yield frame
            kept += 1
            if kept >= plan.count:
                break
        taken += 1
