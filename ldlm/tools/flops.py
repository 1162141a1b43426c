"""FLOPs per training token of a whole run, for the MFU that `bench` (results/speed.csv) and `gpu_check`
(results/gpu_check.csv) report: each kind's `forward_flops` (ldlm.kinds.registry) (counted by ldlm.nets.flops, whose docstring
says what is counted), the frozen LM's forward where a run runs it every step, forward + backward.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..kinds.build import build_model
from ..kinds.registry import kind
from ..text.frozen_lm import FrozenLM, lm_config, max_positions


def frozen_lm_forward(lm: dict, n: int) -> int:
    """Forward FLOPs of the frozen LM as run (`frozen_lm_shape`: params, layers, width)."""
    return 2 * lm["params"] * n + 4 * lm["width"] * lm["layers"] * n * n


def frozen_lm_shape(name: str, layer: int) -> dict:
    """Parameters (embeddings excluded), blocks, width and maximum positions of the frozen LM as run
    (cut after hidden_states[layer]); built on the meta device from its config, no weights loaded."""
    from transformers import AutoModel

    config = lm_config(name)
    with torch.device("meta"):
        lm = FrozenLM(AutoModel.from_config(config), layer)
    embeddings = sum(p.numel() for m in lm.modules() if isinstance(m, nn.Embedding) for p in m.parameters())
    return dict(params=sum(p.numel() for p in lm.parameters()) - embeddings, layers=lm.index, width=lm.width,
                max_positions=max_positions(config))


def head_targets(cfg, tokens) -> np.ndarray | None:
    """What `training_flops` needs of the training split (a data.TokenData): nothing for a linear head;
    for an adaptive one, its targets, from at most 2^22 positions of evenly spaced rows (the whole split
    at the tiny presets), so that a FLOP count never reads a billion-token split."""
    return tokens.train_targets(max_tokens=1 << 22) if cfg.adaptive_head else None


def training_flops(model, lm: dict | None = None, targets=None) -> dict:
    """FLOPs per training token of `model` (any kind), and its parts; `lm` is the frozen LM's shape,
    needed only by a kind that runs it every step (uses_frozen_lm without cache_hidden); `targets` (the
    training split's tokenizer ids, `head_targets`) only by an adaptive token head."""
    cfg, T = model.cfg, model.cfg.seq_len
    classes = None if targets is None else model.to_head.cpu()[torch.from_numpy(np.asarray(targets, dtype=np.int64))]
    parts = kind(cfg.model).forward_flops(model, classes)
    frozen = 0
    if model.uses_frozen_lm and not cfg.cache_hidden:
        if lm is None:
            raise ValueError("training_flops: this config runs the frozen LM every step; pass its shape (lm=...)")
        frozen = frozen_lm_forward(lm, T)
    trainable, no_grad = 3 * parts["grad"], parts.get("no_grad", 0)
    return dict(total=(trainable + no_grad + frozen) / T, trainable=trainable / T, self_cond=no_grad / T,
                frozen_lm=frozen / T, params_trainable=sum(p.numel() for p in model.parameters() if p.requires_grad))


def meta_model(cfg, vocab_size: int, head_vocab: int | None = None, lm_width: int | None = None):
    """The model of cfg on the meta device (shapes only, nothing allocated): what training_flops needs."""
    with torch.device("meta"):
        return build_model(cfg, vocab_size, head_vocab, lm_width)
