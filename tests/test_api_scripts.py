"""A1111's alwayson_scripts reach the add-ons that read them (AddonSpec.api_scripts), through the same
registry as extensions use; scripts no add-on reads are named in the reply's warnings."""

from __future__ import annotations

import pytest

from webui.engine.core.addons import Addon, AddonRegistry, AddonSpec
from webui.engine.core.errors import InvalidRequest


class Tagger(Addon):
    name = "tagger"

    def __init__(self, words):
        self.words = words

    def apply(self, call):
        call.infotext["Tagger"] = ",".join(self.words)


def _registry() -> AddonRegistry:
    registry = AddonRegistry()

    def from_script(title, args):
        if not isinstance(args, list):
            raise InvalidRequest("alwayson_scripts.tagger.args", "args must be a list")
        words = [a for a in args if isinstance(a, str)]
        return words or None

    registry.register(AddonSpec("tagger", lambda words: Tagger(words) if words else None, ("Tagger",),
                                api_scripts=("Tagger",), from_api_script=from_script))
    return registry


def test_a_script_becomes_the_settings_of_each_addon_that_reads_it():
    found, unread = _registry().from_api_scripts({"tagger": {"args": ["a", 1, "b"]}, "Other Script": {"args": []}})
    assert found == {"tagger": ["a", "b"]}
    assert unread == ["Other Script"]


def test_a_script_that_asks_nothing_adds_no_addon_and_bad_args_name_the_field():
    registry = _registry()
    assert registry.from_api_scripts({"TAGGER": {"args": [1, 2]}}) == ({}, [])
    with pytest.raises(InvalidRequest) as err:
        registry.from_api_scripts({"tagger": {"args": "x"}})
    assert err.value.field == "alwayson_scripts.tagger.args"


def test_sdapi_runs_an_extensions_script_and_warns_only_of_the_others(models_dir, tmp_path):
    from webui.bootstrap import build_registries
    from webui.engine.core.devices import DeviceChoice
    from webui.api.sdapi.fields import Txt2ImgBody
    from webui.api.sdapi.mapping import txt2img_request
    from webui.engine.context import Engine
    from webui.engine.settings import Settings

    registries = build_registries()
    for spec in _registry()._specs.values():
        registries.add_addon(spec)
    engine = Engine(Settings(models_dir=models_dir, outputs_dir=tmp_path, default_model="tiny-sd"), registries, DeviceChoice("cpu"))
    warnings: list[str] = []
    request = txt2img_request(Txt2ImgBody(prompt="a red circle", steps=2, alwayson_scripts={
        "tagger": {"args": ["x"]}, "unknown thing": {"args": []}}), warnings, engine)
    assert request.addons["tagger"] == ["x"]
    assert [w for w in warnings if "alwayson_scripts" in w] == ["alwayson_scripts not applied (Kiri has no such scripts): 'unknown thing'"]
