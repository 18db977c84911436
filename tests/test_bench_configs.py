"""bench/gpu.py's architectures are the real ones: each config, built on the meta device (no memory),
has the published parameter count of its model's denoiser and text encoders."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

# Parameter counts of the published models' components (their diffusers/transformers folders).
DENOISERS = {"sd15": 859_520_964, "sdxl": 2_567_463_684, "sd3": 2_028_328_000, "flux": 11_901_408_320}
CLIP_L, CLIP_G = (123_060_480, 123_650_304), 694_659_840  # CLIP-L without and with its projection


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("key", sorted(DENOISERS))
def test_the_architecture_has_the_published_size(key):
    import diffusers
    import torch
    import transformers
    from configs.architectures import ARCHITECTURES

    arch = ARCHITECTURES[key]
    with torch.device("meta"):
        if "unet" in arch:
            denoiser = diffusers.UNet2DConditionModel(**arch["unet"])
        else:
            cls, config = arch["transformer"]
            denoiser = getattr(diffusers, cls)(**config)
        assert _count(denoiser) == DENOISERS[key]
        cls, config = arch["text_encoder"]
        assert _count(getattr(transformers, cls)(transformers.CLIPTextConfig(**config))) in CLIP_L
        if key in ("sdxl", "sd3"):
            cls, config = arch["text_encoder_2"]
            assert _count(getattr(transformers, cls)(transformers.CLIPTextConfig(**config))) == CLIP_G
        vae = diffusers.AutoencoderKL(**arch["vae"])
        assert vae.config.latent_channels == (4 if key in ("sd15", "sdxl") else 16)
