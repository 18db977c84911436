"""Tiny random-weight ControlNets and a T2I-Adapter for the tiny checkpoints (tests/tiny_models.py), saved
as diffusers folders under a models dir's ControlNet/ (real diffusers classes, as get_dummy_components does).

ControlNetModel.from_unet zero-initialises the zero convolutions (a fresh ControlNet changes nothing);
these fill them with small random weights so a unit visibly changes the picture."""

from __future__ import annotations

from pathlib import Path

import torch


def _randomise_zero_convs(controlnet, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for block in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]:
            block.weight.copy_(torch.randn(block.weight.shape, generator=generator) * 0.3)
            block.bias.copy_(torch.randn(block.bias.shape, generator=generator) * 0.1)


def make_controlnet(checkpoint: Path, out: Path, seed: int = 1) -> Path:
    """A ControlNetModel folder made from `checkpoint`'s UNet (SD 1.x or SDXL shaped), its tiny VAE's
    factor of 2 matched by a one-step conditioning embedding."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(checkpoint / "unet")
    torch.manual_seed(seed)
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32))
    _randomise_zero_convs(controlnet, seed)
    controlnet.save_pretrained(out)
    return out


def make_t2i_adapter(out: Path, seed: int = 3) -> Path:
    """A tiny T2IAdapter folder for the tiny SDXL (SDXL's layout, full_adapter_xl: its features at the two
    down blocks' outputs, 32 and 64 channels at a quarter of the picture's size)."""
    from diffusers import T2IAdapter

    torch.manual_seed(seed)
    adapter = T2IAdapter(in_channels=3, channels=[32, 64], num_res_blocks=1, downscale_factor=4,
                         adapter_type="full_adapter_xl")
    adapter.save_pretrained(out)
    return out
