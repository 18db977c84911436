"""The ControlNet / IP-Adapter panel's mapping of widget values onto the add-ons' unit dicts (no browser)."""

from __future__ import annotations

import gradio as gr
from PIL import Image

from webui.engine.core.infotext import infotext_to_request_fields, parse_infotext
from webui.ui import controlnet as panel_ui


def _values(index: int, **kw) -> dict:
    base = dict(enabled=True, image=None, use_init=False, module="canny", model="kiri-outline-controlnet", weight=0.8,
                guidance_start=0.1, guidance_end=0.9, control_mode="ControlNet is more important",
                resize_mode="Just Resize", pixel_perfect=True, processor_res=256, threshold_a=50, threshold_b=150)
    base.update(kw)
    return {f"cn{index}_{k}": v for k, v in base.items()}


def test_pop_addons_splits_units_and_leaves_out_disabled_ones(engine):
    with gr.Blocks():
        picker = gr.Dropdown(["tiny-sd"], value=None)
        width, height = gr.Slider(8, 1024, value=64), gr.Slider(8, 1024, value=64)
        panel = panel_ui.render(engine, "t", picker, size=(width, height))
    assert len(panel.units) >= 3
    assert {"cn0_image", "cn2_threshold_b"} <= set(panel.inputs())
    drawing = Image.new("RGB", (64, 64), "white")
    settings = {"steps": 20, **_values(0, image={"background": drawing, "layers": [], "composite": drawing}),
                **_values(1, enabled=False), **_values(2, module="ip-adapter_clip_sd15", model="ip-tiny", image=drawing)}
    addons = panel.pop_addons(settings)
    assert settings == {"steps": 20}  # every panel value popped, the rest left for request_fields
    assert set(addons) == {"controlnet", "ip_adapter"}
    (unit,) = addons["controlnet"]
    assert unit["module"] == "canny" and unit["model"] == "kiri-outline-controlnet" and unit["weight"] == 0.8
    assert (unit["guidance_start"], unit["guidance_end"], unit["processor_res"]) == (0.1, 0.9, 256)
    assert unit["control_mode"] == "ControlNet is more important" and unit["resize_mode"] == "Just Resize"
    assert unit["pixel_perfect"] is True and unit["image"].size == (64, 64)
    assert (unit["threshold_a"], unit["threshold_b"]) == (50, 150)
    (ip,) = addons["ip_adapter"]
    assert ip["module"] == "ip-adapter_clip_sd15" and ip["model"] == "ip-tiny"
    # sliders the module does not have (hidden in the panel) go as -1, the engine's "module default"
    assert (ip["processor_res"], ip["threshold_a"], ip["threshold_b"]) == (-1, -1, -1)

    only_disabled = {**_values(0, enabled=False), **_values(1, enabled=False), **_values(2, enabled=False)}
    assert panel.pop_addons(only_disabled) == {} and only_disabled == {}


def test_img2img_use_init_image_sends_no_picture(engine):
    with gr.Blocks():
        picker = gr.Dropdown(["tiny-sd"], value=None)
        init = gr.Image()
        panel = panel_ui.render(engine, "i", picker, init_image=init)
    assert "cn0_use_init" in panel.inputs()
    drawing = Image.new("RGB", (32, 32), "white")
    settings = {**_values(0, image=drawing, use_init=True), **_values(1, enabled=False), **_values(2, enabled=False)}
    assert panel.pop_addons(settings)["controlnet"][0]["image"] is None


def test_unit_image_flattens_strokes_on_white_and_is_none_when_empty():
    empty = Image.new("RGBA", (20, 10), (0, 0, 0, 0))
    assert panel_ui.unit_image({"background": None, "layers": [empty], "composite": empty}) is None
    assert panel_ui.unit_image(None) is None
    stroke = empty.copy()
    stroke.paste((0, 0, 0, 255), (2, 2, 6, 4))
    image = panel_ui.unit_image({"background": None, "layers": [stroke], "composite": stroke})
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (255, 255, 255) and image.getpixel((3, 3)) == (0, 0, 0)


def test_new_canvas_is_white_at_the_tabs_size():
    value = panel_ui.blank_canvas(96, 64)
    assert value["background"].size == (96, 64) and value["background"].getextrema() == ((255, 255),) * 3


def test_a_controlnet_infotext_line_does_not_break_send_to():
    text = ('a red circle\nNegative prompt: blurry\nSteps: 12, Sampler: Euler, CFG scale: 6, Seed: 5, Size: 64x64, '
            'ControlNet 0: "Module: invert, Model: kiri-outline-controlnet [abcd1234], Weight: 1, Resize Mode: Crop and Resize, '
            'Guidance Start: 0, Guidance End: 1", Version: kiri')
    fields = infotext_to_request_fields(parse_infotext(text))
    assert fields["prompt"] == "a red circle" and fields["steps"] == 12 and fields["seed"] == 5
    assert (fields["width"], fields["height"]) == (64, 64) and fields["cfg_scale"] == 6


def test_models_follow_the_checkpoints_family_and_the_modules_kind(models_dir, tmp_path):
    import controlnet_files
    from webui.bootstrap import build_engine
    from webui.engine.core.devices import DeviceChoice
    from webui.engine.settings import Settings

    root = tmp_path / "models"
    root.mkdir()
    (root / "checkpoints").symlink_to(models_dir / "checkpoints", target_is_directory=True)
    controlnet_files.make_controlnet(models_dir / "checkpoints" / "tiny-sd", root / "ControlNet" / "tiny-cn")
    engine = build_engine(Settings(models_dir=root, outputs_dir=tmp_path / "out", default_model="tiny-sd"), DeviceChoice("cpu"))
    engine.catalog.scan()
    sd_title = engine.catalog.title(engine.catalog.find("tiny-sd"))
    sd3_title = engine.catalog.title(engine.catalog.find("tiny-sd3"))
    fits = panel_ui._model_update(engine, "canny", sd_title, None)
    assert fits["value"] == "tiny-cn" and [name for _, name in fits["choices"]] == ["tiny-cn"]
    other = panel_ui._model_update(engine, "canny", sd3_title, "tiny-cn")  # an SD 1.x ControlNet does not fit SD3
    assert other["choices"] == [] and other["value"] == "" and "models/ControlNet" in other["info"]
    ip = panel_ui._model_update(engine, "ip-adapter_clip_sd15", sd_title, "tiny-cn")  # IP-Adapter modules list adapters
    assert ip["choices"] == [] and "models/ipadapter" in ip["info"]
