"""DPM++ 2S ancestral: a second-order single-step solver with ancestral noise (Lu et al. 2022).

A whole sampler as one short function of (denoiser, x, sigmas). Kiri runs it inside every
pipeline and tab, with progress and interrupt, and feeds it the job's seeded noise.
"""

import torch

from webui.engine.samplers.flow_samplers import sample_dpmpp_2s_ancestral as sample_dpmpp_2s_ancestral_flow  # noqa: F401
from webui.engine.samplers.sampling import randn_like

# On flow-matching models (SD3, Flux) the same steps run on the flow noise levels, where adding noise
# also shrinks the signal: Kiri's flow form (webui/engine/samplers/flow_samplers.py) does that.


def ancestral_step(sigma_from: torch.Tensor, sigma_to: torch.Tensor, eta: float = 1.0):
    """Split a step into a deterministic part down to sigma_down and fresh noise of size sigma_up."""
    if not eta:
        return sigma_to, torch.zeros_like(sigma_to)
    sigma_up = torch.minimum(sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5)
    return (sigma_to**2 - sigma_up**2) ** 0.5, sigma_up


@torch.no_grad()
def sample_dpmpp_2s_ancestral(denoiser, x, sigmas, *, generator=None, callback=None, eta=1.0, s_noise=1.0):
    sigma_fn = lambda t: t.neg().exp()  # noqa: E731 - the paper's notation
    t_fn = lambda sigma: sigma.log().neg()  # noqa: E731
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        if sigma_down == 0:  # last step: plain Euler to zero noise
            x = x + (x - denoised) / sigmas[i] * (sigma_down - sigmas[i])
        else:
            t, t_next = t_fn(sigmas[i]), t_fn(sigma_down)
            h = t_next - t
            s = t + h / 2
            x_mid = (sigma_fn(s) / sigma_fn(t)) * x - torch.expm1(-h / 2) * denoised
            denoised_mid = denoiser(x_mid, sigma_fn(s))
            x = (sigma_fn(t_next) / sigma_fn(t)) * x - torch.expm1(-h) * denoised_mid
        if sigmas[i + 1] > 0:
            x = x + randn_like(x, generator) * s_noise * sigma_up
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "denoised": denoised})
    return x
