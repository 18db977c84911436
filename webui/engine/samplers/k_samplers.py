"""Samplers Kiri writes as k-diffusion-style functions of (denoiser, x, sigmas), where no diffusers
scheduler does the job right. Each runs inside every pipeline through sampling.FunctionScheduler."""

from __future__ import annotations

import torch

from webui.engine.samplers.sampling import randn_like


@torch.no_grad()
def sample_dpmpp_3m_sde(denoiser, x, sigmas, *, generator=None, callback=None, eta: float = 1.0, s_noise: float = 1.0):
    """DPM-Solver++(3M) SDE (Lu et al. 2022, third-order multistep, in k-diffusion's form).

    diffusers 0.42's sde-dpmsolver++ third-order update has the sign of its second-derivative
    term flipped, so it diverges as steps grow (the sampler check shows it); this one converges.
    """
    denoised_1 = denoised_2 = None
    h_1 = h_2 = None
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            t, s = -sigmas[i].log(), -sigmas[i + 1].log()
            h = s - t
            h_eta = h * (eta + 1)
            x = torch.exp(-h_eta) * x - torch.expm1(-h_eta) * denoised
            phi_2 = torch.expm1(-h_eta) / h_eta + 1
            if h_2 is not None:  # third order: two earlier denoised estimates
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_3 = phi_2 / h_eta - 0.5
                x = x + phi_2 * d1 - phi_3 * d2
            elif h_1 is not None:  # second order on the second step
                x = x + phi_2 * (denoised - denoised_1) / (h_1 / h)
            if eta:
                x = x + randn_like(x, generator) * sigmas[i + 1] * (-torch.expm1(-2 * h * eta)).sqrt() * s_noise
            h_1, h_2 = h, h_1
        denoised_1, denoised_2 = denoised, denoised_1
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "denoised": denoised})
    return x
