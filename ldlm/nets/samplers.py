"""Reverse-process samplers as pure functions of (denoiser, z, time grid), k-diffusion style.

`denoise(z_t, t, x0_self_cond) -> x0_hat` is any x0-predicting model; `ts` is a decreasing grid
from 1 to t_min. Both samplers feed the previous x0 estimate back as self-conditioning and return
the final x0 estimate (one last denoiser call at t_min). NFE = len(ts) = steps + 1.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from .diffusion import tangent_alpha_sigma

Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def time_grid(steps: int, t_min: float = 1e-3, t_max: float = 1.0) -> torch.Tensor:
    """`steps + 1` times, uniform in t, from t_max down to t_min (float64)."""
    if steps < 1:
        raise ValueError(f"steps={steps}: need at least one sampling step")
    return torch.linspace(t_max, t_min, steps + 1, dtype=torch.float64)


def grid_coefficients(ts: torch.Tensor, d: float) -> tuple[list[float], list[float]]:
    """alpha_t, sigma_t of every time of the grid as Python floats, computed once (float64): a step then
    costs its network call plus a few tensor ops, not a dozen small float64 tensor ops (batch 1 on CPU)."""
    alpha, sigma = tangent_alpha_sigma(ts.double().cpu(), d)
    return alpha.tolist(), sigma.tolist()


def reverse_process(denoise: Denoiser, z: torch.Tensor, ts: torch.Tensor, d: float, update, callback=None) -> torch.Tensor:
    """The loop every sampler shares: x0_hat at each time of the grid (self-conditioned on the previous
    estimate), `callback(i, z_t, x0_hat)`, then `update(z_t, x0_hat, (alpha_t, alpha_s), (sigma_t, sigma_s))`
    -> z_s; finally x0_hat once more at t_min."""
    alpha, sigma = grid_coefficients(ts, d)
    x0 = None
    for i in range(len(ts) - 1):
        x0 = denoise(z, ts[i].float().expand(len(z)), x0)
        if callback is not None:
            callback(i, z, x0)
        z = update(z, x0, alpha[i:i + 2], sigma[i:i + 2]).to(z.dtype)
    return denoise(z, ts[-1].float().expand(len(z)), x0)


@torch.no_grad()
def sample_ddpm(denoise: Denoiser, z: torch.Tensor, ts: torch.Tensor, d: float = 3.0,
                generator: torch.Generator | None = None, callback=None) -> torch.Tensor:
    """Ancestral sampling from the Gaussian posterior q(z_s | z_t, x0_hat) (Kingma et al. 2021, VDM eq. 33).

    With alpha_{t|s} = alpha_t / alpha_s and sigma_{t|s}^2 = sigma_t^2 - alpha_{t|s}^2 sigma_s^2:
      mean = alpha_{t|s} sigma_s^2 / sigma_t^2 * z_t + alpha_s sigma_{t|s}^2 / sigma_t^2 * x0_hat,
      var  = sigma_{t|s}^2 sigma_s^2 / sigma_t^2.
    """
    def posterior_draw(z, x0, alpha, sigma):
        (a_t, a_s), (s_t, s_s) = alpha, sigma
        a_ts = a_t / a_s
        var_ts = s_t**2 - a_ts**2 * s_s**2
        mean = (a_ts * s_s**2 / s_t**2) * z + (a_s * var_ts / s_t**2) * x0
        std = math.sqrt(var_ts * s_s**2 / s_t**2)
        return mean + std * torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)

    return reverse_process(denoise, z, ts, d, posterior_draw, callback)


@torch.no_grad()
def sample_ddim(denoise: Denoiser, z: torch.Tensor, ts: torch.Tensor, d: float = 3.0,
                generator: torch.Generator | None = None, callback=None) -> torch.Tensor:
    """Deterministic DDIM update (Song et al. 2021, eq. 12 with eta = 0):
    eps_hat = (z_t - alpha_t x0_hat) / sigma_t,  z_s = alpha_s x0_hat + sigma_s eps_hat.
    """
    def ddim_step(z, x0, alpha, sigma):
        (a_t, a_s), (s_t, s_s) = alpha, sigma
        eps = (z - a_t * x0) / s_t
        return a_s * x0 + s_s * eps

    return reverse_process(denoise, z, ts, d, ddim_step, callback)


SAMPLERS = {"ddpm": sample_ddpm, "ddim": sample_ddim}
# The version of the code that draws samples (these samplers, ldlm.sampling.rows, the models' generate): bump it with
# a change that changes what is drawn, and the pipeline draws its sample files again (as METRICS_VERSION
# re-scores). Every sample row records it; a row without one was drawn by version "1".
SAMPLER_VERSION = "1"


@torch.no_grad()
def generate_latents(model, n: int, steps: int, cfg, generator: torch.Generator, sampler: str = "ddpm",
                     callback=None, start: tuple[torch.Tensor | None, float] | None = None) -> torch.Tensor:
    """n latent sequences from N(0, I) through `steps` reverse steps of `model.denoise`.

    With `start` = (z0, t_start) the process runs from t_start down, and with z0 [n, L, D] (e.g. encoded
    text; None: N(0, I)) starts from z0 noised to t_start, z = alpha z0 + sigma eps (SDEdit-style editing of
    a known latent)."""
    device = next(model.parameters()).device
    shape = (n, cfg.latent_len or cfg.seq_len, cfg.latent_dim)
    z = torch.randn(shape, generator=generator, device=device)
    z0, t_start = start if start is not None else (None, 1.0)
    if z0 is not None:
        alpha, sigma = tangent_alpha_sigma(torch.tensor(t_start, dtype=torch.float64), cfg.schedule_d)
        z = float(alpha) * z0.to(device) + float(sigma) * z
    ts = time_grid(steps, cfg.t_min, t_start).to(device)
    return SAMPLERS[sampler](model.denoise, z, ts, cfg.schedule_d, generator, callback)
