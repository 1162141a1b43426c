"""Model FLOPs of one training token, for every model kind: the numerator of the MFU that `bench`
(results/speed.csv) and `gpu_check` (results/gpu_check.csv) report.

Counted per sequence from module shapes, then divided by seq_len:

    F = 3 x (forward FLOPs of the trainable modules)     forward + backward (2x) of each matmul
      + (forward FLOPs without gradient)                 LDLM's self-conditioning DiT pass, prob. p_sc
      + (frozen LM forward)                              LDLM without cache_hidden: blocks up to lm_layer

A matmul costs 2 FLOPs per weight and position; attention 4 x width x queries x keys (QK^T and AV,
counted whole for causal masks, as PaLM does). A token head counts what it runs (`head_forward`): a
linear head all its weights, an adaptive softmax its shortlist on every position and each tail
cluster on the share of the training targets that falls in it. Not counted: norms, biases, embedding
lookups and positional tables (no matmul). Layers that run once per sequence (the DiT's time MLP and
adaLN) are counted once per sequence, not per token: a plain 6 x parameters would overstate the DiT
by a third.
Each kind says what it runs in its record's `forward_flops` (ldlm.kinds.registry); `tests/test_flops.py` checks the
count against torch.utils.flop_counter on one real training loss + backward of each kind.
"""
from __future__ import annotations

import torch
from torch import nn


def linear_weights(module: nn.Module) -> int:
    """Weights of the nn.Linear layers inside `module` (each costs 2 FLOPs per weight and position)."""
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, nn.Linear))


def perceiver_forward(p, n_inputs: int, n_queries: int) -> int:
    """Forward FLOPs per sequence of a models.Perceiver: its queries attend to [inputs; latents]."""
    flops = 2 * linear_weights(p.in_proj) * n_inputs + 2 * linear_weights(p.out_proj) * n_queries
    for block in p.blocks:
        context = n_inputs + n_queries
        flops += 2 * (linear_weights(block.attn.q) + linear_weights(block.attn.out) + linear_weights(block.mlp)) * n_queries
        flops += 2 * linear_weights(block.attn.kv) * context
        flops += 4 * block.attn.q.out_features * n_queries * context  # QK^T and AV
    return flops


def tail_shares(head: nn.AdaptiveLogSoftmaxWithLoss, classes: torch.Tensor) -> list[float]:
    """The share of `classes` (head class indices of training targets) in each tail cluster of `head`."""
    edges = torch.as_tensor(head.cutoffs, device=classes.device)  # [shortlist, ..., n_classes]
    cluster = torch.bucketize(classes.flatten(), edges, right=True)  # 0 = shortlist, i = tail i
    counts = torch.bincount(cluster, minlength=len(edges)).double()
    return (counts[1:len(edges)] / counts.sum()).tolist()


def head_forward(head: nn.Module, classes: torch.Tensor | None) -> float:
    """Forward FLOPs per position of a token head as it runs. An adaptive softmax (frequency-ordered
    classes) runs its shortlist head everywhere and tail i only where the target is in cluster i, so it
    needs `classes`, the head classes of the training tokens. Counted whole, it overstated the tiny
    models' FLOPs by a quarter (LDLM) to nearly a half (the GPT)."""
    if not isinstance(head, nn.AdaptiveLogSoftmaxWithLoss):
        return 2 * linear_weights(head)
    if classes is None:
        raise ValueError("an adaptive head's FLOPs depend on its targets: pass the training tokens "
                         "(training_flops(..., targets=head_targets(cfg, tokens)))")
    return 2 * (linear_weights(head.head) + sum(s * linear_weights(t) for s, t in zip(tail_shares(head, classes), head.tail)))


def blocks_forward(blocks, width: int, n: int) -> int:
    """Forward FLOPs per sequence of n positions through self-attention blocks (adaLN layers excluded)."""
    return sum(2 * (linear_weights(b.attn) + linear_weights(b.mlp)) * n for b in blocks) + 4 * width * n * n * len(blocks)


def backbone_forward(net, n: int) -> int:
    """Forward FLOPs of a models.AdaLNBackbone's trunk on n positions: its blocks per position, its time
    MLP and adaLN layers once per sequence."""
    per_sequence = 2 * (linear_weights(net.time) + linear_weights(net.ada_out) + sum(linear_weights(b.ada) for b in net.blocks))
    return blocks_forward(net.blocks, net.pos.shape[1], n) + per_sequence
