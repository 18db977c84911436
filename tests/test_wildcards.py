"""Dynamic prompts (engine/wildcards/): `{a|b}` variants, weights, multi-picks and `__wildcard__` files,
drawn per image from its seed (a seed repeats its picture), checked before the job is queued, with the
template kept in the infotext."""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest

from webui.engine import wildcards
from webui.engine.core.errors import InvalidRequest
from webui.engine.core.infotext import parse_infotext
from webui.engine.core.jobs import Job
from webui.engine.generation.requests import HiresFix, Txt2ImgRequest


@pytest.fixture()
def cards(tmp_path):
    root = tmp_path / "wildcards"
    (root / "shapes").mkdir(parents=True)
    (root / "colour.txt").write_text("# colours the tiny model knows\nred\n\n{dark|light} blue\n__shapes/tone__ green\n")
    (root / "shapes" / "tone.txt").write_text("pale\n")
    (root / "loop.txt").write_text("a __loop__\n")
    return SimpleNamespace(wildcards_dir=root)


def draws(settings, text: str, seeds=range(40)) -> list[str]:
    return [wildcards.resolve(settings, text, random.Random(seed)) for seed in seeds]


def test_variants_are_drawn_from_the_seed_and_differ_across_seeds(cards):
    text = "a {red|green|blue} circle"
    assert draws(cards, text) == draws(cards, text)  # the same seeds, the same prompts
    assert set(draws(cards, text)) == {"a red circle", "a green circle", "a blue circle"}


def test_nesting_weights_and_multi_picks(cards):
    assert set(draws(cards, "{a|{b|c}}")) == {"a", "b", "c"}
    weighted = draws(cards, "{50::x|y}", range(200))
    assert weighted.count("x") > 180
    two = draws(cards, "{2$$a|b|c}")
    assert all(len(set(d.split(", "))) == 2 for d in two) and len(set(two)) > 2
    assert all(d.count(" and ") == 2 for d in draws(cards, "{3$$ and $$a|b|c}"))
    counts = {len(d.split("+")) for d in draws(cards, "{1-3$$+$$a|b|c}", range(80))}
    assert counts == {1, 2, 3}


def test_wildcard_files_comments_subfolders_and_recursion(cards):
    assert set(draws(cards, "__colour__")) == {"red", "dark blue", "light blue", "pale green"}
    with pytest.raises(InvalidRequest) as err:
        wildcards.check_template(cards, "a __loop__")
    assert err.value.field == "prompt" and "deep" in str(err.value)
    with pytest.raises(InvalidRequest, match="inside"):
        wildcards.check_template(cards, "__../escape__")
    assert wildcards.wildcard_names(cards) == ["colour", "loop", "shapes/tone"]


def test_other_syntax_is_left_alone():
    for text in ("a [red|blue] circle", "(red:1.2) [from:to:0.5]", "a { circle", "a } b | c", "snake_case words",
                 r"\{a|b\}"):
        assert not wildcards.has_syntax(text), text


# --- through the engine ------------------------------------------------------------------------------

def small(**kw) -> Txt2ImgRequest:
    return Txt2ImgRequest(**{**dict(prompt="a {red|blue} circle", steps=2, width=64, height=64, seed=3), **kw})


@pytest.fixture()
def dyn_engine(engine, cards):
    engine.settings.wildcards_dir = cards.wildcards_dir
    return engine


def _seed_pair_that_differs(text: str = "a {red|blue} circle") -> int:
    """A seed whose image and the next draw different prompts (found, not assumed)."""
    settings = SimpleNamespace(wildcards_dir="unused")
    for seed in range(100):
        if wildcards.resolve(settings, text, random.Random(seed)) != wildcards.resolve(settings, text, random.Random(seed + 1)):
            return seed
    raise AssertionError("no seed pair draws two prompts")


def test_batch_of_two_draws_two_prompts_and_a_seed_repeats_its_picture(dyn_engine):
    seed = _seed_pair_that_differs()
    job = Job(kind="txt2img")
    seen: list[tuple[int, int]] = []
    job.listeners.append(lambda j: seen.append((j.step, j.steps)))
    batch = dyn_engine.txt2img(small(seed=seed, batch_size=2), job)
    # two prompts: two calls of 2 steps, counted as one batch of 4 steps (progress never goes back)
    steps_seen = [step for step, total in seen if total == 4]
    assert steps_seen[-1] == 4 and steps_seen == sorted(steps_seen)
    infos = [parse_infotext(t) for t in batch.infotexts]
    assert {i.prompt for i in infos} == {"a red circle", "a blue circle"}
    assert all(i.params["Template"] == "a {red|blue} circle" for i in infos)
    assert "Negative Template" not in infos[0].params
    for index, info in enumerate(infos):
        alone = dyn_engine.txt2img(small(seed=seed + index))
        assert alone.infotexts[0] == batch.infotexts[index]
        typed = dyn_engine.txt2img(small(seed=seed + index, prompt=info.prompt))
        assert np.array_equal(np.asarray(alone.images[0]), np.asarray(typed.images[0]))  # that prompt was generated
        assert np.abs(np.asarray(batch.images[index]).astype(int) - np.asarray(alone.images[0]).astype(int)).max() <= 1


def test_negative_template_and_wildcards_in_the_infotext(dyn_engine):
    result = dyn_engine.txt2img(small(prompt="a __colour__ square", negative_prompt="{blurry|noisy}", seed=8))
    info = parse_infotext(result.infotexts[0])
    assert info.params["Template"] == "a __colour__ square" and info.params["Negative Template"] == "{blurry|noisy}"
    assert info.prompt in {"a red square", "a dark blue square", "a light blue square", "a pale green square"}
    assert info.negative_prompt in {"blurry", "noisy"}


def test_a_missing_wildcard_is_refused_before_the_job_is_queued(dyn_engine):
    with pytest.raises(InvalidRequest) as err:
        dyn_engine.txt2img(small(prompt="a {__nope__|red} circle"))
    assert err.value.field == "prompt" and "nope.txt" in str(err.value)
    assert not dyn_engine.jobs.queued() and not dyn_engine.jobs.active()


def test_styles_are_merged_before_the_variants_are_drawn(dyn_engine, tmp_path):
    dyn_engine.settings.styles_file = tmp_path / "styles.csv"
    (tmp_path / "styles.csv").write_text('name,prompt,negative_prompt\nframe,"{prompt}, {thin|thick} frame",\n')
    result = dyn_engine.txt2img(small(prompt="a circle", styles=["frame"]))
    info = parse_infotext(result.infotexts[0])
    assert info.params["Template"] == "a circle, {thin|thick} frame"
    assert info.prompt in {"a circle, thin frame", "a circle, thick frame"}


def test_hires_fix_second_pass_draws_the_same_prompt(dyn_engine):
    seed = _seed_pair_that_differs()
    result = dyn_engine.txt2img(small(seed=seed, batch_size=2, hires=HiresFix(scale=1.5, upscaler="Latent",
                                                                              denoising_strength=0.5, steps=2)))
    infos = [parse_infotext(t) for t in result.infotexts]
    first_pass = [parse_infotext(t).prompt for t in dyn_engine.txt2img(small(seed=seed, batch_size=2)).infotexts]
    assert [i.prompt for i in infos] == first_pass and len(set(first_pass)) == 2
    assert all(i.params["Template"] == "a {red|blue} circle" and i.params["Size"] == "64x64" for i in infos)
