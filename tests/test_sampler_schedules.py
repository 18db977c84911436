"""Every sampler x every schedule type on both shipped models: refused before any work, or a picture.

Issue 11: kiri-shapes-dit (rectified flow) with DPM++ 2M and Karras, Exponential or Beta, or UniPC
with Exponential or Beta, gave all-black pictures. Those diffusers solvers ignore
`use_flow_sigmas` when a spacing flag is set and space variance-exploding sigmas (0.01 to 157)
instead, which a flow solver reads as noise fractions: log(1 - sigma) is NaN. Kiri now spaces the
flow sigmas itself (samplers/sampling.flow_spaced) and refuses up front any flow scheduler whose
noise levels leave [0, 1]; the runner's NaN check stays as the last safety net.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
MODELS = ["kiri-shapes-ldm", "kiri-shapes-dit"]
DIT_CONFIG = ROOT / "models" / "checkpoints" / "kiri-shapes-dit" / "scheduler" / "scheduler_config.json"

# A picture made from NaN latents is cast to all zeros, and a flat one is one colour: pixel std 0.
# The shipped models draw a coloured shape on a plain background even after 4 steps; every pair here
# measured a pixel std (0..255 scale) of 59 to 85 on the LDM and 81 to 83 on the DiT. 4 keeps a wide
# margin on both sides: a black, grey or single-colour picture fails, any drawn scene passes.
MIN_STD = 4.0


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """64x64 on two shared cores: a second torch thread mostly waits (measured 2.3 vs 2.6-5 s a picture)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def kiri(tmp_path_factory):
    from webui.bootstrap import build_engine
    from webui.engine.core.devices import DeviceChoice
    from webui.engine.settings import Settings

    settings = Settings(models_dir=ROOT / "models", outputs_dir=tmp_path_factory.mktemp("outputs"), save_images=False)
    return build_engine(settings, DeviceChoice("cpu"))


def _dit_config() -> dict:
    import json

    return json.loads(DIT_CONFIG.read_text())


def _same_run_key(sampler, schedule: str, model) -> tuple | None:
    """What decides the run: scheduler class, config, and its steps at 4 steps (None if it does not build)."""
    from webui.engine.core.errors import InvalidRequest

    if model.prediction not in sampler.fits:
        return None  # refused by the engine before any scheduler is built
    try:
        scheduler = sampler.build(model.base_scheduler_config, schedule, model.prediction)
    except InvalidRequest:
        return None
    try:
        scheduler.set_timesteps(4)
        config = sorted((k, repr(v)) for k, v in dict(scheduler.config).items())
        return (type(scheduler).__name__, sampler.function, tuple(config),
                tuple(scheduler.timesteps.tolist()), tuple(getattr(scheduler, "sigmas", scheduler.timesteps).tolist()))
    finally:
        getattr(scheduler, "close", lambda: None)()


@pytest.mark.parametrize("model_name", MODELS)
def test_every_sampler_and_schedule_is_refused_up_front_or_draws_a_picture(kiri, model_name):
    """Each pair through the engine, as a user's request: an InvalidRequest naming the field before
    the first step, or a picture that is not flat. A pair whose scheduler is identical to one
    already drawn (same class, config and noise levels; "Uniform" is often the default spacing)
    would compute the same picture, so it is counted, not run again: the file stays fast."""
    from webui.engine.core.errors import InvalidRequest
    from webui.engine.generation.requests import Txt2ImgRequest
    from webui.engine.samplers.registry import SCHEDULES

    model = kiri.load_model(model_name)
    steps_seen: list[int] = []
    kiri.hooks.on_step.append(lambda info: steps_seen.append(info.step))
    problems, drawn, refused, same, stds = [], {}, 0, 0, []
    started = time.perf_counter()
    try:
        for sampler in kiri.samplers.all():
            for schedule in SCHEDULES:
                pair = f"{sampler.name} / {schedule}"
                key = _same_run_key(sampler, schedule, model)
                if key is not None and key in drawn:
                    same += 1
                    continue
                steps_seen.clear()
                # CFG scale 1: one model call per step (the schedule, not guidance, is under test).
                request = Txt2ImgRequest(prompt="a large red circle in the centre, blue background", seed=1, steps=4,
                                         cfg_scale=1.0, width=64, height=64, sampler_name=sampler.name,
                                         scheduler=schedule, model=model_name)
                try:
                    result = kiri.txt2img(request)
                except InvalidRequest as exc:
                    refused += 1
                    if exc.field not in ("scheduler", "sampler_name"):
                        problems.append(f"{pair}: refused naming {exc.field!r}: {exc}")
                    elif steps_seen:
                        problems.append(f"{pair}: refused only after {len(steps_seen)} model calls: {exc}")
                    continue
                except Exception as exc:  # noqa: BLE001 - NonFiniteImage and any crash are failures here
                    problems.append(f"{pair}: {type(exc).__name__}: {exc}")
                    continue
                if key is None:
                    problems.append(f"{pair}: drew a picture but its scheduler did not build for this model")
                drawn[key] = pair
                pixels = np.asarray(result.images[0].convert("RGB"), dtype=np.float64)
                std = float(pixels.std())
                stds.append(std)
                if std < MIN_STD:
                    problems.append(f"{pair}: a flat picture (pixel std {std:.2f})")
                if len(steps_seen) < 4:
                    problems.append(f"{pair}: {len(steps_seen)} model calls reported for 4 steps")
    finally:
        kiri.hooks.on_step.pop()
    print(f"\n{model_name}: {len(drawn)} drawn (pixel std {min(stds, default=0):.1f}..{max(stds, default=0):.1f}), "
          f"{same} same as one drawn, {refused} refused, {time.perf_counter() - started:.1f}s")
    assert not problems, "\n".join(problems)
    assert len(drawn) >= 10  # the loop really generated: both models take many samplers


def test_the_pairs_that_went_black_on_the_flow_model_now_draw(kiri):
    """The exact pairs of issue 11, at another step count: each a picture, none refused."""
    from webui.engine.generation.requests import Txt2ImgRequest

    for sampler, schedule in [("DPM++ 2M", "Karras"), ("DPM++ 2M", "Exponential"), ("DPM++ 2M", "Beta"),
                              ("UniPC", "Exponential"), ("UniPC", "Beta")]:
        result = kiri.txt2img(Txt2ImgRequest(prompt="a small yellow square on the left, green background", seed=5,
                                             steps=9, cfg_scale=1.0, width=64, height=64, sampler_name=sampler,
                                             scheduler=schedule, model="kiri-shapes-dit"))  # the sweep ran 4 steps
        pixels = np.asarray(result.images[0].convert("RGB"), dtype=np.float64)
        assert pixels.std() >= MIN_STD, (sampler, schedule, pixels.std())
        assert result.schedule == schedule and result.sampler_name == sampler


@pytest.mark.parametrize("sampler_name", ["DPM++ 2M", "UniPC"])
@pytest.mark.parametrize("schedule", ["Karras", "Exponential", "Beta"])
def test_flow_spacings_are_flow_noise_fractions_spaced_as_named(kiri, sampler_name, schedule):
    """The solver's sigmas stay in (0, 1), fall strictly, end at 0, and are spaced as the schedule says."""
    import torch

    from webui.engine.samplers.registry import FLOW

    config = _dit_config()
    sampler = kiri.samplers.resolve(sampler_name)[0]
    scheduler = sampler.build(config, schedule, FLOW)
    # diffusers' flow solvers read log(1 - sigma) and must stop below 1; Kiri's flow functions
    # (flow_samplers.py) start at pure noise, sigma 1, as FlowMatchEuler does.
    top = 1.0 + 1e-9 if sampler.on(FLOW).kind == "function" else 1.0
    reference = kiri.samplers.resolve("Flow Euler")[0].build(config, schedule, FLOW)
    for steps in (2, 10, 50):
        scheduler.set_timesteps(steps)
        sigmas = scheduler.sigmas.to(torch.float64)
        levels = sigmas[:-1]
        assert len(scheduler.timesteps) == steps and len(sigmas) == steps + 1
        assert bool(sigmas.isfinite().all()) and float(levels.min()) > 0 and float(sigmas.max()) < top
        assert bool((sigmas[1:] < sigmas[:-1]).all()), sigmas
        assert float(sigmas[-1]) == 0.0
        # From (just below) pure noise down to the model's smallest training noise level.
        assert float(levels[0]) > 0.99 and float(levels[-1]) < 0.005, levels
        # The model is evaluated at the timestep of each noise level.
        assert torch.allclose(scheduler.timesteps.to(torch.float64), levels * config["num_train_timesteps"], atol=1.0)
        index = torch.arange(steps, dtype=torch.float64)
        if schedule == "Karras":  # sigma^(1/rho) falls linearly (rho = 7)
            _assert_linear(index, levels ** (1 / 7))
        elif schedule == "Exponential":  # log sigma falls linearly
            _assert_linear(index, levels.log())
        else:  # Beta: the ends matter little, so Flow Euler's Beta sigmas are the reference
            reference.set_timesteps(steps)
            assert torch.allclose(sigmas[1:-1], reference.sigmas[1:-1].to(torch.float64), atol=0.005), (sigmas, reference.sigmas)


def test_fixed_flow_pairs_sample_the_right_distribution():
    """Not only finite: on the analytic flow model of the conformance kit (an ideal denoiser of a
    known 2-D mixture), 25 steps of each fixed pair land as close to the data as a second draw of
    the data itself, within 3x (the bar tests/test_sampler_check.py uses). Measured here: 0.06 to
    0.12 against a floor of 0.065, while 4 steps (under-converged) measure 0.5 and 2 steps 1.4."""
    import torch

    from webui.engine.samplers.check import ring_mixture, run_sampler, sliced_wasserstein
    from webui.engine.samplers.registry import BUILTIN_SAMPLERS, SamplerRegistry

    registry = SamplerRegistry()
    for sampler in BUILTIN_SAMPLERS:
        registry.register(sampler)
    mixture, n = ring_mixture(), 2048
    g = torch.Generator().manual_seed(11)
    floor = sliced_wasserstein(mixture.sample(n, g), mixture.sample(n, g))
    for name, schedule in [("DPM++ 2M", "Karras"), ("DPM++ 2M", "Exponential"), ("DPM++ 2M", "Beta"),
                           ("UniPC", "Exponential"), ("UniPC", "Beta")]:
        samples = run_sampler(registry.resolve(name)[0], "flow", 25, n, 3, schedule)
        assert bool(samples.isfinite().all()), (name, schedule)
        distance = sliced_wasserstein(samples, mixture.sample(n, g))
        assert distance < 3 * floor, (name, schedule, distance, floor)


def _assert_linear(x, y) -> None:
    if len(x) < 3:
        return
    slope = (y[-1] - y[0]) / (x[-1] - x[0])
    assert float((y - (y[0] + slope * (x - x[0]))).abs().max()) < 1e-4 * float(y.abs().max()), y


def test_a_flow_scheduler_whose_noise_levels_leave_0_to_1_is_refused_before_any_work(kiri):
    """The class of bug, whoever's scheduler: an extension's solver that spaces the wrong sigmas."""
    from diffusers import DPMSolverMultistepScheduler

    from webui.engine.core.errors import InvalidRequest
    from webui.engine.generation.requests import Txt2ImgRequest
    from webui.engine.samplers.registry import ALL_PREDICTIONS, Sampler, SamplerRegistry

    class VeSigmas(DPMSolverMultistepScheduler):  # as diffusers' own Karras flag did on flow models
        def set_timesteps(self, num_inference_steps=None, device=None, **kwargs):
            super().set_timesteps(num_inference_steps, device, **kwargs)
            self.sigmas = self.sigmas * 150

    broken = Sampler("VE Solver", VeSigmas, {}, ALL_PREDICTIONS, source="test")
    with pytest.raises(InvalidRequest) as refused:
        broken.build(_dit_config(), "Karras", "flow")
    assert refused.value.field == "scheduler"
    message = str(refused.value)
    assert "VE Solver with Karras does not work with flow-matching models" in message and "Flow Euler" in message

    registry: SamplerRegistry = kiri.samplers
    registry.register(broken)
    steps_seen: list[int] = []
    kiri.hooks.on_step.append(lambda info: steps_seen.append(info.step))
    try:
        with pytest.raises(InvalidRequest) as through_engine:
            kiri.txt2img(Txt2ImgRequest(prompt="a red circle", steps=4, width=64, height=64, sampler_name="VE Solver",
                                        scheduler="Automatic", model="kiri-shapes-dit"))
    finally:
        kiri.hooks.on_step.pop()
        registry._samplers.pop("VE Solver")
    assert through_engine.value.field == "scheduler" and steps_seen == []


def test_nan_latents_fail_the_job_with_a_clear_message_instead_of_a_black_picture(tmp_path):
    """The runner's safety net: a sampler that injects NaN (in a fresh engine) fails the job."""
    from webui.bootstrap import build_engine
    from webui.engine.core.devices import DeviceChoice
    from webui.engine.generation.requests import Txt2ImgRequest
    from webui.engine.generation.runner import NonFiniteImage
    from webui.engine.samplers.registry import ALL_PREDICTIONS, Sampler
    from webui.engine.settings import Settings

    def sample_nan(denoiser, x, sigmas, *, generator=None, callback=None):
        for i in range(len(sigmas) - 1):
            denoised = denoiser(x, sigmas[i])
            x = denoised + (x - denoised) * (sigmas[i + 1] / sigmas[i])
            if i == len(sigmas) - 3:
                x = x.clone()
                x[0, 0, 0, 0] = float("nan")  # one bad value spreads through the next model call
        return x

    engine = build_engine(Settings(models_dir=ROOT / "models", outputs_dir=tmp_path, save_images=True), DeviceChoice("cpu"))
    engine.samplers.register(Sampler("NaN Euler", function=sample_nan, fits=ALL_PREDICTIONS, source="test"))
    for model in MODELS:
        with pytest.raises(NonFiniteImage) as failed:
            engine.txt2img(Txt2ImgRequest(prompt="a red circle", steps=4, cfg_scale=1.0, width=64, height=64, seed=3,
                                          sampler_name="NaN Euler", model=model))
        message = str(failed.value)
        assert "NaN" in message and "choose another schedule type or sampler" in message and model in message
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # nothing saved
    # The same engine still draws with a working sampler: the failure was the job's only.
    ok = engine.txt2img(Txt2ImgRequest(prompt="a red circle", steps=4, cfg_scale=1.0, width=64, height=64, seed=3, model=MODELS[1]))
    assert np.asarray(ok.images[0].convert("RGB"), dtype=np.float64).std() >= MIN_STD
