"""A creative user's first hour, in headless Chromium (issue 25, points 2, 5, 6 and 10): the X/Y grid
is what the gallery shows, every output's "Send to" menu fills the target tab, small pictures are
scaled up with clicks in image pixels, example samplers stay out of the list until enabled, and the
dark/light toggle is remembered. Screenshots go to $KIRI_SHOTS (else the test's tmp folder)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import expect

from webui.engine.core.infotext import pnginfo_for


def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("KIRI_SHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def send_to(page, prefix: str, target: str) -> None:
    page.locator(f"#{prefix}-send-to input").click()
    page.get_by_role("option", name=target, exact=True).click()
    page.locator(f"#{prefix}-send").click()


def set_number(page, selector: str, value) -> None:
    field = page.locator(f"{selector} input[type=number]")
    field.fill(str(value))
    field.press("Enter")


def fill_until_kept(page, field, value: str, tries: int = 10) -> None:
    """Fill a field that an opening accordion may still remount: on a loaded machine (CI, twice) the
    accordion's fields were mounted again just after the fill, and the typed value gave way to the
    default ("Euler, DPM++ 2M", so 4 cells). Fill, let it settle, read it back; again if it was lost."""
    for _ in range(tries):
        field.wait_for(state="visible")
        field.fill(value)
        field.press("Tab")
        page.wait_for_timeout(400)
        if field.input_value() == value:
            break
    expect(field).to_have_value(value)


def test_the_gallery_shows_and_selects_the_grid_first(kiri_server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(kiri_server["url"])
    page.locator("#txt2img-prompt textarea").fill("a red circle")
    set_number(page, "#txt2img-seed", 5)
    page.locator("#xy-grid").get_by_text("X/Y grid").first.click()
    x_values = page.locator("#xy-x-values textarea, #xy-x-values input").first
    y_values = page.locator("#xy-y-values textarea, #xy-y-values input").first
    fill_until_kept(page, x_values, "Euler, DDIM, UniPC")
    fill_until_kept(page, y_values, "1, 2")
    page.locator("#xy-generate").click()
    try:
        page.wait_for_function("document.querySelector('#txt2img-status')?.innerText.includes('Grid of 6')", timeout=180_000)
    except Exception:  # say what the page showed instead (a toast, an error in the status line)
        status = page.evaluate("() => document.querySelector('#txt2img-status')?.innerText")
        toasts = page.evaluate("() => [...document.querySelectorAll('.toast-body')].map(t => t.innerText)")
        raise AssertionError(f"no 'Grid of 6' in the status line: {status!r}; toasts: {toasts!r}") from None
    page.wait_for_timeout(500)
    page.screenshot(path=str(shots(tmp_path) / "grid.png"))
    # the large preview is the grid (wider than three 64 px cells), and its thumbnail is the selected one
    width = page.evaluate("""() => { const img = [...document.querySelectorAll('#txt2img-gallery img')]
        .find(i => i.naturalWidth && !i.closest('button.thumbnail-item')); return img ? img.naturalWidth : 0 }""")
    assert width > 3 * 64
    first_thumb = page.locator("#txt2img-gallery button.thumbnail-item").first
    assert "selected" in (first_thumb.get_attribute("class") or "")
    page.close()


def test_send_to_every_target_carries_the_picture_and_its_fields(kiri_server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(kiri_server["url"])
    page.locator("#txt2img-prompt textarea").fill("a blue square")
    page.locator("#txt2img-negative textarea").fill("blurry")
    set_number(page, "#txt2img-seed", 4242)
    set_number(page, "#txt2img-steps", 2)
    page.locator("#txt2img-sampler input").click()
    page.get_by_role("option", name="DDIM", exact=True).click()
    page.locator("#txt2img-generate").click()
    page.wait_for_function("document.querySelector('#txt2img-infotext textarea').value.includes('Seed: 4242')",
                           timeout=120_000)
    for target, shown in (("Image to image", "#img2img-image img"), ("Inpaint", "#inpaint-editor canvas"),
                          ("Outpaint", "#outpaint-image img")):
        page.get_by_role("tab", name="Text to image", exact=True).first.click()
        send_to(page, "txt2img", target)
        page.locator(shown).first.wait_for(state="visible", timeout=30_000)
        if target == "Inpaint":  # the brush fits the sent picture (a tenth of its side), as it does an upload
            side = max(int(page.locator(f"#img2img-{d} input[type=number]").input_value()) for d in ("width", "height"))
            page.locator(f'#inpaint-editor[data-kiri-brush="{max(1, round(side / 20))}"]').wait_for(state="attached",
                                                                                                   timeout=30_000)
        assert page.locator("#img2img-prompt textarea").input_value() == "a blue square"
        assert page.locator("#img2img-negative textarea").input_value() == "blurry"
        assert page.locator("#img2img-seed input").input_value() == "4242"
        assert page.locator("#img2img-sampler input").input_value() == "DDIM"
        assert page.get_by_role("tab", name=target, exact=True).first.get_attribute("aria-selected") == "true"
        page.screenshot(path=str(shots(tmp_path) / f"send-{target.replace(' ', '-').lower()}.png"))
    page.get_by_role("tab", name="Text to image", exact=True).first.click()
    send_to(page, "txt2img", "Super-resolution")
    page.locator("#sr-image img").first.wait_for(state="visible", timeout=30_000)
    page.locator("#sr-sd").get_by_text("SD upscale").first.click()  # its prompt and seed came along too
    page.locator("#sr-sd-prompt textarea").wait_for(state="visible", timeout=10_000)
    assert page.locator("#sr-sd-prompt textarea").input_value() == "a blue square"
    page.get_by_role("tab", name="Text to image", exact=True).first.click()
    send_to(page, "txt2img", "Segmentation")
    page.locator("#segment-image img").first.wait_for(state="visible", timeout=30_000)
    page.get_by_role("tab", name="Text to image", exact=True).first.click()
    send_to(page, "txt2img", "PNG info")
    page.wait_for_function("document.querySelector('#pnginfo-text textarea')?.value.includes('Seed: 4242')", timeout=30_000)
    page.screenshot(path=str(shots(tmp_path) / "send-png-info.png"))
    # and on from Image to image: its result goes to Super-resolution the same way
    page.get_by_role("tab", name="Image to image / Inpaint", exact=True).first.click()
    page.get_by_role("tab", name="Image to image", exact=True).first.click()
    set_number(page, "#img2img-steps", 2)
    page.locator("#img2img-generate").click()
    page.wait_for_function("document.querySelector('#img2img-infotext textarea').value.includes('Denoising strength')",
                           timeout=120_000)
    send_to(page, "img2img", "Segmentation")
    page.locator("#segment-image img").first.wait_for(state="visible", timeout=30_000)
    page.close()


def test_a_small_picture_fills_its_box_and_clicks_map_to_its_pixels(kiri_server, browser, tmp_path):
    from tools import kiri_world as kw

    scene = kw.scene_from_parts([("large", "red", "square", "left")], ("blue",))
    path = tmp_path / "scene64.png"
    Image.fromarray(kw.render(scene)).save(path)
    obj = scene.objects[0]
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(kiri_server["url"])
    page.get_by_role("tab", name="Segmentation", exact=True).first.click()
    page.locator("#segment-image input[type=file]").first.set_input_files(str(path))
    shown = page.locator("#segment-image img").first
    shown.wait_for(state="visible", timeout=30_000)
    page.wait_for_timeout(500)
    box = shown.bounding_box()
    side = min(box["width"], box["height"])
    assert side > 300, f"a 64 px picture should fill its box, drawn at {side:.0f} px"
    assert shown.evaluate("img => getComputedStyle(img).imageRendering") == "pixelated"
    left, top = box["x"] + (box["width"] - side) / 2, box["y"] + (box["height"] - side) / 2
    page.mouse.click(left + side / 2, top + side / 2)  # the centre: pixel (32, 32)
    page.wait_for_function("document.querySelector('#segment-clicks')?.innerText.includes('Points:')", timeout=30_000)
    text = page.locator("#segment-clicks").inner_text()
    x, y = (int(v) for v in text.split("(")[1].split(")")[0].split(","))
    assert abs(x - 32) <= 1 and abs(y - 32) <= 1, text
    page.locator("#segment-image").get_by_role("button").first  # (the clicks are kept until cleared)
    page.get_by_role("button", name="Clear clicks").first.click()
    page.wait_for_function("!document.querySelector('#segment-clicks')?.innerText.includes('Points:')", timeout=10_000)
    # away from the centre, on the object: Gradio's own mapping gave nothing here
    page.mouse.click(left + side * (obj.cx + 0.5) / 64, top + side * (obj.cy + 0.5) / 64)
    page.wait_for_function("document.querySelector('#segment-status')?.innerText.includes('mask')", timeout=60_000)
    text = page.locator("#segment-clicks").inner_text()
    x, y = (int(v) for v in text.split("(")[1].split(")")[0].split(","))
    assert abs(x - obj.cx) <= 1 and abs(y - obj.cy) <= 1, (text, obj.cx, obj.cy)
    page.screenshot(path=str(shots(tmp_path) / "segment-small-picture.png"))
    page.close()


EXAMPLES = Path(__file__).resolve().parent.parent / "extensions"
EXAMPLE_NAMES = ["example-dpmpp-2s-a", "example-euler-scheduler"]


def test_example_samplers_stay_out_of_the_lists_until_enabled(models_dir, tmp_path):
    from webui.bootstrap import build_engine
    from webui.engine.core.devices import DeviceChoice
    from webui.engine.settings import Settings

    fresh = build_engine(Settings(models_dir=models_dir, outputs_dir=tmp_path, extensions_dir=EXAMPLES), DeviceChoice("cpu"))
    names = fresh.samplers.names()
    assert "Euler Karras (example scheduler)" not in names and "DPM++ 2S a" not in names
    listed = {e.name: (e.status, e.enabled) for e in fresh.extensions.extensions}
    assert listed["example-euler-scheduler"] == ("disabled", False)  # still listed on the Extensions tab
    settings_file = tmp_path / "settings.json"
    settings = Settings(models_dir=models_dir, outputs_dir=tmp_path, extensions_dir=EXAMPLES)
    settings.enabled_extensions = ["example-euler-scheduler"]  # what the Extensions tab's Apply saves
    settings.save(settings_file)
    again = Settings(models_dir=models_dir, outputs_dir=tmp_path, extensions_dir=EXAMPLES)
    again.load_saved(settings_file)
    names = build_engine(again, DeviceChoice("cpu")).samplers.names()
    assert "Euler Karras (example scheduler)" in names and "DPM++ 2S a" not in names


def test_theme_toggle_is_remembered_and_icon_buttons_have_tooltips(kiri_server, browser, tmp_path):
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    page.goto(kiri_server["url"])
    toggle = page.locator("#kiri-theme-toggle")
    toggle.wait_for(timeout=60_000)
    assert not page.evaluate("document.body.classList.contains('dark')")
    toggle.click()
    page.wait_for_function("document.body.classList.contains('dark')", timeout=5_000)
    page.reload()
    page.locator("#kiri-theme-toggle").wait_for(timeout=60_000)
    page.wait_for_function("document.body.classList.contains('dark')", timeout=10_000)  # remembered
    background = page.evaluate("getComputedStyle(document.querySelector('gradio-app') || document.body).backgroundColor")
    page.get_by_role("tab", name="Segmentation", exact=True).first.click()
    refresh = page.locator("#segment-model-refresh")
    refresh.wait_for(timeout=10_000)
    page.wait_for_function("document.querySelector('#segment-model-refresh')?.title?.includes('segmentation')", timeout=10_000)
    assert refresh.inner_text().strip() == "↻"
    refresh.screenshot(path=str(shots(tmp_path) / "refresh-icon.png"))
    page.screenshot(path=str(shots(tmp_path) / "dark-segmentation.png"))
    page.get_by_role("tab", name="Super-resolution", exact=True).first.click()
    page.wait_for_function("document.querySelector('#sr-upscaler-refresh')?.title?.includes('upscalers')", timeout=10_000)
    page.locator("#kiri-theme-toggle").click()
    page.reload()
    page.locator("#kiri-theme-toggle").wait_for(timeout=60_000)
    page.wait_for_timeout(500)
    assert not page.evaluate("document.body.classList.contains('dark')"), "light was chosen last"
    assert background, background
    context.close()


def test_sampler_lab_has_a_plain_line_and_the_extensions_table_fits(kiri_server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(kiri_server["url"])
    page.get_by_role("tab", name="Sampler lab", exact=True).first.click()
    page.locator("#lab-plain").wait_for(timeout=10_000)
    assert "fewest steps" in page.locator("#lab-plain").inner_text()
    page.get_by_role("tab", name="Extensions", exact=True).first.click()
    page.wait_for_function("document.querySelector('#extensions-table')?.innerText.includes('kiri-samplers')", timeout=10_000)
    header = page.locator("#extensions-table th", has_text="Version").first
    assert header.evaluate("th => th.getBoundingClientRect().height") < 60  # one line, not a letter a line
    page.locator("#extensions-table").screenshot(path=str(shots(tmp_path) / "extensions-table.png"))
    page.close()


@pytest.fixture()
def own_server(models_dir, tmp_path_factory):
    """A server of its own: this test changes settings the shared one's other tests rely on."""
    from tests.conftest import serve_kiri
    yield from serve_kiri(models_dir, tmp_path_factory, name="settings-outputs")


def test_settings_are_saved_shown_after_a_reload_used_at_once_and_a_bad_one_is_refused(own_server, browser, tmp_path):
    engine = own_server["engine"]
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(own_server["url"])
    page.get_by_role("tab", name="Settings", exact=True).first.click()
    page.locator("#settings-image-format").get_by_text("webp", exact=True).click()
    set_number(page, "#settings-preview-every", 2)
    set_number(page, "#settings-max-pixels", 2048 * 2048)
    page.locator("#settings-apply").click()
    page.wait_for_function("document.querySelector('#settings-result')?.innerText.includes('Settings saved')")
    assert (engine.settings.image_format, engine.settings.preview_every, engine.settings.max_pixels) == ("webp", 2, 2048 * 2048)
    page.screenshot(path=str(shots(tmp_path) / "settings-saved.png"), full_page=True)
    # a bad value: an error naming it, nothing saved
    set_number(page, "#settings-max-output-pixels", 5)
    set_number(page, "#settings-preview-every", 7)
    page.locator("#settings-apply").click()
    page.get_by_text("max_output_pixels must be", exact=False).first.wait_for(timeout=30_000)
    page.screenshot(path=str(shots(tmp_path) / "settings-refused.png"))
    assert engine.settings.preview_every == 2 and engine.settings.max_output_pixels == 8192 * 8192
    # reload: the page shows the saved values
    page.reload()
    page.get_by_role("tab", name="Settings", exact=True).first.click()
    page.wait_for_function("document.querySelector('#settings-preview-every input')?.value === '2'", timeout=30_000)
    assert page.locator("#settings-max-pixels input").input_value() == str(2048 * 2048)
    assert page.locator("#settings-image-format input[value=webp]").is_checked()
    # the engine uses the format at once: the next picture is saved as webp
    page.get_by_role("tab", name="Text to image", exact=True).first.click()
    page.locator("#txt2img-prompt textarea").fill("a red circle")
    set_number(page, "#txt2img-steps", 2)
    page.locator("#txt2img-generate").click()
    page.wait_for_function("document.querySelector('#txt2img-infotext textarea').value.includes('Steps: 2')",
                           timeout=120_000)
    assert list(Path(own_server["outputs"]).rglob("*.webp"))
    page.close()
