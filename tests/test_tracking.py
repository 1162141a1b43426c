"""Tracking (ldlm.training.tracking): TensorBoard event files, evaluation samples, the jsonl and wandb loggers."""
import sys
import time
import types

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ldlm.runtime import checkpoint; from ldlm.training import tracking
from ldlm.config import make_config
from ldlm.io import read_jsonl
from ldlm.evaluation.results import run_id
from ldlm.runtime.runs import check_resume
from ldlm.training.train import main as train_main, train

# dropout draws from the global generator while training: anything else drawing from it would show
RUN = dict(max_steps=10, log_every=5, eval_every=5, ckpt_every=10, dropout=0.1)
SCALARS = {"loss/loss", "loss/loss_diff", "loss/loss_h", "loss/loss_tok", "train/gamma", "train/lr", "train/grad_norm",
           "train/tokens_per_s", "train/train_tok_acc", "time_sampler/t_q25", "time_sampler/t_q50",
           "time_sampler/t_q75", "eval/recon_acc", "eval/valid_loss_h"}


def events(folder) -> EventAccumulator:
    acc = EventAccumulator(str(folder))
    acc.Reload()
    return acc


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same smoke run twice: TensorBoard with 2 evaluation samples, and jsonl with none."""
    root = tmp_path_factory.mktemp("tracking")
    train(make_config("smoke", eval_samples=2, **RUN), root / "tb", progress=False)
    train(make_config("smoke", logger="jsonl", eval_samples=0, **RUN), root / "jsonl", progress=False)
    return root


def test_event_files_hold_every_logged_scalar_with_the_metrics_log_values(runs):
    acc = events(runs / "tb" / "tb")
    assert SCALARS <= set(acc.Tags()["scalars"])
    rows = read_jsonl(runs / "tb" / "metrics.jsonl")
    for name, key in (("loss/loss", "loss"), ("train/lr", "lr"), ("time_sampler/t_q50", "t_q50"),
                      ("eval/recon_acc", "ema_recon_acc")):
        logged = [(r["step"], r[key]) for r in rows if key in r]
        shown = [(e.step, e.value) for e in acc.Scalars(name)]
        assert [s for s, _ in shown] == [s for s, _ in logged] == [5, 10], name
        assert [v for _, v in shown] == pytest.approx([v for _, v in logged], rel=1e-6), name  # stored as float32


def test_samples_are_logged_as_text_at_each_evaluation(runs):
    acc = events(runs / "tb" / "tb")
    texts = acc.Tensors("samples/text_summary")
    assert [e.step for e in texts] == [5, 10]
    for event in texts:
        text = event.tensor_proto.string_val[0].decode()
        assert text.startswith("1. ") and "\n\n2. " in text and "\n\n3. " not in text  # eval_samples=2


def test_jsonl_logger_writes_metrics_but_no_event_files(runs):
    assert not (runs / "jsonl" / "tb").exists()
    assert not list((runs / "jsonl").rglob("events.out.tfevents*"))
    assert [r["step"] for r in read_jsonl(runs / "jsonl" / "metrics.jsonl") if "loss" in r] == [5, 10]


def test_logger_and_eval_samples_leave_the_trained_weights_bit_identical(runs):
    a, b = checkpoint.load(runs / "tb"), checkpoint.load(runs / "jsonl")
    for weights in ("model", "ema"):
        assert a[weights].keys() == b[weights].keys()
        for key in a[weights]:
            assert torch.equal(a[weights][key], b[weights][key]), (weights, key)
    assert torch.equal(a["time_sampler"]["loss"], b["time_sampler"]["loss"])
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])  # the global generator drew the same numbers
    same = lambda rows: [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in rows]
    assert same(read_jsonl(runs / "tb" / "metrics.jsonl")) == same(read_jsonl(runs / "jsonl" / "metrics.jsonl"))


def test_resumed_events_replace_what_a_killed_run_logged_after_its_checkpoint(tmp_path):
    first = tracking.TensorBoard(tmp_path, start=0)
    first.scalars(5, {"loss": 1.0})
    first.scalars(10, {"loss": 2.0})  # after the checkpoint at step 5, then killed
    first.close()
    # a resume is a new process, seconds later: event files are ordered by their name (seconds, host, pid,
    # then a per-process counter that sorts "10" before "9" when a test process has made many writers)
    time.sleep(1.1)
    resumed = tracking.TensorBoard(tmp_path, start=5)
    resumed.scalars(10, {"loss": 3.0})
    resumed.close()
    assert [(e.step, e.value) for e in events(tmp_path).Scalars("loss/loss")] == [(5, 1.0), (10, 3.0)]


def test_logger_and_eval_samples_keep_the_run_id_and_may_change_on_resume():
    saved = make_config("smoke").to_dict()
    other = make_config("smoke", logger="jsonl", eval_samples=0).to_dict()
    assert run_id(saved) == run_id(other)
    assert run_id(saved) == run_id({k: v for k, v in saved.items() if k not in ("logger", "eval_samples")})
    check_resume(saved, other)  # raises if not allowed


def test_wandb_missing_is_one_line_and_exit_2_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb fails, whether or not it is installed
    assert train_main(["--preset", "smoke", "--out", str(tmp_path / "r"), "logger=wandb"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "logger=wandb" in err and "pip install wandb" in err
    assert not (tmp_path / "r").exists()


@pytest.fixture
def fake_wandb(monkeypatch):
    """A stand-in for the wandb package (not a dependency): records what the tracker asks of it."""
    calls = types.SimpleNamespace(init=None, logged=[])
    run = types.SimpleNamespace(log=lambda values, step: calls.logged.append((step, values)), finish=lambda: None)
    module = types.ModuleType("wandb")
    module.__spec__ = types.SimpleNamespace(name="wandb")
    module.init = lambda **kw: setattr(calls, "init", kw) or run
    module.Table = lambda columns, data: ("table", columns, data)
    monkeypatch.setitem(sys.modules, "wandb", module)
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda name: module.__spec__ if name == "wandb" else None)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    return calls


def test_wandb_runs_offline_in_the_run_folder_unless_wandb_mode_says_otherwise(fake_wandb, tmp_path, monkeypatch):
    cfg = make_config("smoke", logger="wandb")
    tracker = tracking.open_tracker(cfg, tmp_path, 0)
    assert fake_wandb.init["mode"] == "offline" and fake_wandb.init["dir"] == str(tmp_path)
    assert fake_wandb.init["config"] == cfg.to_dict() and fake_wandb.init["resume"] == "allow"
    tracker.scalars(5, {"loss": 1.5, "ema_recon_acc": 0.25})
    tracker.text(5, "samples", ["a b", "c"])
    assert fake_wandb.logged == [(5, {"loss/loss": 1.5, "eval/recon_acc": 0.25}),
                                 (5, {"samples": ("table", ["sample"], [["a b"], ["c"]])})]
    first_id = fake_wandb.init["id"]
    monkeypatch.setenv("WANDB_MODE", "online")
    tracking.open_tracker(cfg, tmp_path, 5)
    assert fake_wandb.init["mode"] == "online" and fake_wandb.init["id"] == first_id  # a resume continues the run


def test_markdown_escaping_keeps_sampled_text_literal():
    shown = tracking._markdown(["# not a heading *or* _emphasis_", ""])
    assert shown == "1. \\# not a heading \\*or\\* \\_emphasis\\_\n\n2. (empty)"
