"""The paper's figures, drawn from results/ only (no model, no GPU): PNG and PDF into figures/.

`make_all` writes every figure whose inputs exist; `draw(name, results_dir)` returns one as a
matplotlib Figure (a notebook shows it inline). Colours, labels and sizes: `ldlm.evaluation.plotstyle`.
Given an experiment spec's run ids (`Experiment.run_ids`), the figures of result rows and training curves
draw those runs only, selected as the tables select them (`results.of_runs`): results/ keeps the rows of
renamed runs beside their successors. The diagnostics and latent views hold one block per preset and
dataset, which 40_latents replaces whole: they draw every block.
Importing this module leaves matplotlib's backend and rc settings alone.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from ..config import VARIANTS
from ..kinds.registry import KINDS
from . import diagnostic_figures, plotstyle as ps
from .results import MAUVE_FLOOR, at_default_temperature, degenerate, frontier_rows, is_reference, of_runs, with_settings

SAMPLE_METRICS = ("gen_ppl_tok", "entropy", "mauve")  # the ablation's panels that score samples (not latents)

def read(results_dir: Path, pattern: str, run_ids=None) -> pd.DataFrame:
    """The rows of the CSVs matching `pattern`; of the runs `run_ids` only, unless None (results.of_runs)."""
    frames = [pd.read_csv(p) for p in sorted(Path(results_dir).glob(pattern))]
    return of_runs(pd.concat(frames, ignore_index=True), run_ids) if frames else pd.DataFrame()


def curve_logs(results_dir: Path, run_ids=None) -> list[Path]:
    """The training-curve logs (results/curves/<run_id>.jsonl); of the runs `run_ids` only, unless None."""
    logs = {log.stem: log for log in sorted((Path(results_dir) / "curves").glob("*.jsonl"))}
    return [logs[rid] for rid in of_runs(pd.DataFrame({"run_id": list(logs)}), run_ids)["run_id"]] if logs else []


def sigma_dec(rows: pd.DataFrame) -> str:
    """The decoder-input noise the LDLM rows were trained with, for a title (0 in the ablation's no-noise rows)."""
    values = rows["decoder_noise"].dropna() if "decoder_noise" in rows else pd.Series(dtype=float)
    return f", LDLM σ_dec = {values.max():g}" if len(values) else ""


def place_labels(ax, points: list[tuple[float, float, str]], fontsize: float = 6.5) -> None:
    """Annotate points with short texts, each at the offset (of a few around its point) that overlaps
    the labels and points already there least, so that clustered points do not print over each other.
    Call after the figure's layout is final (`fig.draw_without_rendering()`)."""
    scale = ax.figure.dpi / 72  # pixels per point
    xy = [ax.transData.transform((x, y)) / scale for x, y, _ in points]  # in points
    taken = [(px - 2, py - 2, px + 2, py + 2) for px, py in xy]  # the markers themselves
    overlap = lambda a, b: max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    for (px, py), (x, y, text) in zip(xy, points):
        w, h = 0.6 * fontsize * len(text), fontsize
        candidates = [(3, 2), (3, -2 - h), (-3 - w, 2), (-3 - w, -2 - h), (-w / 2, 4), (-w / 2, -4 - h),
                      (3, 4 + h), (3, -4 - 2 * h), (-3 - w, 4 + h), (-3 - w, -4 - 2 * h)]
        boxes = [(px + dx, py + dy, px + dx + w, py + dy + h) for dx, dy in candidates]
        best = min(range(len(boxes)), key=lambda k: (sum(overlap(boxes[k], b) for b in taken), k))
        taken.append(boxes[best])
        ax.annotate(text, (x, y), textcoords="offset points", xytext=candidates[best], fontsize=fontsize,
                    color="0.25")


def seed_range(rows: pd.DataFrame, by: str, columns: list[str]) -> pd.DataFrame:
    """Mean, min and max over seeds of each column, per value of `by` (sorted)."""
    return rows.groupby(by)[columns].agg(["mean", "min", "max"]).sort_index()


def flagged(rows: pd.DataFrame) -> pd.Series:
    """results.degenerate as plain booleans (a row that cannot be told is not marked)."""
    return degenerate(rows).fillna(False).astype(bool)


def bars(stats: pd.DataFrame, column: str) -> list:
    """Error bars spanning the seeds' range (a ± std bar would cross zero on a log axis)."""
    return [stats[(column, "mean")] - stats[(column, "min")], stats[(column, "max")] - stats[(column, "mean")]]


def trace(ax, rows: pd.DataFrame, by: str, colour, marker: str, ls: str, label: str | None = None) -> pd.DataFrame:
    """One curve of a model: the seed mean of each value of `by` with the seeds' range as bars, joined in
    the order of `by` by a line of style `ls`; hollow where a seed's samples are degenerate. Returns the
    means (entropy, gen_ppl_tok) per value of `by`."""
    stats = seed_range(rows, by, ["entropy", "gen_ppl_tok"])
    ax.errorbar(stats[("entropy", "mean")], stats[("gen_ppl_tok", "mean")], xerr=bars(stats, "entropy"),
                yerr=bars(stats, "gen_ppl_tok"), marker=marker, color=colour, capsize=1.5, ms=4, lw=1, ls=ls, label=label)
    bad = rows.groupby(by)["degenerate"].any().reindex(stats.index, fill_value=False)
    if bad.any():
        ps.hollow(ax, stats.loc[bad, ("entropy", "mean")], stats.loc[bad, ("gen_ppl_tok", "mean")], colour, marker)
        ax.add_line(ps.degenerate_handle())  # an empty line: its legend entry, once per panel
    return stats


def pareto(results_dir: Path, run_ids=None) -> Figure | None:
    """Gen PPL (token-weighted) vs entropy, one panel per dataset, held-out text as the star. Per model, its
    sweep at its default temperature (LDLM and MDLM over sampling steps, the GPT over nucleus p: dotted,
    labelled by steps or p) and its frontier (solid, through the temperatures sampled at one setting:
    results.frontier_setting; labelled T=...). Each point is the mean over seeds with the seeds' range as
    bars; the seeds' own points are drawn faintly behind it; hollow: degenerate samples."""
    rows = read(results_dir, "main_*.csv", run_ids)
    if rows.empty:
        return None
    rows = with_settings(rows).assign(degenerate=flagged(rows))
    datasets = list(dict.fromkeys(rows["dataset"]))
    fig, axes = ps.new_figure(1, len(datasets))
    judge = rows["judge"].dropna().iloc[0] if "judge" in rows else "?"
    labels = {}
    for ax, dataset in zip(axes, datasets):
        labels[ax] = []
        for model, group in rows[rows["dataset"] == dataset].groupby("model"):
            colour, marker = ps.PALETTE.get(model, "0.5"), ps.MARKERS.get(model, "x")
            if model == "reference":
                ax.scatter(group["entropy"], group["gen_ppl_tok"], marker=marker, color=colour, s=90, zorder=3,
                           label=ps.label(model))
                continue
            seeds = group["seed"].nunique() if "seed" in group else 1
            ax.scatter(group["entropy"], group["gen_ppl_tok"], marker=marker, color=colour, alpha=0.25, s=10)
            sweep, name = group[at_default_temperature(group)], f"{ps.label(model)} ({seeds} seed{'s' * (seeds > 1)})"
            if len(sweep):
                knob = KINDS[model].knob
                stats = trace(ax, sweep, knob, colour, marker, ":", name)
                labels[ax] += [(r[("entropy", "mean")], r[("gen_ppl_tok", "mean")], f"p={v:g}" if knob == "top_p" else f"{int(v)}")
                               for v, r in stats.iterrows()]
            frontier = frontier_rows(group)
            if frontier["temperature"].nunique() > 1:  # the default's point is labelled by the sweep already
                stats = trace(ax, frontier, "temperature", colour, marker, "-", None if len(sweep) else name)
                labels[ax] += [(r[("entropy", "mean")], r[("gen_ppl_tok", "mean")], f"T={t:g}")
                               for t, r in stats.iterrows() if not (len(sweep) and t == sweep["temperature"].iloc[0])]
        ax.set(title=f"{dataset} ({rows['preset'].iloc[0]})", xlabel="unigram entropy (nats; ★ = real text)",
               ylabel=f"Gen PPL ({judge}) ↓")
        ps.log_axis(ax, "y")
    ps.legend_below(fig, axes)
    fig.suptitle("Quality vs diversity: seed mean and range\n(dotted, labels: sampling steps, AR: nucleus p; solid: "
                 "temperature frontier, labels T" + sigma_dec(rows) + ")", fontsize=8)
    fig.draw_without_rendering()  # the final layout, so that labels are placed where the points end up
    for ax, points in labels.items():
        place_labels(ax, points)
    return fig


def ablation(results_dir: Path, run_ids=None) -> Figure | None:
    rows = read(results_dir, "ablation.csv", run_ids)
    if rows.empty:
        return None
    collapsed = set(rows.loc[flagged(rows), "variant"])  # any seed; the flags need the reference row
    reference, rows = rows[is_reference(rows)], rows[~is_reference(rows)]
    order = [v for v in VARIANTS if v in set(rows["variant"])]
    metrics = {"gen_ppl_tok": "Gen PPL (token) ↓", "entropy": "unigram entropy (nats)", "mauve": "MAUVE ↑",
               "recon_acc": "reconstruction acc. ↑", "mean_share": "latent energy in the shared mean ↓",
               "participation_ratio": "participation ratio (dimensions) ↑",
               "dit_acc_t0.2": "DiT x0 acc. at t = 0.2 ↑", "dit_r2_t0.2": "DiT R² at t = 0.2 ↑"}
    metrics = {k: v for k, v in metrics.items() if k in rows}
    fig, axes = ps.new_figure((len(metrics) + 1) // 2, 2, height=2.4, sharex=True)
    for ax, (metric, title) in zip(axes, metrics.items()):
        # bars: mean over seeds with the seeds' full range; dots: the seeds
        sns.barplot(rows, x="variant", y=metric, hue="variant", order=order, hue_order=order, palette=ps.PALETTE,
                    errorbar=("pi", 100), capsize=0.2, err_kws={"linewidth": 1}, alpha=0.8, legend=False, ax=ax)
        sns.stripplot(rows, x="variant", y=metric, order=order, color="k", size=2.5, jitter=0.15, ax=ax)
        ax.set(ylabel="", xlabel="", title=title)
        if metric in reference and reference[metric].notna().any():
            ax.axhline(reference[metric].mean(), color=ps.PALETTE["reference"], ls="--", lw=0.8, label=ps.label("reference"))
        if metric == "gen_ppl_tok":
            ps.log_axis(ax, "y")
        if metric in SAMPLE_METRICS:  # the flag is the samples': every panel that scores them carries it
            hatch_bars(ax, [v in collapsed for v in order])
        if metric == "mauve":
            mauve_axis(ax, rows[metric])
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    handles = [h for ax in axes for h in ax.get_legend_handles_labels()[0]][:1]  # the held-out line, once
    handles += [ps.degenerate_handle(bar=True)] if collapsed & set(order) else []
    if handles:  # under the panels
        fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False, fontsize=7)
    for ax in axes:
        ax.set_xticks(range(len(order)), [ps.label(v) for v in order], rotation=40, ha="right")
    seeds = rows["seed"].nunique() if "seed" in rows else 1
    fig.suptitle(f"Ablation ({rows['preset'].iloc[0]}, {rows['dataset'].iloc[0]}; bars: mean of {seeds} seeds "
                 f"with their range, dots: seeds{sigma_dec(rows)})", fontsize=8)
    return fig


def mauve_axis(ax, values: pd.Series) -> None:
    """MAUVE on its whole range, 0 to 1: a zoomed axis makes noise at the floor look like differences;
    when every value is at the floor, the panel says so."""
    ax.set_ylim(0, 1)
    if values.max() < MAUVE_FLOOR:
        ax.text(0.5, 0.5, f"all at MAUVE's floor (≤ {values.max():.3g}):\nno difference to read", ha="center",
                va="center", transform=ax.transAxes, fontsize=7, color="0.3")


def hatch_bars(ax, marked: list[bool]) -> None:
    """Hatch the bars at the x positions (0, 1, ...) where `marked` is true: the degenerate mark."""
    for bar in ax.patches:
        position = round(bar.get_x() + bar.get_width() / 2)
        if 0 <= position < len(marked) and marked[position]:
            bar.set_hatch(ps.DEGENERATE_HATCH)
            bar.set_edgecolor("0.2")


def speed_quality(results_dir: Path, run_ids=None) -> Figure | None:
    """Left: sampling throughput vs steps, per model and batch size (line style). Right: Gen PPL (seed mean
    and range) vs samples/s at the largest batch, per model and dataset (line styles of their own), at the
    default temperature (the frontiers' other temperatures sample at the same speed); hollow: degenerate
    samples."""
    speed = read(results_dir, "speed.csv", run_ids)
    if speed.empty:
        return None
    sampling = speed[speed["kind"] == "sampling"]
    fig, (left, right) = ps.new_figure(1, 2)
    batches = sorted(sampling["batch"].unique(), reverse=True)
    batch_line = {b: ps.DATASET_LINES[i % len(ps.DATASET_LINES)] for i, b in enumerate(batches)}
    for (model, batch), group in sampling.groupby(["model", "batch"]):
        group = group.sort_values("steps")
        left.plot(group["steps"], group["samples_per_s"], color=ps.PALETTE.get(model, "0.5"),
                  marker=ps.MARKERS.get(model, "x"), ms=4, ls=batch_line[batch])
    models = [m for m in ps.MARKERS if m in set(sampling["model"])]
    ps.key_legend(left, models, {f"batch {b}": batch_line[b] for b in batches}, ncol=2, fontsize=6.5)
    ps.log_axis(left, "x"), ps.log_axis(left, "y")
    left.set(xlabel="sampling steps (GPT: one per token)", ylabel="samples / s ↑",
             title=f"speed ({sampling['hardware'].iloc[0]}, {sampling['threads'].iloc[0]} threads)")
    big = sampling[sampling["batch"] == sampling["batch"].max()]
    main = read(results_dir, "main_*.csv", run_ids)
    if not main.empty:
        main = main.assign(degenerate=flagged(main))  # before the reference rows are left out
        main = main[main["model"] != "reference"]
        main = main[at_default_temperature(main)]  # the sweeps: a frontier's temperatures share one speed
        merged = main.merge(big[["model", "steps", "samples_per_s"]],
                                                         on=["model", "steps"], suffixes=("_eval", ""))
        setting = merged["top_p"].fillna(merged["steps"]) if "top_p" in merged else merged["steps"]
        merged = merged.assign(setting=setting)
        datasets = list(dict.fromkeys(merged["dataset"]))
        # one meaning per line style in the figure: the datasets take the styles the batch sizes left
        dataset_line = {d: ps.DATASET_LINES[(len(batches) + i) % len(ps.DATASET_LINES)] for i, d in enumerate(datasets)}
        for (dataset, model), group in merged.groupby(["dataset", "model"]):
            stats = seed_range(group, "setting", ["samples_per_s", "gen_ppl_tok"])
            right.errorbar(stats[("samples_per_s", "mean")], stats[("gen_ppl_tok", "mean")],
                           yerr=bars(stats, "gen_ppl_tok"), color=ps.PALETTE.get(model, "0.5"), ls=dataset_line[dataset],
                           marker=ps.MARKERS.get(model, "x"), ms=4, lw=1, capsize=1.5)
            bad = group.groupby("setting")["degenerate"].any().reindex(stats.index, fill_value=False)
            if bad.any():
                ps.hollow(right, stats.loc[bad, ("samples_per_s", "mean")], stats.loc[bad, ("gen_ppl_tok", "mean")],
                          ps.PALETTE.get(model, "0.5"), ps.MARKERS.get(model, "x"))
        extra = [ps.degenerate_handle()] if merged["degenerate"].any() else []
        ps.key_legend(right, lines=dataset_line, extra=extra, fontsize=6.5)
    ps.log_axis(right, "x"), ps.log_axis(right, "y")
    right.set(xlabel=f"samples / s at batch {big['batch'].max()} ↑", ylabel="Gen PPL (token) ↓",
              title="speed vs quality (seed mean, range)")
    return fig


def run_label(results_dir: Path, rid: str) -> tuple[str, str, str]:
    """(model, variant, 'dataset, N steps') from the run record; from the run id's parts
    (preset-dataset-model[-variant]-seed-hash, results.run_id) where there is none."""
    record = Path(results_dir) / "runs" / f"{rid}.json"
    if not record.exists():
        named = re.fullmatch(r"[^-]+-(?P<dataset>.+?)-(?P<model>[a-z]+)(?:-(?P<variant>[a-z_]+))?-s\d+-[0-9a-f]{8}", rid)
        return (named["model"], named["variant"] or "full", named["dataset"]) if named else ("ldlm", "full", rid[:40])
    cfg = json.loads(record.read_text())["config"]
    return cfg.get("model", "ldlm"), cfg["variant"], f"{cfg['dataset']}, {cfg['max_steps']} steps"


def training_curves(results_dir: Path, run_ids=None) -> Figure | None:
    """LDLM's losses and held-out reconstruction over training: colour = recipe variant, line style =
    setting (dataset, budget); each run is its own thin line (seeds are not averaged)."""
    panels = {"loss_diff": "diffusion loss L_diff ↓", "loss_h": "decoder loss L_h ↓", "loss_tok": "token loss L_w ↓",
              "ema_recon_acc": "held-out reconstruction acc. ↑"}
    runs = []
    for log in curve_logs(results_dir, run_ids):
        _, variant, setting = run_label(results_dir, log.stem)
        rows = pd.DataFrame([json.loads(line) for line in log.read_text().splitlines() if line.strip()])
        if "step" in rows and rows.columns.isin(list(panels)).any():  # the baselines log none of these losses
            runs.append((variant, setting, rows))
    if not runs:
        return None
    settings = list(dict.fromkeys(s for _, s, _ in runs))
    line = {s: ps.DATASET_LINES[i % len(ps.DATASET_LINES)] for i, s in enumerate(settings)}
    fig, axes = ps.new_figure(2, 2, height=2.4, sharex=True)
    for ax, (key, title) in zip(axes, panels.items()):
        for variant, setting, rows in runs:
            if key in rows:
                part = rows.dropna(subset=[key])
                ax.plot(part["step"], part[key], color=ps.PALETTE.get(variant, "0.5"), ls=line[setting], lw=0.9,
                        marker=".", ms=3)
        ax.set(title=title, xlabel="training step" if ax in axes[2:] else "")
    variants = [v for v in VARIANTS if v in {v for v, _, _ in runs}]
    ps.key_legend(axes[0], variants, fontsize=6.5, ncol=2)
    ps.key_legend(axes[1], lines=line, fontsize=6.5)
    fig.suptitle("LDLM training curves (one line per run and seed)", fontsize=8)
    return fig


def latent_views(results_dir: Path) -> Figure | None:
    pca_path, dims_path = Path(results_dir) / "latents_pca.csv", Path(results_dir) / "latents_dims.csv"
    if not (pca_path.exists() and dims_path.exists()):
        return None
    pca, dims = pd.read_csv(pca_path), pd.read_csv(dims_path)
    fig, (left, right) = ps.new_figure(1, 2)
    sns.scatterplot(pca, x="pc1", y="pc2", style="dataset", color=ps.PALETTE["ldlm"], s=14, ax=left)
    left.set(title="held-out sequences: mean latent, PCA", xlabel="PC1", ylabel="PC2")
    for i, (dataset, group) in enumerate(dims.groupby("dataset", sort=False)):
        right.plot(range(len(group)), group["std"].sort_values(ascending=False).to_numpy(), color=ps.PALETTE["ldlm"],
                   ls=ps.DATASET_LINES[i % len(ps.DATASET_LINES)], label=dataset)
    right.set(title="latent dimensions, sorted", xlabel="dimension rank", ylabel="std over positions")
    right.legend(title="dataset")
    return fig


OF_RUNS: dict[str, Callable[[Path, object], Figure | None]] = {  # file name -> draw(results_dir, run_ids)
    "pareto": pareto, "ablation": ablation, "speed_quality": speed_quality, "training_curves": training_curves}
RUN_TABLES = ("main_*.csv", "ablation.csv", "speed.csv")  # what OF_RUNS read besides the curves
FIGURES: dict[str, Callable] = {**OF_RUNS, "latents": latent_views, **diagnostic_figures.FIGURES}


def _draw(name: str, results_dir: Path, run_ids) -> Figure | None:
    return OF_RUNS[name](results_dir, run_ids) if name in OF_RUNS else FIGURES[name](results_dir)


def draw(name: str, results_dir: str | Path = "results", run_ids=None) -> Figure | None:
    """Figure `name` (a key of FIGURES) from results_dir, or None when its inputs are missing; `run_ids`
    (an experiment's, Experiment.run_ids): the runs a figure of result rows or curves draws (None: all)."""
    with ps.style():
        return _draw(name, Path(results_dir), run_ids)


def left_out(results_dir: str | Path, run_ids) -> tuple[int, int]:
    """(result rows, training curves) in results_dir of runs outside `run_ids`: what the figures leave out."""
    rows = sum(len(read(results_dir, p)) - len(read(results_dir, p, run_ids)) for p in RUN_TABLES)
    return rows, len(curve_logs(results_dir)) - len(curve_logs(results_dir, run_ids))


def make_all(results_dir: str | Path = "results", figures_dir: str | Path = "figures", run_ids=None) -> list[str]:
    """Every figure whose inputs exist in results_dir (of the runs `run_ids`: `draw`); returns the written paths.
    With run_ids, one line says how many rows and curves of other runs it left out (results/ keeps them)."""
    figures_dir = Path(figures_dir)
    figures_dir.mkdir(parents=True, exist_ok=True)
    if run_ids is not None:
        rows, curves = left_out(results_dir, run_ids)
        print(f"figures: left out {rows} result row(s) and {curves} training curve(s) of runs the experiment spec "
              f"does not make (renamed or removed runs, or another spec's); {results_dir} keeps them")
    written = []
    for name in FIGURES:
        with ps.style():
            fig = _draw(name, Path(results_dir), run_ids)
            if fig is not None:
                written += ps.save(fig, figures_dir, name)
    return [str(p) for p in written]

