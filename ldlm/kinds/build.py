"""Model kinds by name, and runs built or loaded from a config or a run folder.

    model_class(name)                     the class of kind `name` (ldlm.kinds.registry.KINDS)
    build_model(cfg, vocab_size, ...)     an untrained model of cfg.model
    init_model(cfg, data, device)         ... with its head and statistics from the training split
    load_run(run)                         (model with the run's EMA weights, config) from a run folder
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..runtime import checkpoint
from .protocol import TextModel
from .registry import kind


def model_class(name: str) -> type[TextModel]:
    """The class of kind `name`; a ConfigError naming it and the kinds otherwise."""
    return kind(name).model


def build_model(cfg, vocab_size: int, head_vocab: int | None = None, lm_width: int | None = None) -> TextModel:
    """The run's model, untrained."""
    return model_class(cfg.model)(cfg, vocab_size, head_vocab, lm_width)


def init_model(cfg, data, device) -> TextModel:
    """A fresh model whose token head (and what `prepare` takes) come from the training split."""
    head_ids = None
    if cfg.corpus_vocab:  # ids seen in training, most frequent first (the adaptive head relies on the order)
        ids, counts = np.unique(data.tokens.train, return_counts=True)
        head_ids = torch.as_tensor(ids[np.argsort(-counts, kind="stable")].astype(np.int64))
    lm_width = data.lm.width if data.lm is not None else None
    model = build_model(cfg, data.vocab_size, len(head_ids) if head_ids is not None else None, lm_width)
    if head_ids is not None:
        model.set_vocab(head_ids)
    model = model.to(device)
    model.prepare(data, device)
    return model


def load_run(run: str | Path, device="cpu", weights: str = "ema") -> tuple[TextModel, object]:
    """(model with the run's EMA (or raw) weights, its config) from a run folder or checkpoint file."""
    state = checkpoint.load(run, tuple(dict.fromkeys((*checkpoint.READ_KEYS, weights))))
    cfg = checkpoint.load_config(state)
    model = build_model(cfg, state["vocab_size"], state["head_vocab"], state["lm_width"])
    checkpoint.load_module(model, state[weights], f"{weights} weights")
    return model.to(device).eval(), cfg
