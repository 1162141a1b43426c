"""One experiment = train (or find) a run, sample it at each setting, evaluate, record.

The notebooks call `run_experiment` and `reference_rows` with an `Experiment` (ldlm.experiments.experiment);
everything they do is here, so a notebook is orchestration and narrative only. A finished run is found
again by its run id (a hash of the resolved config) and not retrained; an interrupted one resumes from
its checkpoint; existing sample files are reused while whole and drawn by this SAMPLER_VERSION. Training runs in its own process (`python -m
ldlm.training.train`, under torchrun when nproc > 1), its log lines relayed here. Result rows go to
results/<table>.csv, run records to results/runs/.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

import pandas as pd
import torch

from ..config import config_from_dict, make_config
from ..evaluation import diagnostics
from ..evaluation.columns import names, run_columns
from ..evaluation.evaluate import evaluate_file, evaluate_reference
from ..evaluation.metrics import METRICS_VERSION, References, reference_pieces
from ..evaluation.results import (of_runs, reference_run_id, result_row, run_id, upsert_rows, versions, with_degenerate,
                                  write_run_record)
from ..io import read_jsonl, write_json, write_jsonl, write_text
from ..kinds.build import build_model, load_run
from ..nets.samplers import SAMPLER_VERSION
from ..runtime import checkpoint, runs
from ..runtime.distributed import default_device
from ..sampling.rows import SeededBatches, sample_rows
from ..sampling.settings import sampling_settings
from ..text.data import Corpus, load_corpus
from ..text.frozen_lm import load_tokenizer
from ..trained.api import load
from .experiment import Experiment, Run
from .latents import LatentView

def held_out(cfg) -> Corpus:
    """The documents the run held out, as its training split them (valid_docs, dataset_revision)."""
    return load_corpus(cfg.dataset, cfg.valid_docs, cfg.dataset_revision)


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
        if isinstance(saved, dict) and saved.get("cache_key") == key:  # a list, a number: recomputed too
            return saved
    row = dict(compute(), cache_key=key)
    write_json(cache, row)
    return row


def score_key(corpus: Corpus, **parts) -> dict:
    """What a metrics row depends on besides the samples: the held-out text its MAUVE references come
    from (hashed: a user's text:PATH corpus may change under the same name), the metric code's version
    and the libraries'."""
    versions_ = versions()
    held_out_sha = hashlib.sha256("\0".join(corpus.valid).encode()).hexdigest()
    return dict(parts, dataset=corpus.name, held_out_sha256=held_out_sha, metrics_version=METRICS_VERSION,
                versions={k: versions_[k] for k in ("torch", "transformers", "mauve-text", "numpy")})


def latent_columns(net, run_dir: Path, runs_dir: str | Path, rows: int = 64) -> dict:
    """What a latent kind's (LDLM's) result row adds: its decoder noise σ_dec, and its latents' geometry and
    denoising quality on its first `rows` held-out rows (diagnostics.latent_report), cached in runs/scores/
    beside the sample scores; {} for other kinds. A run without its weights here (trained elsewhere:
    ldlm.tools.gpu_run) has the report made beside them."""
    if not net.has_latents:
        return {}
    path = Path(runs_dir) / "scores" / f"{run_dir.name}-latents.json"
    key = dict(run_id=run_dir.name, rows=rows, report_version=diagnostics.REPORT_VERSION,
               versions={k: v for k, v in versions().items() if k in ("torch", "numpy")})
    if has_weights(run_dir):
        report = scores(path, key, lambda: diagnostics.latent_report(LatentView(load(run_dir, device="cpu"), rows)))
    else:
        report = carried_report(path, key)
    return {"decoder_noise": net.cfg.decoder_noise, **{k: report[k] for k in diagnostics.report_columns()}}


def has_weights(run_dir: Path) -> bool:
    return (Path(run_dir) / checkpoint.CKPT_NAME).exists()


def carried_report(path: Path, key: dict) -> dict:
    """The latent report of a run whose weights stayed where it was trained: made there, by this report
    version of the same run (the torch and numpy versions are the other machine's)."""
    saved = json.loads(path.read_text()) if path.exists() else {}
    made = {k: v for k, v in saved.get("cache_key", {}).items() if k != "versions"}
    if made != {k: v for k, v in key.items() if k != "versions"}:
        raise RuntimeError(f"{path.parent.parent / path.stem.removesuffix('-latents')} has no weights here and {path} "
                           f"is {'missing' if not saved else 'of another report version'}: run python -m ldlm.tools.gpu_run "
                           f"again where it trained (docs/gpu.md)")
    return saved


def run_model(run_dir: Path, device) -> tuple:
    """(model, config) of a run: its EMA weights on `device`; for a run whose weights stayed where it was
    trained (ldlm.tools.gpu_run leaves its SHAPE_NAME), its shape alone on the meta device: enough for its
    sampling settings and result columns, not for sampling."""
    if has_weights(run_dir):
        return load_run(run_dir, device)
    cfg = config_from_dict(json.loads((run_dir / "config.json").read_text()))
    shape = json.loads((run_dir / runs.SHAPE_NAME).read_text())
    with torch.device("meta"):
        return build_model(cfg, shape["vocab_size"], shape["head_vocab"], shape["lm_width"]), cfg


def reusable_samples(path: Path, n: int) -> bool:
    """Whether sample file `path` holds what drawing again would give: all n rows (not a file cut short),
    each with its raw token ids (an older kit's have none) and drawn by this SAMPLER_VERSION."""
    try:
        rows = read_jsonl(path)
    except (OSError, ValueError):  # absent, or not JSONL
        return False
    return len(rows) == n and all(isinstance(r, dict) and "raw_ids" in r
                                  and str(r.get("sampler_version", "1")) == SAMPLER_VERSION for r in rows)


def run_line(run_dir: Path, summary: dict) -> str:
    """One line that sums up a trained run, and where its training log is."""
    log = run_dir / runs.TRAIN_LOG
    return (f"run {run_dir.name}: {summary['step']} steps in {summary['train_seconds']:.0f} s "
            f"({summary['train_tokens_per_s']:,.0f} tokens/s)" + (f"; log {log}" if log.exists() else ""))


def train_or_resume(cfg, runs_dir: str | Path, nproc: int = 1) -> tuple[Path, dict]:
    """The run folder of cfg, trained to the end (resumed if interrupted, skipped if done).

    Training runs as `python -m ldlm.training.train` (under `torchrun --nproc_per_node nproc` when nproc > 1), its
    output kept in the run folder's log (runs.TRAIN_LOG); one line here sums the run up. Notebooks side by
    side may ask for the same run: one trains it, the others wait for its writer (runs.wait_for_writer)
    and reuse it; a run trained elsewhere (e.g. on several machines) is found by its run id."""
    run_dir = Path(runs_dir) / run_id(cfg.to_dict())
    summary_path = run_dir / "summary.json"
    request = Path(runs_dir) / f"{run_dir.name}.config.json"
    while True:
        runs.wait_for_writer(run_dir)
        if summary_path.exists():
            summary = json.loads(summary_path.read_text())
            print(run_line(run_dir, summary), flush=True)
            return run_dir, summary
        write_text(request, cfg.to_json())
        status, last = runs.relay(runs.train_command(request, run_dir, nproc, has_weights(run_dir)),
                                  log=run_dir / runs.TRAIN_LOG)
        if status == 0:
            continue  # read the summary it wrote
        if runs.BUSY in last:  # another process claimed the folder between our wait and our claim
            continue
        raise RuntimeError(f"training {run_dir} failed (exit {status}): {last}")


def sampled_run(run: Run, results_dir: str | Path = "results", runs_dir: str | Path = "runs", nproc: int = 1) -> dict:
    """What `run_experiment` needs of the run's weights: the run trained (or found), its samples at each of
    its settings (the experiment's step counts, or the GPT's nucleus p values, then its frontier:
    `exp.frontier_temperatures[kind]` at one setting) and its latent report. Files already there are
    reused, so a run trained and sampled elsewhere (ldlm.tools.gpu_run) is loaded here without its weights."""
    exp, seed = run.exp, run.seed
    results_dir, cfg = Path(results_dir), run.config()
    run_dir, summary = train_or_resume(cfg, runs_dir, nproc)
    rid = run_dir.name
    net, cfg = run_model(run_dir, default_device(cfg.device))
    settings = sampling_settings(net, exp.step_counts, exp.top_ps, exp.frontier_temperatures.get(run.kind, []))
    paths = {s["name"]: results_dir / "samples" / f"{rid}-{s['name']}-n{exp.n_samples}.jsonl" for s in settings}
    todo = [s for s in settings if not reusable_samples(paths[s["name"]], exp.n_samples)]
    if todo and not has_weights(run_dir):
        raise RuntimeError(f"{run_dir} has no weights here and no samples {paths[todo[0]['name']]}: run python -m "
                           f"ldlm.tools.gpu_run again where it trained (docs/gpu.md)")
    tokenizer = load_tokenizer(cfg.frozen_lm) if todo else None
    for setting in todo:
        samples, seconds = sample_rows(net, cfg, tokenizer, SeededBatches(exp.n_samples, seed, exp.sample_batch), setting)
        write_jsonl(paths[setting["name"]], [dict(r, run_id=rid, sample_seconds=seconds) for r in samples])
    return dict(run_dir=run_dir, summary=summary, cfg=cfg, net=net, settings=settings, paths=paths,
                latent=latent_columns(net, run_dir, runs_dir))


def run_experiment(run: Run, *, table: str = "main", results_dir: str | Path = "results", runs_dir: str | Path = "runs",
                   nproc: int = 1) -> pd.DataFrame:
    """Train one run (a model kind of one recipe variant, with its experiment's budget), sample it at each of
    its settings (`sampled_run`), evaluate each sample set, into results/`table`.csv; returns its rows."""
    exp, seed, results_dir = run.exp, run.seed, Path(results_dir)
    run = sampled_run(run, results_dir, runs_dir, nproc)
    run_dir, summary, cfg, net = run["run_dir"], run["summary"], run["cfg"], run["net"]
    rid = run_dir.name
    tokenizer = load_tokenizer(cfg.frozen_lm)
    corpus = held_out(cfg)
    # what every setting's scores depend on besides its samples
    key = score_key(corpus, judge=exp.judge, featurizer=exp.featurizer, seed=seed, text_tokenizer=cfg.frozen_lm,
                    pack_mode=cfg.pack_mode)
    rows, sample_files = [], {}
    for setting in run["settings"]:
        path = run["paths"][setting["name"]]
        metrics = scores(Path(runs_dir) / "scores" / f"{path.stem}.json",
                         dict(key, samples_sha256=hashlib.sha256(path.read_bytes()).hexdigest()),
                         lambda: evaluate_file(path, References(corpus, pack_mode=cfg.pack_mode, tokenizer=tokenizer,
                                                                seed=seed), exp.judge, exp.featurizer))
        record = net.sampling_record(setting["steps"], None, setting["top_p"], setting["temperature"])
        rows.append(result_row(
            preset=cfg.preset, dataset=cfg.dataset, variant=cfg.variant, seed=seed, steps=record["steps"],
            top_p=record["top_p"], temperature=record["temperature"], sampler=record["sampler"], judge=metrics["judge"],
            featurizer=metrics["featurizer"], n_samples=exp.n_samples,
            dtype=metrics["dtype"], draw_dtype=metrics["draw_dtype"], run_id=rid, model=cfg.model,
            **run_columns(summary), **run["latent"], train_steps=summary["step"],
            train_seconds=summary["train_seconds"],
            train_tokens_per_s=summary["train_tokens_per_s"], sample_seconds=metrics["sample_seconds"],
            samples_per_s=exp.n_samples / metrics["sample_seconds"], pack_mode=cfg.pack_mode,
            **{k: metrics[k] for k in names("samples") if k in metrics}))
        sample_files[setting["name"]] = str(path)
    frame = upsert_rows(results_dir / f"{table}.csv", rows, derive=with_degenerate)  # flags need the whole table
    write_text(results_dir / "curves" / f"{rid}.jsonl", (run_dir / "metrics.jsonl").read_text())  # for the figures
    trained_on = run_dir / runs.TRAINED_ON_NAME
    write_run_record(results_dir, rid, config=cfg.to_dict(), summary=summary, samples=sample_files,
                     checkpoint=str(run_dir / checkpoint.CKPT_NAME), metrics_log=str(run_dir / "metrics.jsonl"),
                     **({"trained_on": json.loads(trained_on.read_text())} if trained_on.exists() else {}))
    return of_runs(frame, [rid])


def reference_rows(exp: Experiment, dataset: str, table: str = "main", results_dir: str | Path = "results",
                   runs_dir: str | Path = "runs") -> pd.DataFrame:
    """The reference ceiling (held-out real text) as a row of the same table.

    Held-out rows of `exp.reference_length` tokens (the models' seq_len), packed as the preset packs
    `dataset`, in the preset's frozen-LM tokenizer. It needs 2n disjoint rows (n play the samples, n the
    MAUVE references); small held-out splits (news: 150 sentences) use as many as they have. Nothing is
    sampled: dtype is the judge's float32."""
    cfg = make_config(exp.preset, dataset=dataset)
    tokenizer, corpus, length, seed = load_tokenizer(cfg.frozen_lm), held_out(cfg), exp.reference_length, exp.reference_seed
    n = min(exp.n_samples, len(reference_pieces(corpus, length, tokenizer, pack_mode=cfg.pack_mode)) // 2)
    key = score_key(corpus, reference=True, n=n, length=length, judge=exp.judge, featurizer=exp.featurizer, seed=seed,
                    text_tokenizer=cfg.frozen_lm, pack_mode=cfg.pack_mode)
    metrics = scores(Path(runs_dir) / "scores" / f"reference-{dataset}-n{n}-len{length}.json", key, lambda: evaluate_reference(
        References(corpus, length, cfg.pack_mode, tokenizer=tokenizer, seed=seed), n, exp.judge, exp.featurizer))
    row = result_row(preset=exp.preset, dataset=dataset, variant="reference", seed=seed, steps=0, judge=metrics["judge"],
                     featurizer=metrics["featurizer"], n_samples=n, dtype="float32", draw_dtype=None,
                     run_id=reference_run_id(dataset), model="reference",
                     **{k: metrics[k] for k in names("samples", "reference") if k in metrics})
    frame = upsert_rows(Path(results_dir) / f"{table}.csv", [row], derive=with_degenerate)  # flags the table's rows
    return of_runs(frame, [row["run_id"]])
