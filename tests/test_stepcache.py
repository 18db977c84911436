"""Step caching (engine/stepcache/): off unless asked, on for one call only, refused clearly, and
reached from the setting, the jobs API and the Text to image tab."""

from __future__ import annotations

import time

import numpy as np
import pytest

from webui.engine.core.errors import InvalidRequest
from webui.engine.generation.requests import Txt2ImgRequest


def _image(engine, model="tiny-sd3", steps=6, **addons):
    request = Txt2ImgRequest("a red circle", steps=steps, width=64, height=64, seed=21, sampler_name=None,
                             model=model, addons=addons)
    result = engine.txt2img(request)
    return np.asarray(result.images[0], dtype=np.int16), result.infotexts[0]


def _hooks_left(engine, model="tiny-sd3"):
    from diffusers.hooks import HookRegistry  # noqa: F401 - hooks live in each module's _diffusers_hook

    pipeline = engine.models.get(model).pipeline
    denoiser = getattr(pipeline, "transformer", None) or pipeline.unet
    return [name for name, module in denoiser.named_modules()
            if getattr(getattr(module, "_diffusers_hook", None), "hooks", None)]


def test_off_changes_nothing_and_a_method_runs_for_that_call_only(engine):
    plain, plain_info = _image(engine)
    off, _ = _image(engine, step_cache="off")
    cached, info = _image(engine, step_cache={"method": "taylorseer", "interval": 2, "warmup": 1})
    again, again_info = _image(engine)
    assert np.array_equal(plain, off) and np.array_equal(plain, again)  # the shared model was left as it was
    assert "Step cache: taylorseer 2 warmup=1" in info and "Step cache" not in plain_info + again_info
    assert not np.array_equal(plain, cached)  # predicted steps differ a little from computed ones
    assert _hooks_left(engine) == []


def test_pyramid_attention_broadcast_runs_on_a_unet(engine):
    plain, _ = _image(engine, model="tiny-sd")
    _, info = _image(engine, model="tiny-sd", step_cache="pyramid_attention_broadcast 2 timesteps=0-1000")
    again, _ = _image(engine, model="tiny-sd")
    assert "Step cache: pyramid_attention_broadcast 2 timesteps=0-1000" in info
    assert np.array_equal(plain, again) and _hooks_left(engine, "tiny-sd") == []


def test_bad_settings_and_models_are_refused_naming_the_field(engine):
    for bad, field in (({"method": "teacache"}, "step_cache.method"), ("first_block_cache 2", "step_cache.threshold"),
                       ({"method": "taylorseer", "interval": 0}, "step_cache.interval"),
                       ({"method": "first_block_cache", "speed": 1}, "step_cache.speed"), (7, "step_cache")):
        with pytest.raises(InvalidRequest) as caught:
            _image(engine, step_cache=bad)
        assert caught.value.field == field, bad
    with pytest.raises(InvalidRequest) as caught:
        _image(engine, model="tiny-sd", step_cache="first_block_cache")
    assert caught.value.field == "step_cache.method"
    assert "not available for UNet models (tiny-sd)" in str(caught.value) and "taylorseer" in str(caught.value)
    with pytest.raises(InvalidRequest) as caught:  # the tiny SD3 has one block, and it computes only the image
        _image(engine, step_cache="first_block_cache")
    assert caught.value.field == "step_cache.method" and "two blocks" in str(caught.value)
    assert _hooks_left(engine) == []


def test_the_setting_applies_when_the_request_names_none(engine):
    engine.settings.step_cache = "taylorseer 2 warmup=1"
    _, info = _image(engine)
    _, off_info = _image(engine, step_cache="off")
    assert "Step cache: taylorseer 2 warmup=1" in info and "Step cache" not in off_info
    assert "step_cache" in engine.settings.editable()


def test_first_block_cache_on_a_transformer_with_blocks_to_skip(tmp_path):
    """A two-block SD3 (the last computes only the image): the first block cache hooks the first."""
    import tiny_models
    from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline

    from webui.bootstrap import build_engine
    from webui.engine.core.devices import DeviceChoice
    from webui.engine.settings import Settings

    folder = tiny_models.make_tiny_sd3(tmp_path / "checkpoints" / "tiny-sd3-3")
    pipe = StableDiffusion3Pipeline.from_pretrained(folder, text_encoder_3=None, tokenizer_3=None)
    config = dict(pipe.transformer.config, num_layers=3)
    pipe.transformer = SD3Transformer2DModel.from_config(config)
    pipe.save_pretrained(folder)
    engine = build_engine(Settings(models_dir=tmp_path, outputs_dir=tmp_path / "out", default_model="tiny-sd3-3"),
                          DeviceChoice("cpu"))
    plain, _ = _image(engine, model="tiny-sd3-3")
    cached, info = _image(engine, model="tiny-sd3-3", step_cache={"method": "first_block_cache", "threshold": 1.0})
    again, _ = _image(engine, model="tiny-sd3-3")
    assert "Step cache: first_block_cache 1.0" in info
    assert np.array_equal(plain, again) and _hooks_left(engine, "tiny-sd3-3") == []


def test_step_cache_through_the_jobs_api(models_dir, tmp_path):
    from fastapi.testclient import TestClient

    from conftest import make_api_app

    app, _ = make_api_app(models_dir, tmp_path)
    with TestClient(app) as client:
        request = {"prompt": "a red circle", "steps": 4, "width": 64, "height": 64, "seed": 3, "model": "tiny-sd3",
                   "addons": {"step_cache": {"method": "taylorseer", "interval": 2, "warmup": 1}}}
        job_id = client.post("/kiri/v1/jobs", json={"kind": "txt2img", "request": request}).json()["id"]
        deadline = time.monotonic() + 120
        while (body := client.get(f"/kiri/v1/jobs/{job_id}").json())["status"] not in ("done", "failed"):
            assert time.monotonic() < deadline, body
            time.sleep(0.1)
        assert body["status"] == "done", body
        assert "Step cache: taylorseer 2 warmup=1" in body["result"]["infotexts"][0]
        bad = client.post("/kiri/v1/jobs", json={"kind": "txt2img", "request": {**request, "addons": {
            "step_cache": {"method": "nope"}}}})
        assert bad.status_code == 422 and "step_cache.method" in bad.text


def test_step_cache_from_sdapi_and_the_browser(kiri_server, browser):
    import requests

    body = {"prompt": "a red circle", "steps": 4, "width": 64, "height": 64, "seed": 21,
            "override_settings": {"step_cache": "taylorseer 2 warmup=1"}}
    response = requests.post(kiri_server["url"] + "sdapi/v1/txt2img", json=body, timeout=120)
    assert response.status_code == 200, response.text
    assert "Step cache: taylorseer 2 warmup=1" in response.json()["info"]
    bad = requests.post(kiri_server["url"] + "sdapi/v1/txt2img",
                        json={**body, "override_settings": {"step_cache": "taylorseer 0"}}, timeout=60)
    assert bad.status_code == 422 and "step_cache.interval" in bad.text

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(kiri_server["url"])
    page.get_by_label("Prompt", exact=True).fill("a red circle")
    page.get_by_text("Step cache: faster, slightly different pictures").click()
    page.locator("#txt2img-step-cache input").click()
    page.get_by_role("option", name="TaylorSeer").click()
    page.locator("#txt2img-generate").click()
    page.wait_for_function("document.querySelector('#txt2img-infotext textarea').value.includes('Seed:')",
                           timeout=120_000)
    assert "Step cache: taylorseer 5" in page.locator("#txt2img-infotext textarea").input_value()
    page.close()
