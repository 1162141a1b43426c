"""Noise schedule, adaptive timestep sampler and the diffusion-to-encoder warmup.

All pure functions or tiny stateful objects; the schedule is computed in float64 and cast at the end.
"""
from __future__ import annotations

import math

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


class AdaptiveTimeSampler:
    """Timesteps drawn so the expected diffusion loss grows linearly in u ~ U(0, 1) (paper §5.3, Eq. 5).

    B bins over [t_min, 1] keep an EMA of the per-sample x0-loss that fell in them (l_b). With
    l_0 := 0 at t_min (x0-prediction error vanishes without noise), bin b gets probability
    p_b proportional to max(l_b - l_{b-1}, 0) + floor, i.e. to dL/dt: the inverse of the piecewise-linear CDF
    F(t) maps u to t, and L(t(u)) is then linear in u. Before any loss is seen l_b = b / B (uniform).
    """

    def __init__(self, bins: int = 100, ema: float = 0.999, t_min: float = 1e-3, floor: float = 1e-3):
        self.bins, self.ema, self.t_min, self.floor = bins, ema, t_min, floor
        self.edges = torch.linspace(t_min, 1.0, bins + 1, dtype=torch.float64)
        self.loss = torch.arange(1, bins + 1, dtype=torch.float64) / bins
        self.seen = torch.zeros(bins, dtype=torch.long)

    def probabilities(self) -> torch.Tensor:
        increments = torch.diff(self.loss, prepend=self.loss.new_zeros(1)).clamp(min=0)
        increments = increments + self.floor * increments.sum().clamp(min=1e-12) / self.bins
        return increments / increments.sum()

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
