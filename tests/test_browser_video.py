"""The Video frames tab in headless Chromium: a clip made from a prompt plays in the page's <video>."""

from __future__ import annotations

from pathlib import Path

import pytest

from test_browser_first_hour import _overlaid


@pytest.fixture(scope="module")
def video_server(video_models_dir, tmp_path_factory):
    from conftest import serve_kiri

    yield from serve_kiri(video_models_dir, tmp_path_factory, "video_outputs")


def _set(page, elem_id: str, value: str) -> None:
    box = page.locator(f"#{elem_id} input[type=number]").first
    box.fill(value)
    box.press("Enter")


def _video_tab(browser, url: str, height: int = 1000):
    """A page on the Video frames tab with the tiny SD 1.x model picked."""
    page = browser.new_page(viewport={"width": 1400, "height": height})
    page.goto(url)
    page.get_by_role("tab", name="Video frames", exact=True).first.click()
    model = page.locator("#video-model input")
    model.fill("tiny-sd")
    model.press("Enter")
    return page


def test_text_to_video_plays_in_the_browser(video_server, browser, tmp_path):
    page = _video_tab(browser, video_server["url"])
    page.locator("#txt2video-prompt textarea").fill("a red circle moving right, blue background")
    for elem_id, value in (("txt2video-frames", "4"), ("txt2video-width", "64"), ("txt2video-height", "64"),
                           ("txt2video-steps", "2"), ("txt2video-fps", "4"), ("txt2video-free-init", "2")):
        _set(page, elem_id, value)
    page.locator("#txt2video-seed input").fill("5")
    page.locator("#txt2video-generate").click()
    page.wait_for_function("document.querySelector('#video-infotext textarea').value.includes('Motion module')",
                           timeout=120_000)
    page.wait_for_function("(() => { const v = document.querySelector('#video-output video');"
                           " return v && v.readyState >= 1 && v.duration > 0; })()", timeout=30_000)
    duration = page.evaluate("document.querySelector('#video-output video').duration")
    assert duration > 0
    text = page.locator("#video-infotext textarea").input_value()
    assert "Frames: 4" in text and "FreeInit: 2" in text
    page.screenshot(path=str(tmp_path / "video.png"))
    page.close()


def test_text_to_video_shows_progress_without_an_overlay_and_interrupts(video_server, browser):
    """The progress strip under the clip while it runs (no Gradio overlay over the player), and
    Interrupt stops the clip, keeping what was made."""
    page = _video_tab(browser, video_server["url"])
    try:
        page.locator("#txt2video-prompt textarea").fill("a red circle moving right, blue background")
        for elem_id, value in (("txt2video-frames", "16"), ("txt2video-width", "64"), ("txt2video-height", "64"),
                               ("txt2video-steps", "150"), ("txt2video-free-init", "0")):
            _set(page, elem_id, value)
        page.locator("#txt2video-generate").click()  # 150 steps of 16 frames: long past the Interrupt below
        page.locator("#video-status progress").wait_for(timeout=120_000)
        assert not _overlaid(page, "#video-output")  # no Gradio overlay over the player
        page.locator("#txt2video-interrupt").click()
        page.wait_for_function("document.querySelector('#video-status').innerText.includes('Interrupted')",
                               timeout=120_000)
    finally:
        video_server["engine"].interrupt(None)
        page.close()


def test_an_uploaded_clip_is_interpolated_in_the_browser(video_server, browser, tmp_path):
    from video_clips import moving_square_frames, write_clip

    clip = write_clip(tmp_path / "square.mp4", moving_square_frames())
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(video_server["url"])
    page.get_by_role("tab", name="Video frames", exact=True).first.click()
    page.get_by_role("tab", name="Interpolate", exact=True).first.click()
    page.locator("#interpolate-source input[type=file]").set_input_files(str(clip))
    page.locator("#interpolate-source video").wait_for(timeout=30_000)
    page.locator("#interpolate-generate").click()
    page.wait_for_function("document.querySelector('#video-infotext textarea').value.includes('Interpolation: x2')",
                           timeout=60_000)
    page.wait_for_function("(() => { const v = document.querySelector('#video-output video');"
                           " return v && v.readyState >= 1 && v.duration > 0; })()", timeout=30_000)
    assert "Frames: 11" in page.locator("#video-infotext textarea").input_value()
    page.close()


def test_video_to_video_from_gradio_client(video_server, tmp_path):
    """The vid2vid handler by its api_name, as scripts call it: frames, fps and the consistency mode kept."""
    from gradio_client import Client, handle_file

    from video_clips import decode, moving_square_frames, write_clip

    clip = write_clip(tmp_path / "square.mp4", moving_square_frames(4))
    client = Client(video_server["url"], verbose=False)
    video, files, info, status = client.predict(
        handle_file(str(clip)), "a red square, blue background", "", 0.4, "flow", 0.5, 1, 0, None, 120, 64,
        "", "", False, "Euler", 2, 7, 3, "tiny-sd", "tiny-motion", api_name="/vid2vid")
    path = video["video"] if isinstance(video, dict) else video
    frames, fps, meta = decode(path)
    assert len(frames) == 4 and fps == 8.0 and "Consistency: flow 0.5" in info
    assert sorted(Path(f).suffix for f in files) == [".gif", ".webp", ".zip"]


def test_click_an_object_on_the_first_frame_and_repaint_only_it(video_server, browser, tmp_path):
    """Video to video with a click: the first frame appears, a click on the red square is noted in source
    pixels, and the clip comes back with the followed object's clicks in its parameters."""
    from video_clips import moving_square_frames, write_clip

    clip = write_clip(tmp_path / "square.mp4", moving_square_frames(4))
    page = _video_tab(browser, video_server["url"], height=1200)
    page.get_by_role("tab", name="Video to video", exact=True).first.click()
    page.locator("#vid2vid-source input[type=file]").set_input_files(str(clip))
    page.locator("#vid2vid-source video").wait_for(timeout=30_000)
    page.get_by_text("Repaint one object").first.click()
    shown = page.locator("#vid2vid-first-frame img")
    shown.wait_for(timeout=30_000)
    page.wait_for_timeout(500)
    box = shown.bounding_box()
    # the frame is drawn to fit its box (keeping its shape): find the drawn square of the 64 px frame
    side = min(box["width"], box["height"])
    left, top = box["x"] + (box["width"] - side) / 2, box["y"] + (box["height"] - side) / 2
    # the square of the first frame spans x 8..24, y 20..36 of 64: click its middle
    page.mouse.click(left + side * 16 / 64, top + side * 28 / 64)
    page.wait_for_function("document.querySelector('#vid2vid-clicks textarea').value.endsWith(', 1')", timeout=30_000)
    x, y, kind = (float(v) for v in page.locator("#vid2vid-clicks textarea").input_value().split(","))
    assert abs(x - 16) <= 2 and abs(y - 28) <= 2 and kind == 1
    page.locator("#vid2vid-prompt textarea").fill("a blue square")
    _set(page, "vid2vid-steps", "2")
    page.locator("#vid2vid-generate").click()
    page.wait_for_function("document.querySelector('#video-infotext textarea').value.includes('Mask points')",
                           timeout=120_000)
    assert "Frames: 4" in page.locator("#video-infotext textarea").input_value()
    page.close()


def test_a_clip_is_sent_to_video_to_video_and_interpolate(video_server, browser, tmp_path):
    page = _video_tab(browser, video_server["url"])
    page.locator("#txt2video-prompt textarea").fill("a red circle moving right, blue background")
    for elem_id, value in (("txt2video-frames", "4"), ("txt2video-width", "64"), ("txt2video-height", "64"),
                           ("txt2video-steps", "2"), ("txt2video-fps", "4")):
        _set(page, elem_id, value)
    page.locator("#txt2video-generate").click()
    page.wait_for_function("document.querySelector('#video-infotext textarea').value.includes('Motion module')",
                           timeout=120_000)
    for target, source in (("Video to video", "#vid2vid-source"), ("Interpolate", "#interpolate-source")):
        page.locator("#video-send-to input").click()
        page.get_by_role("option", name=target, exact=True).click()
        page.locator("#video-send").click()
        page.wait_for_function(f"(() => {{ const v = document.querySelector('{source} video');"
                               " return v && v.readyState >= 1 && v.duration > 0; })()", timeout=30_000)
        page.screenshot(path=str(tmp_path / f"clip-{target.split()[0].lower()}.png"))
    page.close()
