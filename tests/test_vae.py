"""VAE selection (engine/vae/): Automatic / None / a VAE from models/VAE/, per request and as the
`sd_vae` setting, for one call only; A1111's single files (original or diffusers layout) and diffusers
folders; infotext, /sdapi/v1/sd-vae, previews, the hires fix and the Text to image tab."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest

from webui.engine.core.errors import InvalidRequest
from webui.engine.core.jobs import Job
from webui.engine.generation.requests import HiresFix, Txt2ImgRequest

import tiny_models


def _other_vae(own_config: dict, seed: int, **changes):
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL.from_config({**own_config, **changes})
    with torch.no_grad():  # decoders far from the checkpoint's: pictures that differ clearly
        for p in vae.decoder.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return vae


@pytest.fixture(scope="module")
def vae_models(models_dir, tmp_path_factory):
    """models/ with tiny-sd and, in models/VAE/: (a) `other-vae`, a diffusers AutoencoderKL folder of other
    weights; (b) `other-ldm.safetensors`, the same weights in the original layout; (c) `tiny-sd.vae.safetensors`
    (diffusers layout), which Automatic picks; (d) `wide.safetensors`, 8 latent channels; (e) a pickle."""
    import json

    import torch
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("vae_models")
    shutil.copytree(models_dir / "checkpoints" / "tiny-sd", root / "checkpoints" / "tiny-sd")
    folder = root / "VAE"
    folder.mkdir()
    own = json.loads((root / "checkpoints" / "tiny-sd" / "vae" / "config.json").read_text())
    own = {k: v for k, v in own.items() if not k.startswith("_")}
    other = _other_vae(own, 1)
    other.save_pretrained(folder / "other-vae")
    ldm = {k.removeprefix("first_stage_model."): v.contiguous()
           for k, v in tiny_models._vae_to_ldm(dict(other.state_dict())).items()}
    save_file(ldm, folder / "other-ldm.safetensors")
    save_file({k: v.contiguous() for k, v in _other_vae(own, 2).state_dict().items()}, folder / "tiny-sd.vae.safetensors")
    save_file({k: v.contiguous() for k, v in _other_vae(own, 3, latent_channels=8).state_dict().items()},
              folder / "wide.safetensors")
    torch.save(dict(_other_vae(own, 4).state_dict()), folder / "old.pt")
    return root


@pytest.fixture(scope="module")
def vae_engine(vae_models, tmp_path_factory):
    from webui.bootstrap import build_engine
    from webui.engine.core.devices import DeviceChoice
    from webui.engine.settings import Settings

    settings = Settings(models_dir=vae_models, outputs_dir=tmp_path_factory.mktemp("vae_out"), default_model="tiny-sd",
                        save_images=False, preview_every=0)
    engine = build_engine(settings, DeviceChoice("cpu"))
    engine.catalog.scan()
    return engine


def _run(engine, vae=None, job=None, **fields):
    base = dict(steps=3, width=64, height=64, seed=7, sampler_name="Euler", model="tiny-sd", save_images=False)
    request = Txt2ImgRequest("a red circle", **{**base, **fields}, addons={} if vae is None else {"vae": vae})
    result = engine.txt2img(request, job)
    return np.asarray(result.images[0], dtype=np.int16), result.infotexts[0]


def _params(infotext: str) -> dict:
    from webui.engine.core.infotext import parse_infotext

    return parse_infotext(infotext).params


def test_a_chosen_vae_changes_the_picture_for_that_call_only(vae_engine):
    own, own_info = _run(vae_engine, "None")
    shared = vae_engine.models.get("tiny-sd").pipeline.vae
    chosen, info = _run(vae_engine, "other-vae")
    again, _ = _run(vae_engine, "None")
    assert not np.array_equal(own, chosen)
    assert np.array_equal(own, again)  # the shared pipeline's VAE was put back
    assert vae_engine.models.get("tiny-sd").pipeline.vae is shared
    assert "other-vae" in [e.name for e in vae_engine.models.loaded()]  # the weights share the models' cache
    assert "VAE" not in _params(own_info)
    params = _params(info)
    assert params["VAE"] == "other-vae" and len(params["VAE hash"]) == 10
    # A1111's order: Model hash, Model, VAE hash, VAE, then the rest.
    keys = list(params)
    assert keys.index("Model") + 1 == keys.index("VAE hash") and keys.index("VAE hash") + 1 == keys.index("VAE")


def test_image_to_image_encodes_and_decodes_with_it(vae_engine):
    from PIL import Image

    from webui.engine.generation.img2img import Img2ImgRequest

    source = Image.new("RGB", (64, 64), "red")
    pictures = {}
    for name in ("None", "other-vae"):
        request = Img2ImgRequest("a red circle", steps=3, width=64, height=64, seed=7, sampler_name="Euler",
                                 model="tiny-sd", save_images=False, init_image=source, denoising_strength=0.5,
                                 addons={"vae": name})
        result = vae_engine.img2img(request)
        pictures[name] = (np.asarray(result.images[0], dtype=np.int16), result.infotexts[0])
    assert not np.array_equal(pictures["None"][0], pictures["other-vae"][0])
    assert _params(pictures["other-vae"][1])["VAE"] == "other-vae"


def test_the_original_layout_file_and_the_folder_of_the_same_weights_give_the_same_picture(vae_engine, vae_models):
    folder, _ = _run(vae_engine, "other-vae")
    single, info = _run(vae_engine, "other-ldm.safetensors")  # A1111's model_name: the file name
    assert np.array_equal(folder, single)
    params = _params(info)
    want = hashlib.sha256((vae_models / "VAE" / "other-ldm.safetensors").read_bytes()).hexdigest()[:10]
    assert params["VAE"] == "other-ldm" and params["VAE hash"] == want


def test_automatic_picks_the_vae_named_like_the_checkpoint_and_none_is_the_checkpoints_own(vae_engine, engine):
    automatic, info = _run(vae_engine)  # the sd_vae setting: Automatic
    named, _ = _run(vae_engine, "tiny-sd.vae")
    own, _ = _run(vae_engine, "None")
    plain, plain_info = _run(engine)  # the same checkpoint where models/VAE/ is empty
    assert np.array_equal(automatic, named) and not np.array_equal(automatic, own)
    assert _params(info)["VAE"] == "tiny-sd.vae"
    assert np.array_equal(own, plain) and "VAE" not in _params(plain_info)


def test_a_vae_beside_the_checkpoint_is_automatic_and_no_checkpoint(vae_models, tmp_path):
    from webui.bootstrap import build_engine
    from webui.engine.core.devices import DeviceChoice
    from webui.engine.settings import Settings

    root = tmp_path / "models"
    shutil.copytree(vae_models / "checkpoints", root / "checkpoints")
    shutil.copy(vae_models / "VAE" / "tiny-sd.vae.safetensors", root / "checkpoints")
    engine = build_engine(Settings(models_dir=root, outputs_dir=tmp_path / "out", save_images=False), DeviceChoice("cpu"))
    engine.catalog.scan()
    assert [e.name for e in engine.catalog.entries] == ["tiny-sd"]
    _, info = _run(engine)
    assert _params(info)["VAE"] == "tiny-sd.vae"


def test_mismatched_unknown_and_pickled_vaes_are_refused_naming_the_field(vae_engine):
    with pytest.raises(InvalidRequest) as caught:
        _run(vae_engine, "wide")
    assert caught.value.field == "sd_vae" and "8 latent channels" in str(caught.value)
    with pytest.raises(InvalidRequest) as caught:
        _run(vae_engine, "no-such-vae")
    assert caught.value.field == "sd_vae" and "other-vae" in str(caught.value)
    with pytest.raises(InvalidRequest) as caught:
        _run(vae_engine, 3)
    assert caught.value.field == "sd_vae"
    from webui.engine.core.errors import PickleRefused

    with pytest.raises(PickleRefused, match="allow-pickle"):
        _run(vae_engine, "old")


def test_a_pickled_vae_loads_with_allow_pickle(vae_models, tmp_path):
    from webui.bootstrap import build_engine
    from webui.engine.core.devices import DeviceChoice
    from webui.engine.settings import Settings

    settings = Settings(models_dir=vae_models, outputs_dir=tmp_path / "out", save_images=False, allow_pickle=True)
    engine = build_engine(settings, DeviceChoice("cpu"))
    _, info = _run(engine, "old")
    assert _params(info)["VAE"] == "old"


def test_the_setting_applies_when_the_request_names_none(vae_engine):
    chosen, _ = _run(vae_engine, "other-vae")
    vae_engine.settings.sd_vae = "other-vae"
    try:
        by_setting, info = _run(vae_engine)
        own, _ = _run(vae_engine, "None")  # a request that names one wins
    finally:
        vae_engine.settings.sd_vae = "Automatic"
    assert np.array_equal(chosen, by_setting) and _params(info)["VAE"] == "other-vae"
    assert not np.array_equal(own, by_setting)


def test_previews_use_the_chosen_vae(vae_engine):
    vae_engine.settings.preview_every = 1
    try:
        previews = {}
        for name in ("None", "other-vae"):
            job = Job(kind="txt2img")
            _run(vae_engine, name, job)
            previews[name] = np.asarray(job.preview, dtype=np.int16)
    finally:
        vae_engine.settings.preview_every = 0
    # The same latents at every step (a VAE does not change the denoising): only the decoder differs.
    assert not np.array_equal(previews["None"], previews["other-vae"])


@pytest.mark.parametrize("strength", [0.5, 0])
def test_the_hires_latent_decode_uses_the_chosen_vae(vae_engine, strength):
    hires = HiresFix(scale=2, upscaler="Latent", denoising_strength=strength, steps=2)
    own, _ = _run(vae_engine, "None", hires=hires)
    chosen, info = _run(vae_engine, "other-vae", hires=hires)
    folder_again, _ = _run(vae_engine, "other-ldm", hires=hires)
    assert own.shape == chosen.shape == (128, 128, 3)
    assert not np.array_equal(own, chosen) and np.array_equal(chosen, folder_again)
    assert _params(info)["VAE"] == "other-vae"


# --- the API and the browser -------------------------------------------------------------------

@pytest.fixture(scope="module")
def vae_server(vae_models, tmp_path_factory):
    from conftest import serve_kiri

    yield from serve_kiri(vae_models, tmp_path_factory, "vae_outputs")


def test_sd_vae_lists_the_vaes(vae_server):
    import requests

    listed = requests.get(vae_server["url"] + "sdapi/v1/sd-vae", timeout=30).json()
    names = {v["model_name"] for v in listed}
    assert {"other-vae", "other-ldm.safetensors", "tiny-sd.vae.safetensors", "wide.safetensors"} <= names
    assert all(set(v) == {"model_name", "filename"} for v in listed)


def test_webuiapi_override_settings_and_options(vae_server):
    import requests
    import webuiapi

    port = int(vae_server["url"].rstrip("/").rsplit(":", 1)[1])
    api = webuiapi.WebUIApi(host="127.0.0.1", port=port, sampler="Euler", steps=2)
    fields = dict(prompt="a red circle", seed=5, width=64, height=64)
    chosen = api.txt2img(**fields, override_settings={"sd_vae": "other-ldm.safetensors"})
    own = api.txt2img(**fields, override_settings={"sd_vae": "None"})
    assert "VAE: other-ldm" in chosen.info["infotexts"][0] and "VAE" not in own.info["infotexts"][0]
    assert chosen.info["warnings"] == []
    assert not np.array_equal(np.asarray(chosen.image), np.asarray(own.image))

    url = vae_server["url"] + "sdapi/v1/"
    bad = requests.post(url + "txt2img", json={**fields, "steps": 1, "override_settings": {"sd_vae": "nope"}}, timeout=60)
    assert bad.status_code == 422 and "sd_vae" in bad.text
    assert requests.post(url + "options", json={"sd_vae": "nope"}, timeout=30).status_code == 422
    assert requests.post(url + "options", json={"sd_vae": "other-vae"}, timeout=30).status_code == 200
    try:
        assert requests.get(url + "options", timeout=30).json()["sd_vae"] == "other-vae"
        by_setting = api.txt2img(**fields)
        assert "VAE: other-vae" in by_setting.info["infotexts"][0]
    finally:
        requests.post(url + "options", json={"sd_vae": "Automatic"}, timeout=30)


def test_kiri_jobs_take_the_vae_addon(vae_server):
    import time

    import requests

    url = vae_server["url"] + "kiri/v1/jobs"
    body = {"kind": "txt2img", "request": {"prompt": "a dot", "steps": 2, "width": 64, "height": 64, "seed": 3,
                                           "addons": {"vae": "other-vae"}}}
    reply = requests.post(url, json=body, timeout=30)
    assert reply.status_code == 200, reply.text
    job_id = reply.json()["id"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = requests.get(f"{url}/{job_id}", timeout=30).json()
        if state.get("state") in ("done", "failed", "interrupted") or state.get("result"):
            break
        time.sleep(0.3)
    assert "VAE: other-vae" in str(state), state


def test_the_vae_dropdown_in_the_browser(vae_server, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(vae_server["url"])
    page.get_by_label("Prompt", exact=True).first.fill("a small red circle")
    page.locator("#txt2img-vae input").click()
    page.get_by_role("option", name="other-vae", exact=True).click()
    page.locator("#txt2img-generate").click()
    page.wait_for_function("document.querySelector('#txt2img-infotext textarea').value.includes('Seed:')",
                           timeout=120_000)
    assert "VAE: other-vae" in page.locator("#txt2img-infotext textarea").input_value()
    page.close()
