"""/kiri/v1 video routes: text to video, video to video, interpolation.

    POST /kiri/v1/txt2video    {prompt, negative_prompt, frames, fps, steps, sampler_name, scheduler, cfg_scale,
                                seed, width, height, model?, motion_module?, image? (base64 first frame,
                                for an image-to-video model), addons? ({name: settings})}
    POST /kiri/v1/vid2vid      {video: base64, prompt, denoising_strength, consistency: none|blend|flow,
                                every_nth?, max_frames?, mask_prompt?, mask_points?, motion_module?,
                                ...the generation fields}
    POST /kiri/v1/interpolate  {video: base64, factor: 2|4}
    GET  /kiri/v1/video-models -> {models, motion_modules}: what the Video tab lists

Each answers {"video": base64 H.264 MP4, "frames": [base64 PNG], "fps", "info"}. The jobs run in the
same fair queue as every other; /sdapi/v1/progress and /sdapi/v1/interrupt see and stop them.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict

from webui.engine.core.jobs import Job
from webui.engine.video import service
from webui.engine.video.service import InterpolateRequest, decode_video, Txt2VideoRequest, Vid2VidRequest, VideoResult

from .common import ApiContext, KiriRoute, decode_image

_V2V = {name: f.default for name, f in Vid2VidRequest.__dataclass_fields__.items()}


class GenerationFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = ""
    negative_prompt: str = ""
    steps: int = 20
    sampler_name: str | None = None
    scheduler: str | None = None
    cfg_scale: float = 7.0
    seed: int = -1
    model: str | None = None
    addons: dict[str, Any] = {}  # {add-on name: settings}, as /kiri/v1/jobs' image requests take them


class Txt2VideoBody(GenerationFields):
    frames: int = 16
    fps: float = 8.0
    width: int = 512
    height: int = 512
    motion_module: str | None = None
    image: str | None = None  # base64 first frame, for an image-to-video model
    free_init_iterations: int = 0  # AnimateDiff's FreeInit: the clip made this many times, steadier (0/1: off)


class Vid2VidBody(GenerationFields):
    video: str
    # The engine's defaults (Vid2VidRequest's), as the Video tab shows them.
    denoising_strength: float = _V2V["denoising_strength"]
    consistency: str = _V2V["consistency"]
    consistency_strength: float = _V2V["consistency_strength"]
    every_nth: int = 1
    start_time: float = 0.0
    end_time: float | None = None
    max_frames: int = 120
    max_size: int = 512
    fps: float | None = None
    mask_prompt: str | None = None
    mask_points: list[list[float]] | None = None  # [[x, y, 1 | 0], ...] on the first frame, followed by SAM 2 video
    motion_module: str | None = None  # restyle with AnimateDiff video-to-video, windows of frames together
    structure: str = _V2V["structure"]  # "auto" | "off" | a ControlNet's name: keep the source frames' shapes
    structure_weight: float | None = None


class InterpolateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    video: str
    factor: int = 2
    max_frames: int = service.MAX_FRAMES


def answer(result: VideoResult) -> dict:
    return result.plain()


def build_router(ctx: ApiContext) -> APIRouter:
    engine = ctx.engine
    router = APIRouter(prefix="/kiri/v1", tags=["video"], dependencies=ctx.dependencies(), route_class=KiriRoute)

    @router.post("/txt2video")
    def txt2video(body: Txt2VideoBody, http: Request) -> dict:
        fields = body.model_dump()
        if fields["image"] is not None:
            fields["image"] = decode_image(fields["image"], "image", max_pixels=ctx.max_pixels)
        request = Txt2VideoRequest(**fields)
        return answer(service.txt2video(engine, request, Job(kind="txt2video", owner=ctx.owner(http))))

    @router.post("/vid2vid")
    def vid2vid(body: Vid2VidBody, http: Request) -> dict:
        fields = body.model_dump()
        fields["video"] = decode_video(fields["video"])
        request = Vid2VidRequest(**fields)
        return answer(service.vid2vid(engine, request, Job(kind="vid2vid", owner=ctx.owner(http))))

    @router.post("/interpolate")
    def interpolate(body: InterpolateBody, http: Request) -> dict:
        request = InterpolateRequest(video=decode_video(body.video), factor=body.factor, max_frames=body.max_frames)
        return answer(service.interpolate(engine, request, Job(kind="interpolate", owner=ctx.owner(http))))

    @router.get("/video-models")
    def video_models() -> dict:
        return {"models": service.video_models(engine), "motion_modules": service.motion_modules(engine)}

    return router
