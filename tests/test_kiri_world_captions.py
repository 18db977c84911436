"""Captions as people write them (tools/kiri_world.py: phrase, parse, held-out phrasings) and the
training script's caption sampler. Fast: no model is loaded, one tokenizer is built from the word list."""

from __future__ import annotations

import random
import re
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools import kiri_phrasing as P  # noqa: E402
from tools import kiri_world as W  # noqa: E402

COLOUR_WORDS = set(W.COLOURS) | {"grey"}
SIZE_WORDS = {"small", "large", "big", "tiny", "little"}
POSITION_WORDS = {"left", "right", "top", "bottom", "centre", "center", "middle", "upper", "lower"}


def _samples(split: str, n_per_family: int = 150, seed: int = 0):
    rng = random.Random(seed)
    for family in P.FAMILIES:
        for _ in range(n_per_family):
            scene = W.sample_scene(rng, held_out="exclude" if split == "train" else "only")
            text, spec = P.phrase(scene, family, rng, split)
            yield family, scene, text, spec


@pytest.mark.parametrize("split", ["train", "eval"])
def test_every_familys_captions_parse_back_to_what_they_state(split):
    for family, scene, text, spec in _samples(split):
        assert P.parse(text) == spec, (family, text)
        # ...and what they state is the scene's own value
        for o, so in zip(spec.objects, scene.objects):
            assert o.shape == so.shape
            assert all(getattr(o, k) in (None, getattr(so, k)) for k in ("colour", "size", "position")), (family, text)
        assert spec.background in (None, scene.background)


def test_left_out_attributes_are_absent_from_the_caption():
    seen_dropped = Counter()
    for family, _, text, spec in _samples("train", 300, seed=1):
        words = P.normalise(text)
        obj_colours = [o.colour for o in spec.objects if o.colour]
        n_bg = len(spec.background) if spec.background else 0
        # every colour word in the caption is a stated object colour or a stated background colour
        assert sum(w in COLOUR_WORDS for w in words) == len(obj_colours) + n_bg, (family, text)
        if all(o.size is None for o in spec.objects):
            seen_dropped["size"] += 1
            assert not SIZE_WORDS & set(words), text
        if all(o.position is None for o in spec.objects):
            seen_dropped["position"] += 1
            assert not POSITION_WORDS & set(words), text
        if spec.background is None:
            seen_dropped["background"] += 1
            assert "background" not in words and "against" not in words, text
        if not obj_colours:
            seen_dropped["colour"] += 1
    assert all(seen_dropped[k] >= 50 for k in ("size", "position", "background", "colour")), seen_dropped


def test_bare_captions_name_only_colour_and_shape():
    rng = random.Random(2)
    for _ in range(100):
        scene = W.sample_scene(rng)
        text, spec = P.phrase(scene, "bare", rng)
        assert spec.stated() == {"colour", "shape"}
        assert len(P.normalise(text)) <= 1 + 3 * len(scene.objects) + (len(scene.objects) - 1), text


def test_held_out_phrasings_never_appear_in_training_captions():
    rng = random.Random(3)
    uniform = {f: 1.0 for f in P.FAMILIES}
    held_out_words = set(P.FILLERS_EVAL)
    eval_positions = [v for vs in P.POSITION_VARIANTS_EVAL.values() for v in vs]
    for _ in range(4000):
        text, _ = P.sample_phrase(W.sample_scene(rng), rng, uniform)
        assert not P.is_held_out_phrasing(text), text
        flat = " ".join(P.normalise(text))
        assert not held_out_words & set(flat.split()), text
        assert "background with" not in flat and not re.search(r"against an? ", flat), text
        assert not any(re.search(rf"(^| ){v}( |$)", flat) for v in eval_positions), text
    # the evaluation captions of the families that have held-out phrasings use one every time
    for family, _, text, _ in _samples("eval", 100, seed=4):
        if family in ("reordered", "synonyms", "noisy"):
            assert P.is_held_out_phrasing(text), (family, text)


def test_training_scenes_behind_free_captions_still_exclude_held_out_combinations():
    rng = random.Random(5)
    for _ in range(1000):
        scene = W.sample_scene(rng)
        text, spec = P.sample_phrase(scene, rng)
        assert not any(W.is_held_out(o) for o in scene.objects)


def test_every_word_is_in_the_vocabulary_and_fillers_are_not():
    vocab = set(P.vocabulary())
    fillers = set(P.FILLERS_TRAIN) | set(P.FILLERS_EVAL)
    assert not vocab & fillers
    assert set(P.vocabulary(free=False)) < vocab and len(P.vocabulary(free=False)) == 30
    seen = set()
    for split in ("train", "eval"):
        for family, _, text, _ in _samples(split, 200, seed=6):
            for w in P.normalise(text):
                assert w in vocab or w in fillers, (family, w, text)
                seen.add(w)
    # the vocabulary holds no dead words: every one of them shows up in some caption
    assert vocab - seen <= {";"} | set(), vocab - seen


def test_synonyms_spellings_case_and_punctuation_map_to_the_same_attributes():
    same = [
        ("a large gray square in the centre", ["A BIG GREY BOX IN THE MIDDLE!", "big grey boxes, center", "a large gray square at the centre."]),
        ("a small white ring on the right", ["tiny white donut to the right", "a little white ring on the right side", "Small White Rings, right"]),
        ("a large black cross at the top", ["big black plus on top", "a large black cross in the upper part"]),
        ("a small red circle at the bottom", ["a tiny red disc in the lower part", "little red circles bottom"]),
    ]
    for canonical, variants in same:
        want = P.parse(canonical)
        assert want is not None and want.objects[0].position is not None
        for v in variants:
            assert P.parse(v) == want, v


def test_a_colour_names_the_object_unless_it_is_the_background():
    red_circle = P.ObjSpec("circle", "red")
    assert P.parse("a red circle") == P.Spec((red_circle,))
    assert P.parse("red circle, blue background") == P.Spec((red_circle,), ("blue",))
    assert P.parse("on a blue background, a red circle") == P.Spec((red_circle,), ("blue",))
    assert P.parse("a red circle to the left on blue") == P.Spec((P.ObjSpec("circle", "red", None, "left"),), ("blue",))
    assert P.parse("a red circle on the left, red and blue background") == \
        P.Spec((P.ObjSpec("circle", "red", None, "left"),), ("red", "blue"))
    assert P.parse("photo of a cute red circle") == P.Spec((red_circle,))
    assert P.parse("on the left, a red circle") == P.Spec((P.ObjSpec("circle", "red", None, "left"),))
    assert P.parse("a circle on top and a blue star at the bottom") == \
        P.Spec((P.ObjSpec("circle", None, None, "top"), P.ObjSpec("star", "blue", None, "bottom")))
    assert P.parse("drawn on a red star") == P.Spec((P.ObjSpec("star", "red"),))  # "on" + colour + shape: the object
    assert P.parse("a red sky") is None  # no shape named


def test_score_spec_judges_only_what_is_stated():
    scene = W.scene_from_parts([("large", "red", "circle", "left")], ("blue",))
    img = W.render(scene)
    full = P.score_spec(img, P.spec_of(scene))
    assert full == {"colour": 1.0, "shape": 1.0, "position": 1.0, "size": 1.0, "background": 1.0}
    wrong = P.score_spec(img, P.parse("a small green square on the right, white background"))
    assert wrong == {"colour": 0.0, "shape": 0.0, "position": 0.0, "size": 0.0, "background": 0.0}
    bare = P.score_spec(img, P.parse("a red circle"))
    assert bare == {"colour": 1.0, "shape": 1.0, "position": None, "size": None, "background": None}
    # a colourless caption still finds the object
    assert P.score_spec(img, P.parse("a circle on the left"))["position"] == 1.0


def test_parse_mix():
    assert P.parse_mix("template") == {"template": 1.0}
    assert P.parse_mix("template=3, bare=1") == {"template": 0.75, "bare": 0.25}
    with pytest.raises(ValueError):
        P.parse_mix("template=1,fancy=1")
    with pytest.raises(ValueError):
        P.parse_mix("bare=0")


def test_the_tokenizer_the_training_script_builds_covers_every_word(tmp_path):
    from tools.training_kit import build_tokenizer

    tok = build_tokenizer(tmp_path / "tok", tmp_path / "work", max_len=32)
    word_tokens = {tok.tokenize(w)[0] for w in P.vocabulary()}
    for w in P.vocabulary():
        assert len(tok(w, add_special_tokens=False).input_ids) == 1, w
    # an unknown filler reaches the model as pieces, none of which is a caption word ("bright" -> b + right)
    for f in P.FILLERS_TRAIN + P.FILLERS_EVAL:
        assert not set(tok.tokenize(f)) & word_tokens, (f, tok.tokenize(f))
    # every caption fits the 32-token context with its start and end tokens
    longest = 0
    for split in ("train", "eval"):
        for family, _, text, _ in _samples(split, 300, seed=7):
            n = len(tok(text).input_ids)
            longest = max(longest, n)
            assert n <= 32, (family, n, text)
    assert longest > 20


def test_the_training_scripts_captions_follow_the_mix_and_the_scenes():
    pytest.importorskip("torch")
    from tools import ldm_kit as T

    scenes = T.training_scenes(300, seed=0)
    _, captions, _ = W.dataset(300, seed=0)
    assert [s.caption for s in scenes] == captions  # the scenes behind the cached pictures, in order
    idx = list(range(300))
    a = T.batch_captions(scenes, idx, step=11, seed=0, mix=P.DEFAULT_MIX)
    assert a == T.batch_captions(scenes, idx, step=11, seed=0, mix=P.DEFAULT_MIX)  # resumable
    assert a != T.batch_captions(scenes, idx, step=12, seed=0, mix=P.DEFAULT_MIX)
    assert T.batch_captions(scenes, idx, step=11, seed=0, mix={"template": 1.0}) == captions
    for text, scene in zip(a, scenes):
        spec = P.parse(text)
        assert spec is not None and len(spec.objects) == len(scene.objects), text
        for o, so in zip(spec.objects, scene.objects):
            assert o.shape == so.shape and o.colour in (None, so.colour) and o.position in (None, so.position), text
    # a left-out background is a sampled one: captions without it come with many backgrounds
    bgs = Counter(scene.background[0] for text, scene in zip(a, scenes) if P.parse(text).background is None)
    assert len(bgs) >= 7, bgs
    # the families come in roughly the proportions asked for: template captions are about a quarter
    share = sum(t == s.caption for t, s in zip(a, scenes)) / len(a)
    assert 0.15 <= share <= 0.4, share
