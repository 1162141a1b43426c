"""Bad input through the real command lines: exit 2, one error line naming the value, no traceback,
and nothing the user had is changed (issue 14). Most cases stop before any work, but each is a fresh
Python that imports torch (~2-4 s): ~2 min in all, so the module is `slow`."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ldlm import runs
from ldlm.config import make_config
from ldlm.train import train

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    """Paths the cases point at: a trained run, a user's folder and files, bad inputs."""
    root = tmp_path_factory.mktemp("bad")
    paths = {name: root / name for name in ("run", "empty", "user", "corpus_dir", "out_dir")}
    train(make_config("smoke", max_steps=2, eval_every=100, ckpt_every=100), paths["run"], progress=False)
    for name in ("empty", "user", "corpus_dir", "out_dir"):
        paths[name].mkdir()
    (paths["user"] / "config.json").write_text('{"mine": true}\n')
    other = json.loads((paths["run"] / "config.json").read_text())
    paths["other"] = root / "other.json"
    paths["other"].write_text(json.dumps({**other, "lr": 0.5, "seed": 7}))
    paths["samples"] = root / "samples.jsonl"
    paths["samples"].write_text('{"text": "earlier samples"}\n')
    paths["latin1"] = root / "latin1.txt"
    paths["latin1"].write_bytes("caf\xe9 one.\n\ncaf\xe9 two.\n".encode("latin-1"))
    paths["csv"] = root / "out.csv"
    return paths


def _protected(w) -> dict:
    """Bytes of every file a user (or an earlier run) owns in the fixture."""
    files = [*w["run"].iterdir(), w["user"] / "config.json", w["samples"], w["other"]]
    return {f: f.read_bytes() for f in files if f.is_file() and f.name != runs.LOCK_NAME}


def _run(args, env_extra=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


SMOKE = ["ldlm.train", "--preset", "smoke", "--no-progress"]
# (case, command line with {placeholders} from the fixture, text the error line must hold, extra environment)
CASES = [
    ("train into a run without --resume", [*SMOKE, "--out", "{run}"], "--resume", None),
    ("train --config other --resume checks it", ["ldlm.train", "--config", "{other}", "--out", "{run}", "--resume"],
     "differs from the saved run", None),
    ("train --resume without checkpoint", [*SMOKE, "--out", "{empty}", "--resume"], "holds no checkpoint", None),
    ("train into a user's folder", [*SMOKE, "--out", "{user}"], "not a run folder", None),
    ("train --out FILE", [*SMOKE, "--out", "{samples}"], "is a file", None),
    ("ckpt_every=0", [*SMOKE, "--out", "{empty}", "ckpt_every=0"], "ckpt_every=0", None),
    ("log_every=0", [*SMOKE, "--out", "{empty}", "log_every=0"], "log_every=0", None),
    ("eval_every=0", [*SMOKE, "--out", "{empty}", "eval_every=0"], "eval_every=0", None),
    ("max_steps=0", [*SMOKE, "--out", "{empty}", "max_steps=0"], "max_steps=0", None),
    ("lr=nan", [*SMOKE, "--out", "{empty}", "lr=nan"], "lr=nan", None),
    ("lr negative", [*SMOKE, "--out", "{empty}", "lr=-1"], "lr=-1", None),
    ("seq_len beyond the frozen LM", [*SMOKE, "--out", "{empty}", "seq_len=1024"], "seq_len=1024", None),
    ("text:DIR", [*SMOKE, "--out", "{empty}", "--dataset", "text:{corpus_dir}"], "is a folder", None),
    ("non-UTF-8 corpus", [*SMOKE, "--out", "{empty}", "--dataset", "text:{latin1}"], "not UTF-8", None),
    ("LDLM_CACHE is a file", [*SMOKE, "--out", "{empty}"], "LDLM_CACHE", {"LDLM_CACHE": "{samples}"}),
    ("sample --batch-size -1", ["ldlm.sample", "--run", "{run}", "--out", "{samples}", "--batch-size", "-1"],
     "--batch-size -1", None),
    ("sample --batch-size 0", ["ldlm.sample", "--run", "{run}", "--out", "{samples}", "--batch-size", "0"],
     "--batch-size 0", None),
    ("sample --n 0", ["ldlm.sample", "--run", "{run}", "--out", "{samples}", "--n", "0"], "--n 0", None),
    ("sample --steps 0", ["ldlm.sample", "--run", "{run}", "--out", "{samples}", "--steps", "0"], "--steps 0", None),
    ("sample --top-p 0", ["ldlm.sample", "--run", "{run}", "--out", "{samples}", "--top-p", "0"], "--top-p 0", None),
    ("sample --top-p 1.5", ["ldlm.sample", "--run", "{run}", "--out", "{samples}", "--top-p", "1.5"], "--top-p 1.5", None),
    ("sample --out DIR", ["ldlm.sample", "--run", "{run}", "--out", "{out_dir}"], "is a folder", None),
    ("sample without checkpoint", ["ldlm.sample", "--run", "{empty}", "--out", "{samples}"], "no checkpoint", None),
    ("bench without checkpoint", ["ldlm.bench", "--run", "{empty}", "--out", "{csv}"], "no checkpoint", None),
    ("bench --batch 0", ["ldlm.bench", "--run", "{run}", "--out", "{csv}", "--batch", "0"], "--batch 0", None),
    ("evaluate non-UTF-8 samples", ["ldlm.evaluate", "--samples", "{latin1}", "--dataset", "wiki", "--out", "{csv}"],
     "not UTF-8", None),
    ("evaluate --batch-size 0", ["ldlm.evaluate", "--samples", "{samples}", "--dataset", "wiki", "--out", "{csv}",
                                 "--batch-size", "0"], "--batch-size 0", None),
    ("prepare text:DIR", ["ldlm.prepare", "--preset", "smoke", "--dataset", "text:{corpus_dir}"], "is a folder", None),
    ("export without checkpoint", ["ldlm.export", "--run", "{empty}", "--out", "{out_dir}/model"], "no checkpoint", None),
    ("export into a user's folder", ["ldlm.export", "--run", "{run}", "--out", "{user}"], "non-empty folder", None),
    ("gpu_check --run-dir on a real run", ["ldlm.gpu_check", "--allow-cpu", "--preset", "smoke", "--run-dir", "{run}",
                                           "--out", "{csv}"], "not deleting", None),
]
if not torch.cuda.is_available():
    CASES.append(("device=cuda without a GPU", [*SMOKE, "--out", "{empty}", "device=cuda"], "device=cuda", None))


@pytest.mark.parametrize("case,argv,expected,env", CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_line_and_keeps_prior_files(w, case, argv, expected, env):
    fill = lambda s: s.format(**{k: str(v) for k, v in w.items()})
    before = _protected(w)
    proc = _run([fill(a) for a in argv], {k: fill(v) for k, v in (env or {}).items()})
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and expected in last, proc.stderr
    assert _protected(w) == before
    assert not (w["empty"] / "config.json").exists() and not (w["csv"]).exists()


def test_diverged_training_exits_2_naming_the_step_and_writes_no_checkpoint(tmp_path):
    proc = _run([*SMOKE, "--out", str(tmp_path / "nan"), "lr=1e6"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "diverged at step" in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "nan" / "ckpt.pt").exists()
    for line in (tmp_path / "nan" / "metrics.jsonl").read_text().splitlines():  # strict JSON: no bare NaN
        json.loads(line, parse_constant=lambda c: pytest.fail(f"bare {c} in metrics.jsonl"))


def test_a_second_writer_of_a_run_folder_exits_2_naming_the_holder(w):
    """The test process holds the run folder, as a training would; a real second process is refused."""
    before = _protected(w)
    cfg = json.loads((w["run"] / "config.json").read_text())
    with runs.claim(w["run"], cfg, resume=True):
        proc = _run(["ldlm.train", "--out", str(w["run"]), "--resume", "--no-progress", "max_steps=4"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"pid {os.getpid()}" in proc.stderr.strip().splitlines()[-1]
    assert _protected(w) == before
