"""Paper-style tables (Markdown and LaTeX) from tidy result rows."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .io import write_text

METRIC_COLUMNS = {"gen_ppl_tok": "Gen PPL (tok) ↓", "gen_ppl_seq": "Gen PPL (seq) ↓", "entropy": "Entropy",
                  "mauve": "MAUVE ↑", "recon_acc": "Recon. acc. ↑", "n_empty": "Empty"}

VARIANT_NAMES = {"full": "LDLM (full recipe)", "no_mse": "− MSE decoder loss (CE)", "no_warmup": "− encoder warmup",
                 "no_adaptive": "− adaptive timesteps", "no_decoder_noise": "− decoder noise",
                 "naive": "naive joint training (all four off)", "reference": "held-out text (ceiling)"}


def _summarise(rows: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Mean over seeds (and ± std where there are several) of each metric, grouped by `by`."""
    cols = [c for c in METRIC_COLUMNS if c in rows.columns]
    grouped = rows.groupby(by, sort=False)[cols]
    mean, std, n = grouped.mean(), grouped.std(), grouped.size()
    out = mean.copy().astype(object)
    for c in cols:
        out[c] = [f"{m:.3g}" + (f" ± {s:.2g}" if k > 1 and pd.notna(s) else "") if pd.notna(m) else "–"
                  for m, s, k in zip(mean[c], std[c], n)]
    out["seeds"] = n
    return out.rename(columns=METRIC_COLUMNS)


def ablation_table(rows: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    table = _summarise(rows, ["variant"])
    table = table.loc[[v for v in order if v in table.index]]
    table.index = [VARIANT_NAMES.get(v, v) for v in table.index]
    return table


def main_table(rows: pd.DataFrame) -> pd.DataFrame:
    table = _summarise(rows.assign(model=rows["model"].fillna("ldlm")), ["model", "steps"])
    table.index = [("held-out text (ceiling)" if m == "reference" else f"{m.upper()}, {s} steps") for m, s in table.index]
    return table


def to_markdown(table: pd.DataFrame) -> str:
    header = ["", *map(str, table.columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join([str(i), *map(str, row)]) + " |" for i, row in zip(table.index, table.to_numpy())]
    return "\n".join(lines)


def write_tables(table: pd.DataFrame, stem: str | Path, caption: str = "") -> None:
    """`stem`.md and `stem`.tex, both with the caption that says what produced them."""
    stem = Path(stem)
    write_text(stem.with_suffix(".md"), (f"{caption}\n\n" if caption else "") + to_markdown(table) + "\n")
    latex = table.to_latex(escape=True, caption=caption or None)
    write_text(stem.with_suffix(".tex"), latex)
