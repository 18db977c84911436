"""Super-resolution: model upscalers through the catalog, tiling, two upscalers, alpha, limits, the API."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from webui.engine.core.errors import InvalidRequest
from webui.engine.core.jobs import Job
from webui.engine.upscale import UpscaleRequest, find_upscaler, upscale_images

TINY = "4x-tiny-compact"


def _picture(width=40, height=32, mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, width)[None, :, None] * np.ones((height, 1, 3))
    noise = rng.integers(0, 60, (height, width, 3))
    array = np.clip(base * 0.7 + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(array)
    if mode == "RGBA":
        image = image.convert("RGBA")
        alpha = Image.fromarray(np.tile(np.linspace(0, 255, width, dtype=np.uint8), (height, 1)))
        image.putalpha(alpha)
    return image


def test_the_catalog_lists_the_model_upscaler_with_kind_and_scale(engine):
    engine.catalog.scan()
    upscaler = find_upscaler(TINY, catalog=engine.catalog)
    assert upscaler.kind == "model" and upscaler.scale == 4
    assert upscaler.label == f"{TINY} (model x4)"
    for name in ("None", "Lanczos", "Bicubic", "Nearest", "Area"):
        assert find_upscaler(name.lower(), catalog=engine.catalog).kind == "classic"
    with pytest.raises(InvalidRequest) as info:
        find_upscaler("ESRGAN-nope", "upscaler_1", engine.catalog)
    assert info.value.field == "upscaler_1" and TINY in str(info.value) and "Lanczos" in str(info.value)


def test_tiled_output_equals_untiled_output(engine):
    """Tolerance: 1/255 per channel (rounding to 8 bits); the tiny net's receptive field (4 px)
    is within the dead quarter of a 24-pixel overlap (half the 48-pixel tile), so the float outputs agree to ~1e-5."""
    from webui.engine.upscale import upscale_tensor_untiled

    engine.catalog.scan()
    image = _picture(100, 90)
    loaded = engine.models.get_of_kind("upscaler", TINY).model
    whole = np.asarray(upscale_tensor_untiled(loaded, image), dtype=int)
    job = Job(kind="extras")
    result = upscale_images(engine, UpscaleRequest([image], TINY, scale=4, tile_size=48, tile_overlap=24,
                                                   save_images=False), job)
    tiled = np.asarray(result.images[0], dtype=int)
    assert tiled.shape == whole.shape == (360, 400, 3)
    assert result.tiles > 4 and "Tiles: " in result.infotexts[0]
    assert np.abs(tiled - whole).max() <= 1


def test_progress_is_per_tile_and_interrupt_keeps_finished_tiles(engine):
    engine.catalog.scan()
    image = _picture(96, 96)
    job = Job(kind="extras")
    seen = []

    def listen(j):
        seen.append((j.step, j.steps))
        if j.step == 2:
            j.interrupt()

    job.listeners.append(listen)
    result = upscale_images(engine, UpscaleRequest([image], TINY, scale=4, tile_size=40, tile_overlap=8,
                                                   save_images=False), job)
    assert result.interrupted and result.images and result.images[0].size == (384, 384)
    assert any(steps > 2 for _, steps in seen)
    assert any("Interrupted after 2 of" in w for w in result.warnings)


def test_out_of_memory_in_a_tile_retries_with_smaller_tiles():
    import torch

    from webui.engine.upscale._tiles import run_tiles_retrying

    def fussy(x):
        if max(x.shape[-2:]) > 32:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")

    x = torch.rand(1, 3, 70, 70)
    gen = run_tiles_retrying(fussy, x, 2, 64, 8)
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        out, run = stop.value
    assert run.tile == 32 and "retried with 32-pixel tiles" in run.warnings[0]
    assert torch.allclose(out, torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest"), atol=1e-6)


def test_two_upscalers_blended_alpha_kept_and_saved_with_infotext(engine):
    engine.catalog.scan()
    image = _picture(24, 20, "RGBA")
    request = UpscaleRequest([image], TINY, "Nearest", 0.5, scale=2, save_images=True)
    result = upscale_images(engine, request)
    out = result.images[0]
    assert out.mode == "RGBA" and out.size == (48, 40)
    assert abs(np.asarray(out.getchannel("A"), dtype=int)[:, -1].mean() - 255) < 10  # alpha kept, resized
    assert result.paths and result.paths[0].exists()
    with Image.open(result.paths[0]) as saved:
        text = saved.info["parameters"]
    assert "Postprocess upscale by: 2" in text and f"Postprocess upscaler: {TINY}" in text
    assert "Postprocess upscaler 2: Nearest" in text and "Postprocess upscaler 2 visibility: 0.5" in text


def test_target_size_and_limits_are_refused_before_work(engine):
    engine.settings.max_output_pixels = 100 * 100
    with pytest.raises(InvalidRequest) as info:
        upscale_images(engine, UpscaleRequest([_picture(60, 60)], "Lanczos", scale=2))
    assert info.value.field == "upscaling_resize"
    engine.settings.max_output_pixels = 8192 * 8192
    result = upscale_images(engine, UpscaleRequest([_picture(40, 20)], "Bicubic", width=64, height=64, crop=True,
                                                   save_images=False))
    assert result.images[0].size == (64, 64)
    result = upscale_images(engine, UpscaleRequest([_picture(40, 20)], "Area", width=80, save_images=False))
    assert result.images[0].size == (80, 40)


def test_a_file_no_reader_knows_names_the_architectures(tmp_path):
    from safetensors.torch import save_file
    import torch

    from webui.engine.upscale._models import load_upscaler

    path = tmp_path / "weird.safetensors"
    save_file({"foo.weight": torch.zeros(2, 2)}, str(path))
    with pytest.raises(InvalidRequest) as info:
        load_upscaler(path)
    assert "SRVGGNetCompact" in str(info.value) or "ESRGAN" in str(info.value)


def test_pickled_upscaler_refused_without_allow_pickle(engine, tmp_path):
    from webui.engine.core.errors import PickleRefused

    import torch
    from safetensors.torch import load_file

    folder = engine.settings.models_dir / "ESRGAN"
    folder.mkdir(exist_ok=True)
    path = folder / "2x-pickled.pth"
    torch.save(load_file(str(engine.settings.models_dir / "upscalers" / f"{TINY}.safetensors")), path)
    try:
        engine.catalog.scan()
        with pytest.raises(PickleRefused):
            engine.models.get_of_kind("upscaler", "2x-pickled")
        engine.models.allow_pickle = True  # what --allow-pickle sets; read with weights_only=True
        assert engine.models.get_of_kind("upscaler", "2x-pickled").model.scale == 4
    finally:
        path.unlink()
        engine.catalog.scan()


# --- the API ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def api(kiri_server):
    import webuiapi

    port = int(kiri_server["url"].rstrip("/").rsplit(":", 1)[1])
    return webuiapi.WebUIApi(host="127.0.0.1", port=port, sampler="Euler a", steps=2)


def test_extra_single_image_with_webuiapi(api):
    result = api.extra_single_image(image=_picture(32, 24), upscaler_1=TINY, upscaling_resize=2)
    assert result.image.size == (64, 48)
    assert f"Postprocess upscaler: {TINY}" in result.info


def test_upscalers_and_latent_modes_listed(kiri_server):
    import requests

    base = kiri_server["url"] + "sdapi/v1"
    listed = {u["name"]: u for u in requests.get(base + "/upscalers", timeout=30).json()}
    assert listed["Lanczos"]["model_path"] is None and listed[TINY]["scale"] == 4
    assert listed[TINY]["model_path"].endswith(f"{TINY}.safetensors")
    modes = [m["name"] for m in requests.get(base + "/latent-upscale-modes", timeout=30).json()]
    assert "Latent" in modes and "Latent (nearest)" in modes


def test_unknown_upscaler_is_a_422_listing_the_available(kiri_server):
    import requests

    buffer = io.BytesIO()
    _picture(8, 8).save(buffer, format="PNG")
    body = {"image": base64.b64encode(buffer.getvalue()).decode(), "upscaler_1": "4x-nope"}
    reply = requests.post(kiri_server["url"] + "sdapi/v1/extra-single-image", json=body, timeout=30)
    assert reply.status_code == 422
    assert "upscaler_1" in reply.text and TINY in reply.text


def test_extra_batch_images(kiri_server):
    import requests

    items = []
    for seed in range(2):
        buffer = io.BytesIO()
        _picture(16, 16, seed=seed).save(buffer, format="PNG")
        items.append({"data": base64.b64encode(buffer.getvalue()).decode(), "name": f"p{seed}.png"})
    body = {"imageList": items, "upscaler_1": "Lanczos", "resize_mode": 1, "upscaling_resize_w": 40,
            "upscaling_resize_h": 20, "upscaling_crop": True}
    reply = requests.post(kiri_server["url"] + "sdapi/v1/extra-batch-images", json=body, timeout=60)
    assert reply.status_code == 200, reply.text
    images = [Image.open(io.BytesIO(base64.b64decode(i))) for i in reply.json()["images"]]
    assert [i.size for i in images] == [(40, 20), (40, 20)]


@pytest.fixture(scope="module")
def extras_client(models_dir, tmp_path_factory):
    from fastapi.testclient import TestClient

    from conftest import make_api_app

    app, _ = make_api_app(models_dir, tmp_path_factory.mktemp("extras-out"))
    return TestClient(app)


@pytest.mark.parametrize("fields, field", [
    ({"tile_size": -1}, "tile_size"), ({"tile_size": 1}, "tile_size"), ({"tile_size": 10**9}, "tile_size"),
    ({"tile_size": 64, "tile_overlap": 100}, "tile_overlap"), ({"tile_overlap": -5}, "tile_overlap"),
    ({"tile_size": 48, "tile_overlap": 25}, "tile_overlap"), ({"tile_overlap": 10**6}, "tile_overlap"),
])
def test_extras_tiles_out_of_range_are_a_422_naming_the_field(extras_client, fields, field):
    buffer = io.BytesIO()
    _picture(40, 32).save(buffer, format="PNG")
    image = base64.b64encode(buffer.getvalue()).decode()
    for route, body in (("extra-single-image", {"image": image}), ("extra-batch-images", {"imageList": [{"data": image}]})):
        response = extras_client.post(f"/sdapi/v1/{route}", json={**body, "upscaler_1": TINY, "upscaling_resize": 4, **fields})
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"][-1] == field


def test_extras_tiles_in_range_are_used(extras_client):
    buffer = io.BytesIO()
    _picture(40, 32).save(buffer, format="PNG")
    image = base64.b64encode(buffer.getvalue()).decode()
    response = extras_client.post("/sdapi/v1/extra-single-image", json={
        "image": image, "upscaler_1": TINY, "upscaling_resize": 4, "tile_size": 32, "tile_overlap": 16})
    assert response.status_code == 200, response.text
    assert "Tile size: 32" in response.json()["html_info"] and "Tile overlap: 16" in response.json()["html_info"]
