"""Few-step models in the browser (issue 30): picking an LCM checkpoint switches the Text to image tab (and
Image to image) to its sampler, steps and CFG and says why; an ordinary one brings 20 steps at CFG 7 back; a few-step LoRA
typed into the prompt does the same as a few-step checkpoint, and the picture is made with the recipe."""

from __future__ import annotations

import json

import pytest

import lora_files
import tiny_models
from conftest import serve_kiri


@pytest.fixture(scope="module")
def fewstep_server(tmp_path_factory):
    from diffusers import StableDiffusionPipeline

    root = tmp_path_factory.mktemp("fewstep_browser_models")
    sd = tiny_models.make_tiny_sd(root / "checkpoints" / "tiny-sd")
    lcm = tiny_models.make_tiny_sd(root / "checkpoints" / "tiny-distilled")
    config = lcm / "scheduler" / "scheduler_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "_class_name": "LCMScheduler"}))
    lora_files.save_kohya(StableDiffusionPipeline.from_pretrained(sd), root / "Lora" / "lcm-lora-tiny.safetensors", scale=0.01)
    yield from serve_kiri(root, tmp_path_factory, "fewstep_outputs")


def _value(page, selector: str) -> str:
    return page.locator(f"{selector} input[type=number]").input_value()


def _wait_value(page, selector: str, value: str) -> None:
    page.wait_for_function(
        f"document.querySelector('{selector} input[type=number]')?.value === '{value}'", timeout=20_000)


def test_picking_a_few_step_model_shows_its_recipe(fewstep_server, browser):
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(fewstep_server["url"])
    page.locator("#txt2img-steps").wait_for(timeout=60_000)
    assert (_value(page, "#txt2img-steps"), _value(page, "#txt2img-cfg")) == ("20", "7")
    assert not page.locator("#txt2img-model-defaults").is_visible()

    page.locator("#model-picker input").click()
    page.get_by_role("option").filter(has_text="tiny-distilled").first.click()
    _wait_value(page, "#txt2img-steps", "4")
    assert _value(page, "#txt2img-cfg") == "1.5"
    assert page.locator("#txt2img-sampler input").input_value() == "LCM"
    assert "LCM few-step" in page.locator("#txt2img-model-defaults").inner_text()
    page.get_by_role("tab", name="Image to image / Inpaint", exact=True).first.click()
    _wait_value(page, "#img2img-steps", "4")  # Image to image follows the picked model too
    assert _value(page, "#img2img-cfg") == "1.5"
    page.get_by_role("tab", name="Text to image", exact=True).first.click()

    page.locator("#model-picker input").click()
    page.get_by_role("option").filter(has_text="tiny-sd").first.click()
    _wait_value(page, "#txt2img-steps", "20")
    assert _value(page, "#txt2img-cfg") == "7"
    page.close()


def test_a_few_step_lora_in_the_prompt_sets_the_recipe(fewstep_server, browser):
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(fewstep_server["url"])
    page.locator("#txt2img-prompt textarea").wait_for(timeout=60_000)
    page.locator("#txt2img-prompt textarea").fill("a red circle <lora:lcm-lora-tiny:1>")
    _wait_value(page, "#txt2img-steps", "4")
    assert page.locator("#txt2img-sampler input").input_value() == "LCM"
    page.locator("#txt2img-generate").click()
    page.wait_for_function("document.querySelector('#txt2img-infotext textarea').value.includes('Seed:')",
                           timeout=120_000)
    infotext = page.locator("#txt2img-infotext textarea").input_value()
    assert "Steps: 4, Sampler: LCM" in infotext and "CFG scale: 1.5" in infotext
    page.close()
