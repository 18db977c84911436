"""Extra-network tags (`<lora:name:0.8>`): cut out of what the text encoder reads, handed to the
add-on that registered their kind, kept in the infotext as written; an unknown kind is a warning."""

from __future__ import annotations

import numpy as np

from webui.engine.core.addons import Addon, AddonSpec
from webui.engine.core.prompt_tags import split_tags
from webui.engine.generation.requests import Txt2ImgRequest


def test_split_tags_reads_a1111s_syntax():
    text, tags = split_tags("a <lora:Outline:0.8> red circle <lora:b:1:0.5>, <hypernet:x>")
    assert text == "a  red circle , "
    assert [(t.kind, t.args) for t in tags] == [("lora", ("Outline", "0.8")), ("lora", ("b", "1", "0.5")),
                                                ("hypernet", ("x",))]
    assert split_tags("no tags <here> or <:x>")[1] == []


def _image(engine, prompt, negative="", **addons):
    request = Txt2ImgRequest(prompt, negative_prompt=negative, steps=3, width=64, height=64, seed=5, sampler_name="Euler",
                             addons=addons)
    result = engine.txt2img(request)
    return np.asarray(result.images[0], dtype=np.int16), result


def test_tags_reach_their_add_on_and_leave_the_encoded_prompt(engine):
    seen = []

    class Probe(Addon):
        name = "probe"

        def __init__(self, settings):
            self.settings = settings

        def apply(self, call):
            seen.append((self.settings, call.conditioning.entries[0].prompt, call.conditioning.entries[0].negative))

    def from_tags(current, tags):
        return {"given": current, "tags": [(t.args, t.negative) for t in tags]}

    engine.addons.register(AddonSpec("probe", Probe, (), "test", prompt_tags=("probe",), from_tags=from_tags), override=True)
    tagged, result = _image(engine, "a red circle <probe:one:0.5>", "blurry <PROBE:two>")
    assert seen == [({"given": None, "tags": [(("one", "0.5"), False), (("two",), True)]}, "a red circle ", "blurry ")]
    assert result.infotexts[0].startswith("a red circle <probe:one:0.5>\nNegative prompt: blurry <PROBE:two>")
    seen.clear()
    _image(engine, "a red circle <probe:x>", probe={"strength": 2})
    assert seen[0][0] == {"given": {"strength": 2}, "tags": [(("x",), False)]}

    # the text encoder never read the tag: the picture is the one of the prompt without it
    plain, _ = _image(engine, "a red circle ", "blurry ")
    assert np.array_equal(plain, tagged)


def test_an_unknown_kind_is_left_out_with_a_warning(engine):
    tagged, result = _image(engine, "a red circle<nosuch:thing:1>")
    plain, _ = _image(engine, "a red circle")
    assert np.array_equal(plain, tagged)
    assert any("<nosuch:thing:1>" in w for w in result.warnings)
    assert "<nosuch:thing:1>" in result.infotexts[0]
