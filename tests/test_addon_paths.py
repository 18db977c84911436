"""Every denoising call goes through the add-on seam (generation.runner.call_with_addons): an add-on
a request names reaches text to video and each of its FreeInit rounds, motion video to video's
windows, frame-by-frame video to video, and a diffusion upscaler's tiles; where it cannot apply it
is refused naming itself; and the X/Y grid's cells run as the txt2img job kind, so a hires fix on
the base request makes every cell."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import tiny_models
from video_clips import SIZE, moving_square_frames, write_clip
from webui.engine.core.addons import Addon, AddonSpec
from webui.engine.core.errors import InvalidRequest


class Seen(Addon):
    """Counts its lifetimes' events and notes what each call looked like."""

    name = "seen"

    def __init__(self, log: dict):
        self.log = log
        for key in ("apply", "release", "steps"):
            log.setdefault(key, 0)
        log.setdefault("pipelines", [])
        log.setdefault("latents", set())

    def apply(self, call):
        self.log["apply"] += 1
        self.log["pipelines"].append(type(call.pipeline).__name__)
        self.log["clip_skip_planned"] = getattr(call.conditioning, "clip_skip", None)

    def release(self, call):
        self.log["release"] += 1
        self.log["clip_skip_kwarg"] = call.kwargs.get("clip_skip")
        self.log["embedded"] = "prompt_embeds" in call.kwargs

    def on_step(self, step):
        self.log["steps"] += 1
        self.log["latents"].add(tuple(step.tensors["latents"].shape))
        return None


class SeenNoSteps(Seen):
    """The same, with no step callback (a pipeline without one can still take it)."""

    name = "seen"
    on_step = Addon.on_step


def watch(engine, cls=Seen) -> dict:
    log: dict = {}
    engine.addons.register(AddonSpec("seen", lambda settings: cls(log), (), "test"), override=True)
    return log


def test_an_addon_reaches_text_to_video_and_every_freeinit_round(video_engine):
    from webui.engine.video.service import Txt2VideoRequest, txt2video

    log = watch(video_engine)
    result = txt2video(video_engine, Txt2VideoRequest(
        prompt="a red circle", frames=2, fps=4, steps=2, width=SIZE, height=SIZE, seed=3, model="tiny-sd",
        motion_module="tiny-motion", sampler_name="Euler", free_init_iterations=2, addons={"seen": True}))
    assert len(result.frame_paths) == 2 and "FreeInit: 2" in result.info
    assert (log["apply"], log["release"]) == (2, 2), "each FreeInit round is one call the add-on applies to"
    assert log["pipelines"] == ["AnimateDiffPipeline"] * 2
    assert log["steps"] == 4 and {shape[:3] for shape in log["latents"]} == {(1, 4, 2)}  # both frames, each step


def test_clip_skip_reaches_text_to_video(video_engine):
    from webui.engine.video.service import Txt2VideoRequest, txt2video

    log = watch(video_engine)  # registered after clip_skip: sees the call as clip skip left it
    request = Txt2VideoRequest(prompt="a red circle", frames=2, fps=4, steps=1, width=SIZE, height=SIZE, seed=3,
                               model="tiny-sd", motion_module="tiny-motion", sampler_name="Euler",
                               addons={"clip_skip": 2, "seen": True})
    result = txt2video(video_engine, request)
    assert "Clip skip: 2" in result.info
    # The conditioning stage encoded the prompt from the second-last layer, as for a picture.
    assert log["clip_skip_planned"] == 2 and log["embedded"] and log["clip_skip_kwarg"] is None


def test_an_addon_a_video_pipeline_cannot_take_is_refused_naming_it(video_engine):
    from webui.engine.video.service import Txt2VideoRequest, txt2video

    with pytest.raises(InvalidRequest) as refused:
        txt2video(video_engine, Txt2VideoRequest(prompt="a red circle", frames=1, fps=4, steps=1, width=SIZE,
                                                 height=SIZE, seed=1, model="tiny-wan", addons={"clip_skip": 2}))
    assert refused.value.field == "clip_skip"
    with pytest.raises(InvalidRequest) as refused:  # unknown names are refused before the job is queued
        txt2video(video_engine, Txt2VideoRequest(prompt="x", frames=1, steps=1, width=SIZE, height=SIZE,
                                                 addons={"nope": True}))
    assert refused.value.field == "addons" and "nope" in str(refused.value)


def test_an_addon_reaches_each_window_of_motion_video_to_video_and_each_frame_otherwise(video_engine, tmp_path):
    from webui.engine.video.service import Vid2VidRequest, vid2vid

    log = watch(video_engine)
    clip = write_clip(tmp_path / "long.mp4", moving_square_frames(12, step=2))
    result = vid2vid(video_engine, Vid2VidRequest(
        video=clip, prompt="a square", steps=2, seed=6, model="tiny-sd", max_size=SIZE, max_frames=12,
        denoising_strength=0.5, sampler_name="Euler", motion_module="tiny-motion", addons={"seen": True}))
    assert len(result.frame_paths) == 12 and "Window: 8" in result.info
    assert log["apply"] == log["release"] == 2 and log["pipelines"] == ["AnimateDiffVideoToVideoPipeline"] * 2
    assert {shape[2] for shape in log["latents"]} == {8, 4}  # the windows' frames, denoised together

    log = watch(video_engine)
    frames = vid2vid(video_engine, Vid2VidRequest(
        video=clip, prompt="a square", steps=2, seed=6, model="tiny-sd", max_size=SIZE, max_frames=2,
        denoising_strength=0.5, sampler_name="Euler", addons={"seen": True}))
    assert len(frames.frame_paths) == 2 and log["apply"] == 2  # one img2img stage per frame, through the runner


@pytest.fixture(scope="module")
def sr_engine(tmp_path_factory):
    from webui.bootstrap import build_engine
    from webui.engine.core.devices import DeviceChoice
    from webui.engine.settings import Settings

    root = tmp_path_factory.mktemp("sr_addon_models")
    tiny_models.make_tiny_sd_x4_upscaler(root / "upscalers" / "sd-x4-tiny")
    tiny_models.make_tiny_ldm_super_resolution(root / "upscalers" / "ldm-x4-tiny")
    settings = Settings(models_dir=root, outputs_dir=tmp_path_factory.mktemp("sr_addon_outputs"), save_images=False)
    engine = build_engine(settings, DeviceChoice("cpu"))
    engine.catalog.scan()
    return engine


def _picture(width, height):
    x = np.linspace(0, 255, width)[None, :, None] * np.ones((height, 1, 3))
    return Image.fromarray(x.astype(np.uint8))


def test_an_addon_reaches_every_tile_of_a_diffusion_upscaler(sr_engine):
    from webui.engine.upscale import UpscaleRequest, upscale_images

    log = watch(sr_engine, SeenNoSteps)
    request = UpscaleRequest([_picture(48, 24)], "sd-x4-tiny", scale=4, tile_size=32, tile_overlap=16,
                             addons={"clip_skip": 2, "seen": True})
    result = upscale_images(sr_engine, request)
    assert result.tiles == 2 and result.images[0].size == (192, 96)
    assert log["apply"] == log["release"] == 2 and log["pipelines"] == ["StableDiffusionUpscalePipeline"] * 2
    assert log["clip_skip_planned"] == 2 and log["embedded"]  # its prompt encoded from the second-last layer
    assert "Clip skip: 2" in result.infotexts[0]


def test_an_addon_an_upscaler_cannot_take_is_refused_naming_it(sr_engine):
    from webui.engine.upscale import UpscaleRequest, upscale_images

    picture = _picture(48, 24)
    cases = [
        (UpscaleRequest([picture], "Lanczos", scale=2, addons={"clip_skip": 2}), "clip_skip", "does not denoise"),
        (UpscaleRequest([picture], "ldm-x4-tiny", scale=4, tile_size=32, tile_overlap=16, addons={"clip_skip": 2}), "clip_skip",
         "no clip skip"),
    ]
    for request, field, words in cases:
        with pytest.raises(InvalidRequest) as refused:
            upscale_images(sr_engine, request)
        assert refused.value.field == field and words in str(refused.value)
    watch(sr_engine)  # an add-on with a step callback, on pipelines that take none
    with pytest.raises(InvalidRequest) as refused:
        upscale_images(sr_engine, UpscaleRequest([picture], "sd-x4-tiny", scale=4, tile_size=32, tile_overlap=16, addons={"seen": True}))
    assert refused.value.field == "seen" and "no step callback" in str(refused.value)


def test_the_xy_grid_honours_the_base_requests_hires_fix(engine):
    from webui.engine.generation.requests import HiresFix, Txt2ImgRequest
    from webui.engine.generation.xy_grid import xy_grid

    base = Txt2ImgRequest("a red circle", steps=1, width=64, height=64, seed=7, sampler_name="Euler",
                          hires=HiresFix(scale=2, upscaler="Lanczos", denoising_strength=0.5, steps=1))
    result = xy_grid(engine, base, "Steps", "1, 2")
    assert len(result.images) == 2 and {image.size for image in result.images} == {(128, 128)}
    assert all("Hires upscale: 2" in text for text in result.infotexts)
    with pytest.raises(InvalidRequest) as refused:  # every cell checked as a plain request would be, before any work
        xy_grid(engine, Txt2ImgRequest("x", steps=1, width=64, height=64, hires=HiresFix(upscaler="nope")), "Steps", "1")
    assert refused.value.field == "hr_upscaler"
