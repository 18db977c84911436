"""The Library tab in headless Chromium (issue 29): search, open a picture, Reproduce fills Text to image."""

from __future__ import annotations

import pytest
import requests


def open_found(browser, url: str, words: str, shows: str):
    """A page on the Library tab with the one picture the search for `words` finds opened, its parameters
    showing `shows`. The tab may first show every picture the shared server made (other test files); the
    search's page replaces it: wait for that, not a fixed time."""
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(url)
    page.locator("#txt2img-generate").wait_for(timeout=60_000)
    page.get_by_role("tab", name="Library", exact=True).first.click()
    page.locator("#library-search textarea, #library-search input").first.fill(words)
    page.locator("#library-search-button").click()
    try:
        page.wait_for_function("document.querySelectorAll('#library-grid img').length === 1", timeout=60_000)
    except Exception:
        shown = page.locator("#library-grid img").count()
        raise AssertionError(f"the search for {words!r} should find one picture; the grid shows {shown}") from None
    page.locator("#library-grid img").first.click()
    page.wait_for_function(
        f"(document.querySelector('#library-parameters textarea') || {{}}).value?.includes({shows!r})", timeout=15_000)
    return page


def reproduce_into(page, prefix: str, prompt: str) -> None:
    """Click the opened picture's Reproduce and wait for the tab `prefix` to show its prompt."""
    page.locator("#library-reproduce").click()
    page.wait_for_function(f"document.querySelector('#{prefix}-prompt textarea')?.value === {prompt!r}", timeout=15_000)


def first_result_pixels(page, url: str, prefix: str):
    """The first picture of the tab's gallery, fetched as the browser fetches it, as RGB pixels."""
    import io

    import numpy as np
    from PIL import Image

    source = page.locator(f"#{prefix}-gallery img").first.get_attribute("src")
    again = requests.get(source if source.startswith("http") else url.rstrip("/") + source, timeout=30)
    assert again.status_code == 200
    return np.asarray(Image.open(io.BytesIO(again.content)).convert("RGB"))


def test_search_open_and_reproduce(kiri_server, browser):
    url = kiri_server["url"]
    for prompt, seed in (("a violet lighthouse", 4242), ("a yellow windmill", 77)):
        answer = requests.post(url + "sdapi/v1/txt2img", timeout=120, json={
            "prompt": prompt, "negative_prompt": "grey fog", "steps": 2, "width": 64, "height": 64, "seed": seed,
            "cfg_scale": 6, "save_images": True, "override_settings": {"samples_save": True}})
        assert answer.status_code == 200, answer.text
    page = open_found(browser, url, "lighthouse", "Seed: 4242")
    assert page.locator("#library-picture img").count() == 1
    page.locator("#library-reproduce").click()
    page.wait_for_function("document.querySelector('#txt2img-prompt textarea').value === 'a violet lighthouse'",
                           timeout=15_000)
    assert page.locator("#txt2img-prompt").is_visible()  # Text to image is the tab shown
    values = page.evaluate("[...document.querySelectorAll('#txt2img-seed input, [id*=seed] input')].map(e => e.value)")
    assert "4242" in values, values
    page.close()


def test_reproduce_sets_the_hires_fix_then_delete_and_restore_from_the_trash(kiri_server, browser):
    url = kiri_server["url"]
    answer = requests.post(url + "sdapi/v1/txt2img", timeout=120, json={
        "prompt": "a hires teal harbour", "steps": 2, "width": 64, "height": 64, "seed": 515, "save_images": True,
        "enable_hr": True, "hr_scale": 1.5, "hr_upscaler": "Latent", "hr_second_pass_steps": 3, "denoising_strength": 0.35,
        "override_settings": {"samples_save": True}})
    assert answer.status_code == 200, answer.text
    page = open_found(browser, url, "teal harbour", "Hires upscale: 1.5")
    page.locator("#library-reproduce").click()
    page.locator("#txt2img-prompt").wait_for(state="visible", timeout=15_000)
    page.locator("#txt2img-hires").get_by_text("Hires. fix", exact=True).first.click()  # a closed accordion draws nothing
    page.wait_for_function("document.querySelector('#txt2img-enable-hr input')?.checked === true", timeout=15_000)
    values = page.evaluate("""['#txt2img-hr-scale', '#txt2img-hr-steps', '#txt2img-hr-denoise']
        .map(id => document.querySelector(id + ' input[type=number]').value)""")
    assert [float(v) for v in values] == [1.5, 3, 0.35], values

    # delete it, then bring it back from the Trash accordion
    page.get_by_role("tab", name="Library", exact=True).first.click()
    page.locator("#library-delete").click()
    page.locator("#library-trash").get_by_text("Trash", exact=True).first.click()
    entry = page.locator("#library-trash-list label").filter(has_text="png")
    entry.first.wait_for(timeout=15_000)
    entry.first.click()
    page.locator("#library-restore").click()
    page.wait_for_function("document.querySelectorAll('#library-trash-list label').length === 0", timeout=15_000)
    page.locator("#library-search-button").click()
    page.wait_for_function("document.querySelectorAll('#library-grid img').length === 1", timeout=30_000)
    page.close()


def test_reproduce_an_inpainted_picture_in_image_to_image_bit_for_bit(kiri_server, browser):
    """An inpainted picture's Reproduce opens Image to image's Inpaint with the start picture and mask kept with
    it and every setting as made; Generate there gives the same pixels."""
    import base64
    import io

    import numpy as np
    from PIL import Image

    url = kiri_server["url"]
    rng = np.random.default_rng(5)
    init, mask = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)), Image.new("L", (64, 64), 0)
    mask.paste(255, (8, 24, 40, 56))

    def b64(image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return base64.b64encode(buffer.getvalue()).decode()

    answer = requests.post(url + "sdapi/v1/img2img", timeout=120, json={
        "prompt": "an inpainted amber pond", "steps": 3, "width": 64, "height": 64, "seed": 907, "cfg_scale": 5,
        "denoising_strength": 0.7, "init_images": [b64(init)], "mask": b64(mask), "mask_blur": 3, "inpainting_fill": 1,
        "inpaint_full_res": False, "save_images": True, "override_settings": {"samples_save": True}})
    assert answer.status_code == 200, answer.text
    made = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer.json()["images"][0]))).convert("RGB"))
    page = open_found(browser, url, "amber pond", "Init image hash")
    reproduce_into(page, "img2img", "an inpainted amber pond")
    page.locator("#inpaint-editor").wait_for(state="visible", timeout=15_000)  # the Inpaint mode, with its picture
    assert page.locator("#inpaint-mask img").count() == 1
    assert page.locator("#img2img-seed input[type=number]").input_value() == "907"
    assert page.locator("#library-status").inner_text().strip() == ""
    page.locator("#img2img-generate").click()
    page.wait_for_function("document.querySelector('#img2img-infotext textarea')?.value.includes('Seed: 907')",
                           timeout=120_000)
    assert np.array_equal(first_result_pixels(page, url, "img2img"), made)
    page.close()


def test_most_like_this_orders_the_search_by_look_and_newest_first_goes_back(kiri_server, browser):
    url = kiri_server["url"]
    for prompt, seed in (("a plum kite", 61), ("a mint kite", 62), ("a sand kite", 63)):
        answer = requests.post(url + "sdapi/v1/txt2img", timeout=120, json={
            "prompt": prompt, "steps": 2, "width": 64, "height": 64, "seed": seed, "save_images": True,
            "override_settings": {"samples_save": True}})
        assert answer.status_code == 200, answer.text
    page = open_found(browser, url, "plum kite", "Seed: 61")
    page.locator("#library-search textarea, #library-search input").first.fill("kite")
    page.locator("#library-most-like").click()
    page.wait_for_function("document.querySelector('#library-status')?.innerText.includes('most like the opened')",
                           timeout=30_000)
    assert page.locator("#library-grid img").count() == 2  # the other two kites, the opened one left out
    page.locator("#library-newest-first").click()
    page.wait_for_function("document.querySelector('#library-status')?.innerText.includes('newest first')",
                           timeout=30_000)
    assert page.locator("#library-grid img").count() == 3
    page.close()


USERS = [("alice", "a-pass"), ("bob", "b-pass"), ("boss", "c-pass")]


@pytest.fixture(scope="module")
def login_server(models_dir, tmp_path_factory):
    from conftest import serve_kiri
    from webui.auth import make_checker

    check = make_checker(USERS, {})
    yield from serve_kiri(models_dir, tmp_path_factory, "library-logins", ui_login=check, api_login=check, admins={"boss"})


def test_in_the_browser_each_login_sees_only_its_own_pictures(login_server, browser):
    from test_logins import login_page

    url = login_server["url"]
    for user, password in USERS[:2]:
        answer = requests.post(url + "sdapi/v1/txt2img", auth=(user, password), timeout=120, json={
            "prompt": f"{user}'s own picture", "steps": 2, "width": 64, "height": 64, "seed": 5, "save_images": True,
            "override_settings": {"samples_save": True}})
        assert answer.status_code == 200, answer.text
    seen = {}
    for user in ("alice", "bob", "boss"):
        context, page = login_page(browser, login_server, user)
        page.get_by_role("tab", name="Library", exact=True).first.click()
        thumbs = page.locator("#library-grid img")
        thumbs.first.wait_for(timeout=30_000)
        page.wait_for_timeout(300)
        # every thumbnail shown was served to this login (the owner-checked file route let it through)
        page.wait_for_function("[...document.querySelectorAll('#library-grid img')].every(i => i.complete && i.naturalWidth > 0)",
                               timeout=15_000)
        seen[user] = sorted(page.locator("#library-grid").inner_text().split("\n"))
        context.close()
    assert any("alice's own picture" in line for line in seen["alice"])
    assert not any("bob" in line for line in seen["alice"])
    assert not any("alice" in line for line in seen["bob"])
    assert any("alice" in line for line in seen["boss"]) and any("bob" in line for line in seen["boss"])
