"""ControlNet (webui/engine/controlnet/): tiny random-weight ControlNets (from the tiny SD 1.x UNet and a tiny
SDXL one) and a tiny T2I-Adapter in models/ControlNet/, loaded through Kiri's loader and run through the
add-on seam: weight 0 is the checkpoint bit for bit, a unit changes the picture, two units at once, txt2img,
img2img, inpaint and hires fix, a scheduler and a function sampler, refusals that name what exists, units
without an image skipped with a note, maps of another aspect fitted, sd-webui-controlnet's infotext read back,
the checkpoint untouched, and the /controlnet/* routes with webuiapi's ControlNetUnit."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import json
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import controlnet_files
import tiny_models
from webui.engine import controlnet
from webui.engine.core.errors import InvalidRequest
from webui.engine.generation.requests import HiresFix, Txt2ImgRequest

SIZE = 64


@pytest.fixture(scope="session")
def cn_models_dir(models_dir, tmp_path_factory) -> Path:
    """models/ with the tiny SD 1.x and SDXL, two SD 1.x ControlNets, an SDXL one and an SDXL T2I-Adapter."""
    root = tmp_path_factory.mktemp("cn_models")
    (root / "checkpoints").mkdir()
    (root / "checkpoints" / "tiny-sd").symlink_to(models_dir / "checkpoints" / "tiny-sd")
    sd = root / "checkpoints" / "tiny-sd"
    controlnet_files.make_controlnet(sd, root / "ControlNet" / "outline-cn", seed=1)
    controlnet_files.make_controlnet(sd, root / "ControlNet" / "second-cn", seed=2)
    xl = tiny_models.make_tiny_sdxl(root / "checkpoints" / "tiny-sdxl")
    controlnet_files.make_controlnet(xl, root / "ControlNet" / "xl-cn", seed=3)
    controlnet_files.make_t2i_adapter(root / "T2I-Adapter" / "tiny-t2i")
    controlnet_files.save_ldm_controlnet(sd, root / "ControlNet" / "control_tiny.safetensors")
    # an IP-Adapter and its image encoder, for units of both kinds in one request
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file
    from test_ip_adapter import ip_adapter_state, save_image_encoder

    save_file(ip_adapter_state(UNet2DConditionModel.from_pretrained(sd / "unet"), 32, 1),
              root / "ipadapter" / "ip-adapter_sd15.safetensors") if (root / "ipadapter").mkdir() is None else None
    save_image_encoder(root / "clip_vision" / "clip-vit-h-tiny")
    return root


@pytest.fixture(scope="module")
def cn_engine(cn_models_dir, tmp_path_factory):
    from webui.bootstrap import build_engine
    from webui.engine.core.devices import DeviceChoice
    from webui.engine.settings import Settings

    settings = Settings(models_dir=cn_models_dir, outputs_dir=tmp_path_factory.mktemp("cn_out"), default_model="tiny-sd",
                        save_images=False)
    engine = build_engine(settings, DeviceChoice("cpu"))
    engine.catalog.scan()
    return engine


def outline(size=(SIZE, SIZE)) -> Image.Image:
    image = Image.new("RGB", size)
    w, h = size
    ImageDraw.Draw(image).rectangle((w // 4, h // 4, 3 * w // 4, 3 * h // 4), outline="white", width=3)
    return image


def b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def txt2img(engine, sampler="Euler", model="tiny-sd", **fields):
    request = Txt2ImgRequest("a red square", steps=2, width=SIZE, height=SIZE, seed=7, sampler_name=sampler, model=model,
                             **fields)
    return engine.txt2img(request)


def pixels(result) -> np.ndarray:
    return np.asarray(result.images[0], dtype=np.int16)


def record_maps(monkeypatch) -> list:
    """The control maps each call hands the pipeline (after the add-on's apply)."""
    from webui.engine.controlnet.addon import ControlNets

    seen: list = []
    original = ControlNets.apply

    def apply(self, call):
        original(self, call)
        maps = call.kwargs.get("control_image", call.kwargs.get("image")) if self.used else None
        seen.append((type(call.pipeline).__name__, maps, call.kwargs.get("controlnet_conditioning_scale")))

    monkeypatch.setattr(ControlNets, "apply", apply)
    return seen


def test_catalog_lists_models_with_families_and_titles(cn_engine):
    models = {m["name"]: m for m in controlnet.list_models(cn_engine.catalog)}
    assert models["outline-cn"]["family"] == "sd1" and models["outline-cn"]["kind"] == "controlnet"
    assert models["xl-cn"]["family"] == "sdxl"
    assert models["tiny-t2i"]["kind"] == "t2i"
    assert models["outline-cn"]["title"].startswith("outline-cn [") and len(models["outline-cn"]["title"]) == len("outline-cn [12345678]")
    assert models["tiny-t2i"]["family"] == "sdxl"
    # a family the file does not say (the tiny one's 32-wide text) is offered for every checkpoint
    assert models["control_tiny"]["family"] is None and models["control_tiny"]["kind"] == "controlnet"
    assert {m["name"] for m in controlnet.list_models(cn_engine.catalog, "sd1")} == {"outline-cn", "second-cn", "control_tiny"}


def test_a1111_single_file_loads_offline_with_the_same_weights(cn_engine, models_dir, tmp_path):
    expected = controlnet_files.save_ldm_controlnet(models_dir / "checkpoints" / "tiny-sd", tmp_path / "again.safetensors")
    loaded = cn_engine.models.get_of_kind("controlnet", "control_tiny").model
    got = loaded.module.state_dict()
    assert set(got) == set(expected) and all(torch.equal(expected[k], got[k]) for k in expected)


def test_weight_zero_is_the_checkpoint_a_unit_changes_it_and_the_checkpoint_stays(cn_engine):
    model = cn_engine.models.get("tiny-sd")
    before = {k: v.clone() for k, v in model.pipeline.unet.state_dict().items()}
    plain = pixels(txt2img(cn_engine))
    zero = txt2img(cn_engine, addons={"controlnet": [{"image": outline(), "model": "outline-cn", "weight": 0}]})
    assert np.array_equal(plain, pixels(zero))
    guided = txt2img(cn_engine, addons={"controlnet": [{"image": outline(), "model": "outline-cn [00000000]", "weight": 1}]})
    assert np.abs(plain - pixels(guided)).mean() > 1.0
    after = cn_engine.models.get("tiny-sd").pipeline.unet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert type(cn_engine.models.get("tiny-sd").pipeline).__name__ == "StableDiffusionPipeline"
    # the infotext line, as sd-webui-controlnet writes it, read back by PNG info
    from webui.engine.core.infotext import parse_infotext

    info = guided.infotexts[0] if hasattr(guided, "infotexts") else guided.info[0]
    params = parse_infotext(info).params
    line = params["ControlNet 0"]
    assert line.startswith("Module: none, Model: outline-cn [") and "Weight: 1.0" in line
    assert "Resize Mode: Crop and Resize" in line and "Control Mode: Balanced" in line and "Pixel Perfect: False" in line
    assert "ControlNet 0" in controlnet.INFOTEXT_KEYS


def test_two_units_with_a_function_sampler_and_a_unit_without_image(cn_engine, monkeypatch):
    seen = record_maps(monkeypatch)
    units = [{"image": outline(), "model": "outline-cn", "module": "canny"},
             {"enabled": True, "model": "second-cn"},  # no image in text to image: skipped with a note
             {"image": outline((96, 48)), "model": "second-cn", "control_mode": "My prompt is more important",
              "resize_mode": "Resize and Fill"},
             {"enabled": False, "image": "not even base64", "model": "nosuch"}]
    two = txt2img(cn_engine, sampler="DPM++ 3M SDE", addons={"controlnet": units})
    one = txt2img(cn_engine, sampler="DPM++ 3M SDE", addons={"controlnet": units[:1]})
    assert not np.array_equal(pixels(two), pixels(one))
    assert any("controlnet" in w and "unit 1" in w and "no image" in w for w in two.warnings)
    name, maps, _ = seen[0]
    assert name == "StableDiffusionControlNetPipeline" and len(maps) == 2
    assert all(m.size == (SIZE, SIZE) for m in maps)  # the 2:1 map fitted, not refused
    filled = np.asarray(maps[1])
    assert filled[:12].max() == 0 and filled[SIZE // 2 - 4: SIZE // 2 + 4].max() > 0  # Resize and Fill pads black
    from webui.engine.core.infotext import parse_infotext

    params = parse_infotext(two.infotexts[0] if hasattr(two, "infotexts") else two.info[0]).params
    assert "Module: canny" in params["ControlNet 0"] and "Threshold A: 100, Threshold B: 200" in params["ControlNet 0"]
    assert params["ControlNet 1"].startswith("Skipped") and "My prompt is more important" in params["ControlNet 2"]
    assert "ControlNet 3" not in params


def test_img2img_inpaint_and_hires_fix(cn_engine, monkeypatch):
    from webui.engine.generation.img2img import Img2ImgRequest

    seen = record_maps(monkeypatch)
    init = Image.new("RGB", (SIZE, SIZE), "navy")
    base = dict(prompt="a red square", steps=3, width=SIZE, height=SIZE, seed=3, init_image=init, denoising_strength=0.7)
    plain = cn_engine.img2img(Img2ImgRequest(**base, sampler_name="Euler"))
    # img2img, a function sampler; the unit without an image uses the init image
    guided = cn_engine.img2img(Img2ImgRequest(**base, sampler_name="DPM++ 3M SDE",
                                              addons={"controlnet": [{"model": "outline-cn", "module": "invert"
                                                                      if "invert" in controlnet.module_names() else "none"}]}))
    assert seen[-1][0] == "StableDiffusionControlNetImg2ImgPipeline" and seen[-1][1][0].size == (SIZE, SIZE)
    assert not any("no image" in w for w in guided.warnings)
    guided2 = cn_engine.img2img(Img2ImgRequest(**base, sampler_name="Euler", addons={"controlnet": [
        {"image": outline(), "model": "outline-cn"}]}))
    assert not np.array_equal(pixels(plain), pixels(guided2))
    # inpaint
    mask = Image.new("L", (SIZE, SIZE), 0)
    mask.paste(255, (16, 16, 48, 48))
    cn_engine.img2img(Img2ImgRequest(**base, mask=mask, sampler_name="Euler",
                                     addons={"controlnet": [{"image": outline(), "model": "outline-cn",
                                                             "module": "inpaint_only"}]}))
    assert "ControlNet" in seen[-1][0] and ("Inpaint" in seen[-1][0] or "Img2Img" in seen[-1][0])
    condition = seen[-1][1][0]  # the inpaint module's input: the request's mask at -1
    assert isinstance(condition, torch.Tensor) and condition.shape == (1, 3, SIZE, SIZE)
    assert condition[0, 0, 32, 32] == -1 and condition[0, 0, 2, 2] >= 0
    # hires fix: the second pass gets the map at the hires size
    seen.clear()
    txt2img(cn_engine, hires=HiresFix(scale=2, upscaler="Latent", denoising_strength=0.6, steps=2),
            addons={"controlnet": [{"image": outline((40, 80)), "model": "outline-cn"},
                                   {"image": outline(), "model": "second-cn", "hr_option": "Low res only"}]})
    sizes = [maps[0].size for _, maps, _ in seen]
    assert sizes == [(SIZE, SIZE), (2 * SIZE, 2 * SIZE)], sizes
    assert [weights for _, _, weights in seen] == [[1.0, 1.0], [1.0, 0.0]]  # hr_option: low res only


def test_refusals_name_what_exists(cn_engine):
    with pytest.raises(InvalidRequest) as err:
        txt2img(cn_engine, addons={"controlnet": [{"image": outline(), "model": "xl-cn"}]})
    assert err.value.field == "controlnet[0].model" and "SDXL" in str(err.value) and "SD 1.x" in str(err.value)
    with pytest.raises(InvalidRequest) as err:
        txt2img(cn_engine, addons={"controlnet": [{"image": outline(), "model": "nosuch"}]})
    assert "outline-cn [" in str(err.value) and err.value.field == "controlnet[0].model"
    with pytest.raises(InvalidRequest) as err:
        txt2img(cn_engine, addons={"controlnet": [{"image": outline(), "module": "nosuch", "model": "outline-cn"}]})
    assert "none" in str(err.value) and err.value.field == "controlnet[0].module"
    with pytest.raises(InvalidRequest) as err:
        controlnet.parse_units([{"image": outline()}, {"weight": "heavy"}])
    assert err.value.field == "controlnet[1].weight"
    with pytest.raises(InvalidRequest) as err:
        controlnet.parse_units([{"resize_mode": "Stretch"}])
    assert "Crop and Resize" in str(err.value)
    units = controlnet.parse_units([{"control_mode": "ControlNet is more important", "resize_mode": "Just Resize",
                                     "image": b64(outline())}, {"module": "ip-adapter_clip_sd15"}, {"control_mode": 1}])
    assert [u.index for u in units] == [0, 2] and units[0].control_mode == 2 and units[0].resize_mode == 0
    assert units[0].image.size == (SIZE, SIZE)


def test_preview_and_unit_count(cn_engine):
    image = outline()
    assert np.array_equal(controlnet.preview("none", image), np.asarray(image))
    assert controlnet.preview("none", b64(image), 256).shape == (SIZE, SIZE, 3)
    assert controlnet.unit_count(cn_engine.settings) == 3


@pytest.fixture(scope="module")
def cn_server(cn_models_dir, tmp_path_factory):
    from conftest import serve_kiri

    yield from serve_kiri(cn_models_dir, tmp_path_factory, "cn_served")


def test_routes_and_webuiapi_controlnet_unit(cn_server):
    import requests
    import webuiapi

    url = cn_server["url"]
    assert requests.get(url + "controlnet/version").json() == {"version": 2}
    assert requests.get(url + "controlnet/settings").json() == {"control_net_unit_count": 3}
    listed = requests.get(url + "controlnet/model_list", params={"update": "true"}).json()["model_list"]
    assert any(t.startswith("outline-cn [") for t in listed) and any(t.startswith("xl-cn [") for t in listed)
    modules = requests.get(url + "controlnet/module_list", params={"alias_names": "false"}).json()
    assert "none" in modules["module_list"] and isinstance(modules["module_detail"], dict)
    detected = requests.post(url + "controlnet/detect", json={"controlnet_module": "none",
                                                             "controlnet_input_images": [b64(outline())]}).json()
    assert detected["info"] == "Success"
    got = Image.open(io.BytesIO(base64.b64decode(detected["images"][0])))
    assert got.size == (SIZE, SIZE)
    bad = requests.post(url + "controlnet/detect", json={"controlnet_module": "nosuch", "controlnet_input_images": [b64(outline())]})
    assert bad.status_code == 422 and "controlnet_module" in bad.text

    port = int(url.rstrip("/").rsplit(":", 1)[1])
    api = webuiapi.WebUIApi(host="127.0.0.1", port=port, sampler="Euler", steps=2)
    fields = dict(prompt="a red square", seed=5, width=SIZE, height=SIZE)
    plain = api.txt2img(**fields)
    title = next(t for t in listed if t.startswith("outline-cn ["))
    unit = webuiapi.ControlNetUnit(image=outline(), module="none", model=title, weight=1.0, control_mode=2,
                                   resize_mode="Crop and Resize")
    guided = api.txt2img(controlnet_units=[unit], alwayson_scripts={}, **fields)  # webuiapi's default dict is shared
    assert not np.array_equal(np.asarray(plain.image), np.asarray(guided.image))
    info = guided.info["infotexts"][0]
    assert 'ControlNet 0: "Module: none, Model: outline-cn [' in info and "Control Mode: ControlNet is more important" in info
    bad = requests.post(url + "sdapi/v1/txt2img", json={**fields, "steps": 1, "alwayson_scripts": {"controlnet": {
        "args": [{"image": b64(outline()), "model": title, "weight": "x"}]}}})
    assert bad.status_code == 422 and "alwayson_scripts.controlnet.args[0].weight" in bad.text


def test_sdxl_controlnet_and_t2i_adapter_in_text_to_image(cn_engine):
    plain = pixels(txt2img(cn_engine, model="tiny-sdxl"))
    guided = txt2img(cn_engine, model="tiny-sdxl", addons={"controlnet": [{"image": outline(), "model": "xl-cn"}]})
    assert not np.array_equal(plain, pixels(guided))
    adapted = txt2img(cn_engine, model="tiny-sdxl", addons={"controlnet": [{"image": outline(), "model": "tiny-t2i"}]})
    assert not np.array_equal(plain, pixels(adapted))
    assert "tiny-t2i [" in adapted.infotexts[0]
    both = txt2img(cn_engine, model="tiny-sdxl", addons={"controlnet": [{"image": outline(), "model": "tiny-t2i"},
                                                                        {"image": outline(), "model": "tiny-t2i",
                                                                         "weight": 0.5}]})
    assert not np.array_equal(pixels(adapted), pixels(both))
    with pytest.raises(InvalidRequest) as err:
        txt2img(cn_engine, model="tiny-sdxl", addons={"controlnet": [{"image": outline(), "model": "tiny-t2i"},
                                                                     {"image": outline(), "model": "xl-cn"}]})
    assert "T2I-Adapters and ControlNets" in str(err.value)


def test_per_model_state_counts_only_copies(cn_engine):
    from webui.engine.core.addons import derived_bytes

    txt2img(cn_engine, addons={"controlnet": [{"image": outline(), "model": "outline-cn", "weight": 0.5}]})
    model = cn_engine.models.get("tiny-sd")
    slots = [k for k in model.derived if isinstance(k, tuple) and k[:2] == ("addon-state", "controlnet")]
    assert slots and all(model.derived[k]["copies"] == [] for k in slots)  # same device and dtype: no copy
    assert derived_bytes(model) == 0
    assert "outline-cn" in [e.name for e in cn_engine.models.loaded()]


def test_a_checkpoint_of_another_dtype_gets_a_copy_and_the_loaded_model_stays(cn_engine):
    from webui.engine.controlnet.addon import _placed

    loaded = cn_engine.models.get_of_kind("controlnet", "outline-cn").model.module
    before = next(loaded.parameters()).clone()
    moved = _placed(loaded, torch.device("cpu"), torch.bfloat16)
    assert moved is not loaded and next(moved.parameters()).dtype == torch.bfloat16
    assert next(loaded.parameters()).dtype == torch.float32 and torch.equal(next(loaded.parameters()), before)
    assert _placed(loaded, torch.device("cpu"), torch.float32) is loaded


def test_controlnet_and_ip_adapter_units_in_one_script(cn_engine, monkeypatch):
    """sd-webui-controlnet's args hold both kinds: each add-on reads its own, the indices stay the request's."""
    seen = record_maps(monkeypatch)
    reference = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8))
    args = [{"image": b64(reference), "module": "ip-adapter_clip_sd15", "model": "ip-adapter_sd15"},
            {"image": b64(outline()), "module": "none", "model": "outline-cn"}]
    found, unread = cn_engine.addons.from_api_scripts({"ControlNet": {"args": args}})
    assert unread == [] and [u.index for u in found["controlnet"]] == [1]
    both = txt2img(cn_engine, addons=found)
    only_cn = txt2img(cn_engine, addons={"controlnet": [args[1]]})
    assert not np.array_equal(pixels(both), pixels(only_cn))
    assert seen[0][0] == "StableDiffusionControlNetPipeline"
    info = both.infotexts[0]
    assert 'ControlNet 0: "Module: ip-adapter_clip_sd15' in info and 'ControlNet 1: "Module: none, Model: outline-cn' in info


def test_video_to_video_keeps_the_source_shapes_through_the_checkpoints_structure_controlnet(cn_models_dir, tmp_path):
    """A checkpoint that names its structure ControlNet (kiri_controlnet.json) gets it on every source
    frame in video to video at the default structure "auto"; "off", a name, a request with its own
    ControlNet units and an unknown name each do what they say."""
    import io
    import shutil
    import zipfile

    from video_clips import moving_square_frames

    from webui.bootstrap import build_engine
    from webui.engine.core.devices import DeviceChoice
    from webui.engine.core.errors import InvalidRequest
    from webui.engine.settings import Settings
    from webui.engine.video.service import Vid2VidRequest, vid2vid

    root = tmp_path / "models"
    shutil.copytree(cn_models_dir / "checkpoints" / "tiny-sd", root / "checkpoints" / "tiny-sd")
    (root / "checkpoints" / "tiny-sd" / "kiri_controlnet.json").write_text(
        json.dumps({"structure": {"model": "outline-cn", "module": "canny", "weight": 1.0}}))
    (root / "ControlNet").mkdir()
    (root / "ControlNet" / "outline-cn").symlink_to(cn_models_dir / "ControlNet" / "outline-cn")
    engine = build_engine(Settings(models_dir=root, outputs_dir=tmp_path / "out", default_model="tiny-sd", save_images=False),
                          DeviceChoice("cpu"))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i, frame in enumerate(moving_square_frames(3)):
            png = io.BytesIO()
            frame.save(png, format="PNG")
            archive.writestr(f"{i:04d}.png", png.getvalue())

    def run(**fields):
        request = Vid2VidRequest(video=buffer.getvalue(), prompt="a green square", steps=2, seed=5, max_size=64, **fields)
        result = vid2vid(engine, request)
        return result.info, [np.asarray(f) for f in result.frames()]

    auto_info, auto = run()
    off_info, off = run(structure="off")
    named_info, named = run(structure="outline-cn", structure_weight=0.5)
    own_info, _ = run(addons={"controlnet": [{"model": "outline-cn", "module": "none", "weight": 0.5}]})
    assert 'Structure: "outline-cn (canny, weight 1)"' in auto_info
    assert "Structure" not in off_info and "Structure" not in own_info
    assert 'Structure: "outline-cn (canny, weight 0.5)"' in named_info
    assert any(not np.array_equal(a, b) for a, b in zip(auto, off))  # the unit acts on the frames
    assert any(not np.array_equal(a, b) for a, b in zip(auto, named))
    with pytest.raises(InvalidRequest) as err:
        run(structure="no-such-cn")
    assert err.value.field == "structure" and "outline-cn" in str(err.value)
