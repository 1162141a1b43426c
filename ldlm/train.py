"""Joint training of encoder, DiT, decoder and token decoder.

    python -m ldlm.train --preset tiny --dataset wiki --out runs/tiny-wiki [key=value ...]
    python -m ldlm.train --out runs/tiny-wiki --resume          # continue after a kill
    torchrun --nproc_per_node 8 -m ldlm.train --preset owt --out runs/owt   # DDP, one process per GPU

`batch_size` is the global batch: each of N processes takes batch_size / N rows, in micro-batches
of `micro_batch_size` (gradient accumulation) when that is set. Every sample's noise is keyed by
(seed, step, position in the global batch), so N processes reproduce one process (ldlm.noise).

A run folder holds config.json (the resolved config), data.json (dataset statistics),
metrics.jsonl (one line per log step and per evaluation), ckpt.pt (the last checkpoint, written
atomically) and summary.json (final metrics, wall time, throughput).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from . import checkpoint, distributed, runs
from .baselines.model import Baseline
from .config import Config, ConfigError, config_from_dict, make_config, parse_overrides
from .data import DataError, TokenData, build_token_data, special_ids
from .diffusion import make_time_sampler, warmup_gamma
from .distributed import DistEnv, all_gather_cat, all_reduce_sum, barrier, shard
from .frozen_lm import (FrozenLM, ModelUnavailable, attention_mask, cached_hidden_states, check_positions,
                        default_device, load_frozen_lm, load_tokenizer)
from .io import PathError, disk_full, dumps, read_jsonl, write_json, write_jsonl
from .losses import LossOutput, baseline_loss, ldlm_loss
from .metrics import token_matches
from .models import LDLM
from .noise import SampleNoise

EVAL_STREAM = 2**40  # the "step" of the noise used by held-out losses: never a training step


@dataclass
class TrainingData:
    """Token blocks and (optionally cached) frozen-LM states for both splits."""
    tokens: TokenData
    lm: FrozenLM | None  # None for the baselines: they read tokens only
    vocab_size: int      # the tokenizer's
    bos: int
    train_h: np.ndarray | None  # [N, T, lm_width] float16, or None to compute per batch
    valid_h: np.ndarray | None

    def rows(self, split: str, idx: np.ndarray) -> dict:
        """CPU tensors of rows `idx`: tokens [B, T], lengths [B] and cached states [B, T, W] (float16) if any."""
        cached = self.train_h if split == "train" else self.valid_h
        out = dict(tokens=torch.as_tensor(np.asarray(getattr(self.tokens, split)[idx]), dtype=torch.long),
                   lengths=torch.as_tensor(np.asarray(getattr(self.tokens, f"{split}_len")[idx])))
        if cached is not None:
            out["h"] = torch.as_tensor(np.asarray(cached[idx]))
        return out

    def to_device(self, rows: dict, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(h [B, T, W] float32, tokens [B, T], lengths [B]) on `device`; runs the frozen LM if not cached."""
        tokens = rows["tokens"].to(device, non_blocking=True)
        lengths = rows["lengths"].to(device, non_blocking=True)
        if "h" in rows:
            h = rows["h"].to(device, non_blocking=True).float()
        elif self.lm is None:
            h = None
        else:
            with torch.no_grad():
                h = self.lm(tokens, attention_mask(lengths, tokens.shape[1])).float()
        return h, tokens, lengths

    def batch(self, split: str, idx: np.ndarray, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.to_device(self.rows(split, idx), device)


class StepBatches(torch.utils.data.Dataset):
    """Item `step` = this rank's micro-batches of training step `step` (a DataLoader runs it in workers)."""

    def __init__(self, corpus: TrainingData, cfg: Config, positions: list[range]):
        self.corpus, self.cfg, self.positions = corpus, cfg, positions

    def __len__(self) -> int:
        return self.cfg.max_steps

    def __getitem__(self, step: int) -> list[dict]:
        rows = batch_indices(len(self.corpus.tokens.train), self.cfg.batch_size, step, self.cfg.seed)
        return [self.corpus.rows("train", rows[list(pos)]) for pos in self.positions]


def step_loader(corpus: TrainingData, cfg: Config, positions: list[range], first: int, last: int, pin: bool):
    """Micro-batches of steps first..last-1, prepared by `cfg.num_workers` worker processes."""
    workers = cfg.num_workers if last > first else 0
    return torch.utils.data.DataLoader(
        StepBatches(corpus, cfg, positions), sampler=range(first, last), batch_size=None, num_workers=workers,
        pin_memory=pin, persistent_workers=False, prefetch_factor=4 if workers else None)


def load_corpus_states(cfg: Config, device, env: DistEnv = DistEnv()) -> TrainingData:
    """Token blocks and frozen LM (and cached states); under torchrun rank 0 builds the caches first."""
    device = torch.device(device)
    if not env.is_main:
        barrier(env)
    tokenizer = load_tokenizer(cfg.frozen_lm)
    tokens = build_token_data(cfg, tokenizer, cfg.frozen_lm)
    lm = None
    if cfg.model == "ldlm":
        lm = load_frozen_lm(cfg.frozen_lm, cfg.lm_layer, device, dtype=autocast_dtype(cfg, device) or torch.float32)
    train_h = valid_h = None
    if cfg.cache_hidden and lm is not None:
        train_h = cached_hidden_states(lm, cfg.frozen_lm, tokens.train, tokens.train_len)
        valid_h = cached_hidden_states(lm, cfg.frozen_lm, tokens.valid, tokens.valid_len)
    if env.is_main:
        barrier(env)
    vocab_size = int(lm.model.config.vocab_size) if lm is not None else len(tokenizer)
    return TrainingData(tokens, lm, vocab_size, special_ids(tokenizer)[0], train_h, valid_h)


def autocast_dtype(cfg: Config, device: torch.device) -> torch.dtype | None:
    """bf16 under `precision=bf16`, or `auto` on a GPU; None = full fp32."""
    if cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def keep_freed_memory() -> None:
    """Have glibc keep freed blocks up to 32 MiB in the heap instead of returning them to the OS, so a
    CPU step does not page-fault its activations afresh every time (2-5% of a step); no-op elsewhere."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD (the largest glibc accepts)
    libc.mallopt(-1, 1 << 30)   # M_TRIM_THRESHOLD: keep up to 1 GiB of free heap top


def autocast(cfg: Config, device: torch.device):
    dtype = autocast_dtype(cfg, device)
    return torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()


def build_model(cfg: Config, lm_width: int | None, vocab_size: int, head_vocab: int | None = None) -> LDLM | Baseline:
    """The run's model, untrained: LDLM (`model=ldlm`) or a baseline (`mdlm`, `ar`)."""
    if cfg.model == "ldlm":
        return LDLM(cfg, lm_width, vocab_size, head_vocab)
    return Baseline(cfg, vocab_size, head_vocab)


def init_model(cfg: Config, corpus: TrainingData, device) -> LDLM | Baseline:
    """A fresh model whose token head (and LDLM's state statistics) come from the training split."""
    head_ids = None
    if cfg.corpus_vocab:  # ids seen in training, most frequent first (the adaptive head relies on the order)
        ids, counts = np.unique(corpus.tokens.train, return_counts=True)
        head_ids = torch.as_tensor(ids[np.argsort(-counts, kind="stable")].astype(np.int64))
    lm_width = corpus.lm.width if corpus.lm is not None else None
    model = build_model(cfg, lm_width, corpus.vocab_size, len(head_ids) if head_ids is not None else None)
    if head_ids is not None:
        model.set_vocab(head_ids)
    model = model.to(device)
    if isinstance(model, Baseline):
        model.bos_class.fill_(int(model.to_head[corpus.bos]))
        return model
    rows = np.random.default_rng(cfg.seed).choice(len(corpus.tokens.train), min(256, len(corpus.tokens.train)), replace=False)
    h, _, _ = corpus.batch("train", rows, device)
    model.set_h_stats(h.mean(dim=(0, 1)), h.std(dim=(0, 1)))
    return model


def lr_lambda(cfg: Config):
    """Linear warmup for lr_warmup steps, then cosine decay to lr * lr_min_ratio at max_steps."""
    def factor(step: int) -> float:
        if step < cfg.lr_warmup:
            return (step + 1) / cfg.lr_warmup
        progress = min(1.0, (step - cfg.lr_warmup) / max(1, cfg.max_steps - cfg.lr_warmup))
        return cfg.lr_min_ratio + (1 - cfg.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


def make_optimizer(cfg: Config, model: torch.nn.Module) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only (not on norms, biases, positions, queries); the token
    decoder at `tok_lr` if set (the LR schedule scales every group alike)."""
    groups = {}
    for name, p in model.named_parameters():
        decay = p.ndim >= 2 and not name.endswith(("pos", "queries"))
        lr = cfg.tok_lr if cfg.tok_lr and name.startswith("token_decoder.") else cfg.lr
        groups.setdefault((decay, lr), []).append(p)
    return torch.optim.AdamW([{"params": ps, "weight_decay": cfg.weight_decay if decay else 0.0, "lr": lr}
                              for (decay, lr), ps in groups.items()], lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8)


def ema_decay_at(step: int, decay: float) -> float:
    """The EMA decay of update number step + 1: min(decay, (1 + n) / (10 + n)) with n = step + 1, the
    warm-up of MDLM's (and score_sde's) ExponentialMovingAverage(use_num_updates=True). After n updates
    the initial weights keep a share prod (1 - (1 - d_i)) < 9! / n^9 of the average, so a 150-step run's
    EMA is its own (a fixed 0.995 keeps 47% of the initialisation after 150 steps)."""
    n = step + 1
    return min(decay, (1 + n) / (10 + n))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float, step: int) -> None:
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - ema_decay_at(step, decay))


def batch_indices(n: int, batch: int, step: int, seed: int) -> np.ndarray:
    """Rows of step `step`: epoch-wise permutations seeded by (seed, epoch), so resuming at any step
    sees the same data as an uninterrupted run."""
    per_epoch = max(1, n // batch)
    epoch, pos = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    if n < batch:
        return np.resize(perm, batch)
    return perm[pos * batch:(pos + 1) * batch]


def held_out_chunks(corpus: TrainingData, cfg: Config, batches: int, env: DistEnv) -> list[np.ndarray]:
    """This rank's share of the first `batches * batch_size` held-out rows, in micro-batch-sized chunks."""
    rows = np.arange(len(corpus.tokens.valid))[: batches * cfg.batch_size]
    mine = rows[list(shard(len(rows), env))]
    step = cfg.micro_batch_size or cfg.batch_size
    return [mine[i:i + step] for i in range(0, len(mine), step)]


@torch.no_grad()
def evaluate(model: LDLM, corpus: TrainingData, cfg: Config, device, batches: int, env: DistEnv = DistEnv()) -> dict:
    """Held-out reconstruction token accuracy from clean latents (no decoder noise), and L_h; for a
    baseline its held-out loss (MDLM: NELBO bound, fixed noise per row; GPT: NLL) per token.

    The first `batches * batch_size` held-out rows, sharded over the ranks; counts are summed."""
    if isinstance(model, Baseline):
        return evaluate_baseline(model, corpus, cfg, device, batches, env)
    model.eval()
    totals = torch.zeros(4, dtype=torch.float64, device=device)  # correct, tokens, sum of L_h, rows
    for idx in held_out_chunks(corpus, cfg, batches, env):
        h, tokens, lengths = corpus.batch("valid", idx, device)
        with autocast(cfg, device):
            h_std = model.standardize(h)
            h_hat = model.decode(model.encode(h_std)).float()
            preds = model.hidden_to_tokens(h_hat)
        correct, count = token_matches(preds, tokens, attention_mask(lengths, tokens.shape[1]))
        totals += torch.stack([correct.double(), count.double(), F.mse_loss(h_hat, h_std).double() * len(h),
                               torch.tensor(float(len(h)), device=device)])
    correct, count, loss_h, n = all_reduce_sum(totals, env).tolist()
    return {"recon_acc": correct / max(count, 1), "valid_loss_h": loss_h / max(n, 1), "valid_tokens": int(count)}


@torch.no_grad()
def evaluate_baseline(model: Baseline, corpus: TrainingData, cfg: Config, device, batches: int, env: DistEnv) -> dict:
    model.eval()
    totals = torch.zeros(2, dtype=torch.float64, device=device)  # sum of loss * tokens, tokens
    for idx in held_out_chunks(corpus, cfg, batches, env):
        _, tokens, lengths = corpus.batch("valid", idx, device)
        valid = attention_mask(lengths, tokens.shape[1]).bool()
        with autocast(cfg, device):
            _, _, per_sample = model.loss(tokens, valid, SampleNoise(cfg.seed, EVAL_STREAM, idx, device), cfg.t_min)
        n = valid.sum(1).double()
        totals += torch.stack([(per_sample.double() * n).sum(), n.sum()])
    loss, count = all_reduce_sum(totals, env).tolist()
    return {"valid_loss": loss / max(count, 1), "valid_tokens": int(count)}


class Objective(nn.Module):
    """The model and its training loss as one module, so that DDP sees the whole forward pass."""

    def __init__(self, model: LDLM, cfg: Config):
        super().__init__()
        self.model, self.cfg = model, cfg

    def forward(self, h, tokens, lengths, gamma: float, time_sampler, noise: SampleNoise) -> LossOutput:
        if isinstance(self.model, Baseline):
            return baseline_loss(self.model, tokens, lengths, self.cfg, noise)
        return ldlm_loss(self.model, h, tokens, self.cfg, gamma, time_sampler, noise, lengths)


def train_step(objective: nn.Module, model: LDLM, optimizer, scheduler, ema: LDLM, time_sampler,
               micro_batches: list[tuple], positions: list[range], cfg: Config, step: int, device,
               env: DistEnv = DistEnv()) -> dict:
    """One optimiser step on the global batch: gradient accumulation over this rank's micro-batches
    (DDP averages over ranks on the last one), clipping, AdamW, LR schedule, EMA, and the adaptive
    time sampler's update from every sample of the global batch (gathered in global order)."""
    gamma = warmup_gamma(step, cfg.warmup_steps, cfg.gamma_min, cfg.warmup_k, cfg.warmup_c) if cfg.encoder_warmup else 1.0
    model.train()
    optimizer.zero_grad(set_to_none=True)
    parts, ts, losses = {}, [], []
    for a, ((h, tokens, lengths), pos) in enumerate(zip(micro_batches, positions)):
        last = a == len(micro_batches) - 1
        with (objective.no_sync() if env.enabled and not last else contextlib.nullcontext()):
            with autocast(cfg, device):
                out = objective(h, tokens, lengths, gamma, time_sampler, SampleNoise(cfg.seed, step, pos, device))
            (out.loss / len(micro_batches)).backward()
        for k, v in out.parts.items():
            parts[k] = parts.get(k, 0.0) + v / len(micro_batches)
        ts.append(out.t)
        losses.append(out.diff_per_sample)
    for p in model.parameters():  # a parameter no sample used (an adaptive-softmax tail) steps with zero grad
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    scheduler.step()
    update_ema(ema, model, cfg.ema_decay, step)
    time_sampler.update(all_gather_cat(torch.cat(ts), env).cpu(), all_gather_cat(torch.cat(losses), env).cpu())
    names = sorted(parts)
    means = all_reduce_sum(torch.tensor([parts[k] for k in names], dtype=torch.float64, device=device), env) / env.world
    return dict(zip(names, means.tolist()), grad_norm=float(grad_norm))


class Diverged(RuntimeError):
    """A non-finite training loss: the run stops before a checkpoint could keep the broken weights."""


def check_finite(parts: dict, step: int) -> None:
    bad = {k: parts[k] for k in ("loss", "grad_norm") if not math.isfinite(parts[k])}
    if bad:
        raise Diverged(f"training diverged at step {step}: {', '.join(f'{k}={v}' for k, v in bad.items())}; "
                       f"nothing saved from this step on. Lower lr or check the config")


def train(cfg: Config, out: str | Path, resume: bool = False, progress: bool = True, stop_at: int | None = None) -> dict:
    """Train (or continue) the run in folder `out`; returns the summary dict.

    Runs as one process or under torchrun (DDP; every rank calls this, rank 0 writes and holds the
    folder: runs.claim). `stop_at` ends this call early at that step with a checkpoint (the schedule
    still runs to cfg.max_steps), as if the job had been killed right after saving; `resume=True`
    continues. Inputs that cannot work fail here, before any data or model is loaded."""
    default_device(cfg.device)
    if cfg.model == "ldlm":
        check_positions(cfg.frozen_lm, cfg.seq_len)
    out = Path(out)
    env, _ = distributed.setup(cfg.device)  # the process group first: every rank learns rank 0's refusal
    with runs.claim_ranks(out, cfg.to_dict(), resume, env):
        return _train(cfg, out, resume, progress, stop_at)


def _train(cfg: Config, out: Path, resume: bool, progress: bool, stop_at: int | None) -> dict:
    from tqdm.auto import tqdm

    ckpt_path = out / checkpoint.CKPT_NAME
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    keep_freed_memory()
    env, device = distributed.setup(cfg.device)
    micro, accum = distributed.batch_plan(cfg.batch_size, cfg.micro_batch_size, env.world)
    positions = distributed.micro_positions(cfg.batch_size, micro, accum, env)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    np.random.seed(cfg.seed)

    corpus = load_corpus_states(cfg, device, env)
    model = init_model(cfg, corpus, device)
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = make_optimizer(cfg, model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    time_sampler = make_time_sampler(cfg)
    step, elapsed = 0, 0.0

    if resume and ckpt_path.exists():
        state = checkpoint.load(ckpt_path)
        checkpoint.load_module(model, state["model"], "model")
        checkpoint.load_module(ema, state["ema"], "EMA model")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        time_sampler.load_state_dict(state["time_sampler"])
        step, elapsed = state["step"], state.get("elapsed", 0.0)
        # drop log lines written after the checkpoint: the resumed run writes them again
        if env.is_main and (out / "metrics.jsonl").exists():
            write_jsonl(out / "metrics.jsonl", [r for r in read_jsonl(out / "metrics.jsonl") if r["step"] <= step])
    if env.is_main:  # config.json first (it makes the folder a run); on a resume too, with a changed max_steps
        runs.record_config(out, cfg.to_dict())
        write_json(out / "data.json", corpus.tokens.stats)
    barrier(env)

    objective = Objective(model, cfg)
    if cfg.compile:  # in place: state_dict keys stay as they are
        for module in ([model.net] if isinstance(model, Baseline) else [model.encoder, model.dit, model.decoder, model.token_decoder]):
            module.compile()
    if env.enabled:  # adaptive-softmax tails may go unused in a micro-batch
        objective = DDP(objective, device_ids=[device] if device.type == "cuda" else None,
                        find_unused_parameters=cfg.adaptive_head)

    def save_checkpoint():
        if env.is_main:
            checkpoint.save(ckpt_path, config=cfg.to_dict(), step=step, elapsed=elapsed, model=model.state_dict(),
                            ema=ema.state_dict(), optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                            time_sampler=time_sampler.state_dict(), rng=checkpoint.rng_state(),
                            lm_width=corpus.lm.width if corpus.lm is not None else None,
                            vocab_size=len(model.to_head), head_vocab=len(model.head_ids))
        barrier(env)

    log = open(out / "metrics.jsonl", "a") if env.is_main else None
    def write_log(row: dict):
        if log:
            log.write(dumps(row) + "\n")
            log.flush()

    tokens_per_step = cfg.batch_size * cfg.seq_len
    last = min(cfg.max_steps, stop_at) if stop_at is not None else cfg.max_steps
    loader = step_loader(corpus, cfg, positions, step, last, pin=device.type == "cuda")
    bar = tqdm(total=cfg.max_steps, initial=step, desc="train", disable=not (progress and env.is_main), dynamic_ncols=True)
    window_t, window_steps = time.perf_counter(), 0
    for rows in loader:
        t0 = time.perf_counter()
        micro_batches = [corpus.to_device(r, device) for r in rows]
        parts = train_step(objective, model, optimizer, scheduler, ema, time_sampler, micro_batches, positions,
                           cfg, step, device, env)
        check_finite(parts, step + 1)
        step += 1
        elapsed += time.perf_counter() - t0
        window_steps += 1
        bar.update(1)

        if step % cfg.log_every == 0 or step == cfg.max_steps:
            now = time.perf_counter()
            row = dict(step=step, **parts, lr=scheduler.get_last_lr()[0],
                       tokens_per_s=window_steps * tokens_per_step / (now - window_t), **time_sampler.summary())
            write_log(row)
            bar.set_postfix({k: f"{row[k]:.3f}" for k in ("loss", "loss_diff", "train_tok_acc") if k in row})
            window_t, window_steps = time.perf_counter(), 0
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            metrics = evaluate(ema, corpus, cfg, device, cfg.eval_batches, env)
            write_log(dict(step=step, **{f"ema_{k}": v for k, v in metrics.items()}))
            window_t = time.perf_counter()  # evaluation time is not training throughput
        if step % cfg.ckpt_every == 0 or step == last:
            save_checkpoint()
            window_t = time.perf_counter()
    bar.close()
    if log:
        log.close()
    if not ckpt_path.exists():  # max_steps == 0
        save_checkpoint()

    final = evaluate(ema, corpus, cfg, device, batches=len(corpus.tokens.valid) // cfg.batch_size + 1, env=env)
    summary = dict(step=step, train_seconds=elapsed, train_tokens=step * tokens_per_step,
                   train_tokens_per_s=step * tokens_per_step / max(elapsed, 1e-9), processes=env.world,
                   micro_batch_size=micro, grad_accum=accum, precision="bf16" if autocast_dtype(cfg, device) else "fp32",
                   **{f"ema_{k}": v for k, v in final.items()})
    if env.is_main:
        write_json(out / "summary.json", summary)
    barrier(env)
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ldlm.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default=None, help="smoke | tiny | lm1b | owt (default tiny)")
    parser.add_argument("--config", default=None, help="a resolved config JSON (as a run's config.json) instead of --preset")
    parser.add_argument("--dataset", default=None, help="wiki | news | openwebtext | lm1b | text:PATH | jsonl:PATH")
    parser.add_argument("--variant", default=None, help="full | naive | no_mse | no_warmup | no_adaptive | no_decoder_noise")
    parser.add_argument("--out", required=True, help="run folder")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("overrides", nargs="*", help="config key=value pairs (see ldlm/config.py)")
    args = parser.parse_args(argv)
    try:
        given = {k: v for k, v in (("dataset", args.dataset), ("variant", args.variant)) if v is not None}
        saved = runs.resumed_config(Path(args.out)) if args.resume else None
        if args.config:
            try:
                values = json.loads(Path(args.config).read_text())
            except (OSError, json.JSONDecodeError) as err:
                raise ConfigError(f"--config {args.config}: not a readable JSON config ({err})") from None
            if args.variant is not None and args.variant != values.get("variant"):
                # a resolved config carries the recipe switches themselves; a new label would not change them
                raise ConfigError(f"--variant {args.variant} with --config {args.config} (variant "
                                  f"{values.get('variant')!r}): the config fixes the recipe switches. Use "
                                  f"--preset {values.get('preset', 'tiny')} --variant {args.variant}, or edit the config")
            cfg = config_from_dict({**values, **given, **parse_overrides(args.overrides)})
            if saved:  # every key of the file is given: all are checked
                runs.check_resume(saved, cfg.to_dict())
        elif saved:
            asked = make_config(args.preset or saved["preset"], args.overrides, **given)  # validates keys and types
            explicit = [*given, *(o.split("=", 1)[0].strip() for o in args.overrides)] + (["preset"] if args.preset else [])
            runs.check_resume(saved, {k: getattr(asked, k) for k in explicit})
            cfg = config_from_dict({**saved, **{k: getattr(asked, k) for k in explicit}})
        else:
            cfg = make_config(args.preset or "tiny", args.overrides, **given)
        summary = train(cfg, args.out, resume=args.resume, progress=not args.no_progress)
    except (ConfigError, DataError, ModelUnavailable, checkpoint.CheckpointError, runs.RunFolderError, PathError,
            Diverged) as err:
        # one write, not print's two: torchrun's ranks share stderr, and unbuffered (PYTHONUNBUFFERED) lines interleave
        sys.stderr.write(f"error: {err}\n")
        return 2
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
