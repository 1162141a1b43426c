"""Joint training of encoder, DiT, decoder and token decoder.

    python -m ldlm.training.train --preset tiny --dataset wiki --out runs/tiny-wiki [key=value ...]
    python -m ldlm.training.train --out runs/tiny-wiki --resume          # continue after a kill or a stop
    torchrun --nproc_per_node 8 -m ldlm.training.train --preset owt --out runs/owt   # DDP, one process per GPU

A run trains for its preset's own budget, the preset's max_steps (listed below), unless a max_steps=N override
says otherwise. `make reproduce` trains the same preset at the budgets of the experiment spec
params/<preset>.yaml (its `config:` and `ablation_config:`): a run of this command is none of its tables' runs
unless given the same keys.

SIGTERM or Ctrl-C stops a run at the end of its current step with a checkpoint (exit 128 + the signal,
one line saying how to resume: ldlm.training.stopping); a second Ctrl-C stops it at once.

`batch_size` is the global batch: each of N processes takes batch_size / N rows, in micro-batches
of `micro_batch_size` (gradient accumulation) when that is set. Every sample's noise is keyed by
(seed, step, position in the global batch), so N processes reproduce one process (ldlm.nets.noise).

A run folder holds config.json (the resolved config), data.json (dataset statistics),
metrics.jsonl (one line per log step and per evaluation), ckpt.pt (the last checkpoint, written
atomically), summary.json (final metrics, wall time, throughput) and what `logger` writes (tb/:
TensorBoard event files of the same numbers and `eval_samples` sampled texts; ldlm.training.tracking).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from ..config import PRESETS, Config, ConfigError, config_from_dict, make_config, parse_overrides, parse_problem
from ..config_help import keys_help
from ..io import PathError, disk_full, dumps, read_jsonl, write_json, write_jsonl
from ..kinds.build import init_model, model_class
from ..kinds.protocol import held_out_metrics
from ..runtime import checkpoint, distributed, runs
from ..runtime.distributed import barrier, default_device
from ..runtime.precision import autocast_dtype
from ..runtime.threads import use_threads
from ..text.data import DataError
from ..text.frozen_lm import ModelUnavailable, check_positions
from . import stopping, tracking
from .batches import held_out_chunks, load_training_data, step_loader
from .optim import (Diverged, Objective, TrainState, check_finite, keep_freed_memory, lr_lambda, make_optimizer,
                    train_step)


def train(cfg: Config, out: str | Path, resume: bool = False, progress: bool = True, stop_at: int | None = None) -> dict:
    """Train (or continue) the run in folder `out`; returns the summary dict.

    Runs as one process or under torchrun (DDP; every rank calls this, rank 0 writes and holds the
    folder: runs.claim). `stop_at` ends this call early at that step with a checkpoint (the schedule
    still runs to cfg.max_steps), as if the job had been killed right after saving; `resume=True`
    continues. Inputs that cannot work fail here, before any data or model is loaded."""
    default_device(cfg.device)
    tracking.check_logger(cfg.logger)
    if model_class(cfg.model).uses_frozen_lm:
        check_positions(cfg.frozen_lm, cfg.seq_len)
    out = Path(out)
    env, _ = distributed.setup(cfg.device)  # the process group first: every rank learns rank 0's refusal
    with runs.claim_ranks(out, cfg.to_dict(), resume, env):
        return _train(cfg, out, resume, progress, stop_at)


def _train(cfg: Config, out: Path, resume: bool, progress: bool, stop_at: int | None) -> dict:
    from tqdm.auto import tqdm

    ckpt_path = out / checkpoint.CKPT_NAME
    keep_freed_memory()
    env, device = distributed.setup(cfg.device)
    if device.type == "cpu":
        use_threads(cfg.num_threads)
    micro, accum = distributed.batch_plan(cfg.batch_size, cfg.micro_batch_size, env.world)
    positions = distributed.micro_positions(cfg.batch_size, micro, accum, env)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    np.random.seed(cfg.seed)

    data = load_training_data(cfg, device, env)
    model = init_model(cfg, data, device)
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = make_optimizer(cfg, model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    step, elapsed = 0, 0.0

    if resume and ckpt_path.exists():
        state = checkpoint.load(ckpt_path, checkpoint.KEYS)  # all of it: training goes on from here
        checkpoint.load_module(model, state["model"], "model")
        checkpoint.load_module(ema, state["ema"], "EMA model")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        model.load_training_state(state["time_sampler"])
        if "rng" in state:  # the global generators (dropout), as the uninterrupted run would have them now
            checkpoint.set_rng_state(state["rng"])
        step, elapsed = state["step"], state.get("elapsed", 0.0)
        if step > cfg.max_steps:  # it would end at once, its config.json saying fewer steps than it trained
            raise ConfigError(f"--resume: max_steps={cfg.max_steps} is below the checkpoint's step {step} in {out}; "
                              f"give max_steps >= {step}, or use a new --out for a shorter run")
        # drop log lines written after the checkpoint: the resumed run writes them again
        if env.is_main and (out / "metrics.jsonl").exists():
            write_jsonl(out / "metrics.jsonl", [r for r in read_jsonl(out / "metrics.jsonl") if r["step"] <= step])
    if resume and env.is_main:
        print(f"resuming {out} at step {step} (from {ckpt_path})" if ckpt_path.exists()
              else f"no checkpoint: starting at step 0 ({out} holds none)", file=sys.stderr, flush=True)
    if env.is_main:  # config.json first (it makes the folder a run); on a resume too, with a changed max_steps
        runs.record_config(out, cfg.to_dict())
        write_json(out / "data.json", data.tokens.stats)
    barrier(env)

    objective, state = Objective(model), TrainState(model, ema, optimizer, scheduler)
    if cfg.compile:
        model.compile_hot_paths()
    if env.enabled:  # adaptive-softmax tails may go unused in a micro-batch
        objective = DDP(objective, device_ids=[device] if device.type == "cuda" else None,
                        find_unused_parameters=cfg.adaptive_head)

    def save_checkpoint():
        if env.is_main:
            checkpoint.save(ckpt_path, config=cfg.to_dict(), step=step, elapsed=elapsed, model=model.state_dict(),
                            ema=ema.state_dict(), optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                            time_sampler=model.training_state(), rng=checkpoint.rng_state(),
                            lm_width=data.lm.width if data.lm is not None else None,
                            vocab_size=len(model.to_head), head_vocab=len(model.head_ids))
        barrier(env)

    log = open(out / "metrics.jsonl", "a") if env.is_main else None
    tracker = tracking.open_tracker(cfg, out, step) if env.is_main else tracking.Tracker()
    eval_samples = tracking.EvalSamples(cfg, tracker)
    def write_log(row: dict):
        if log:
            log.write(dumps(row) + "\n")
            log.flush()
        tracker.scalars(row["step"], {k: v for k, v in row.items() if k != "step"})

    tokens_per_step = cfg.batch_size * cfg.seq_len
    last = min(cfg.max_steps, stop_at) if stop_at is not None else cfg.max_steps
    loader = step_loader(data, cfg, positions, step, last, pin=device.type == "cuda")
    # a bar on a terminal; otherwise (a log file, a notebook's relayed output, --no-progress) one line per log step
    plain = env.is_main and not (progress and sys.stderr.isatty())
    bar = tqdm(total=cfg.max_steps, initial=step, desc="train", disable=plain or not env.is_main, dynamic_ncols=True)
    window_t, window_steps, stopped = time.perf_counter(), 0, False
    with stopping.on_signals() as stop:  # a SIGTERM or Ctrl-C ends the current step, then stops
        for rows in loader:
            t0 = time.perf_counter()
            micro_batches = [data.to_device(r, device) for r in rows]
            parts = train_step(objective, state, micro_batches, positions, cfg, step, device, env)
            check_finite(parts, step + 1)
            step += 1
            elapsed += time.perf_counter() - t0
            window_steps += 1
            bar.update(1)

            if step % cfg.log_every == 0 or step == cfg.max_steps:
                now = time.perf_counter()
                row = dict(step=step, **parts, lr=scheduler.get_last_lr()[0],
                           tokens_per_s=window_steps * tokens_per_step / (now - window_t), **model.log_stats())
                write_log(row)
                shown = {k: f"{row[k]:.3f}" for k in ("loss", "loss_diff", "train_tok_acc") if k in row}
                bar.set_postfix(shown)
                if plain:
                    print(f"step {step}/{cfg.max_steps} " + " ".join(f"{k} {v}" for k, v in shown.items())
                          + f" tokens/s {row['tokens_per_s']:.0f}", file=sys.stderr, flush=True)
                window_t, window_steps = time.perf_counter(), 0
            if step % cfg.eval_every == 0 or step == cfg.max_steps:
                metrics = held_out_metrics(ema, data, cfg, device, held_out_chunks(data, cfg, cfg.eval_batches, env), env)
                write_log(dict(step=step, **{f"ema_{k}": v for k, v in metrics.items()}))
                eval_samples.log(ema, step)
                window_t = time.perf_counter()  # evaluation time is not training throughput
            if step % cfg.ckpt_every == 0 or step == last:
                save_checkpoint()
                window_t = time.perf_counter()
            if step < last and stop.agreed(env, device):
                stopped = True
                if step % cfg.ckpt_every:  # else just saved
                    save_checkpoint()
                break
    bar.close()
    if log:
        log.close()
    tracker.close()
    if stopped:
        by = signal.Signals(stop.signum).name if stop.signum else "a signal to another rank"
        raise stopping.Stopped(f"stopped by {by} at step {step} of {cfg.max_steps}; checkpoint saved in {ckpt_path}. "
                               f"Resume with: python -m ldlm.training.train --out {out} --resume", stop.signum or signal.SIGTERM)
    if not ckpt_path.exists():  # max_steps == 0
        save_checkpoint()

    every_row = held_out_chunks(data, cfg, len(data.tokens.valid) // cfg.batch_size + 1, env)
    final = held_out_metrics(ema, data, cfg, device, every_row, env)
    summary = dict(step=step, train_seconds=elapsed, train_tokens=step * tokens_per_step,
                   train_tokens_per_s=step * tokens_per_step / max(elapsed, 1e-9), processes=env.world,
                   micro_batch_size=micro, grad_accum=accum, precision="bf16" if autocast_dtype(cfg, device) else "fp32",
                   peak_mem_gb=torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None,
                   **{f"ema_{k}": v for k, v in final.items()})
    if env.is_main:
        write_json(out / "summary.json", summary)
    barrier(env)
    return summary


def _preset_asked(argv) -> str | None:
    """--preset's value, read before parsing so that --help can show that preset's defaults."""
    args = list(sys.argv[1:] if argv is None else argv)
    for i, arg in enumerate(args):
        if arg == "--preset" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--preset="):
            return arg.split("=", 1)[1]
    return None


def _parser(argv) -> argparse.ArgumentParser:
    """The command line; --help ends with every config key, at the defaults of --preset if one is given."""
    preset = _preset_asked(argv)
    if preset in PRESETS:
        keys = keys_help(make_config(preset), f"--preset {preset}")
    else:  # what a bare run uses
        keys = keys_help(make_config("tiny"), "--preset tiny, which a run without --preset uses; "
                                              "--preset owt --help lists the paper-scale ones")
    parser = argparse.ArgumentParser(prog="python -m ldlm.training.train", description=__doc__, epilog=keys,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default=None, help=f"{' | '.join(PRESETS)} (default tiny); each with its own "
                                                       f"budget (max_steps; tiny: {PRESETS['tiny']['max_steps']:,})")
    parser.add_argument("--config", default=None, help="a resolved config, JSON (as a run's config.json) or YAML "
                                                       "(.yaml/.yml), instead of --preset; missing keys take the "
                                                       "dataclass defaults")
    parser.add_argument("--dataset", default=None, help="wiki | news | openwebtext | lm1b | text:PATH | jsonl:PATH")
    parser.add_argument("--variant", default=None, help="full | naive | no_mse | no_warmup | no_adaptive | no_decoder_noise")
    parser.add_argument("--out", default=None, help="run folder (required, except with --print-config)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config (JSON) and exit")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar: one plain line per log step instead (what a log file or notebook wants)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (the num_threads key; default 0: the cores idle at start, ldlm.runtime.threads)")
    parser.add_argument("overrides", nargs="*", help="config key=value pairs (listed below)")
    return parser


def _read_config_file(path: str) -> dict:
    """--config's values: YAML for .yaml/.yml, else JSON; any problem is one line that names the file."""
    import yaml

    kind = "YAML" if Path(path).suffix.lower() in (".yaml", ".yml") else "JSON"
    try:
        text = Path(path).read_text()
        values = yaml.safe_load(text) if kind == "YAML" else json.loads(text)
    except (OSError, ValueError, yaml.YAMLError) as err:  # JSONDecodeError is a ValueError
        raise ConfigError(f"--config {path}: not a readable {kind} config ({parse_problem(err)})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"--config {path}: expected a mapping of config keys, got a {type(values).__name__}")
    return values


def resolve_config(args) -> Config:
    """The config a command line asks for: --config or --preset (default tiny), --dataset, --variant and
    key=value overrides; with --resume, the saved run's, where only RESUME_MUTABLE keys may change."""
    given = {k: v for k, v in (("dataset", args.dataset), ("variant", args.variant)) if v is not None}
    saved = runs.resumed_config(Path(args.out)) if args.resume else None
    if args.config:
        values = _read_config_file(args.config)
        if args.variant is not None and args.variant != values.get("variant"):
            # a resolved config carries the recipe switches themselves; a new label would not change them
            raise ConfigError(f"--variant {args.variant} with --config {args.config} (variant "
                              f"{values.get('variant')!r}): the config fixes the recipe switches. Use "
                              f"--preset {values.get('preset', 'tiny')} --variant {args.variant}, or edit the config")
        cfg = config_from_dict({**values, **given, **parse_overrides(args.overrides)})
        if saved:  # every key of the file is given: all are checked
            runs.check_resume(saved, cfg.to_dict())
        return cfg
    if saved:
        asked = make_config(args.preset or saved["preset"], args.overrides, **given)  # validates keys and types
        explicit = [*given, *(o.split("=", 1)[0].strip() for o in args.overrides)] + (["preset"] if args.preset else [])
        runs.check_resume(saved, {k: getattr(asked, k) for k in explicit})
        return config_from_dict({**saved, **{k: getattr(asked, k) for k in explicit}})
    return make_config(args.preset or "tiny", args.overrides, **given)


def main(argv=None) -> int:
    parser = _parser(argv)
    args = parser.parse_args(argv)
    if args.out is None and not (args.print_config and not args.resume):
        parser.error("the following arguments are required: --out")
    if args.threads is not None:
        args.overrides.append(f"num_threads={args.threads}")
    try:
        cfg = resolve_config(args)
        if args.print_config:
            print(cfg.to_json())
            return 0
        summary = train(cfg, args.out, resume=args.resume, progress=not args.no_progress)
    except (ConfigError, DataError, ModelUnavailable, checkpoint.CheckpointError, runs.RunFolderError, PathError,
            Diverged) as err:
        # one write, not print's two: torchrun's ranks share stderr, and unbuffered (PYTHONUNBUFFERED) lines interleave
        sys.stderr.write(f"error: {err}\n")
        return 2
    except stopping.Stopped as err:  # its checkpoint saved: the status says which signal, as if it had killed us
        sys.stderr.write(f"{err}\n")
        return 128 + err.signum
    except torch.OutOfMemoryError:  # its own status: gpu_check starts over at a smaller micro-batch
        sys.stderr.write(f"error: out of memory at micro_batch_size={cfg.micro_batch_size or cfg.batch_size}; "
                         f"set micro_batch_size to a smaller divisor of batch_size\n")
        return runs.OUT_OF_MEMORY
    except OSError as err:  # a full disk under a write of its own (the metrics log), not an io helper's
        full = disk_full(err, err.filename or args.out)
        if full is None:
            raise
        sys.stderr.write(f"error: {full}\n")
        return 2
    finally:
        distributed.teardown()
    if int(os.environ.get("RANK", 0)) == 0:
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
