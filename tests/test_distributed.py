"""DDP under torchrun (gloo on CPU): 2 processes reproduce 1 process, and kill-and-resume works."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from ldlm.runtime import checkpoint, runs
from ldlm.config import ConfigError, make_config
from ldlm.runtime.distributed import DistEnv, batch_plan, micro_positions, shard
from ldlm.io import read_jsonl

from .test_train import ROOT

STEPS = ["--preset", "smoke", "--no-progress", "max_steps=6", "log_every=1", "eval_every=3", "ckpt_every=3",
         "batch_size=16", "device=cpu", "num_threads=1"]


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def run(out, *args, nproc: int = 1, torchrun: tuple = (), **kw):
    if nproc == 1:
        cmd = [sys.executable, "-m", "ldlm.training.train"]
    else:  # torchrun's own module, so the test does not depend on the venv's bin/ on PATH
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               *torchrun, "-m", "ldlm.training.train"]
    return subprocess.Popen([*cmd, "--out", str(out), *args], env=_env(), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (torchrun starts each worker in its own session, out of its group)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def finish(proc, timeout=300):
    stdout, stderr = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, stderr[-3000:]
    return stdout


def losses(out):
    return [r for r in read_jsonl(out / "metrics.jsonl") if "loss" in r]


def test_batch_plan_and_positions():
    assert batch_plan(16, 0, 2) == (8, 1)
    assert batch_plan(16, 4, 2) == (4, 2)
    with pytest.raises(ConfigError, match="divisible"):
        batch_plan(15, 0, 2)
    with pytest.raises(ConfigError, match="micro_batch_size"):
        batch_plan(16, 3, 2)
    # every global position is owned by exactly one (rank, micro-batch)
    owned = [p for r in range(2) for pos in micro_positions(16, 4, 2, DistEnv(r, 2)) for p in pos]
    assert sorted(owned) == list(range(16))
    assert [len(shard(7, DistEnv(r, 3))) for r in range(3)] == [2, 2, 3]


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
    single = run(tmp_path / "one", *STEPS)
    finish(single)
    double = run(tmp_path / "two", *STEPS, nproc=2)
    stdout = finish(double)
    summary = json.loads(stdout[stdout.index("{"):])
    accum = run(tmp_path / "accum", *STEPS, "micro_batch_size=4")
    finish(accum)
    one, two, acc = losses(tmp_path / "one"), losses(tmp_path / "two"), losses(tmp_path / "accum")
    assert [r["step"] for r in one] == [r["step"] for r in two] == list(range(1, 7))
    for a, b, c in zip(one, two, acc):
        for key in ("loss", "loss_diff", "loss_h", "loss_tok", "grad_norm"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (a["step"], key)
            assert c[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (a["step"], key)
    assert summary["processes"] == 2 and summary["micro_batch_size"] == 8
    # the weights after 6 steps agree too, and only rank 0 wrote files
    w1, w2 = checkpoint.load(tmp_path / "one")["model"], checkpoint.load(tmp_path / "two")["model"]
    for key in w1:
        assert torch.allclose(w1[key].float(), w2[key].float(), rtol=1e-3, atol=1e-5), key
    assert len(losses(tmp_path / "two")) == 6  # one log line per step, not one per rank


@pytest.mark.slow
def test_kill_and_resume_under_torchrun(tmp_path):
    out = tmp_path / "killed"
    args = ["--preset", "smoke", "--no-progress", "max_steps=100000", "ckpt_every=10", "eval_every=100000",
            "log_every=5", "device=cpu", "num_threads=1"]
    proc = run(out, *args, nproc=2)
    deadline = time.time() + 240
    while not (out / "ckpt.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)
    for pid in [*descendants(proc.pid), proc.pid]:  # both workers and torchrun, as a lost node would
        os.kill(pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    saved = checkpoint.load(out)["step"]
    assert saved >= 10 and saved % 10 == 0
    stdout = finish(run(out, "--resume", "--no-progress", f"max_steps={saved + 10}", nproc=2))
    assert json.loads(stdout[stdout.index("{"):])["step"] == saved + 10
    assert checkpoint.load(out)["step"] == saved + 10
    steps = [r["step"] for r in losses(out)]
    assert steps == sorted(set(steps)) and steps[-1] == saved + 10


@pytest.mark.slow
def test_sampling_and_evaluation_sharded_under_torchrun_match_one_process(tmp_path):
    finish(run(tmp_path / "run", "--preset", "smoke", "--no-progress", "max_steps=10", "device=cpu"))
    outs = {}
    for nproc in (1, 2):
        samples = tmp_path / f"s{nproc}.jsonl"
        sample = ["ldlm.trained.sample", "--run-dir", str(tmp_path / "run"), "--num-samples", "10", "--steps", "3", "--batch-size", "3",
                  "--out", str(samples), "--device", "cpu"]
        evaluate = ["ldlm.evaluation.evaluate", "--samples", str(samples), "--dataset", "wiki", "--out", str(tmp_path / f"e{nproc}.json"),
                    "--text-tokenizer", "minilm"]
        for args in (sample, evaluate):
            launcher = [sys.executable, "-m"] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run",
                                                                  "--standalone", "--nproc_per_node=2", "-m"]
            done = subprocess.run([*launcher, *args], env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, done.stderr[-3000:]
        outs[nproc] = (read_jsonl(samples), json.loads((tmp_path / f"e{nproc}.json").read_text()))
    (rows1, eval1), (rows2, eval2) = outs[1], outs[2]
    assert [r["token_ids"] for r in rows1] == [r["token_ids"] for r in rows2] and len(rows1) == 10
    for key in ("gen_ppl_tok", "gen_ppl_seq", "entropy", "mauve", "n_tokens"):
        assert eval2[key] == pytest.approx(eval1[key], rel=1e-5), key


@pytest.mark.slow
def test_a_torchrun_into_a_busy_or_foreign_folder_stops_every_rank_at_once_with_one_line(tmp_path):
    """Rank 0 claims the folder and its refusal reaches rank 1 too (instead of rank 1 waiting in the
    process group for a rank 0 that left): both ranks print the same error line, exit 2, write nothing.
    torchrun first looks at its workers after 20 s here, not 0.1 s, so it does not stop rank 1 for rank
    0's exit, as the agent of another node would not: rank 1 must stop by itself. (At 5 s, a look
    could fall between the two ranks' exits, moments apart, and SIGTERM rank 1 as it was exiting:
    one failure in a loaded CI run.) Both ranks are gone within seconds; a rank 1 still waiting would
    be stopped at that first look, with exit code -15, not 2."""
    busy, foreign = tmp_path / "busy", tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine\n")
    expected = {busy: f"(pid {os.getpid()})", foreign: "is not empty and not a run folder"}
    with runs.claim(busy, make_config("smoke").to_dict(), resume=False):  # as a training in this process would
        start = time.monotonic()
        procs = {out: run(out, *STEPS, nproc=2, torchrun=("--monitor-interval=20",)) for out in expected}
        done = {out: proc.communicate(timeout=120) for out, proc in procs.items()}
        seconds = time.monotonic() - start
    assert seconds < 60
    for out, (_, stderr) in done.items():
        lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
        assert procs[out].returncode != 0 and len(lines) == 2 and lines[0] == lines[1], stderr[-3000:]
        assert expected[out] in lines[0] and str(out) in lines[0]
        assert stderr.count("exitcode  : 2") == 2, stderr[-3000:]  # torchrun's report: both ranks exited 2 themselves
        assert f'File "{ROOT / "ldlm"}' not in stderr  # no traceback from the kit (torchrun prints its own)
    assert sorted(p.name for p in busy.iterdir()) == [runs.LOCK_NAME]
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


@pytest.mark.slow
def test_a_sigterm_to_one_rank_stops_every_rank_at_one_step_with_rank_0s_checkpoint(tmp_path):
    """SIGTERM to rank 1 alone (first checkpoint due at step 1000): both ranks end the same step, rank 0
    writes its checkpoint, each says so in one line; a --resume under torchrun continues from it."""
    out = tmp_path / "ddp"
    args = [*STEPS[:3], "max_steps=1000", "log_every=1", "eval_every=1000", "ckpt_every=1000", "batch_size=16",
            "device=cpu", "num_threads=1"]
    proc = run(out, *args, nproc=2)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not (
            (out / "metrics.jsonl").exists() and len(losses(out)) >= 2):
        time.sleep(0.2)
    workers = [p for p in descendants(proc.pid) if "ldlm.training.train" in open(f"/proc/{p}/cmdline").read()]
    rank1 = next(p for p in workers if b"RANK=1\0" in open(f"/proc/{p}/environ", "rb").read())
    os.kill(rank1, signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    saved = checkpoint.load(out)["step"]
    assert saved >= 2 and f"stopped by SIGTERM at step {saved} of 1000" in stderr, stderr[-3000:]
    assert f"stopped by a signal to another rank at step {saved} of 1000" in stderr
    assert [r["step"] for r in losses(out)] == list(range(1, saved + 1))
    finish(run(out, "--resume", "--no-progress", f"max_steps={saved + 2}", nproc=2))
    assert checkpoint.load(out)["step"] == saved + 2
