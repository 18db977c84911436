"""The sampler registry: names users pick (AUTOMATIC1111's), mapped to diffusers schedulers.

Built-in samplers register through the same `SamplerRegistry.register` that extensions use.
"""

from __future__ import annotations

import importlib
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidRequest

log = logging.getLogger(__name__)

EPS, V, FLOW = "epsilon", "v_prediction", "flow"
NOISE_PREDICTION = frozenset({EPS, V})


@dataclass(frozen=True)
class Sampler:
    """A named way to step through the denoising schedule: a scheduler class plus its options."""

    name: str
    scheduler: str | type  # a diffusers scheduler class, or "module:Class" imported on first use
    options: dict[str, Any] = field(default_factory=dict)  # config overrides for from_config
    fits: frozenset[str] = NOISE_PREDICTION  # prediction types this sampler can drive
    aliases: tuple[str, ...] = ()
    source: str = "built-in"

    def scheduler_class(self) -> type:
        if isinstance(self.scheduler, str):
            module_name, _, attr = self.scheduler.partition(":")
            return getattr(importlib.import_module(module_name), attr)
        return self.scheduler

    def build(self, base_config: dict) -> Any:
        """A fresh scheduler: the model's own config, with this sampler's options on top."""
        return self.scheduler_class().from_config(base_config, **self.options)


class SamplerRegistry:
    """Samplers keyed by name; an unknown name is an error that lists the valid ones."""

    def __init__(self) -> None:
        self._samplers: dict[str, Sampler] = {}
        self._lock = threading.Lock()

    def register(self, sampler: Sampler, override: bool = False) -> None:
        with self._lock:
            if sampler.name in self._samplers:
                if not override:
                    raise ValueError(f"a sampler named {sampler.name!r} is already registered")
                log.warning("sampler %r from %s overrides the one from %s", sampler.name, sampler.source, self._samplers[sampler.name].source)
            self._samplers[sampler.name] = sampler

    def names(self, prediction: str | None = None) -> list[str]:
        with self._lock:
            return [s.name for s in self._samplers.values() if prediction is None or prediction in s.fits]

    def all(self) -> list[Sampler]:
        with self._lock:
            return list(self._samplers.values())

    def get(self, name: str, prediction: str | None = None) -> Sampler:
        with self._lock:
            sampler = self._samplers.get(name) or next(
                (s for s in self._samplers.values() if name in s.aliases), None
            )
        if sampler is None:
            raise InvalidRequest("sampler_name", f"unknown sampler {name!r}; valid samplers: {', '.join(self.names(prediction))}")
        if prediction is not None and prediction not in sampler.fits:
            raise InvalidRequest(
                "sampler_name",
                f"sampler {sampler.name!r} does not fit a {prediction} model; valid samplers: {', '.join(self.names(prediction))}",
            )
        return sampler


def default_sampler(prediction: str) -> str:
    return "Flow Euler" if prediction == FLOW else "DPM++ 2M"


_D = "diffusers:"
BUILTIN_SAMPLERS = (
    Sampler("DPM++ 2M", _D + "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    Sampler("DPM++ 2M SDE", _D + "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}),
    Sampler("DPM++ 3M SDE", _D + "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 3}),
    Sampler("Euler a", _D + "EulerAncestralDiscreteScheduler", {}, aliases=("k_euler_a",)),
    Sampler("Euler", _D + "EulerDiscreteScheduler", {}, aliases=("k_euler",)),
    Sampler("LMS", _D + "LMSDiscreteScheduler", {}, aliases=("k_lms",)),
    Sampler("Heun", _D + "HeunDiscreteScheduler", {}, aliases=("k_heun",)),
    Sampler("DPM2", _D + "KDPM2DiscreteScheduler", {}, aliases=("k_dpm_2",)),
    Sampler("DPM2 a", _D + "KDPM2AncestralDiscreteScheduler", {}, aliases=("k_dpm_2_a",)),
    Sampler("DDIM", _D + "DDIMScheduler", {"set_alpha_to_one": False}),
    Sampler("DDPM", _D + "DDPMScheduler", {}),
    Sampler("PLMS", _D + "PNDMScheduler", {"skip_prk_steps": True}),
    Sampler("UniPC", _D + "UniPCMultistepScheduler", {}),
    Sampler("LCM", _D + "LCMScheduler", {}),
    Sampler("Flow Euler", _D + "FlowMatchEulerDiscreteScheduler", {}, fits=frozenset({FLOW})),
    Sampler("Flow Heun", _D + "FlowMatchHeunDiscreteScheduler", {}, fits=frozenset({FLOW})),
)


def register_builtin_samplers(registry: SamplerRegistry) -> None:
    for sampler in BUILTIN_SAMPLERS:
        registry.register(sampler)
