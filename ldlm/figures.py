"""The paper's figures, drawn from results/ only (no model, no GPU): PNG and PDF into figures/."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from .io import atomic_path  # noqa: E402

MODEL_STYLE = {"ldlm": dict(marker="o", color="C0"), "mdlm": dict(marker="s", color="C1"),
               "ar": dict(marker="^", color="C2"), "reference": dict(marker="*", color="k", s=160)}


def _save(fig, figures_dir: Path, name: str) -> list[Path]:
    paths = []
    for ext in ("png", "pdf"):
        path = figures_dir / f"{name}.{ext}"
        with atomic_path(path, suffix=f".{ext}") as tmp:
            fig.savefig(tmp, format=ext, dpi=150, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


def _read(results_dir: Path, pattern: str) -> pd.DataFrame:
    frames = [pd.read_csv(p) for p in sorted(results_dir.glob(pattern))]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _sigma_dec(rows: pd.DataFrame) -> str:
    """The decoder-input noise the LDLM rows were trained with, for a title (0 in the ablation's no-noise rows)."""
    values = rows["decoder_noise"].dropna() if "decoder_noise" in rows else pd.Series(dtype=float)
    return f"; LDLM σ_dec = {values.max():g}" if len(values) else ""


def pareto(results_dir: Path, figures_dir: Path) -> list[Path]:
    """Gen PPL (token-weighted) vs entropy, one panel per dataset; LDLM and MDLM points traced by
    sampling steps, the GPT's by nucleus p, held-out text as the star. Each point is the mean over
    seeds, its bars the range of the seeds (a ± std bar would cross zero on the log axis); the seeds'
    own points are drawn faintly behind it."""
    rows = _read(results_dir, "main_*.csv")
    if rows.empty:
        return []
    rows = rows.assign(top_p=rows["top_p"].fillna(1.0) if "top_p" in rows else 1.0)
    datasets = list(dict.fromkeys(rows["dataset"]))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for model, group in rows[rows["dataset"] == dataset].groupby("model"):
            ar = model == "ar"  # the GPT's points are traced by nucleus p, the diffusion models' by steps
            style = MODEL_STYLE.get(model, dict(marker="x"))
            if model == "reference":
                ax.scatter(group["entropy"], group["gen_ppl_tok"], label="held-out text", zorder=3, **style)
                continue
            setting = "top_p" if ar else "steps"
            stats = group.groupby(setting)[["entropy", "gen_ppl_tok"]].agg(["mean", "min", "max"]).sort_index()
            seeds = group["seed"].nunique() if "seed" in group else 1
            spread = lambda m: [stats[(m, "mean")] - stats[(m, "min")], stats[(m, "max")] - stats[(m, "mean")]]
            ax.scatter(group["entropy"], group["gen_ppl_tok"], marker=style["marker"], color=style.get("color"),
                       alpha=0.25, s=14)
            ax.errorbar(stats[("entropy", "mean")], stats[("gen_ppl_tok", "mean")], xerr=spread("entropy"),
                        yerr=spread("gen_ppl_tok"), marker=style["marker"], color=style.get("color"),
                        capsize=2, label=f"{'AR (GPT)' if ar else model.upper()} ({seeds} seed{'s' * (seeds > 1)})")
            for value, r in stats.iterrows():
                ax.annotate(f"p={value:g}" if ar else f"{int(value)}", (r[("entropy", "mean")], r[("gen_ppl_tok", "mean")]),
                            textcoords="offset points", xytext=(4, 4), fontsize=7)
        judge = rows["judge"].dropna().iloc[0] if "judge" in rows else "?"
        ax.set(title=f"{dataset} ({rows['preset'].iloc[0]})", xlabel="unigram entropy (nats) →",
               ylabel=f"Gen PPL, token-weighted, judge {judge} ↓", yscale="log")
        ax.legend(fontsize=8)
    fig.suptitle("Quality–diversity fronts: seed mean, bars the range of the seeds (labels: sampling steps; AR: nucleus p)"
                 + _sigma_dec(rows))
    return _save(fig, figures_dir, "pareto")


def ablation(results_dir: Path, figures_dir: Path) -> list[Path]:
    path = results_dir / "ablation.csv"
    if not path.exists():
        return []
    rows = pd.read_csv(path)
    order = [v for v in ["full", "no_mse", "no_warmup", "no_adaptive", "no_decoder_noise", "naive"] if v in set(rows["variant"])]
    metrics = [m for m in ("gen_ppl_tok", "entropy", "mauve", "recon_acc") if m in rows]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.6))
    for ax, metric in zip(axes, metrics):
        stats = rows.groupby("variant")[metric].agg(["mean", "min", "max"]).reindex(order)
        ax.bar(range(len(order)), stats["mean"], yerr=[stats["mean"] - stats["min"], stats["max"] - stats["mean"]],
               color=["C0"] + ["C7"] * (len(order) - 2) + ["C3"], alpha=0.7, capsize=2)
        position = {v: i for i, v in enumerate(order)}  # each seed's value on its bar
        ax.scatter(rows["variant"].map(position), rows[metric], color="k", s=8, zorder=3)
        ax.set_xticks(range(len(order)), order, rotation=60, ha="right", fontsize=8)
        ax.set_title(metric + (" (log)" if metric == "gen_ppl_tok" else ""))
        if metric == "gen_ppl_tok":
            ax.set_yscale("log")
    seeds = rows["seed"].nunique() if "seed" in rows else 1
    fig.suptitle(f"Ablation of the four recipe components ({rows['preset'].iloc[0]}, {rows['dataset'].iloc[0]}; "
                 f"bars: mean of {seeds} seeds with their range, dots: seeds){_sigma_dec(rows)}")
    fig.tight_layout()
    return _save(fig, figures_dir, "ablation")


def speed_quality(results_dir: Path, figures_dir: Path) -> list[Path]:
    """Left: sampling throughput vs steps per batch size. Right: Gen PPL vs samples/s (largest batch)."""
    speed = _read(results_dir, "speed.csv")
    if speed.empty:
        return []
    sampling = speed[speed["kind"] == "sampling"]
    main = _read(results_dir, "main_*.csv")
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for (model, batch), group in sampling.groupby(["model", "batch"]):
        group = group.sort_values("steps")
        left.plot(group["steps"], group["samples_per_s"], marker=MODEL_STYLE.get(model, {}).get("marker", "x"),
                  label=f"{model.upper()}, batch {batch}")
    left.set(xlabel="sampling steps (GPT: one per token)", ylabel="samples / s", xscale="log", yscale="log",
             title=f"sampling speed ({sampling['hardware'].iloc[0]}, {sampling['threads'].iloc[0]} threads)")
    left.legend(fontsize=8)
    big = sampling[sampling["batch"] == sampling["batch"].max()]
    if not main.empty:
        merged = main[main["model"] != "reference"].merge(big[["model", "steps", "samples_per_s"]], on=["model", "steps"],
                                                         suffixes=("_eval", ""))
        for (model, dataset), group in merged.groupby(["model", "dataset"]):
            group = group.sort_values("steps")
            right.plot(group["samples_per_s"], group["gen_ppl_tok"], marker="o", label=f"{model.upper()} {dataset}")
    right.set(xlabel=f"samples / s (batch {big['batch'].max()})", ylabel="Gen PPL (token-weighted) ↓",
              xscale="log", yscale="log", title="speed vs quality")
    right.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, figures_dir, "speed_quality")


def run_label(results_dir: Path, rid: str) -> str:
    """'news, no_mse, 150 steps' from the run record; the run id where there is none."""
    record = results_dir / "runs" / f"{rid}.json"
    if not record.exists():
        return rid[:40]
    cfg = json.loads(record.read_text())["config"]
    model = "" if cfg.get("model", "ldlm") == "ldlm" else f"{cfg['model'].upper()}, "
    return f"{cfg['dataset']}, {model}{cfg['variant']}, {cfg['max_steps']} steps"


def training_curves(results_dir: Path, figures_dir: Path) -> list[Path]:
    """Losses and held-out reconstruction over training steps; one colour per run setting (its seeds
    share it), the legend below the panels."""
    logs = sorted((results_dir / "curves").glob("*.jsonl"))
    if not logs:
        return []
    panels = ["loss_diff", "loss_h", "loss_tok", "ema_recon_acc"]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4))
    colours, handles = {}, {}
    for log in logs:
        rows = pd.DataFrame([json.loads(line) for line in log.read_text().splitlines() if line.strip()])
        label = run_label(results_dir, log.stem)
        colour = colours.setdefault(label, f"C{len(colours) % 10}" if len(colours) < 10 else plt.cm.tab20(len(colours) % 20))
        for ax, key in zip(axes, panels):
            if key in rows:
                part = rows.dropna(subset=[key])
                (line,) = ax.plot(part["step"], part[key], color=colour, lw=1, marker=".", ms=4)
                handles.setdefault(label, line)
    for ax, key in zip(axes, panels):
        ax.set(title=key + (" ↑" if key == "ema_recon_acc" else " ↓"), xlabel="training step")
    fig.legend(handles.values(), handles.keys(), loc="upper center", bbox_to_anchor=(0.5, 0.0),
               ncol=min(4, len(handles)), fontsize=7, frameon=False)
    fig.suptitle("Training curves (each line one run; the seeds of a setting share its colour)")
    fig.tight_layout()
    return _save(fig, figures_dir, "training_curves")


def latent_views(results_dir: Path, figures_dir: Path) -> list[Path]:
    pca_path, dims_path = results_dir / "latents_pca.csv", results_dir / "latents_dims.csv"
    if not (pca_path.exists() and dims_path.exists()):
        return []
    pca, dims = pd.read_csv(pca_path), pd.read_csv(dims_path)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for dataset, group in pca.groupby("dataset"):
        left.scatter(group["pc1"], group["pc2"], s=12, label=dataset)
    left.set(title="PCA of per-sequence mean latents (held-out)", xlabel="PC1", ylabel="PC2")
    left.legend(fontsize=8)
    for dataset, group in dims.groupby("dataset"):
        right.plot(group["dim"], group["std"].sort_values(ascending=False).to_numpy(), label=dataset)
    right.set(title="latent dimensions, std (sorted)", xlabel="dimension rank", ylabel="std over positions")
    right.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, figures_dir, "latents")


FIGURES = [pareto, ablation, speed_quality, training_curves, latent_views]


def make_all(results_dir: str | Path = "results", figures_dir: str | Path = "figures") -> list[str]:
    """Every figure whose inputs exist in results_dir; returns the written paths."""
    results_dir, figures_dir = Path(results_dir), Path(figures_dir)
    figures_dir.mkdir(parents=True, exist_ok=True)
    return [str(p) for make in FIGURES for p in make(results_dir, figures_dir)]
