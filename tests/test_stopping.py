"""A stopped run keeps its progress (issue 24, item 5): SIGTERM/SIGINT save a checkpoint and say how to
resume; a resume says the step it resumes from; a re-run never silently drops the log of an earlier start."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import ldlm.training.train
from ldlm.runtime import checkpoint; from ldlm.training import stopping
from ldlm.config import make_config
from ldlm.io import read_jsonl
from ldlm.runtime.runs import RunFolderError
from ldlm.training.train import main as train_main, train

ROOT = Path(__file__).resolve().parents[1]


def smoke(**overrides):
    return make_config("smoke", **{"eval_every": 100, "ckpt_every": 100, "log_every": 1, **overrides})


def _logged_steps(out: Path) -> list[int]:
    return [r["step"] for r in read_jsonl(out / "metrics.jsonl") if "loss" in r]


@pytest.fixture
def terminal_sigint():
    """SIGINT handled as in a terminal (a job started in the background, by nohup or CI, begins with it ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_mid_run_saves_a_checkpoint_and_the_resume_says_its_step(tmp_path, monkeypatch, capsys, terminal_sigint):
    """SIGINT arrives during step 3 (first checkpoint due at 100): the step ends, a checkpoint of step 3 is
    written, Stopped says where; --resume says "at step 3" and logs every step once."""
    out, real_step = tmp_path / "run", ldlm.training.train.train_step

    def step_with_a_signal(*args, **kwargs):
        if args[5] == 2:  # the step argument: training step 3 is running
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(ldlm.training.train, "train_step", step_with_a_signal)
    with pytest.raises(stopping.Stopped, match=f"stopped by SIGINT at step 3 of 6; checkpoint saved in {out}") as err:
        train(smoke(max_steps=6), out, progress=False)
    assert f"python -m ldlm.training.train --out {out} --resume" in str(err.value) and err.value.signum == signal.SIGINT
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl-C is Ctrl-C again
    assert checkpoint.load(out)["step"] == 3 and _logged_steps(out) == [1, 2, 3]
    monkeypatch.setattr(ldlm.training.train, "train_step", real_step)
    capsys.readouterr()
    assert train_main(["--out", str(out), "--resume", "--no-progress"]) == 0
    assert f"resuming {out} at step 3" in capsys.readouterr().err
    assert _logged_steps(out) == [1, 2, 3, 4, 5, 6] and checkpoint.load(out)["step"] == 6


def test_resume_without_a_checkpoint_says_it_starts_at_step_0(tmp_path, capsys):
    out = tmp_path / "early"
    out.mkdir()
    (out / "config.json").write_text(smoke(max_steps=2).to_json())
    assert train_main(["--out", str(out), "--resume", "--no-progress"]) == 0
    assert "no checkpoint: starting at step 0" in capsys.readouterr().err


def test_a_plain_rerun_with_another_max_steps_is_refused_and_keeps_the_earlier_log(tmp_path):
    """An earlier start killed before its first checkpoint: a re-run that changes max_steps is refused with
    one line (it may be meant as a new run); --resume starts it over explicitly."""
    out = tmp_path / "early"
    out.mkdir()
    (out / "config.json").write_text(smoke(max_steps=5).to_json())
    (out / "metrics.jsonl").write_text('{"step": 1, "loss": 9.0}\n')
    with pytest.raises(RunFolderError, match=r"max_steps=3 \(was 5\); pass --resume") as err:
        train(smoke(max_steps=3), out, progress=False)
    assert "\n" not in str(err.value)
    assert (out / "metrics.jsonl").read_text() == '{"step": 1, "loss": 9.0}\n'


def test_a_resume_to_fewer_steps_than_the_checkpoint_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    train(smoke(max_steps=3), out, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".lock"}
    assert train_main(["--out", str(out), "--resume", "--no-progress", "max_steps=2"]) == 2
    assert "max_steps=2 is below the checkpoint's step 3" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".lock"} == before


@pytest.mark.slow
def test_sigterm_to_the_train_command_saves_a_checkpoint_and_says_how_to_resume(tmp_path):
    """A scheduler's SIGTERM to `python -m ldlm.training.train` (its first checkpoint due at step 1000): exit 143,
    one line naming the checkpoint and the resume command; the resume says its step."""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    args = [sys.executable, "-m", "ldlm.training.train", "--preset", "smoke", "--no-progress", "--out", str(out),
            "max_steps=1000", "ckpt_every=1000", "eval_every=1000", "log_every=1"]
    proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not (
            (out / "metrics.jsonl").exists() and len(_logged_steps(out)) >= 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in stderr, stderr[-3000:]
    saved = checkpoint.load(out)["step"]
    last = stderr.strip().splitlines()[-1]
    assert saved >= 3 and last == (f"stopped by SIGTERM at step {saved} of 1000; checkpoint saved in {out}/ckpt.pt. "
                                   f"Resume with: python -m ldlm.training.train --out {out} --resume")
    resumed = subprocess.run([sys.executable, "-m", "ldlm.training.train", "--out", str(out), "--resume", "--no-progress",
                              f"max_steps={saved + 2}"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming {out} at step {saved}" in resumed.stderr and json.loads(resumed.stdout)["step"] == saved + 2
    assert _logged_steps(out) == list(range(1, saved + 3))
