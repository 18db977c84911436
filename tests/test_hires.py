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
