"""The compute precision of a run: bf16 autocast on GPUs (precision=auto or bf16), float32 otherwise.

Training, held-out evaluation, sampling and the benchmarks all use this one rule, so a run is sampled
and timed in the precision it was trained in.
"""
from __future__ import annotations

import contextlib

import torch


def autocast_dtype(cfg, device: torch.device) -> torch.dtype | None:
    """bf16 under `precision=bf16`, or `auto` on a GPU; None = full fp32."""
    if cfg.precision == "bf16" or (cfg.precision == "auto" and torch.device(device).type == "cuda"):
        return torch.bfloat16
    return None


def autocast(cfg, device: torch.device):
    """The run's autocast region (a no-op in fp32)."""
    dtype = autocast_dtype(cfg, device)
    return torch.autocast(torch.device(device).type, dtype=dtype) if dtype else contextlib.nullcontext()


def compute_dtype(cfg, device: torch.device) -> str:
    """The dtype the run's matmuls use, as torch names it: bfloat16 or float32."""
    return str(autocast_dtype(cfg, device) or torch.float32).removeprefix("torch.")
