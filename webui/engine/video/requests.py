"""The video capability's typed requests and their limits (what service.py runs): text to video,
video to video and interpolation, each validated as it is built, a bad field named."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from webui.engine.core.errors import InvalidRequest
from webui.engine.generation.requests import (
    MAX_CFG, MAX_SIZE, MAX_STEPS, MIN_SIZE, SEED_MAX, check_prompts, require_int, require_range,
)
from webui.engine.video import pipelines

MAX_FRAMES = 1000  # frames in one clip, made or read
MAX_DURATION_S = 600.0  # seconds of source video read
MAX_UPLOAD_BYTES = 512 * 2**20
MIN_FPS, MAX_FPS = 1.0, 60.0  # a clip's frame rate, asked for or derived from the source
CONSISTENCY = ("none", "blend", "flow")
FACTORS = (2, 4)
INTERPOLATE_CHUNK = 8  # source frames per turn
MASK_BLUR = 4  # feather of a mask_prompt's mask, pixels
MAX_FREE_INIT = 5  # FreeInit iterations (each one a full run of the steps)


# --- requests -------------------------------------------------------------------------------------

def _check_generation(r: Any) -> None:
    check_prompts(r, "clip")
    require_range("steps", r.steps, 1, MAX_STEPS)
    if isinstance(r.cfg_scale, bool) or not isinstance(r.cfg_scale, (int, float)) or not 0 <= r.cfg_scale <= MAX_CFG:
        raise InvalidRequest("cfg_scale", f"CFG scale must be between 0 and {MAX_CFG:g} (got {r.cfg_scale!r})")
    require_int("seed", r.seed)
    if not -1 <= r.seed <= SEED_MAX:
        raise InvalidRequest("seed", f"seed must be -1 (random) or between 0 and {SEED_MAX} (got {r.seed})")
    for name in ("model", "sampler_name", "scheduler"):
        value = getattr(r, name)
        if value is not None and not isinstance(value, str):
            raise InvalidRequest(name, f"{name} must be a name (text)")
    if not isinstance(r.addons, dict):
        raise InvalidRequest("addons", "addons must be an object of {name: settings}")


def _check_fps(name: str, value: Any, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not MIN_FPS <= value <= MAX_FPS:
        raise InvalidRequest(name, f"{name} must be a number of frames per second from {MIN_FPS:g} to {MAX_FPS:g} "
                                   f"(got {value!r})")


@dataclass
class Txt2VideoRequest:
    prompt: str  # one prompt, or prompt travel: lines "frame: prompt" (`0: a red circle` / `8: a blue circle`)
    negative_prompt: str = ""
    frames: int = 16
    fps: float = 8.0
    steps: int = 20
    sampler_name: str | None = None  # AnimateDiff: Kiri's samplers; a native video model keeps its own
    scheduler: str | None = None
    cfg_scale: float = 7.0
    seed: int = -1
    width: int = 512
    height: int = 512
    model: str | None = None  # an image checkpoint (with a motion module) or a video model; None: the selected one
    motion_module: str | None = None  # a name under models/motion/; None: the first there
    image: Any = None  # the first frame, for an image-to-video model (LTX-Video, Wan, CogVideoX I2V); PIL image
    free_init_iterations: int = 0  # AnimateDiff: FreeInit, the clip made this many times (steadier objects); 0/1 off
    addons: dict[str, Any] = field(default_factory=dict)  # {add-on name: its settings}, as an image request's

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        _check_generation(self)
        require_range("frames", self.frames, 1, MAX_FRAMES)
        if self.image is not None and not (hasattr(self.image, "size") and hasattr(self.image, "convert")):
            raise InvalidRequest("image", "image must be a picture (the clip's first frame) or left out")
        _check_fps("fps", self.fps)
        require_range("free_init_iterations", self.free_init_iterations, 0, MAX_FREE_INIT)
        for name in ("width", "height"):
            value = getattr(self, name)
            require_int(name, value)
            if not MIN_SIZE <= value <= MAX_SIZE or value % 8:
                raise InvalidRequest(name, f"{name} must be a multiple of 8 between {MIN_SIZE} and {MAX_SIZE} (got {value})")
        if self.motion_module is not None and not isinstance(self.motion_module, str):
            raise InvalidRequest("motion_module", "motion_module must be a name (text)")
        pipelines.keyframes(self.prompt, self.frames)


@dataclass
class Vid2VidRequest:
    video: Any  # the clip: bytes, or a path to an MP4/WebM/MOV/GIF file or a zip of frames
    prompt: str = ""
    negative_prompt: str = ""
    denoising_strength: float = 0.5
    consistency: str = "none"  # none | blend (previous output into the next init) | flow (it, warped by optical flow)
    consistency_strength: float = 0.5  # how much of the previous output goes into the next init
    every_nth: int = 1
    start_time: float = 0.0  # seconds
    end_time: float | None = None
    max_frames: int = 120
    max_size: int = 512  # the longer side of the frames denoised (rounded down to a multiple of 8)
    fps: float | None = None  # the output's; None: the source's divided by every_nth
    steps: int = 20
    sampler_name: str | None = None
    scheduler: str | None = None
    cfg_scale: float = 7.0
    seed: int = -1  # the same for every frame, so the style holds still
    model: str | None = None
    mask_prompt: str | None = None  # repaint only what the segmentation engine finds for these words
    motion_module: str | None = None  # restyle in windows with AnimateDiff's video-to-video pipeline, not frame by frame
    mask_points: list | None = None  # [[x, y, 1 | 0], ...] clicks on the first frame (source pixels): repaint only
    #                                  that object, followed through the clip by a SAM 2 video model
    addons: dict[str, Any] = field(default_factory=dict)  # {add-on name: its settings}: every frame's or window's call
    # Keep each frame's shapes where the source has them: a ControlNet unit on the source frame (frame by
    # frame only). "auto": the checkpoint's own structure ControlNet when it has one (kiri_controlnet.json)
    # and the request names no ControlNet units itself; "off"; or a ControlNet's name (with canny).
    structure: str = "auto"
    structure_weight: float | None = None  # None: the guide's own (1)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        _check_generation(self)
        _check_source(self.video)
        if not isinstance(self.structure, str) or not self.structure.strip():
            raise InvalidRequest("structure", 'structure must be "auto", "off" or a ControlNet\'s name')
        if self.structure_weight is not None and (isinstance(self.structure_weight, bool) or not isinstance(
                self.structure_weight, (int, float)) or not 0 <= self.structure_weight <= 2):
            raise InvalidRequest("structure_weight", f"structure weight must be between 0 and 2 (got {self.structure_weight!r})")
        if isinstance(self.denoising_strength, bool) or not isinstance(self.denoising_strength, (int, float)) \
                or not 0 <= self.denoising_strength <= 1:
            raise InvalidRequest("denoising_strength", f"denoising strength must be between 0 and 1 (got {self.denoising_strength!r})")
        if self.consistency not in CONSISTENCY:
            raise InvalidRequest("consistency", f"consistency must be one of {', '.join(CONSISTENCY)} (got {self.consistency!r})")
        if isinstance(self.consistency_strength, bool) or not isinstance(self.consistency_strength, (int, float)) \
                or not 0 <= self.consistency_strength <= 1:
            raise InvalidRequest("consistency_strength", "consistency strength must be between 0 and 1")
        require_range("every_nth", self.every_nth, 1, MAX_FRAMES)
        require_range("max_frames", self.max_frames, 1, MAX_FRAMES)
        require_range("max_size", self.max_size, MIN_SIZE, MAX_SIZE)
        _check_fps("fps", self.fps, optional=True)
        for name in ("start_time", "end_time"):
            value = getattr(self, name)
            if value is None and name == "end_time":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or not 0 <= value <= MAX_DURATION_S:
                raise InvalidRequest(name, f"{name} must be seconds between 0 and {MAX_DURATION_S:g} (got {value!r})")
        if self.end_time is not None and self.end_time <= self.start_time:
            raise InvalidRequest("end_time", f"end_time ({self.end_time}) must be after start_time ({self.start_time})")
        if self.mask_prompt is not None and not isinstance(self.mask_prompt, str):
            raise InvalidRequest("mask_prompt", "mask_prompt must be text")
        if self.motion_module is not None and not isinstance(self.motion_module, str):
            raise InvalidRequest("motion_module", "motion_module must be a name (text)")
        if self.motion_module and self.mask_prompt:
            raise InvalidRequest("mask_prompt", "a mask prompt repaints frame by frame; leave the motion module out to "
                                                "use it")
        if self.mask_points is not None:
            points = self.mask_points
            if not isinstance(points, list) or not points or len(points) > 64 or not all(
                    isinstance(p, (list, tuple)) and len(p) == 3 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                                      for v in p) and p[2] in (0, 1) for p in points):
                raise InvalidRequest("mask_points", "mask_points must be 1 to 64 clicks [x, y, 1 (object) or 0 (not)] "
                                                    "on the first frame")
            if self.mask_prompt or self.motion_module:
                raise InvalidRequest("mask_points", "give either mask_points or a mask prompt, and no motion module "
                                                    "(the clicked object is repainted frame by frame)")


@dataclass
class InterpolateRequest:
    video: Any
    factor: int = 2  # 2 or 4 times the frame rate
    max_frames: int = MAX_FRAMES  # source frames read

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        _check_source(self.video)
        if isinstance(self.factor, bool) or self.factor not in FACTORS:
            raise InvalidRequest("factor", f"factor must be 2 or 4 (got {self.factor!r})")
        require_range("max_frames", self.max_frames, 2, MAX_FRAMES)


def _check_source(video: Any) -> None:
    if isinstance(video, (bytes, bytearray)):
        if len(video) > MAX_UPLOAD_BYTES:
            raise InvalidRequest("video", f"the video is {len(video) / 2**20:.0f} MB; Kiri reads at most {MAX_UPLOAD_BYTES // 2**20} MB")
        return
    if isinstance(video, (str, Path)) and str(video):
        return
    raise InvalidRequest("video", "the video is missing: upload an MP4, WebM, MOV or GIF file, or a zip of frames")
