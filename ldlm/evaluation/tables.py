"""Paper-style tables (Markdown and LaTeX) from tidy result rows.

"Held-out loss" is the baselines' own training objective on held-out blocks, nats per token: the
GPT's NLL and MDLM's NELBO (an upper bound on its NLL); LDLM has no comparable likelihood here.
A † after a Gen PPL marks degenerate samples (results.degenerate), with a note under the table.
"""
from __future__ import annotations

import bisect
import math
from pathlib import Path

import pandas as pd

from ..config import VARIANTS
from ..io import write_text
from ..kinds.registry import KINDS
from . import columns
from .results import (DEGENERATE_ENTROPY_GAP, DEGENERATE_REP_4, default_temperatures, degenerate, frontier_setting,
    with_settings)

METRIC_COLUMNS = columns.table_headers()
AGGREGATE = {c.name: c.agg for c in columns.COLUMNS}
REFERENCE_TITLE = "held-out text (ceiling)"


WITHIN_SPREAD = "≈"  # marks a mean whose distance to the compared row is within their seed spread
DEGENERATE = "†"  # after a Gen PPL: the samples (of every seed, or of those counted) are degenerate
DEGENERATE_NOTE = (f"{DEGENERATE}: degenerate samples (rep-4 > {DEGENERATE_REP_4:g}, or entropy more than "
                   f"{DEGENERATE_ENTROPY_GAP:g} nat below the held-out text's): a sampler that repeats itself gets a "
                   f"low Gen PPL, so this Gen PPL is no evidence of quality")


def degenerate_marks(rows: pd.DataFrame, by: list[str]) -> pd.Series:
    """Per group of `by`: " †" when every seed's samples are degenerate, " † (k of n seeds)" when some
    are (a collapsed seed pulls the mean Gen PPL down), "" when none is or it cannot be told."""
    flags = rows.assign(_flag=degenerate(rows).fillna(False).astype(bool)).groupby(by, sort=False, dropna=False)["_flag"]
    k, n = flags.sum(), flags.size()
    return pd.Series([("" if not a else f" {DEGENERATE}" if a == b else f" {DEGENERATE} ({a} of {b} seeds)")
                      for a, b in zip(k, n)], index=k.index)


def _summarise(rows: pd.DataFrame, by: list[str], versus=None) -> pd.DataFrame:
    """Mean over seeds (and ± std where there are several) of each metric, grouped by `by`; with
    `versus` (a group key), a cell whose mean differs from that group's by less than the sum of the two
    seed stds ends in WITHIN_SPREAD: the difference is not a finding at this number of seeds."""
    cols = [c for c in METRIC_COLUMNS if c in rows.columns]
    grouped = rows.groupby(by, sort=False, dropna=False)[cols]  # held-out text has no temperature
    mean, std, n, counts = grouped.agg({c: AGGREGATE[c] for c in cols}), grouped.std(), grouped.size(), grouped.count()
    out = mean.copy().astype(object)
    for c in cols:
        cells = []
        for key, m, s, k, have in zip(mean.index, mean[c], std[c], n, counts[c]):
            if pd.isna(m):
                cells.append("–")
                continue
            cell = f"{m:.3g}" + (f" ± {s:.2g}" if have > 1 and pd.notna(s) else "")
            cell += f" ({have} of {k} seeds)" if have < k else ""  # e.g. no PPL for a seed whose samples are all empty
            if versus is not None and key != versus and versus in mean.index and have > 1 and counts.loc[versus, c] > 1:
                spread, ref = s + std.loc[versus, c], mean.loc[versus, c]
                # a last-bit difference is no difference: MAUVE's floor can come out one ulp apart in two runs
                if pd.notna(spread) and (abs(m - ref) <= spread or math.isclose(m, ref, rel_tol=1e-9)):
                    cell += f" {WITHIN_SPREAD}"
            cells.append(cell)
        out[c] = cells
    marks = degenerate_marks(rows, by)
    for c in ("gen_ppl_tok", "gen_ppl_seq"):
        if c in cols:
            out[c] = out[c] + marks
    out["seeds"] = n
    return out.rename(columns=METRIC_COLUMNS)


def ablation_table(rows: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """One row per variant: mean ± std over seeds; ≈ where a variant is within the seed spread of the full
    recipe. Held-out text's row (variant "reference"), if `rows` has one, comes first."""
    table = _summarise(rows, ["variant"], versus="full")
    table = table.loc[[v for v in dict.fromkeys(["reference", *order]) if v in table.index]]
    table.index = [variant_title(v) for v in table.index]
    return table


def variant_title(variant: str) -> str:
    """A variant's row in the tables (held-out text's row: "reference")."""
    return REFERENCE_TITLE if variant == "reference" else VARIANTS[variant].title if variant in VARIANTS else variant


# The latent report's columns a table shows (diagnostics.latent_report; t = 0.001 is the smallest training time)
LATENT_COLUMNS = {"mean_share": "Mean share ↓", "participation_ratio": "PR ↑", "decoder_acc": "Decoder acc. ↑",
                  "dit_acc_t0.001": "DiT acc. t≈0 ↑", "dit_acc_t0.2": "DiT acc. t=.2 ↑", "dit_r2_t0.2": "DiT R² t=.2 ↑",
                  "wiener_r2_t0.2": "Wiener R² t=.2"}


def latent_table(rows: pd.DataFrame, by: str = "variant", order: list[str] | None = None) -> pd.DataFrame:
    """One row per `by` group of LDLM runs (one latent report per run, so one row per run_id counts):
    the latents' geometry and how well the DiT denoises them, mean ± std over seeds. Mean share: the
    share of latent energy in the direction all latents share (1 = collapsed onto one vector); PR: the
    participation ratio, the effective number of dimensions; the DiT's one-step x0 accuracy against the
    decoder's on clean latents (its ceiling) and its R² against the best linear (Wiener) denoiser's."""
    cols = [c for c in LATENT_COLUMNS if c in rows.columns]
    runs = rows.dropna(subset=cols[:1]).drop_duplicates("run_id") if cols else rows.iloc[:0]
    grouped = runs.groupby(by, sort=False)[cols]
    mean, std, n = grouped.mean(), grouped.std(), grouped.size()
    out = mean.astype(object)
    for c in cols:
        out[c] = [f"{m:.3g}" + (f" ± {d:.2g}" if k > 1 and pd.notna(d) else "") for m, d, k in zip(mean[c], std[c], n)]
    out["seeds"] = n
    if order is not None:
        out = out.loc[[v for v in order if v in out.index]]
    out.index = [variant_title(v) if by == "variant" else str(v) for v in out.index]
    return out.rename(columns=LATENT_COLUMNS)


def setting_label(model: str, steps, top_p=None, temperature=None) -> str:
    """A setting's name in the tables; its temperature where it is not the kind's default."""
    if model == "reference":
        return REFERENCE_TITLE
    kind = KINDS[model]
    label = f"{kind.label}, nucleus p = {float(top_p):g}" if kind.knob == "top_p" else f"{kind.label}, {int(steps)} steps"
    default = default_temperatures().get(model)
    shown = temperature is not None and not pd.isna(temperature) and temperature != default
    return label + (f", T = {float(temperature):g}" if shown else "")


def main_table(rows: pd.DataFrame) -> pd.DataFrame:
    rows = with_settings(rows.assign(model=rows["model"].fillna("ldlm")))
    table = _summarise(rows, ["model", "steps", "top_p", "temperature"])
    table.index = [setting_label(*key) for key in table.index]
    return table


def interpolate(x: float, xs: list[float], ys: list[float]) -> float:
    """ys at x, linear between the two neighbouring points of xs (increasing); NaN outside [xs[0], xs[-1]]:
    a curve is read only where it was measured, never extrapolated."""
    if not xs or not xs[0] <= x <= xs[-1]:
        return float("nan")
    i = bisect.bisect_left(xs, x)  # xs[i] >= x
    if xs[i] == x:
        return ys[i]
    share = (x - xs[i - 1]) / (xs[i] - xs[i - 1])
    return ys[i - 1] + share * (ys[i] - ys[i - 1])


def setting_means(main: pd.DataFrame) -> pd.DataFrame:
    """Per (model, steps, top_p, temperature): Gen PPL (token-weighted) and entropy averaged over seeds, and
    `degenerate`: whether any seed's samples are (results.degenerate, judged against held-out text's rows)."""
    main = with_settings(main.assign(degenerate=degenerate(main).fillna(False).astype(bool)))
    main = main[main["model"] != "reference"]
    return main.groupby(["model", "steps", "top_p", "temperature"], as_index=False).agg(
        gen_ppl_tok=("gen_ppl_tok", "mean"), entropy=("entropy", "mean"), degenerate=("degenerate", "any"))


def quality_matched_speedup(main: pd.DataFrame, speed: pd.DataFrame, batch: int,
                            baselines=tuple(k for k in KINDS if k != "ldlm")) -> pd.DataFrame:
    """For each baseline setting: LDLM's Gen PPL at the same entropy, read from LDLM's frontier, and LDLM's
    sampling speed there relative to the baseline's.

    The rule. A setting's Gen PPL (token-weighted) and entropy are means over seeds (`setting_means`).
    LDLM's frontier is its settings at its frontier setting (results.frontier_setting: the largest step
    count, at every temperature sampled), degenerate ones left out (a seed with degenerate samples
    excludes the setting: a collapsed, repetitive LDLM never counts as a match), sorted by entropy and
    joined by straight lines. Each baseline setting (its step counts or nucleus p values, and its own
    frontier's temperatures) is compared at its entropy: LDLM's Gen PPL there is linear in entropy
    between the two neighbouring LDLM points, read only inside the frontier's entropy range, never
    extrapolated. "not matched" when the baseline's entropy is outside that range (or the baseline's own
    samples are degenerate: they are not a quality to match). Matched rows say whether LDLM's Gen PPL is
    no worse (<=) than the baseline's and give the speed ratio: LDLM's samples/s at the frontier's step
    count over the baseline's at its setting, both at `batch` from `speed` (ldlm.tools.bench's sampling rows,
    timed in one process at the default temperature; a temperature adds one head pass per sample). The
    ratio is a quality-matched speed-up only where LDLM is no worse."""
    sps = {(r.model, int(r.steps)): r.samples_per_s for r in speed[speed["batch"] == batch].itertuples()}
    means = setting_means(main)
    ldlm = means[means["model"] == "ldlm"]
    at = frontier_setting(ldlm)
    if at is not None:
        ldlm = ldlm[(ldlm["steps"] == at[0]) & (ldlm["top_p"] == at[1]) & ~ldlm["degenerate"]]
    ldlm = ldlm.sort_values(["entropy", "gen_ppl_tok"])
    xs, ys = ldlm["entropy"].tolist(), ldlm["gen_ppl_tok"].tolist()
    reach = f"{xs[0]:.3g}–{xs[-1]:.3g} ({int(at[0])} steps)" if xs else "none"
    fast = sps.get(("ldlm", int(at[0])), float("nan")) if at is not None else float("nan")
    out = []
    for r in means[means["model"].isin(baselines)].itertuples():
        slow = sps.get((r.model, int(r.steps)), float("nan"))
        ppl = interpolate(r.entropy, xs, ys)
        matched = not r.degenerate and not math.isnan(ppl)
        row = {"baseline": setting_label(r.model, r.steps, r.top_p, r.temperature),
               "baseline Gen PPL": f"{r.gen_ppl_tok:.4g}" + (f" {DEGENERATE}" if r.degenerate else ""),
               "baseline entropy": f"{r.entropy:.3g}", "baseline samples/s": f"{slow:.3g}", "LDLM frontier entropy": reach,
               "LDLM Gen PPL at that entropy": f"{ppl:.4g}" if matched else "not matched",
               "LDLM no worse": ("yes" if ppl <= r.gen_ppl_tok else "no") if matched else "–",
               "LDLM samples/s": f"{fast:.3g}" if matched else "–",
               "speed-up": f"{fast / slow:.2f}x" if matched else "–"}
        out.append(row)
    return pd.DataFrame(out).set_index("baseline") if out else pd.DataFrame()


def to_markdown(table: pd.DataFrame) -> str:
    header = ["", *map(str, table.columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join([str(i), *map(str, row)]) + " |" for i, row in zip(table.index, table.to_numpy())]
    return "\n".join(lines)


def notes(table: pd.DataFrame) -> list[str]:
    """The notes a table's cells call for (what † means, where a cell has one)."""
    cells = table.astype(str).to_numpy().ravel()
    return [DEGENERATE_NOTE] if any(DEGENERATE in c for c in cells) else []


def write_tables(table: pd.DataFrame, stem: str | Path, caption: str = "") -> None:
    """`stem`.md and `stem`.tex, both with the caption that says what produced them and the notes its
    cells call for (under the table in Markdown, at the end of the caption in LaTeX)."""
    stem, footer = Path(stem), notes(table)
    write_text(stem.with_suffix(".md"), (f"{caption}\n\n" if caption else "") + to_markdown(table) + "\n"
               + "".join(f"\n{n}\n" for n in footer))
    caption = " ".join([caption, *footer]).strip()
    latex = table.to_latex(escape=True, caption=caption or None)
    write_text(stem.with_suffix(".tex"), latex)
