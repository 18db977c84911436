"""The Library's Reproduce of a picture made with ControlNet and IP-Adapter units: the units come back
from the infotext with their kept control pictures, and the body makes the same pixels."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from test_controlnet import cn_models_dir  # noqa: F401 - the session's ControlNet and IP-Adapter models

from webui.engine.controlnet.reproduce import from_infotext, parse_line

USERS = [("alice", "a-pass"), ("bob", "b-pass")]


def b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.fixture(scope="module")
def client(cn_models_dir, tmp_path_factory):  # noqa: F811
    from fastapi.testclient import TestClient

    from conftest import make_api_app
    from webui.auth import make_checker

    app, engine = make_api_app(cn_models_dir, tmp_path_factory.mktemp("cn-lib-out"), check_login=make_checker(USERS, {}))
    return TestClient(app)


def test_an_infotext_line_reads_back_as_the_unit_it_was():
    line = ("Module: canny, Model: outline-cn [0123abcd], Weight: 0.7, Resize Mode: Just Resize, Processor Res: 256, "
            "Threshold A: 50, Threshold B: -1, Guidance Start: 0.1, Guidance End: 0.8, Pixel Perfect: True, "
            "Control Mode: ControlNet is more important")
    assert parse_line(line) == {"enabled": True, "module": "canny", "model": "outline-cn [0123abcd]", "weight": 0.7,
                                "resize_mode": "Just Resize", "processor_res": 256, "threshold_a": 50.0,
                                "threshold_b": None, "guidance_start": 0.1, "guidance_end": 0.8, "pixel_perfect": True,
                                "control_mode": "ControlNet is more important"}
    assert parse_line("Skipped: no image") is None
    kept = {"ControlNet 2 image hash": "AAA", "ControlNet 2 image 2 hash": "BBB"}
    args = from_infotext({"ControlNet 2": "Module: ip-adapter_clip_sd15, Model: ip [1], Weight: 0.5", "Steps": "4"},
                         kept.get)["controlnet"]["args"]
    assert args[:2] == [{"enabled": False}, {"enabled": False}] and args[2]["image"] == ["AAA", "BBB"]
    assert from_infotext({"Steps": "4"}, kept.get) is None


def test_reproduce_a_controlnet_and_ip_adapter_picture_bit_for_bit(client):
    alice, bob = USERS
    rng = np.random.default_rng(5)
    outline = Image.new("RGB", (64, 64))
    ImageDraw.Draw(outline).ellipse((14, 10, 50, 46), outline="white", width=3)
    second = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    reference = Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8))
    units = [{"image": b64(outline), "module": "canny", "model": "outline-cn", "threshold_a": 60, "threshold_b": 150},
             {"image": b64(second), "module": "none", "model": "second-cn", "weight": 0.6, "guidance_end": 0.7,
              "control_mode": 2, "resize_mode": 0},
             {"image": b64(reference), "module": "ip-adapter_clip_sd15", "model": "ip-adapter_sd15", "weight": 0.8}]
    answer = client.post("/sdapi/v1/txt2img", auth=alice, json={
        "prompt": "a guided circle", "steps": 3, "width": 64, "height": 64, "seed": 17, "sampler_name": "Euler",
        "save_images": True, "override_settings": {"samples_save": True}, "alwayson_scripts": {"controlnet": {"args": units}}})
    assert answer.status_code == 200, answer.text
    info = json.loads(answer.json()["info"])["infotexts"][0]
    assert all(f"ControlNet {i} image hash: " in info for i in range(3))
    (item,) = client.get("/kiri/v1/library", params={"q": "guided"}, auth=alice).json()["items"]
    made = client.get(f"/kiri/v1/library/{item['id']}/reproduce", auth=alice).json()
    assert made["endpoint"] == "/sdapi/v1/txt2img"
    args = made["body"]["alwayson_scripts"]["controlnet"]["args"]
    assert [a["module"] for a in args] == ["canny", "none", "ip-adapter_clip_sd15"]
    assert (args[0]["threshold_a"], args[0]["threshold_b"], args[1]["weight"], args[1]["guidance_end"]) == (60, 150, 0.6, 0.7)
    assert (args[1]["control_mode"], args[1]["resize_mode"]) == ("ControlNet is more important", "Just Resize")
    assert np.array_equal(pixels(base64.b64decode(args[1]["image"])), np.asarray(second))
    again = client.post(made["endpoint"], json={**made["body"], "save_images": False}, auth=alice)
    assert again.status_code == 200, again.text
    saved = client.get(f"/kiri/v1/library/{item['id']}/file", auth=alice).content
    assert np.array_equal(pixels(base64.b64decode(again.json()["images"][0])), pixels(saved))
    # without its units the picture differs: the bit-for-bit match above is the units' doing
    plain = {k: v for k, v in made["body"].items() if k != "alwayson_scripts"}
    without = client.post(made["endpoint"], json={**plain, "save_images": False}, auth=alice).json()["images"][0]
    assert not np.array_equal(pixels(base64.b64decode(without)), pixels(saved))
    assert client.get(f"/kiri/v1/library/{item['id']}/reproduce", auth=bob).status_code == 404
    # a kept control picture gone: a 4xx naming the unit's field, never a body for another picture
    digest = info.split("ControlNet 1 image hash: ")[1][:10]
    path = Path(client.get(f"/kiri/v1/library/{item['id']}", auth=alice).json()["path"])
    (kept,) = (path.parents[2] / ".inits").glob(f"{digest}*.png")
    kept.unlink()
    gone = client.get(f"/kiri/v1/library/{item['id']}/reproduce", auth=alice)
    assert gone.status_code == 422 and "alwayson_scripts.controlnet.args[1].image" in gone.text and digest in gone.text


def test_the_tabs_reproduce_sets_the_control_panel_with_the_kept_pictures(cn_models_dir, tmp_path):  # noqa: F811
    """Reproduce from the Library tab sets Text to image's ControlNet panel: each unit enabled with its kept
    control picture, module, model and sliders, the panel's other units off; a control picture that is gone
    leaves its unit off and says so."""
    from types import SimpleNamespace

    from test_library_tabs import by_elem_id, handler_of

    from webui.bootstrap import build_engine
    from webui.engine.core.devices import DeviceChoice
    from webui.engine.generation.requests import Txt2ImgRequest
    from webui.engine.library import open_library
    from webui.engine.settings import Settings
    from webui.ui.app import build

    engine = build_engine(Settings(models_dir=cn_models_dir, outputs_dir=tmp_path / "out", default_model="tiny-sd",
                                   save_images=True), DeviceChoice("cpu"))
    engine.catalog.scan()
    outline = Image.new("RGB", (64, 64))
    ImageDraw.Draw(outline).rectangle((16, 16, 48, 48), outline="white", width=3)
    unit = {"image": b64(outline), "module": "canny", "model": "outline-cn", "threshold_a": 60, "threshold_b": 150,
            "weight": 0.8, "guidance_end": 0.9}
    engine.txt2img(Txt2ImgRequest("a fenced garden", steps=2, width=64, height=64, seed=3, sampler_name="Euler",
                                  addons={"controlnet": [{"enabled": False}, unit]}))
    fill = handler_of(build(engine, tmp_path / "settings.json"), "library-reproduce")
    lib = open_library(engine.settings)
    lib.refresh(force=True)
    (item,) = lib.search(lib.viewer(None), q="fenced")["items"]
    text = lib.item(lib.viewer(None), item["id"])["infotext"]
    made = by_elem_id(fill(text, item["id"], SimpleNamespace(username=None)))
    assert made["txt2img-prompt"] == "a fenced garden" and made["library-status"] == ""
    assert made["txt2img-cn0-enabled"] is False and made["txt2img-cn1-enabled"] is True
    assert made["txt2img-cn2-enabled"] is False
    assert np.array_equal(np.asarray(made["txt2img-cn1-image"]["background"]), np.asarray(outline))
    assert made["txt2img-cn1-module"]["value"] == "canny" and made["txt2img-cn1-model"]["value"] == "outline-cn"
    assert (made["txt2img-cn1-threshold-a"]["value"], made["txt2img-cn1-threshold-b"]["value"]) == (60, 150)
    assert (made["txt2img-cn1-weight"], made["txt2img-cn1-end"]) == (0.8, 0.9)
    assert "img2img-cn1-enabled" not in made  # the other tab's panel is left as it is
    # the kept control picture gone: the unit stays off and the note says which picture is missing
    for kept in (Path(engine.settings.outputs_dir) / ".inits").glob("*.png"):
        kept.unlink()
    made = by_elem_id(fill(text, item["id"], SimpleNamespace(username=None)))
    assert made["txt2img-cn1-enabled"] is False and made["txt2img-prompt"] == "a fenced garden"
    assert "ControlNet 1 image hash" in made["library-status"] and "no longer in" in made["library-status"]
