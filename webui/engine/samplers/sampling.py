"""Running k-diffusion-style sampling functions inside diffusers pipelines.

A sampling function is `fn(denoiser, x, sigmas, *, generator, callback) -> x`: it owns its loop
and calls `denoiser(x, sigma) -> denoised x0` as often as it likes. A diffusers pipeline owns the
loop instead: it evaluates the model at `scheduler.timesteps` and calls `scheduler.step`. The
`FunctionScheduler` joins the two: it runs the function in a helper thread and, at each step,
hands it the model's output (as a denoised x0) and returns the next x the function wants
evaluated. A dry run on a stand-in denoiser tells in advance at which sigmas it will ask.
"""

from __future__ import annotations

import inspect
import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable

import torch

FLOW = "flow"


def randn_like(x: torch.Tensor, generator: torch.Generator | list[torch.Generator] | None) -> torch.Tensor:
    """Gaussian noise shaped like x, drawn from the job's seeded generator(s) on the CPU.

    With one generator per image (as Kiri passes), each image's noise depends only on its seed.
    """
    if isinstance(generator, (list, tuple)):
        if len(generator) != x.shape[0]:
            raise ValueError(f"{len(generator)} generators for a batch of {x.shape[0]}")
        noise = torch.stack([torch.randn(x.shape[1:], generator=g, dtype=torch.float32) for g in generator])
    else:
        noise = torch.randn(x.shape, generator=generator, dtype=torch.float32)
    return noise.to(device=x.device, dtype=x.dtype)


@dataclass
class _Output:
    prev_sample: torch.Tensor

    def __getitem__(self, index: int) -> torch.Tensor:  # tuple-style access: step(...)[0]
        return (self.prev_sample,)[index]


class _Cancelled(Exception):
    pass


class FunctionScheduler:
    """A diffusers-compatible scheduler that drives a sampling function."""

    order = 1

    def __init__(self, function: Callable[..., torch.Tensor], base_config: dict, schedule_options: dict,
                 prediction: str, generator: Any = None):
        self.function = function
        self.prediction = prediction
        self.generator = generator
        self.config = _FrozenConfig(base_config)
        self._reference = self._reference_scheduler(base_config, schedule_options)
        self.timesteps = torch.tensor([])
        self.sigmas = torch.tensor([])
        self.init_noise_sigma = 1.0
        self._plan: list[float] = []  # sigma of each denoiser call, in order
        self._index = 0
        self._thread: threading.Thread | None = None
        self._to_function: queue.Queue = queue.Queue()
        self._from_function: queue.Queue = queue.Queue()
        self._begin_index: int | None = None
        self._levels = torch.tensor([], dtype=torch.float64)
        self._device: Any = None

    # --- what pipelines call -------------------------------------------------------------

    def set_timesteps(self, num_inference_steps: int | None = None, device: Any = None, sigmas: Any = None,
                      mu: float | None = None, timesteps: Any = None) -> None:
        """The noise levels as the reference scheduler spaces them: the schedule type, a flow model's
        shift, and what a pipeline hands it (Flux's own sigmas and its dynamic-shift mu)."""
        self.close()
        given = {"sigmas": sigmas, "mu": mu, "timesteps": timesteps}
        reference_kwargs = {k: v for k, v in given.items() if v is not None}
        self._reference.set_timesteps(num_inference_steps, device="cpu", **reference_kwargs)
        sigmas = self._reference.sigmas.to(torch.float64)
        self.sigmas = sigmas.to(torch.float32)
        self._levels = sigmas  # the levels the function is handed (from the begin step on, after set_begin_index)
        self._plan = _dry_run(self.function, sigmas)
        if not self._plan:
            raise ValueError("the sampling function never called the denoiser")
        self.order = self._calls_per_step(sigmas)
        self._device = device
        self.timesteps = self._timesteps_of(self._plan)
        self.init_noise_sigma = float(sigmas[0]) if self.prediction != FLOW else 1.0
        self._index = 0

    def set_begin_index(self, begin_index: int = 0) -> None:
        """Start at the `begin_index`-th model call (image to image: pipelines skip the first
        `t_start * order` timesteps): the function then runs on the levels from that step on."""
        self._begin_index = begin_index
        if not begin_index:
            return
        step, within = divmod(begin_index, self.order)
        plan = _dry_run(self.function, self._levels[step:]) if not within and step < len(self._levels) - 1 else None
        if plan != self._plan[begin_index:]:
            raise ValueError("this sampling function cannot start part-way through its schedule")
        self._levels, self._plan, self._index = self._levels[step:], plan, 0
        self.timesteps = self._timesteps_of(plan)

    def scale_noise(self, sample: torch.Tensor, timestep: Any, noise: torch.Tensor) -> torch.Tensor:
        """A flow model's image to image start: the init latents at the first level, (1 - s) x0 + s noise."""
        sigma = torch.as_tensor(self._sigma_of_timestep(timestep), dtype=sample.dtype, device=sample.device)
        return (1 - sigma) * sample + sigma * noise.to(sample.dtype)

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: Any) -> torch.Tensor:
        """A noise-prediction model's image to image start, in the k-diffusion scale: x0 + sigma noise."""
        if self.prediction == FLOW:
            return self.scale_noise(original_samples, timesteps, noise)
        sigma = torch.as_tensor(self._sigma_of_timestep(timesteps), dtype=original_samples.dtype, device=original_samples.device)
        return original_samples + sigma * noise.to(original_samples.dtype)

    def scale_model_input(self, sample: torch.Tensor, timestep: Any = None) -> torch.Tensor:
        if self.prediction == FLOW:
            return sample
        sigma = self._plan[min(self._index, len(self._plan) - 1)]
        return sample / ((sigma**2 + 1) ** 0.5)

    def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, generator: Any = None,
             return_dict: bool = True, **kwargs: Any) -> Any:
        if self._thread is None:
            self._start(sample, generator if generator is not None else self.generator)
            kind, payload = self._from_function.get()
            self._check_first_call(kind, payload, sample)
        sigma = self._plan[min(self._index, len(self._plan) - 1)]
        denoised = self._denoised(model_output, sample, sigma)
        self._to_function.put(denoised)
        kind, payload = self._from_function.get()
        self._index += 1
        if kind == "error":
            self._thread = None
            raise payload
        if kind == "eval":
            x, _ = payload
            result = x
        else:  # "done": the final sample
            result = payload
        return _Output(result) if return_dict else (result,)

    def close(self) -> None:
        """Stop a running function (after an interrupt); safe to call at any time."""
        if self._thread is not None and self._thread.is_alive():
            self._to_function.put(_Cancelled)
            self._thread.join(timeout=5)
        self._thread = None
        self._to_function, self._from_function = queue.Queue(), queue.Queue()

    def __len__(self) -> int:
        return len(self._plan)

    # --- the helper thread ---------------------------------------------------------------

    def _start(self, x: torch.Tensor, generator: Any) -> None:
        sigmas = self._levels.to(device=x.device, dtype=torch.float32)
        to_fn, from_fn = self._to_function, self._from_function

        def denoiser(x_in: torch.Tensor, sigma: Any) -> torch.Tensor:
            from_fn.put(("eval", (x_in, float(sigma))))
            reply = to_fn.get()
            if reply is _Cancelled:
                raise _Cancelled()
            return reply

        def run() -> None:
            try:
                with torch.inference_mode():
                    result = self.function(denoiser, x, sigmas, generator=generator, callback=None)
                from_fn.put(("done", result))
            except _Cancelled:
                pass
            except BaseException as exc:  # noqa: BLE001 - handed to the pipeline's thread
                from_fn.put(("error", exc))

        self._thread = threading.Thread(target=run, name="kiri-sampler", daemon=True)
        self._thread.start()

    def _check_first_call(self, kind: str, payload: Any, sample: torch.Tensor) -> None:
        if kind == "error":
            self._thread = None
            raise payload
        if kind != "eval":
            raise RuntimeError("the sampling function returned without calling the denoiser")
        x, _ = payload
        if x.shape != sample.shape or not torch.allclose(x, sample):
            self.close()
            raise RuntimeError("a sampling function must first call the denoiser on the x it was given")

    # --- conversions ---------------------------------------------------------------------

    def _calls_per_step(self, sigmas: torch.Tensor) -> int:
        """Model calls per step (Heun, DPM2 and DPM++ SDE make two), found by planning the schedule
        without its first step: what pipelines take as `order` when they skip steps."""
        if len(sigmas) < 3:
            return 1
        rest = _dry_run(self.function, sigmas[1:])
        return next((k for k in (1, 2, 3) if self._plan[k:] == rest), 1)

    def _timesteps_of(self, plan: list[float]) -> torch.Tensor:
        return torch.tensor([self._sigma_to_t(s) for s in plan], dtype=torch.float32, device=self._device)

    def _sigma_of_timestep(self, timestep: Any) -> float:
        """The noise level of one of this schedule's timesteps (the nearest planned call)."""
        t = float(torch.as_tensor(timestep).reshape(-1)[0])
        times = [self._sigma_to_t(s) for s in self._plan]
        return self._plan[min(range(len(times)), key=lambda i: abs(times[i] - t))]

    def _denoised(self, model_output: torch.Tensor, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """The model's output as a denoised x0, whatever it predicts."""
        out = model_output.to(x.dtype)
        if self.prediction == FLOW:
            return x - sigma * out  # velocity = noise - x0, x = (1 - s) x0 + s noise
        if self.prediction == "v_prediction":
            return x / (sigma**2 + 1) - out * sigma / (sigma**2 + 1) ** 0.5
        return x - sigma * out

    def _sigma_to_t(self, sigma: float) -> float:
        if self.prediction == FLOW:
            return sigma * self._reference.config.num_train_timesteps
        log_sigmas = self._log_sigmas
        log_sigma = torch.tensor(max(sigma, 1e-10), dtype=torch.float64).log()
        # Linear interpolation in log sigma between the training timesteps, as k-diffusion does.
        dists = log_sigma - log_sigmas
        low = int((dists >= 0).cumsum(0).argmax().clamp(max=len(log_sigmas) - 2))
        w = ((log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[low + 1])).clamp(0, 1)
        return float((1 - w) * low + w * (low + 1))

    @property
    def _log_sigmas(self) -> torch.Tensor:
        alphas = self._reference.alphas_cumprod.to(torch.float64)
        return (((1 - alphas) / alphas) ** 0.5).log()

    def _reference_scheduler(self, base_config: dict, schedule_options: dict) -> Any:
        from diffusers import EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler

        if self.prediction == FLOW:
            options = {k: v for k, v in schedule_options.items() if k != "timestep_spacing"}
            return FlowMatchEulerDiscreteScheduler.from_config(base_config, **options)
        return EulerDiscreteScheduler.from_config(base_config, **schedule_options)


class _FrozenConfig(dict):
    """Pipelines read scheduler.config both as a dict and by attribute."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as exc:
            raise AttributeError(name) from exc


def _dry_run(function: Callable[..., torch.Tensor], sigmas: torch.Tensor) -> list[float]:
    """The sigmas at which the function calls the denoiser, found with a cheap stand-in model."""
    calls: list[float] = []

    def stand_in(x: torch.Tensor, sigma: Any) -> torch.Tensor:
        calls.append(float(sigma))
        return x * 0.5

    x = torch.randn((1, 1, 2, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64) * float(sigmas[0])
    function(stand_in, x, sigmas.to(torch.float64), generator=torch.Generator().manual_seed(0), callback=None)
    return calls


# --- schedule spacings for noise-prediction solvers on flow models -----------------------------

# The diffusers config flag of each spacing, and the helper every such scheduler has for it.
_SPACINGS = {
    "use_karras_sigmas": "_convert_to_karras",
    "use_exponential_sigmas": "_convert_to_exponential",
    "use_beta_sigmas": "_convert_to_beta",
}
_flow_spaced_classes: dict[tuple[type, str], type] = {}


def flow_spaced(cls: type, flag: str) -> type:
    """`cls` (a solver run with `use_flow_sigmas`) spacing its flow noise levels the `flag` way.

    DPMSolverMultistepScheduler (Karras, Exponential, Beta) and UniPCMultistepScheduler
    (Exponential, Beta) ignore `use_flow_sigmas` when a spacing flag is set: they space the
    variance-exploding sigmas of the config's beta schedule (0.01 to 157 for the usual betas; a
    flow model's betas are placeholders) and then read them as flow noise fractions, so
    alpha_t = 1 - sigma < 0, log(alpha_t) is NaN at the first step and the picture is black.
    This subclass spaces the noise levels the flag's way between the ends of the solver's own
    flow schedule (shift applied, the first kept below 1), as FlowMatchEulerDiscreteScheduler does
    between its own sigma_max and sigma_min.
    """
    key = (cls, flag)
    if key not in _flow_spaced_classes:
        convert_name = _SPACINGS[flag]
        parent_set_timesteps = cls.set_timesteps

        def set_timesteps(self: Any, num_inference_steps: int | None = None, device: Any = None, **kwargs: Any) -> None:
            if kwargs.get("sigmas") is not None or kwargs.get("timesteps") is not None:
                return parent_set_timesteps(self, num_inference_steps, device, **kwargs)  # the caller chose
            import numpy as np

            # The ends of the model's flow schedule (shift applied): the solver's own sigmas at one
            # step per training timestep, the first kept below 1 (log(1 - sigma) is finite).
            parent_set_timesteps(self, self.config.num_train_timesteps, "cpu", **kwargs)
            full = self.sigmas[:-1].to(torch.float64)
            ends = np.array([float(full.max()), float(full[full > 0].min())])
            parent_set_timesteps(self, num_inference_steps, device, **kwargs)
            steps = len(self.timesteps)
            spaced = np.asarray(getattr(self, convert_name)(in_sigmas=ends, num_inference_steps=steps), dtype=np.float64)
            spaced = np.clip(spaced, ends[1], ends[0])
            self.timesteps = torch.from_numpy(spaced * self.config.num_train_timesteps).to(device=device, dtype=self.timesteps.dtype)
            self.sigmas = torch.cat([torch.from_numpy(spaced), self.sigmas[-1:].to(torch.float64)]).to(torch.float32)

        set_timesteps.__signature__ = inspect.signature(parent_set_timesteps)  # pipelines read its parameters
        set_timesteps.__doc__ = parent_set_timesteps.__doc__
        name = f"Flow{flag.removeprefix('use_').removesuffix('_sigmas').title()}{cls.__name__}"
        _flow_spaced_classes[key] = type(name, (cls,), {"set_timesteps": set_timesteps, "__module__": __name__})
    return _flow_spaced_classes[key]
