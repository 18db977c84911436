"""The ControlNet / IP-Adapter panel as a person uses it, in headless Chromium: open it, enable a unit,
draw on a new canvas with the mouse, preview the map, generate; and the sliders follow the preprocessor.
Screenshots go under KIRI_SHOTS (default: the test's tmp folder) to be looked at."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image

import controlnet_files


@pytest.fixture(scope="module")
def cn_server(models_dir, tmp_path_factory):
    """The app on the tiny models plus a tiny ControlNet made from tiny-sd's UNet (models/ControlNet/tiny-cn):
    the shared models folder is linked, not changed."""
    from conftest import serve_kiri

    root = tmp_path_factory.mktemp("cn_models")
    for child in models_dir.iterdir():
        (root / child.name).symlink_to(child, target_is_directory=child.is_dir())
    controlnet_files.make_controlnet(models_dir / "checkpoints" / "tiny-sd", root / "ControlNet" / "tiny-cn")
    yield from serve_kiri(root, tmp_path_factory, name="cn_outputs")


def _shots(tmp_path) -> Path:
    folder = Path(os.environ.get("KIRI_SHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _open_unit(browser, url):
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(url)
    page.locator("#txt2img-generate").wait_for(timeout=60_000)
    page.locator("#txt2img-controlnet").get_by_text("ControlNet / IP-Adapter").first.click()
    page.locator("#txt2img-cn0-enabled").wait_for(state="visible", timeout=10_000)
    return page


def _pick(page, elem_id: str, option: str) -> None:
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def _wait_for_result(page, prefix: str) -> None:
    """Until the Parameters show the result; an error toast fails at once, with its words."""
    page.wait_for_function(f"document.querySelector('#{prefix}-infotext textarea').value.includes('Seed:')"
                           " || !!document.querySelector('.toast-body.error')", timeout=120_000)
    error = page.locator(".toast-body.error")
    assert not error.count(), error.first.inner_text()


def test_draw_a_scribble_preview_it_and_generate(cn_server, browser, tmp_path):
    page = _open_unit(browser, cn_server["url"])
    page.locator("#txt2img-prompt textarea").fill("a red circle")
    page.locator("#txt2img-cn0-new-canvas").click()
    # the canvas is the tab's size (64 x 64 here), white, and the preprocessor turned to "invert"
    page.wait_for_function("document.querySelector('#txt2img-cn0-module input').value === 'invert'", timeout=10_000)
    assert page.locator("#txt2img-cn0-enabled input").is_checked()
    editor = page.locator("#txt2img-cn0-image")
    canvas = editor.locator("canvas").first
    canvas.wait_for(state="visible", timeout=10_000)
    page.wait_for_timeout(800)  # the editor takes the new page in
    brush = editor.get_by_role("button", name="Brush")
    if brush.count():
        brush.first.click()
    box = canvas.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    # an outline, as a person draws a shape to be filled: one closed stroke around the middle
    corners = [(cx - 50, cy - 40), (cx + 50, cy - 40), (cx + 50, cy + 40), (cx - 50, cy + 40), (cx - 50, cy - 40)]
    page.mouse.move(*corners[0])
    page.mouse.down()
    for corner in corners[1:]:
        page.mouse.move(*corner, steps=15)
    page.mouse.up()
    page.wait_for_timeout(500)
    from webui.engine import controlnet

    (model,) = controlnet.list_models(cn_server["engine"].catalog)
    _pick(page, "txt2img-cn0-model", model["title"])
    page.locator("#txt2img-cn0-preview-button").click()
    page.locator("#txt2img-cn0-preview img").first.wait_for(state="visible", timeout=30_000)
    shot = _shots(tmp_path) / "controlnet-panel.png"
    page.screenshot(path=str(shot), full_page=False)
    # the map: a black page (the white canvas inverted) with the stroke white on it
    src = page.locator("#txt2img-cn0-preview img").first.get_attribute("src")
    shown = Image.open(io.BytesIO(page.request.get(src).body())).convert("L")
    white = sum(1 for v in shown.getdata() if v > 200) / (shown.width * shown.height)
    assert 0.003 < white < 0.3, f"{white:.1%} of the map is white"
    assert shown.getpixel((0, 0)) < 50 and shown.getpixel((shown.width - 1, shown.height - 1)) < 50
    steps = page.locator("#txt2img-steps input[type=number]")
    steps.fill("2")
    steps.press("Enter")
    page.locator("#txt2img-generate").click()
    _wait_for_result(page, "txt2img")
    text = page.locator("#txt2img-infotext textarea").input_value()
    assert 'ControlNet 0: "Module: invert' in text, text
    assert page.locator("#txt2img-gallery img").first.is_visible()
    page.locator("#txt2img-gallery").scroll_into_view_if_needed()
    page.screenshot(path=str(_shots(tmp_path) / "controlnet-generated.png"))
    page.close()


def test_preprocessor_sets_the_threshold_sliders(cn_server, browser):
    from webui.engine.controlnet.preprocess import Preprocessors, builtin_preprocessors

    canny = Preprocessors(builtin_preprocessors()).get("canny")
    assert (canny.threshold_a.name, canny.threshold_b.name) == ("Low Threshold", "High Threshold")
    page = _open_unit(browser, cn_server["url"])
    assert not page.locator("#txt2img-cn0-threshold-a").is_visible()  # "none" has no thresholds
    _pick(page, "txt2img-cn0-module", "canny")
    low = page.locator("#txt2img-cn0-threshold-a")
    low.wait_for(state="visible", timeout=10_000)
    assert "Low Threshold" in low.inner_text()
    assert "High Threshold" in page.locator("#txt2img-cn0-threshold-b").inner_text()
    assert page.locator("#txt2img-cn0-threshold-a input[type=number]").input_value() == f"{canny.threshold_a.value:g}"
    assert page.locator("#txt2img-cn0-processor-res").is_visible()
    _pick(page, "txt2img-cn0-module", "none")  # and they go again with a module that has none
    low.wait_for(state="hidden", timeout=10_000)
    page.close()


def test_img2img_unit_on_the_init_image_over_the_api(cn_server, tmp_path):
    """Image to image's /img2img endpoint takes the units too: one that uses the init image (no picture of its own)."""
    from gradio_client import Client, handle_file

    from webui.engine import controlnet

    path = tmp_path / "photo.png"
    Image.new("RGB", (64, 64), (200, 40, 40)).save(path)
    (model,) = controlnet.list_models(cn_server["engine"].catalog)
    client = Client(cn_server["url"], verbose=False)
    gallery, infotext, _ = client.predict(
        mode="img2img", prompt="a red square", negative_prompt="", init_image=handle_file(str(path)), editor=None,
        mask_upload=None, outpaint_image=None, left=0, right=0, up=0, down=0, mask_blur=4, invert="Inpaint masked",
        fill="original", area="Whole picture", padding=32, resize_mode="Just resize", strength=0.5, sampler_name="Euler",
        scheduler="Automatic", steps=2, cfg_scale=7, seed=3, width=64, height=64, batch_size=1, batch_count=1, cn0_enabled=True, cn0_use_init=True, cn0_module="canny", cn0_model=model["title"],
        cn0_threshold_a=50, cn0_threshold_b=120, api_name="/img2img")
    assert len(gallery) == 1
    assert 'ControlNet 0: "Module: canny, Model: ' + model["title"] in infotext
    assert "Threshold A: 50, Threshold B: 120" in infotext


def test_reproduce_from_the_library_sets_the_unit_and_generates_the_same_pixels(cn_server, browser):
    """A picture made over the API with a ControlNet unit: the Library's Reproduce sets Text to image's unit
    (enabled, its kept control picture, module, model), and Generate there gives the same pixels."""
    import base64

    import numpy as np
    import requests
    from PIL import ImageDraw

    from test_browser_library import first_result_pixels, open_found, reproduce_into

    url = cn_server["url"]
    control = Image.new("RGB", (64, 64))
    ImageDraw.Draw(control).ellipse((12, 12, 52, 52), outline="white", width=3)
    buffer = io.BytesIO()
    control.save(buffer, format="PNG")
    unit = {"image": base64.b64encode(buffer.getvalue()).decode(), "module": "none", "model": "tiny-cn", "weight": 0.9}
    answer = requests.post(url + "sdapi/v1/txt2img", timeout=120, json={
        "prompt": "a controlled copper moon", "steps": 3, "width": 64, "height": 64, "seed": 606, "cfg_scale": 5,
        "sampler_name": "Euler", "save_images": True, "override_settings": {"samples_save": True},
        "alwayson_scripts": {"controlnet": {"args": [unit]}}})
    assert answer.status_code == 200, answer.text
    made = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer.json()["images"][0]))).convert("RGB"))
    page = open_found(browser, url, "copper moon", "ControlNet 0 image hash")
    reproduce_into(page, "txt2img", "a controlled copper moon")
    page.locator("#txt2img-controlnet").get_by_text("ControlNet / IP-Adapter").first.click()
    page.locator("#txt2img-cn0-enabled").wait_for(state="visible", timeout=10_000)
    assert page.locator("#txt2img-cn0-enabled input").is_checked()
    assert page.locator("#txt2img-cn0-module input").input_value() == "none"
    assert page.locator("#txt2img-cn0-model input").input_value().startswith("tiny-cn [")  # its title shows
    assert page.locator("#library-status").inner_text().strip() == ""
    page.locator("#txt2img-generate").click()
    _wait_for_result(page, "txt2img")
    assert np.array_equal(first_result_pixels(page, url, "txt2img"), made)
    page.close()
