"""Bad input through the real command lines: exit 2, one error line naming the value, no traceback,
and nothing the user had is changed (issue 14). Most cases stop before any work, but each is a fresh
Python that imports torch (~2-4 s): ~2 min in all, so the module is `slow`.

A full disk is a file size limit (RLIMIT_FSIZE, as `ulimit -f`) on the command: its writes past the
limit fail with EFBIG, which the kit treats as ENOSPC (same path, its own wording), so every write
path runs out of room for real without filling a disk."""
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ldlm.runtime import checkpoint, runs
from ldlm.config import make_config
from ldlm.io import read_jsonl
from ldlm.evaluation.judges import smollm2_checkpoint
from ldlm.training.train import train

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
    paths["three_docs"] = root / "three.txt"
    paths["three_docs"].write_text("The first document.\n\nThe second one.\n\nThe third one.\n")
    paths["texts"] = root / "texts.jsonl"
    paths["texts"].write_text("".join(json.dumps({"text": f"Sample {i} is a short piece of text about the city."}) + "\n"
                                      for i in range(4)))
    return paths


def _protected(w) -> dict:
    """Bytes of every file a user (or an earlier run) owns in the fixture."""
    files = [*w["run"].iterdir(), w["user"] / "config.json", w["samples"], w["other"]]
    return {f: f.read_bytes() for f in files if f.is_file() and f.name != runs.LOCK_NAME}


def _run(args, env_extra=None, file_limit=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=300, preexec_fn=_file_size_limit(file_limit) if file_limit else None)


def _file_size_limit(nbytes: int):
    """For the child: no file may grow past `nbytes` (a write past it fails with EFBIG, not SIGXFSZ)."""
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    return limit


SMOKE = ["ldlm.training.train", "--preset", "smoke", "--no-progress"]
# (case, command line with {placeholders} from the fixture, text the error line must hold, extra environment)
CASES = [
    ("train into a run without --resume", [*SMOKE, "--out", "{run}"], "--resume", None),
    ("train --config other --resume checks it", ["ldlm.training.train", "--config", "{other}", "--out", "{run}", "--resume"],
     "differs from the saved run", None),
    ("train --resume without checkpoint", [*SMOKE, "--out", "{empty}", "--resume"], "holds no checkpoint", None),
    ("train into a user's folder", [*SMOKE, "--out", "{user}"], "not a run folder", None),
    ("train --out FILE", [*SMOKE, "--out", "{samples}"], "is a file", None),
    ("ckpt_every=0", [*SMOKE, "--out", "{empty}", "ckpt_every=0"], "ckpt_every=0", None),
    ("log_every=0", [*SMOKE, "--out", "{empty}", "log_every=0"], "log_every=0", None),
    ("eval_every=0", [*SMOKE, "--out", "{empty}", "eval_every=0"], "eval_every=0", None),
    ("max_steps=0", [*SMOKE, "--out", "{empty}", "max_steps=0"], "max_steps=0", None),
    ("an unknown model kind", [*SMOKE, "--out", "{empty}", "model=gpt"], "model='gpt': choose one of ['ar', 'ldlm', 'mdlm']",
     None),
    ("lr=nan", [*SMOKE, "--out", "{empty}", "lr=nan"], "lr=nan", None),
    ("lr negative", [*SMOKE, "--out", "{empty}", "lr=-1"], "lr=-1", None),
    ("seq_len beyond the frozen LM", [*SMOKE, "--out", "{empty}", "seq_len=1024"], "seq_len=1024", None),
    ("valid_docs=0", [*SMOKE, "--out", "{empty}", "valid_docs=0"], "valid_docs=0: hold out >= 1", None),
    ("valid_docs beyond the corpus", [*SMOKE, "--out", "{empty}", "--dataset", "text:{three_docs}", "valid_docs=5"],
     "valid_docs=5 holds out too many: dataset 'text:{three_docs}' has 3 documents; set valid_docs between 1 and 2", None),
    ("text:DIR", [*SMOKE, "--out", "{empty}", "--dataset", "text:{corpus_dir}"], "is a folder", None),
    ("non-UTF-8 corpus", [*SMOKE, "--out", "{empty}", "--dataset", "text:{latin1}"], "not UTF-8", None),
    ("LDLM_CACHE is a file", [*SMOKE, "--out", "{empty}"], "LDLM_CACHE", {"LDLM_CACHE": "{samples}"}),
    ("sample --batch-size -1", ["ldlm.trained.sample", "--run", "{run}", "--out", "{samples}", "--batch-size", "-1"],
     "--batch-size -1", None),
    ("sample --batch-size 0", ["ldlm.trained.sample", "--run", "{run}", "--out", "{samples}", "--batch-size", "0"],
     "--batch-size 0", None),
    ("sample --n 0", ["ldlm.trained.sample", "--run", "{run}", "--out", "{samples}", "--n", "0"], "--n 0", None),
    ("sample --steps 0", ["ldlm.trained.sample", "--run", "{run}", "--out", "{samples}", "--steps", "0"], "--steps 0", None),
    ("sample --top-p 0", ["ldlm.trained.sample", "--run", "{run}", "--out", "{samples}", "--top-p", "0"], "--top-p 0", None),
    ("sample --top-p 1.5", ["ldlm.trained.sample", "--run", "{run}", "--out", "{samples}", "--top-p", "1.5"], "--top-p 1.5", None),
    ("sample --temperature -1", ["ldlm.trained.sample", "--run", "{run}", "--out", "{samples}", "--temperature", "-1"],
     "--temperature -1.0: must be a number >= 0", None),
    ("sample --temperature nan", ["ldlm.trained.sample", "--run", "{run}", "--out", "{samples}", "--temperature", "nan"],
     "--temperature nan", None),
    ("sample --out DIR", ["ldlm.trained.sample", "--run", "{run}", "--out", "{out_dir}"], "is a folder", None),
    ("sample without checkpoint", ["ldlm.trained.sample", "--run", "{empty}", "--out", "{samples}"], "no checkpoint", None),
    ("bench without checkpoint", ["ldlm.tools.bench", "--run", "{empty}", "--out", "{csv}"], "no checkpoint", None),
    ("bench --batch 0", ["ldlm.tools.bench", "--run", "{run}", "--out", "{csv}", "--batch", "0"], "--batch 0", None),
    ("evaluate non-UTF-8 samples", ["ldlm.evaluation.evaluate", "--samples", "{latin1}", "--dataset", "wiki", "--out", "{csv}"],
     "not UTF-8", None),
    ("evaluate --batch-size 0", ["ldlm.evaluation.evaluate", "--samples", "{samples}", "--dataset", "wiki", "--out", "{csv}",
                                 "--batch-size", "0"], "--batch-size 0", None),
    ("prepare text:DIR", ["ldlm.tools.prepare", "--preset", "smoke", "--dataset", "text:{corpus_dir}"], "is a folder", None),
    ("export without checkpoint", ["ldlm.trained.export", "--run", "{empty}", "--out", "{out_dir}/model"], "no checkpoint", None),
    ("export into a user's folder", ["ldlm.trained.export", "--run", "{run}", "--out", "{user}"], "non-empty folder", None),
    ("gpu_check --run-dir on a real run", ["ldlm.tools.gpu_check", "--allow-cpu", "--preset", "smoke", "--run-dir", "{run}",
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
    assert last.startswith("error: ") and fill(expected) in last, proc.stderr
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
        proc = _run(["ldlm.training.train", "--out", str(w["run"]), "--resume", "--no-progress", "max_steps=4"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"pid {os.getpid()}" in proc.stderr.strip().splitlines()[-1]
    assert _protected(w) == before


KIB = 1024
FULL = "file size limit exceeded writing"
# (case, command line, the path the error line names, file size limit, extra environment); {new} is a fresh
# folder, {copy} a copy of the trained run, {cache} an empty LDLM_CACHE (else the tests' shared one)
DISK_FULL_CASES = [
    ("train: config.json", [*SMOKE, "--out", "{new}"], "{new}/config.json", KIB, None),
    ("train: checkpoint", [*SMOKE, "--out", "{new}", "max_steps=2"], "{new}/ckpt.pt", 64 * KIB, None),
    ("train: metrics log", [*SMOKE, "--out", "{new}", "max_steps=20", "log_every=1", "ckpt_every=100", "eval_every=100"],
     "{new};", 2 * KIB, None),
    ("train --resume: checkpoint", ["ldlm.training.train", "--out", "{copy}", "--resume", "--no-progress", "max_steps=4"],
     "{copy}/ckpt.pt", 64 * KIB, None),
    ("train: frozen-LM state cache", [*SMOKE, "--out", "{new}"], "{cache}/hidden/minilm-", 8 * KIB * KIB,
     {"LDLM_CACHE": "{cache}"}),
    ("prepare: token cache", ["ldlm.tools.prepare", "--preset", "smoke"], "{cache}/tokens/wiki-", KIB, {"LDLM_CACHE": "{cache}"}),
    ("sample --out", ["ldlm.trained.sample", "--run", "{run}", "--out", "{samples}", "--n", "4", "--steps", "2"], "{samples};",
     512, None),
    ("evaluate --out", ["ldlm.evaluation.evaluate", "--samples", "{texts}", "--dataset", "wiki", "--out", "{csv}"], "{csv};", 256,
     None),
    ("bench --out", ["ldlm.tools.bench", "--run", "{run}", "--out", "{csv}", "--steps", "2", "--batch", "1", "--repeats", "1"],
     "{csv};", 128, None),
    ("gpu_check --run-dir", ["ldlm.tools.gpu_check", "--allow-cpu", "--preset", "smoke", "--run-dir", "{new}", "--out", "{csv}",
                             "--steps", "2", "--sample-batch", "1", "--sample-steps", "2", "--repeats", "1",
                             "--no-progress"], "{new}/ckpt.pt", 64 * KIB, None),
]


def _temp_files(*folders) -> list[str]:
    """The kit's temporary files and build folders (".<name>.<host>-<pid>.<random>.tmp") under `folders`."""
    return [str(p) for f in folders if f.exists() for p in f.rglob("*.tmp")]


@pytest.mark.parametrize("case,argv,names,limit,env", DISK_FULL_CASES, ids=[c[0] for c in DISK_FULL_CASES])
def test_a_full_disk_exits_2_with_one_line_naming_the_file_and_keeps_the_previous_one(w, tmp_path, case, argv, names,
                                                                                      limit, env):
    places = {**w, "new": tmp_path / "new", "copy": tmp_path / "copy", "cache": tmp_path / "cache"}
    shutil.copytree(w["run"], places["copy"], ignore=shutil.ignore_patterns(runs.LOCK_NAME))
    fill = lambda s: s.format(**{k: str(v) for k, v in places.items()})
    before, last_checkpoint = _protected(w), (places["copy"] / "ckpt.pt").read_bytes()
    if argv[0] == "ldlm.evaluation.evaluate":  # its judge is converted once into the shared model cache (~30 s on a fresh
        smollm2_checkpoint()        # machine), not what this case fills: that is --out
    proc = _run([fill(a) for a in argv], {k: fill(v) for k, v in (env or {}).items()}, file_limit=limit)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {FULL} {fill(names)}") and "raise the limit (ulimit -f) or point " in last, last
    flag = "LDLM_CACHE" if "{cache}" in names else "--run-dir" if "gpu_check" in case else "--out"
    assert last.endswith(f"point {flag} elsewhere"), last
    assert _protected(w) == before and (places["copy"] / "ckpt.pt").read_bytes() == last_checkpoint
    assert not _temp_files(w["run"].parent, tmp_path)
    assert not (places["new"] / "ckpt.pt").exists() and not w["csv"].exists()


def test_after_a_full_disk_the_run_resumes_from_its_last_checkpoint(w, tmp_path):
    """Space freed (no limit), the same --resume continues from the checkpoint the full disk left, and the
    log has each step once (the lines written after the checkpoint are dropped, a torn last line too)."""
    out = tmp_path / "run"
    shutil.copytree(w["run"], out, ignore=shutil.ignore_patterns(runs.LOCK_NAME))
    assert _run(["ldlm.training.train", "--out", str(out), "--resume", "--no-progress", "max_steps=4"],
                file_limit=64 * KIB).returncode == 2
    with open(out / "metrics.jsonl", "a") as log:
        log.write('{"step": 9, "lo')  # what a full disk can leave of a log line
    proc = _run(["ldlm.training.train", "--out", str(out), "--resume", "--no-progress", "max_steps=4"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["step"] == 4 and checkpoint.load(out)["step"] == 4
    steps = [r["step"] for r in read_jsonl(out / "metrics.jsonl") if "loss" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 4
