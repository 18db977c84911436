"""The sampler conformance kit: the analytic model is right, and deterministic samplers converge on it."""

from __future__ import annotations

import math

import pytest
import torch

from webui.engine.samplers.analytic import AnalyticModel, GaussianMixture, alphas_cumprod, ring_mixture
from webui.engine.samplers.check import (
    BASELINE,
    CheckRow,
    check_samplers,
    render_plot,
    render_table,
    scheduler_config,
    sliced_wasserstein,
)
from webui.engine.samplers.registry import Sampler, SamplerRegistry
from webui.tools.sampler_check import build_registry

DETERMINISTIC = {
    "epsilon": ["Euler", "Heun", "DPM++ 2M", "DDIM", "UniPC", "LMS"],
    "v_prediction": ["Euler", "Heun", "DPM++ 2M", "DDIM", "UniPC", "LMS"],
    "flow": ["Flow Euler", "Flow Heun"],
}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors on shared cores: extra threads only add overhead (10x here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def registry() -> SamplerRegistry:
    return build_registry(None)  # the built-ins, through the extension loader as at start


def test_stochastic_3m_sde_converges(registry):
    """DPM++ 3M SDE is Kiri's own function sampler (k-diffusion's form, as AUTOMATIC1111 runs it)
    because diffusers 0.42's diverges as steps grow. At eta=1 it needs many steps, but it gets there."""
    rows = check_samplers(registry, ["DPM++ 3M SDE"], predictions=("epsilon",), steps=(10, 25, 50, 100), n_samples=4096)
    floor, distances = rows[0].distance, [r.distance for r in rows[1:]]
    assert distances == sorted(distances, reverse=True), rows
    assert distances[-1] < 3 * floor, rows


def tiny_mixture() -> GaussianMixture:
    return GaussianMixture(torch.tensor([0.3, 0.7], dtype=torch.float64), torch.tensor([[-1.0], [2.0]], dtype=torch.float64),
                           torch.tensor([0.2, 0.5], dtype=torch.float64))


def test_ideal_denoiser_limits():
    mixture = ring_mixture()
    x = torch.randn((64, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    assert torch.allclose(mixture.ideal_denoiser(x, 1e-6), x, atol=1e-6)  # no noise: x is x0
    far = mixture.ideal_denoiser(x, 1e4)
    assert torch.allclose(far, mixture.mean().expand_as(far), atol=1e-6)  # all noise: the data mean


def test_ideal_denoiser_matches_monte_carlo():
    """E[x0 | x] by rejection-free importance: bin noisy samples near x and average their x0."""
    mixture, sigma = tiny_mixture(), 0.8
    g = torch.Generator().manual_seed(0)
    x0 = mixture.sample(400_000, g)
    noisy = x0 + sigma * torch.randn(x0.shape, generator=g, dtype=torch.float64)
    for point in (-1.5, 0.3, 1.0, 2.5):
        near = (noisy[:, 0] - point).abs() < 0.02
        estimate = x0[near, 0].mean()
        exact = mixture.ideal_denoiser(torch.tensor([[point]], dtype=torch.float64), sigma)[0, 0]
        assert abs(float(estimate - exact)) < 0.05, (point, float(estimate), float(exact))


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "flow"])
def test_parameterisations_recover_x0(prediction):
    """Each stand-in's output, converted back as a sampler would, gives the ideal denoiser's x0."""
    mixture = ring_mixture()
    config = scheduler_config(prediction)
    model = AnalyticModel(mixture, prediction, config)
    g = torch.Generator().manual_seed(1)
    x0 = mixture.sample(32, g)
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    for t in (0.0, 10.5, 400.0, 999.0):
        if prediction == "flow":
            s = t / 1000
            x = (1 - s) * x0 + s * noise
            v = model(x, torch.tensor(t))
            recovered = x - s * v  # x - s (noise - x0) = x0 when the velocity is right
            expected = mixture.ideal_denoiser(x / (1 - s), s / (1 - s)) if s > 0 else x
        else:
            abar = float(alphas_cumprod(config)[int(t)]) if t == int(t) else None
            sigma = float(model.sigma_at(torch.tensor([t]))[0])
            if abar is not None:
                assert math.isclose(sigma, ((1 - abar) / abar) ** 0.5, rel_tol=1e-9)
            a, b = 1 / (1 + sigma**2) ** 0.5, sigma / (1 + sigma**2) ** 0.5  # sqrt(abar), sqrt(1 - abar)
            x = a * x0 + b * noise
            out = model(x, torch.tensor(t))
            recovered = (x - b * out) / a if prediction == "epsilon" else a * x - b * out
            expected = mixture.ideal_denoiser(x / a, sigma)
        assert torch.allclose(recovered, expected, atol=1e-6), (prediction, t)


def test_sliced_wasserstein_sees_a_shift():
    g = torch.Generator().manual_seed(0)
    a = torch.randn((2000, 2), generator=g, dtype=torch.float64)
    assert sliced_wasserstein(a, a) == 0.0
    shifted = sliced_wasserstein(a, a + torch.tensor([1.0, 0.0], dtype=torch.float64))
    assert 0.5 < shifted < 1.0  # |shift| * E|cos| over random directions, ~0.71 in 2-D


def test_deterministic_samplers_converge(registry):
    rows = []
    for prediction, names in DETERMINISTIC.items():
        rows += check_samplers(registry, names, [prediction], steps=(5, 50), n_samples=4096, seed=0)
    floor = rows[0].distance
    assert rows[0].sampler == BASELINE and 0 < floor < 0.08
    errors = [r for r in rows if r.error]
    assert not errors, errors
    by = {(r.sampler, r.prediction, r.steps): r.distance for r in rows if r.sampler != BASELINE}
    failures = []
    for prediction, names in DETERMINISTIC.items():
        for name in names:
            coarse, fine = by[(name, prediction, 5)], by[(name, prediction, 50)]
            if not (fine < coarse and fine < 1.5 * floor):
                failures.append(f"{name}/{prediction}: 5 steps {coarse:.4f}, 50 steps {fine:.4f}, floor {floor:.4f}")
    assert not failures, "\n".join(failures)


def test_errors_are_rows_not_crashes(registry):
    """A sampler that raises is recorded; one that does not fit a prediction is skipped."""
    rows = check_samplers(registry, ["Euler", "Flow Euler"], ["epsilon"], steps=(3,), n_samples=64)
    assert [(r.sampler, r.prediction) for r in rows[1:]] == [("Euler", "epsilon")]
    broken = SamplerRegistry()
    broken.register(Sampler("Broken", "diffusers:NoSuchScheduler"))
    broken.register(Sampler("Euler", "diffusers:EulerDiscreteScheduler"))
    rows = check_samplers(broken, predictions=["epsilon"], steps=(3,), n_samples=64)
    assert rows[1].sampler == "Broken" and "NoSuchScheduler" in rows[1].error and math.isnan(rows[1].distance)
    assert rows[2].sampler == "Euler" and rows[2].error is None  # the check went on
    assert "error" in render_table(rows)


def test_table_and_plot(tmp_path):
    import cv2

    rows = [CheckRow(BASELINE, "-", 0, 0.05)]
    for name, scale in (("A", 1.0), ("B", 0.5)):
        for prediction in ("epsilon", "flow"):
            rows += [CheckRow(name, prediction, s, scale / s + 0.05) for s in (5, 10, 20, 50)]
    rows.append(CheckRow("C", "epsilon", 5, math.nan, error="ValueError: boom"))
    table = render_table(rows)
    assert "| A | epsilon |" in table and "noise floor" in table and "ValueError: boom" in table
    path = render_plot(rows, tmp_path / "check.png")
    image = cv2.imread(str(path))
    assert image is not None and image.shape[0] > 300 and image.shape[1] > 800
    assert len({tuple(p) for p in image.reshape(-1, 3)[::7]}) > 10  # coloured lines, not a blank page
