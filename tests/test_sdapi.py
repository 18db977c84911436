"""The /sdapi/v1 API, driven by the real PyPI client `webuiapi` and by plain HTTP."""

from __future__ import annotations

import base64
import io
import json
import threading
import time

import pytest
import requests
from PIL import Image

from webui.engine.core.infotext import pnginfo_for


@pytest.fixture(scope="module")
def api(kiri_server):
    import webuiapi

    port = int(kiri_server["url"].rstrip("/").rsplit(":", 1)[1])
    return webuiapi.WebUIApi(host="127.0.0.1", port=port, sampler="Euler a", steps=2)


def test_txt2img_with_webuiapi(api):
    result = api.txt2img(prompt="a red circle", seed=11, width=64, height=64, batch_size=2, cfg_scale=5)
    assert len(result.images) == 2 and result.images[0].size == (64, 64)
    assert result.info["all_seeds"] == [11, 12] and result.info["sampler_name"] == "Euler a"
    assert "Seed: 11" in result.info["infotexts"][0]
    assert result.images[0].info["parameters"] == result.info["infotexts"][0]  # PNG carries its infotext
    assert result.parameters["prompt"] == "a red circle"


def test_samplers_models_and_options_round_trip(api):
    samplers = {s["name"] for s in api.get_samplers()}
    assert {"Euler a", "DPM++ 2M", "Flow Euler"} <= samplers
    titles = [m["title"] for m in api.get_sd_models()]
    assert any(t.startswith("tiny-sd3 [") for t in titles)
    api.util_set_model("tiny-sd3", find_closest=False) if "tiny-sd3" in titles else api.set_options(
        {"sd_model_checkpoint": next(t for t in titles if t.startswith("tiny-sd3"))})
    assert api.util_get_current_model().startswith("tiny-sd3")
    api.set_options({"sd_model_checkpoint": "tiny-sd"})
    assert api.util_get_current_model().startswith("tiny-sd [")


def test_png_info(api):
    text = "a cat\nNegative prompt: dog\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 64x64"
    image = Image.new("RGB", (8, 8))
    image.info["parameters"] = text
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=pnginfo_for(text))
    result = api.png_info(Image.open(io.BytesIO(buffer.getvalue())))
    assert result.info == text


def test_progress_and_interrupt_while_a_job_runs(api, kiri_server):
    base = kiri_server["url"] + "sdapi/v1"
    outcome = {}

    def long_job():
        outcome["response"] = requests.post(f"{base}/txt2img", json={"prompt": "a circle", "steps": 40, "n_iter": 20,
                                                                    "width": 64, "height": 64, "sampler_name": "Euler"})

    worker = threading.Thread(target=long_job)
    worker.start()
    deadline, seen = time.monotonic() + 60, None
    while time.monotonic() < deadline:
        progress = api.get_progress()
        if progress["state"]["sampling_step"] > 0:
            seen = progress
            break
        time.sleep(0.05)
    assert seen is not None and 0 < seen["progress"] < 1 and seen["state"]["sampling_steps"] == 40
    api.interrupt()
    worker.join(60)
    info = json.loads(outcome["response"].json()["info"])
    assert info["interrupted"] and len(info["all_seeds"]) < 20


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"prompt": "x", "width": 63}, "width"),
        ({"prompt": "x", "steps": "many"}, "steps"),
        ({"prompt": "x", "sampler_name": "Nope"}, "sampler_name"),
        ({"prompt": "x", "scheduler": "Wobbly"}, "scheduler"),
    ],
)
def test_invalid_values_get_422_naming_the_field(kiri_server, payload, field):
    response = requests.post(kiri_server["url"] + "sdapi/v1/txt2img", json={**payload, "width": payload.get("width", 64), "height": 64, "steps": payload.get("steps", 2)})
    assert response.status_code == 422
    assert field in json.dumps(response.json()["detail"])


def test_unknown_fields_are_ignored_and_bad_images_refused(kiri_server):
    base = kiri_server["url"] + "sdapi/v1"
    ok = requests.post(f"{base}/txt2img", json={"prompt": "x", "steps": 1, "width": 64, "height": 64, "sampler_name": "Euler",
                                                 "restore_faces": True, "something_new": 1, "alwayson_scripts": {}})
    assert ok.status_code == 200
    not_b64 = requests.post(f"{base}/png-info", json={"image": "not base64!"})
    assert not_b64.status_code == 422 and "base64" in not_b64.text
    not_image = requests.post(f"{base}/png-info", json={"image": base64.b64encode(b"hello world").decode()})
    assert not_image.status_code == 422 and "not an image" in not_image.text
    missing = requests.post(f"{base}/options", json={"sd_model_checkpoint": "no-such-model"})
    assert missing.status_code == 404 and "unknown model" in missing.text


def test_api_auth_guards_every_route(engine):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from webui.api import ApiContext, mount
    from webui.auth import make_checker

    app = FastAPI()
    mount(app, ApiContext(engine, check_login=make_checker([("ann", "s3cret")], {})), max_body_bytes=1000)
    client = TestClient(app)
    paths = [path for path in app.openapi()["paths"] if path.startswith("/sdapi/v1")]
    assert len(paths) >= 20
    for path in ("/sdapi/v1/samplers", "/sdapi/v1/options", "/sdapi/v1/sd-models", "/sdapi/v1/progress"):
        assert client.get(path).status_code == 401
        assert client.get(path, auth=("ann", "wrong")).status_code == 401
        assert client.get(path, auth=("ann", "s3cret")).status_code == 200
    assert client.post("/sdapi/v1/interrupt").status_code == 401
    big = client.post("/sdapi/v1/png-info", json={"image": "A" * 5000}, auth=("ann", "s3cret"))
    assert big.status_code == 413


def test_extras_upscale_single_and_batch(api, kiri_server):
    image = Image.new("RGB", (16, 8), "red")
    result = api.extra_single_image(image=image, upscaler_1="Lanczos", upscaling_resize=3)
    assert result.image.size == (48, 24)
    batch = api.extra_batch_images(images=[image, Image.new("RGB", (10, 10), "blue")], upscaler_1="Nearest",
                                   resize_mode=1, upscaling_resize_w=20, upscaling_resize_h=20)
    assert [im.size for im in batch.images] == [(20, 20), (20, 20)]
    bad = requests.post(kiri_server["url"] + "sdapi/v1/extra-single-image",
                        json={"image": base64.b64encode(b"nope").decode(), "upscaler_1": "Lanczos"})
    assert bad.status_code == 422
    unknown = requests.post(kiri_server["url"] + "sdapi/v1/extra-single-image", json={
        "image": api_b64(image), "upscaler_1": "R-ESRGAN 4x+"})
    assert unknown.status_code == 422 and "unknown upscaler" in unknown.text


def api_b64(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_decompression_bomb_is_refused(kiri_server):
    bomb = Image.new("1", (12000, 12000))  # 144 M pixels, a few kB as PNG
    buffer = io.BytesIO()
    bomb.save(buffer, format="PNG")
    assert len(buffer.getvalue()) < 100_000
    response = requests.post(kiri_server["url"] + "sdapi/v1/png-info",
                             json={"image": base64.b64encode(buffer.getvalue()).decode()}, timeout=30)
    assert response.status_code == 422 and "Kiri takes at most" in response.text


def _noise_picture(width=64, height=64) -> Image.Image:
    import numpy as np

    return Image.fromarray(np.random.default_rng(3).integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_img2img_inpaint_with_webuiapi_keeps_the_unmasked_pixels(api):
    import numpy as np

    picture = _noise_picture()
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    result = api.img2img(images=[picture], mask_image=mask, mask_blur=0, prompt="a red circle", seed=5,
                         width=64, height=64, denoising_strength=0.9, inpainting_fill=1, inpaint_full_res=False)
    assert len(result.images) == 1 and result.images[0].size == (64, 64)
    out, original, outside = np.asarray(result.images[0].convert("RGB")), np.asarray(picture), np.asarray(mask) == 0
    assert np.array_equal(out[outside], original[outside])
    assert not np.array_equal(out[~outside], original[~outside])
    assert "Denoising strength: 0.9" in result.info["infotexts"][0] and result.info["all_seeds"] == [5]
    assert result.images[0].info["parameters"] == result.info["infotexts"][0]


def test_img2img_over_http_same_seed_same_image_and_init_images_echoed(kiri_server):
    init = api_b64(_noise_picture(96, 64))
    payload = {"init_images": [init], "prompt": "a blue square", "seed": 9, "steps": 2, "width": 64, "height": 64,
               "denoising_strength": 0.5, "resize_mode": 1, "sampler_name": "DPM++ 2M", "include_init_images": True}
    url = kiri_server["url"] + "sdapi/v1/img2img"
    first, second = (requests.post(url, json=payload, timeout=120) for _ in range(2))
    assert first.status_code == 200, first.text
    images = first.json()["images"]
    assert len(images) == 2 and images[1] == init  # the init image comes back after the result
    assert images[0] == second.json()["images"][0]
    assert Image.open(io.BytesIO(base64.b64decode(images[0]))).size == (64, 64)
    assert json.loads(first.json()["info"])["sampler_name"] == "DPM++ 2M"


@pytest.mark.parametrize("changes, field", [
    ({"init_images": []}, "init_images"),
    ({"init_images": ["not base64!"]}, "init_images"),
    ({"denoising_strength": 1.5}, "denoising_strength"),
    ({"mask": "aGVsbG8="}, "mask"),
    ({"resize_mode": 7}, "resize_mode"),
])
def test_img2img_bad_fields_get_422_naming_the_field(kiri_server, changes, field):
    payload = {"init_images": [api_b64(_noise_picture())], "prompt": "a cat", "steps": 1,
               "width": 64, "height": 64, **changes}
    response = requests.post(kiri_server["url"] + "sdapi/v1/img2img", json=payload, timeout=60)
    assert response.status_code == 422, response.text
    assert field in response.text
