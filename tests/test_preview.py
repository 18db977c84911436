"""Live previews: a cheap latent-to-RGB map fitted to the model's own VAE."""

from __future__ import annotations

import numpy as np

from webui.engine.core.jobs import Job
from webui.engine.generation.requests import Txt2ImgRequest


def test_preview_tracks_the_decoded_image(engine):
    engine.settings.preview_every = 2
    seen = []
    job = Job()
    job.listeners.append(lambda j: seen.append(j.preview_step) if j.preview is not None else None)
    result = engine.txt2img(Txt2ImgRequest("a red circle", steps=4, width=64, height=64, seed=3, sampler_name="Euler"), job)
    assert job.preview is not None and job.preview.size == (32, 32)  # latent resolution of the tiny VAE
    assert 2 in seen and 4 in seen
    # The last preview approximates the final decoded image. The tiny VAE here has random weights,
    # so its decoder is far from linear: the bar is "clearly related", not "close".
    final = np.asarray(result.images[0].resize((32, 32))).astype(float).ravel()
    preview = np.asarray(job.preview).astype(float).ravel()
    assert np.corrcoef(final, preview)[0, 1] > 0.2


def test_preview_off(engine):
    engine.settings.preview_every = 0
    job = Job()
    engine.txt2img(Txt2ImgRequest("a red circle", steps=2, width=64, height=64), job)
    assert job.preview is None


def test_tiny_decoder_is_used_when_present(models_dir, tmp_path):
    import shutil

    import torch
    from diffusers import AutoencoderTiny

    from webui.bootstrap import build_engine
    from webui.engine.settings import Settings
    from webui.engine.core.devices import DeviceChoice

    root = tmp_path / "models"
    shutil.copytree(models_dir / "checkpoints" / "tiny-sd", root / "checkpoints" / "tiny-sd")
    torch.manual_seed(0)
    # A tiny decoder for 4-channel latents and a 2x VAE, as TAESD is for SD's 8x one.
    AutoencoderTiny(encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8), num_encoder_blocks=(1, 1),
                    num_decoder_blocks=(1, 1), latent_channels=4, upsampling_scaling_factor=2).save_pretrained(root / "taesd" / "sd1")
    engine = build_engine(Settings(models_dir=root, outputs_dir=tmp_path / "out", preview_every=1), DeviceChoice("cpu"))
    job = Job()
    engine.txt2img(Txt2ImgRequest("a red circle", steps=2, width=64, height=64), job)
    from webui.engine.generation.preview import previewer_for

    assert previewer_for(engine.models.current).method == "taesd"
    assert job.preview is not None and job.preview.size[0] > 32  # decoded, not the latent-sized approximation
