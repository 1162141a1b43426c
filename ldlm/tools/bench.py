"""Speed benchmark: sampling and training throughput, timed the way nanoGPT's bench.py does.

    python -m ldlm.tools.bench --run runs/<run_id> --steps 10 50 100 --batch 1 64 --out results/speed.csv
    python -m ldlm.tools.bench --run models/tiny-wiki-ldlm --steps 30 --batch 64 --out /tmp/speed.csv   # a saved model

Warm-up calls are excluded, the device is synchronised around every timed call, and the median of
`repeats` calls is reported, with hardware, dtype and thread count in every row. Sampling is timed
end to end: noise -> reverse steps -> decoder -> token decoder -> token ids. A row's `steps` and `nfe` are
its reverse steps and network calls per sample: 0 in a training row (as in gpu_check's), whose timed
training steps are its `repeats`.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

from ..config import ConfigError, check_counts
from ..evaluation.results import upsert_rows
from ..experiments.experiment import Experiment
from ..experiments.pipeline import train_or_resume
from ..io import PathError, check_output
from ..kinds.build import load_run
from ..runtime.checkpoint import CheckpointError
from ..runtime.distributed import DistEnv, batch_plan, default_device, micro_positions
from ..runtime.precision import autocast, compute_dtype
from ..sampling.rows import SeededBatches, sample_ids
from ..sampling.settings import sampling_settings
from ..text.frozen_lm import ModelUnavailable
from ..trained.api import load
from ..training.batches import load_training_data, step_loader
from ..training.optim import Objective, TrainState, keep_freed_memory, lr_lambda, make_optimizer, train_step
from .flops import frozen_lm_shape, head_targets, training_flops


FLOOR_STEPS = 2  # steps the matrix-product floor records (LDLM runs its self-conditioning pass on about half)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], object], warmup: int = 1, repeats: int = 3,
               device: torch.device = torch.device("cpu"), clock=time.perf_counter, min_seconds: float = 0.0,
               max_repeats: int = 1000) -> list[float]:
    """Seconds of each timed call of fn after `warmup` untimed calls, synchronising around each: at least
    `repeats` calls, and more (up to max_repeats) until they add up to `min_seconds`, so that the median
    of a millisecond call is not one scheduler hiccup."""
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    while len(times) < repeats or (sum(times) < min_seconds and len(times) < max_repeats):
        start = clock()
        fn()
        synchronize(device)
        times.append(clock() - start)
    return times


def hardware(device: torch.device) -> dict:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    return dict(device=device.type, hardware=name, threads=torch.get_num_threads(), torch=torch.__version__)


def matmul_peak_flops(device: torch.device, n: int = 1024, dtype=torch.float32, repeats: int = 5) -> float:
    """Achievable FLOP/s of one n x n matrix multiply, measured now (the denominator of MFU)."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    seconds = statistics.median(time_calls(lambda: a @ b, warmup=2, repeats=repeats, device=device))
    return 2 * n**3 / seconds


def bench_sampling(model, cfg, steps_list, batch_sizes, repeats: int = 3, warmup: int = 1, seed: int = 0,
                   min_seconds: float = 2.0) -> list[dict]:
    """Rows of median latency, samples/s and tokens/s per (batch size, sampling steps), in the run's
    training precision (`ldlm.runtime.precision`: bf16 on GPUs under precision=auto, fp32 on CPUs); each
    setting timed `repeats` times, or more until min_seconds (`time_calls`)."""
    device = next(model.parameters()).device
    dtype = compute_dtype(cfg, device)

    def call(batch, steps):
        with autocast(cfg, device):
            sample_ids(model, cfg, SeededBatches(batch, seed, batch_size=batch), dict(steps=steps))

    rows = []
    for batch in batch_sizes:
        for steps in steps_list:
            for _ in range(warmup):  # the same shapes and code paths as the timed calls, at a fraction of their cost
                call(batch, min(steps, 2))
            times = time_calls(lambda: call(batch, steps), warmup=0, repeats=repeats, device=device,
                               min_seconds=min_seconds)
            median = statistics.median(times)
            rows.append(dict(kind="sampling", batch=batch, steps=steps, nfe=model.nfe(steps), seq_len=cfg.seq_len,
                             seconds=median, samples_per_s=batch / median, tokens_per_s=batch * cfg.seq_len / median,
                             repeats=len(times), compiled=False, dtype=dtype, **hardware(device)))
    return rows


# the matrix products of a step (forward and backward), by aten op name: SDPA's fused kernels count whole
MATMUL_OPS = frozenset({
    "mm", "addmm", "bmm", "baddbmm",
    "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention_for_cpu_backward",
    "_scaled_dot_product_flash_attention", "_scaled_dot_product_flash_attention_backward",
    "_scaled_dot_product_efficient_attention", "_scaled_dot_product_efficient_attention_backward",
    "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_cudnn_attention_backward",
})


class MatmulCalls(TorchDispatchMode):
    """Records every matrix product run inside (the backward's too: the mode sees what autograd runs), each
    with copies of its inputs, so that `replay` can run exactly those calls again with nothing in between."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.overloadpacket.__name__ in MATMUL_OPS:
            copy = lambda x: x.detach().clone() if isinstance(x, torch.Tensor) else x
            self.calls.append((func, tree_map(copy, args), tree_map(copy, kwargs)))
        return func(*args, **kwargs)

    def replay(self) -> None:
        for func, args, kwargs in self.calls:
            func(*args, **kwargs)


def matmul_floor(one_step: Callable[[], object], steps: int, device: torch.device, repeats: int = 3) -> float:
    """Seconds per step of the steps' matrix products alone: `steps` calls of one_step recorded by MatmulCalls,
    then the recorded calls replayed (median of `repeats`). A step's time over this floor bounds the gain of
    any change that keeps the arithmetic (the same products, shapes and precision) and made all the other
    work (element-wise ops, norms, softmax, the optimizer, the data path, Python) free."""
    recorder = MatmulCalls()
    with recorder:
        for _ in range(steps):
            one_step()
    return statistics.median(time_calls(recorder.replay, warmup=1, repeats=repeats, device=device)) / steps


def training_steps(model, cfg, data, total: int, compile: bool = False) -> Callable[[], None]:
    """A callable that runs the next of `total` training steps from step 0 on a copy of `model`, on the
    training loop's own path (rows from `batches.step_loader`, `TrainingData.to_device`, `optim.train_step`)."""
    import copy

    keep_freed_memory()  # as train() does
    model = copy.deepcopy(model)
    device = next(model.parameters()).device
    optimizer = make_optimizer(cfg, model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    ema, objective = copy.deepcopy(model).requires_grad_(False), Objective(model)
    state = TrainState(model, ema, optimizer, scheduler)
    if compile:  # after the EMA copy, as train() does; the first steps then include the compilation
        model.compile_hot_paths()
    positions = micro_positions(cfg.batch_size, *batch_plan(cfg.batch_size, cfg.micro_batch_size, 1), DistEnv())
    loader = iter(step_loader(data, cfg, positions, 0, total, pin=device.type == "cuda"))
    step = iter(range(total))

    def one_step():
        micro_batches = [data.to_device(r, device) for r in next(loader)]
        train_step(objective, state, micro_batches, positions, cfg, next(step), device)
    return one_step


def bench_training(model, cfg, data, steps: int = 20, warmup: int = 3, compile: bool | None = None,
                   threads: int | None = None, floor: bool = False) -> dict:
    """Seconds per step of the training loop's own path on a copy of `model`: rows from `batches.step_loader`,
    `TrainingData.to_device` (float16 states -> float32), `optim.train_step` (loss, backward, clipping,
    AdamW, EMA, the model's `observe`), for consecutive steps from 0. The mean of `steps` steps after
    `warmup`, as the loop's logged tokens/s: a median would pick one mode, since only about half of
    LDLM's steps run the self-conditioning pass. MFU: ldlm.tools.flops.training_flops x tokens/s over the
    matmul peak measured in the same call. `compile` (default: cfg.compile) runs the steps through
    `compile_hot_paths`, as compile=on does; `warmup_s` is then mostly the compilation. `threads`: torch's
    CPU threads for the whole measurement, the peak's included (default: as they are set). `floor` (eager,
    CPU): `matmul_floor_s` over FLOOR_STEPS further steps and `matmul_share` = floor / seconds per step, so
    1 / matmul_share is the most that leaving the arithmetic as it is can gain."""
    if threads is not None:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return bench_training(model, cfg, data, steps, warmup, compile, floor=floor)
        finally:
            torch.set_num_threads(before)
    device = next(model.parameters()).device
    compile = cfg.compile if compile is None else compile
    # not compiled: its fused kernels are not the ops a dispatch mode sees; not on a GPU: the copies of an
    # owt-sized step's product inputs would take tens of GB there
    floor = floor and not compile and device.type == "cpu"
    total = warmup + steps + (FLOOR_STEPS if floor else 0)
    one_step = training_steps(model, cfg, data, total, compile)
    start = time.perf_counter()
    times = time_calls(one_step, warmup=warmup, repeats=steps, device=device)
    warmup_s = time.perf_counter() - start - sum(times)  # with compile: mostly the compilation
    seconds = statistics.mean(times)
    matmul_s = matmul_floor(one_step, FLOOR_STEPS, device) if floor else None
    tokens_per_s = cfg.batch_size * cfg.seq_len / seconds
    lm = frozen_lm_shape(cfg.frozen_lm, cfg.lm_layer) if model.uses_frozen_lm and not cfg.cache_hidden else None
    flops = training_flops(model, lm, head_targets(cfg, data.tokens))
    peak = matmul_peak_flops(device)
    return dict(kind="training", batch=cfg.batch_size, steps=0, nfe=0, seq_len=cfg.seq_len, seconds=seconds,
                samples_per_s=cfg.batch_size / seconds, tokens_per_s=tokens_per_s, params_trainable=flops["params_trainable"],
                flops_per_token=flops["total"], achieved_flops_per_s=flops["total"] * tokens_per_s,
                matmul_peak_flops_per_s=peak, mfu=flops["total"] * tokens_per_s / peak, repeats=steps,
                compiled=compile, warmup_s=warmup_s, matmul_floor_s=matmul_s,
                matmul_share=matmul_s / seconds if floor else None, dtype=compute_dtype(cfg, device),
                **hardware(device))


def speed_rows(exp: Experiment, dataset: str, seed: int | None = None, runs_dir: str | Path = "runs", nproc: int = 1,
               device: str = "cpu") -> list[dict]:
    """The speed benchmark of the main comparison's runs (`seed`, default the spec's first, on `dataset`) on
    `device`: each kind's sampling at the experiment's bench step counts and batches, and its training, eager
    and compile=on side by side (bench_compile), then eager on each of bench_threads (the CPU presets' notebooks
    train on 1).
    Eager rows also time the step's matrix products alone (matmul_share): 1 / share bounds what any change
    that keeps the arithmetic can gain."""
    seed = exp.seeds[0] if seed is None else seed  # a run of the spec's: the figures select the spec's runs
    rows = []
    for kind in exp.models:
        run_dir, _ = train_or_resume(exp.run_config(dataset, kind, seed=seed), runs_dir, nproc=nproc)
        model, cfg = load_run(run_dir, device)
        steps = sorted({s["steps"] for s in sampling_settings(model, exp.bench_step_counts, [1.0])})
        rows += [dict(r, model=kind, run_id=run_dir.name)
                 for r in bench_sampling(model, cfg, steps, exp.bench_batches, exp.bench_repeats)]
        data = load_training_data(cfg, device)
        settings = [dict(compile=False, floor=True), *([dict(compile=True)] if exp.bench_compile else []),
                    *(dict(compile=False, threads=n, floor=True) for n in exp.bench_threads)]
        rows += [dict(bench_training(model, cfg, data, **s), model=kind, run_id=run_dir.name) for s in settings]
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ldlm.tools.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="run folder, checkpoint file or saved model (python -m ldlm.trained.export)")
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="results/speed.csv")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    try:
        check_counts(steps=min(args.steps), batch=min(args.batch), repeats=args.repeats)
        check_output(args.out, inputs={"--run": args.run})
        device = default_device(args.device)
        pipe = load(args.run, device)
        model, cfg = pipe.model, pipe.cfg
    except (CheckpointError, ModelUnavailable, ConfigError, PathError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    rows = [dict(r, model=cfg.model, run_id=str(args.run)) for r in bench_sampling(model, cfg, args.steps, args.batch, args.repeats)]
    try:
        upsert_rows(args.out, rows, key=["model", "kind", "batch", "steps", "device", "run_id"])
    except PathError as err:  # a full disk: the earlier --out file stays
        print(f"error: {err}", file=sys.stderr)
        return 2
    for r in rows:
        print(f"batch {r['batch']:>4} steps {r['steps']:>4}: {r['seconds']:.3f} s  {r['samples_per_s']:.2f} samples/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
