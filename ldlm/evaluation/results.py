"""Tidy result rows and run records (results/<table>.csv, results/runs/<run_id>.json).

Every row carries what produced it (preset, dataset, variant, seed, steps, judge, featurizer,
n_samples, dtype, run id); every run record the resolved config, library versions, git commit,
timings and the paths of its samples and checkpoint. All writes are atomic.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Callable

import pandas as pd

from ..io import atomic_path, write_json
from ..kinds.registry import KINDS
from . import columns
from .diagnostics import report_columns

# Keys that change where a run executes or what it reports, never its weights or metrics.
NOT_IN_RUN_ID = ("device", "num_threads", "logger", "eval_samples")

# What tells two rows apart: a row replaces an earlier one with the same values (upsert_rows). Every knob of a
# sampling setting is in it, so a later run with fewer settings leaves the other settings' rows alone.
ROW_KEYS = ["preset", "dataset", "variant", "seed", "steps", "top_p", "temperature", "sampler", "judge", "featurizer",
            "n_samples", "dtype", "run_id"]

# A result row of results/<table>.csv (main_*, ablation), in column order: what produced it, what the
# trained run measured (its EMA held-out metrics: columns.run_columns; a latent kind's decoder_noise and latent
# report), the timings, then the evaluation's metrics (ldlm.evaluation.columns). A row holds the columns that
# apply to it. The CSV's last column, `degenerate`, depends on the whole table (its reference row):
# `with_degenerate` adds it.
RESULT_COLUMNS = [
    "preset", "dataset", "variant", "seed", "steps", "top_p", "temperature", "sampler", "judge", "featurizer",
    "n_samples", "dtype", "draw_dtype", "run_id", "model",
    *columns.names("run"), "decoder_noise", *report_columns(),
    "train_steps", "train_seconds", "train_tokens_per_s", "sample_seconds", "samples_per_s", "pack_mode",
    *columns.names("samples", "reference"),
]

# A loop is easy to predict, so samples collapsed into repetition get a low Gen PPL; such rows are flagged
# `degenerate` instead of compared. Thresholds (tiny, 64-token rows, results/ at METRICS_VERSION 2): held-out
# text has rep_4 <= 0.005 and every main-table sample set <= 0.001, the collapsed ablation variants 0.72-0.98
# (Welleck et al. 2020: human text 0.006, greedy decoding of an MLE model 0.44), so > 0.5 (most of a
# sample's 4-grams repeat one before it) catches loops only. 1 nat of entropy below the held-out text's is
# e = 2.7x fewer effective distinct tokens per sample: the main tables' LDLM rows sit 0.4-0.9 nats below, the
# ablation's looping variants 2.9-3.8 and its word-repeating ones ("commission commission ...") 1.1-2.5.
DEGENERATE_ENTROPY_GAP = 1.0  # nats below the reference row's entropy, same dataset
DEGENERATE_REP_4 = 0.5
# Below this MAUVE only says that two sample sets share no clusters: differences there are noise (issue 26:
# every model of the tiny runs sat at 0.004)
MAUVE_FLOOR = 0.01


def result_row(**values) -> dict:
    """A row of the result tables, its columns in RESULT_COLUMNS order; an unknown column is a bug."""
    unknown = sorted(set(values) - set(RESULT_COLUMNS))
    if unknown:
        raise ValueError(f"not result-table columns: {unknown} (add them to results.RESULT_COLUMNS)")
    return {k: values[k] for k in RESULT_COLUMNS if k in values}


def is_reference(rows: pd.DataFrame) -> pd.Series:
    """The rows of held-out text (the reference ceiling): model or variant "reference"."""
    none = pd.Series(False, index=rows.index)
    return rows.get("model", none).eq("reference") | rows.get("variant", none).eq("reference")


def reference_entropy(rows: pd.DataFrame) -> pd.Series:
    """Per row, the mean entropy of the reference rows of its dataset (NaN where there are none)."""
    if "entropy" not in rows:
        return pd.Series(float("nan"), index=rows.index)
    dataset = rows["dataset"].fillna("") if "dataset" in rows else pd.Series("", index=rows.index)
    ref = is_reference(rows)
    return dataset.map(rows.loc[ref, "entropy"].groupby(dataset[ref]).mean()).astype(float)


def degenerate(rows: pd.DataFrame) -> pd.Series:
    """Per row: are its samples degenerate (rep_4 > DEGENERATE_REP_4, or entropy more than
    DEGENERATE_ENTROPY_GAP below the reference row's of the same dataset)? Decided by the checks that
    the row has the numbers for; <NA> where it has none (no rep_4 and no reference entropy: old rows)."""
    nan = pd.Series(float("nan"), index=rows.index)
    rep, entropy = rows.get("rep_4", nan).astype(float), rows.get("entropy", nan).astype(float)
    ref = reference_entropy(rows)
    flagged = (rep > DEGENERATE_REP_4) | (entropy < ref - DEGENERATE_ENTROPY_GAP)
    known = rep.notna() | (entropy.notna() & ref.notna())
    return flagged.astype("boolean").where(known, pd.NA)


def with_degenerate(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with its `degenerate` column (re)computed; none where no row can be decided."""
    flags = degenerate(frame)
    frame = frame.drop(columns="degenerate", errors="ignore")
    return frame.assign(degenerate=flags) if flags.notna().any() else frame


def default_temperatures() -> dict[str, float]:
    """The temperature each model kind samples at unless told (TextModel.default_temperature)."""
    return {name: kind.model.default_temperature for name, kind in KINDS.items()}


def with_settings(rows: pd.DataFrame) -> pd.DataFrame:
    """`rows` with every model row's sampling knobs filled in: top_p 1 (no truncation) where empty, and the
    kind's default temperature where empty (rows written before the knob were sampled at it); held-out
    text has none (NaN)."""
    nan = pd.Series(float("nan"), index=rows.index)
    top_p, temperature = rows.get("top_p", nan).astype(float), rows.get("temperature", nan).astype(float)
    default = rows["model"].map(default_temperatures()).astype(float) if "model" in rows else nan
    return rows.assign(top_p=top_p.fillna(1.0), temperature=temperature.fillna(default))


def at_default_temperature(rows: pd.DataFrame) -> pd.Series:
    """Per row: sampled at its kind's default temperature (or before the knob existed)? Those rows are the
    step-count and nucleus sweeps; the others are frontier points."""
    default = rows["model"].map(default_temperatures()).astype(float)
    return with_settings(rows)["temperature"].eq(default)


def frontier_setting(rows: pd.DataFrame) -> tuple[float, float] | None:
    """(steps, top_p) of one model's quality-diversity frontier: the setting it was sampled at the most
    temperatures at (the experiment's frontier: the largest step count, p = 1); on a tie the most steps,
    then the largest p. `rows` (with_settings) are one model's; None when there are none."""
    if rows.empty:
        return None
    counts = rows.groupby(["steps", "top_p"])["temperature"].nunique()
    return max(counts.index, key=lambda setting: (counts[setting], *setting))


def frontier_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows (with_settings) on each model's frontier: at its frontier setting, at every temperature."""
    models = rows[~is_reference(rows)].groupby("model", sort=False)
    parts = [group[(group["steps"] == steps) & (group["top_p"] == top_p)]
             for _, group in models for steps, top_p in [frontier_setting(group)]]
    return pd.concat(parts) if parts else rows.iloc[:0]


def corpus_sha256(dataset: str) -> str | None:
    """sha256 of a `text:`/`jsonl:` corpus file (None for named datasets or a missing file)."""
    kind, _, path = dataset.partition(":")
    file = Path(path).expanduser()
    if kind not in ("text", "jsonl") or not file.is_file():
        return None
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_id(cfg_dict: dict) -> str:
    """Short stable id of a resolved config (same config -> same id, so finished runs are found again),
    readable as preset-dataset-model[-variant]-seed-hash (tiny-wiki-ldlm-full-s0-…, tiny-wiki-mdlm-s0-…).
    A user corpus's content is part of it: an edited text: file is a new run, not the old one reused."""
    values = {k: v for k, v in cfg_dict.items() if k not in NOT_IN_RUN_ID}
    sha = corpus_sha256(cfg_dict.get("dataset", ""))
    if sha:
        values["corpus_sha256"] = sha
    blob = json.dumps(values, sort_keys=True)
    model, variant = cfg_dict.get("model", "ldlm"), cfg_dict.get("variant", "x")
    kind = model if model != "ldlm" and variant == "full" else f"{model}-{variant}"  # the recipe variants are LDLM's
    dataset = cfg_dict.get("dataset", "x").replace("/", "_").replace(":", "_")[-20:]
    return f"{cfg_dict.get('preset', 'x')}-{dataset}-{kind}-s{cfg_dict.get('seed', 0)}-{hashlib.sha1(blob.encode()).hexdigest()[:8]}"


def reference_run_id(dataset: str) -> str:
    """The run id of a table's reference row (held-out text of `dataset`; no run trains it)."""
    return f"reference-{dataset}"


def of_runs(rows: pd.DataFrame, run_ids) -> pd.DataFrame:
    """The rows of the runs `run_ids` (None: every row): what a table and a figure show. Rows are upserted by run
    id, so a change that renames runs (a new config key: a new hash) leaves the old runs' rows beside the new
    ones, kept (nothing deletes what it did not create); the spec's own run ids select the new
    (ldlm.experiments.experiment.Experiment.run_ids)."""
    if run_ids is None or rows.empty:
        return rows
    return rows[rows["run_id"].isin(set(run_ids))]


def versions() -> dict:
    out = {"python": platform.python_version(), "machine": platform.machine(), "processor": platform.processor()}
    for pkg in ("torch", "transformers", "datasets", "mauve-text", "numpy", "ldlm-kit"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def git_commit(root: str | Path = ".") -> str | None:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "") if sha.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def write_run_record(results_dir: str | Path, rid: str, **record) -> Path:
    path = Path(results_dir) / "runs" / f"{rid}.json"
    write_json(path, {"run_id": rid, "versions": versions(), "git_commit": git_commit(), **record})
    return path


@contextlib.contextmanager
def locked(path: Path):
    """An exclusive lock on `path`.lock while the block runs: concurrent writers (notebooks side by
    side, ranks) take turns at a read-modify-write instead of losing each other's rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def replaced(old: pd.DataFrame, new: pd.DataFrame, key: list[str]) -> pd.Series:
    """Per row of `old`: does a row of `new` have its key? A key column `old` lacks, or an empty cell of
    an old row (written before the column existed, e.g. temperature), matches any value: a re-run replaces
    such a row instead of keeping it beside its successor. No shared key column: nothing matches."""
    shared = [k for k in key if k in old.columns]
    hit = pd.Series(False, index=old.index)
    for values in (new[shared].drop_duplicates().itertuples(index=False) if shared else []):
        same = pd.Series(True, index=old.index)
        for column, value in zip(shared, values):
            same &= old[column].isna() | old[column].eq(value)
        hit |= same
    return hit


def upsert_rows(csv_path: str | Path, rows: list[dict], key: list[str] | None = None,
                derive: Callable[[pd.DataFrame], pd.DataFrame] | None = None) -> pd.DataFrame:
    """Add rows to a tidy CSV, replacing earlier rows with the same key columns (`replaced`); atomic write,
    under a lock so that processes writing the same file at once lose nothing. `derive` (e.g.
    with_degenerate) recomputes columns that depend on other rows, over the whole merged table."""
    csv_path = Path(csv_path)
    new = pd.DataFrame(rows)
    key = [k for k in (key or ROW_KEYS) if k in new.columns]
    with locked(csv_path):
        if csv_path.exists() and csv_path.stat().st_size > 0:
            old = pd.read_csv(csv_path)
            old = old[~replaced(old, new, key)]
            new = pd.concat([old, new], ignore_index=True)
        new = derive(new) if derive else new
        with atomic_path(csv_path, suffix=".csv") as tmp:
            new.to_csv(tmp, index=False)
    return new
