"""Per-sample random draws that do not depend on how a global batch is split.

Sample `i` of the global batch at training step `s` draws all its noise (diffusion time, decoder
noise, diffusion noise, masks) from its own generator seeded by (seed, s, i). One process, N
processes under torchrun and any gradient accumulation therefore see the same noise for the same
global batch, which is what makes a 2-process run reproduce a 1-process run. Draws shared by the
whole step (the self-conditioning coin) come from a generator seeded by (seed, s) on every rank.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def seed_for(*key: int) -> int:
    """A 64-bit seed from a tuple of ints (NumPy SeedSequence: well-mixed, no collisions in practice)."""
    return int(np.random.SeedSequence(list(key)).generate_state(1, dtype=np.uint64)[0])


class SampleNoise:
    """Generators for the global-batch positions `positions` of step `step`.

    Every method draws the same shape for each sample (in order) and stacks: [len(positions), *shape].
    The order of calls is part of the stream, so a loss must draw in a fixed order.
    """

    def __init__(self, seed: int, step: int, positions: Sequence[int], device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.positions = [int(p) for p in positions]
        self.generators = [torch.Generator(self.device).manual_seed(seed_for(seed, step, int(p))) for p in positions]
        self.step_rng = np.random.default_rng([seed, step])

    def uniform(self, *shape: int, dtype=torch.float32) -> torch.Tensor:
        """U[0, 1) draws, [B, *shape]."""
        return torch.stack([torch.rand(shape, generator=g, device=self.device, dtype=dtype) for g in self.generators])

    def stratified(self, strata: int, dtype=torch.float64) -> torch.Tensor:
        """U[0, 1) draws, [B], one per stratum: position p draws (p mod strata + u_p) / strata, so a
        global batch of `strata` samples covers every 1/strata interval once (MDLM's antithetic t,
        taken over the global batch rather than one process's share)."""
        k = torch.tensor([p % strata for p in self.positions], dtype=dtype, device=self.device)
        return (k + self.uniform(dtype=dtype)) / strata

    def normal(self, *shape: int, dtype=torch.float32) -> torch.Tensor:
        """N(0, 1) draws, [B, *shape]."""
        return torch.stack([torch.randn(shape, generator=g, device=self.device, dtype=dtype) for g in self.generators])

    def coin(self, p: float) -> bool:
        """One Bernoulli(p) draw shared by the whole step (identical on every rank)."""
        return bool(self.step_rng.random() < p)
