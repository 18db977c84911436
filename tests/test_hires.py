"""Hires fix on Text to image: first pass, upscale (latent mode or any upscaler), second pass."""

from __future__ import annotations

import pytest

from webui.engine.core.errors import InvalidRequest
from webui.engine.generation.requests import HiresFix, Txt2ImgRequest


@pytest.fixture(scope="module")
def api(kiri_server):
    import webuiapi

    port = int(kiri_server["url"].rstrip("/").rsplit(":", 1)[1])
    return webuiapi.WebUIApi(host="127.0.0.1", port=port, sampler="Euler a", steps=2)


def test_txt2img_enable_hr_with_webuiapi_does_the_second_pass(api):
    result = api.txt2img(prompt="a red circle", seed=3, width=64, height=64, enable_hr=True, hr_scale=2,
                         hr_upscaler="Latent", hr_second_pass_steps=2, denoising_strength=0.5)
    assert result.images[0].size == (128, 128)
    text = result.info["infotexts"][0]
    for part in ("Size: 64x64", "Seed: 3", "Denoising strength: 0.5", "Hires upscale: 2", "Hires steps: 2",
                 "Hires upscaler: Latent"):
        assert part in text, (part, text)
    assert result.info["warnings"] == []


def test_hires_with_a_model_upscaler_and_resize(api):
    result = api.txt2img(prompt="a blue square", seed=4, width=64, height=64, enable_hr=True,
                         hr_upscaler="4x-tiny-compact", hr_resize_x=96, hr_resize_y=80, hr_second_pass_steps=1,
                         denoising_strength=0.4, hr_prompt="a blue square, sharp")
    assert result.images[0].size == (96, 80)
    text = result.info["infotexts"][0]
    assert "Hires resize: 96x80" in text and "Hires upscaler: 4x-tiny-compact" in text
    assert "Hires prompt: " in text


def test_unknown_hires_upscaler_is_a_422(kiri_server):
    import requests

    body = {"prompt": "x", "width": 64, "height": 64, "steps": 1, "enable_hr": True, "hr_upscaler": "Latent (wobbly)"}
    reply = requests.post(kiri_server["url"] + "sdapi/v1/txt2img", json=body, timeout=60)
    assert reply.status_code == 422 and "hr_upscaler" in reply.text and "Latent (nearest)" in reply.text


def test_hires_fields_are_checked():
    with pytest.raises(InvalidRequest) as info:
        Txt2ImgRequest(prompt="x", width=1024, height=1024, hires=HiresFix(scale=4))
    assert info.value.field == "hr_scale"
    with pytest.raises(InvalidRequest) as info:
        Txt2ImgRequest(prompt="x", hires=HiresFix(denoising_strength=2))
    assert info.value.field == "denoising_strength"
    assert Txt2ImgRequest(prompt="x", width=64, height=64, hires=HiresFix(scale=1.5)).hires.target(64, 64) == (96, 96)


def _engine_request(**kw):
    fields = dict(prompt="a red circle", seed=11, steps=4, width=64, height=64, sampler_name="Euler", save_images=False)
    fields.update(kw)
    return Txt2ImgRequest(**fields)


def test_latent_modes_hand_the_first_pass_latents_to_the_second(engine):
    """Denoising 0 leaves the second pass nothing to denoise: the output is the first pass's own
    latents (read at its last step), resized with nearest and decoded by the VAE, exactly."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from webui.engine.upscale._hires import decode_latents

    seen = []
    engine.hooks.on_step.append(lambda info: seen.append(info.latents))
    try:
        result = engine.txt2img(_engine_request(hires=HiresFix(scale=2, upscaler="Latent (nearest)", denoising_strength=0)))
    finally:
        engine.hooks.on_step.clear()
    first = seen[-1]  # the first pass's last step (the second pass has none)
    model = engine.models.get(result.model_name)
    factor = model.pipeline.vae_scale_factor
    assert first.shape == (1, 4, 64 // factor, 64 // factor) and len(seen) == 4
    expected = decode_latents(model, F.interpolate(first, size=(128 // factor, 128 // factor), mode="nearest"))
    got = result.images[0]
    assert got.size == (128, 128)
    assert np.abs(np.asarray(got, dtype=int) - np.asarray(expected, dtype=int)).max() <= 1
    assert "Hires upscaler: Latent (nearest)" in result.infotexts[0]


def test_latent_mode_differs_from_resizing_the_picture(engine):
    """The same first pass and second pass, from upscaled latents or from the upscaled picture."""
    import numpy as np

    hires = HiresFix(scale=2, upscaler="Latent", denoising_strength=0.5, steps=4)
    latent = engine.txt2img(_engine_request(hires=hires))
    pixel = engine.txt2img(_engine_request(hires=HiresFix(scale=2, upscaler="Bicubic", denoising_strength=0.5, steps=4)))
    assert latent.images[0].size == pixel.images[0].size == (128, 128)
    a, b = np.asarray(latent.images[0], dtype=float), np.asarray(pixel.images[0], dtype=float)
    assert np.abs(a - b).mean() > 1.0
    # and the second pass really ran on the latent path: not just the decoded latents
    still = engine.txt2img(_engine_request(hires=HiresFix(scale=2, upscaler="Latent", denoising_strength=0)))
    assert np.abs(a - np.asarray(still.images[0], dtype=float)).mean() > 1.0
