"""GPT-style autoregressive baseline (Radford et al. 2019; nanoGPT layout) with a KV cache.

Token embedding + learned positions, pre-LN causal blocks (`models.TransformerBlock` with causal,
cacheable attention), final LayerNorm, linear head tied to the token embedding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .categorical import sample_categorical, tempered
from .layers import Attention, TransformerBlock, head_logits, head_nll, vocab_head


class KVCache:
    """Keys and values of the tokens seen so far: per layer a [B, H, max_len, D] buffer pair, filled up
    to `pos`. Buffers are allocated at the first write, in the dtype k and v have there (autocast)."""

    def __init__(self, layers: int, max_len: int):
        self.buffers: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * layers
        self.max_len, self.pos = max_len, 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v [B, H, T, D] at positions pos..pos+T; return all keys and values so far."""
        if self.buffers[layer] is None:
            shape = (*k.shape[:2], self.max_len, k.shape[-1])
            self.buffers[layer] = (k.new_empty(shape), v.new_empty(shape))
        kb, vb = self.buffers[layer]
        end = self.pos + k.shape[2]
        kb[:, :, self.pos:end], vb[:, :, self.pos:end] = k, v
        return kb[:, :, :end], vb[:, :, :end]


class CausalAttention(Attention):
    """`models.Attention` (same projections, qk-norm) as causal self-attention with an optional KV cache."""

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        split = lambda t: t.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # B T (H D) -> B H T D
        q = self.q_norm(split(self.q(x)))
        k, v = (split(t) for t in self.kv(x).chunk(2, dim=-1))
        k, past = self.k_norm(k), 0
        if cache is not None:
            past = cache.pos
            k, v = cache.update(layer, k, v)
        T, mask = q.shape[2], None
        if past and T > 1:  # a chunk after cached tokens: query i sees keys j <= past + i
            mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(past)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=not past and T > 1,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).flatten(-2))


class Block(TransformerBlock):
    """`models.TransformerBlock` (pre-LN) with causal attention: the same parameters, ~12 w^2."""

    def __init__(self, width: int, heads: int, mlp_ratio: int = 4, dropout: float = 0.0):
        super().__init__(width, heads, mlp_ratio, dropout)
        self.attn = CausalAttention(width, heads, dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), cache, layer)
        return x + self.mlp(self.norm2(x))


class GPT(nn.Module):
    """tokens [B, T] -> next-token logits [B, T, vocab_size]. With a cache, T new tokens follow cache.pos."""

    def __init__(self, vocab_size: int, seq_len: int, width: int, layers: int, heads: int,
                 mlp_ratio: int = 4, dropout: float = 0.0, adaptive_head: bool = False):
        super().__init__()
        self.seq_len = seq_len
        self.embed = nn.Embedding(vocab_size, width)
        self.pos = nn.Parameter(torch.randn(seq_len, width) * 0.02)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        if adaptive_head:  # the same head kind as LDLM's token decoder (no tying: the clusters are projections)
            self.head = vocab_head(width, vocab_size, adaptive=True)
        else:
            self.head = nn.Linear(width, vocab_size, bias=False)
            self.head.weight = self.embed.weight  # weight tying (GPT-2): fewer parameters, same backbone
        nn.init.normal_(self.embed.weight, std=0.02)  # tied: N(0, 1) would start with large logits

    def new_cache(self) -> KVCache:
        return KVCache(len(self.blocks), self.seq_len)

    def features(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        start = cache.pos if cache is not None else 0
        x = self.drop(self.embed(idx) + self.pos[start:start + idx.shape[1]])
        for i, block in enumerate(self.blocks):
            x = block(x, cache, i)
        if cache is not None:
            cache.pos += idx.shape[1]
        return self.norm(x)

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        return head_logits(self.head, self.features(idx, cache))


def ar_loss(model: GPT, tokens: torch.Tensor, valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token cross-entropy, -log p(x_{i+1} | x_{<=i}), mean over valid targets.

    tokens [B, T]; valid [B, T] bool marks real tokens (None: all); targets are tokens[:, 1:], so
    valid[:, 1:] selects them. Returns (loss, per-sample mean CE [B], detached).
    """
    features = model.features(tokens[:, :-1])
    ce = head_nll(model.head, features.flatten(0, 1), tokens[:, 1:].flatten()).view(len(tokens), -1)
    valid = torch.ones_like(ce, dtype=torch.bool) if valid is None else valid[:, 1:]
    ce = ce * valid
    n_valid = valid.sum(1)
    return ce.sum() / n_valid.sum().clamp(min=1), (ce.sum(1) / n_valid.clamp(min=1)).detach()


def top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filtering (Holtzman et al. 2020): keep the most likely classes down to the first one at
    which the cumulative mass reaches top_p (always at least one), renormalised."""
    if top_p >= 1.0:
        return probs
    sorted_p, idx = probs.sort(-1, descending=True)
    sorted_p = sorted_p.masked_fill(sorted_p.cumsum(-1) - sorted_p >= top_p, 0.0)  # mass before it is enough
    kept = torch.zeros_like(probs).scatter(-1, idx, sorted_p)
    return kept / kept.sum(-1, keepdim=True)


@torch.no_grad()
def ar_sample(model: GPT, n: int, seq_len: int, generator: torch.Generator | None, bos_id: int,
              temperature: float = 1.0, top_p: float = 1.0,
              device: torch.device | str | None = None) -> torch.Tensor:
    """Ancestral sampling with a KV cache: position 0 is bos_id, then seq_len - 1 tokens, one forward of
    one new token each (NFE = seq_len - 1). Each token is drawn from softmax(logits / temperature),
    top-p filtered, in float64 with `generator` (see sample_categorical); temperature 0 is greedy decoding
    (the argmax, no noise drawn). Call model.eval() first. Returns tokens [n, seq_len] long, BOS column included.
    """
    if not temperature >= 0:
        raise ValueError(f"temperature={temperature}: must be >= 0 (0 = greedy decoding)")
    device = device or next(model.parameters()).device
    x = torch.full((n, seq_len), bos_id, dtype=torch.long, device=device)
    cache = model.new_cache()
    for i in range(1, seq_len):
        logits = model(x[:, i - 1:i], cache)[:, -1]
        if temperature == 0:
            x[:, i] = logits.argmax(-1)
        else:  # temperature first, then the nucleus of the tempered distribution (as Hugging Face's generate)
            x[:, i] = sample_categorical(top_p_filter(tempered(logits, temperature), top_p), generator)
    return x
