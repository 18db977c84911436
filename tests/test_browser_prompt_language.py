"""The prompt box's token counter in the browser (typing changes it, a BREAK opens a second chunk), and the
same count from /kiri/v1/tokens."""

from __future__ import annotations


def test_the_token_counter_follows_the_prompt(kiri_server, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(kiri_server["url"])
    prompt = page.locator("#txt2img-prompt textarea")
    prompt.wait_for(state="visible", timeout=60_000)
    counter = "document.querySelector('#txt2img-token-counter')?.innerText.trim()"
    prompt.fill("a red circle")
    page.wait_for_function(f"/^[1-9][0-9]*\\/75$/.test({counter} || '')", timeout=30_000)
    first = page.locator("#txt2img-token-counter").inner_text().strip()
    prompt.fill("a (red:1.3) circle BREAK blue background")
    page.wait_for_function(f"/\\/150$/.test({counter} || '')", timeout=30_000)
    assert page.locator("#txt2img-token-counter").inner_text().strip() != first
    negative = page.locator("#txt2img-negative textarea")
    negative.fill("blurry")
    page.wait_for_function("/\\/75$/.test(document.querySelector('#txt2img-negative-token-counter')?.innerText || '')",
                           timeout=30_000)
    page.close()


def test_the_tokens_route_counts_as_the_box_does(kiri_server):
    import requests

    url = kiri_server["url"] + "kiri/v1/tokens"
    short = requests.post(url, json={"prompt": "a red circle"}, timeout=60).json()
    assert short["max"] == 75 and 0 < short["tokens"] <= 75
    assert requests.post(url, json={"prompt": "a (red:1.3) circle"}, timeout=60).json() == short
    assert requests.post(url, json={"prompt": "a red circle BREAK x"}, timeout=60).json()["max"] == 150
    assert requests.post(url, json={"prompt": "x", "stepz": 3}, timeout=60).status_code == 422
