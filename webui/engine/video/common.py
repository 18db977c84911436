"""What every video job shares beyond the frame plumbing (frames.py): the result, the source clip
read and checked against the pixel budget, the job folder a request's frames go to, the seed
resolved, and the models the Video tab lists."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from webui.engine.core.errors import InvalidRequest
from webui.engine.core.limits import check_video
from webui.engine.generation.requests import random_seed
from webui.engine.video import media, pipelines
from webui.engine.video.requests import MAX_UPLOAD_BYTES

if TYPE_CHECKING:
    from PIL import Image

    from webui.engine.context import Engine


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


# --- shared pieces ------------------------------------------------------------------------------

def read_source(video: Any) -> bytes:
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


def job_folder(engine: "Engine", kind: str, fields: dict[str, Any], source: bytes, owner: str) -> Path:
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
    data = read_source(video)
    info = media.probe(data)
    check_source(engine, info, 1)
    return next(iter(media.read_frames(data, info))).image


def with_seed(request: Any) -> Any:
    return request if request.seed != -1 else replace(request, seed=random_seed())
