"""tools/train_motion.py without training: its clips show the captioned motion, its evaluator reads that
motion back from them, held-out combinations stay out of training, and its module fits the embedded kiri-shapes-ldm (a smoke run is a manual step)."""

from __future__ import annotations

import random

import pytest

from tools import train_motion as T


@pytest.mark.parametrize("motion", list(T.MOTIONS))
def test_the_evaluator_reads_the_motion_of_a_true_clip(motion):
    rng = random.Random(3)
    for _ in range(3):
        clip, caption, name = T.motion_clip(rng, 8, motion)
        assert name == motion and T.MOTIONS[motion] in caption and clip.shape == (8, 64, 64, 3)
        assert T.measured_motion(list(clip)) == motion, caption


def test_a_still_clip_reads_as_still():
    rng = random.Random(0)
    clip, _, _ = T.motion_clip(rng, 8, "right")
    assert T.measured_motion([clip[0]] * 8) == "still"


def test_held_out_combinations_never_train_and_are_all_the_evaluation_uses():
    rng = random.Random(1)
    for _ in range(200):
        clip, caption, motion = T.motion_clip(rng, 8, None)
        found = T.W.detect(clip[0])[0][0]
        assert (found.colour, found.shape, motion) not in T.MOTION_HELD_OUT, caption
    for motion in T.MOTIONS:
        clip, caption, name = T.motion_clip(rng, 8, motion, held_out=True, plain=True)
        found = T.W.detect(clip[0])[0][0]
        assert name == motion and (found.colour, found.shape, motion) in T.MOTION_HELD_OUT
        assert caption.startswith("a ") and caption.endswith(" background") and T.MOTIONS[motion] in caption


def test_the_module_fits_the_embedded_image_model_and_starts_as_identity():
    import json

    import torch
    from diffusers import UNet2DConditionModel, UNetMotionModel

    config = json.loads((T.IMAGE_MODEL / "unet" / "config.json").read_text())
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(config)
    adapter = T.make_adapter(8, unet.config)
    motion = UNetMotionModel.from_unet2d(unet, adapter)
    assert set(T.motion_state(motion)) == set(adapter.state_dict())
    sample = torch.randn(1, 4, 8, 16, 16)
    text = torch.randn(8, 4, config["cross_attention_dim"])
    with torch.no_grad():
        video = motion(sample, 10, encoder_hidden_states=text).sample
        frames = unet(sample[0].permute(1, 0, 2, 3), 10, encoder_hidden_states=text).sample
    # Zero output projections: frame by frame, the untrained module leaves the image model's output as it was.
    assert torch.allclose(video[0].permute(1, 0, 2, 3), frames, atol=1e-4)
