"""Cheap live previews: latents to RGB by a linear map fitted once to the model's own VAE.

Decoding with the VAE at every few steps costs as much as a step on big models. A 1x1 linear map
from latent channels to RGB (what AUTOMATIC1111's "Approx cheap" uses, with per-family tables)
is nearly free; fitting it once to what the loaded VAE decodes makes it right for any family,
Kiri's own models included, without tables to keep up to date. The map is fitted per VAE: a call
with another VAE swapped in (the "vae" add-on) previews as that VAE decodes. When a TAESD-style tiny decoder
(a diffusers AutoencoderTiny folder) is in models/taesd/<family>/, it is used instead: a real,
full-size picture for a fraction of the VAE's cost.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class LatentPreviewer:
    def __init__(self, pipeline: Any, tiny_decoder_dir: Path | None = None):
        self.pipeline = pipeline
        self._fits: Any = None  # VAE module -> (channels + 1, 3): its linear map with bias, fitted once
        self._tiny_dir = tiny_decoder_dir if tiny_decoder_dir and (tiny_decoder_dir / "config.json").exists() else None
        self._tiny = None

    @property
    def method(self) -> str:
        return "taesd" if self._tiny_dir else "linear"

    def __call__(self, latents: Any, height: int, width: int) -> Any:
        """A PIL image of the first latent in the batch."""
        import numpy as np
        import torch
        from PIL import Image

        latents = self._unpacked(latents, height, width)[:1]
        if self._tiny_dir is not None:
            return self._decode_tiny(latents)
        latents = latents.float().cpu()
        if self._fits is None:
            import weakref

            self._fits = weakref.WeakKeyDictionary()  # a VAE dropped with its model takes its map along
        vae = self.pipeline.vae  # the one this call decodes with
        weights = self._fits.get(vae)
        if weights is None:
            weights = self._fits[vae] = self._fit(latents.shape[1])
        flat = latents[0].permute(1, 2, 0).reshape(-1, latents.shape[1])
        rgb = torch.cat([flat, torch.ones(len(flat), 1)], 1) @ weights
        pixels = ((rgb.clamp(-1, 1) + 1) * 127.5).reshape(latents.shape[2], latents.shape[3], 3).numpy().astype(np.uint8)
        return Image.fromarray(pixels)

    def _decode_tiny(self, latents: Any) -> Any:
        import torch
        from diffusers import AutoencoderTiny
        from PIL import Image

        vae = self.pipeline.vae
        if self._tiny is None:
            param = next(vae.parameters())
            self._tiny = AutoencoderTiny.from_pretrained(str(self._tiny_dir), local_files_only=True).to(param.device, param.dtype)
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        with torch.inference_mode():
            param = next(self._tiny.parameters())
            raw = latents.to(param.device, param.dtype) / vae.config.scaling_factor + shift
            image = self._tiny.decode(raw).sample[0].float().clamp(-1, 1)
        pixels = ((image + 1) * 127.5).permute(1, 2, 0).byte().cpu().numpy()
        return Image.fromarray(pixels)

    def _unpacked(self, latents: Any, height: int, width: int) -> Any:
        if latents.ndim == 3 and hasattr(self.pipeline, "_unpack_latents"):  # Flux packs 2x2 patches
            return self.pipeline._unpack_latents(latents, height, width, self.pipeline.vae_scale_factor)
        return latents

    def _fit(self, channels: int) -> Any:
        """Least squares from pipeline-space latents to what the VAE decodes them to.

        Latents are drawn at unit variance (what scaling_factor aims for), blocky like images.
        """
        import torch

        vae = self.pipeline.vae
        generator = torch.Generator().manual_seed(0)
        blocks = torch.randn((16, channels, 4, 4), generator=generator)
        latents = torch.nn.functional.interpolate(blocks, size=(8, 8), mode="nearest")
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        with torch.inference_mode():
            param = next(vae.parameters())
            raw = (latents / vae.config.scaling_factor + shift).to(param.device, param.dtype)
            images = vae.decode(raw).sample.float().cpu()
        target = torch.nn.functional.interpolate(images, size=latents.shape[2:], mode="area")
        x = latents.permute(0, 2, 3, 1).reshape(-1, channels)
        y = target.permute(0, 2, 3, 1).reshape(-1, 3)
        x = torch.cat([x, torch.ones(len(x), 1)], 1)
        return torch.linalg.lstsq(x, y).solution


def previewer_for(model: Any) -> LatentPreviewer:
    """The model's previewer, made once: a TAESD-style decoder from models/taesd/<family>/ if there
    is one, else a latent-to-RGB map fitted to the model's own VAE."""
    previewer = model.derived.get("previewer")
    if previewer is None:
        tiny = model.entry.path.parent.parent / "taesd" / model.family
        previewer = model.derived["previewer"] = LatentPreviewer(model.pipeline, tiny)
    return previewer
