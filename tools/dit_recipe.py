"""Pieces of the DiT's training recipe (issue 32), each off by default and switched on from
tools/train_default_models.py, so a run can be compared with the shipped recipe at equal steps:

* ``flow_weights`` -- per-sample loss weights over the rectified-flow time t (sigma = t, the target the
  velocity noise - x0): ``min-snr`` (min-SNR-gamma, Hang et al. 2023, carried over to the velocity loss:
  the x0 error is t times the velocity error, so weighting the x0 loss by min(SNR, gamma) with
  SNR = ((1 - t) / t)^2 weights the velocity loss by min((1 - t)^2, gamma t^2)), or ``low-noise`` (2 (1 - t):
  more weight where little noise is left, where outlines are decided). Weights are scaled to average 1
  over the batch, so the learning rate keeps its meaning.
* ``Repa`` -- representation alignment (REPA, Yu et al. 2024): the tokens after one DiT block, through a
  small MLP, are pulled (negative cosine similarity) towards a frozen encoder's features of the same
  clean picture. The frozen encoder here is the default LDM's UNet (it already knows Kiri's shapes):
  its features after a down block or its middle block at t = 0 with the empty prompt, resized to the
  DiT's token grid.

Helpers: ``load_ldm_features`` builds LdmFeatures from the shipped LDM folder.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

WEIGHTINGS = ("none", "min-snr", "low-noise")


def flow_weights(t: torch.Tensor, kind: str = "none", gamma: float = 5.0) -> torch.Tensor:
    """Loss weights, one per sample, for rectified-flow times `t` in (0, 1); mean 1 over the batch."""
    if kind == "none":
        return torch.ones_like(t)
    if kind == "min-snr":
        w = torch.minimum((1 - t) ** 2, gamma * t ** 2)
    elif kind == "low-noise":
        w = 2 * (1 - t)
    else:
        raise ValueError(f"unknown weighting {kind!r}: one of {', '.join(WEIGHTINGS)}")
    return w / w.mean().clamp_min(1e-8)


class LdmFeatures:
    """The frozen LDM UNet's features of clean latents: the output of ``layer`` ("down0", "down1", ...,
    or "mid"), at t = 0 with the empty prompt's text states, resized to a `grid` x `grid` token map and
    returned as (batch, grid * grid, channels)."""

    def __init__(self, unet, empty_states: torch.Tensor, layer: str = "down1"):
        self.unet = unet.eval().requires_grad_(False)
        self.empty = empty_states  # (1, tokens, dim)
        self.layer = layer
        block = unet.mid_block if layer == "mid" else unet.down_blocks[int(layer.removeprefix("down"))]
        self._out: list[torch.Tensor] = []
        block.register_forward_hook(lambda _m, _i, out: self._out.__setitem__(slice(None), [out[0] if isinstance(out, tuple) else out]))

    @property
    def channels(self) -> int:
        if self.layer == "mid":
            return self.unet.config.block_out_channels[-1]
        return self.unet.config.block_out_channels[int(self.layer.removeprefix("down"))]

    @torch.no_grad()
    def __call__(self, latents: torch.Tensor, grid: int) -> torch.Tensor:
        t = torch.zeros(latents.shape[0], device=latents.device, dtype=torch.long)
        self.unet(latents, t, encoder_hidden_states=self.empty.expand(latents.shape[0], -1, -1))
        features = self._out.pop()
        if features.shape[-1] != grid:
            features = F.interpolate(features, size=(grid, grid), mode="bilinear", align_corners=False)
        return features.flatten(2).transpose(1, 2)


class Repa(torch.nn.Module):
    """Captures the image tokens after DiT block `block` on each forward, and gives the alignment loss
    of their projection with target features: mean over tokens of 1 - cosine similarity."""

    def __init__(self, dit, block: int, target_channels: int, hidden: int | None = None):
        super().__init__()
        width = dit.config.num_attention_heads * dit.config.attention_head_dim
        hidden = hidden or 2 * width
        self.project = torch.nn.Sequential(torch.nn.Linear(width, hidden), torch.nn.SiLU(),
                                           torch.nn.Linear(hidden, hidden), torch.nn.SiLU(),
                                           torch.nn.Linear(hidden, target_channels))
        self._tokens: list[torch.Tensor] = []
        # JointTransformerBlock returns (encoder_hidden_states, hidden_states): the image tokens are second
        dit.transformer_blocks[block].register_forward_hook(lambda _m, _i, out: self._tokens.__setitem__(slice(None), [out[1]]))

    def loss(self, target: torch.Tensor) -> torch.Tensor:
        if not self._tokens:
            raise RuntimeError("no DiT forward since the last loss: call the DiT first")
        tokens = self._tokens.pop()
        return (1 - F.cosine_similarity(self.project(tokens), target, dim=-1)).mean()


def load_ldm_features(folder: Path, layer: str = "down1", device: str = "cpu") -> LdmFeatures:
    """LdmFeatures of a diffusers StableDiffusionPipeline folder (its UNet, and its text encoder for the
    empty prompt's states)."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet").to(device)
    tok = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
    te = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder").eval().to(device)
    ids = tok([""], padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids.to(device)
    with torch.no_grad():
        empty = te(ids)[0]
    return LdmFeatures(unet, empty, layer)
