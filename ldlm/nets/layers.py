"""The networks of the four trainable LDLM modules (paper.md §2), and the blocks the baselines share.

    h  --LatentEncoder (Perceiver)-->  z0  --DiT (adaLN, self-cond.)-->  x0-prediction
    z  --LatentDecoder (Perceiver)-->  h_hat  --TokenDecoder (on sg(h_hat))-->  token logits

Attention is `F.scaled_dot_product_attention` everywhere (no flash-attn dependency). The Perceiver
block follows the authors' Cosmos-era design (paper.md §2.3): queries from the latents, keys and
values from [inputs; latents], per-head RMS qk-norm, pre-LN GELU FFN.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .categorical import sample_inverse_cdf, tempered


def _rms_norm(norm: nn.RMSNorm, t: torch.Tensor) -> torch.Tensor:
    """norm(t) with the weight in t's dtype: under bf16 autocast a float32 weight makes torch skip its
    fused kernel (a warning per call on GPUs); in float32 it is norm(t) exactly."""
    return F.rms_norm(t, norm.normalized_shape, norm.weight.to(t.dtype), norm.eps)


class Attention(nn.Module):
    """Multi-head attention, queries from `x`, keys/values from `context` (default: x), qk-norm."""

    def __init__(self, width: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)
        self.q_norm = nn.RMSNorm(width // heads)
        self.k_norm = nn.RMSNorm(width // heads)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        split = lambda t: t.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # B T (H D) -> B H T D
        q = _rms_norm(self.q_norm, split(self.q(x)))
        k, v = (split(t) for t in self.kv(context).chunk(2, dim=-1))
        y = F.scaled_dot_product_attention(q, _rms_norm(self.k_norm, k), v, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).flatten(-2))


def mlp(width: int, ratio: int, dropout: float = 0.0) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width, ratio * width), nn.GELU(approximate="tanh"),
                         nn.Dropout(dropout), nn.Linear(ratio * width, width))


def set_gelu(module: nn.Module, form: str) -> None:
    """Every GELU in `module` computes `form` (cfg.gelu): "tanh" (the approximation mlp builds) or
    "exact" (erf). Parameters are the same, so a checkpoint loads either way; its config says which."""
    for m in module.modules():
        if isinstance(m, nn.GELU):
            m.approximate = "tanh" if form == "tanh" else "none"


@dataclass(frozen=True)
class Stack:
    """The shape of a stack of transformer blocks: its width, depth, heads, MLP ratio and dropout."""
    width: int
    layers: int
    heads: int
    mlp_ratio: int = 4
    dropout: float = 0.0

    @classmethod
    def of(cls, cfg, part: str) -> "Stack":
        """The stack a run's config gives a part: its `<part>_width`, `_layers`, `_heads`; mlp_ratio, dropout."""
        return cls(getattr(cfg, f"{part}_width"), getattr(cfg, f"{part}_layers"), getattr(cfg, f"{part}_heads"),
                   cfg.mlp_ratio, cfg.dropout)


class PerceiverBlock(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: int = 4, dropout: float = 0.0):
        super().__init__()
        self.norm_inputs, self.norm_latents = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = Attention(width, heads, dropout)
        self.norm_mlp = nn.LayerNorm(width)
        self.mlp = mlp(width, mlp_ratio, dropout)

    def forward(self, latents: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        q = self.norm_latents(latents)
        latents = latents + self.attn(q, torch.cat([self.norm_inputs(inputs), q], dim=1))
        return latents + self.mlp(self.norm_mlp(latents))


class Perceiver(nn.Module):
    """Perceiver resampler: `n_queries` learned queries read an input sequence of any length.

    [B, T_in, in_dim] -> [B, n_queries, out_dim]. Inputs get learned positional embeddings. With one
    query per input position (the default, one latent per token) the queries start from the projected
    inputs plus the learned query vectors, so the residual stream has a direct path from position i
    to latent i (ours: with pure learned queries, learning that alignment took most of a CPU budget).
    """

    def __init__(self, in_dim: int, out_dim: int, n_inputs: int, n_queries: int, stack: Stack):
        super().__init__()
        width = stack.width
        self.in_proj = nn.Linear(in_dim, width)
        self.in_pos = nn.Parameter(torch.randn(n_inputs, width) * 0.02)
        self.queries = nn.Parameter(torch.randn(n_queries, width) * 0.02)
        self.blocks = nn.ModuleList(PerceiverBlock(width, stack.heads, stack.mlp_ratio, stack.dropout)
                                    for _ in range(stack.layers))
        self.norm_out = nn.LayerNorm(width)
        self.out_proj = nn.Linear(width, out_dim)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = self.in_proj(inputs) + self.in_pos[: inputs.shape[1]]
        latents = self.queries.expand(inputs.shape[0], -1, -1)
        if latents.shape[1] == x.shape[1]:
            latents = latents + x
        for block in self.blocks:
            latents = block(latents, x)
        return self.out_proj(self.norm_out(latents))


class TransformerBlock(nn.Module):
    """Pre-LN bidirectional self-attention block."""

    def __init__(self, width: int, heads: int, mlp_ratio: int = 4, dropout: float = 0.0):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn, self.mlp = Attention(width, heads, dropout), mlp(width, mlp_ratio, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def adaptive_cutoffs(vocab: int) -> list[int]:
    """Cluster edges for the adaptive softmax: the 2k and 8k most frequent classes, then the rest."""
    return [c for c in (2048, 8192) if c < vocab - 1]


def vocab_head(width: int, vocab: int, adaptive: bool) -> nn.Module:
    """Linear head, or (with `adaptive` and a vocabulary large enough to cut) an adaptive softmax
    (Grave et al. 2017) over frequency-ordered classes: exact log-probabilities, but training costs
    mostly what its 2k most frequent classes cost."""
    cutoffs = adaptive_cutoffs(vocab)
    if adaptive and cutoffs:
        return nn.AdaptiveLogSoftmaxWithLoss(width, vocab, cutoffs, div_value=2.0)
    return nn.Linear(width, vocab)


def no_autocast(like: torch.Tensor):
    """A region that runs in the tensors' own dtype even inside `torch.autocast`."""
    return torch.autocast(like.device.type, enabled=False)


def head_nll(head: nn.Module, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """-log p(target) per row of flat features [N, width], float32."""
    if isinstance(head, nn.AdaptiveLogSoftmaxWithLoss):
        with no_autocast(features):  # its index_copy_ needs one dtype; log-probabilities want fp32 anyway
            return -head(features.float(), targets).output
    return F.cross_entropy(head(features).float(), targets, reduction="none")


def adaptive_argmax(head: nn.AdaptiveLogSoftmaxWithLoss, x: torch.Tensor, chunk: int = 128) -> torch.Tensor:
    """The class of highest log-probability per row of x [N, width]: `head.predict(x)`, but without
    the full [N, vocab] log-probabilities torch builds for every row whose head argmax is a cluster.
    A token's log-probability is its cluster's plus a log-probability <= 0, so a cluster is scored
    only on the rows where the cluster itself beats the best token so far, `chunk` rows at a time
    (a [chunk, cluster] block stays in cache); on ties the lower class wins, as in argmax. Random
    latents at batch 64 (flat distributions, 21k classes, 2 threads): 249 ms for torch's, 85 ms;
    on trained samples most rows stop at the shortlist in both."""
    head_lp = F.log_softmax(head.head(x), dim=-1)
    best, best_class = head_lp[:, : head.shortlist_size].max(dim=-1)
    for i, (tail, start) in enumerate(zip(head.tail, head.cutoffs)):
        cluster_lp = head_lp[:, head.shortlist_size + i]
        for rows in (cluster_lp > best).nonzero().squeeze(1).split(chunk):
            lp, cls = (F.log_softmax(tail(x[rows]), dim=-1) + cluster_lp[rows, None]).max(dim=-1)
            better = lp > best[rows]
            best[rows[better]], best_class[rows[better]] = lp[better], cls[better] + start
    return best_class


def head_logits(head: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """Unnormalised log-probabilities [..., vocab] (the adaptive head gives normalised ones)."""
    if isinstance(head, nn.AdaptiveLogSoftmaxWithLoss):
        with no_autocast(features):
            return head.log_prob(features.flatten(0, -2).float()).view(*features.shape[:-1], -1)
    return head(features)


class TokenDecoder(nn.Module):
    """sg(h_hat) [B, T, lm_width] -> tokens: a small transformer (`features`) and a head used through
    `loss` (training), `predict` (argmax decoding) and `sample` (decoding at a temperature).

    The head is linear (the paper) or, with `adaptive_head`, an adaptive softmax (Grave et al. 2017,
    `nn.AdaptiveLogSoftmaxWithLoss`): exact log-probabilities over the whole vocabulary, but the
    training cost of a frequency-ordered head is mostly that of its 2k most frequent classes.
    """

    def __init__(self, lm_width: int, vocab: int, seq_len: int, stack: Stack, adaptive_head: bool = False):
        super().__init__()
        width = stack.width
        self.in_proj = nn.Linear(lm_width, width)
        self.pos = nn.Parameter(torch.randn(seq_len, width) * 0.02)
        self.blocks = nn.ModuleList(TransformerBlock(width, stack.heads, stack.mlp_ratio, stack.dropout)
                                    for _ in range(stack.layers))
        self.norm = nn.LayerNorm(width)
        self.head = vocab_head(width, vocab, adaptive_head)
        self.adaptive = isinstance(self.head, nn.AdaptiveLogSoftmaxWithLoss)

    def loss(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean token cross-entropy of flat features [N, width] against class indices [N]."""
        return head_nll(self.head, features, targets).mean()

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """Most likely class per position of features [..., width]."""
        if self.adaptive:
            with no_autocast(features):
                return adaptive_argmax(self.head, features.flatten(0, -2).float()).view(features.shape[:-1])
        return self.head(features).argmax(-1)

    def sample(self, features: torch.Tensor, temperature: float, generator: torch.Generator | None = None,
               chunk: int = 256) -> torch.Tensor:
        """A class per position of features [..., width]: at temperature 0 the argmax (`predict`, no noise
        drawn), else a draw from softmax(log-probabilities / temperature) in float64 (sample_inverse_cdf), the
        positions in order, `chunk` rows at a time (an adaptive head's full log-probabilities are [rows, vocab])."""
        if temperature == 0:
            return self.predict(features)
        rows = features.flatten(0, -2)
        classes = [sample_inverse_cdf(tempered(head_logits(self.head, part), temperature), generator)
                   for part in rows.split(chunk)]
        return torch.cat(classes).view(features.shape[:-1])

    def features(self, h_hat: torch.Tensor) -> torch.Tensor:
        x = self.in_proj(h_hat) + self.pos[: h_hat.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


# ----------------------------------------------------------------------------------------------
# DiT (Peebles & Xie 2023) over latent sequences


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of t in [0, 1] (scaled by 1000, as DiT's integer timesteps)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
    """Self-attention + FFN, both modulated and gated by the time embedding (adaLN-Zero)."""

    def __init__(self, width: int, heads: int, mlp_ratio: int = 4, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False)
        self.attn, self.mlp = Attention(width, heads, dropout), mlp(width, mlp_ratio, dropout)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))
        nn.init.zeros_(self.ada[1].weight), nn.init.zeros_(self.ada[1].bias)  # block starts as identity

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c).chunk(6, dim=-1)
        x = x + gate1[:, None] * self.attn(modulate(self.norm1(x), shift1, scale1))
        return x + gate2[:, None] * self.mlp(modulate(self.norm2(x), shift2, scale2))


class AdaLNBackbone(nn.Module):
    """The DiT trunk shared by LDLM's DiT and the MDLM baseline: learned positions, a time MLP, adaLN-Zero
    blocks and the final modulated LayerNorm. Subclasses build their input layer, call `build_backbone`,
    then build their output layer (that order fixes the random initialisation), and run `backbone`."""

    def build_backbone(self, seq_len: int, stack: Stack) -> None:
        width = stack.width
        self.pos = nn.Parameter(torch.randn(seq_len, width) * 0.02)
        self.time = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.blocks = nn.ModuleList(DiTBlock(width, stack.heads, stack.mlp_ratio, stack.dropout)
                                    for _ in range(stack.layers))
        self.norm_out = nn.LayerNorm(width, elementwise_affine=False)
        self.ada_out = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        nn.init.zeros_(self.ada_out[1].weight), nn.init.zeros_(self.ada_out[1].bias)

    def backbone(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Embedded inputs x [B, L, width] at times t [B] -> features [B, L, width]."""
        x = x + self.pos[: x.shape[1]]
        c = self.time(timestep_embedding(t, x.shape[-1]))
        for block in self.blocks:
            x = block(x, c)
        shift, scale = self.ada_out(c).chunk(2, dim=-1)
        return modulate(self.norm_out(x), shift, scale)


class DiT(AdaLNBackbone):
    """(z_t, t, self-conditioning x0 estimate) [B, L, latent_dim] -> x0 prediction [B, L, latent_dim]."""

    def __init__(self, latent_dim: int, seq_len: int, stack: Stack):
        super().__init__()
        self.in_proj = nn.Linear(2 * latent_dim, stack.width)  # [z_t; x0_self_cond]
        self.build_backbone(seq_len, stack)
        self.out = nn.Linear(stack.width, latent_dim)
        nn.init.zeros_(self.out.weight), nn.init.zeros_(self.out.bias)  # the first prediction is 0 = E[z0]

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, x0_self_cond: torch.Tensor | None = None) -> torch.Tensor:
        if x0_self_cond is None:
            x0_self_cond = torch.zeros_like(z_t)
        return self.out(self.backbone(self.in_proj(torch.cat([z_t, x0_self_cond], dim=-1)), t))


# ----------------------------------------------------------------------------------------------


def normalize_latents(z: torch.Tensor) -> torch.Tensor:
    """Each latent vector L2-normalised and scaled to norm sqrt(dim): unit variance per dimension.

    A fixed scale keeps the encoder from shrinking latents to make the x0-loss trivially small
    (paper.md §2.2; the Cosmos-era Perceiver option, our choice since the paper's is unknown).
    """
    return F.normalize(z, dim=-1) * math.sqrt(z.shape[-1])


class LatentNorm(nn.Module):
    """Encoder outputs -> latents (cfg.latent_norm).

    l2:       each vector to norm sqrt(d) (`normalize_latents`). It fixes every latent's norm but not
              their spread: the diffusion loss is smallest when all latents are one vector, and the
              encoder goes there (93% of the energy in the shared mean at 250 tiny steps).
    standard: each dimension to mean 0, std 1 (as LD4LG/TEncDM scale their latents). No mean left, but
              the dimensions may still fold into one direction (participation ratio 1.3, measured).
    whiten:   mean 0 and covariance I over the batch's positions (Cholesky whitening, differentiable),
              so no direction can shrink. Both batch kinds use the batch's statistics in training and
              running ones (momentum `momentum`) at evaluation, as BatchNorm; the EMA model averages
              the running statistics with its weights (optim.update_ema).
    """

    def __init__(self, kind: str, dim: int, momentum: float = 0.01, eps: float = 1e-4):
        super().__init__()
        self.kind, self.momentum, self.eps = kind, momentum, eps
        if kind != "l2":
            self.register_buffer("running_mean", torch.zeros(dim))
            self.register_buffer("running_cov", torch.eye(dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.kind == "l2":
            return normalize_latents(z)
        with no_autocast(z):
            flat = z.float().flatten(0, -2)
            if self.training:
                mean = flat.mean(0)
                x = flat - mean
                cov = x.T @ x / max(len(x) - 1, 1) if self.kind == "whiten" else torch.diag(x.pow(2).mean(0))
                with torch.no_grad():
                    self.running_mean.lerp_(mean, self.momentum), self.running_cov.lerp_(cov, self.momentum)
            else:
                mean, cov = self.running_mean, self.running_cov
                x = flat - mean
            if self.kind == "standard":
                out = x * torch.rsqrt(torch.diagonal(cov) + self.eps * torch.diagonal(cov).mean())
            else:  # x L^-T with cov = L L^T: covariance L^-1 cov L^-T = I
                ridge = self.eps * torch.diagonal(cov).mean() * torch.eye(len(cov), device=cov.device)  # scale-free
                chol = torch.linalg.cholesky(cov + ridge)
                out = torch.linalg.solve_triangular(chol.T, x, upper=True, left=False)
        return out.view(z.shape).to(z.dtype)


def token_matches(pred_ids, target_ids, mask) -> tuple[torch.Tensor, torch.Tensor]:
    """(number of positions where pred == target and mask is true, number where mask is true), as
    tensors on the inputs' device, so that shards can be summed before dividing."""
    pred, target = torch.as_tensor(pred_ids), torch.as_tensor(target_ids)
    mask = torch.as_tensor(mask, dtype=torch.bool, device=pred.device)
    return ((pred == target) & mask).sum(), mask.sum()
