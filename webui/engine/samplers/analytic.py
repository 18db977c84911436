"""A diffusion model whose answer is known: the ideal denoiser of a Gaussian mixture.

For data drawn from a Gaussian mixture, E[x0 | x0 + sigma * eps = x] has a closed form, so a
"model" built from it is the best any trained network could be. Any gap between what a sampler
generates with it and the true distribution is the sampler's own error (discretisation, noise
handling, schedule), which makes it a conformance test for samplers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

EPS, V, FLOW = "epsilon", "v_prediction", "flow"


@dataclass(frozen=True)
class GaussianMixture:
    """Isotropic Gaussian components: weights (K,), means (K, D), stds (K,)."""

    weights: torch.Tensor
    means: torch.Tensor
    stds: torch.Tensor

    def __post_init__(self) -> None:
        k = self.means.shape[0]
        if self.means.ndim != 2 or self.weights.shape != (k,) or self.stds.shape != (k,):
            raise ValueError(f"need weights (K,), means (K, D), stds (K,); got {tuple(self.weights.shape)}, "
                             f"{tuple(self.means.shape)}, {tuple(self.stds.shape)}")
        if (self.weights < 0).any() or not math.isclose(float(self.weights.sum()), 1.0, rel_tol=1e-6):
            raise ValueError("mixture weights must be non-negative and sum to 1")
        if (self.stds <= 0).any():
            raise ValueError("component stds must be positive")

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def mean(self) -> torch.Tensor:
        return (self.weights[:, None] * self.means).sum(0)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n samples (n, D) in float64, drawn from the generator only."""
        component = torch.multinomial(self.weights.double(), n, replacement=True, generator=generator)
        noise = torch.randn((n, self.dim), generator=generator, dtype=torch.float64)
        return self.means.double()[component] + self.stds.double()[component, None] * noise

    def ideal_denoiser(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """E[x0 | x0 + sigma * eps = x] for x (N, D); sigma a scalar or (N,).

        Given component k, x ~ N(mu_k, (s_k^2 + sigma^2) I) and E[x0 | x, k] shrinks x towards
        mu_k by s_k^2 / (s_k^2 + sigma^2); the posterior over k is a softmax of log densities
        (logsumexp keeps it finite at tiny and huge sigma).
        """
        x = x.double()
        sigma = torch.as_tensor(sigma, dtype=torch.float64, device=x.device).reshape(-1, 1)  # (N or 1, 1)
        means, stds, weights = (t.double().to(x.device) for t in (self.means, self.stds, self.weights))
        var = stds[None, :] ** 2 + sigma**2  # (N, K)
        sq = ((x[:, None, :] - means[None, :, :]) ** 2).sum(-1)  # (N, K)
        log_p = weights.log()[None, :] - 0.5 * self.dim * torch.log(2 * math.pi * var) - 0.5 * sq / var
        posterior = torch.softmax(log_p, dim=1)  # softmax is the logsumexp-normalised form
        shrink = stds[None, :] ** 2 / var  # (N, K)
        conditional = means[None] + shrink[..., None] * (x[:, None, :] - means[None])  # (N, K, D)
        return (posterior[..., None] * conditional).sum(1)


def ring_mixture(k: int = 8, radius: float = 2.0, std: float = 0.2, dim: int = 2) -> GaussianMixture:
    """k equal Gaussians on a circle in the first two axes (the rest zero): order-1 data like SD latents."""
    angles = torch.arange(k, dtype=torch.float64) * (2 * math.pi / k)
    means = torch.zeros((k, dim), dtype=torch.float64)
    means[:, 0], means[:, 1] = radius * torch.cos(angles), radius * torch.sin(angles)
    return GaussianMixture(torch.full((k,), 1.0 / k, dtype=torch.float64), means, torch.full((k,), std, dtype=torch.float64))


def random_mixture(k: int, dim: int, seed: int = 0, spread: float = 1.5, std: float = 0.3) -> GaussianMixture:
    """k random components in dim dimensions, for checks beyond the plane."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn((k, dim), generator=g, dtype=torch.float64) * spread / math.sqrt(dim) * 2
    weights = torch.rand(k, generator=g, dtype=torch.float64) + 0.5
    stds = std * (0.5 + torch.rand(k, generator=g, dtype=torch.float64))
    return GaussianMixture(weights / weights.sum(), means, stds)


def alphas_cumprod(config: dict) -> torch.Tensor:
    """abar_t for t = 0 .. N-1, as diffusers builds it from a scheduler config."""
    n = int(config.get("num_train_timesteps", 1000))
    start, end = float(config.get("beta_start", 0.0001)), float(config.get("beta_end", 0.02))
    kind = config.get("beta_schedule", "linear")
    if kind == "scaled_linear":
        betas = torch.linspace(start**0.5, end**0.5, n, dtype=torch.float32) ** 2
    elif kind == "linear":
        betas = torch.linspace(start, end, n, dtype=torch.float32)
    else:
        raise ValueError(f"beta_schedule {kind!r} is not supported here; use 'linear' or 'scaled_linear'")
    return torch.cumprod(1.0 - betas, dim=0).double()  # float32 betas, as diffusers computes them


class AnalyticModel:
    """The ideal model, called as a pipeline calls its UNet/transformer: model(x_input, t) -> output.

    epsilon / v_prediction: x_input is the VP-scaled latent sqrt(abar) x0 + sqrt(1 - abar) eps (what
    `scale_model_input` returns) and t in [0, N) may be fractional; it returns eps or
    v = sqrt(abar) eps - sqrt(1 - abar) x0. flow: x_input = (1 - s) x0 + s noise with t = s * N;
    it returns the velocity noise - x0.
    """

    def __init__(self, mixture: GaussianMixture, prediction: str, scheduler_config: dict):
        if prediction not in (EPS, V, FLOW):
            raise ValueError(f"unknown prediction {prediction!r}; use {EPS!r}, {V!r} or {FLOW!r}")
        self.mixture, self.prediction = mixture, prediction
        self.num_train_timesteps = int(scheduler_config.get("num_train_timesteps", 1000))
        if prediction != FLOW:
            abar = alphas_cumprod(scheduler_config)
            self._log_sigmas = (((1 - abar) / abar) ** 0.5).log()

    def sigma_at(self, t: torch.Tensor) -> torch.Tensor:
        """The noise level of timestep t.

        For fractional t, log sigma is interpolated linearly between training timesteps: the exact
        inverse of diffusers'/k-diffusion's `_sigma_to_t`, so a Karras or interpolated timestep
        maps back to the very sigma the scheduler meant.
        """
        t = t.double().clamp(0, self.num_train_timesteps - 1)
        if self.prediction == FLOW:
            s = (t / self.num_train_timesteps).clamp(1e-7, 1 - 1e-7)
            return s / (1 - s)
        low = t.floor().long().clamp(max=len(self._log_sigmas) - 2)
        w = t - low
        return ((1 - w) * self._log_sigmas[low] + w * self._log_sigmas[low + 1]).exp()

    def __call__(self, x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        n = x.shape[0]
        flat = x.reshape(n, -1).double()
        if flat.shape[1] != self.mixture.dim:
            raise ValueError(f"latents hold {flat.shape[1]} values per sample; the mixture is {self.mixture.dim}-D")
        t = torch.as_tensor(t, device=x.device, dtype=torch.float64).reshape(-1)
        if t.numel() not in (1, n):
            raise ValueError(f"timestep must be a scalar or one per sample; got {t.numel()} for {n} samples")
        t = t.expand(n)
        if self.prediction == FLOW:
            s = (t.double() / self.num_train_timesteps).clamp(1e-7, 1 - 1e-7)[:, None]
            x0 = self.mixture.ideal_denoiser(flat / (1 - s), (s / (1 - s))[:, 0])
            noise = (flat - (1 - s) * x0) / s
            out = noise - x0
        else:
            sigma = self.sigma_at(t)[:, None]
            root_abar = 1 / (1 + sigma**2) ** 0.5
            root_one_minus = sigma * root_abar
            x0 = self.mixture.ideal_denoiser(flat / root_abar, sigma[:, 0])
            eps = (flat - root_abar * x0) / root_one_minus
            out = eps if self.prediction == EPS else root_abar * eps - root_one_minus * x0
        return out.reshape(x.shape).to(x.dtype)
