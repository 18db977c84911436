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
