"""The sampler registry: names users pick (AUTOMATIC1111's), kept apart from schedule types.

A sampler is either a diffusers-style scheduler class (`set_timesteps`/`step`) or a
k-diffusion-style function of (denoiser, x, sigmas, generator, callback), which Kiri adapts
into a scheduler so it runs inside every pipeline. Built-in samplers register through the same
`SamplerRegistry.register` that extensions use.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import threading
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from webui.engine.core.errors import InvalidRequest

log = logging.getLogger(__name__)

EPS, V, FLOW = "epsilon", "v_prediction", "flow"
NOISE_PREDICTION = frozenset({EPS, V})
ALL_PREDICTIONS = frozenset({EPS, V, FLOW})

# Schedule types: how the noise levels are spaced, as diffusers config overrides. On flow-matching
# models the levels are uniform in time already (the model's shift applied), which is what Uniform
# and SGM Uniform ask for (ComfyUI's simple, normal and sgm_uniform alike): there they are Automatic.
SCHEDULES: dict[str, dict[str, Any]] = {
    "Automatic": {},
    "Uniform": {"timestep_spacing": "linspace"},
    "Karras": {"use_karras_sigmas": True},
    "Exponential": {"use_exponential_sigmas": True},
    "Beta": {"use_beta_sigmas": True},
    "SGM Uniform": {"timestep_spacing": "trailing"},
}


def schedule_options(schedule: str, prediction: str | None = None) -> dict[str, Any]:
    """The config overrides of a schedule type for a model of this prediction type."""
    options = SCHEDULES[schedule]
    if prediction == FLOW and "timestep_spacing" in options:
        return {}  # flow levels are uniform in time already
    return options


@dataclass(frozen=True)
class Sampler:
    """A named way to step through the denoising schedule.

    Exactly one of `scheduler` (a diffusers scheduler class, "module:Class" or an extension's
    Deferred class, imported on first use) and `function` (a k-diffusion-style sampling function)
    is given. `flow`, when given, is how the same sampler runs on flow-matching models (another
    Sampler of the same name: a function on the flow noise levels, or a flow scheduler); the
    sampler then fits flow models too.
    """

    name: str
    scheduler: Any = None  # a class, "module:Class", or an object whose resolve() gives the class
    options: dict[str, Any] = field(default_factory=dict)  # config overrides for from_config
    fits: frozenset[str] = NOISE_PREDICTION  # prediction types this sampler can drive
    aliases: tuple[str, ...] = ()
    function: Callable[..., Any] | None = None
    source: str = "built-in"
    flow: "Sampler | None" = None  # how it runs on flow-matching models, when not as itself

    def __post_init__(self) -> None:
        if (self.scheduler is None) == (self.function is None):
            raise ValueError(f"sampler {self.name!r} needs exactly one of a scheduler class or a function")
        if self.flow is not None:
            if FLOW not in self.flow.fits or self.flow.flow is not None:
                raise ValueError(f"the flow form of sampler {self.name!r} must fit flow models and have no flow form itself")
            object.__setattr__(self, "fits", frozenset(self.fits | {FLOW}))
            if self.flow.name != self.name or self.flow.source != self.source:  # its messages name this sampler
                object.__setattr__(self, "flow", replace(self.flow, name=self.name, source=self.source))

    def on(self, prediction: str | None) -> "Sampler":
        """The form of this sampler that runs on a model of this prediction type."""
        return self.flow if prediction == FLOW and self.flow is not None else self

    @property
    def kind(self) -> str:
        return "function" if self.function is not None else "scheduler"

    def scheduler_class(self) -> type:
        resolve = getattr(self.scheduler, "resolve", None)  # an extension's class, imported on first use
        if callable(resolve):
            return resolve()
        if isinstance(self.scheduler, str):
            module_name, _, attr = self.scheduler.partition(":")
            return getattr(importlib.import_module(module_name), attr)
        assert self.scheduler is not None
        return self.scheduler

    def schedules(self, prediction: str | None = None) -> list[str]:
        """Schedule types this sampler supports (on a model of this prediction type, when given)."""
        form = self.on(prediction)
        if form.function is not None:
            return list(SCHEDULES)  # function samplers take their sigmas from a reference scheduler
        params = inspect.signature(form.scheduler_class().__init__).parameters
        return [name for name in SCHEDULES if all(k in params for k in schedule_options(name, prediction))]

    def build(self, base_config: dict, schedule: str = "Automatic", prediction: str | None = None, generator: Any = None) -> Any:
        """A fresh scheduler from the model's own config, with this sampler's and the schedule's options.

        On a flow model, a scheduler whose noise levels leave [0, 1] is refused here, before any work.
        """
        scheduler = self._build(base_config, schedule, prediction, generator)
        if (prediction or _prediction_of(base_config)) == FLOW:
            self._check_flow_sigmas(scheduler, base_config, schedule)
        return scheduler

    def _build(self, base_config: dict, schedule: str, prediction: str | None, generator: Any) -> Any:
        schedule = schedule or "Automatic"
        prediction = prediction or _prediction_of(base_config)
        if prediction == FLOW and self.flow is not None:
            return self.flow._build(base_config, schedule, prediction, generator)
        if schedule not in SCHEDULES:
            raise InvalidRequest("scheduler", f"unknown schedule type {schedule!r}; valid: {', '.join(SCHEDULES)}")
        supported = self.schedules(prediction)
        if schedule not in supported:
            raise InvalidRequest(
                "scheduler",
                f"sampler {self.name!r} does not support the {schedule} schedule; it supports: {', '.join(supported)}",
            )
        if self.function is not None:
            from webui.engine.samplers.sampling import FunctionScheduler

            return FunctionScheduler(self.function, base_config, schedule_options(schedule, prediction), prediction, generator)
        cls = self.scheduler_class()
        options = {**self.options, **schedule_options(schedule, prediction)}
        params = inspect.signature(cls.__init__).parameters
        if "noise_sampler_seed" in params and generator is not None:
            # Brownian-tree samplers seed their own noise: derive one seed per image from the job's.
            options["noise_sampler_seed"] = _seeds_from(generator)
        if prediction == FLOW and "use_flow_sigmas" in params:
            # Noise-prediction solvers (DPM-Solver, UniPC) also drive flow models on flow sigmas;
            # their own spacing flags would space the wrong (variance-exploding) sigmas: NaN.
            options.update(use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=base_config.get("shift", 1.0))
            flag = next((k for k in _SPACING_FLAGS if options.get(k)), None)
            if flag is not None:
                from webui.engine.samplers.sampling import flow_spaced

                options[flag] = False
                cls = flow_spaced(cls, flag)
        return cls.from_config(base_config, **options)

    def _check_flow_sigmas(self, scheduler: Any, base_config: dict, schedule: str) -> None:
        """Refuse, before any work, a scheduler whose noise levels are not flow noise fractions.

        A flow model sees x = (1 - sigma) x0 + sigma noise: a sigma outside [0, 1] or not finite
        makes the solver's log(1 - sigma) NaN and the picture black. Probed at a few step counts.
        """
        bad = _bad_flow_sigmas(scheduler, base_config)
        if bad is None:
            return
        works = [s for s in self.schedules(FLOW) if s != schedule and _works_on_flow(self, base_config, s)]
        raise InvalidRequest(
            "scheduler",
            f"{self.name} with {schedule} does not work with flow-matching models: its noise levels ({bad}) "
            f"leave the 0..1 range of flow matching, which makes the picture black; with {self.name} use "
            f"{', '.join(works) or 'another sampler'}, or the Flow Euler sampler",
        )


_SPACING_FLAGS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")
_PROBE_STEPS = (1, 4, 30)


def _bad_flow_sigmas(scheduler: Any, base_config: dict) -> str | None:
    """What is wrong with the scheduler's sigmas for a flow model, or None when they are fine."""
    import copy

    import torch

    kwargs = {"mu": 0.0} if base_config.get("use_dynamic_shifting") else {}  # mu = 0: no shift
    probe = copy.deepcopy(scheduler) if not hasattr(scheduler, "close") else scheduler
    for steps in _PROBE_STEPS:
        try:
            probe.set_timesteps(steps, device="cpu", **kwargs)
        except Exception:  # noqa: BLE001 - a probe the scheduler cannot take says nothing either way
            return None
        sigmas = getattr(probe, "sigmas", None)
        if sigmas is None or not len(sigmas):
            return None
        sigmas = torch.as_tensor(sigmas, dtype=torch.float64)
        if not bool(sigmas.isfinite().all()) or float(sigmas.min()) < 0 or float(sigmas.max()) > 1:
            return f"{steps} steps: sigma from {float(sigmas.min()):.4g} to {float(sigmas.max()):.4g}"
    return None


def _works_on_flow(sampler: Sampler, base_config: dict, schedule: str) -> bool:
    try:
        scheduler = sampler._build(base_config, schedule, FLOW, None)
    except InvalidRequest:
        return False
    try:
        return _bad_flow_sigmas(scheduler, base_config) is None
    finally:
        getattr(scheduler, "close", lambda: None)()


def _seeds_from(generator: Any) -> list[int] | int:
    import torch

    if isinstance(generator, (list, tuple)):
        return [int(torch.randint(0, 2**31 - 1, (1,), generator=g)) for g in generator]
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator))


def _prediction_of(config: dict) -> str:
    if "FlowMatch" in config.get("_class_name", ""):
        return FLOW
    return config.get("prediction_type", EPS)


class SamplerRegistry:
    """Samplers keyed by name; an unknown name is an error that lists the valid ones."""

    def __init__(self) -> None:
        self._samplers: dict[str, Sampler] = {}
        self._lock = threading.Lock()

    def register(self, sampler: Sampler, override: bool = False) -> None:
        with self._lock:
            if sampler.name in self._samplers:
                if not override:
                    raise ValueError(
                        f"a sampler named {sampler.name!r} is already registered by {self._samplers[sampler.name].source}"
                    )
                log.warning("sampler %r from %s overrides the one from %s", sampler.name, sampler.source, self._samplers[sampler.name].source)
            self._samplers[sampler.name] = sampler

    def names(self, prediction: str | None = None) -> list[str]:
        with self._lock:
            return [s.name for s in self._samplers.values() if prediction is None or prediction in s.fits]

    def all(self) -> list[Sampler]:
        with self._lock:
            return list(self._samplers.values())

    def resolve(self, name: str, schedule: str | None = None) -> tuple[Sampler, str]:
        """Find a sampler by name or alias; old combined names ("DPM++ 2M Karras") give the schedule too."""
        schedule = schedule_name(schedule) if schedule else None
        with self._lock:
            samplers = dict(self._samplers)
        if name in samplers:
            return samplers[name], schedule or "Automatic"
        for sampler in samplers.values():
            if name in sampler.aliases:
                return sampler, schedule or "Automatic"
        for label in SCHEDULES:
            suffix = " " + label
            if name.endswith(suffix) and name[: -len(suffix)] in samplers:
                if schedule not in (None, "Automatic", label):
                    raise InvalidRequest("scheduler", f"{name!r} already names the {label} schedule, but scheduler asks for "
                                                      f"{schedule}; send sampler_name {name[: -len(suffix)]!r} with the "
                                                      "schedule you want")
                return samplers[name[: -len(suffix)]], label
        raise InvalidRequest("sampler_name", f"unknown sampler {name!r}; valid samplers: {', '.join(samplers)}")

    def get(self, name: str, prediction: str | None = None) -> Sampler:
        sampler, _ = self.resolve(name)
        check_fits(self, sampler, prediction)
        return sampler


def schedule_name(text: str) -> str:
    """A schedule type by label ("SGM Uniform") or AUTOMATIC1111's API name ("sgm_uniform")."""
    for name in SCHEDULES:
        if text in (name, name.lower().replace(" ", "_")):
            return name
    raise InvalidRequest("scheduler", f"unknown schedule type {text!r}; valid: {', '.join(SCHEDULES)}")


def check_fits(registry: SamplerRegistry, sampler: Sampler, prediction: str | None) -> None:
    if prediction is not None and prediction not in sampler.fits:
        if prediction == FLOW:
            why = (" (it has no flow-matching form: its steps assume a noise-prediction model's noise schedule, "
                   "which a flow model does not have)")
        elif sampler.fits == {FLOW}:
            why = " (it steps along a flow-matching model's velocity, which this model does not predict)"
        else:
            why = ""
        raise InvalidRequest(
            "sampler_name",
            f"sampler {sampler.name!r} does not fit a {prediction} model{why}; valid samplers: "
            f"{', '.join(registry.names(prediction))}",
        )


def default_sampler(prediction: str) -> str:
    return "Flow Euler" if prediction == FLOW else "DPM++ 2M"


DIFFUSERS = "diffusers:"  # scheduler classes named "diffusers:Class" are imported on first use


def k_function(name: str, module: str = "k_samplers") -> Callable[..., Any]:
    """A sampling function of k_samplers (or flow_samplers), imported on first call (it needs torch;
    start-up does not)."""

    def run(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(f"{__package__}.{module}"), name)(*args, **kwargs)

    run.__name__ = run.__qualname__ = name
    return run


def on_flow(function: str) -> Sampler:
    """A sampler's form on flow-matching models: flow_samplers.`function` on the flow noise levels."""
    return Sampler(function, function=k_function(function, "flow_samplers"), fits=frozenset({FLOW}))


# On flow models (SD3, Flux): Euler and DDIM (whose deterministic step is the Euler step there) are
# diffusers' FlowMatchEuler; DPM++ 2M is Kiri's function because diffusers' flow DPM-Solver cannot take
# the sigmas Flux's pipeline sets; UniPC is diffusers' own with `use_flow_sigmas`; the rest are
# flow_samplers' functions (FlowMatchHeun takes no sigmas and no schedule types; a stochastic diffusers
# scheduler on SD3/Flux pipelines would draw unseeded noise: they pass it no generator).
FLOW_EULER = Sampler("Euler", DIFFUSERS + "FlowMatchEulerDiscreteScheduler", {}, frozenset({FLOW}))

BUILTIN_SAMPLERS = (
    Sampler("DPM++ 2M", DIFFUSERS + "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}, aliases=("k_dpmpp_2m",), flow=on_flow("sample_dpmpp_2m")),
    Sampler("DPM++ SDE", DIFFUSERS + "DPMSolverSDEScheduler", {}, aliases=("k_dpmpp_sde",), flow=on_flow("sample_dpmpp_sde")),
    Sampler("DPM++ 2M SDE", DIFFUSERS + "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}, aliases=("k_dpmpp_2m_sde",), flow=on_flow("sample_dpmpp_2m_sde")),
    Sampler("DPM++ 2M SDE Heun", DIFFUSERS + "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "solver_type": "heun"}, flow=on_flow("sample_dpmpp_2m_sde_heun")),
    Sampler("DPM++ 3M SDE", function=k_function("sample_dpmpp_3m_sde"), aliases=("k_dpmpp_3m_sde",), flow=on_flow("sample_dpmpp_3m_sde")),
    Sampler("Euler a", DIFFUSERS + "EulerAncestralDiscreteScheduler", {}, aliases=("k_euler_a",), flow=on_flow("sample_euler_ancestral")),
    Sampler("Euler", DIFFUSERS + "EulerDiscreteScheduler", {}, aliases=("k_euler",), flow=FLOW_EULER),
    Sampler("LMS", DIFFUSERS + "LMSDiscreteScheduler", {}, aliases=("k_lms",), flow=on_flow("sample_lms")),
    Sampler("Heun", DIFFUSERS + "HeunDiscreteScheduler", {}, aliases=("k_heun",), flow=on_flow("sample_heun")),
    Sampler("DPM2", DIFFUSERS + "KDPM2DiscreteScheduler", {}, aliases=("k_dpm_2",), flow=on_flow("sample_dpm_2")),
    Sampler("DPM2 a", DIFFUSERS + "KDPM2AncestralDiscreteScheduler", {}, aliases=("k_dpm_2_a",), flow=on_flow("sample_dpm_2_ancestral")),
    # No x0 clipping: latents are not images in [-1, 1] (configs that omit it would clip).
    Sampler("DDIM", DIFFUSERS + "DDIMScheduler", {"set_alpha_to_one": False, "clip_sample": False}, flow=FLOW_EULER),
    Sampler("DDPM", DIFFUSERS + "DDPMScheduler", {"clip_sample": False}, flow=on_flow("sample_ddpm")),
    Sampler("PLMS", DIFFUSERS + "PNDMScheduler", {"skip_prk_steps": True}, flow=on_flow("sample_plms")),
    Sampler("UniPC", DIFFUSERS + "UniPCMultistepScheduler", {}, ALL_PREDICTIONS),
    Sampler("LCM", DIFFUSERS + "LCMScheduler", {}, flow=on_flow("sample_lcm")),
    Sampler("TCD", DIFFUSERS + "TCDScheduler", {}, flow=on_flow("sample_tcd")),
    Sampler("Flow Euler", DIFFUSERS + "FlowMatchEulerDiscreteScheduler", {}, frozenset({FLOW})),
    Sampler("Flow Heun", DIFFUSERS + "FlowMatchHeunDiscreteScheduler", {}, frozenset({FLOW})),
)
