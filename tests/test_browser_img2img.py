"""Inpainting as a person does it, in headless Chromium: upload, paint a mask stroke, generate."""

from __future__ import annotations

from PIL import Image


def test_paint_a_mask_and_inpaint(kiri_server, browser, tmp_path):
    path = tmp_path / "photo.png"
    Image.new("RGB", (64, 64), (30, 90, 200)).save(path)
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.goto(kiri_server["url"])
    page.get_by_role("tab", name="Image to image / Inpaint", exact=True).first.click()
    page.locator("#img2img-prompt textarea").fill("a red square")
    page.get_by_role("tab", name="Inpaint", exact=True).first.click()
    editor = page.locator("#inpaint-editor")
    editor.locator("input[type=file]").first.set_input_files(str(path))
    canvas = editor.locator("canvas").first
    canvas.wait_for(state="visible", timeout=30_000)
    page.wait_for_timeout(1000)
    brush = editor.get_by_role("button", name="Brush")
    if brush.count():
        brush.first.click()
    box = canvas.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx - 40, cy)
    page.mouse.down()
    for step in range(1, 11):
        page.mouse.move(cx - 40 + 8 * step, cy + step, steps=2)
    page.mouse.up()
    page.wait_for_timeout(500)
    page.screenshot(path=str(tmp_path / "painted.png"))
    steps = page.locator("#img2img-steps input[type=number]")
    steps.fill("2")
    steps.press("Enter")
    page.locator("#img2img-generate").click()
    page.wait_for_function("document.querySelector('#img2img-infotext textarea').value.includes('Masked content')",
                           timeout=120_000)
    assert page.locator("#img2img-gallery img").first.is_visible()
    text = page.locator("#img2img-infotext textarea").input_value()
    assert "Inpaint area: Whole picture" in text and "Denoising strength" in text
    page.screenshot(path=str(tmp_path / "inpainted.png"))
    page.close()
