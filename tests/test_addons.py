"""The add-on seam, proven with clip skip: a request names it, it changes the pipeline call for
that call only, writes its infotext, and the UI and the API both reach it."""

from __future__ import annotations

import numpy as np
import pytest
import requests

from webui.engine.core.errors import InvalidRequest
from webui.engine.generation.requests import Txt2ImgRequest


def _image(engine, **addons):
    request = Txt2ImgRequest("a red circle", steps=3, width=64, height=64, seed=21, sampler_name="Euler", addons=addons)
    result = engine.txt2img(request)
    return np.asarray(result.images[0], dtype=np.int16), result.infotexts[0]


def test_clip_skip_changes_the_picture_and_is_written_down(engine):
    plain, plain_info = _image(engine)
    skipped, skipped_info = _image(engine, clip_skip=2)
    same, _ = _image(engine, clip_skip=1)
    again, _ = _image(engine)
    assert np.array_equal(plain, again)  # the shared pipeline was left as it was
    assert np.array_equal(plain, same)  # clip skip 1 is no add-on at all
    assert np.abs(plain - skipped).mean() > 1.0
    assert "Clip skip: 2" in skipped_info and "Clip skip" not in plain_info


def test_clip_skip_refuses_bad_values_naming_the_field(engine):
    for bad in (0, 13, "two", True):
        with pytest.raises(InvalidRequest) as caught:
            _image(engine, clip_skip=bad)
        assert caught.value.field == "clip_skip"
    with pytest.raises(InvalidRequest) as caught:
        _image(engine, clip_skip=5)  # the tiny text encoder has fewer layers
    assert caught.value.field == "clip_skip" and "layers" in str(caught.value)
    with pytest.raises(InvalidRequest) as caught:
        _image(engine, lora_magic=1)
    assert caught.value.field == "addons" and "clip_skip" in str(caught.value)


def test_an_extension_add_on_runs_around_the_call(engine):
    """A third-party add-on registered like a built-in: apply before, release after, infotext."""
    from webui.engine.generation.call import AddonSpec

    seen = []

    class Brighter:
        name = "brighter"

        def prepare(self, model, request):
            seen.append("prepare")

        def apply(self, call):
            seen.append("apply")
            call.kwargs["guidance_scale"] = 1.0
            call.infotext["Brighter"] = "yes"

        def release(self, call):
            seen.append("release")

        def infotext(self):
            return {"Brighter": "yes"}

    engine.addons.register(AddonSpec("brighter", lambda settings: Brighter() if settings else None, ("Brighter",), "test"))
    _, info = _image(engine, brighter=True)
    assert seen == ["prepare", "apply", "release"] and "Brighter: yes" in info


def test_clip_skip_from_the_api_and_the_browser_endpoint(kiri_server):
    from gradio_client import Client

    body = {"prompt": "a red circle", "steps": 3, "width": 64, "height": 64, "seed": 21, "sampler_name": "Euler",
            "override_settings": {"CLIP_stop_at_last_layers": 2}}
    response = requests.post(kiri_server["url"] + "sdapi/v1/txt2img", json=body, timeout=120)
    assert response.status_code == 200, response.text
    assert "Clip skip: 2" in response.json()["info"]
    bad = requests.post(kiri_server["url"] + "sdapi/v1/txt2img",
                        json={**body, "override_settings": {"CLIP_stop_at_last_layers": 99}}, timeout=60)
    assert bad.status_code == 422 and "CLIP_stop_at_last_layers" in bad.text

    client = Client(kiri_server["url"], verbose=False)
    _, infotext, _ = client.predict(prompt="a red circle", negative_prompt="", sampler_name="Euler", scheduler="Automatic",
                                    steps=3, cfg_scale=7.0, seed=21, width=64, height=64, batch_size=1, batch_count=1,
                                    clip_skip=2, api_name="/txt2img")
    assert "Clip skip: 2" in infotext


def test_an_addon_whose_apply_fails_halfway_is_released_too():
    from webui.engine.core.addons import Addon, AddonContext, AddonSession

    events = []

    class Half(Addon):
        name = "half"

        def apply(self, call):
            events.append("changed the model")
            raise RuntimeError("failed halfway")

        def release(self, call):
            events.append("put the model back")

    class Call:
        kwargs: dict = {}

        def accepts(self, name):
            return True

    session = AddonSession([Half()], AddonContext(None, None, "cpu", None))
    with pytest.raises(RuntimeError):
        session.apply(Call())
    assert events == ["changed the model", "put the model back"]
