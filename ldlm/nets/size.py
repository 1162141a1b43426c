"""Size matching: the baselines' backbones have the LDLM DiT backbone's parameter count (within ±10%).

The rule: a model's backbone is its transformer blocks (`.blocks`). Token embeddings, positions, the
time MLP, input projections, the final norm / adaLN and the output head are excluded: they scale with
the vocabulary or the latent size rather than with the model's per-token compute.
"""
from __future__ import annotations

import torch
from torch import nn

from .ar import Block
from .layers import DiTBlock


def backbone_parameters(module: nn.Module) -> int:
    """Parameters of `module.blocks` (or of `module` itself, e.g. `DiT(...).blocks`)."""
    return sum(p.numel() for p in getattr(module, "blocks", module).parameters())


def ar_layers_for(dit_layers: int, width: int, heads: int, mlp_ratio: int = 4) -> int:
    """GPT depth whose block parameters are closest to `dit_layers` DiT blocks of the same width.

    A DiT block is ~18 w^2 (4 attention + 8 FFN + 6 adaLN), a plain block ~12 w^2: ~1.5x the layers.
    """
    with torch.device("meta"):
        dit, gpt = DiTBlock(width, heads, mlp_ratio), Block(width, heads, mlp_ratio)
    return max(1, round(dit_layers * backbone_parameters(dit) / backbone_parameters(gpt)))
