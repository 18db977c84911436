"""The conditioning stage (generation/conditioning.py): Kiri's encoding equals diffusers' for short
prompts, reads long prompts in chunks of 75 tokens instead of cutting them at 77, and switches the
prompt at step k on every family's pipeline when an add-on writes a schedule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from webui.engine.core.addons import Addon, AddonSpec
from webui.engine.generation import conditioning
from webui.engine.generation.requests import Txt2ImgRequest

LONG = "circle " * 80  # past one chunk of 75 tokens in any CLIP tokenizer


def filler(tokenizer, tokens: int = 80) -> str:
    """Words making about `tokens` tokens in this tokenizer, so the prompt's end is in its second chunk."""
    text = ""
    while len(tokenizer(text, add_special_tokens=False)["input_ids"]) < tokens:
        text += "a "
    return text


@pytest.fixture(scope="module")
def family_engine(family_models_dir, tmp_path_factory):
    from webui.bootstrap import build_engine
    from webui.engine.core.devices import DeviceChoice
    from webui.engine.settings import Settings

    settings = Settings(models_dir=family_models_dir, outputs_dir=tmp_path_factory.mktemp("cond-out"), save_images=False)
    return build_engine(settings, DeviceChoice("cpu"))


def request(prompt: str, **fields):
    return Txt2ImgRequest(prompt, **{"steps": 4, "width": 64, "height": 64, "seed": 3, "sampler_name": "Euler", **fields})


def pixels(result):
    return np.asarray(result.images[0], dtype=np.int16)


def test_short_prompts_encode_as_diffusers_does(engine, family_engine):
    sd = engine.models.get("tiny-sd").pipeline
    ours = conditioning._clip_embeds(sd, "a red circle", 1, 1, False)[0]
    theirs, _ = sd.encode_prompt("a red circle", "cpu", 1, True, "")
    assert torch.allclose(ours, theirs, atol=1e-6)

    xl = family_engine.models.get("tiny-sdxl").pipeline
    ours, pooled = conditioning._clip_embeds(xl, "a red circle", 1, 1, True)
    negative, negative_pooled = conditioning._clip_embeds(xl, "", 1, 1, True, negative=True)
    theirs = xl.encode_prompt("a red circle", device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=True)
    for mine, diffusers_own in zip((ours, negative, pooled, negative_pooled), theirs):
        assert torch.allclose(mine, diffusers_own, atol=1e-6)


@pytest.mark.parametrize("model", ["tiny-sd", "tiny-sdxl"])
def test_a_long_prompts_second_chunk_changes_the_picture(engine, family_engine, model):
    target = engine if model == "tiny-sd" else family_engine
    tokenizer = target.models.get(model).pipeline.tokenizer
    words = filler(tokenizer)
    assert conditioning._chunk_count(tokenizer, words + "red") == 2
    red = target.txt2img(request(words + "red", model=model))
    blue = target.txt2img(request(words + "blue", model=model))
    assert not np.array_equal(pixels(red), pixels(blue)), "the words past token 75 were cut"
    assert not any("tokens long" in w for w in red.warnings)


def test_a_family_that_still_cuts_says_so(engine):
    result = engine.txt2img(request(LONG, model="tiny-sd3", sampler_name="Flow Euler"))
    assert any("tokens long" in w for w in result.warnings)


class PromptEdit(Addon):
    """What the prompt language's [red:blue:k] will do: the schedule switches prompts at step k."""

    name = "edit"

    def __init__(self, settings):
        self.prompt, self.at = settings["to"], settings["at"]

    def apply(self, call):
        first = call.conditioning.entries[0]
        call.conditioning = call.conditioning.with_entries(
            [first, conditioning.ScheduleEntry(self.at, self.prompt, first.negative)])


class Latents(Addon):
    name = "latents"
    tensor_inputs = ("latents",)

    def __init__(self, log):
        self.log = log

    def on_step(self, step):
        self.log.append(step.tensors["latents"].detach().clone())


@pytest.mark.parametrize("model, sampler", [("tiny-sd", "Euler"), ("tiny-sd", "DPM++ 3M SDE"), ("tiny-sdxl", "Euler"),
                                            ("tiny-sd3", "Flow Euler"), ("tiny-flux", "Flow Euler")])
def test_a_schedule_switches_the_prompt_at_step_k_only(engine, family_engine, model, sampler):
    target = engine if model in ("tiny-sd", "tiny-sd3") else family_engine
    k = 2
    target.addons.register(AddonSpec("edit", PromptEdit, (), "test"), override=True)
    runs = []
    for addons in ({}, {"edit": {"to": "a blue square", "at": k}}):
        log: list = []
        target.addons.register(AddonSpec("latents", lambda s, log=log: Latents(log), (), "test"), override=True)
        result = target.txt2img(request("a red circle", model=model, sampler_name=sampler, steps=5,
                                        addons={**addons, "latents": True}))
        runs.append((result, log))
    (plain, before), (edited, after) = runs
    assert len(before) == len(after) == 5
    for step in range(k):
        assert before[step].equal(after[step]), f"step {step + 1} changed before the switch"
    assert not before[k].equal(after[k])
    assert not np.array_equal(pixels(plain), pixels(edited))
