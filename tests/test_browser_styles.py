"""Styles as a person uses them, in headless Chromium: pick a saved style under the prompt and generate;
save the prompt as a new style; apply a style into the prompt text (📋)."""

from __future__ import annotations

import pytest


@pytest.fixture()
def styles_file(kiri_server, tmp_path, monkeypatch):
    path = tmp_path / "styles.csv"
    path.write_text('name,prompt,negative_prompt\nblue-bg,"{prompt}, blue background",green\n')
    monkeypatch.setattr(kiri_server["engine"].settings, "styles_file", path)
    return path


def pick_style(page, prefix: str, name: str) -> None:
    page.locator(f"#{prefix}-styles input").click()
    page.get_by_role("option", name=name, exact=True).click()
    page.keyboard.press("Escape")


def test_pick_a_style_and_generate_then_save_one(kiri_server, browser, styles_file, tmp_path):
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.goto(kiri_server["url"])
    page.locator("#txt2img-styles-refresh").click()  # the file was written after the page was built
    page.locator("#txt2img-prompt textarea").fill("a red circle")
    pick_style(page, "txt2img", "blue-bg")
    steps = page.locator("#txt2img-steps input[type=number]")
    steps.fill("2")
    steps.press("Enter")
    page.locator("#txt2img-generate").click()
    page.wait_for_function("document.querySelector('#txt2img-infotext textarea').value.includes('Seed:')", timeout=120_000)
    text = page.locator("#txt2img-infotext textarea").input_value()
    assert text.startswith("a red circle, blue background\nNegative prompt: green\n")
    assert page.locator("#txt2img-prompt textarea").input_value() == "a red circle"  # the box keeps what was typed

    # 📋: the selected style written into the prompt boxes, and the selection cleared
    page.locator("#txt2img-styles-apply").click()
    page.wait_for_function("document.querySelector('#txt2img-prompt textarea').value.includes('blue background')",
                           timeout=30_000)
    assert page.locator("#txt2img-negative textarea").input_value() == "green"

    # save the prompt as a new style: written to styles.csv and offered in the dropdown
    page.locator("#txt2img-styles-edit").get_by_text("Save or delete a style").click()
    page.locator("#txt2img-style-name textarea, #txt2img-style-name input").first.fill("my-look")
    page.locator("#txt2img-style-save").click()
    for _ in range(50):
        if "my-look" in styles_file.read_text(encoding="utf-8-sig"):
            break
        page.wait_for_timeout(100)
    assert "my-look,\"a red circle, blue background\",green" in styles_file.read_text(encoding="utf-8-sig")
    pick_style(page, "txt2img", "my-look")
    page.screenshot(path=str(tmp_path / "styles.png"))
    page.close()
