import itertools

import pytest

from ldlm.tools.bench import time_calls


class FakeModel:
    """Counts calls; each call 'takes' the next duration on a fake clock."""

    def __init__(self, durations):
        self.calls, self.now, self.durations = 0, 0.0, iter(durations)

    def __call__(self):
        self.calls += 1
        self.now += next(self.durations)

    def clock(self):
        return self.now


def test_warmup_calls_are_run_but_not_timed():
    model = FakeModel([100.0, 100.0, 1.0, 2.0, 3.0])  # two slow warm-up calls (e.g. compilation)
    times = time_calls(model, warmup=2, repeats=3, clock=model.clock)
    assert model.calls == 5 and times == [1.0, 2.0, 3.0]


def test_each_repeat_is_timed_separately():
    model = FakeModel(itertools.repeat(0.5))
    assert time_calls(model, warmup=0, repeats=4, clock=model.clock) == [0.5] * 4


def test_short_calls_repeat_until_min_seconds():
    model = FakeModel(itertools.repeat(0.125))  # exact in binary: 8 calls make 1 s
    times = time_calls(model, warmup=0, repeats=3, min_seconds=1.0, clock=model.clock)
    assert len(times) == 8 and sum(times) == 1.0
    slow = FakeModel(itertools.repeat(5.0))  # long calls: just the repeats
    assert len(time_calls(slow, warmup=0, repeats=3, min_seconds=1.0, clock=slow.clock)) == 3
    capped = FakeModel(itertools.repeat(0.0))
    assert len(time_calls(capped, warmup=0, repeats=3, min_seconds=1.0, max_repeats=50, clock=capped.clock)) == 50


def test_repeats_must_be_positive():
    with pytest.raises(ValueError):
        time_calls(lambda: None, repeats=0)


def test_training_bench_runs_the_loop_path_on_a_copy():
    import torch

    from ldlm.tools.bench import bench_training
    from ldlm.config import make_config
    from ldlm.training.batches import load_training_data
    from ldlm.kinds.build import init_model

    cfg = make_config("smoke")
    data = load_training_data(cfg, "cpu")
    model = init_model(cfg, data, "cpu")
    before = [p.clone() for p in model.parameters()]
    row = bench_training(model, cfg, data, steps=2, warmup=1)
    assert row["kind"] == "training" and row["repeats"] == 2 and row["batch"] == cfg.batch_size
    assert (row["steps"], row["nfe"]) == (0, 0)  # a sampling row's reverse steps and calls: none here (gpu_check's too)
    assert row["seconds"] > 0 and row["tokens_per_s"] == cfg.batch_size * cfg.seq_len / row["seconds"]
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # the caller's model is untouched
    from ldlm.tools.flops import training_flops

    # the one FLOP model gpu_check uses too, an adaptive head priced on the training targets
    assert row["flops_per_token"] == training_flops(model, targets=data.tokens.train_targets())["total"]
    assert row["mfu"] == pytest.approx(row["achieved_flops_per_s"] / row["matmul_peak_flops_per_s"])
    assert row["matmul_floor_s"] is None and row["matmul_share"] is None  # only when asked: it costs 2 steps
    floored = bench_training(model, cfg, data, steps=2, warmup=1, floor=True)
    assert 0 < floored["matmul_floor_s"] < floored["seconds"]  # the products alone, without the step's other work
    assert floored["matmul_share"] == floored["matmul_floor_s"] / floored["seconds"]
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        one = bench_training(model, cfg, data, steps=1, warmup=1, threads=1)
        assert one["threads"] == 1 and torch.get_num_threads() == 2  # pinned for the measurement only
    finally:
        torch.set_num_threads(threads)


def test_the_matmul_recorder_sees_the_backward_products_and_nothing_else():
    import torch

    from ldlm.tools.bench import MatmulCalls

    linear, x = torch.nn.Linear(8, 4), torch.randn(3, 8, requires_grad=True)
    with MatmulCalls() as recorder:
        torch.nn.functional.gelu(linear(x)).pow(2).sum().backward()
    # forward x W^T + b, then the gradients of x and of W; gelu, pow, sum and their backwards are not products
    assert [func.overloadpacket.__name__ for func, _, _ in recorder.calls] == ["addmm", "mm", "mm"]
    _, args, _ = recorder.calls[0]
    assert args[1] is not x and torch.equal(args[1], x)  # copies: a replay cannot touch the step's tensors
    x.data.zero_()
    assert args[1].abs().sum() > 0


def test_the_bench_command_takes_a_saved_model(tmp_path):
    import pandas as pd
    from pathlib import Path

    from ldlm.tools.bench import main

    shipped = Path(__file__).resolve().parents[1] / "models" / "tiny-wiki-ldlm"
    out = tmp_path / "speed.csv"
    assert main(["--run", str(shipped), "--steps", "2", "--batch", "1", "--repeats", "1", "--out", str(out), "--device", "cpu"]) == 0
    rows = pd.read_csv(out)
    assert list(rows["kind"]) == ["sampling"] and rows["nfe"].iloc[0] == 3 and rows["model"].iloc[0] == "ldlm"


def test_the_speed_benchmark_times_a_run_of_the_specs_own_seeds(monkeypatch):
    """A spec without seed 0 would otherwise train an extra run, whose speed rows no figure selects."""
    from ldlm.experiments.experiment import Experiment
    from ldlm.tools import bench

    seeds = []

    def stop(cfg, runs_dir, nproc):
        seeds.append(cfg.seed)
        raise StopIteration

    monkeypatch.setattr(bench, "train_or_resume", stop)
    exp = Experiment.load("smoke", seeds=[3, 4])
    for given in (None, 4):  # the spec's first seed by default; a given seed as given
        with pytest.raises(StopIteration):
            bench.speed_rows(exp, "wiki", given)
    assert seeds == [3, 4]
