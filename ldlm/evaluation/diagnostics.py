"""Diffusion diagnostics of a run, each a tidy DataFrame (notebooks write them to results/, figures draw them).

- `time_profile`: the adaptive sampler's per-bin loss and p(t) from a checkpoint, against uniform;
- `gamma_schedule`: the diffusion-to-encoder weight gamma(s) over training, from a config alone;
- `denoising_trajectory`: how many tokens the decoded x0 estimate changes per reverse step;
- `reconstruction_vs_noise`: token accuracy of latents noised as the DiT sees them (one x0 prediction
  at time t) and as the decoder sees them in training (z0 + sigma_dec eps).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from ..nets.diffusion import AdaptiveTimeSampler, encoder_gamma, tangent_alpha_sigma
from ..nets.layers import token_matches
from ..nets.samplers import generate_latents, time_grid
from ..runtime import checkpoint
from ..text.frozen_lm import attention_mask


def time_profile(run: str | Path) -> pd.DataFrame:
    """One row per time bin of the run's adaptive sampler (its checkpoint): t (bin centre), t_lo, t_hi,
    loss (EMA of the x0-MSE that fell in the bin; NaN where none did), seen (samples), p_adaptive (the
    bin's sampling probability, sums to 1) and p_uniform (uniform t's, 1 / bins)."""
    state = checkpoint.load(run)
    cfg = checkpoint.load_config(state)
    if not state.get("time_sampler"):
        raise ValueError(f"{run}: time_sampling={cfg.time_sampling} keeps no per-bin loss (adaptive runs only)")
    sampler = AdaptiveTimeSampler(cfg.time_bins, cfg.time_ema, cfg.t_min)
    sampler.load_state_dict(state["time_sampler"])
    edges, seen = sampler.edges.numpy(), sampler.seen.numpy()
    return pd.DataFrame(dict(bin=np.arange(sampler.bins), t=(edges[:-1] + edges[1:]) / 2, t_lo=edges[:-1],
                             t_hi=edges[1:], loss=np.where(seen > 0, sampler.loss.numpy(), np.nan), seen=seen,
                             p_adaptive=sampler.probabilities().numpy(), p_uniform=np.full(sampler.bins, 1 / sampler.bins)))


def gamma_schedule(cfg, points: int = 201) -> pd.DataFrame:
    """gamma(s) at `points` training steps from 0 to max_steps (S_wu among them): step, frac (of
    max_steps), gamma, warmup_steps (S_wu). gamma = 1 throughout when encoder_warmup is off."""
    s_wu = cfg.warmup_steps
    steps = np.unique(np.r_[np.linspace(0, cfg.max_steps, points).round().astype(int), s_wu])
    gamma = [encoder_gamma(cfg, int(s)) for s in steps]
    return pd.DataFrame(dict(step=steps, frac=steps / max(cfg.max_steps, 1), gamma=gamma, warmup_steps=s_wu))


@torch.no_grad()
def denoising_trajectory(view, steps: int, seed: int = 0, n: int = 4, start: int | None = None,
                         t_start: float = 1.0, text_rows: int = 6) -> pd.DataFrame:
    """One reverse process of `steps` steps (the run's sampler) for n samples, from N(0, I) or, with
    `start`, from row `start` of the LatentView noised to t_start (n copies, different noise).

    steps + 1 rows: step, t (of the x0 estimate), alpha, sigma, tokens_changed (mean over samples of
    the positions whose argmax token differs from the previous step's estimate; NaN at step 0),
    frac_final (share of positions that already hold the final tokens) and text (sample 0 decoded at
    `text_rows` evenly spaced steps, first and last included; None elsewhere)."""
    model, cfg = view.model, view.cfg
    estimates = []
    keep = lambda i, z, x0: estimates.append(model.latents_to_tokens(x0))
    z0 = None if start is None else view.z[start:start + 1].expand(n, -1, -1)
    generator = torch.Generator().manual_seed(seed)
    final = generate_latents(model, n, steps, cfg, generator, cfg.sampler, keep, start=(z0, t_start))
    estimates.append(model.latents_to_tokens(final))
    ids = torch.stack(estimates)  # [steps + 1, n, T]
    length = None if start is None else int(view.lengths[start])
    ts = time_grid(steps, cfg.t_min, t_start)  # the times of the estimates, as generate_latents made them
    alpha, sigma = tangent_alpha_sigma(ts, cfg.schedule_d)
    changed = (ids[1:] != ids[:-1]).sum(-1).double().mean(-1)
    shown = set(np.linspace(0, steps, min(text_rows, steps + 1)).round().astype(int).tolist())
    return pd.DataFrame(dict(step=np.arange(steps + 1), t=ts.numpy(), alpha=alpha.numpy(), sigma=sigma.numpy(),
                             tokens_changed=np.r_[np.nan, changed.numpy()],
                             frac_final=(ids == ids[-1]).double().mean((1, 2)).numpy(),
                             text=[view.text(ids[i, 0], length) if i in shown else None for i in range(steps + 1)]))


X0Estimate = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (z_t, t) -> x0_hat, no self-conditioning


@torch.no_grad()
def reconstruction_vs_noise(view, ts=None, sigmas=None, seed: int = 0, denoise: X0Estimate | None = None) -> pd.DataFrame:
    """Token accuracy over the view's rows (its `lengths`) from noised latents, one row per grid point.

    kind "diffusion": z_t = alpha_t z0 + sigma_t eps, one x0 prediction of `denoise` (the DiT, no
    self-conditioning), decoded; kind "decoder": z0 + sigma_dec eps decoded directly. The same eps
    (seeded) at every grid point, so the curves differ only by the noise level. Columns: kind, t
    (diffusion only), sigma (sigma_t or sigma_dec), token_acc, tokens (scored positions)."""
    model, cfg = view.model, view.cfg
    denoise = denoise or (lambda z, t: model.denoise(z, t))
    ts = np.linspace(cfg.t_min, 1.0, 11) if ts is None else np.asarray(ts, dtype=float)
    sigmas = np.array([0, 0.25, 0.5, 1, 2, 3, 4], dtype=float) if sigmas is None else np.asarray(sigmas, dtype=float)
    z0, mask = view.z, attention_mask(view.lengths, view.tokens.shape[1])
    eps = torch.randn(z0.shape, generator=torch.Generator().manual_seed(seed))

    def score(z: torch.Tensor) -> dict:
        correct, count = token_matches(model.latents_to_tokens(z), view.tokens, mask)
        return dict(token_acc=float(correct) / max(int(count), 1), tokens=int(count))

    rows = []
    for t in ts:
        alpha, sigma = (float(v) for v in tangent_alpha_sigma(torch.tensor(t, dtype=torch.float64), cfg.schedule_d))
        x0_hat = denoise(alpha * z0 + sigma * eps, torch.full((len(z0),), t, dtype=torch.float32))
        rows.append(dict(kind="diffusion", t=float(t), sigma=sigma, **score(x0_hat)))
    for s in sigmas:
        rows.append(dict(kind="decoder", t=np.nan, sigma=float(s), **score(z0 + s * eps)))
    return pd.DataFrame(rows)


def _spread(z: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(positions [N, D] float64, their mean, the eigenvalues >= 0 and eigenvectors of their covariance) of
    the latents [B, L, D] at the positions of `mask` [B, L] (all without one)."""
    flat = (z if mask is None else z[mask.bool()]).double().flatten(0, -2)
    eig, vec = torch.linalg.eigh(torch.cov(flat.T, correction=0))
    return flat, flat.mean(0), eig.clamp(min=0), vec


def latent_geometry(z: torch.Tensor, mask: torch.Tensor | None = None) -> dict:
    """How the latents [B, L, D] (the positions of `mask` [B, L]) fill their space:

    mean_share   ||mu||^2 / E||z||^2, the share of the energy in the direction all latents share
                 (1 = every latent is the same vector);
    var_per_dim  trace(Cov) / D, the spread around the mean;
    participation_ratio  (sum lambda)^2 / sum lambda^2 of Cov's eigenvalues: the effective number of
                 dimensions the spread uses (1 = a line, D = isotropic)."""
    flat, mean, eig, _ = _spread(z, mask)
    energy = flat.pow(2).sum(-1).mean()
    return dict(mean_share=float(mean.pow(2).sum() / energy), var_per_dim=float(eig.sum() / flat.shape[1]),
                participation_ratio=float(eig.sum() ** 2 / eig.pow(2).sum().clamp(min=1e-30)))


def wiener_denoiser(z: torch.Tensor, mask: torch.Tensor | None = None, d: float = 3.0) -> X0Estimate:
    """The best per-position linear x0 estimate for latents distributed with the mean and covariance of
    z's positions: x0 = mu + Sigma alpha (alpha^2 Sigma + sigma^2 I)^-1 (z_t - alpha mu). What a DiT
    that ignored the other positions and all non-Gaussian structure would reach: its floor to beat."""
    _, mean, eig, vec = _spread(z, mask)

    def denoise(z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha, sigma = (float(v) for v in tangent_alpha_sigma(t[:1].double(), d))
        gain = vec @ torch.diag(alpha * eig / (alpha**2 * eig + sigma**2)) @ vec.T
        return (mean + (z_t.double() - alpha * mean) @ gain).to(z_t.dtype)

    return denoise


@torch.no_grad()
def denoising_quality(view, ts=(0.001, 0.1, 0.2, 0.3), seed: int = 0) -> pd.DataFrame:
    """One x0 prediction (no self-conditioning) of the view's clean latents noised to each t, against
    the Wiener bound: t, sigma, dit_acc / wiener_acc (token accuracy of the decoded estimate over the
    view's lengths), dit_r2 / wiener_r2 (1 - MSE / the latents' variance around their mean), and
    decoder_acc (the clean latents decoded: the ceiling both aim at). The same eps at every t."""
    model, cfg = view.model, view.cfg
    z0, mask = view.z, attention_mask(view.lengths, view.tokens.shape[1]).bool()
    eps = torch.randn(z0.shape, generator=torch.Generator().manual_seed(seed))
    wiener = wiener_denoiser(z0, mask, cfg.schedule_d)
    spread = (z0[mask] - z0[mask].mean(0)).pow(2).sum(-1).mean()

    def score(x0_hat: torch.Tensor) -> tuple[float, float]:
        correct, count = token_matches(model.latents_to_tokens(x0_hat), view.tokens, mask)
        r2 = 1 - float((x0_hat[mask] - z0[mask]).pow(2).sum(-1).mean() / spread)
        return float(correct) / max(int(count), 1), r2

    decoder_acc, _ = score(z0)
    rows = []
    for t in ts:
        tt = torch.full((len(z0),), float(t))
        alpha, sigma = (float(v) for v in tangent_alpha_sigma(tt[:1].double(), cfg.schedule_d))
        z_t = alpha * z0 + sigma * eps
        dit_acc, dit_r2 = score(model.denoise(z_t, tt))
        wiener_acc, wiener_r2 = score(wiener(z_t, tt))
        rows.append(dict(t=float(t), sigma=sigma, dit_acc=dit_acc, dit_r2=dit_r2, wiener_acc=wiener_acc,
                         wiener_r2=wiener_r2, decoder_acc=decoder_acc))
    return pd.DataFrame(rows)


# the noise levels of a run's latent report: the smallest training time, then mid-noise
REPORT_TS = (0.001, 0.1, 0.2, 0.3)
REPORT_VERSION = "1"  # bump when a number of latent_report would change
PER_T = ("dit_acc", "wiener_acc", "dit_r2", "wiener_r2")  # denoising_quality's columns reported at each t


def per_t_column(name: str, t: float) -> str:
    return f"{name}_t{t:g}"


def report_columns(ts=REPORT_TS) -> list[str]:
    """The result-table columns of `latent_report`, in order."""
    return ["mean_share", "var_per_dim", "participation_ratio", "decoder_acc",
            *(per_t_column(name, t) for t in ts for name in PER_T)]


def latent_report(view, ts=REPORT_TS, seed: int = 0) -> dict:
    """One flat record of a trained LDLM's latents (`view`: held-out rows, clean): their geometry
    (`latent_geometry`) and how well one DiT prediction denoises them at each t (`denoising_quality`)."""
    mask = attention_mask(view.lengths, view.tokens.shape[1])
    quality = denoising_quality(view, ts, seed)
    record = dict(latent_geometry(view.z, mask), decoder_acc=float(quality["decoder_acc"].iloc[0]))
    for _, row in quality.iterrows():
        record.update({per_t_column(name, row["t"]): float(row[name]) for name in PER_T})
    return {k: record[k] for k in report_columns(ts)}
