"""Segmentation as a person does it, in headless Chromium: upload a picture, click an object, send
the mask to Inpaint and generate there."""

from __future__ import annotations

import numpy as np
from PIL import Image

from tools import kiri_world as kw
from webui.engine.segment.classic import flood_fill

SCALE = 4  # the 64 px scene shown at 256 px, so a click lands well inside the object


def test_click_an_object_and_send_its_mask_to_inpaint(kiri_server, browser, tmp_path):
    scene = kw.scene_from_parts([("large", "red", "square", "left")], ("blue",))
    picture = Image.fromarray(kw.render(scene)).resize((64 * SCALE, 64 * SCALE), Image.NEAREST)
    path = tmp_path / "scene.png"
    picture.save(path)
    obj = scene.objects[0]
    page = browser.new_page(viewport={"width": 1600, "height": 1100})
    page.goto(kiri_server["url"])
    page.get_by_role("tab", name="Segmentation", exact=True).first.click()
    page.locator("#segment-image input[type=file]").first.set_input_files(str(path))
    shown = page.locator("#segment-image img").first
    shown.wait_for(state="visible", timeout=30_000)
    page.wait_for_timeout(500)
    box = shown.bounding_box()
    # the image keeps its aspect ratio inside the element: find the drawn square, then the object's centre in it
    side = min(box["width"], box["height"])
    left = box["x"] + (box["width"] - side) / 2
    top = box["y"] + (box["height"] - side) / 2
    page.mouse.click(left + side * obj.cx / 64, top + side * obj.cy / 64)
    page.locator("#segment-mask img").first.wait_for(state="visible", timeout=60_000)
    page.wait_for_function("document.querySelector('#segment-status')?.innerText.includes('flood-fill')", timeout=30_000)
    page.screenshot(path=str(tmp_path / "segmented.png"))
    page.locator("#segment-send-inpaint").click()
    page.locator("#inpaint-mask img").first.wait_for(state="visible", timeout=30_000)
    page.locator("#inpaint-editor canvas").first.wait_for(state="visible", timeout=30_000)
    # the mask that arrived is the flood fill of the clicked square, pixel for pixel
    src = page.locator("#inpaint-mask img").first.get_attribute("src")
    import base64
    import io
    import urllib.request

    if src.startswith("data:"):
        raw = base64.b64decode(src.split(",", 1)[1])
    else:
        raw = urllib.request.urlopen(src if src.startswith("http") else kiri_server["url"].rstrip("/") + src).read()
    mask = np.asarray(Image.open(io.BytesIO(raw)).convert("L")) > 127
    truth = np.asarray(Image.fromarray(kw.shape_mask(obj.shape, obj.cx, obj.cy, obj.radius)).resize(
        (64 * SCALE, 64 * SCALE), Image.NEAREST)) > 127
    expected = flood_fill(picture, [(obj.cx * SCALE, obj.cy * SCALE, 1)], 0.5)
    assert np.array_equal(mask, expected)
    # and it is the square (the drawn truth counts anti-aliased edge pixels by coverage: about 0.85)
    assert mask.shape == truth.shape and (mask & truth).sum() / (mask | truth).sum() > 0.8
    page.locator("#img2img-prompt textarea").fill("a green square")
    steps = page.locator("#img2img-steps input[type=number]")
    steps.fill("2")
    steps.press("Enter")
    page.locator("#img2img-generate").click()
    page.wait_for_function("document.querySelector('#img2img-infotext textarea').value.includes('Masked content')",
                           timeout=120_000)
    page.screenshot(path=str(tmp_path / "inpainted.png"))
    page.close()


def test_a_picture_sent_in_from_another_tab_clears_the_old_masks(kiri_server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(kiri_server["url"])
    page.locator("#txt2img-prompt textarea").fill("a red circle")
    steps = page.locator("#txt2img-steps input[type=number]")
    steps.fill("2")
    steps.press("Enter")
    page.locator("#txt2img-generate").click()
    page.wait_for_function("document.querySelector('#txt2img-infotext textarea').value.includes('Steps: 2')",
                           timeout=120_000)

    def send_to_segmentation():
        page.get_by_role("tab", name="Text to image", exact=True).first.click()
        page.locator("#txt2img-send-to input").click()
        page.get_by_role("option", name="Segmentation", exact=True).click()
        page.locator("#txt2img-send").click()
        page.locator("#segment-image img").first.wait_for(state="visible", timeout=30_000)
        page.wait_for_timeout(500)

    send_to_segmentation()
    shown = page.locator("#segment-image img").first.bounding_box()
    page.mouse.click(shown["x"] + shown["width"] / 2, shown["y"] + shown["height"] / 2)
    page.locator("#segment-mask img").first.wait_for(state="visible", timeout=60_000)
    assert page.locator("#segment-gallery img").count() > 0
    send_to_segmentation()
    page.wait_for_function("!document.querySelector('#segment-mask img')", timeout=30_000)
    page.screenshot(path=str(tmp_path / "segment-fresh.png"))
    assert page.locator("#segment-gallery img").count() == 0
    assert page.locator("#segment-status").inner_text().strip() == ""
    page.close()
