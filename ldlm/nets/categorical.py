"""Same-budget baselines for the LDLM comparison: MDLM (masked diffusion, `mdlm.py`) and a GPT (`ar.py`).

Both are pure model / loss / sampler code; `size.py` matches their backbones to the LDLM DiT's.
`tempered` and `sample_categorical` are shared by both samplers; LDLM's token decoder draws with
`sample_inverse_cdf`.
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


def tempered(logits: torch.Tensor, temperature: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """softmax(logits / temperature) over the last dim, in `dtype` (logits or log-probabilities; T > 0)."""
    return (logits.to(dtype) / temperature).softmax(-1)


def sample_inverse_cdf(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw per row of probs [..., K], the distribution of sample_categorical from one uniform per row
    instead of K exponentials: the first class whose cumulative probability exceeds u * total, in the
    dtype of `probs` (pass float64). For vocabulary-wide draws at every position (LDLM's token decoder:
    32 samples of 64 tokens over 21k classes) the Gumbel noise cost 1.5 s on a CPU thread, this 0.2 s.
    The uniforms are drawn on the generator's device, as sample_categorical's noise."""
    device = generator.device if generator is not None else probs.device
    u = torch.rand((*probs.shape[:-1], 1), dtype=probs.dtype, device=device, generator=generator).to(probs.device)
    cdf = probs.cumsum(-1)
    return torch.searchsorted(cdf, u * cdf[..., -1:], right=True).squeeze(-1).clamp(max=probs.shape[-1] - 1)
