"""Trust boundaries: a checkpoint, a parameter file, a model folder or an --out path from someone else
never runs code and never destroys the user's files. Through the real command lines where there is
one: exit 2, one error line naming the value, no traceback, every prior file byte-identical, and a
payload's marker file never created."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import ldlm
from ldlm import checkpoint, runs
from ldlm.config import ConfigError, make_config
from ldlm.experiment import Experiment
from ldlm.train import train

ROOT = Path(__file__).resolve().parents[1]


class RunsShell:
    """Pickles as a call of os.system: what a hostile ckpt.pt holds."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    """A trained run, a copy of it whose ckpt.pt runs `touch MARKER`, a saved model, a samples file."""
    root = tmp_path_factory.mktemp("trust")
    paths = {"run": root / "run", "evil": root / "evil", "marker": root / "MARKER", "model": root / "model",
             "samples": root / "samples.jsonl", "corpus": root / "corpus.txt", "csv": root / "out.csv"}
    train(make_config("smoke", max_steps=2, eval_every=100, ckpt_every=100), paths["run"], progress=False)
    shutil.copytree(paths["run"], paths["evil"], ignore=shutil.ignore_patterns(runs.LOCK_NAME))
    state = checkpoint.load(paths["run"])
    torch.save({**state, "model": RunsShell(f"touch {paths['marker']}")}, paths["evil"] / checkpoint.CKPT_NAME)
    ldlm.load(paths["run"], device="cpu").save_pretrained(paths["model"])
    paths["samples"].write_text("".join(json.dumps({"text": f"Sample {i} is about the city."}) + "\n" for i in range(4)))
    paths["corpus"].write_text("The first document.\n\nThe second one.\n\nThe third one.\n")
    return paths


def _files(*folders) -> dict:
    """Bytes of every file under `folders` (the run lock aside: a refused training may take it)."""
    found = {}
    for folder in folders:
        for f in ([folder] if folder.is_file() else folder.rglob("*")):
            if f.is_file() and f.name != runs.LOCK_NAME:
                found[f] = f.read_bytes()
    return found


def _run(args, answer=None):
    """The command line; `answer` is what it reads from stdin (a "y" to any question it asks)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          input=answer)


def _refused(proc, *named: str) -> str:
    """The one error line of a command that exited 2; it names each of `named`."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    last = lines[-1]
    assert last.startswith("error: ") and all(n in last for n in named), proc.stderr[-3000:]
    return last


# ---- 1. a checkpoint never runs code ----------------------------------------------------------------

HOSTILE = [
    ("sample", ["ldlm.sample", "--run", "{evil}", "--out", "{root}/s.jsonl"]),
    ("sample on the file", ["ldlm.sample", "--run", "{evil}/ckpt.pt", "--out", "{root}/s.jsonl"]),
    ("export", ["ldlm.export", "--run", "{evil}", "--out", "{root}/exported"]),
    ("bench", ["ldlm.bench", "--run", "{evil}", "--out", "{csv}", "--steps", "2", "--batch", "1", "--repeats", "1"]),
    ("train --resume", ["ldlm.train", "--out", "{evil}", "--resume", "--no-progress", "max_steps=4"]),
]


@pytest.mark.slow
@pytest.mark.parametrize("case,argv", HOSTILE, ids=[c[0] for c in HOSTILE])
def test_a_checkpoint_that_runs_code_is_refused_by_every_command_and_runs_nothing(w, case, argv):
    fill = lambda s: s.format(root=w["run"].parent, **{k: str(v) for k, v in w.items()})
    before = _files(w["evil"])
    proc = _run([fill(a) for a in argv])
    _refused(proc, str(w["evil"]), "system", "not loading it")
    assert not w["marker"].exists(), "the checkpoint's code ran"
    assert _files(w["evil"]) == before and not w["csv"].exists()


def test_ldlm_load_refuses_a_checkpoint_that_runs_code(w):
    with pytest.raises(checkpoint.CheckpointError, match="system"):
        ldlm.load(w["evil"], device="cpu")
    assert not w["marker"].exists()


def test_a_checkpoint_holds_tensors_and_plain_values_only(w):
    state = torch.load(w["run"] / checkpoint.CKPT_NAME, weights_only=True)  # no allow-list needed
    assert state["step"] == 2 and isinstance(state["rng"]["numpy"][1], torch.Tensor)


def test_a_checkpoint_written_before_still_loads_and_resumes_its_numpy_generator(w, tmp_path):
    """What ldlm wrote before: the NumPy RNG state as an ndarray (np.random.get_state() as is)."""
    old = tmp_path / "old"
    shutil.copytree(w["run"], old, ignore=shutil.ignore_patterns(runs.LOCK_NAME))
    state = checkpoint.load(old)
    np.random.seed(3)
    numpy_state = np.random.get_state()
    expected = np.random.rand(4)
    torch.save({**state, "rng": {**state["rng"], "numpy": numpy_state}}, old / checkpoint.CKPT_NAME)
    assert "numpy._core.multiarray._reconstruct" in torch.serialization.get_unsafe_globals_in_checkpoint(
        old / checkpoint.CKPT_NAME)
    loaded = checkpoint.load(old)
    checkpoint.set_rng_state(loaded["rng"])
    assert np.array_equal(np.random.rand(4), expected)
    assert train(make_config("smoke", max_steps=3, eval_every=100, ckpt_every=100), old, resume=True,
                 progress=False)["step"] == 3
