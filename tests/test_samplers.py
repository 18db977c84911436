"""Every registered sampler, built-in or from an extension, runs through a tiny real pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from webui.bootstrap import build_engine
from webui.engine.settings import Settings
from webui.engine.core.devices import DeviceChoice
from webui.engine.core.errors import InvalidRequest
from webui.engine.generation.requests import Txt2ImgRequest

EXTENSIONS = Path(__file__).resolve().parent.parent / "extensions"
MODELS = {"epsilon": "tiny-sd", "v_prediction": "tiny-sd-v", "flow": "tiny-sd3"}


@pytest.fixture(scope="module")
def all_models(models_dir, v_models_dir, tmp_path_factory):
    """One models folder holding a model of each parameterisation."""
    import shutil

    root = tmp_path_factory.mktemp("all_models")
    shutil.copytree(models_dir, root, dirs_exist_ok=True)
    shutil.copytree(v_models_dir / "checkpoints" / "tiny-sd-v", root / "checkpoints" / "tiny-sd-v")
    return root


@pytest.fixture(scope="module")
def engine_with_examples(all_models, tmp_path_factory):
    settings = Settings(models_dir=all_models, outputs_dir=tmp_path_factory.mktemp("out"), extensions_dir=EXTENSIONS,
                        enabled_extensions=["example-dpmpp-2s-a", "example-euler-scheduler"],
                        model_cache_size=3, save_images=False)
    engine = build_engine(settings, DeviceChoice("cpu"))
    engine.catalog.scan()
    return engine


def test_examples_are_registered(engine_with_examples):
    names = engine_with_examples.samplers.names()
    assert "DPM++ 2S a" in names and "Euler Karras (example scheduler)" in names
    assert engine_with_examples.samplers.get("DPM++ 2S a").source == "example-dpmpp-2s-a"


def _every_pair():
    settings = Settings(extensions_dir=EXTENSIONS, enabled_extensions=["example-dpmpp-2s-a", "example-euler-scheduler"])
    engine = build_engine(settings, DeviceChoice("cpu"))
    return [(s.name, p) for s in engine.samplers.all() for p in sorted(s.fits)]


@pytest.mark.parametrize("sampler, prediction", _every_pair())
def test_sampler_runs_in_pipeline(engine_with_examples, sampler, prediction):
    request = Txt2ImgRequest("a red circle", sampler_name=sampler, steps=3, width=64, height=64, seed=5,
                             model=MODELS[prediction], batch_size=2)
    first = engine_with_examples.txt2img(request)
    again = engine_with_examples.txt2img(request)
    assert len(first.images) == 2 and first.images[0].size == (64, 64)
    pixels = np.asarray(first.images[0])
    assert np.isfinite(pixels).all() and pixels.std() > 0
    # Stochastic samplers too: their noise comes from the job's seeded generators.
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(first.images, again.images))


def test_combined_old_names_and_schedules(engine_with_examples):
    result = engine_with_examples.txt2img(Txt2ImgRequest("a circle", sampler_name="DPM++ 2M Karras", steps=2,
                                                         width=64, height=64, model="tiny-sd"))
    assert "Sampler: DPM++ 2M, Schedule type: Karras" in result.infotexts[0]
    with pytest.raises(InvalidRequest, match="does not support the Karras schedule"):
        engine_with_examples.txt2img(Txt2ImgRequest("a circle", sampler_name="DDIM", scheduler="Karras", steps=2,
                                                    width=64, height=64, model="tiny-sd"))
    with pytest.raises(InvalidRequest, match="unknown schedule type"):
        engine_with_examples.txt2img(Txt2ImgRequest("a circle", sampler_name="Euler", scheduler="Wobbly", steps=2,
                                                    width=64, height=64, model="tiny-sd"))


@pytest.mark.parametrize("schedule", ["Uniform", "Karras", "Exponential", "Beta", "SGM Uniform"])
def test_schedules_change_the_image(engine_with_examples, schedule):
    base = dict(prompt="a circle", sampler_name="Euler", steps=4, width=64, height=64, model="tiny-sd", seed=1)
    automatic = engine_with_examples.txt2img(Txt2ImgRequest(**base)).images[0]
    scheduled = engine_with_examples.txt2img(Txt2ImgRequest(**base, scheduler=schedule))
    assert f"Schedule type: {schedule}" in scheduled.infotexts[0]
    assert not np.array_equal(np.asarray(automatic), np.asarray(scheduled.images[0]))


def test_a_combined_name_with_another_schedule_names_the_scheduler_field():
    """'DPM++ 2M Karras' with scheduler 'exponential' is a conflict, not an unknown sampler."""
    from webui.bootstrap import build_registries
    from webui.engine.core.errors import InvalidRequest
    from webui.engine.settings import BUILTIN_EXTENSIONS
    from webui.extensions import ExtensionManager

    registries = build_registries()
    ExtensionManager(registries).load_all([(BUILTIN_EXTENSIONS, "built-in")], set())
    sampler, schedule = registries.samplers.resolve("DPM++ 2M Karras", "karras")
    assert (sampler.name, schedule) == ("DPM++ 2M", "Karras")
    with pytest.raises(InvalidRequest) as caught:
        registries.samplers.resolve("DPM++ 2M Karras", "exponential")
    assert caught.value.field == "scheduler" and "Karras" in str(caught.value)
