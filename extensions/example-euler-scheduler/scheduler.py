"""A sampler given as a diffusers-style scheduler class: its config is its constructor's arguments,
`set_timesteps` lays out the noise levels and `step` moves one of them down."""

import numpy as np
import torch
from diffusers import ConfigMixin, SchedulerMixin
from diffusers.configuration_utils import register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerOutput


class ExampleEulerKarrasScheduler(SchedulerMixin, ConfigMixin):
    order = 1

    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012,
                 beta_schedule: str = "scaled_linear", prediction_type: str = "epsilon", rho: float = 7.0):
        if beta_schedule == "scaled_linear":
            betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64) ** 2
        else:
            betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)
        alphas_cumprod = torch.cumprod(1 - betas, 0)
        self.train_sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        self.log_train_sigmas = self.train_sigmas.log()
        self.timesteps = torch.tensor([])
        self.sigmas = torch.tensor([])
        self._index = 0

    @property
    def init_noise_sigma(self) -> float:
        return float((self.sigmas.max() ** 2 + 1) ** 0.5)

    def set_timesteps(self, num_inference_steps: int, device=None, **kwargs) -> None:
        lo, hi = float(self.train_sigmas[0]), float(self.train_sigmas[-1])
        ramp = torch.linspace(0, 1, num_inference_steps, dtype=torch.float64)
        rho = self.config.rho
        sigmas = (hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho  # Karras et al. 2022
        self.timesteps = torch.tensor([self._sigma_to_t(s) for s in sigmas], dtype=torch.float32, device=device)
        self.sigmas = torch.cat([sigmas, sigmas.new_zeros(1)]).to(torch.float32)
        self._index = 0

    def _sigma_to_t(self, sigma: torch.Tensor) -> float:
        # The (fractional) training timestep whose noise level is sigma, interpolated in log space.
        steps = np.arange(len(self.log_train_sigmas))
        return float(np.interp(sigma.log().item(), self.log_train_sigmas.numpy(), steps))

    def scale_model_input(self, sample: torch.Tensor, timestep=None) -> torch.Tensor:
        return sample / ((self.sigmas[self._index] ** 2 + 1) ** 0.5)

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor, return_dict: bool = True, **kwargs):
        sigma, sigma_next = self.sigmas[self._index], self.sigmas[self._index + 1]
        if self.config.prediction_type == "v_prediction":
            denoised = sample / (sigma**2 + 1) - model_output * sigma / (sigma**2 + 1) ** 0.5
        else:
            denoised = sample - sigma * model_output
        prev = sample + (sample - denoised) / sigma * (sigma_next - sigma)
        self._index += 1
        return SchedulerOutput(prev_sample=prev) if return_dict else (prev,)

    def __len__(self) -> int:
        return self.config.num_train_timesteps
