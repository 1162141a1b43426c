"""One experiment = train (or find) a run, sample it at several step counts, evaluate, record.

The notebooks call `run_experiment` and `reference_rows`; everything they do is here, so a
notebook is orchestration and narrative only. A finished run is found again by its run id (a hash of
the resolved config) and not retrained; an interrupted one resumes from its checkpoint; existing
sample files are reused. Result rows go to results/<table>.csv, run records to results/runs/.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pandas as pd

from . import checkpoint, runs
from .config import make_config
from .data import load_corpus
from .evaluate import evaluate_file, evaluate_reference
from .frozen_lm import default_device, load_tokenizer
from .io import write_json, write_jsonl, write_text
from .metrics import METRICS_VERSION, reference_pieces
from .results import run_id, upsert_rows, versions, write_run_record
from .sample import load_run, sample_rows
from .train import train


# the evaluation's columns that go into a result row
ROW_METRICS = ("gen_ppl_tok", "gen_ppl_seq", "entropy", "entropy_content", "mauve", "n_empty", "sample_len_tokens",
               "metrics_version")


def scores(cache: Path, key: dict, compute: Callable[[], dict]) -> dict:
    """compute()'s metrics row, reused from `cache` while `key` (everything the numbers depend on: the
    samples' bytes, judge, featurizer, seed, METRICS_VERSION, library versions) is unchanged. A re-run
    notebook therefore re-scores only new or changed sample files."""
    key = json.loads(json.dumps(key))  # the form it takes in the file
    if cache.exists():
        try:
            saved = json.loads(cache.read_text())
        except json.JSONDecodeError:  # written atomically, so only a hand-edited file gets here
            saved = {}
        if saved.get("cache_key") == key:
            return saved
    row = dict(compute(), cache_key=key)
    write_json(cache, row)
    return row


def score_key(dataset: str, **parts) -> dict:
    """What a metrics row depends on besides the samples: the held-out text its MAUVE references come
    from (hashed: a user's text:PATH corpus may change under the same name), the metric code's version
    and the libraries'."""
    versions_ = versions()
    held_out = hashlib.sha256("\0".join(load_corpus(dataset).valid).encode()).hexdigest()
    return dict(parts, dataset=dataset, held_out_sha256=held_out, metrics_version=METRICS_VERSION,
                versions={k: versions_[k] for k in ("torch", "transformers", "mauve-text", "numpy")})


def budget_overrides(max_steps: int, batch_size: int = 0) -> dict:
    """Config overrides for another training budget than the preset's (S_wu and the EMA warm-up follow
    it by themselves); 0 keeps the preset's value."""
    return {k: v for k, v in (("max_steps", max_steps), ("batch_size", batch_size)) if v}


def train_or_resume(cfg, runs_dir: str | Path, progress: bool = True, nproc: int = 1) -> tuple[Path, dict]:
    """The run folder of cfg, trained to the end (resumed if interrupted, skipped if done).

    nproc > 1 launches the training under `torchrun --nproc_per_node nproc` (one process per GPU) and
    waits for it; a run trained elsewhere (e.g. on several machines) is found by its run id."""
    rid = run_id(cfg.to_dict())
    run_dir = Path(runs_dir) / rid
    summary_path = run_dir / "summary.json"
    while True:  # notebooks side by side may ask for the same run: one trains it, the others wait and reuse it
        runs.wait_for_writer(run_dir)
        if summary_path.exists():
            return run_dir, json.loads(summary_path.read_text())
        resume = (run_dir / checkpoint.CKPT_NAME).exists()
        if nproc > 1:
            break
        try:
            return run_dir, train(cfg, run_dir, resume=resume, progress=progress)
        except runs.RunFolderBusy:  # another process took the folder between our check and our claim
            continue
    request = Path(runs_dir) / f"{rid}.config.json"
    write_text(request, cfg.to_json())
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "ldlm.train", "--config", str(request), "--out", str(run_dir), *(["--resume"] if resume else [])]
    print(" ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return run_dir, json.loads(summary_path.read_text())


def run_experiment(preset: str, dataset: str, variant: str = "full", seed: int = 0, overrides: dict | None = None,
                   sample_steps=(100,), n_samples: int = 128, judge: str = "smollm2", featurizer: str = "minilm",
                   table: str = "main", results_dir: str | Path = "results", runs_dir: str | Path = "runs",
                   sample_batch: int = 128, progress: bool = True, model: str = "ldlm", top_ps=(1.0,),
                   nproc: int = 1) -> pd.DataFrame:
    """Train one model/variant, sample it at each setting, evaluate each sample set; returns its rows.

    The settings are the sampling step counts (LDLM, MDLM) or the nucleus p values (`model="ar"`)."""
    cfg = make_config(preset, dataset=dataset, variant=variant, seed=seed, model=model, **(overrides or {}))
    results_dir = Path(results_dir)
    run_dir, summary = train_or_resume(cfg, runs_dir, progress, nproc)
    rid = run_dir.name
    net, cfg = load_run(run_dir, default_device(cfg.device))
    tokenizer = load_tokenizer(cfg.frozen_lm)
    settings = [(cfg.seq_len - 1, p) for p in top_ps] if model == "ar" else [(k, 1.0) for k in sample_steps]
    rows, sample_files = [], {}
    # what every setting's scores depend on besides its samples (loads the held-out text: once per run)
    key = score_key(cfg.dataset, judge=judge, featurizer=featurizer, seed=seed, text_tokenizer=cfg.frozen_lm,
                    pack_mode=cfg.pack_mode)
    for steps, top_p in settings:
        setting = f"p{top_p:g}" if model == "ar" else f"k{steps}"
        path = results_dir / "samples" / f"{rid}-{setting}-n{n_samples}.jsonl"
        if not path.exists() or "raw_ids" not in path.read_text().partition("\n")[0]:  # none, or an older kit's
            samples, seconds = sample_rows(net, cfg, tokenizer, n_samples, steps, seed, sample_batch, top_p=top_p)
            write_jsonl(path, [dict(r, run_id=rid, sample_seconds=seconds) for r in samples])
        metrics = scores(Path(runs_dir) / "scores" / f"{path.stem}.json",
                         dict(key, samples_sha256=hashlib.sha256(path.read_bytes()).hexdigest()),
                         lambda: evaluate_file(path, cfg.dataset, judge, featurizer, text_tokenizer=tokenizer, seed=seed,
                                               pack_mode=cfg.pack_mode))
        seconds = metrics["sample_seconds"]
        trained = ({"recon_acc": summary["ema_recon_acc"], "decoder_noise": cfg.decoder_noise} if model == "ldlm"
                   else {"valid_loss": summary["ema_valid_loss"]})
        rows.append(dict(preset=cfg.preset, dataset=cfg.dataset, variant=cfg.variant, seed=seed, steps=steps,
                         top_p=top_p if model == "ar" else None, judge=metrics["judge"], featurizer=metrics["featurizer"],
                         n_samples=n_samples, dtype=metrics["dtype"], draw_dtype=metrics["draw_dtype"], run_id=rid, model=model, **trained,
                         train_steps=summary["step"], train_seconds=summary["train_seconds"],
                         train_tokens_per_s=summary["train_tokens_per_s"], sample_seconds=seconds,
                         samples_per_s=n_samples / seconds, pack_mode=cfg.pack_mode,
                         **{k: metrics[k] for k in ROW_METRICS if k in metrics}))
        sample_files[setting] = str(path)
    frame = upsert_rows(results_dir / f"{table}.csv", rows)
    write_text(results_dir / "curves" / f"{rid}.jsonl", (run_dir / "metrics.jsonl").read_text())  # for the figures
    write_run_record(results_dir, rid, config=cfg.to_dict(), summary=summary, samples=sample_files,
                     checkpoint=str(run_dir / checkpoint.CKPT_NAME), metrics_log=str(run_dir / "metrics.jsonl"))
    return frame[frame["run_id"] == rid]


def reference_rows(dataset: str, n: int, length: int, judge: str = "smollm2", featurizer: str = "minilm",
                   seed: int = 0, preset: str = "tiny", table: str = "main", results_dir: str | Path = "results",
                   text_tokenizer: str = "minilm", runs_dir: str | Path = "runs") -> pd.DataFrame:
    """The reference ceiling (held-out real text) as a row of the same table.

    Held-out rows of `length` tokens (the models' seq_len), packed as the preset packs `dataset`. It
    needs 2n disjoint rows (n play the samples, n the MAUVE references); small held-out splits (news:
    150 sentences) use as many as they have. Nothing is sampled: dtype is the judge's float32."""
    tokenizer = load_tokenizer(text_tokenizer)
    pack_mode = make_config(preset, dataset=dataset).pack_mode
    n = min(n, len(reference_pieces(dataset, length, tokenizer, pack_mode=pack_mode)) // 2)
    key = score_key(dataset, reference=True, n=n, length=length, judge=judge, featurizer=featurizer, seed=seed,
                    text_tokenizer=text_tokenizer, pack_mode=pack_mode)
    metrics = scores(Path(runs_dir) / "scores" / f"reference-{dataset}-n{n}-len{length}.json", key, lambda: evaluate_reference(
        dataset, n, length, judge, featurizer, seed=seed, text_tokenizer=tokenizer, pack_mode=pack_mode))
    row = dict(preset=preset, dataset=dataset, variant="reference", seed=seed, steps=0, judge=metrics["judge"],
               featurizer=metrics["featurizer"], n_samples=n, dtype="float32", draw_dtype=None,
               run_id=f"reference-{dataset}",
               model="reference", **{k: metrics[k] for k in (*ROW_METRICS, "mauve_train") if k in metrics})
    frame = upsert_rows(Path(results_dir) / f"{table}.csv", [row])
    return frame[frame["run_id"] == row["run_id"]]
