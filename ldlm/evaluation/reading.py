"""What a notebook prints under its table: a few sample texts per model, and two or three sentences that
read the table, written from its numbers (nothing here knows what the numbers came out as)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..config import VARIANTS
from ..io import read_jsonl
from ..kinds.registry import KINDS
from .results import MAUVE_FLOOR, at_default_temperature, degenerate, is_reference, with_settings

NAMES = {**{k.name: k.called for k in KINDS.values()}, "reference": "held-out text"}


def _default_sample_file(record: dict) -> tuple[str, str] | None:
    """(setting name, path) of a run's samples at its default temperature and its largest step count
    (the GPT: its largest nucleus p), from its run record; None when it has none."""
    plain = [name for name in record.get("samples", {}) if "-T" not in name]  # "-T": a frontier temperature
    if not plain:
        return None
    name = max(plain, key=lambda n: float(n[1:]))  # k100 -> 100, p0.9 -> 0.9
    return name, record["samples"][name]


def sample_texts(rows: pd.DataFrame, results_dir: str | Path, k: int = 3, chars: int = 300) -> str:
    """The first `k` samples of each model's (or recipe variant's) first seed's run, at its default
    setting, as text: a header line per run, then one line per sample, cut to `chars` characters."""
    runs = rows[~is_reference(rows)].sort_values("seed", kind="stable")
    by = "variant" if runs["variant"].nunique() > 1 else "model"
    blocks = []
    for label, group in runs.groupby(by, sort=False):
        rid = group["run_id"].iloc[0]
        record_path = Path(results_dir) / "runs" / f"{rid}.json"
        chosen = _default_sample_file(json.loads(record_path.read_text())) if record_path.exists() else None
        if chosen is None or not Path(chosen[1]).exists():
            continue
        texts = [row["text"] for row in read_jsonl(chosen[1])[:k]]
        blocks.append(f"{NAMES.get(label, label)} ({rid}, {chosen[0]}):\n"
                      + "\n".join(f"  - {' '.join(t.split())[:chars] or '(empty)'}" for t in texts))
    return "\n\n".join(blocks)


def _mean(rows: pd.DataFrame, column: str) -> float:
    return float(rows[column].astype(float).mean())


def _point(rows: pd.DataFrame) -> str:
    return f"Gen PPL {_mean(rows, 'gen_ppl_tok'):.3g} at entropy {_mean(rows, 'entropy'):.2f}"


def _mauve_sentence(means: pd.Series) -> str:
    """MAUVE per model: at the floor for all of them (no difference to read), else the best."""
    if means.max() < MAUVE_FLOOR:
        return (f"Every model's MAUVE is at most {means.max():.3g}, at the metric's floor (< {MAUVE_FLOOR:g}): "
                f"it tells none of them apart from another.")
    return f"MAUVE is highest for {NAMES.get(means.idxmax(), means.idxmax())} ({means.max():.3g})."


def main_reading(rows: pd.DataFrame) -> str:
    """Two or three sentences on a main table's rows (one dataset; runs and held-out text's row): each
    model at its default temperature and its largest setting against held-out text, which are
    degenerate, and what MAUVE says."""
    rows = with_settings(rows).assign(degenerate=degenerate(rows).fillna(False).astype(bool))
    reference, runs = rows[is_reference(rows)], rows[~is_reference(rows)]
    runs = runs[at_default_temperature(runs)]
    tops = {}  # each model at its largest setting
    for model, group in runs.groupby("model", sort=False):
        knob = KINDS[model].knob
        tops[model] = group[group[knob] == group[knob].max()]
    where = lambda model, top: (f"p = {top['top_p'].iloc[0]:g}" if KINDS[model].knob == "top_p"
                                else f"{int(top['steps'].iloc[0])} steps")
    seeds = runs["seed"].nunique()
    text = (f"Held-out text scores {_point(reference)} nats; " if len(reference) else "") + "; ".join(
        f"{NAMES.get(m, m)} ({where(m, top)}) {_point(top)}" for m, top in tops.items()) + \
        f" (means over {seeds} seed{'s' * (seeds > 1)})."
    flagged = [m for m, top in tops.items() if top["degenerate"].any()]
    if flagged:
        text += (f" The samples of {', '.join(NAMES.get(m, m) for m in flagged)} are degenerate (†): their Gen PPL "
                 f"is no evidence of quality.")
    ratio = pd.Series({m: _mean(top, "gen_ppl_tok") for m, top in tops.items() if m not in flagged}, dtype=float)
    if len(reference) and len(ratio.dropna()):
        ratio = ratio.dropna() / _mean(reference, "gen_ppl_tok")
        text += (f" The closest to held-out text's Gen PPL is {NAMES.get(ratio.idxmin(), ratio.idxmin())}'s, "
                 f"{ratio.min():.1f}x it.")
    mauve = pd.Series({m: _mean(top, "mauve") for m, top in tops.items() if "mauve" in top}, dtype=float).dropna()
    if len(mauve):
        text += " " + _mauve_sentence(mauve)
    return text


def ablation_reading(rows: pd.DataFrame, order: list[str]) -> str:
    """Two or three sentences on the ablation's rows: the full recipe against held-out text, which
    variants differ from it beyond the seeds' spread in Gen PPL (the ≈ rule of the table), and where the
    latents collapse most onto their shared mean."""
    rows = rows.assign(degenerate=degenerate(rows).fillna(False).astype(bool))
    reference, runs = rows[is_reference(rows)], rows[~is_reference(rows)]
    name = lambda v: (VARIANTS[v].called if v in VARIANTS else None) or v
    full = runs[runs["variant"] == "full"]
    text = f"The full recipe's samples score {_point(full)}" + (" and are degenerate (†)" if full["degenerate"].any() else "")
    text += f" against held-out text's {_point(reference)}." if len(reference) else "."
    stats = runs.groupby("variant")["gen_ppl_tok"].agg(["mean", "std", "size"])
    if stats["size"].min() < 2:
        text += " With one seed per variant no difference can be told from seed noise."
    else:
        spread = stats["std"] + stats.loc["full", "std"]
        apart = [v for v in order if v != "full" and v in stats.index
                 and abs(stats.loc[v, "mean"] - stats.loc["full", "mean"]) > spread[v]]
        within = [v for v in order if v != "full" and v in stats.index and v not in apart]
        named = [f"{name(v)} ({stats.loc[v, 'mean']:.3g})" for v in apart]
        text += (f" Beyond the seeds' spread in Gen PPL: {', '.join(named)}"
                 if apart else " No variant's Gen PPL lies beyond the seeds' spread of the full recipe's")
        text += f"; within it: {', '.join(map(name, within))}." if within else "."
    if "mean_share" in runs and runs["mean_share"].notna().any():
        share = runs.groupby("variant")["mean_share"].mean().dropna()
        text += (f" The latents of {name(share.idxmax())} put the largest share of their energy in the direction "
                 f"all latents share ({share.max():.0%}; the full recipe's: {share.get('full', float('nan')):.0%}).")
    degenerate_variants = [name(v) for v in order if runs.loc[runs["variant"] == v, "degenerate"].any() and v != "full"]
    if degenerate_variants:
        text += f" Degenerate samples (†, any seed): {', '.join(degenerate_variants)}."
    return text
