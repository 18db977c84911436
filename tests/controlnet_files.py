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


def save_ldm_controlnet(checkpoint: Path, out_file: Path, seed: int = 4) -> dict[str, torch.Tensor]:
    """An A1111-style single file (`control_model.` keys, ldm layout: input_hint_block, zero_convs,
    middle_block_out) of a tiny ControlNet with the standard 8x hint encoder; returns the diffusers weights
    it was made from, for comparison."""
    from diffusers import ControlNetModel, UNet2DConditionModel
    from safetensors.torch import save_file

    from tiny_models import _unet_to_ldm

    unet = UNet2DConditionModel.from_pretrained(checkpoint / "unet")
    torch.manual_seed(seed)
    controlnet = ControlNetModel.from_unet(unet)  # conditioning embedding (16, 32, 96, 256), as the real ones
    _randomise_zero_convs(controlnet, seed)
    state = {k: v.contiguous() for k, v in controlnet.state_dict().items()}
    shared = {k: v for k, v in state.items() if not k.startswith(("controlnet_", ))}
    out = {k.replace("model.diffusion_model.", "control_model."): v
           for k, v in _unet_to_ldm(shared, unet.config.layers_per_block).items()}
    blocks = len(controlnet.controlnet_cond_embedding.blocks)
    for key, value in state.items():
        if key.startswith("controlnet_down_blocks."):
            i = key.split(".")[1]
            out[f"control_model.zero_convs.{i}.0.{key.rsplit('.', 1)[1]}"] = value
        elif key.startswith("controlnet_mid_block."):
            out[f"control_model.middle_block_out.0.{key.rsplit('.', 1)[1]}"] = value
        elif key.startswith("controlnet_cond_embedding.conv_in."):
            out[f"control_model.input_hint_block.0.{key.rsplit('.', 1)[1]}"] = value
        elif key.startswith("controlnet_cond_embedding.conv_out."):
            out[f"control_model.input_hint_block.{2 * blocks + 2}.{key.rsplit('.', 1)[1]}"] = value
        elif key.startswith("controlnet_cond_embedding.blocks."):
            j = int(key.split(".")[2])
            out[f"control_model.input_hint_block.{2 * (j + 1)}.{key.rsplit('.', 1)[1]}"] = value
    out_file.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(out_file))
    return state
