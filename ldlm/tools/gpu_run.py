"""Every run of a preset's pipeline trained and sampled on one GPU box, then scored and rendered elsewhere.

On the GPU box (it lacks papermill, the judge and MAUVE; see docs/gpu.md and scripts/gpu_job.sh):
    python -m ldlm.tools.gpu_run --preset gpu --out DIR       # DIR/gpu_run.tar.gz (run records, metrics logs, samples
                                                        # with raw ids, latent reports, speed rows), DIR/model.tar.gz
Here, before the notebooks score them (make reproduce PRESET=gpu GPU_OUT=DIR ... does this):
    python -m ldlm.tools.gpu_run --unpack DIR --results results/gpu   # into runs/ and results/gpu/
What the box needs and lacks, built here (then carried: scripts/gpu_job.sh):
    python -m ldlm.tools.gpu_run --preset gpu --carry .gpu    # the frozen LM's package (bf16) and the token arrays

Each run is `pipeline.sampled_run` (train, sample at every setting, latent report), several side by side on
the one GPU in worker processes. The frozen LM's states are computed once per dataset first, on the GPU.
No run starts after --stop-after seconds: a run cut off is done by the next call, which reuses what exists.
Back come the runs without their weights (runs.SHAPE_NAME stands in for them), except the latent notebook's
LDLM run, whose EMA weights come in model.tar.gz.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tarfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from multiprocessing import get_context
from pathlib import Path

import yaml

from ..config import ConfigError, check_counts
from ..evaluation.results import run_id
from ..experiments import pipeline
from ..experiments.experiment import Experiment, Run
from ..io import atomic_path, write_json
from ..runtime import checkpoint, runs
from . import bench

PACK_NAME, MODEL_NAME, SPEED_NAME, RECORD_NAME = "gpu_run.tar.gz", "model.tar.gz", "speed.csv", "gpu_run.json"
MAX_FILE = 16 << 20  # what one file back from the box may hold
RUN_FILES = ("config.json", "resume.json", "data.json", "summary.json", "metrics.jsonl", runs.SHAPE_NAME,
             runs.TRAINED_ON_NAME)


def latent_run(exp: Experiment) -> Run:
    """The run notebooks/40_latents.ipynb inspects (make reproduce: its first seed on the first dataset)."""
    return Run(exp, exp.datasets[0], seed=exp.seeds[0])


def run_job(job: Run, work: Path, deadline: float, threads: int) -> dict | None:
    """`pipeline.sampled_run` of one run in a worker process; None if it would start after `deadline`."""
    import torch

    if time.time() > deadline:
        return None
    torch.set_num_threads(threads)
    start = time.time()
    run = pipeline.sampled_run(job, work / "results", work / "runs")
    return dict(run_id=run["run_dir"].name, seconds=time.time() - start, samples=[p.name for p in run["paths"].values()])


def host() -> dict:
    """The card, torch and CUDA versions and the command: where the runs were trained."""
    import torch

    card = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return dict(hardware=card, torch=torch.__version__, cuda=torch.version.cuda, command=" ".join(["python -m ldlm.tools.gpu_run", *sys.argv[1:]]))


def describe_run(run_dir: Path, where: dict) -> None:
    """What stands in for a run's weights where they do not go: its model's shape, and where it trained."""
    state = checkpoint.load(run_dir)
    write_json(run_dir / runs.SHAPE_NAME, {k: state[k] for k in ("vocab_size", "head_vocab", "lm_width")})
    write_json(run_dir / runs.TRAINED_ON_NAME, where)


def slim_checkpoint(run_dir: Path) -> bytes:
    """The run's checkpoint with its EMA weights and time sampler alone (what ldlm.load and the latent
    notebook read): a quarter of the whole, without the raw weights and optimizer state."""
    state = checkpoint.load(run_dir)
    keep = ("config", "step", "elapsed", "ema", "time_sampler", "vocab_size", "head_vocab", "lm_width")
    buffer = io.BytesIO()
    import torch

    torch.save({"format": state["format"], "model": {}, **{k: state[k] for k in keep if k in state}}, buffer)
    return buffer.getvalue()


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), int(time.time())
    tar.addfile(info, io.BytesIO(data))


def pack(out: Path, work: Path, done: list[dict], record: dict, latent_rid: str | None) -> list[Path]:
    """The job's files under `out`: PACK_NAME (run folders without weights, latent reports, samples, speed
    rows, the record) and MODEL_NAME (the latent run's slim checkpoint), each checked against MAX_FILE."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with atomic_path(out / PACK_NAME) as tmp, tarfile.open(tmp, "w:gz") as tar:
        samples = {}  # two jobs of one config (e.g. the ablation's full = main's) share a run, not their settings
        for row in done:
            samples.setdefault(row["run_id"], set()).update(row["samples"])
        for rid, names in samples.items():
            run_dir = work / "runs" / rid
            for name in RUN_FILES:
                add(tar, f"runs/{rid}/{name}", (run_dir / name).read_bytes())
            report = work / "runs" / "scores" / f"{rid}-latents.json"
            if report.exists():
                add(tar, f"runs/scores/{report.name}", report.read_bytes())
            for sample in sorted(names):
                add(tar, f"samples/{sample}", (work / "results" / "samples" / sample).read_bytes())
        if (work / SPEED_NAME).exists():
            add(tar, SPEED_NAME, (work / SPEED_NAME).read_bytes())
        add(tar, RECORD_NAME, json.dumps(record, indent=2).encode())
    written.append(out / PACK_NAME)
    if latent_rid:
        with atomic_path(out / MODEL_NAME) as tmp, tarfile.open(tmp, "w:gz") as tar:
            add(tar, f"runs/{latent_rid}/{checkpoint.CKPT_NAME}", slim_checkpoint(work / "runs" / latent_rid))
        written.append(out / MODEL_NAME)
    for path in written:
        if path.stat().st_size > MAX_FILE:
            raise RuntimeError(f"{path} is {path.stat().st_size / 2**20:.1f} MiB: more than the 16 MiB a file may "
                               f"bring back from the box; lower n_samples or the number of runs in params/")
    return written


def prepare_states(exp: Experiment) -> None:
    """Token arrays and frozen-LM states of every dataset, once, on this machine's GPU, before the workers
    (which would otherwise each build them): ldlm.tools.prepare --states."""
    from . import prepare

    for dataset in exp.all_datasets:
        if prepare.main(["--preset", exp.preset, "--dataset", dataset, "--states"]) != 0:
            raise RuntimeError(f"python -m ldlm.tools.prepare --preset {exp.preset} --dataset {dataset} --states failed")


def preflight() -> None:
    """What training needs of this Python that the GPU box might lack, checked before any work."""
    try:
        from scipy.optimize import isotonic_regression  # noqa: F401  the adaptive time sampler's fit
        import yaml  # noqa: F401
    except ImportError as err:
        raise ConfigError(f"this Python lacks {err.name} ({err}); carry it as a wheel (docs/gpu.md)") from None


def gpu_run(exp: Experiment, out: Path, work: Path, workers: int, stop_after: float) -> dict:
    """Train and sample every job (main first), side by side; then the speed benchmark if time is left; pack."""
    from ..runtime.distributed import default_device

    preflight()
    start = time.time()
    where = dict(host(), started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    threads = max(1, (os.cpu_count() or 1) // workers)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))  # the training processes' CPU threads
    prepare_states(exp)
    states_s = time.time() - start
    todo = exp.runs()
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(run_job, job, work, start + stop_after, threads) for job in todo]
        results = [f.result() for f in futures]
    done = [r for r in results if r is not None]
    for row in done:
        describe_run(work / "runs" / row["run_id"], where)
    runs_s = time.time() - start - states_s
    speed_s = None
    main_done = all(r is not None for r, job in zip(results, todo) if job.exp is exp)
    if main_done and time.time() - start < stop_after:  # the benchmark runs alone on the GPU
        t0 = time.time()
        rows = bench.speed_rows(exp, exp.datasets[0], None, work / "runs", device=str(default_device()))
        import pandas as pd

        pd.DataFrame(rows).to_csv(work / SPEED_NAME, index=False)
        speed_s = time.time() - t0
    latent = latent_run(exp)
    latent_rid = run_id(latent.config().to_dict())
    record = dict(where, preset=exp.preset, runs=done, skipped=len(results) - len(done), workers=workers,
                  seconds=dict(states=states_s, runs=runs_s, speed=speed_s, total=time.time() - start))
    pack(out, work, done, record, latent_rid if any(r["run_id"] == latent_rid for r in done) else None)
    record["seconds"]["total_with_pack"] = time.time() - start
    return record


# ---- here: the box's files into runs/ and results/ ------------------------------------------------------------

def unpack(src: Path, runs_dir: Path, results_dir: Path) -> int:
    """The files of a GPU job into `runs_dir` (run folders, latent reports, the latent run's checkpoint) and
    `results_dir` (samples/, gpu_run/ with the speed rows and the job's record); returns the files written.
    A file already there is left if it has the same bytes, and refused if not (nothing here is overwritten)."""
    targets = {"runs/": runs_dir, "samples/": results_dir / "samples", SPEED_NAME: results_dir / "gpu_run",
               RECORD_NAME: results_dir / "gpu_run"}
    written = 0
    for name in (PACK_NAME, MODEL_NAME):
        if not (src / name).exists():
            if name == PACK_NAME:
                raise ConfigError(f"--unpack {src}: no {name} there; give the folder python -m ldlm.tools.gpu_run --out wrote")
            continue
        with tarfile.open(src / name, "r:gz") as tar:
            for member in tar.getmembers():
                prefix = next((p for p in targets if member.name == p or member.name.startswith(p)), None)
                parts = Path(member.name).parts
                if not member.isfile() or prefix is None or ".." in parts or Path(member.name).is_absolute():
                    raise ConfigError(f"--unpack: {src / name} holds {member.name!r}, which python -m ldlm.tools.gpu_run "
                                      f"does not write; not unpacking it")
                rest = member.name[len(prefix):] if prefix.endswith("/") else member.name
                target = targets[prefix] / rest
                data = tar.extractfile(member).read()
                if target.exists():
                    if target.read_bytes() != data:
                        raise ConfigError(f"--unpack: {target} exists with other contents; move it away (or unpack "
                                          f"into another --runs-dir / --results) and run again")
                    continue
                with atomic_path(target) as tmp:
                    tmp.write_bytes(data)
                written += 1
    return written


# ---- here: what the box needs and lacks ---------------------------------------------------------------------

def carry(exp: Experiment, dest: Path) -> dict:
    """Into `dest`: site/ (the frozen LM's package with its weights in bfloat16, the dtype the GPU loads them
    in, and only the blocks up to the layer read) and cache/tokens/ (every dataset's token arrays: the
    corpora come from a package the box lacks). Returns the MiB of each."""
    import importlib

    import torch
    from safetensors.torch import load_file, save_file

    from ..text.data import build_token_data, token_cache_path
    from ..text.frozen_lm import BUNDLED, load_tokenizer

    cfg = exp.run_config(exp.datasets[0])
    package = importlib.import_module(BUNDLED[cfg.frozen_lm])
    source, site = Path(package.__file__).parent, dest / "site" / BUNDLED[cfg.frozen_lm]
    shutil.rmtree(site, ignore_errors=True)
    shutil.copytree(source, site, ignore=shutil.ignore_patterns("__pycache__", "model.safetensors"))
    n_layers = json.loads((source / "model" / "config.json").read_text())["num_hidden_layers"]
    read = cfg.lm_layer if cfg.lm_layer >= 0 else n_layers + 1 + cfg.lm_layer  # hidden_states[read]: blocks < read
    weights = load_file(source / "model" / "model.safetensors")
    kept = {k: v.to(torch.bfloat16) for k, v in weights.items()
            if not k.startswith("pooler.") and not (".layer." in k and int(k.split(".layer.")[1].split(".")[0]) >= read)}
    save_file(kept, site / "model" / "model.safetensors", metadata={"format": "pt"})
    tokenizer = load_tokenizer(cfg.frozen_lm)
    tokens = dest / "cache" / "tokens"
    for dataset in exp.all_datasets:
        dcfg = exp.run_config(dataset)
        build_token_data(dcfg, tokenizer, dcfg.frozen_lm)
        folder = token_cache_path(dcfg, tokenizer, dcfg.frozen_lm)
        shutil.rmtree(tokens / folder.name, ignore_errors=True)
        shutil.copytree(folder, tokens / folder.name)
    size = lambda p: sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) / 2**20
    return dict(site=size(dest / "site"), tokens=size(tokens))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ldlm.tools.gpu_run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="gpu")
    parser.add_argument("--out", help="the job's files go here (on the box: $OUT)")
    parser.add_argument("--work", default=None, help="run folders and samples of the job (default runs/gpu_run-PRESET)")
    parser.add_argument("--workers", type=int, default=6, help="runs side by side on the GPU (default 6)")
    parser.add_argument("--stop-after", type=float, default=270.0, help="start no run after this many seconds")
    parser.add_argument("--spec", default="{}", help="experiment keys over params/PRESET.yaml, as YAML (tests)")
    parser.add_argument("--unpack", metavar="DIR", help="here: a GPU job's files into --runs-dir and --results")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--results", default="results", help="with --unpack: the results folder of the preset")
    parser.add_argument("--carry", metavar="DIR", help="here: build what the box needs and lacks into DIR")
    args = parser.parse_args(argv)
    try:
        if args.unpack:
            n = unpack(Path(args.unpack), Path(args.runs_dir), Path(args.results))
            print(f"unpacked {n} new files of {args.unpack} into {args.runs_dir} and {args.results}")
            return 0
        exp = Experiment.load(args.preset, **(yaml.safe_load(args.spec) or {}))
        if args.carry:
            sizes = carry(exp, Path(args.carry))
            print(f"{args.carry}: frozen LM package {sizes['site']:.1f} MiB, token arrays {sizes['tokens']:.1f} MiB")
            return 0
        if not args.out:
            raise ConfigError("give --out DIR (the job's files), --unpack DIR or --carry DIR")
        check_counts(workers=args.workers)
        work = Path(args.work or f"runs/gpu_run-{args.preset}")
        record = gpu_run(exp, Path(args.out), work, args.workers, args.stop_after)
    except (ConfigError, yaml.YAMLError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    s = record["seconds"]
    print(f"gpu_run {exp.preset} on {record['hardware']}: {len(record['runs'])} runs, {record['skipped']} not started "
          f"(--stop-after); states {s['states']:.0f} s, runs {s['runs']:.0f} s, speed {s['speed'] or 0:.0f} s, "
          f"total {s['total_with_pack']:.0f} s -> {args.out}")
    return 0 if not record["skipped"] else 3


if __name__ == "__main__":
    sys.exit(main())
