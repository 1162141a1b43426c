"""Same-budget baselines for the LDLM comparison: MDLM (masked diffusion, `mdlm.py`) and a GPT (`ar.py`).

Both are pure model / loss / sampler code; `size.py` matches their backbones to the LDLM DiT's.
`sample_categorical` is shared by both samplers.
"""
from __future__ import annotations

import torch


def sample_categorical(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw per row of probs [..., K]: Gumbel-max, argmax_k p_k / E_k with E_k ~ Exp(1).

    Computed in the dtype of `probs` (pass float64): in float32 the Gumbel noise is truncated, which
    silently lowers the sampling temperature (Zheng et al. 2024, on MDLM's float32 sampler). The noise
    is drawn on the generator's device, so a CPU generator gives the same tokens on any device.
    """
    device = generator.device if generator is not None else probs.device
    e = torch.empty(probs.shape, dtype=probs.dtype, device=device).exponential_(generator=generator)
    return (probs / e.to(probs.device)).argmax(-1)
