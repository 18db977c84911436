"""The embedded motion module (models/motion/kiri-motion) on the default LDM, through Kiri's own video
engine as the Video tab runs it: held-out prompts move the way they say (small and fast; the card
has the full table), and the objects stay themselves from frame to frame."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tools import train_motion as T

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from webui.bootstrap import build_engine
    from webui.engine.core.devices import DeviceChoice
    from webui.engine.settings import Settings

    settings = Settings(models_dir=ROOT / "models", outputs_dir=tmp_path_factory.mktemp("out"), save_images=False)
    return build_engine(settings, DeviceChoice("cpu"))


def test_the_video_tab_offers_the_embedded_module_and_its_clip_length(engine):
    from webui.engine.video.service import motion_modules
    from webui.engine.video.pipelines import context_length

    assert motion_modules(engine) == ["kiri-motion"]
    adapter = engine.models.get_of_kind("motion", "kiri-motion").model
    assert context_length(adapter) == 8  # what it was trained on: longer clips run in FreeNoise windows


def test_held_out_prompts_move_the_way_they_say(engine):
    """One held-out prompt per motion (colour x shape x motion never trained), 8 frames, Kiri's default
    sampler, 20 steps: the scene detector tracks the object and reads its motion."""
    import numpy as np

    from webui.engine.video.service import Txt2VideoRequest, txt2video

    rng = random.Random(11)
    right, consistent, frames_seen, report = 0, 0, 0, []
    for i, motion in enumerate(T.MOTIONS):
        _, caption, _ = T.motion_clip(rng, 8, motion, held_out=True, plain=True)
        result = txt2video(engine, Txt2VideoRequest(prompt=caption, frames=8, fps=8, steps=20, cfg_scale=5, seed=100 + i,
                                                    width=64, height=64, model="kiri-shapes-ldm",
                                                    motion_module="kiri-motion"))
        clip = [np.asarray(f) for f in result.frames()]
        tracked = T.track(clip)
        measured = T.measured_motion(clip, tracked)
        right += measured == motion
        looks = [(d.colour, d.shape) for d in tracked if d is not None]
        consistent += looks.count(max(set(looks), key=looks.count)) if looks else 0
        frames_seen += len(clip)
        report.append((caption, measured))
    assert right >= 4, report  # of 6; the card: 48 held-out clips
    assert consistent / frames_seen >= 0.75, report
