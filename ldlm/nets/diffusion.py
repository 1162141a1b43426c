"""Noise schedule, adaptive timestep sampler and the diffusion-to-encoder warmup.

All pure functions or tiny stateful objects; the schedule is computed in float64 and cast at the end.
"""
from __future__ import annotations

import math

import numpy as np
import torch


# ----------------------------------------------------------------------------------------------
# tangent ("tan-d") schedule


def tangent_alpha_sigma(t: torch.Tensor, d: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    """alpha_t = (1 + d^2 tan^2(pi t / 2))^(-1/2), sigma_t = sqrt(1 - alpha_t^2)  (paper.md §3).

    VP process z_t = alpha_t z_0 + sigma_t eps, so alpha^2 + sigma^2 = 1 and
    SNR(t) = 1 / (d^2 tan^2(pi t / 2)) decreases monotonically; d = 1 is the cosine schedule
    alpha_t = cos(pi t / 2). Computed in float64, returned in t's dtype.
    """
    t64 = t.double()
    tan = torch.tan(math.pi * t64 / 2)
    alpha = torch.rsqrt(1 + (d * tan) ** 2)
    alpha = torch.where(t64 >= 1, torch.zeros_like(alpha), alpha)  # tan(pi/2) is finite in floats
    sigma = torch.sqrt(torch.clamp(1 - alpha**2, min=0.0))
    return alpha.to(t.dtype), sigma.to(t.dtype)


def log_snr(t: torch.Tensor, d: float = 3.0) -> torch.Tensor:
    """log SNR(t) = -2 log(d tan(pi t / 2)), float64."""
    return -2 * torch.log(d * torch.tan(math.pi * t.double() / 2))


# ----------------------------------------------------------------------------------------------
# diffusion-to-encoder warmup


def warmup_gamma(step: int, total: int, gamma_min: float = 1e-3, k: float = 10.0, c: float = 0.8,
                 gamma_max: float = 1.0) -> float:
    """gamma(s) of paper Eqs. 29-30 (per paper.md §4.2): a sigmoid ramp from gamma_min to gamma_max (1 in the paper).

    s~(s) = sigmoid(k (s / S_wu - c));
    gamma(s) = gamma_min + (gamma_max - gamma_min) (s~(s) - s~(0)) / (s~(S_wu) - s~(0)) for s < S_wu, else gamma_max.
    """
    if total <= 0 or step >= total:
        return gamma_max
    sig = lambda x: 1.0 / (1.0 + math.exp(-k * (x - c)))
    ramp = (sig(step / total) - sig(0.0)) / (sig(1.0) - sig(0.0))
    return gamma_min + (gamma_max - gamma_min) * ramp


def encoder_gamma(cfg, step: int) -> float:
    """The run's gamma at `step`: the warmup ramp (S_wu = cfg.warmup_steps), or 1 with encoder_warmup off."""
    if not cfg.encoder_warmup:
        return 1.0
    return warmup_gamma(step, cfg.warmup_steps, cfg.gamma_min, cfg.warmup_k, cfg.warmup_c, cfg.gamma_max)


def scale_encoder_grad(z0: torch.Tensor, gamma: float) -> torch.Tensor:
    """Same value as z0, but the gradient flowing back into the encoder is multiplied by gamma."""
    if gamma >= 1.0:
        return z0
    return gamma * z0 + (1.0 - gamma) * z0.detach()


# ----------------------------------------------------------------------------------------------
# timestep samplers


class UniformTimeSampler:
    """t ~ U(t_min, 1)."""

    def __init__(self, t_min: float = 1e-3):
        self.t_min = t_min

    def from_uniform(self, u: torch.Tensor) -> torch.Tensor:
        """t = t_min + (1 - t_min) u for u ~ U[0, 1)."""
        return (self.t_min + (1 - self.t_min) * u.double()).float()

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.from_uniform(torch.rand(n, generator=generator, dtype=torch.float64))

    def update(self, t: torch.Tensor, loss: torch.Tensor) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def summary(self) -> dict:
        return {}


def monotone_fit(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted isotonic (non-decreasing) regression of y on sorted x, by pool-adjacent-violators
    (scipy's): one knot per pooled block, at the block's w-weighted mean x with its w-weighted mean y.
    Interpolating the knots gives a monotone piecewise-linear curve in which a pooled stretch rises evenly
    instead of in one step. w > 0."""
    from scipy.optimize import isotonic_regression  # lazily: a second to import; pinned in pyproject

    fit = isotonic_regression(np.asarray(y, dtype=np.float64), weights=np.asarray(w, dtype=np.float64))
    starts = fit.blocks[:-1]
    return np.add.reduceat(np.asarray(w * x, dtype=np.float64), starts) / fit.weights, fit.x[starts]


class AdaptiveTimeSampler:
    """Timesteps drawn so the expected diffusion loss grows linearly in u ~ U(0, 1) (paper §5.3, Eq. 5).

    B bins over [t_min, 1] keep an EMA of the per-sample x0-loss that fell in them (l_b) and a count (seen).
    The bins' l_b are fitted monotone in t (`monotone_fit`, weighted by seen), piecewise linear between the
    fit's knots, with L(t_min) := 0 (x0-prediction error vanishes without noise) and flat after the last
    knot; bin b gets p_fit ∝ the rise of that L over it, i.e. dL/dt, and p = (1 - mix) p_fit + mix / B.
    The inverse of the piecewise-linear CDF maps u to t, so L(t(u)) is linear in u (up to the mix).
    Why fit and mix: with raw increments max(l_b - l_{b-1}, 0) a bin whose first noisy estimate fell below
    its neighbour's got p ~ 0 and was never drawn, so never corrected (29 of 100 bins in a tiny run); p_b
    >= mix / B keeps every bin updated. Uniform before any loss is seen.
    """

    def __init__(self, bins: int = 100, ema: float = 0.999, t_min: float = 1e-3, mix: float = 0.1):
        if not 0 <= mix <= 1:
            raise ValueError(f"mix={mix}: the weight of the uniform part must be in [0, 1]")
        self.bins, self.ema, self.t_min, self.mix = bins, ema, t_min, mix
        self.edges = torch.linspace(t_min, 1.0, bins + 1, dtype=torch.float64)
        self.loss = torch.arange(1, bins + 1, dtype=torch.float64) / bins  # prior, unused: unseen bins are not fitted
        self.seen = torch.zeros(bins, dtype=torch.long)

    def fitted_loss(self) -> torch.Tensor | None:
        """The monotone piecewise-linear fit of L at the bin edges [B + 1] (0 at t_min); None before any loss."""
        hit = (self.seen > 0) & self.loss.isfinite()
        if not hit.any():
            return None
        centres = ((self.edges[:-1] + self.edges[1:]) / 2)[hit].numpy()
        x, y = monotone_fit(centres, self.loss[hit].numpy(), self.seen[hit].double().numpy())
        x, y = np.r_[self.t_min, x], np.r_[0.0, np.clip(y, 0, None)]
        return torch.from_numpy(np.interp(self.edges.numpy(), x, y))

    def probabilities(self) -> torch.Tensor:
        """p_b [B], sums to 1, each >= mix / B."""
        fit = self.fitted_loss()
        rise = torch.diff(fit).clamp(min=0) if fit is not None else torch.zeros(self.bins, dtype=torch.float64)
        p_fit = rise / rise.sum() if rise.sum() > 0 else torch.full_like(rise, 1 / self.bins)
        return (1 - self.mix) * p_fit + self.mix / self.bins

    def cdf(self) -> torch.Tensor:
        """F at the bin edges: [0, ..., 1], non-decreasing."""
        return torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(self.probabilities(), 0)])

    def inverse_cdf(self, u: torch.Tensor) -> torch.Tensor:
        """t = F^-1(u), piecewise linear between the bin edges (monotone in u)."""
        cdf = self.cdf()
        cdf[-1] = 1.0
        u = u.double().clamp(0, 1)
        b = torch.searchsorted(cdf, u, right=True).clamp(1, self.bins) - 1
        width = (cdf[b + 1] - cdf[b]).clamp(min=1e-12)
        frac = ((u - cdf[b]) / width).clamp(0, 1)
        return self.edges[b] + frac * (self.edges[b + 1] - self.edges[b])

    def from_uniform(self, u: torch.Tensor) -> torch.Tensor:
        return self.inverse_cdf(u.cpu()).float().to(u.device)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.from_uniform(torch.rand(n, generator=generator, dtype=torch.float64))

    @torch.no_grad()
    def update(self, t: torch.Tensor, loss: torch.Tensor) -> None:
        """EMA of the mean loss per bin, for the bins that received samples."""
        b = torch.bucketize(t.double().cpu(), self.edges[1:-1])
        total = torch.zeros(self.bins, dtype=torch.float64).index_add_(0, b, loss.double().cpu())
        count = torch.zeros(self.bins, dtype=torch.long).index_add_(0, b, torch.ones_like(b))
        hit = count > 0
        mean = total[hit] / count[hit]
        first = self.seen[hit] == 0  # first observation replaces the uniform prior outright
        self.loss[hit] = torch.where(first, mean, self.ema * self.loss[hit] + (1 - self.ema) * mean)
        self.seen += count

    def state_dict(self) -> dict:
        return {"loss": self.loss.clone(), "seen": self.seen.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.loss, self.seen = state["loss"].clone().double(), state["seen"].clone().long()

    def summary(self) -> dict:
        """Quartiles of the sampled t (for the metrics log)."""
        q = self.inverse_cdf(torch.tensor([0.25, 0.5, 0.75]))
        return {"t_q25": float(q[0]), "t_q50": float(q[1]), "t_q75": float(q[2])}
