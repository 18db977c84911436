"""Super-resolution as a person does it, in headless Chromium: upload, upscale, compare before/after."""

from __future__ import annotations

import numpy as np
from PIL import Image


def test_upload_upscale_and_the_slider_shows_both(kiri_server, browser, tmp_path):
    path = tmp_path / "small.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(path)
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.goto(kiri_server["url"])
    page.get_by_role("tab", name="Super-resolution", exact=True).first.click()
    page.locator("#sr-image input[type=file]").first.set_input_files(str(path))
    page.locator("#sr-image img").first.wait_for(state="visible", timeout=30_000)
    page.locator("#sr-run").click()
    page.wait_for_function("document.querySelector('#sr-infotext textarea').value.includes('Postprocess upscaler')",
                           timeout=120_000)
    text = page.locator("#sr-infotext textarea").input_value()
    assert "Postprocess upscaler: 4x-tiny-compact" in text and "Tiles: " in text
    images = page.locator("#sr-slider img")
    images.nth(1).wait_for(state="attached", timeout=30_000)
    assert images.count() >= 2  # the before and the after, one over the other
    page.screenshot(path=str(tmp_path / "upscaled.png"))
    page.close()
