"""The UI as a person uses it, in headless Chromium: type a prompt, generate, see the image."""

from __future__ import annotations

from pathlib import Path


def test_generate_from_the_browser(kiri_server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(kiri_server["url"])
    page.get_by_label("Prompt", exact=True).fill("a small red circle on the left, blue background")
    page.locator("#txt2img-generate").click()
    page.wait_for_function("document.querySelector('#txt2img-infotext textarea').value.includes('Seed:')",
                           timeout=120_000)
    assert page.locator("#txt2img-gallery img").first.is_visible()
    saved = list(Path(kiri_server["outputs"]).rglob("*.png"))
    assert saved, "the generated image was not saved to outputs/"
    page.screenshot(path=str(tmp_path / "txt2img.png"))
    page.close()


def test_every_tab_is_listed_and_built(kiri_server, browser):
    page = browser.new_page(viewport={"width": 1600, "height": 900})
    page.goto(kiri_server["url"])
    page.get_by_role("tab", name="Text to image").wait_for(timeout=60_000)
    for name in ("Text to image", "Image to image / Inpaint", "Super-resolution", "Video frames",
                 "Segmentation", "PNG info", "Settings", "Extensions"):
        assert page.get_by_role("tab", name=name, exact=True).count() >= 1, name
    page.get_by_role("tab", name="Video frames", exact=True).first.click()
    page.locator("#txt2video-generate").wait_for(timeout=10_000)
    assert page.get_by_text("is not built yet").count() == 0
    page.get_by_role("tab", name="Extensions", exact=True).first.click()
    page.wait_for_function("document.querySelector('#extensions-table')?.innerText.includes('kiri-samplers')", timeout=10_000)
    assert page.get_by_text("Installing from the UI is off").first.is_visible()
    assert page.locator("#extensions-install").is_disabled()
    page.close()


def test_png_info_sends_parameters_to_text_to_image(kiri_server, browser, tmp_path):
    from PIL import Image

    from webui.engine.core.infotext import pnginfo_for

    text = "a green star at the top\nNegative prompt: blurry\nSteps: 7, Sampler: Euler a, CFG scale: 4.5, Seed: 777, Size: 64x64, Model: x"
    path = tmp_path / "made-by-a1111.png"
    Image.new("RGB", (64, 64), "white").save(path, pnginfo=pnginfo_for(text))

    page = browser.new_page(viewport={"width": 1600, "height": 900})
    page.goto(kiri_server["url"])
    page.get_by_role("tab", name="PNG info", exact=True).first.click()
    page.locator("#pnginfo-image input[type=file]").set_input_files(str(path))
    page.wait_for_function("document.querySelector('#pnginfo-text textarea').value.includes('green star')", timeout=30_000)
    page.locator("#pnginfo-send").click()
    prompt = page.locator("#txt2img-prompt textarea")
    prompt.wait_for(state="visible", timeout=10_000)
    page.wait_for_function("document.querySelector('#txt2img-prompt textarea').value === 'a green star at the top'", timeout=10_000)
    assert page.locator("#txt2img-negative textarea").input_value() == "blurry"
    page.close()


def test_the_titles_kanji_shows_only_where_a_font_draws_it(kiri_server, browser):
    """霧 without a CJK font would be an empty box: it is shown exactly when the browser can draw it."""
    page = browser.new_page(viewport={"width": 1200, "height": 800})
    page.goto(kiri_server["url"])
    page.wait_for_function("typeof window.kiriGlyphShown === 'function'", timeout=60_000)
    assert page.evaluate("window.kiriGlyphShown('K')")  # a Latin letter is always drawn
    assert not page.evaluate("window.kiriGlyphShown('\\uE001')")  # another private-use point: never
    drawn = page.evaluate("window.kiriGlyphShown('霧')")
    assert page.locator("#kiri-title .kiri-kanji").is_visible() == drawn
    assert "Kiri" in page.locator("#kiri-title").inner_text()
    page.close()
