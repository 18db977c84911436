"""The prompt language on the conditioning stage (generation/conditioning.py): weights, BREAK, prompt
editing and alternation change what the denoiser sees as in AUTOMATIC1111, on SD 1.x and SDXL; SD3
reads no weights and says so; a prompt without syntax, or with weights of 1, is encoded as before."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from webui.engine.core.addons import Addon, AddonSpec
from webui.engine.generation import conditioning
from webui.engine.generation.conditioning import PromptSchedule, ScheduleEntry
from webui.engine.generation.requests import Txt2ImgRequest


@pytest.fixture(scope="module")
def family_engine(family_models_dir, tmp_path_factory):
    from webui.bootstrap import build_engine
    from webui.engine.core.devices import DeviceChoice
    from webui.engine.settings import Settings

    settings = Settings(models_dir=family_models_dir, outputs_dir=tmp_path_factory.mktemp("lang-out"), save_images=False)
    return build_engine(settings, DeviceChoice("cpu"))


def request(prompt: str, **fields) -> Txt2ImgRequest:
    return Txt2ImgRequest(prompt, **{"steps": 3, "width": 64, "height": 64, "seed": 5, "sampler_name": "Euler",
                                     "cfg_scale": 7.0, **fields})


def pixels(result) -> np.ndarray:
    return np.asarray(result.images[0], dtype=np.int16)


def same(a, b) -> bool:
    return np.array_equal(pixels(a), pixels(b))


class Probe(Addon):
    """Records the step count the conditioning stage planned for, the schedule's starts, and the
    latents after every step the pipeline really ran."""

    name = "probe"
    tensor_inputs = ("latents",)

    def __init__(self, log):
        self.log = log

    def apply(self, call):
        self.log["planned"] = conditioning.steps_run(call)
        self.log["starts"] = [e.start for e in call.conditioning.entries]
        self.log["texts"] = [e.prompt for e in call.conditioning.entries]

    def on_step(self, step):
        self.log.setdefault("latents", []).append(step.tensors["latents"].detach().clone())


def probed(target, req):
    log: dict = {}
    target.addons.register(AddonSpec("probe", lambda s: Probe(log), (), "test"), override=True)
    req.addons = {**(req.addons or {}), "probe": True}
    return target.txt2img(req) if not hasattr(req, "init_image") else target.img2img(req), log


# --- weights and BREAK on SD 1.x -------------------------------------------------------------------

def test_a_weight_of_one_and_no_syntax_encode_exactly_as_before(engine):
    sd = engine.models.get("tiny-sd").pipeline
    plain = conditioning._clip_embeds(sd, "a red circle", 1, 1, False)[0]
    theirs, _ = sd.encode_prompt("a red circle", "cpu", 1, False)
    assert torch.equal(plain, theirs), "a prompt without syntax is no longer encoded as diffusers does"
    for written in ("a (red:1.0) circle", "(a red circle:1)", "a red (circle:1.0)"):
        assert torch.equal(conditioning._clip_embeds(sd, written, 1, 1, False)[0], plain), written
    assert same(engine.txt2img(request("(red:1.0) circle")), engine.txt2img(request("red circle")))


def test_weights_change_the_picture_both_ways(engine):
    sd = engine.models.get("tiny-sd").pipeline
    plain = conditioning._clip_embeds(sd, "a red circle", 1, 1, False)[0]
    up = conditioning._clip_embeds(sd, "a (red:1.3) circle", 1, 1, False)[0]
    assert not torch.equal(up, plain)
    results = {w: engine.txt2img(request(f"a (red:{w}) circle")) for w in ("1.3", "0.7")}
    base = engine.txt2img(request("a red circle"))
    assert not same(results["1.3"], results["0.7"])
    assert not same(results["1.3"], base) and not same(results["0.7"], base)
    assert same(engine.txt2img(request("a ((red)) circle")), engine.txt2img(request("a (red:1.21) circle")))


def test_emphasis_scales_tokens_and_restores_the_mean():
    torch.manual_seed(0)
    hidden = torch.randn(1, 4, 8) + 0.5
    weights = [1.0, 1.5, 0.5, 1.0]
    out = conditioning._emphasis(hidden, weights)
    assert torch.allclose(out.mean(), hidden.mean(), atol=1e-6)
    scaled = hidden * torch.tensor(weights).reshape(1, -1, 1)
    assert torch.allclose(out, scaled * (hidden.mean() / scaled.mean()))
    assert conditioning._emphasis(hidden, [1.0] * 4) is hidden
    flat = hidden - hidden.mean()  # no mean to restore (rounding noise): scaled only, never by noise / noise
    assert torch.equal(conditioning._emphasis(flat, weights), flat * torch.tensor(weights).reshape(1, -1, 1))


def test_break_starts_a_new_chunk(engine):
    sd = engine.models.get("tiny-sd").pipeline
    assert conditioning._chunk_count(sd.tokenizer, "a red circle BREAK blue", sd) == 2
    broken = conditioning._clip_embeds(sd, "a red circle BREAK blue", 2, 1, False)[0]
    joined = conditioning._clip_embeds(sd, "a red circle blue", 2, 1, False)[0]
    assert broken.shape[1] == 2 * 77
    assert not torch.equal(broken, joined)
    assert not same(engine.txt2img(request("a red circle BREAK blue")), engine.txt2img(request("a red circle blue")))
    # a BREAK in the negative prompt too: both sides padded to two chunks
    assert engine.txt2img(request("a red circle", negative_prompt="blue BREAK green")).images


# --- editing and alternation -----------------------------------------------------------------------

def test_an_edit_switches_where_a1111_does(engine):
    schedule = PromptSchedule.parse("[a red circle:a blue square:0.5]", "", 4)
    # A1111: `when` = int(0.5 * 4) = 2 is the last step of `from`, read by a 0-based step counter
    assert schedule.entries == [ScheduleEntry(0, "a red circle", ""), ScheduleEntry(3, "a blue square", "")]
    red, red_log = probed(engine, request("a red circle", steps=4))
    blue = engine.txt2img(request("a blue square", steps=4))
    edited, log = probed(engine, request("[a red circle:a blue square:0.5]", steps=4))
    assert log["starts"] == [0, 3] and len(log["latents"]) == 4
    for step in range(3):
        assert log["latents"][step].equal(red_log["latents"][step]), f"step {step} is not the first prompt's"
    assert not log["latents"][3].equal(red_log["latents"][3])
    assert not same(edited, red) and not same(edited, blue)


def test_each_side_has_its_own_schedule():
    schedule = PromptSchedule.parse("[cat:dog:2] photo", "[blurry:ugly:0.5]", 10)
    assert [(e.start, e.prompt, e.negative) for e in schedule.entries] == [
        (0, "cat photo", "blurry"), (3, "dog photo", "blurry"), (6, "dog photo", "ugly")]
    assert PromptSchedule.parse("a (red:1.2) circle", "", lambda: pytest.fail("counted steps for a static prompt")).entries \
        == [ScheduleEntry(0, "a (red:1.2) circle", "")]


def test_alternation_changes_the_prompt_every_step(engine):
    result, log = probed(engine, request("a [red|blue] circle", steps=4))
    assert log["starts"] == [0, 2, 3] and log["texts"] == ["a red circle", "a blue circle", "a red circle"]
    assert len(log["latents"]) == 4
    assert not same(result, engine.txt2img(request("a red circle", steps=4)))


@pytest.mark.parametrize("sampler", ["Euler", "Heun", "DPM++ SDE"])
def test_the_schedule_counts_the_steps_the_call_runs(engine, sampler):
    _, log = probed(engine, request("[a red circle:a blue square:0.5]", steps=3, sampler_name=sampler))
    assert log["planned"] == len(log["latents"]), "the schedule was made for another step count"


def test_img2img_schedules_over_the_steps_its_strength_runs(engine):
    from webui.engine.generation.img2img import Img2ImgRequest

    init = Image.new("RGB", (64, 64), (200, 40, 40))
    req = Img2ImgRequest("[a red circle:a blue square:0.5]", steps=8, width=64, height=64, seed=2, sampler_name="Euler",
                         init_image=init, denoising_strength=0.5)
    result, log = probed(engine, req)
    assert len(log["latents"]) == log["planned"] == 4
    assert log["starts"] == [0, 3]
    assert result.images


def test_a_hires_pass_reads_the_schedule_on_from_the_first_pass(engine):
    from webui.engine.generation.requests import HiresFix

    assert PromptSchedule.parse("[red:blue:0.5]", "", 4, first_pass_steps=4).entries == [ScheduleEntry(0, "blue", "")]
    assert [e.start for e in PromptSchedule.parse("[red:blue:1.5]", "", 4, first_pass_steps=4).entries] == [0, 3]
    hires = HiresFix(scale=1.5, upscaler="Lanczos", steps=2, denoising_strength=0.6)
    _, log = probed(engine, request("[a red circle:a blue square:0.5]", steps=4, hires=hires))
    assert log["texts"] == ["a blue square"], "the second pass started the edit over"


@pytest.mark.parametrize("prompt", ["a ((( [red:", "a | b [c:d:2]", "trailing \\", "]]]) circle ((", "[a:b:c:d]",
                                    "(red:1.2.3) [|] [:::]", "BREAK BREAK"])
def test_malformed_prompts_run(engine, prompt):
    result = engine.txt2img(request(prompt, steps=2, negative_prompt=prompt))
    assert result.images and prompt in result.infotexts[0], "the infotext keeps the prompt as written"


# --- SDXL and the flow families ---------------------------------------------------------------------

def test_sdxl_reads_weights_on_both_encoders(family_engine):
    xl = family_engine.models.get("tiny-sdxl").pipeline
    plain, pooled = conditioning._clip_embeds(xl, "a red circle", 1, 1, True)
    weighted, weighted_pooled = conditioning._clip_embeds(xl, "a (red:1.4) circle", 1, 1, True)
    width = xl.text_encoder.config.hidden_size
    assert not torch.equal(weighted[..., :width], plain[..., :width]), "the first encoder read no weight"
    assert not torch.equal(weighted[..., width:], plain[..., width:]), "the second encoder read no weight"
    assert torch.equal(weighted_pooled, pooled)  # A1111's pooled output is the first chunk's, unweighted
    one = family_engine.txt2img(request("a (red:1.0) circle", model="tiny-sdxl"))
    base = family_engine.txt2img(request("a red circle", model="tiny-sdxl"))
    assert same(one, base)
    assert not same(family_engine.txt2img(request("a (red:1.4) circle", model="tiny-sdxl")), base)


def test_sd3_ignores_weights_and_says_so(engine):
    weighted = engine.txt2img(request("a (red:1.3) circle", model="tiny-sd3", sampler_name="Flow Euler"))
    plain = engine.txt2img(request("a red circle", model="tiny-sd3", sampler_name="Flow Euler"))
    assert any(w.startswith("SD3 ignores prompt weights") for w in weighted.warnings), weighted.warnings
    assert not any("ignores" in w for w in plain.warnings)
    assert same(weighted, plain), "SD3 was handed the weight syntax as text"
    assert "(red:1.3)" in weighted.infotexts[0]
    edited = engine.txt2img(request("a [red circle:blue square:0.5]", model="tiny-sd3", sampler_name="Flow Euler", steps=4))
    assert not any("ignores" in w for w in edited.warnings)
    assert not same(edited, engine.txt2img(request("a red circle", model="tiny-sd3", sampler_name="Flow Euler", steps=4)))


# --- the token counter -------------------------------------------------------------------------------

def test_token_counts_as_a1111s_counter(engine):
    sd = engine.models.get("tiny-sd").pipeline
    tokenizer = sd.tokenizer
    n = len(tokenizer("a red circle", add_special_tokens=False)["input_ids"])
    assert conditioning.token_counts(tokenizer, "a red circle", sd) == (n, 75)
    assert conditioning.token_counts(tokenizer, "a (red:1.3) circle", sd) == (n, 75)  # the syntax is no token
    assert conditioning.token_counts(tokenizer, "a red circle BREAK x", sd) == (75 + 1, 150)
    long = "a " * 80
    assert conditioning.token_counts(tokenizer, long, sd) == (80, 150)
    assert conditioning.token_counts(tokenizer, "", sd) == (0, 75)
    assert conditioning.token_counts(tokenizer, "[a red circle:x:2]", sd) == (n, 75)  # the longest text of the schedule


def test_the_counter_reads_the_tokenizer_from_disk_without_loading(engine):
    from webui.engine.generation.tokens import prompt_tokens

    assert engine.models_if_created() is None
    counted = prompt_tokens(engine, "a red circle")
    assert counted is not None and counted[1] == 75 and counted[0] > 0
    assert engine.models_if_created() is None or engine.models.current is None, "the counter loaded a model"


@pytest.mark.parametrize("model, label", [("tiny-flux", "Flux"), ("tiny-pixart", "PixArt")])
def test_flux_and_pixart_say_they_ignore_weights_and_break(family_engine, model, label):
    from webui.engine.generation.runner import fit_prompt

    loaded = family_engine.models.get(model)
    warnings: list[str] = []
    assert fit_prompt(loaded, "a (red:1.3) circle BREAK x", "prompt", warnings) == "a (red:1.3) circle BREAK x"
    assert warnings[0].startswith(f"{label} ignores prompt weights") and "'a red circle x'" in warnings[0]
    assert warnings[1].startswith(f"{label} ignores BREAK")
    quiet: list[str] = []
    fit_prompt(loaded, "[a red circle:a blue square:0.5] [x|y] \\(literal\\)", "prompt", quiet)
    assert quiet == [], "editing, alternation and escapes are not weights"


def test_the_counter_counts_with_its_own_copy_of_the_loaded_tokenizer(engine):
    from webui.engine.generation import tokens

    sd = engine.models.get("tiny-sd").pipeline
    counted = tokens.prompt_tokens(engine, "a red circle")
    assert counted == conditioning.token_counts(sd.tokenizer, "a red circle", sd)
    own = tokens._own_copy(sd.tokenizer)
    assert own is not sd.tokenizer and tokens._own_copy(sd.tokenizer) is own
    sd.tokenizer.add_tokens(["<kiri-test-embedding>"])  # what loading a textual inversion does
    assert tokens._own_copy(sd.tokenizer) is not own, "the copy missed the new tokens"
