"""Sampler conformance: run each sampler on the analytic model and measure how far off it lands.

The model is the ideal denoiser of a known Gaussian mixture (see analytic.py), so the distance
between generated and true samples is the sampler's own error. The noise floor (two independent
true sample sets) says which distances are indistinguishable from zero.
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from webui.engine.samplers.analytic import FLOW, AnalyticModel, GaussianMixture, ring_mixture
from webui.engine.samplers.registry import Sampler, SamplerRegistry

PREDICTIONS = ("epsilon", "v_prediction", "flow")
STEPS = (5, 10, 20, 50)
BASELINE = "noise floor"
DEFAULT_SAMPLES = 2048


def scheduler_config(prediction: str, shift: float = 1.0) -> dict:
    """SD 1.5's scheduler config (epsilon/v), or a flow-matching one with this shift (SD3 uses 3.0,
    kiri-shapes-dit 1.0).

    clip_sample=False matters: DDIM/DDPM default to clipping x0 to [-1, 1], which SD latents
    (and this mixture) exceed; real SD configs turn it off.
    """
    if prediction == FLOW:
        return {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": shift}
    return {"_class_name": "PNDMScheduler", "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
            "beta_schedule": "scaled_linear", "prediction_type": prediction, "clip_sample": False,
            "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1}


def run_sampler(sampler: Sampler, prediction: str, steps: int, n_samples: int, seed: int, schedule: str = "Automatic",
                mixture: GaussianMixture | None = None, shift: float = 1.0) -> torch.Tensor:
    """n_samples (n, D) generated exactly as a diffusers pipeline drives its scheduler and model."""
    mixture = mixture or ring_mixture()
    config = scheduler_config(prediction, shift)
    model = AnalyticModel(mixture, prediction, config)
    generator = torch.Generator().manual_seed(seed)
    scheduler = sampler.build(config, schedule=schedule, prediction=prediction, generator=generator)
    try:
        scheduler.set_timesteps(steps, device="cpu")
        # Latent-shaped like a pipeline's: (batch, channels, h, w) with one "pixel".
        x = torch.randn((n_samples, mixture.dim, 1, 1), generator=generator, dtype=torch.float32)
        x = x * getattr(scheduler, "init_noise_sigma", 1.0)  # flow schedulers have none: SD3 starts at N(0, I)
        step_params = inspect.signature(scheduler.step).parameters
        step_kwargs: dict[str, Any] = {"generator": generator} if "generator" in step_params else {}
        scale = getattr(scheduler, "scale_model_input", None)
        for t in scheduler.timesteps:
            model_input = scale(x, t) if scale is not None else x
            out = model(model_input, t.expand(n_samples) if prediction == FLOW else t)
            x = scheduler.step(out, t, x, return_dict=False, **step_kwargs)[0]
        return x.reshape(n_samples, -1).double()
    finally:
        close = getattr(scheduler, "close", None)
        if callable(close):
            close()


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, projections: int = 256, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance between two sample sets (n, D) and (m, D).

    Each random direction reduces the problem to 1-D, where W2 is the distance between sorted
    samples (quantiles on a common grid when n != m).
    """
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need two (n, D) sample sets of the same D; got {tuple(a.shape)} and {tuple(b.shape)}")
    a, b = a.double(), b.double()
    g = torch.Generator().manual_seed(seed)
    directions = torch.randn((a.shape[1], projections), generator=g, dtype=torch.float64)
    directions = directions / directions.norm(dim=0, keepdim=True)
    pa, pb = (a @ directions).sort(0).values, (b @ directions).sort(0).values
    if pa.shape[0] != pb.shape[0]:
        grid = (torch.arange(min(len(pa), len(pb)), dtype=torch.float64) + 0.5) / min(len(pa), len(pb))
        pa, pb = torch.quantile(pa, grid, dim=0), torch.quantile(pb, grid, dim=0)
    return float(((pa - pb) ** 2).mean(0).mean().sqrt())


@dataclass(frozen=True)
class CheckRow:
    """One measurement; `error` is set (and `distance` is NaN) when the sampler failed."""

    sampler: str
    prediction: str
    steps: int
    distance: float
    seconds: float = 0.0
    error: str | None = None


def check_samplers(registry: SamplerRegistry, names: Iterable[str] | None = None,
                   predictions: Sequence[str] = PREDICTIONS, steps: Sequence[int] = STEPS,
                   n_samples: int = DEFAULT_SAMPLES, seed: int = 0, schedule: str = "Automatic",
                   mixture: GaussianMixture | None = None, shift: float = 1.0) -> list[CheckRow]:
    """Distance to the true distribution for every (sampler, prediction it fits, step count).

    The first row is the noise floor. A sampler that raises or produces non-finite samples gets
    an error row; the check goes on.
    """
    mixture = mixture or ring_mixture()
    samplers = [registry.resolve(n)[0] for n in names] if names else registry.all()
    # The reference set uses its own seed, apart from the samplers' noise.
    reference = mixture.sample(n_samples, torch.Generator().manual_seed(seed + 1_000_003))
    # The floor is itself noisy: average a few independent true-vs-true draws.
    floor = float(np.mean([sliced_wasserstein(mixture.sample(n_samples, torch.Generator().manual_seed(seed + 2_000_003 + i)),
                                              reference, seed=seed) for i in range(4)]))
    rows = [CheckRow(BASELINE, "-", 0, floor)]
    for sampler in samplers:
        for prediction in predictions:
            if prediction not in sampler.fits:
                continue
            for n_steps in steps:
                start = time.perf_counter()
                try:
                    generated = run_sampler(sampler, prediction, n_steps, n_samples, seed, schedule, mixture, shift)
                    if not torch.isfinite(generated).all():
                        raise FloatingPointError("non-finite samples")
                    row = CheckRow(sampler.name, prediction, n_steps, sliced_wasserstein(generated, reference, seed=seed),
                                   time.perf_counter() - start)
                except Exception as exc:  # noqa: BLE001 - one broken sampler must not stop the check
                    row = CheckRow(sampler.name, prediction, n_steps, math.nan, time.perf_counter() - start,
                                   f"{type(exc).__name__}: {exc}")
                rows.append(row)
    return rows


def noise_floor(rows: Sequence[CheckRow]) -> float:
    return next((r.distance for r in rows if r.sampler == BASELINE), math.nan)


def _series(rows: Sequence[CheckRow]) -> dict[tuple[str, str], dict[int, CheckRow]]:
    series: dict[tuple[str, str], dict[int, CheckRow]] = {}
    for r in rows:
        if r.sampler != BASELINE:
            series.setdefault((r.sampler, r.prediction), {})[r.steps] = r
    return series


def render_table(rows: Sequence[CheckRow]) -> str:
    """A markdown table: one line per (sampler, prediction), one column per step count."""
    steps = sorted({r.steps for r in rows if r.sampler != BASELINE})
    floor = noise_floor(rows)
    lines = ["| sampler | prediction | " + " | ".join(f"{s} steps" for s in steps) + " |",
             "| --- | --- | " + " | ".join("---:" for _ in steps) + " |"]
    errors: list[str] = []
    for (sampler, prediction), by_steps in _series(rows).items():
        cells = []
        for s in steps:
            r = by_steps.get(s)
            if r is None:
                cells.append("")
            elif r.error:
                cells.append("error")
                errors.append(f"- {sampler} / {prediction} / {s} steps: {r.error}")
            else:
                cells.append(f"{r.distance:.4f}")
        lines.append(f"| {sampler} | {prediction} | " + " | ".join(cells) + " |")
    lines.append(f"| {BASELINE} (true vs true) | - | " + " | ".join(f"{floor:.4f}" for _ in steps) + " |")
    text = "\n".join(lines)
    if errors:
        text += "\n\nErrors:\n" + "\n".join(dict.fromkeys(errors))
    return text


def _colour(i: int, n: int) -> tuple[int, int, int]:
    hsv = np.array([[[int(180 * i / max(n, 1)) % 180, 220, 200 if i % 2 else 160]]], dtype=np.uint8)
    import cv2

    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def render_plot(rows: Sequence[CheckRow], path: str | Path) -> Path:
    """A log-log chart of distance against steps, one panel per prediction and one line per
    sampler, with the noise floor dashed; drawn with OpenCV (no plotting library needed)."""
    import cv2

    path = Path(path)
    series = _series(rows)
    floor = noise_floor(rows)
    predictions = list(dict.fromkeys(p for _, p in series)) or ["-"]
    samplers = list(dict.fromkeys(s for s, _ in series))
    colours = {s: _colour(i, len(samplers)) for i, s in enumerate(samplers)}
    values = [r.distance for by in series.values() for r in by.values() if math.isfinite(r.distance) and r.distance > 0]
    if math.isfinite(floor) and floor > 0:
        values.append(floor)
    steps = sorted({s for by in series.values() for s in by}) or [1, 10]
    lo_y, hi_y = (math.log10(min(values)) - 0.1, math.log10(max(values)) + 0.1) if values else (-2.0, 1.0)
    lo_y, hi_y = math.floor(lo_y * 2) / 2, math.ceil(hi_y * 2) / 2
    lo_x, hi_x = math.log10(min(steps)), math.log10(max(steps))
    if hi_x - lo_x < 1e-9:
        lo_x, hi_x = lo_x - 0.5, hi_x + 0.5

    pw, ph, margin_l, margin_b, margin_t, legend_w = 420, 360, 70, 50, 40, 250
    width = margin_l + len(predictions) * (pw + 30) + legend_w
    height = max(margin_t + ph + margin_b, margin_t + 16 * (len(samplers) + 2))
    img = np.full((height, width, 3), 255, np.uint8)
    font, grey, black = cv2.FONT_HERSHEY_SIMPLEX, (200, 200, 200), (0, 0, 0)

    for k, prediction in enumerate(predictions):
        x0, y0 = margin_l + k * (pw + 30), margin_t

        def to_px(steps_: float, dist: float) -> tuple[int, int]:
            fx = (math.log10(steps_) - lo_x) / (hi_x - lo_x)
            fy = (math.log10(dist) - lo_y) / (hi_y - lo_y)
            return int(x0 + fx * pw), int(y0 + (1 - fy) * ph)

        for e in np.arange(lo_y, hi_y + 1e-9, 0.5):  # horizontal grid, labelled at powers of ten
            _, py = to_px(steps[0], 10**e)
            cv2.line(img, (x0, py), (x0 + pw, py), grey, 1)
            if k == 0 and abs(e - round(e)) < 1e-9:
                cv2.putText(img, f"1e{int(round(e))}", (x0 - 48, py + 4), font, 0.4, black, 1, cv2.LINE_AA)
        for s in steps:
            px, _ = to_px(s, 10**lo_y)
            cv2.line(img, (px, y0), (px, y0 + ph), grey, 1)
            cv2.putText(img, str(s), (px - 8, y0 + ph + 16), font, 0.4, black, 1, cv2.LINE_AA)
        cv2.rectangle(img, (x0, y0), (x0 + pw, y0 + ph), black, 1)
        cv2.putText(img, prediction, (x0 + pw // 2 - 40, y0 - 12), font, 0.55, black, 1, cv2.LINE_AA)
        cv2.putText(img, "steps", (x0 + pw // 2 - 20, y0 + ph + 38), font, 0.45, black, 1, cv2.LINE_AA)
        if math.isfinite(floor) and floor > 0:  # dashed noise floor
            _, py = to_px(steps[0], floor)
            for dx in range(0, pw, 12):
                cv2.line(img, (x0 + dx, py), (x0 + min(dx + 6, pw), py), black, 1, cv2.LINE_AA)
        for (sampler, pred), by_steps in series.items():
            if pred != prediction:
                continue
            points = [to_px(s, r.distance) for s, r in sorted(by_steps.items()) if math.isfinite(r.distance) and r.distance > 0]
            points = [(px, min(max(py, y0), y0 + ph)) for px, py in points]
            if len(points) > 1:
                cv2.polylines(img, [np.array(points, np.int32)], False, colours[sampler], 2, cv2.LINE_AA)
            for p in points:
                cv2.circle(img, p, 3, colours[sampler], -1, cv2.LINE_AA)
    label = "sliced W2 to true distribution"
    text_img = np.full((20, 260, 3), 255, np.uint8)
    cv2.putText(text_img, label, (2, 14), font, 0.45, black, 1, cv2.LINE_AA)
    rotated = cv2.rotate(text_img, cv2.ROTATE_90_COUNTERCLOCKWISE)
    top = margin_t + max(0, (ph - rotated.shape[0]) // 2)
    img[top:top + rotated.shape[0], 2:2 + rotated.shape[1]] = rotated

    lx, ly = width - legend_w + 10, margin_t
    for i, sampler in enumerate(samplers):
        y = ly + 16 * i
        cv2.line(img, (lx, y), (lx + 20, y), colours[sampler], 2, cv2.LINE_AA)
        cv2.putText(img, sampler, (lx + 26, y + 4), font, 0.4, black, 1, cv2.LINE_AA)
    y = ly + 16 * len(samplers)
    for dx in range(0, 20, 8):
        cv2.line(img, (lx + dx, y), (lx + dx + 4, y), black, 1)
    cv2.putText(img, BASELINE, (lx + 26, y + 4), font, 0.4, black, 1, cv2.LINE_AA)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"could not write {path}")
    return path
