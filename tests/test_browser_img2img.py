"""Inpainting as a person does it, in headless Chromium: upload, paint a mask stroke, generate."""

from __future__ import annotations

import pytest
from PIL import Image

from test_browser_first_hour import upload_to_inpaint


def test_paint_a_mask_and_inpaint(kiri_server, browser, tmp_path):
    path = tmp_path / "photo.png"
    Image.new("RGB", (64, 64), (30, 90, 200)).save(path)
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.goto(kiri_server["url"])
    page.get_by_role("tab", name="Image to image / Inpaint", exact=True).first.click()
    page.locator("#img2img-prompt textarea").fill("a red square")
    page.get_by_role("tab", name="Inpaint", exact=True).first.click()
    editor, canvas = upload_to_inpaint(page, path, tmp_path)  # and the brush fitted before painting
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


def send_to(page, prefix: str, target: str) -> None:
    """The output's "Send to" menu: pick the target, press the button."""
    page.locator(f"#{prefix}-send-to input").click()
    page.get_by_role("option", name=target, exact=True).click()
    page.locator(f"#{prefix}-send").click()


def test_send_a_generated_image_to_image_to_image(kiri_server, browser):
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.goto(kiri_server["url"])
    page.get_by_label("Prompt", exact=True).first.fill("a blue square")
    page.locator("#txt2img-generate").click()
    page.wait_for_function("document.querySelector('#txt2img-infotext textarea').value.includes('Seed:')", timeout=120_000)
    send_to(page, "txt2img", "Image to image")
    page.locator("#img2img-image img").first.wait_for(state="visible", timeout=30_000)
    assert page.locator("#img2img-prompt textarea").input_value() == "a blue square"
    steps = page.locator("#img2img-steps input[type=number]")
    steps.fill("2")
    steps.press("Enter")
    page.locator("#img2img-generate").click()
    page.wait_for_function("document.querySelector('#img2img-infotext textarea').value.includes('Denoising strength')",
                           timeout=120_000)
    assert "Masked content" not in page.locator("#img2img-infotext textarea").input_value()
    page.get_by_role("tab", name="Text to image", exact=True).first.click()
    send_to(page, "txt2img", "Inpaint")
    page.locator("#inpaint-editor canvas").first.wait_for(state="visible", timeout=30_000)
    page.close()


def test_img2img_api_name_and_clear_errors(kiri_server, tmp_path):
    """The tab's /img2img endpoint from gradio_client: plain image to image, and a refused upload."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    path = tmp_path / "photo.png"
    Image.new("RGB", (80, 64), (200, 40, 40)).save(path)
    client = Client(kiri_server["url"], verbose=False)
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert "/img2img" in endpoints
    args = dict(mode="img2img", prompt="a red square", negative_prompt="", init_image=handle_file(str(path)), editor=None,
                mask_upload=None, outpaint_image=None, left=0, right=0, up=0, down=0, mask_blur=4,
                invert="Inpaint masked", fill="original", area="Whole picture", padding=32,
                resize_mode="Just resize", strength=0.5, sampler_name="Euler", scheduler="Automatic", steps=2,
                cfg_scale=7, seed=3, width=64, height=64, batch_size=1, batch_count=1)
    gallery, infotext, status = client.predict(**args, api_name="/img2img")
    assert len(gallery) == 1 and "Denoising strength: 0.5" in infotext
    with pytest.raises(AppError, match="paint over the part"):
        client.predict(**{**args, "mode": "inpaint", "editor": {"background": handle_file(str(path)), "layers": [],
                                                                   "composite": None}}, api_name="/img2img")
    gallery, infotext, _ = client.predict(**{**args, "mode": "outpaint", "init_image": None,
                                             "outpaint_image": handle_file(str(path)), "right": 16, "fill": "fill"},
                                          api_name="/img2img")
    item = gallery[0]["image"] if isinstance(gallery[0], dict) else gallery[0][0]
    with Image.open(item if isinstance(item, str) else item["path"]) as out:
        assert out.size == (96, 64)
        # the original pixels are kept, but for the feathered edge (mask blur 4) next to the new area
        assert out.crop((0, 0, 64, 64)).tobytes() == Image.open(path).convert("RGB").crop((0, 0, 64, 64)).tobytes()
    assert "Inpaint area: Only masked" in infotext
