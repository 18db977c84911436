"""What AUTOMATIC1111's own API tests and clients send: options checked on write, override_settings
per request only, legacy routes and legacy request bodies, and server paths on an exposed server."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from PIL import Image


@pytest.fixture(scope="module")
def api_engine(models_dir, tmp_path_factory):
    from webui.bootstrap import build_engine
    from webui.engine.core.devices import DeviceChoice
    from webui.engine.settings import Settings

    outputs = tmp_path_factory.mktemp("compat-outputs")
    return build_engine(Settings(models_dir=models_dir, outputs_dir=outputs, default_model="tiny-sd"), DeviceChoice("cpu"))


def make_client(engine, **context):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from webui.api import ApiContext, mount

    app = FastAPI()
    mount(app, ApiContext(engine, **context))
    return TestClient(app)


@pytest.fixture(scope="module")
def client(api_engine):
    return make_client(api_engine)


def raw_post(client, path: str, text: str):
    """A body json.dumps would refuse to write (NaN, Infinity, a lone surrogate), sent as raw JSON text."""
    return client.post(path, content=text.encode("utf-8", "surrogatepass"), headers={"content-type": "application/json"})


def named(response) -> str:
    return response.json()["detail"][0]["loc"][-1]


# --- POST /options: every value checked on write ------------------------------------------------
@pytest.mark.parametrize("option, raw", [
    ("sd_checkpoint_cache", '"abc"'), ("sd_checkpoint_cache", "null"), ("sd_checkpoint_cache", "NaN"),
    ("sd_checkpoint_cache", "Infinity"), ("sd_checkpoint_cache", "-Infinity"), ("sd_checkpoint_cache", "-5"),
    ("sd_checkpoint_cache", "1e308"), ("sd_checkpoint_cache", str(10**30)), ("sd_checkpoint_cache", "2.5"),
    ("sd_checkpoint_cache", "true"), ("sd_checkpoint_cache", "[1]"),
    ("samples_save", '"yes"'), ("samples_save", "1"), ("samples_save", "null"), ("samples_save", '"\\ud83d"'),
    ("samples_format", '"gif"'), ("samples_format", "5"), ("send_seed", '"maybe"'),
    ("show_progress_every_n_steps", "-2"), ("sd_model_checkpoint", "5"), ("sd_model_checkpoint", "[]"),
    ("sd_model_checkpoint", '""'),
])
def test_a_bad_option_is_a_422_naming_it_and_changes_nothing(client, option, raw):
    before = client.get("/sdapi/v1/options").json()
    response = raw_post(client, "/sdapi/v1/options", f'{{"samples_save": false, "{option}": {raw}}}')
    assert response.status_code == 422, response.text
    assert named(response) == option and option in response.json()["errors"]
    after = client.get("/sdapi/v1/options")
    assert after.status_code == 200 and after.json() == before  # samples_save: false was not applied either


def test_options_booleans_numbers_and_unknown_names(client, api_engine):
    url = "/sdapi/v1/options"
    original = client.get(url).json()
    try:
        assert client.post(url, json={"samples_save": "false"}).status_code == 200
        assert client.get(url).json()["samples_save"] is False and api_engine.settings.save_images is False
        assert client.post(url, json={"samples_save": "TRUE"}).status_code == 200
        assert client.get(url).json()["samples_save"] is True
        assert client.post(url, json={"sd_checkpoint_cache": 3.0, "samples_format": "WEBP"}).status_code == 200
        options = client.get(url).json()
        assert options["sd_checkpoint_cache"] == 3 and options["samples_format"] == "webp"
        assert client.post(url, json={"sd_checkpoint_cache": 0}).status_code == 200  # A1111's default
        assert client.get(url).json()["sd_checkpoint_cache"] == 1  # Kiri keeps at least the loaded one
        # Unknown options: accepted and ignored as A1111 does, named in warnings, never stored.
        reply = client.post(url, json={"no_such_option": float(10**300), "another": {"x": [1]}})
        assert reply.status_code == 200 and any("no_such_option" in w for w in reply.json()["warnings"])
        after = client.get(url)
        assert after.status_code == 200 and "no_such_option" not in after.json()
    finally:
        client.post(url, json={k: original[k] for k in ("samples_save", "samples_format", "sd_checkpoint_cache")})


def test_send_seed_round_trips_as_in_a1111s_own_test(client):
    url = "/sdapi/v1/options"
    before = client.get(url).json()["send_seed"]
    assert isinstance(before, bool)
    assert client.post(url, json={"send_seed": not before}).status_code == 200
    assert client.get(url).json()["send_seed"] is (not before)
    client.post(url, json={"send_seed": before})


@pytest.mark.parametrize("path, keys", [
    ("hypernetworks", None), ("face-restorers", None), ("realesrgan-models", None), ("prompt-styles", None),
    ("cmd-flags", None), ("samplers", {"name", "aliases", "options"}), ("upscalers", {"name", "scale"}),
    ("sd-models", {"title", "model_name", "hash", "filename"}), ("embeddings", None), ("scripts", None),
])
def test_routes_a1111s_own_api_tests_call(client, path, keys):
    response = client.get(f"/sdapi/v1/{path}")
    assert response.status_code == 200, response.text
    if path in ("hypernetworks", "face-restorers", "realesrgan-models", "prompt-styles"):
        assert response.json() == []  # A1111's list shape; none of these here (no styles.csv: no styles)
    if keys:
        assert response.json() and keys <= set(response.json()[0])


# --- override_settings: applied to the request only ------------------------------------------------
@pytest.mark.parametrize("value", ["5", "[]", "{}", "true", "1.5"])
def test_override_checkpoint_must_be_a_string(client, value):
    response = raw_post(client, "/sdapi/v1/txt2img",
                        f'{{"prompt": "x", "steps": 1, "width": 64, "height": 64, "override_settings": {{"sd_model_checkpoint": {value}}}}}')
    assert response.status_code == 422, response.text
    assert named(response) == "override_settings.sd_model_checkpoint"


@pytest.mark.parametrize("setting, value", [("samples_format", '"gif"'), ("samples_save", '"no"'),
                                            ("CLIP_stop_at_last_layers", '"two"'), ("CLIP_stop_at_last_layers", "99")])
def test_bad_override_setting_is_a_422_naming_it(client, setting, value):
    response = raw_post(client, "/sdapi/v1/txt2img",
                        f'{{"prompt": "x", "steps": 1, "width": 64, "height": 64, "override_settings": {{"{setting}": {value}}}}}')
    assert response.status_code == 422, response.text
    assert named(response) == f"override_settings.{setting}"


def test_override_settings_become_fields_of_the_engine_request_not_settings():
    from webui.api.sdapi.fields import Txt2ImgBody
    from webui.api.sdapi.mapping import txt2img_request

    warnings: list[str] = []
    request = txt2img_request(Txt2ImgBody(prompt="x", save_images=True, override_settings={
        "CLIP_stop_at_last_layers": 2.0, "samples_format": "jpeg", "samples_save": "false",
        "sd_model_checkpoint": "tiny-sd", "sd_vae": "Automatic"}), warnings)
    assert request.addons == {"clip_skip": 2, "vae": "Automatic"} and request.image_format == "jpg"
    assert request.save_images is False and request.model == "tiny-sd" and warnings == []
    plain = txt2img_request(Txt2ImgBody(prompt="x", save_images=True))
    assert plain.addons == {} and plain.image_format is None and plain.save_images is None  # the settings decide
    assert txt2img_request(Txt2ImgBody(prompt="x")).save_images is False  # A1111's API saves only when asked


def saved_files(engine) -> set[Path]:
    return {p for p in Path(engine.settings.outputs_dir).rglob("*") if p.is_file() and not p.name.startswith(".")}


def test_override_settings_last_one_request(client, api_engine):
    tiny = {"prompt": "a red circle", "steps": 2, "width": 64, "height": 64, "sampler_name": "Euler", "seed": 3,
            "save_images": True}
    def settings_now() -> dict:  # the options, less the loaded model (the first request loads it)
        options = client.get("/sdapi/v1/options").json()
        return {k: v for k, v in options.items() if k not in ("sd_model_checkpoint", "sd_checkpoint_hash")}

    settings_before = settings_now()
    assert settings_before["samples_format"] == "png" and settings_before["samples_save"] is True

    files = saved_files(api_engine)
    first = client.post("/sdapi/v1/txt2img", json={**tiny, "override_settings": {
        "samples_format": "webp", "samples_save": "true", "eta_noise_seed_delta": 31337},
        "override_settings_restore_afterwards": False})
    assert first.status_code == 200, first.text
    info = json.loads(first.json()["info"])
    new = saved_files(api_engine) - files
    assert [p.suffix for p in new] == [".webp"]
    assert any("eta_noise_seed_delta" in w for w in info["warnings"])
    assert any("override_settings_restore_afterwards" in w for w in info["warnings"])
    assert settings_now() == settings_before
    assert api_engine.settings.image_format == "png" and api_engine.settings.save_images is True

    files = saved_files(api_engine)
    second = client.post("/sdapi/v1/txt2img", json=tiny)  # no overrides: the settings as they were
    assert second.status_code == 200
    assert [p.suffix for p in saved_files(api_engine) - files] == [".png"]
    assert json.loads(second.json()["info"])["warnings"] == []

    files = saved_files(api_engine)
    third = client.post("/sdapi/v1/txt2img", json={**tiny, "override_settings": {"samples_save": False}})
    assert third.status_code == 200 and len(third.json()["images"]) == 1
    assert saved_files(api_engine) == files  # not saved, and the setting is still on:
    assert client.get("/sdapi/v1/options").json()["samples_save"] is True


# --- legacy request bodies, as A1111's own tests send them ------------------------------------------
LEGACY_TXT2IMG = {
    "batch_size": 1, "cfg_scale": 7, "denoising_strength": 0, "enable_hr": False, "eta": 0, "firstphase_height": 0,
    "firstphase_width": 0, "height": 64, "n_iter": 1, "negative_prompt": "", "prompt": "example prompt",
    "restore_faces": False, "s_churn": 0, "s_noise": 1, "s_tmax": 0, "s_tmin": 0, "sampler_index": "Euler a",
    "seed": -1, "seed_resize_from_h": -1, "seed_resize_from_w": -1, "steps": 2, "styles": [], "subseed": -1,
    "subseed_strength": 0, "tiling": False, "width": 64,
}


def test_legacy_txt2img_body_runs_without_warnings(client):
    response = client.post("/sdapi/v1/txt2img", json=LEGACY_TXT2IMG)
    assert response.status_code == 200, response.text
    info = json.loads(response.json()["info"])
    assert len(response.json()["images"]) == 1 and info["sampler_name"] == "Euler a"
    assert info["warnings"] == []  # every value there is one Kiri does anyway: nothing to warn about


def test_legacy_txt2img_asking_for_what_kiri_does_not_do_says_so(client):
    body = {**LEGACY_TXT2IMG, "restore_faces": True, "tiling": True,
            "subseed": 5, "subseed_strength": 0.3, "s_churn": 0.5, "eta": 0.5,
            "script_name": "x/y/z plot", "script_args": [1, "a", None],
            "alwayson_scripts": {"regional prompter": {"args": [True]}, "controlnet": {"args": [{"enabled": True}]}},
            "sampler_index": "DDIM", "do_not_save_grid": True, "disable_extra_networks": True, "comments": {"a": "b"},
            "refiner_checkpoint": "sdxl-refiner", "refiner_switch_at": 0.8, "s_min_uncond": 0.2}
    response = client.post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 200, response.text
    warnings = " | ".join(json.loads(response.json()["info"])["warnings"])
    for name in ("restore_faces", "tiling", "subseed_strength", "s_churn", "eta",
                 "x/y/z plot", "regional prompter", "controlnet", "refiner_checkpoint", "s_min_uncond"):
        assert name in warnings, f"{name} not named in {warnings}"
    assert len(response.json()["images"]) == 1


def png_b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_legacy_img2img_inpaint_with_a_script_kiri_lacks(client):
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    body = {
        "batch_size": 1, "cfg_scale": 7, "denoising_strength": 0.75, "eta": 0, "height": 64, "include_init_images": False,
        "init_images": [png_b64(Image.new("RGB", (64, 64), "navy"))], "inpaint_full_res": False,
        "inpaint_full_res_padding": 0, "inpainting_fill": 0, "inpainting_mask_invert": True, "mask": png_b64(mask),
        "mask_blur": 4, "n_iter": 1, "negative_prompt": "", "override_settings": {}, "prompt": "example prompt",
        "resize_mode": 0, "restore_faces": False, "s_churn": 0, "s_noise": 1, "s_tmax": 0, "s_tmin": 0,
        "sampler_index": "Euler a", "seed": -1, "seed_resize_from_h": -1, "seed_resize_from_w": -1, "steps": 2,
        "styles": [], "subseed": -1, "subseed_strength": 0, "tiling": False, "width": 64,
        "script_name": "outpainting mk2", "script_args": ["", 8, "Lanczos", 2.0],
    }
    response = client.post("/sdapi/v1/img2img", json=body)
    assert response.status_code == 200, response.text
    warnings = json.loads(response.json()["info"])["warnings"]
    assert any("outpainting mk2" in w for w in warnings) and len(response.json()["images"]) == 1
    # SD upscale is a script Kiri has; it works on the whole picture, so a mask with it is refused.
    response = client.post("/sdapi/v1/img2img", json={**body, "script_name": "SD Upscale"})
    assert response.status_code == 422 and "mask" in response.text


@pytest.mark.parametrize("raw, field", [
    ('{"prompt": "x", "steps": NaN}', "steps"), ('{"prompt": "x", "seed": Infinity}', "seed"),
    ('{"prompt": "x", "cfg_scale": -Infinity}', "cfg_scale"), ('{"prompt": "x", "subseed_strength": NaN}', "subseed_strength"),
    ('{"prompt": "\\ud83d a cat"}', "prompt"), ('{"prompt": "x", "negative_prompt": "\\udfff"}', "negative_prompt"),
    ('{"prompt": "x", "steps": "\\ud83d"}', "steps"), ('{"prompt": "x", "script_args": [1, NaN]}', "script_args"),
])
def test_values_no_json_reply_can_hold_are_a_422_naming_the_field(client, raw, field):
    response = raw_post(client, "/sdapi/v1/txt2img", raw)
    assert response.status_code == 422, response.text
    assert named(response) == field


# --- paths: absolute locally (as A1111), relative to the models/outputs folder when exposed ---------
def test_paths_are_relative_on_an_exposed_server_and_absolute_locally(api_engine, models_dir):
    settings = api_engine.settings
    flags = {"models_dir": Path(models_dir), "outputs_dir": str(settings.outputs_dir), "port": 7860,
             "settings_file": Path("/srv/kiri/settings.json"), "listen": True}
    local, exposed = make_client(api_engine, cmd_flags=flags), make_client(api_engine, cmd_flags=flags, exposed=True)

    models = {m["model_name"]: m["filename"] for m in local.get("/sdapi/v1/sd-models").json()}
    assert models["tiny-sd-single"] == str(Path(models_dir) / "checkpoints" / "tiny-sd-single.safetensors")
    assert local.get("/sdapi/v1/options").json()["outdir_samples"] == str(settings.outputs_dir)
    assert local.get("/sdapi/v1/cmd-flags").json()["models_dir"] == str(models_dir)

    shown = {m["model_name"]: m["filename"] for m in exposed.get("/sdapi/v1/sd-models").json()}
    assert shown["tiny-sd-single"] == "checkpoints/tiny-sd-single.safetensors"
    assert shown["tiny-sd"] == "checkpoints/tiny-sd"
    flags_shown = exposed.get("/sdapi/v1/cmd-flags").json()
    assert flags_shown["settings_file"] == "settings.json" and flags_shown["port"] == 7860
    everything = json.dumps([shown, flags_shown, exposed.get("/sdapi/v1/options").json()])
    for secret in (str(models_dir), str(settings.outputs_dir), "/srv/kiri"):
        assert secret not in everything


# --- scripts and hires checkpoints: an unknown name is a 422, as A1111 answers it ------------------
@pytest.mark.parametrize("route, script", [
    ("img2img", "../../etc/passwd"), ("img2img", "no such script"), ("txt2img", "../../etc/passwd"),
    ("txt2img", "loopback"),  # an img2img script: A1111 does not find it on txt2img either
    ("txt2img", "adetailer"),
])
def test_an_unknown_script_name_is_a_422_naming_script_name(client, route, script):
    body = {"prompt": "x", "width": 64, "height": 64, "steps": 1, "script_name": script}
    if route == "img2img":
        body["init_images"] = [png_b64(Image.new("RGB", (64, 64), "navy"))]
    response = client.post(f"/sdapi/v1/{route}", json=body)
    assert response.status_code == 422, response.text
    assert named(response) == "script_name" and "Script not found" in response.text


@pytest.mark.parametrize("script", ["X/Y/Z plot", "Prompt matrix", "", None])
def test_a1111_scripts_kiri_lacks_still_run_without_them(client, script):
    response = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "width": 64, "height": 64, "steps": 1,
                                                      "script_name": script})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("name", ["no-such-model", "../tiny-sd", "tiny-sd.safetensors.bak"])
def test_an_unknown_hr_checkpoint_name_is_a_422_naming_it(client, name):
    response = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "width": 64, "height": 64, "steps": 1,
                                                      "enable_hr": True, "hr_checkpoint_name": name})
    assert response.status_code == 422, response.text
    assert named(response) == "hr_checkpoint_name" and "tiny-sd" in response.json()["detail"][0]["msg"]


@pytest.mark.parametrize("name", ["Use same checkpoint", "", None, "tiny-sd"])
def test_a_known_or_same_hr_checkpoint_name_runs(client, name):
    response = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "width": 64, "height": 64, "steps": 1,
                                                      "enable_hr": True, "hr_scale": 1.5, "hr_checkpoint_name": name})
    assert response.status_code == 200, response.text
    warned = any("hr_checkpoint_name" in w for w in json.loads(response.json()["info"])["warnings"])
    assert warned == (name == "tiny-sd")  # the second pass runs on the first pass's checkpoint: said so
