"""The detailer (issue 28): regions from masks, exact paste-back, [SEP] prompts, interrupt, the
ADetailer API through webuiapi's ADetailer class."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from webui.engine import detailer
from webui.engine.core.errors import InvalidRequest
from webui.engine.core.infotext import parse_infotext
from webui.engine.generation.img2img import Img2ImgRequest
from webui.engine.generation.requests import Txt2ImgRequest


def _box(h, w, x0, y0, x1, y1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


# --- regions (pure) ---------------------------------------------------------------------------

def test_regions_split_filter_k_largest_and_merge():
    mask = _box(64, 64, 2, 2, 10, 10) | _box(64, 64, 30, 30, 50, 50) | _box(64, 64, 55, 2, 60, 6)
    regions = detailer.split_regions([mask])
    assert len(regions) == 3
    largest = detailer.select(regions, k_largest=1)
    assert len(largest) == 1 and largest[0][40, 40] and not largest[0][5, 5]
    # min/max ratio on the box's share of the picture: the 20x20 box is 400/4096 ~ 0.098
    mid = detailer.select(regions, min_ratio=0.01, max_ratio=0.05)
    assert len(mid) == 1 and mid[0][5, 5]
    merged = detailer.preprocess(regions, merge_invert="Merge")
    assert len(merged) == 1 and merged[0].sum() == mask.sum()
    inverted = detailer.preprocess(regions, merge_invert="Merge and Invert")
    assert len(inverted) == 1 and (inverted[0] == ~mask).all()
    grown = detailer.preprocess([regions[0]], dilate_erode=2)[0]
    shrunk = detailer.preprocess([regions[0]], dilate_erode=-2)[0]
    assert grown.sum() > regions[0].sum() > shrunk.sum() > 0
    moved = detailer.preprocess([_box(64, 64, 10, 10, 20, 20)], x_offset=5, y_offset=3)[0]
    assert moved[7:17, 15:25].all() and moved.sum() == 100  # right 5, up 3


def test_sep_prompts_per_region():
    assert detailer.region_prompts("a [SEP] b", 3) == ["a", "b", "b"]
    assert detailer.region_prompts("", 2) == ["", ""]


def test_api_args_both_forms_and_bad_values_name_the_field():
    warnings: list[str] = []
    s = detailer.from_args([True, True, {"ad_model": "the star", "ad_confidence": 0.5, "ad_bogus": 1}, {"ad_model": "None"}])
    assert s.skip_img2img and len(s.active) == 1 and s.units[0].ad_confidence == 0.5
    assert any("ad_bogus" in w for w in s.warnings)
    assert detailer.from_args([{"ad_model": "face"}]).units[0].ad_model == "face"
    assert detailer.from_args([False, False, {"ad_model": "face"}]) is None
    with pytest.raises(InvalidRequest) as err:
        detailer.from_args([True, False, {"ad_model": "face", "ad_denoising_strength": 3}])
    assert err.value.field == "alwayson_scripts.ADetailer.args[2].ad_denoising_strength"
    del warnings


def test_infotext_keys_round_trip():
    unit = detailer.DetailerUnit(ad_model="the star", ad_prompt="a red star", ad_denoising_strength=0.5)
    from webui.engine.detailer._units import unit_infotext

    params = {**unit_infotext(0, unit, 1), **unit_infotext(1, detailer.DetailerUnit(ad_model="hand"), 0)}
    assert "ADetailer model 2nd" in params and params["ADetailer model"] == "the star"
    from webui.engine.core.infotext import build_infotext

    text = build_infotext("p", "", {"Steps": 2, "Seed": 1, **params})
    units = detailer.units_from_infotext(parse_infotext(text).params)
    assert units[0]["ad_prompt"] == "a red star" and units[0]["ad_denoising_strength"] == 0.5
    assert units[1]["ad_model"] == "hand"


# --- the stage on the tiny model ---------------------------------------------------------------

@pytest.fixture()
def drawn(engine, monkeypatch):
    """Detection replaced by the drawn scene's truth: white squares on black (the tiny segmenters' masks are random)."""
    from webui.engine.detailer import _stage

    def fake_detect(engine, picture, detector, unit, job):
        if False:
            yield
        array = np.asarray(picture.convert("L"))
        return [array > 200] if detector.word != "nothing" else []

    monkeypatch.setattr(_stage, "detect", fake_detect)
    engine.catalog.scan()
    return engine


def _scene(size=96):
    image = np.zeros((size, size, 3), np.uint8)
    image[10:22, 10:22] = 255
    image[60:90, 60:96] = 255  # at the border
    return Image.fromarray(image)


def _img2img(unit, **kw):
    return Img2ImgRequest(prompt="a square", steps=2, width=64, height=64, seed=3, init_image=_scene(),
                          addons={"adetailer": {"units": [unit], "skip_img2img": True}}, save_images=False, **kw)


def _with_text_segmenter(engine, tmp_path):
    import tiny_segmenters

    tiny_segmenters.make_tiny_clipseg(engine.settings.models_dir / "segmentation" / "tiny-clipseg")
    engine.catalog.scan()


def test_regions_are_redrawn_and_outside_every_mask_is_exact(drawn, tmp_path):
    _with_text_segmenter(drawn, tmp_path)
    unit = {"ad_model": "square", "ad_mask_blur": 2, "ad_dilate_erode": 2, "ad_denoising_strength": 1.0}
    result = drawn.img2img(_img2img(unit))
    assert len(result.images) == 1
    before, after = np.asarray(_scene()).astype(int), np.asarray(result.images[0]).astype(int)
    assert after.shape == before.shape
    regions = detailer.unit_regions([before[..., 0] > 200], detailer.unit_from(unit, "u", []))
    from PIL import ImageFilter

    touched = np.zeros(before.shape[:2], bool)
    for region in regions:
        blurred = np.asarray(Image.fromarray(region.astype(np.uint8) * 255).filter(ImageFilter.GaussianBlur(2))) > 0
        touched |= blurred
    assert (after[~touched] == before[~touched]).all()  # exactly unchanged outside
    assert np.abs(after[touched] - before[touched]).mean() > 1  # the regions (one at the border) were redrawn
    info = parse_infotext(result.infotexts[0]).params
    assert info["ADetailer model"] == "square" and info["ADetailer regions"] == "2"
    assert info["ADetailer denoising strength"] == "1"


def test_no_region_keeps_the_picture_and_says_so(drawn, tmp_path):
    _with_text_segmenter(drawn, tmp_path)
    result = drawn.img2img(_img2img({"ad_model": "nothing"}))
    assert np.array_equal(np.asarray(result.images[0]), np.asarray(_scene()))
    assert parse_infotext(result.infotexts[0]).params["ADetailer regions"] == "0"
    assert any("found no region" in w for w in result.warnings)


def test_sep_prompts_reach_each_region_and_k_largest(drawn, tmp_path, monkeypatch):
    _with_text_segmenter(drawn, tmp_path)
    from webui.engine.detailer import _stage

    seen: list[str] = []
    real = _stage.inpaint_region

    def spy(engine, request, unit, picture, region, prompt, negative, *rest):
        seen.append(prompt)
        return (yield from real(engine, request, unit, picture, region, prompt, negative, *rest))

    monkeypatch.setattr(_stage, "inpaint_region", spy)
    drawn.img2img(_img2img({"ad_model": "square", "ad_prompt": "big one [SEP] small one", "ad_denoising_strength": 0.5}))
    assert seen == ["big one", "small one"]  # largest region first
    seen.clear()
    drawn.img2img(_img2img({"ad_model": "square", "ad_prompt": "x", "ad_mask_k_largest": 1, "ad_denoising_strength": 0.5}))
    assert seen == ["x"]


def test_interrupt_keeps_the_regions_done(drawn, tmp_path, monkeypatch):
    _with_text_segmenter(drawn, tmp_path)
    from webui.engine.core.jobs import Job
    from webui.engine.detailer import _stage

    job = Job(kind="img2img")
    real = _stage.inpaint_region
    calls = []

    def first_then_stop(*args):
        out = yield from real(*args)
        calls.append(1)
        job.interrupt() if hasattr(job, "interrupt") else setattr(job, "interrupted", True)
        return out

    monkeypatch.setattr(_stage, "inpaint_region", first_then_stop)
    result = drawn.img2img(_img2img({"ad_model": "square", "ad_denoising_strength": 1.0}), job)
    assert len(calls) == 1 and result.interrupted
    changed = np.abs(np.asarray(result.images[0]).astype(int) - np.asarray(_scene()).astype(int)).sum(axis=2) > 0
    assert changed[60:90, 60:96].any() and not changed[:40, :40].any()  # the big region done, the small one not
    assert parse_infotext(result.infotexts[0]).params["ADetailer regions"] == "1"


def test_txt2img_then_detailer_with_before_view(drawn, tmp_path):
    _with_text_segmenter(drawn, tmp_path)
    request = Txt2ImgRequest(prompt="a square", steps=2, width=64, height=64, seed=5, save_images=False, batch_size=2,
                             addons={"adetailer": {"units": [{"ad_model": "square"}], "show_before": True}})
    result = drawn.txt2img(request)
    assert len(result.images) == 4  # each picture of the batch detailed, then the main pass's two
    assert result.seeds == [5, 6, 5, 6]
    assert all("ADetailer model" in t for t in result.infotexts[:2]) and not any("ADetailer" in t for t in result.infotexts[2:])


def test_unknown_detector_file_is_refused_by_name(drawn, tmp_path):
    _with_text_segmenter(drawn, tmp_path)
    with pytest.raises(InvalidRequest) as err:
        drawn.img2img(_img2img({"ad_model": "my_detector.pt"}))
    assert err.value.field.endswith("ad_model") and "tiny-clipseg" in str(err.value)


# --- the ADetailer API through webuiapi --------------------------------------------------------

@pytest.fixture(scope="module")
def ad_server(models_dir, tmp_path_factory):
    """The served app on tiny-sd and a tiny CLIPSeg (a segmenter that takes words)."""
    import tiny_segmenters
    from conftest import serve_kiri

    root = tmp_path_factory.mktemp("ad_models")
    (root / "checkpoints").mkdir()
    (root / "checkpoints" / "tiny-sd").symlink_to(models_dir / "checkpoints" / "tiny-sd")
    tiny_segmenters.make_tiny_clipseg(root / "segmentation" / "tiny-clipseg")
    yield from serve_kiri(root, tmp_path_factory, "ad_outputs")


def test_webuiapi_adetailer_class_on_txt2img_and_img2img(ad_server):
    import requests
    import webuiapi

    port = int(ad_server["url"].rstrip("/").rsplit(":", 1)[1])
    api = webuiapi.WebUIApi(host="127.0.0.1", port=port, sampler="Euler", steps=2)
    assert api.has_adetailer  # /sdapi/v1/scripts lists the add-ons' alwayson scripts
    assert requests.get(ad_server["url"] + "adetailer/v1/version", timeout=30).json()["version"]
    models = requests.get(ad_server["url"] + "adetailer/v1/ad_model", timeout=30).json()["ad_model"]
    assert models[0] == "None" and "tiny-clipseg" in models and "face_yolov8n.pt" in models

    # confidence 0: the tiny segmenter's mask is the whole picture, one region
    unit = webuiapi.ADetailer(ad_model="tiny-clipseg", ad_model_classes="circle", ad_confidence=0.0,
                              ad_denoising_strength=0.5, ad_prompt="a red circle")
    result = api.txt2img(prompt="a red circle", seed=5, width=64, height=64, adetailer=[unit],
                         alwayson_scripts={})  # webuiapi would otherwise keep the unit in its shared default dict
    assert result.image.size == (64, 64) and len(result.images) == 1  # the API answers the detailed picture only
    info = result.info["infotexts"][0]
    assert "ADetailer model: tiny-clipseg" in info and "ADetailer prompt: a red circle" in info
    assert "ADetailer regions: 1" in info

    # skip_img2img on /img2img: the init image kept, only the detailer runs; an unknown word finds nothing here
    init = Image.fromarray(np.full((64, 64, 3), 40, np.uint8))
    nothing = webuiapi.ADetailer(ad_model="tiny-clipseg", ad_model_classes="circle", ad_confidence=1.0)
    body = {"prompt": "a red circle", "init_images": [webuiapi.raw_b64_img(init)], "steps": 2, "width": 64, "height": 64,
            "alwayson_scripts": {"ADetailer": {"args": [True, True, nothing.to_dict()]}}}
    reply = requests.post(ad_server["url"] + "sdapi/v1/img2img", json=body, timeout=120)
    assert reply.status_code == 200
    import base64
    import io
    import json

    out = Image.open(io.BytesIO(base64.b64decode(reply.json()["images"][0]))).convert("RGB")
    assert np.array_equal(np.asarray(out), np.asarray(init))
    assert "ADetailer regions: 0" in json.loads(reply.json()["info"])["infotexts"][0]

    # a bad value is a 422 naming the unit's field
    body["alwayson_scripts"]["ADetailer"]["args"] = [True, False, {"ad_model": "face", "ad_mask_blur": -1}]
    reply = requests.post(ad_server["url"] + "sdapi/v1/img2img", json=body, timeout=60)
    assert reply.status_code == 422 and "alwayson_scripts.ADetailer.args[2].ad_mask_blur" in reply.text


def test_after_hires_fix(drawn, tmp_path):
    _with_text_segmenter(drawn, tmp_path)
    request = Txt2ImgRequest(prompt="a square", steps=2, width=64, height=64, seed=5, save_images=False,
                             hires=__import__("webui.engine.generation.requests", fromlist=["HiresFix"]).HiresFix(
                                 scale=2, upscaler="Lanczos", denoising_strength=0.0),
                             addons={"adetailer": {"units": [{"ad_model": "square", "ad_confidence": 0.1}]}})
    result = drawn.txt2img(request)
    assert result.images[0].size == (128, 128)  # the detailer ran on the hires pass's picture
    params = parse_infotext(result.infotexts[0]).params
    assert params["Hires upscale"] == "2" and params["ADetailer model"] == "square"


def test_a_units_own_controlnet_gets_the_region_crop(models_dir, tmp_path, monkeypatch):
    import controlnet_files

    from webui.bootstrap import build_engine
    from webui.engine.core.devices import DeviceChoice
    from webui.engine.detailer import _stage
    from webui.engine.settings import Settings

    root = tmp_path / "models"
    (root / "checkpoints").mkdir(parents=True)
    (root / "checkpoints" / "tiny-sd").symlink_to(models_dir / "checkpoints" / "tiny-sd")
    controlnet_files.make_controlnet(root / "checkpoints" / "tiny-sd", root / "ControlNet" / "outline-cn", seed=1)
    engine = build_engine(Settings(models_dir=root, outputs_dir=tmp_path / "out", default_model="tiny-sd", save_images=False),
                          DeviceChoice("cpu"))
    _with_text_segmenter(engine, tmp_path)

    def fake_detect(engine, picture, detector, unit, job):
        if False:
            yield
        return [np.asarray(picture.convert("L")) > 200]

    seen = []
    real_stage = _stage.stage

    def spy(engine, task, job):
        seen.append(task.request.addons.get("controlnet"))
        result = yield from real_stage(engine, task, job)
        seen.append(result.infotexts)
        return result

    monkeypatch.setattr(_stage, "detect", fake_detect)
    monkeypatch.setattr(_stage, "stage", spy)
    unit = {"ad_model": "square", "ad_mask_k_largest": 1, "ad_inpaint_only_masked_padding": 0, "ad_dilate_erode": 0,
            "ad_controlnet_model": "outline-cn", "ad_controlnet_weight": 0.8}
    engine.img2img(_img2img(unit))
    units, infotexts = seen
    assert units[0]["model"] == "outline-cn" and units[0]["weight"] == 0.8
    assert units[0]["image"].size[0] < 96  # the region's crop, not the whole picture
    assert "ControlNet 0" in infotexts[0] and "outline-cn" in infotexts[0]


def test_the_librarys_reproduce_body_carries_the_detailer_units_and_makes_the_same_picture(ad_server):
    """A detailed picture's reproduce body (GET /kiri/v1/library/{id}/reproduce) has its ADetailer units
    back from the infotext in alwayson_scripts.ADetailer; posted, it makes the same pixels."""
    import base64
    import io

    import requests

    url = ad_server["url"]
    unit = {"ad_model": "tiny-clipseg", "ad_model_classes": "circle", "ad_confidence": 0.0,
            "ad_denoising_strength": 0.5, "ad_prompt": "a detailed red circle", "ad_mask_blur": 2}
    answer = requests.post(url + "sdapi/v1/txt2img", timeout=120, json={
        "prompt": "a detailed teal kite", "steps": 2, "width": 64, "height": 64, "seed": 808, "sampler_name": "Euler",
        "save_images": True, "override_settings": {"samples_save": True},
        "alwayson_scripts": {"ADetailer": {"args": [True, False, unit]}}})
    assert answer.status_code == 200, answer.text
    (item,) = requests.get(url + "kiri/v1/library", params={"q": "teal kite"}, timeout=30).json()["items"]
    made = requests.get(url + f"kiri/v1/library/{item['id']}/reproduce", timeout=30).json()
    enable, skip, *units = made["body"]["alwayson_scripts"]["ADetailer"]["args"]
    assert (enable, skip, len(units)) == (True, False, 1)
    assert {k: units[0][k] for k in unit} == unit
    again = requests.post(url + made["endpoint"].lstrip("/"), json={**made["body"], "save_images": False}, timeout=120)
    assert again.status_code == 200, again.text

    def pixels(data: str) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))

    assert np.array_equal(pixels(again.json()["images"][0]), pixels(answer.json()["images"][0]))
    plain = {k: v for k, v in made["body"].items() if k != "alwayson_scripts"}
    without = requests.post(url + made["endpoint"].lstrip("/"), json={**plain, "save_images": False}, timeout=120)
    assert not np.array_equal(pixels(without.json()["images"][0]), pixels(answer.json()["images"][0]))
