"""One optimisation step and what it needs: AdamW parameter groups, the LR schedule, the EMA of the
weights, the divergence check.

`train_step` works on any model kind through the protocol (ldlm.kinds.protocol): gradient accumulation over
this rank's micro-batches, clipping, AdamW, LR schedule, EMA, and the model's `observe` of every
sample of the global batch (gathered in global order, so N processes equal one).
"""
from __future__ import annotations

import contextlib
import ctypes
import math
from dataclasses import dataclass

import torch
from torch import nn

from ..nets.noise import SampleNoise
from ..runtime.distributed import DistEnv, all_gather_cat, all_reduce_sum
from ..runtime.precision import autocast


class Objective(nn.Module):
    """The model's training loss as one module's forward pass, the thing DDP wraps."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, h, tokens, lengths, noise: SampleNoise, step: int):
        return self.model.loss(h, tokens, lengths, noise, step)


def lr_lambda(cfg):
    """Linear warmup for lr_warmup steps, then cosine decay to lr * lr_min_ratio at max_steps."""
    def factor(step: int) -> float:
        if step < cfg.lr_warmup:
            return (step + 1) / cfg.lr_warmup
        progress = min(1.0, (step - cfg.lr_warmup) / max(1, cfg.max_steps - cfg.lr_warmup))
        return cfg.lr_min_ratio + (1 - cfg.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


def make_optimizer(cfg, model: nn.Module) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only (not on norms, biases, positions, queries); the token
    decoder at `tok_lr` if set (the LR schedule scales every group alike). Fused (one kernel over all
    parameters, on CPU as on GPUs): 1-4% of a tiny CPU step faster than the per-parameter loop."""
    groups = {}
    for name, p in model.named_parameters():
        decay = p.ndim >= 2 and not name.endswith(("pos", "queries"))
        lr = cfg.tok_lr if cfg.tok_lr and name.startswith("token_decoder.") else cfg.lr
        groups.setdefault((decay, lr), []).append(p)
    return torch.optim.AdamW([{"params": ps, "weight_decay": cfg.weight_decay if decay else 0.0, "lr": lr}
                              for (decay, lr), ps in groups.items()], lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8,
                             fused=True)


def ema_decay_at(step: int, decay: float) -> float:
    """The EMA decay of update number step + 1: min(decay, (1 + n) / (10 + n)) with n = step + 1, the
    warm-up of MDLM's (and score_sde's) ExponentialMovingAverage(use_num_updates=True). After n updates
    the initial weights keep a share prod (1 - (1 - d_i)) < 9! / n^9 of the average, so a 150-step run's
    EMA is its own (a fixed 0.995 keeps 47% of the initialisation after 150 steps)."""
    n = step + 1
    return min(decay, (1 + n) / (10 + n))


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float, step: int) -> None:
    """The EMA of the weights and of the float buffers (a latent norm's running statistics follow the
    weights they describe; constant buffers such as the state statistics stay exactly as they are)."""
    weight = 1 - ema_decay_at(step, decay)
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), weight)
    buffers = [(e, m) for e, m in zip(ema.buffers(), model.buffers()) if e.is_floating_point()]
    if buffers:
        torch._foreach_lerp_(*map(list, zip(*buffers)), weight)


def keep_freed_memory() -> None:
    """Have glibc keep freed blocks up to 32 MiB in the heap instead of returning them to the OS, so a
    CPU step does not page-fault its activations afresh every time (2-5% of a step); no-op elsewhere."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD (the largest glibc accepts)
    libc.mallopt(-1, 1 << 30)   # M_TRIM_THRESHOLD: keep up to 1 GiB of free heap top


@dataclass(frozen=True)
class TrainState:
    """What a training step advances, and a checkpoint keeps: the weights, their EMA, AdamW and its LR schedule."""
    model: nn.Module
    ema: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler


def train_step(objective: nn.Module, state: TrainState, micro_batches: list[tuple], positions: list[range], cfg,
               step: int, device, env: DistEnv = DistEnv()) -> dict:
    """One optimiser step of `state` on the global batch (`objective`: state.model's loss, DDP-wrapped under
    torchrun, which averages over ranks on the last micro-batch); returns the log's loss parts (averaged over
    ranks) and the gradient norm."""
    model, optimizer = state.model, state.optimizer
    model.train()
    optimizer.zero_grad(set_to_none=True)
    parts, ts, losses = {}, [], []
    for a, ((h, tokens, lengths), pos) in enumerate(zip(micro_batches, positions)):
        last = a == len(micro_batches) - 1
        with (objective.no_sync() if env.enabled and not last else contextlib.nullcontext()):
            with autocast(cfg, device):
                out = objective(h, tokens, lengths, SampleNoise(cfg.seed, step, pos, device), step)
            (out.loss / len(micro_batches)).backward()
        for k, v in out.parts.items():
            parts[k] = parts.get(k, 0.0) + v / len(micro_batches)
        if out.t is not None:
            ts.append(out.t)
            losses.append(out.per_sample)
    for p in model.parameters():  # a parameter no sample used (an adaptive-softmax tail) steps with zero grad
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    state.scheduler.step()
    update_ema(state.ema, model, cfg.ema_decay, step)
    if ts:
        model.observe(all_gather_cat(torch.cat(ts), env), all_gather_cat(torch.cat(losses), env))
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
