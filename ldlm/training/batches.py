"""The training data of a run: token blocks, the frozen LM (and its cached states), and the batches of
every step.

`load_training_data` builds it from a config (under torchrun rank 0 builds the caches first);
`step_loader` yields each step's micro-batches, prepared in worker processes; `batch_indices` fixes the
rows of every step by (seed, epoch), so a resumed run sees the data an uninterrupted one would.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..runtime.distributed import DistEnv, barrier, shard
from ..runtime.precision import autocast_dtype
from ..text.data import TokenData, build_token_data, check_token_ids, special_ids
from ..text.frozen_lm import FrozenLM, attention_mask, cached_hidden_states, load_frozen_lm, load_tokenizer


@dataclass
class TrainingData:
    """Token blocks and (optionally cached) frozen-LM states for both splits."""
    tokens: TokenData
    lm: FrozenLM | None  # None for models that read tokens only (the baselines)
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

    def to_device(self, rows: dict, device) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """(h [B, T, W] float32 or None, tokens [B, T], lengths [B]) on `device`; runs the frozen LM if not cached."""
        check_token_ids(rows["tokens"], self.vocab_size, f"token cache {self.tokens.folder}")  # on the CPU: no sync
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

    def batch(self, split: str, idx: np.ndarray, device) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        return self.to_device(self.rows(split, idx), device)


def load_training_data(cfg, device, env: DistEnv = DistEnv()) -> TrainingData:
    """Token blocks, and the frozen LM (and its cached states) when the run's model reads them; under
    torchrun rank 0 builds the caches while the other ranks wait."""
    from ..kinds.build import model_class

    device = torch.device(device)
    if not env.is_main:
        barrier(env)
    tokenizer = load_tokenizer(cfg.frozen_lm)
    tokens = build_token_data(cfg, tokenizer, cfg.frozen_lm)
    lm = None
    if model_class(cfg.model).uses_frozen_lm:
        lm = load_frozen_lm(cfg.frozen_lm, cfg.lm_layer, device, dtype=autocast_dtype(cfg, device) or torch.float32)
    train_h = valid_h = None
    if cfg.cache_hidden and lm is not None:
        train_h = cached_hidden_states(lm, cfg.frozen_lm, tokens.train, tokens.train_len)
        valid_h = cached_hidden_states(lm, cfg.frozen_lm, tokens.valid, tokens.valid_len)
    if env.is_main:
        barrier(env)
    vocab_size = int(lm.model.config.vocab_size) if lm is not None else len(tokenizer)
    return TrainingData(tokens, lm, vocab_size, special_ids(tokenizer)[0], train_h, valid_h)


def batch_indices(n: int, batch: int, step: int, seed: int) -> np.ndarray:
    """Rows of step `step`: epoch-wise permutations seeded by (seed, epoch), so resuming at any step
    sees the same data as an uninterrupted run."""
    per_epoch = max(1, n // batch)
    epoch, pos = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    if n < batch:
        return np.resize(perm, batch)
    return perm[pos * batch:(pos + 1) * batch]


class StepBatches(torch.utils.data.Dataset):
    """Item `step` = this rank's micro-batches of training step `step` (a DataLoader runs it in workers)."""

    def __init__(self, data: TrainingData, cfg, positions: list[range]):
        self.data, self.cfg, self.positions = data, cfg, positions

    def __len__(self) -> int:
        return self.cfg.max_steps

    def __getitem__(self, step: int) -> list[dict]:
        rows = batch_indices(len(self.data.tokens.train), self.cfg.batch_size, step, self.cfg.seed)
        return [self.data.rows("train", rows[list(pos)]) for pos in self.positions]


def step_loader(data: TrainingData, cfg, positions: list[range], first: int, last: int, pin: bool):
    """Micro-batches of steps first..last-1, prepared by `cfg.num_workers` worker processes."""
    workers = cfg.num_workers if last > first else 0
    return torch.utils.data.DataLoader(
        StepBatches(data, cfg, positions), sampler=range(first, last), batch_size=None, num_workers=workers,
        pin_memory=pin, persistent_workers=False, prefetch_factor=4 if workers else None)


def held_out_chunks(data: TrainingData, cfg, batches: int, env: DistEnv) -> list[np.ndarray]:
    """This rank's share of the first `batches * batch_size` held-out rows, in micro-batch-sized chunks."""
    rows = np.arange(len(data.tokens.valid))[: batches * cfg.batch_size]
    mine = rows[list(shard(len(rows), env))]
    step = cfg.micro_batch_size or cfg.batch_size
    return [mine[i:i + step] for i in range(0, len(mine), step)]
