"""A new user's first hour (issue 25), in headless Chromium: the inpaint brush, following and
interrupting a run, the keyboard, the phone layout and the empty output area. Each test saves its
screenshots under KIRI_SHOTS (default: the test's tmp folder) to be looked at."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from webui.engine.core.addons import Addon, AddonSpec

BLUE = (30, 90, 200)


def _shots(tmp_path) -> Path:
    folder = Path(os.environ.get("KIRI_SHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _open(browser, url, width=1440, height=900):
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(url)
    page.locator("#txt2img-generate").wait_for(timeout=60_000)
    return page


def test_editor_mask_is_the_painted_area_whatever_its_opacity():
    from webui.ui.img2img import MASK_COLOR, editor_mask

    layer = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    layer.paste((255, 45, 120, round(255 * MASK_COLOR[1])), (10, 10, 20, 20))
    mask = editor_mask({"background": Image.new("RGB", (64, 64), BLUE), "layers": [layer], "composite": None})
    assert mask.getbbox() == (10, 10, 20, 20) and mask.getextrema() == (0, 255)


@pytest.mark.parametrize("side", [256, 64])
def test_inpaint_brush_is_a_tenth_of_the_picture_and_shows_it(kiri_server, browser, tmp_path, side):
    """The page sizes the brush to each upload: a stroke about a tenth of the side, small pictures too."""
    path = tmp_path / "blue.png"
    Image.new("RGB", (side, side), BLUE).save(path)
    page = _open(browser, kiri_server["url"])
    page.get_by_role("tab", name="Image to image / Inpaint", exact=True).first.click()
    page.get_by_role("tab", name="Inpaint", exact=True).first.click()
    editor, canvas = upload_to_inpaint(page, path, tmp_path)
    brush = editor.get_by_role("button", name="Brush")
    if brush.count():
        brush.first.click()
    box = canvas.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx + 1, cy, steps=2)
    page.mouse.up()
    page.mouse.move(box["x"] + box["width"] - 2, box["y"] + 2)  # the brush cursor away from the dot
    page.wait_for_timeout(500)
    shot = _shots(tmp_path) / f"inpaint-brush-{side}.png"
    editor.screenshot(path=str(shot))
    image = Image.open(shot).convert("RGB")
    offset = (cx - editor.bounding_box()["x"], cy - editor.bounding_box()["y"])
    row = round(offset[1])
    # the picture's extent on that row (blue), and the dot's (blue tinted by the mask colour)
    blue = [x for x in range(image.width) if _near(image.getpixel((x, row)), BLUE)]
    tinted = [x for x in range(image.width) if _tinted(image.getpixel((x, row)))]
    assert blue and tinted, "neither the picture nor the stroke is on screen"
    picture_width = max(blue + tinted) - min(blue + tinted) + 1
    ratio = (max(tinted) - min(tinted) + 1) / picture_width
    assert 0.04 <= ratio <= 0.2, f"the brush dot spans {ratio:.0%} of the picture's width"
    r, g, b = image.getpixel((round(offset[0]), row))
    assert b > 100 and r > BLUE[0] + 40, f"the mask hides the picture under it: {(r, g, b)}"
    page.close()


def upload_to_inpaint(page, path, tmp_path):
    """Upload `path` into the Inpaint editor (on its tab) as a person does, and wait until the page
    script has fitted the brush to it and closed its popover: (the editor, its canvas)."""
    editor = page.locator("#inpaint-editor")
    # the tab mounts the editor lazily: a file given before it shows its empty canvas can be lost
    canvas = editor.locator("canvas").first
    canvas.wait_for(state="visible", timeout=30_000)
    editor.get_by_text("Upload an image").first.wait_for(timeout=30_000)
    page.wait_for_timeout(500)
    for attempt in range(3):  # and on a loaded machine it has still dropped one once: upload again
        editor.locator("input[type=file]").first.set_input_files(str(path))
        if _wait_for_picture(editor, tmp_path, timeout_s=10.0):
            break
    else:
        raise AssertionError("the uploaded picture never appeared in the editor")
    # the page script has set the editor's Brush Size for this picture and closed its popover
    page.locator("#inpaint-editor[data-kiri-brush]").wait_for(state="attached", timeout=30_000)
    page.wait_for_function("!document.querySelector('#inpaint-editor input[type=range]')", timeout=10_000)
    return editor, canvas


def _wait_for_picture(editor, tmp_path, timeout_s: float = 30.0) -> bool:
    """Whether the editor shows the uploaded (blue) picture within `timeout_s`."""
    import time

    deadline = time.monotonic() + timeout_s
    shot = tmp_path / "waiting.png"
    while time.monotonic() < deadline:
        editor.screenshot(path=str(shot))
        image = Image.open(shot).convert("RGB")
        if any(_near(image.getpixel((x, image.height // 2)), BLUE) for x in range(0, image.width, 4)):
            return True
        time.sleep(0.25)
    return False


def _near(pixel, colour, tolerance=12) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, colour))


def _tinted(pixel) -> bool:
    """Blue seen through the half-transparent mask colour (not blue, not the grey page around)."""
    r, g, b = pixel
    return r > BLUE[0] + 40 and b > 100 and g < 150 and not _near(pixel, BLUE)


def test_follow_and_interrupt_a_run_from_the_keyboard(kiri_server, browser, tmp_path):
    """Ctrl+Enter starts, the live preview stays visible all along (no overlay over it) with a thin
    progress strip under it, Escape interrupts, and what was made stays on screen."""
    engine = kiri_server["engine"]
    engine.settings.preview_every = 1
    # Pace the steps (0.1 s each, on by default while this test runs) through the add-on seam, and hold
    # the run after its 40th step until Escape is pressed, so it cannot finish first on a fast machine, nor
    # on a loaded one whose first preview shows late (a full run once read no "Interrupted" after Escape).
    pacing = {"on": True}
    pressed = threading.Event()

    class Pace(Addon):
        def on_step(self, state):
            time.sleep(0.1)
            if state.step >= 40:
                pressed.wait(120)

    engine.addons.register(AddonSpec("test-pace", lambda settings: Pace() if settings else None, (), "test",
                                     default=lambda settings: pacing["on"]), override=True)
    page = _open(browser, kiri_server["url"])
    try:
        page.locator("#txt2img-prompt textarea").fill("a small red circle on the left, blue background")
        steps = page.locator("#txt2img-steps input[type=number]")
        steps.fill("150")
        steps.press("Enter")
        page.locator("#txt2img-prompt textarea").press("Control+Enter")
        page.locator("#txt2img-status progress").wait_for(timeout=60_000)
        page.locator("#txt2img-gallery img").first.wait_for(state="visible", timeout=60_000)
        seen = []
        for _ in range(6):
            page.wait_for_timeout(250)
            seen.append(page.evaluate("""() => {
                const img = document.querySelector('#txt2img-gallery img');
                const r = img && img.getBoundingClientRect();
                if (!r || !r.width) return false;
                const top = document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2);
                return Boolean(top && (top === img || top.contains(img) || img.contains(top)));
            }"""))
        page.screenshot(path=str(_shots(tmp_path) / "live-preview.png"))
        assert all(seen), f"the live preview was covered or gone at some samples: {seen}"
        page.keyboard.press("Escape")
        pressed.set()
        page.wait_for_function("document.querySelector('#txt2img-status').innerText.includes('Interrupted at step')",
                               timeout=60_000)
        assert page.locator("#txt2img-gallery img").first.is_visible()
        page.screenshot(path=str(_shots(tmp_path) / "interrupted.png"))
    finally:
        pacing["on"] = False
        pressed.set()
        engine.interrupt(None)
        engine.settings.preview_every = 5
        page.close()


def test_shortcuts_press_the_visible_tabs_buttons(kiri_server, browser):
    """Ctrl+Enter presses the visible tab's Generate and Escape its Interrupt, on every tab that has them."""
    page = _open(browser, kiri_server["url"])
    # While recording, note which button a shortcut clicks and stop the click there: no job runs.
    page.evaluate("""() => window.addEventListener('click', (e) => {
        const b = e.target.closest('button');
        if (window.kiriRecord && b) { window.kiriPressed = b.id; e.stopPropagation(); e.preventDefault(); }
    }, true)""")
    for tab, generate, interrupt in (("Text to image", "txt2img-generate", "txt2img-interrupt"),
                                     ("Image to image / Inpaint", "img2img-generate", "img2img-interrupt"),
                                     ("Super-resolution", "sr-run", "sr-interrupt"),
                                     ("Video frames", "txt2video-generate", "txt2video-interrupt"),
                                     ("Segmentation", "segment-run", None)):
        page.get_by_role("tab", name=tab, exact=True).first.click()
        page.wait_for_timeout(300)
        for key, expected in (("Control+Enter", generate), ("Meta+Enter", generate), ("Escape", interrupt)):
            page.evaluate("window.kiriPressed = null; window.kiriRecord = true")
            page.keyboard.press(key)
            assert page.evaluate("window.kiriRecord = false, window.kiriPressed") == expected, (tab, key)
    page.close()


def test_phone_header_stacks_and_generate_stays_in_reach(kiri_server, browser, tmp_path):
    page = _open(browser, kiri_server["url"], 390, 844)
    page.wait_for_timeout(1000)
    page.screenshot(path=str(_shots(tmp_path) / "phone.png"))
    boxes = {name: page.locator(f"#{name}").bounding_box() for name in ("model-picker", "model-refresh", "model-status")}
    names = list(boxes)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not _overlap(boxes[a], boxes[b]), (a, b, boxes)
    assert boxes["model-refresh"]["width"] <= 120 and boxes["model-refresh"]["height"] <= 60, boxes["model-refresh"]
    assert boxes["model-status"]["width"] >= 200, "the status line is squeezed"
    generate = page.locator("#txt2img-generate").bounding_box()
    assert 0 <= generate["y"] and generate["y"] + generate["height"] <= 844, generate
    page.screenshot(path=str(_shots(tmp_path) / "phone.png"))
    page.close()


def _overlap(a, b) -> bool:
    return not (a["x"] + a["width"] <= b["x"] or b["x"] + b["width"] <= a["x"] or
                a["y"] + a["height"] <= b["y"] or b["y"] + b["height"] <= a["y"])


def test_empty_outputs_say_where_results_appear_and_take_no_upload(kiri_server, browser, tmp_path):
    page = _open(browser, kiri_server["url"])
    for tab, gallery in (("Text to image", "txt2img-gallery"), ("Image to image / Inpaint", "img2img-gallery"),
                         ("Super-resolution", "sr-gallery")):
        page.get_by_role("tab", name=tab, exact=True).first.click()
        page.locator(f"#{gallery}").wait_for(timeout=10_000)
        assert page.locator(f"#{gallery} input[type=file]").count() == 0, gallery
        assert page.locator(f"#{gallery}").get_by_text("Drop").count() == 0, gallery
        hint = page.evaluate(f"""() => {{
            const empty = document.querySelector('#{gallery} .empty');
            return empty ? getComputedStyle(empty, '::after').content : null; }}""")
        assert hint and "Results appear here" in hint, (gallery, hint)
        if gallery == "txt2img-gallery":
            page.screenshot(path=str(_shots(tmp_path) / "empty-output.png"))
    page.close()


def _in_view(box, height=900) -> bool:
    return box is not None and 0 <= box["y"] and box["y"] + box["height"] <= height


def test_generate_stays_in_view_on_a_wide_screen(kiri_server, browser, tmp_path):
    """1440x900: scrolled down 800 px, the visible tab's Generate is still on screen (Text to image with
    its accordions open, and Video frames, whose Generate sits level with the clip)."""
    page = _open(browser, kiri_server["url"])
    for tab, generate, accordions in (("Text to image", "txt2img-generate", ("Hires. fix", "X/Y grid")),
                                      ("Video frames", "txt2video-generate", ())):
        page.get_by_role("tab", name=tab, exact=True).first.click()
        for name in accordions:  # a longer page than the window's
            page.get_by_text(name).first.click()
        page.wait_for_timeout(500)
        page.evaluate("window.scrollTo(0, 0)")
        page.evaluate("window.scrollBy(0, 800)")
        page.wait_for_timeout(300)
        scrolled = page.evaluate("window.scrollY")
        page.screenshot(path=str(_shots(tmp_path) / f"scrolled-{generate}.png"))
        assert scrolled >= 400, f"{tab}: the page is too short to test ({scrolled} px scrolled)"
        box = page.locator(f"#{generate}").bounding_box()
        assert _in_view(box), (tab, scrolled, box)
    page.close()


def test_generate_grid_has_its_status_beside_it(kiri_server, browser, tmp_path):
    page = _open(browser, kiri_server["url"])
    page.locator("#txt2img-prompt textarea").fill("a small red circle")
    page.get_by_text("X/Y grid").first.click()
    page.locator("#xy-x-values textarea, #xy-x-values input").first.fill("Euler")
    page.locator("#xy-y-values textarea, #xy-y-values input").first.fill("1")
    page.locator("#xy-generate").click()  # one cell of one step
    page.wait_for_function("document.querySelector('#xy-status')?.innerText.includes('Grid of 1')", timeout=120_000)
    button, status = page.locator("#xy-generate").bounding_box(), page.locator("#xy-status").bounding_box()
    page.locator("#xy-generate").scroll_into_view_if_needed()
    page.screenshot(path=str(_shots(tmp_path) / "grid-status.png"))
    assert status["x"] >= button["x"] + button["width"] - 1, (button, status)  # to its right, on its row
    assert status["y"] < button["y"] + button["height"] and button["y"] < status["y"] + status["height"], (button, status)
    page.close()


def test_grid_shows_progress_without_an_overlay_and_interrupts(kiri_server, browser, tmp_path):
    """Generate grid streams like Generate: the progress strip in its status (no Gradio overlay over
    the gallery), and Interrupt stops the grid, saying where."""
    engine = kiri_server["engine"]
    page = _open(browser, kiri_server["url"])
    try:
        page.locator("#txt2img-prompt textarea").fill("a small red circle")
        page.get_by_text("X/Y grid").first.click()
        page.locator("#xy-x-values textarea, #xy-x-values input").first.fill("Euler, DDIM, Heun")
        page.locator("#xy-y-values textarea, #xy-y-values input").first.fill("150, 149")  # the Y axis is Steps
        page.locator("#xy-generate").click()  # 6 cells of about 150 steps: long past the Interrupt below
        page.locator("#xy-status progress").wait_for(timeout=60_000)
        assert not _overlaid(page, "#txt2img-gallery")  # no Gradio overlay over the results
        page.locator("#txt2img-interrupt").click()
        page.wait_for_function("document.querySelector('#xy-status').innerText.includes('Interrupted at step')",
                               timeout=60_000)
        page.screenshot(path=str(_shots(tmp_path) / "grid-interrupted.png"))
    finally:
        engine.interrupt(None)
        page.close()


def _overlaid(page, selector: str) -> bool:
    """Whether Gradio's progress overlay (its status tracker's timer/progress text) shows over `selector`."""
    page.wait_for_timeout(600)  # the overlay's timer appears within a few frames of the job starting
    return page.evaluate("""(sel) => [...document.querySelectorAll(sel + ' [data-testid="status-tracker"]')]
        .filter((t) => getComputedStyle(t).opacity !== '0' && getComputedStyle(t).display !== 'none')
        .some((t) => [...t.querySelectorAll('*')].some((e) => e.getBoundingClientRect().width > 0
            && ['meta-text', 'meta-text-center', 'progress-text', 'timer', 'eta-bar'].some((c) => e.classList.contains(c))))""",
                         selector)
