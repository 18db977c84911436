"""AUTOMATIC1111's samplers on flow-matching models (SD3, Flux, kiri-shapes-dit), as functions of
(denoiser, x, sigmas) that run on the flow noise levels.

A flow model sees x = (1 - s) x0 + s noise with s in [0, 1], and its velocity output becomes a
denoised x0 = x - s v (sampling.FunctionScheduler does that), as ComfyUI's CONST model sampling
does. Then:

- The probability-flow ODE is dx/ds = (x - x0(x, s)) / s, the same form as k-diffusion's
  variance-exploding one, so the deterministic solvers (Euler, Heun, DPM2, LMS, PLMS) are
  k-diffusion's, unchanged, on the flow noise levels.
- A step that adds noise must also shrink the signal: going from noise level a to b > a
  multiplies x by (1 - b) / (1 - a) and adds noise of size sqrt(b^2 - a^2 (1 - b)^2 / (1 - a)^2)
  (ComfyUI's rectified-flow ancestral step; `renoise` below). The ancestral samplers step down to
  sigma_down = s_next (1 + (s_next / s - 1) eta), as ComfyUI's `*_RF` samplers do.
- DPM-Solver++ uses the half log-SNR lambda = log((1 - s) / s) and alpha = 1 - s (ComfyUI's
  `sigma_to_half_log_snr` for CONST; diffusers' `use_flow_sigmas`). At s = 1 lambda is -inf: the
  solvers read the first level as 1 - 1e-4 there (ComfyUI's `offset_first_sigma_for_snr`), while
  the model is still evaluated at the level the schedule gives.

Noise comes from the job's seeded generators (one per image), so a seed repeats its picture.
"""

from __future__ import annotations

import torch

from webui.engine.samplers.sampling import randn_like

_S_MAX = 1 - 1e-4  # the first noise level as the log-SNR solvers read it when the schedule starts at 1


def _step(callback, x, i, sigma, denoised) -> None:
    if callback is not None:
        callback({"x": x, "i": i, "sigma": sigma, "denoised": denoised})


def _lambda(s: torch.Tensor) -> torch.Tensor:
    """Half log-SNR of a flow noise level: log(alpha / sigma) with alpha = 1 - s."""
    s = s.clamp(max=_S_MAX)
    return torch.log1p(-s) - s.log()


def _sigma_of(lam: torch.Tensor) -> torch.Tensor:
    """The flow noise level of a half log-SNR (the inverse of _lambda)."""
    return torch.sigmoid(-lam)


def renoise(x: torch.Tensor, s_from: torch.Tensor, s_to: torch.Tensor, generator, s_noise: float = 1.0) -> torch.Tensor:
    """x at flow noise level s_from made a sample at the higher level s_to: the signal shrinks by
    (1 - s_to) / (1 - s_from) and fresh noise makes up the rest (the flow forward process)."""
    if float(s_to) <= float(s_from):
        return x
    ratio = (1 - s_to) / (1 - s_from)
    coeff = (s_to**2 - (s_from * ratio) ** 2).clamp(min=0).sqrt()
    return ratio * x + randn_like(x, generator) * (coeff * s_noise)


def _sigma_down(s: torch.Tensor, s_next: torch.Tensor, eta: float) -> torch.Tensor:
    return s_next * (1 + (s_next / s - 1) * eta)


def _euler_to(x: torch.Tensor, denoised: torch.Tensor, s: torch.Tensor, s_to: torch.Tensor) -> torch.Tensor:
    """One Euler (= DDIM) step of the flow ODE from s to s_to, written as a blend (exact at s_to = 0)."""
    ratio = s_to / s
    return ratio * x + (1 - ratio) * denoised


def _into_last_level(sigmas: torch.Tensor, i: int) -> bool:
    """Whether step i goes to the last level above 0. Flow schedules end at the model's smallest
    training level (1/1000): in half log-SNR that step is several times longer than the one before,
    and a multistep extrapolation over it (r = h_last / h < 0.25) overshoots, so the DPM-Solver++
    multistep samplers take it at first order (diffusers' `lower_order_final`, one step earlier:
    the step to 0 itself is just x0). Measured on the analytic model at 5 steps: 1.08 -> 0.17."""
    return i + 2 < len(sigmas) and float(sigmas[i + 2]) == 0


# --- the ODE solvers: k-diffusion's, on the flow levels ------------------------------------------

@torch.no_grad()
def sample_euler(denoiser, x, sigmas, *, generator=None, callback=None):
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        x = _euler_to(x, denoised, sigmas[i], sigmas[i + 1])
        _step(callback, x, i, sigmas[i], denoised)
    return x


@torch.no_grad()
def sample_heun(denoiser, x, sigmas, *, generator=None, callback=None):
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        d = (x - denoised) / sigmas[i]
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            x_2 = x + d * dt
            d_2 = (x_2 - denoiser(x_2, sigmas[i + 1])) / sigmas[i + 1]
            x = x + (d + d_2) / 2 * dt
        _step(callback, x, i, sigmas[i], denoised)
    return x


def _dpm2_step(denoiser, x, denoised, s, s_to):
    """DPM-Solver-2's midpoint step (in log sigma) from s to s_to."""
    if s_to == 0:
        return denoised
    d = (x - denoised) / s
    s_mid = s.log().lerp(s_to.log(), 0.5).exp()
    x_2 = x + d * (s_mid - s)
    d_2 = (x_2 - denoiser(x_2, s_mid)) / s_mid
    return x + d_2 * (s_to - s)


@torch.no_grad()
def sample_dpm_2(denoiser, x, sigmas, *, generator=None, callback=None):
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        x = _dpm2_step(denoiser, x, denoised, sigmas[i], sigmas[i + 1])
        _step(callback, x, i, sigmas[i], denoised)
    return x


def _lms_coefficient(order: int, t: list[float], i: int, j: int) -> float:
    """The integral from t[i] to t[i+1] of the Lagrange basis polynomial of t[i - j] over the last
    `order` levels (k-diffusion integrates it numerically; the polynomial's integral is exact)."""
    nodes = [t[i - k] for k in range(order) if k != j]
    poly = torch.ones(1, dtype=torch.float64)  # coefficients, highest power first
    denominator = 1.0
    for node in nodes:
        poly = torch.cat([poly, torch.zeros(1, dtype=torch.float64)]) - torch.cat([torch.zeros(1, dtype=torch.float64), poly * node])
        denominator *= t[i - j] - node
    powers = torch.arange(len(poly), 0, -1, dtype=torch.float64)
    antiderivative = poly / powers

    def at(v: float) -> float:
        return float(sum(c * v**p for c, p in zip(antiderivative.tolist(), powers.tolist())))

    return (at(t[i + 1]) - at(t[i])) / denominator


@torch.no_grad()
def sample_lms(denoiser, x, sigmas, *, generator=None, callback=None, order: int = 4):
    levels = [float(s) for s in sigmas]
    ds: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        ds.append((x - denoised) / sigmas[i])
        ds = ds[-order:]
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            current = min(i + 1, order)
            coefficients = [_lms_coefficient(current, levels, i, j) for j in range(current)]
            x = x + sum(c * d for c, d in zip(coefficients, reversed(ds)))
        _step(callback, x, i, sigmas[i], denoised)
    return x


# PNDM's Adams-Bashforth weights by order (its pseudo step on the flow ODE is the Euler step).
_PLMS_WEIGHTS = ((1.0,), (1.5, -0.5), (23 / 12, -16 / 12, 5 / 12), (55 / 24, -59 / 24, 37 / 24, -9 / 24))


@torch.no_grad()
def sample_plms(denoiser, x, sigmas, *, generator=None, callback=None):
    """Pseudo linear multistep: the last four ODE slopes combined with PNDM's fixed weights."""
    ds: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        ds = (ds + [(x - denoised) / sigmas[i]])[-4:]
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            weights = _PLMS_WEIGHTS[len(ds) - 1]
            slope = sum(w * d for w, d in zip(weights, reversed(ds)))
            x = x + slope * (sigmas[i + 1] - sigmas[i])
        _step(callback, x, i, sigmas[i], denoised)
    return x


@torch.no_grad()
def sample_dpmpp_2m(denoiser, x, sigmas, *, generator=None, callback=None):
    """DPM-Solver++(2M) in the flow model's own half log-SNR (as diffusers' `use_flow_sigmas`)."""
    old_denoised, h_last = None, None
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        s, s_next = sigmas[i], sigmas[i + 1]
        if s_next == 0:
            x = denoised
        else:
            s_read = s.clamp(max=_S_MAX)
            h = _lambda(s_next) - _lambda(s)
            alpha_next = 1 - s_next
            d = denoised
            if old_denoised is not None and not _into_last_level(sigmas, i):
                r = h_last / h
                d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (s_next / s_read) * x + alpha_next * (-torch.expm1(-h)) * d if s < 1 else _euler_to(x, d, s, s_next)
            h_last = h
        old_denoised = denoised
        _step(callback, x, i, sigmas[i], denoised)
    return x


# --- the samplers that add noise -----------------------------------------------------------------

@torch.no_grad()
def sample_euler_ancestral(denoiser, x, sigmas, *, generator=None, callback=None, eta: float = 1.0, s_noise: float = 1.0):
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        s, s_next = sigmas[i], sigmas[i + 1]
        if s_next == 0:
            x = denoised
        else:
            s_down = _sigma_down(s, s_next, eta)
            x = renoise(_euler_to(x, denoised, s, s_down), s_down, s_next, generator, s_noise)
        _step(callback, x, i, s, denoised)
    return x


@torch.no_grad()
def sample_dpm_2_ancestral(denoiser, x, sigmas, *, generator=None, callback=None, eta: float = 1.0, s_noise: float = 1.0):
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        s, s_next = sigmas[i], sigmas[i + 1]
        if s_next == 0:
            x = denoised
        else:
            s_down = _sigma_down(s, s_next, eta)
            x = renoise(_dpm2_step(denoiser, x, denoised, s, s_down), s_down, s_next, generator, s_noise)
        _step(callback, x, i, s, denoised)
    return x


@torch.no_grad()
def sample_dpmpp_2s_ancestral(denoiser, x, sigmas, *, generator=None, callback=None, eta: float = 1.0, s_noise: float = 1.0):
    """DPM-Solver++(2S) with ancestral noise: the midpoint in half log-SNR, then the flow re-noising."""
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        s, s_next = sigmas[i], sigmas[i + 1]
        if s_next == 0:
            x = denoised
        else:
            s_down = _sigma_down(s, s_next, eta)
            lam, lam_down = _lambda(s), _lambda(s_down)
            s_mid = _sigma_of(lam + (lam_down - lam) / 2)
            denoised_mid = denoiser(_euler_to(x, denoised, s, s_mid), s_mid)
            x = renoise(_euler_to(x, denoised_mid, s, s_down), s_down, s_next, generator, s_noise)
        _step(callback, x, i, s, denoised)
    return x


@torch.no_grad()
def sample_dpmpp_sde(denoiser, x, sigmas, *, generator=None, callback=None, eta: float = 1.0, s_noise: float = 1.0, r: float = 0.5):
    """DPM-Solver++ (stochastic, two model calls a step) in the flow's half log-SNR, as ComfyUI runs
    it on CONST models; its noise is Gaussian from the job's generators (not a Brownian tree)."""
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        s, s_next = sigmas[i], sigmas[i + 1]
        if s_next == 0:
            x = denoised
        else:
            lam_s, lam_t = _lambda(s), _lambda(s_next)
            h = lam_t - lam_s
            lam_1 = lam_s + r * h
            s_1 = _sigma_of(lam_1)
            alpha_s, alpha_1, alpha_t = 1 - s.clamp(max=_S_MAX), 1 - s_1, 1 - s_next
            # Step 1, to the intermediate level, with its share of the noise.
            lam_1_, su = _ancestral_lambda(lam_s, lam_1, eta)
            x_2 = (alpha_1 / alpha_s) * torch.exp(-(lam_1_ - lam_s)) * x - alpha_1 * torch.expm1(-(lam_1_ - lam_s)) * denoised
            if eta > 0 and s_noise > 0:
                x_2 = x_2 + alpha_1 * randn_like(x, generator) * s_noise * su
            denoised_2 = denoiser(x_2, s_1)
            # Step 2, to the next level.
            lam_t_, su = _ancestral_lambda(lam_s, lam_t, eta)
            fac = 1 / (2 * r)
            denoised_d = (1 - fac) * denoised + fac * denoised_2
            x = (alpha_t / alpha_s) * torch.exp(-(lam_t_ - lam_s)) * x - alpha_t * torch.expm1(-(lam_t_ - lam_s)) * denoised_d
            if eta > 0 and s_noise > 0:
                x = x + alpha_t * randn_like(x, generator) * s_noise * su
        _step(callback, x, i, s, denoised)
    return x


def _ancestral_lambda(lam_from: torch.Tensor, lam_to: torch.Tensor, eta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """k-diffusion's ancestral split of a step, done on exp(-lambda) (the variance-exploding sigma of
    the scaled sample x / alpha): the half log-SNR stepped to and the noise to add (scaled by alpha)."""
    sigma_from, sigma_to = torch.exp(-lam_from), torch.exp(-lam_to)
    if not eta:
        return lam_to, torch.zeros_like(sigma_to)
    sigma_up = torch.minimum(sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2).clamp(min=0).sqrt())
    sigma_down = (sigma_to**2 - sigma_up**2).clamp(min=0).sqrt()
    return -sigma_down.log(), sigma_up


@torch.no_grad()
def _sample_dpmpp_multistep_sde(denoiser, x, sigmas, generator, callback, eta: float, s_noise: float, order: int,
                                solver_type: str = "midpoint"):
    """DPM-Solver++(2M/3M) SDE in the flow's half log-SNR (ComfyUI's form for CONST models)."""
    denoised_1 = denoised_2 = None
    h_1 = h_2 = None
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        s, s_next = sigmas[i], sigmas[i + 1]
        h = None
        if s_next == 0:
            x = denoised
        else:
            h = _lambda(s_next) - _lambda(s)
            h_eta = h * (eta + 1)
            alpha_t = 1 - s_next
            x = s_next / s.clamp(max=_S_MAX) * torch.exp(-h * eta) * x - alpha_t * torch.expm1(-h_eta) * denoised
            phi_2 = torch.expm1(-h_eta) / h_eta + 1
            if _into_last_level(sigmas, i):
                pass  # first order into the last level (see _into_last_level)
            elif order == 3 and h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                x = x + alpha_t * phi_2 * d1 - alpha_t * (phi_2 / h_eta - 0.5) * d2
            elif h_1 is not None:
                d = (denoised - denoised_1) / (h_1 / h)
                if order == 3 or solver_type == "heun":
                    x = x + alpha_t * phi_2 * d
                else:  # midpoint
                    x = x - 0.5 * alpha_t * torch.expm1(-h_eta) * d
            if eta > 0 and s_noise > 0:
                x = x + randn_like(x, generator) * s_next * (-torch.expm1(-2 * h * eta)).sqrt() * s_noise
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
        _step(callback, x, i, s, denoised)
    return x


def sample_dpmpp_2m_sde(denoiser, x, sigmas, *, generator=None, callback=None, eta: float = 1.0, s_noise: float = 1.0):
    return _sample_dpmpp_multistep_sde(denoiser, x, sigmas, generator, callback, eta, s_noise, 2, "midpoint")


def sample_dpmpp_2m_sde_heun(denoiser, x, sigmas, *, generator=None, callback=None, eta: float = 1.0, s_noise: float = 1.0):
    return _sample_dpmpp_multistep_sde(denoiser, x, sigmas, generator, callback, eta, s_noise, 2, "heun")


def sample_dpmpp_3m_sde(denoiser, x, sigmas, *, generator=None, callback=None, eta: float = 1.0, s_noise: float = 1.0):
    return _sample_dpmpp_multistep_sde(denoiser, x, sigmas, generator, callback, eta, s_noise, 3)


@torch.no_grad()
def sample_ddpm(denoiser, x, sigmas, *, generator=None, callback=None):
    """DDPM's ancestral step: the exact posterior q(x_next | x, x0) of the flow forward process.

    On the scaled sample y = x / (1 - s), whose noise level is k = s / (1 - s), it is k-diffusion's
    Euler ancestral step at eta 1 (down to k_next^2 / k, noise up to k_next); written back on x with
    q = (k_next / k)^2 it keeps s_next^2 (1 - s) / (s^2 (1 - s_next)) of x, (1 - s_next)(1 - q) of
    x0 and adds s_next sqrt(1 - q) of noise: finite at s = 1, where k is infinite.
    """
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        s, s_next = sigmas[i], sigmas[i + 1]
        if s_next == 0:
            x = denoised
        else:
            q = (s_next * (1 - s) / (s * (1 - s_next))) ** 2
            keep = s_next**2 * (1 - s) / (s**2 * (1 - s_next))
            x = keep * x + (1 - s_next) * (1 - q) * denoised + s_next * (1 - q).clamp(min=0).sqrt() * randn_like(x, generator)
        _step(callback, x, i, s, denoised)
    return x


@torch.no_grad()
def sample_lcm(denoiser, x, sigmas, *, generator=None, callback=None):
    """Latent consistency sampling: each step's x0 estimate, noised afresh to the next level."""
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        s_next = sigmas[i + 1]
        x = denoised if s_next == 0 else (1 - s_next) * denoised + s_next * randn_like(x, generator)
        _step(callback, x, i, sigmas[i], denoised)
    return x


@torch.no_grad()
def sample_tcd(denoiser, x, sigmas, *, generator=None, callback=None, gamma: float = 0.3):
    """Trajectory consistency distillation's sampler: a deterministic step down to (1 - gamma) times
    the next level, then the flow re-noising back up to it (gamma 0.3, diffusers' TCD default)."""
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        s, s_next = sigmas[i], sigmas[i + 1]
        if s_next == 0:
            x = denoised
        else:
            s_mid = (1 - gamma) * s_next
            x = renoise(_euler_to(x, denoised, s, s_mid), s_mid, s_next, generator)
        _step(callback, x, i, s, denoised)
    return x


