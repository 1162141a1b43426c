"""Figures of the diffusion diagnostics (`ldlm.evaluation.diagnostics`), from the CSVs 40_latents writes to results/.

One line style per (preset, dataset) the CSV holds; LDLM's colour throughout, grey for references.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from . import plotstyle as ps

CSV = {"time_sampling": "time_sampling.csv", "warmup_gamma": "warmup_gamma.csv", "trajectory": "trajectory.csv",
       "recon_noise": "recon_noise.csv", "denoising": "denoising.csv"}
LDLM = ps.PALETTE["ldlm"]


def read(results_dir: Path, name: str) -> pd.DataFrame:
    path = Path(results_dir) / CSV[name]
    return pd.read_csv(path, keep_default_na=False, na_values=[""]) if path.exists() else pd.DataFrame()


def runs(rows: pd.DataFrame):
    """(label, line style, rows) per run setting in the CSV."""
    keys = ["preset", "dataset"] if {"preset", "dataset"} <= set(rows.columns) else []
    groups = rows.groupby(keys, sort=False) if keys else [((), rows)]
    for i, (key, part) in enumerate(groups):
        yield ", ".join(map(str, key)) or "run", ps.DATASET_LINES[i % len(ps.DATASET_LINES)], part


def time_sampling(results_dir: Path) -> Figure | None:
    """Left: the per-bin EMA diffusion loss against t (bins no sample reached are gaps). Right: the
    share of training samples drawn below t (the CDF of p(t)), adaptive against uniform: the adaptive
    sampler puts its mass where the loss grows fastest, so its CDF follows the loss's rise."""
    rows = read(results_dir, "time_sampling")
    if rows.empty:
        return None
    fig, (left, right) = ps.new_figure(1, 2)
    for name, ls, part in runs(rows):
        edges = np.r_[part["t_lo"].iloc[0], part["t_hi"]]
        left.plot(part["t"], part["loss"], color=LDLM, ls=ls, marker=".", ms=3, lw=1, label=name)
        right.plot(edges, np.r_[0, part["p_adaptive"].cumsum()], color=LDLM, ls=ls, lw=1.2, label=f"adaptive ({name})")
        right.plot(edges, np.r_[0, part["p_uniform"].cumsum()], color=ps.PALETTE["uniform"], ls=ls, lw=1,
                   label=f"uniform ({name})")
    left.set(xlabel="diffusion time t", ylabel="x0-MSE per bin (EMA) ↓", title="diffusion loss vs t")
    right.set(xlabel="diffusion time t", ylabel="share of samples below t", ylim=(0, 1.02),
              title="where t is sampled (CDF of p(t))")
    left.legend(), right.legend(loc="lower right")
    return fig


def warmup_gamma(results_dir: Path) -> Figure | None:
    """gamma(s), the share of the diffusion gradient the encoder receives, over training; S_wu marked."""
    rows = read(results_dir, "warmup_gamma")
    if rows.empty:
        return None
    fig, (ax,) = ps.new_figure(1, 1)
    for name, ls, part in runs(rows):
        ax.plot(part["step"], part["gamma"], color=ps.PALETTE.get(part["variant"].iloc[0], LDLM) if "variant" in part else LDLM,
                ls=ls, lw=1.2, label=name)
        ax.axvline(part["warmup_steps"].iloc[0], color="0.5", ls=":", lw=0.8)
        ax.annotate(f"S_wu = {part['warmup_steps'].iloc[0]}", (part["warmup_steps"].iloc[0], 0.05), textcoords="offset points", xytext=(3, 0), fontsize=7,
                    color="0.3")
    ax.axhline(1.0, color=ps.PALETTE["uniform"], lw=0.8, ls="--", label="encoder warmup off (γ = 1)")
    ax.set(xlabel="training step s", ylabel="γ(s)", ylim=(0, 1.05), title="diffusion-to-encoder gradient weight")
    ax.legend(loc="center right")
    return fig


def sigma_axis(ax, t: pd.Series, sigma: pd.Series) -> None:
    """A top axis with sigma_t over a t axis, interpolated from the rows' own (t, sigma_t) pairs."""
    order = np.argsort(t.to_numpy())
    ts, sigmas = t.to_numpy()[order], sigma.to_numpy()[order]
    top = ax.secondary_xaxis("top", functions=(lambda x: np.interp(x, ts, sigmas), lambda s: np.interp(s, sigmas, ts)))
    top.set_xticks([0.1, 0.5, 0.9, 0.99])
    top.set_xlabel("σ_t", fontsize=7)
    top.tick_params(labelsize=6.5)


def trajectory(results_dir: Path) -> Figure | None:
    """Left: tokens of the decoded x0 estimate that change per reverse step. Right: the share of
    positions already holding the final tokens. Against the step's t (sampling runs left to right)
    and its sigma_t (top axis)."""
    rows = read(results_dir, "trajectory")
    if rows.empty:
        return None
    fig, (left, right) = ps.new_figure(1, 2)
    starts = list(dict.fromkeys(rows["start"])) if "start" in rows else ["noise"]
    for i, start in enumerate(starts):
        part = rows[rows["start"] == start] if "start" in rows else rows
        for name, _, run in runs(part):
            ls = ps.DATASET_LINES[i % len(ps.DATASET_LINES)]
            left.plot(run["t"], run["tokens_changed"], color=LDLM, ls=ls, marker=".", ms=3, lw=1, label=f"{start} ({name})")
            right.plot(run["t"], run["frac_final"], color=LDLM, ls=ls, marker=".", ms=3, lw=1, label=f"{start} ({name})")
    for ax in (left, right):
        ax.set(xlabel="diffusion time t of the step (sampling →)", xlim=(1.02, -0.02))
        sigma_axis(ax, rows["t"], rows["sigma"])
    left.set(ylabel="tokens changed per step", title="denoising trajectory")
    right.set(ylabel="share of final tokens", ylim=(0, 1.02), title="when tokens are decided")
    ps.legend_below(fig, [left, right])
    return fig


def recon_noise(results_dir: Path) -> Figure | None:
    """Held-out token accuracy from noised latents. Left: one DiT x0 prediction from z_t, against t.
    Right: the decoder on z0 + sigma_dec eps, against sigma_dec (dotted: the run's training sigma_dec)."""
    rows = read(results_dir, "recon_noise")
    if rows.empty:
        return None
    fig, (left, right) = ps.new_figure(1, 2, sharey=True)
    for name, ls, part in runs(rows):
        diffusion, decoder = part[part["kind"] == "diffusion"], part[part["kind"] == "decoder"]
        left.plot(diffusion["t"], diffusion["token_acc"], color=LDLM, ls=ls, marker="o", ms=3, lw=1, label=name)
        right.plot(decoder["sigma"], decoder["token_acc"], color=LDLM, ls=ls, marker="o", ms=3, lw=1, label=name)
        if "decoder_noise" in part:
            right.axvline(part["decoder_noise"].iloc[0], color="0.5", ls=":", lw=0.8)
    left.set(xlabel="diffusion time t", ylabel="token accuracy ↑", title="DiT x0 prediction from z_t")
    right.set(xlabel="decoder-input noise σ_dec", title="decoder on z0 + σ_dec ε")
    left.legend()
    return fig


def denoising(results_dir: Path) -> Figure | None:
    """One DiT x0 prediction against the best per-position linear (Wiener) denoiser, over t. Left:
    held-out token accuracy of the decoded estimate (dotted: the clean latents decoded, the ceiling).
    Right: R^2 = 1 - MSE / the latents' variance around their mean (1 = exact, 0 = predicting the mean)."""
    rows = read(results_dir, "denoising")
    if rows.empty:
        return None
    fig, (left, right) = ps.new_figure(1, 2)
    for name, ls, part in runs(rows):
        for ax, metric in ((left, "acc"), (right, "r2")):
            ax.plot(part["t"], part[f"dit_{metric}"], color=LDLM, ls=ls, marker="o", ms=3, lw=1, label=f"DiT ({name})")
            ax.plot(part["t"], part[f"wiener_{metric}"], color=ps.PALETTE["uniform"], ls=ls, marker="s", ms=3, lw=1,
                    label=f"Wiener bound ({name})")
        left.axhline(part["decoder_acc"].iloc[0], color="0.5", ls=":", lw=0.8)
    left.set(xlabel="diffusion time t", ylabel="token accuracy ↑", ylim=(0, 1.02), title="x0 estimate, decoded")
    right.set(xlabel="diffusion time t", ylabel="R² ↑", ylim=(min(0, rows[["dit_r2", "wiener_r2"]].min().min()), 1.02),
              title="x0 estimate against the latents' spread")
    left.legend()
    return fig


FIGURES = {"time_sampling": time_sampling, "warmup_gamma": warmup_gamma, "trajectory": trajectory,
           "recon_noise": recon_noise, "denoising": denoising}
