"""The Detailer panel in headless Chromium: enable a unit, generate, and see the detailed picture
beside the first (issue 28)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def ad_ui_server(models_dir, tmp_path_factory):
    """The served app on tiny-sd and a tiny CLIPSeg (the detailer's words need a segmenter)."""
    import tiny_segmenters
    from conftest import serve_kiri

    root = tmp_path_factory.mktemp("ad_ui_models")
    (root / "checkpoints").mkdir()
    (root / "checkpoints" / "tiny-sd").symlink_to(models_dir / "checkpoints" / "tiny-sd")
    tiny_segmenters.make_tiny_clipseg(root / "segmentation" / "tiny-clipseg")
    yield from serve_kiri(root, tmp_path_factory, "ad_ui_outputs")


def test_enable_a_detailer_unit_and_see_before_and_after(ad_ui_server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.goto(ad_ui_server["url"])
    page.locator("#txt2img-prompt textarea").fill("a red circle")
    steps = page.locator("#txt2img-steps input[type=number]")
    steps.fill("2")
    steps.press("Enter")
    page.locator("#txt2img-detailer").get_by_text("Detailer", exact=True).first.click()
    page.locator("#txt2img-ad0-enabled input").check()
    page.locator("#txt2img-ad0-find textarea, #txt2img-ad0-find input").first.fill("circle")
    confidence = page.locator("#txt2img-ad0-confidence input[type=number]")
    confidence.fill("0")  # the tiny segmenter's mask is then the whole picture: one region
    confidence.press("Enter")
    page.locator("#txt2img-generate").click()
    page.wait_for_function("document.querySelector('#txt2img-infotext textarea').value.includes('ADetailer')",
                           timeout=120_000)
    text = page.locator("#txt2img-infotext textarea").input_value()
    assert "ADetailer model: circle" in text and "ADetailer regions: 1" in text
    thumbnails = page.locator("#txt2img-gallery .thumbnail-item")
    thumbnails.nth(1).wait_for(state="visible", timeout=30_000)
    assert thumbnails.count() == 2  # the detailed picture, then the main pass
    page.screenshot(path=str(tmp_path / "detailed.png"))
    page.close()


def test_png_info_sends_the_adetailer_units_to_the_panel(ad_ui_server, browser, tmp_path):
    from PIL import Image

    from webui.engine.core.infotext import pnginfo_for

    text = ("a red circle\nSteps: 2, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 64x64, ADetailer model: the star, "
            "ADetailer prompt: \"a sharp star, red\", ADetailer denoising strength: 0.55, ADetailer model 2nd: hand, "
            "ADetailer version: 24.11.1")
    path = tmp_path / "detailed.png"
    Image.new("RGB", (64, 64), "white").save(path, pnginfo=pnginfo_for(text))
    page = browser.new_page(viewport={"width": 1600, "height": 900})
    page.goto(ad_ui_server["url"])
    page.get_by_role("tab", name="PNG info", exact=True).first.click()
    page.locator("#pnginfo-image input[type=file]").set_input_files(str(path))
    page.wait_for_function("document.querySelector('#pnginfo-text textarea').value.includes('ADetailer')", timeout=30_000)
    page.locator("#pnginfo-send").click()
    page.wait_for_function("document.querySelector('#txt2img-prompt textarea').value === 'a red circle'", timeout=10_000)
    page.locator("#txt2img-detailer").get_by_text("Detailer", exact=True).first.click()
    assert page.locator("#txt2img-ad0-enabled input").is_checked()
    assert page.locator("#txt2img-ad0-find textarea, #txt2img-ad0-find input").first.input_value() == "the star"
    assert page.locator("#txt2img-ad0-prompt textarea").input_value() == "a sharp star, red"
    page.close()
