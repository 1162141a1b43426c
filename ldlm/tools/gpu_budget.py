"""The inputs of a GPU job's time budget, measured on a CPU (params/gpu.yaml holds the arithmetic).

    python -m ldlm.tools.gpu_budget --preset gpu     # the calibration; per model kind: FLOPs per training token,
                                               # aten ops per training step and per sampling step; the GPU
                                               # seconds of every run of ldlm.tools.gpu_run, one at a time

Small models on a GPU are launch-bound: a step costs about (its aten ops) x (seconds per op), not its
FLOPs over the card's throughput. The ops are counted here on a CPU (TorchDispatchMode sees every op
dispatched, the backward's and the optimizer's too; the count depends on the layers, not on batch,
width or sequence length). Seconds per op come from a measured GPU row of results/gpu_check.csv: the
owt-shaped LDLM's sampling at batch 1 (launch-bound), divided by its op count counted here.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ..config import make_config
from ..experiments.experiment import Experiment
from ..kinds.build import build_model, init_model
from ..kinds.registry import KINDS
from ..sampling.settings import sampling_settings
from .bench import training_steps
from .flops import head_targets, training_flops

TRAIN_STEPS = 6  # counted after one warm-up step; LDLM runs its self-conditioning pass on about half of them


class OpCount(TorchDispatchMode):
    """Counts the aten ops run inside (forward, backward and optimizer alike)."""

    def __init__(self):
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        return func(*args, **(kwargs or {}))


def count_ops(fn) -> int:
    with OpCount() as counter:
        fn()
    return counter.ops


def sampling_ops(model, cfg, steps=(2, 4)) -> tuple[float, float]:
    """(ops of one generation at batch 1 apart from its reverse steps, ops per reverse step), from two step
    counts; the GPT's generation does not depend on the step count (all of it is the first number)."""
    from ..sampling.rows import SeededBatches, sample_ids

    a, b = (count_ops(lambda k=k: sample_ids(model, cfg, SeededBatches(1, batch_size=1), dict(steps=k))) for k in steps)
    per_step = (b - a) / (steps[1] - steps[0])
    return a - per_step * steps[0], per_step


def kind_inputs(preset: str, kind: str, data_tokens: int) -> dict:
    """FLOPs per training token (the whole training split's head targets), aten ops per training step and
    per sampling step of `kind` in `preset`; the ops on a `data_tokens`-token cut of the split (counts
    do not depend on it)."""
    from ..training.batches import load_training_data

    torch.manual_seed(0)
    cfg = make_config(preset, model=kind, max_train_tokens=data_tokens, device="cpu")
    data = load_training_data(cfg, "cpu")
    model = init_model(cfg, data, "cpu")
    full = make_config(preset, model=kind)
    from ..text.data import build_token_data
    from ..text.frozen_lm import load_tokenizer

    tokens = build_token_data(full, load_tokenizer(full.frozen_lm), full.frozen_lm)
    flops = training_flops(model, None, head_targets(full, tokens))
    step = training_steps(model, cfg, data, TRAIN_STEPS + 1)
    step()  # the first step allocates the optimizer's state
    train_ops = statistics.mean(count_ops(step) for _ in range(TRAIN_STEPS))
    base, per_step = sampling_ops(model.eval(), cfg)
    return dict(kind=kind, model=model, flops_per_token=flops["total"], params=flops["params_trainable"],
                train_ops_per_step=train_ops, sample_ops_base=base, sample_ops_per_step=per_step)


def calibration(gpu_check: Path) -> dict:
    """Seconds per aten op on the GPU: gpu_check's eager owt-shaped LDLM sampling at batch 1 (its longest
    step count) over that sampling's op count here (the owt model with its own layers at seq_len 16)."""
    import pandas as pd

    from ..sampling.rows import SeededBatches, sample_ids

    rows = pd.read_csv(gpu_check)
    eager = rows[~rows["train_compiled"].astype(bool) & rows["hardware"].str.contains("H200")]
    row = eager[(eager["kind"] == "sampling") & (eager["batch"] == 1)].sort_values("steps").iloc[-1]
    cfg = make_config(row["preset"], frozen_lm=row["frozen_lm"], seq_len=16, device="cpu")
    torch.manual_seed(0)
    model = build_model(cfg, 30522, None, 384).eval()  # MiniLM's vocabulary and width, as gpu_check ran
    ops = count_ops(lambda: sample_ids(model, cfg, SeededBatches(1, batch_size=1), dict(steps=int(row["steps"]))))
    training = eager[eager["kind"] == "training"]
    return dict(hardware=row["hardware"], steps=int(row["steps"]), seconds=float(row["seconds"]), ops=ops,
                seconds_per_op=float(row["seconds"]) / ops, flops_per_s=float(training["achieved_flops_per_s"].max()))


def estimate(exp: Experiment, inputs: dict[str, dict], seconds_per_op: float, flops_per_s: float) -> dict:
    """GPU seconds of every run of ldlm.tools.gpu_run (one at a time): training steps x max(ops x seconds per op,
    FLOPs / flops_per_s), and each sample set's batches x (ops of a generation at its step count) x seconds
    per op."""
    import math

    out = dict(main_train=0.0, ablation_train=0.0, sampling=0.0, runs=0)
    for job in exp.runs():
        cfg, r = job.config(), inputs[job.kind]
        step_s = max(r["train_ops_per_step"] * seconds_per_op, r["flops_per_token"] * cfg.batch_size * cfg.seq_len / flops_per_s)
        out["main_train" if job.exp is exp else "ablation_train"] += cfg.max_steps * step_s
        settings = sampling_settings(r["model"], job.exp.step_counts, job.exp.top_ps,
                                     job.exp.frontier_temperatures.get(job.kind, []))
        batches = math.ceil(job.exp.n_samples / job.exp.sample_batch)
        out["sampling"] += sum(batches * (r["sample_ops_base"] + r["sample_ops_per_step"] * s["steps"]) * seconds_per_op
                               for s in settings)
        out["runs"] += 1
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ldlm.tools.gpu_budget", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="gpu")
    parser.add_argument("--gpu-check", default="results/gpu_check.csv")
    parser.add_argument("--data-tokens", type=int, default=20_000, help="training tokens the op counts run on")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cal = calibration(Path(args.gpu_check))
    print(f"calibration: {cal['hardware']} eager LDLM (owt) sampling, batch 1, {cal['steps']} steps: "
          f"{cal['seconds']:.3f} s / {cal['ops']} ops = {cal['seconds_per_op'] * 1e6:.1f} us per op; "
          f"{cal['flops_per_s'] / 1e12:.0f} TFLOP/s (its eager training)")
    inputs = {}
    for kind in KINDS:
        r = inputs[kind] = kind_inputs(args.preset, kind, args.data_tokens)
        print(f"{args.preset} {kind}: {r['params'] / 1e6:.2f}M trainable, {r['flops_per_token'] / 1e6:.1f} MFLOP per "
              f"training token, {r['train_ops_per_step']:.0f} ops per training step, sampling {r['sample_ops_base']:.0f} "
              f"+ {r['sample_ops_per_step']:.0f} per step ops per batch")
    e = estimate(Experiment.load(args.preset), inputs, cal["seconds_per_op"], cal["flops_per_s"])
    print(f"{e['runs']} runs, one at a time: main training {e['main_train']:.0f} s, ablation training "
          f"{e['ablation_train']:.0f} s, sampling {e['sampling']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
