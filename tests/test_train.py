"""Training loop, checkpoints, resume and the command-line entry points, on the smoke preset."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ldlm.runtime import checkpoint
from ldlm.config import make_config
from ldlm.io import read_jsonl
from ldlm.training.batches import batch_indices
from ldlm.kinds.build import load_run
from ldlm.sampling.rows import SeededBatches, sample_ids
from ldlm.trained.sample import main as sample_main
from ldlm.training.train import main as train_main, train

ROOT = Path(__file__).resolve().parents[1]


def smoke(**overrides):
    return make_config("smoke", **overrides)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    summary = train(smoke(max_steps=20), out, progress=False)
    return out, summary


def test_run_folder_contents(smoke_run):
    out, summary = smoke_run
    assert summary["step"] == 20 and summary["train_tokens_per_s"] > 0
    assert 0 <= summary["ema_recon_acc"] <= 1
    saved = json.loads((out / "config.json").read_text())
    assert saved["preset"] == "smoke" and saved["max_steps"] == 20
    rows = read_jsonl(out / "metrics.jsonl")
    logged = [r for r in rows if "loss" in r]
    assert [r["step"] for r in logged] == [5, 10, 15, 20]
    for key in ("loss_diff", "loss_h", "loss_tok", "gamma", "tokens_per_s", "t_q50"):
        assert key in logged[-1]
    assert any("ema_recon_acc" in r for r in rows)
    assert json.loads((out / "data.json").read_text())["train_blocks"] > 0


def test_checkpoint_save_load_identical_samples(smoke_run, tmp_path):
    out, _ = smoke_run
    model, cfg = load_run(out)
    a = sample_ids(model, cfg, SeededBatches(5, seed=7), dict(steps=4))
    model2, _ = load_run(out)
    b = sample_ids(model2, cfg, SeededBatches(5, seed=7), dict(steps=4))
    assert torch.equal(a, b) and a.shape == (5, cfg.seq_len)
    assert not torch.equal(a, sample_ids(model2, cfg, SeededBatches(5, seed=8), dict(steps=4)))
    # re-saving and loading the weights gives the same samples too
    torch.save({"format": checkpoint.FORMAT, **checkpoint.load(out)}, tmp_path / "copy.pt")
    model3, _ = load_run(tmp_path / "copy.pt")
    assert torch.equal(a, sample_ids(model3, cfg, SeededBatches(5, seed=7), dict(steps=4)))


def test_sample_command_any_n_and_steps(smoke_run, tmp_path):
    out, _ = smoke_run
    for n, steps in ((1, 1), (3, 7)):
        dest = tmp_path / f"s{n}.jsonl"
        assert sample_main(["--run", str(out), "--n", str(n), "--steps", str(steps), "--out", str(dest), "--batch-size", "2"]) == 0
        rows = read_jsonl(dest)
        assert len(rows) == n and all(r["steps"] == steps and isinstance(r["text"], str) for r in rows)
    again = tmp_path / "again.jsonl"
    sample_main(["--run", str(out), "--n", "3", "--steps", "7", "--out", str(again), "--batch-size", "2"])
    assert read_jsonl(again) == read_jsonl(tmp_path / "s3.jsonl")


def test_resume_equals_uninterrupted(tmp_path):
    straight = train(smoke(max_steps=12, ckpt_every=6, eval_every=100), tmp_path / "a", progress=False)
    train(smoke(max_steps=12, ckpt_every=6, eval_every=100), tmp_path / "b", progress=False, stop_at=6)
    assert checkpoint.load(tmp_path / "b")["step"] == 6
    resumed = train(smoke(max_steps=12, ckpt_every=6, eval_every=100), tmp_path / "b", resume=True, progress=False)
    a, b = checkpoint.load(tmp_path / "a"), checkpoint.load(tmp_path / "b")
    assert a["step"] == b["step"] == 12
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert torch.equal(a["time_sampler"]["loss"], b["time_sampler"]["loss"])
    assert straight["ema_recon_acc"] == resumed["ema_recon_acc"]
    steps = [r["step"] for r in read_jsonl(tmp_path / "b" / "metrics.jsonl") if "loss" in r]
    assert steps == sorted(set(steps))  # no step logged twice after the resume


@pytest.mark.parametrize("model", ["ldlm", "mdlm"])
def test_bf16_autocast_trains_and_samples_with_the_adaptive_head(model, tmp_path):
    """precision=bf16 (the GPU default) also runs on a CPU; the adaptive softmax stays in fp32."""
    summary = train(smoke(max_steps=3, precision="bf16", model=model, eval_every=100), tmp_path, progress=False)
    assert summary["precision"] == "bf16" and summary["step"] == 3
    net, cfg = load_run(tmp_path)
    assert cfg.adaptive_head
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert sample_ids(net, cfg, SeededBatches(2), dict(steps=2)).shape == (2, cfg.seq_len)


def test_batches_depend_only_on_step():
    assert (batch_indices(100, 8, 37, 0) == batch_indices(100, 8, 37, 0)).all()
    epoch = [i for s in range(12) for i in batch_indices(100, 8, s, 0)]
    assert len(set(epoch)) == 96  # one epoch sees each row at most once


def _cli(*args, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", *args], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


@pytest.mark.slow
def test_kill_and_resume(tmp_path):
    out = tmp_path / "killed"
    args = ["ldlm.training.train", "--preset", "smoke", "--out", str(out), "--no-progress", "max_steps=100000",
            "ckpt_every=10", "eval_every=100000", "log_every=5"]
    proc = _cli(*args)
    deadline = time.time() + 240
    while not (out / "ckpt.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = checkpoint.load(out)["step"]
    assert saved >= 10 and saved % 10 == 0
    resumed = _cli("ldlm.training.train", "--out", str(out), "--resume", "--no-progress", f"max_steps={saved + 10}")
    stdout, stderr = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, stderr
    assert json.loads(stdout)["step"] == saved + 10
    assert checkpoint.load(out)["step"] == saved + 10
    steps = [r["step"] for r in read_jsonl(out / "metrics.jsonl") if "loss" in r]
    assert steps == sorted(set(steps)) and steps[-1] == saved + 10


def test_cli_errors_are_clear(tmp_path, smoke_run, capsys):
    out, _ = smoke_run
    assert train_main(["--preset", "smoke", "--out", str(tmp_path / "x"), "bogus_key=1"]) == 2
    assert "bogus_key" in capsys.readouterr().err
    assert train_main(["--preset", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "preset" in capsys.readouterr().err
    assert train_main(["--preset", "smoke", "--dataset", "text:/no/such/file.txt", "--out", str(tmp_path / "y")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert train_main(["--preset", "smoke", "--out", str(out)]) == 2  # would overwrite a run
    assert "--resume" in capsys.readouterr().err
    assert train_main(["--out", str(out), "--resume", "seq_len=16"]) == 2  # resume with another model
    assert "seq_len" in capsys.readouterr().err


def test_corrupt_checkpoint_is_a_clear_error_and_left_alone(tmp_path, capsys):
    bad = tmp_path / "run"
    bad.mkdir()
    (bad / "ckpt.pt").write_bytes(b"not a checkpoint")
    assert sample_main(["--run", str(bad), "--out", str(tmp_path / "s.jsonl")]) == 2
    assert "corrupt" in capsys.readouterr().err
    assert train_main(["--out", str(bad), "--resume"]) == 2
    assert "corrupt" in capsys.readouterr().err
    assert (bad / "ckpt.pt").read_bytes() == b"not a checkpoint"
    assert not (tmp_path / "s.jsonl").exists()
    assert sample_main(["--run", str(tmp_path / "none"), "--out", str(tmp_path / "s.jsonl")]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_mismatched_checkpoint_is_a_clear_error(smoke_run, tmp_path):
    out, _ = smoke_run
    state = checkpoint.load(out)
    state["config"]["latent_dim"] = 8  # the weights no longer fit the config
    torch.save(state, tmp_path / "mismatch.pt")
    with pytest.raises(checkpoint.CheckpointError, match="does not match"):
        load_run(tmp_path / "mismatch.pt")


@pytest.mark.parametrize("steps,decay", [(30, make_config("smoke").ema_decay), (150, make_config("tiny").ema_decay),
                                         (400, make_config("tiny").ema_decay), (300, make_config("owt").ema_decay)])
def test_short_budget_ema_keeps_under_one_percent_of_the_initial_weights(steps, decay):
    """The EMA of every budget the kit runs (smoke, the tiny notebooks' 150/400, gpu_check's 300) is the
    trained weights' average, not the initialisation's: start the EMA at 0, train weights at 1."""
    from ldlm.training.optim import update_ema

    ema, model = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
    torch.nn.init.zeros_(ema.weight), torch.nn.init.zeros_(ema.bias)
    torch.nn.init.ones_(model.weight), torch.nn.init.ones_(model.bias)
    for step in range(steps):
        update_ema(ema, model, decay, step)
    assert ema.weight.min().item() > 0.99  # the initial weights' share is < 1% (a fixed 0.995: 47% at 150 steps)


def test_the_fused_optimizer_takes_the_per_parameter_loops_steps():
    """make_optimizer's fused AdamW (one kernel) updates as torch's per-parameter loop does with the
    same groups (decayed matrices, undecayed norms and biases), to float rounding over 20 steps."""
    import copy

    from ldlm.training.optim import make_optimizer

    cfg = make_config("smoke")
    torch.manual_seed(0)
    fused = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 4))
    reference = copy.deepcopy(fused)
    opt = make_optimizer(cfg, fused)
    assert all(g["fused"] for g in opt.param_groups)
    loop = torch.optim.AdamW([{**g, "params": [dict(zip(map(id, fused.parameters()), reference.parameters()))[id(p)]
                                                for p in g["params"]], "fused": None, "foreach": False}
                              for g in opt.param_groups])
    for _ in range(20):
        x = torch.randn(32, 8)
        for net, o in ((fused, opt), (reference, loop)):
            o.zero_grad()
            net(x).square().mean().backward()
            o.step()
    for a, b in zip(fused.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_config_with_another_variant_is_refused(smoke_run, tmp_path, capsys):
    """--config X --variant V must not relabel X's recipe as V: exit 2, nothing written."""
    out, _ = smoke_run
    assert train_main(["--config", str(out / "config.json"), "--variant", "naive", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "--variant naive" in err and "--preset smoke --variant naive" in err
    assert not (tmp_path / "r").exists()


def test_rerun_after_a_kill_before_the_first_checkpoint_starts_clean(tmp_path, capsys):
    """A run killed before its first checkpoint (config.json and log lines, no ckpt.pt) starts over
    without duplicated lines, by a plain rerun (the pipeline) or --resume; another config is refused."""
    from ldlm.runtime.runs import RunFolderError

    cfg = smoke(max_steps=5, eval_every=100)
    out = tmp_path / "early"
    out.mkdir()
    (out / "config.json").write_text(cfg.to_json())
    (out / "metrics.jsonl").write_text('{"step": 5, "loss": 9.0}\n')
    with pytest.raises(RunFolderError, match="holds another run"):
        train(smoke(max_steps=5, eval_every=100, lr=0.5), out, progress=False)
    assert train_main(["--out", str(out), "--resume", "--no-progress"]) == 0
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl") if "loss" in r] == [5]
    assert read_jsonl(out / "metrics.jsonl")[0]["loss"] != 9.0


def test_a_resume_that_trains_longer_leaves_the_new_max_steps_in_config_json_and_the_checkpoint(tmp_path):
    """config.json is the config the run continues with (equal to the checkpoint's), and resume.json
    lists what a --resume may change; config.json still reads as a config (--config, saved_config)."""
    from ldlm.runtime import runs
    from ldlm.config import config_from_dict

    out = tmp_path / "longer"
    train(smoke(max_steps=3, eval_every=100), out, progress=False)
    assert train_main(["--out", str(out), "--resume", "--no-progress", "max_steps=5", "log_every=1"]) == 0
    saved = json.loads((out / "config.json").read_text())
    state = checkpoint.load(out)
    assert state["step"] == 5 and saved["max_steps"] == 5 and saved["log_every"] == 1
    assert saved == state["config"] and runs.saved_config(out) == config_from_dict(saved).to_dict() == saved
    assert json.loads((out / "resume.json").read_text())["may_change"] == sorted(runs.RESUME_MUTABLE)


def test_the_help_names_a_presets_own_budget_apart_from_the_spec_that_sets_a_pipeline_runs():
    """`--preset tiny` trains the preset's own max_steps; `make reproduce` trains at params/tiny.yaml's budgets."""
    from ldlm.config import PRESETS
    from ldlm.training.train import _parser

    text = " ".join(_parser([]).format_help().split())
    assert f"tiny: {PRESETS['tiny']['max_steps']:,})" in text and "params/<preset>.yaml" in text
