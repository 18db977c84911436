"""A1111's sampler names on flow-matching models (issue 26): each runs on the flow noise levels
(webui/engine/samplers/flow_samplers.py, Euler/DDIM on FlowMatchEuler, UniPC on diffusers' flow
solver) or is refused up front naming `sampler_name` and saying why.

Convergence is measured on the analytic flow model of the conformance kit (the ideal denoiser of a
known mixture): the deterministic samplers solve the same ODE from the same noise, so each must land
on the path Flow Euler takes at 1000 steps; the stochastic ones must sample the right distribution.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
EXTENSIONS = ROOT / "extensions"

ODE = ["Euler", "Heun", "DPM2", "LMS", "PLMS", "DPM++ 2M", "UniPC", "DDIM"]
# Stochastic: steps at which each lands within the bar (DPM++ 3M SDE at eta 1 needs many, as on epsilon models).
SDE = {"Euler a": 50, "DPM2 a": 50, "DDPM": 50, "DPM++ SDE": 50, "DPM++ 2M SDE": 50, "DPM++ 2M SDE Heun": 50,
       "DPM++ 3M SDE": 100}
DISTILLED = ["LCM", "TCD"]  # samplers for few-step distilled models: a distribution, not the data's


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def registry():
    from webui.tools.sampler_check import build_registry

    return build_registry(None)


def test_every_a1111_sampler_fits_flow_models(registry):
    """The dropdowns and /sdapi/v1/samplers list by `fits`: every built-in name fits flow now."""
    flow = set(registry.names("flow"))
    assert set(ODE) | set(SDE) | set(DISTILLED) | {"Flow Euler", "Flow Heun"} <= flow
    assert set(registry.names("epsilon")) - flow == set(), "a built-in sampler is still refused on flow models"
    assert "Flow Euler" not in registry.names("epsilon")


@pytest.mark.parametrize("shift", [1.0, 3.0])  # kiri-shapes-dit and Flux; SD3
def test_deterministic_samplers_follow_the_flow_ode(registry, shift):
    """Same starting noise, same ODE: each deterministic sampler's samples approach Flow Euler's at
    1000 steps as steps grow. Measured at shift 1 (mean distance per sample, 10 -> 50 steps): Euler
    0.082 -> 0.015, Heun 0.009 -> 0.001, DPM2 0.036 -> 0.002, LMS/PLMS 0.034 -> 0.001, DPM++ 2M
    0.061 -> 0.004, UniPC 0.055 -> 0.003, DDIM = Euler; at shift 3 (levels crowded near pure noise)
    Euler 0.134 -> 0.021, DPM++ 2M 0.112 -> 0.013, LMS 0.476 -> 0.003, the others at most 0.008."""
    from webui.engine.samplers.check import run_sampler

    n = 256
    reference = run_sampler(registry.resolve("Flow Euler")[0], "flow", 1000, n, 0, shift=shift)
    for name in ODE:
        sampler = registry.resolve(name)[0]
        errors = [float((run_sampler(sampler, "flow", steps, n, 0, shift=shift) - reference).norm(dim=1).mean())
                  for steps in (10, 50)]
        assert errors[1] < errors[0] and errors[1] < 0.03, (name, shift, errors)


def test_euler_and_ddim_on_flow_are_flow_euler(registry):
    from webui.engine.samplers.check import run_sampler

    flow_euler = run_sampler(registry.resolve("Flow Euler")[0], "flow", 7, 64, 3)
    for name in ("Euler", "DDIM"):
        assert torch.equal(run_sampler(registry.resolve(name)[0], "flow", 7, 64, 3), flow_euler), name


def test_stochastic_samplers_sample_the_flow_distribution(registry):
    """Measured at n = 1024 against a floor of 0.078: 0.058 to 0.092 (3M SDE at 100 steps 0.062),
    while 5 steps of DPM++ 2M SDE Heun measured 2.2 before the multistep's last-level fix."""
    from webui.engine.samplers.check import check_samplers, noise_floor

    for name, steps in SDE.items():
        rows = check_samplers(registry, [name], predictions=("flow",), steps=(steps,), n_samples=1024)
        floor, row = noise_floor(rows), rows[1]
        assert row.error is None, row
        assert row.distance < 1.5 * floor, (name, row.distance, floor)
    for name in DISTILLED:
        rows = check_samplers(registry, [name], predictions=("flow",), steps=(20,), n_samples=1024)
        assert rows[1].error is None and rows[1].distance < 3 * noise_floor(rows), rows[1]


def test_stochastic_samplers_are_seeded(registry):
    """Each image's noise comes from its own generator: the same seed repeats, another differs."""
    from webui.engine.samplers.check import run_sampler

    for name in list(SDE) + DISTILLED:
        sampler = registry.resolve(name)[0]
        a, b, c = (run_sampler(sampler, "flow", 6, 32, seed) for seed in (4, 4, 5))
        assert torch.equal(a, b), name
        assert not torch.allclose(a, c), name


@pytest.mark.parametrize("schedule", ["Karras", "Exponential", "Beta", "Uniform", "SGM Uniform"])
def test_schedule_types_on_flow_space_flow_levels(registry, schedule):
    """A function sampler on flow takes FlowMatchEuler's levels for the schedule (shift applied): in
    [0, 1], from pure noise to 0. Uniform and SGM Uniform are the flow default (uniform in time)."""
    from webui.engine.samplers.registry import FLOW

    config = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 3.0}
    scheduler = registry.resolve("Euler a")[0].build(config, schedule, FLOW)
    reference = registry.resolve("Flow Euler")[0].build(config, schedule, FLOW)
    automatic = registry.resolve("Euler a")[0].build(config, "Automatic", FLOW)
    try:
        for s in (scheduler, reference, automatic):
            s.set_timesteps(8)
        assert torch.allclose(scheduler.sigmas, reference.sigmas.to(torch.float32))
        assert float(scheduler.sigmas[0]) <= 1 and float(scheduler.sigmas[-1]) == 0
        same = torch.allclose(scheduler.sigmas, automatic.sigmas)
        assert same == (schedule in ("Uniform", "SGM Uniform")), (schedule, scheduler.sigmas, automatic.sigmas)
    finally:
        scheduler.close()
        automatic.close()


# --- through the engine: kiri-shapes-dit (the shipped rectified-flow DiT) and tiny Flux ------------

@pytest.fixture(scope="module")
def kiri(tmp_path_factory):
    from webui.bootstrap import build_engine
    from webui.engine.core.devices import DeviceChoice
    from webui.engine.settings import Settings

    settings = Settings(models_dir=ROOT / "models", outputs_dir=tmp_path_factory.mktemp("outputs"), save_images=False,
                        extensions_dir=EXTENSIONS, enabled_extensions=["example-dpmpp-2s-a", "example-euler-scheduler"])
    return build_engine(settings, DeviceChoice("cpu"))


def _draw(kiri, sampler: str, steps: int, seed: int = 3, model: str = "kiri-shapes-dit", **extra) -> np.ndarray:
    from webui.engine.generation.requests import Txt2ImgRequest

    result = kiri.txt2img(Txt2ImgRequest(prompt="a large red circle in the centre, blue background", seed=seed,
                                         steps=steps, cfg_scale=1.0, width=64, height=64, sampler_name=sampler,
                                         model=model, **extra))
    assert result.sampler_name == sampler
    return np.asarray(result.images[0].convert("RGB"), dtype=np.float64)


def test_euler_and_dpmpp_2m_on_the_dit_draw_flow_eulers_picture(kiri):
    """At enough steps every ODE solver lands on the same picture. Measured at 20 steps: Euler is
    Flow Euler exactly; DPM++ 2M differs by a mean of 0.9 of 255 per pixel channel (1.5 at 10
    steps; UniPC, Heun and LMS 0.85 to 0.93)."""
    flow_euler = _draw(kiri, "Flow Euler", 20)
    assert np.array_equal(_draw(kiri, "Euler", 20), flow_euler)
    dpmpp = _draw(kiri, "DPM++ 2M", 20)
    assert np.abs(dpmpp - flow_euler).mean() < 2.5, np.abs(dpmpp - flow_euler).mean()
    assert flow_euler.std() > 20  # a drawn scene, not a flat picture


def test_ancestral_samplers_on_the_dit_are_seeded(kiri):
    first, again, other = _draw(kiri, "Euler a", 6, seed=8), _draw(kiri, "Euler a", 6, seed=8), _draw(kiri, "Euler a", 6, seed=9)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_a_sampler_with_no_flow_form_is_refused_up_front_saying_why(kiri):
    from webui.engine.core.errors import InvalidRequest

    steps_seen: list[int] = []
    kiri.hooks.on_step.append(lambda info: steps_seen.append(info.step))
    try:
        with pytest.raises(InvalidRequest) as caught:
            _draw(kiri, "Euler Karras (example scheduler)", 3)
    finally:
        kiri.hooks.on_step.pop()
    assert caught.value.field == "sampler_name" and steps_seen == []
    assert "no flow-matching form" in str(caught.value) and "DPM++ 2S a" in str(caught.value)


@pytest.fixture(scope="module")
def flux_engine(family_models_dir, tmp_path_factory):
    from webui.bootstrap import build_engine
    from webui.engine.core.devices import DeviceChoice
    from webui.engine.settings import Settings

    settings = Settings(models_dir=family_models_dir, outputs_dir=tmp_path_factory.mktemp("flux-out"), save_images=False,
                        extensions_dir=EXTENSIONS, enabled_extensions=["example-dpmpp-2s-a", "example-euler-scheduler"])
    return build_engine(settings, DeviceChoice("cpu"))


def test_every_sampler_on_flux_follows_its_sigmas_or_is_refused_up_front(flux_engine):
    """Flux's pipeline hands the scheduler its own sigmas and a dynamic-shift mu: every flow form
    takes them (Kiri's functions through FlowMatchEuler's spacing); one that cannot is refused
    naming sampler_name before the first step."""
    from webui.engine.core.errors import InvalidRequest
    from webui.engine.generation.requests import Txt2ImgRequest

    drawn, refused, problems = [], [], []
    for sampler in flux_engine.samplers.all():
        try:
            result = flux_engine.txt2img(Txt2ImgRequest(prompt="a cat", steps=2, width=64, height=64, seed=2,
                                                        model="tiny-flux", sampler_name=sampler.name))
        except InvalidRequest as exc:
            refused.append(sampler.name)
            if exc.field != "sampler_name":
                problems.append(f"{sampler.name}: refused naming {exc.field}")
            continue
        pixels = np.asarray(result.images[0], dtype=np.float64)
        if not np.isfinite(pixels).all():
            problems.append(f"{sampler.name}: not finite")
        drawn.append(sampler.name)
    assert not problems, problems
    assert set(refused) == {"Flow Heun", "Euler Karras (example scheduler)"}, refused  # no sigmas; no flow form
    assert {"Euler", "Euler a", "DPM++ 2M", "Heun", "DPM++ SDE", "LMS", "DPM2", "DPM++ 2S a"} <= set(drawn)


def test_image_to_image_on_the_dit_with_function_samplers(kiri):
    """Image to image starts part-way through the schedule: the flow forms take the init latents
    noised to the first level (scale_noise) and run from there, at their own calls per step (two for
    Heun). Strength 0.5 keeps the init picture's layout: closer to it than a picture from noise."""
    from PIL import Image

    from webui.engine.generation.img2img import Img2ImgRequest

    init = _draw(kiri, "Flow Euler", 12, seed=21)
    init_image = Image.fromarray(init.astype(np.uint8))
    from_noise = _draw(kiri, "Flow Euler", 12, seed=22)
    for sampler in ("Euler a", "Heun", "DPM++ 2M", "DPM++ SDE"):
        steps_seen: list[int] = []
        kiri.hooks.on_step.append(lambda info: steps_seen.append(info.step))
        try:
            request = Img2ImgRequest(prompt="a large red circle in the centre, blue background", init_image=init_image,
                                     steps=8, width=64, height=64, seed=22, cfg_scale=1.0, denoising_strength=0.5,
                                     sampler_name=sampler, model="kiri-shapes-dit")
            first, again = kiri.img2img(request), kiri.img2img(request)
        finally:
            kiri.hooks.on_step.pop()
        out = np.asarray(first.images[0].convert("RGB"), dtype=np.float64)
        assert np.array_equal(out, np.asarray(again.images[0].convert("RGB"), dtype=np.float64)), sampler
        assert np.abs(out - init).mean() < np.abs(from_noise - init).mean(), sampler
        calls = 4 if sampler in ("Euler a", "DPM++ 2M") else 7  # 4 steps of 8; two calls a step but the last
        assert len(steps_seen) == 2 * calls, (sampler, steps_seen)


def test_image_to_image_with_a_function_sampler_on_an_sd_model(engine):
    """The same start part-way for noise-prediction models (x0 + sigma noise, k-diffusion's scale)."""
    from PIL import Image

    from webui.engine.generation.img2img import Img2ImgRequest

    picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    request = Img2ImgRequest(prompt="a red circle", init_image=picture, steps=6, width=64, height=64, seed=1,
                             denoising_strength=0.5, sampler_name="DPM++ 3M SDE")
    result = engine.img2img(request)
    pixels = np.asarray(result.images[0], dtype=np.float64)
    assert np.isfinite(pixels).all() and pixels.std() > 0
    assert np.array_equal(pixels, np.asarray(engine.img2img(request).images[0], dtype=np.float64))
