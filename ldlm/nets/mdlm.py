"""MDLM: masked (absorbing-state) diffusion language model (Sahoo et al. 2024).

Forward process: each token is independently replaced by MASK with probability 1 - alpha_t. The
denoiser is a DiT backbone (token embedding, learned positions, adaLN `DiTBlock`s, adaLN final
layer) under the SUBS parameterization: the head has no MASK class (zero masking probability) and
unmasked tokens are carried over. Carry-over is applied where it matters, not as a [B, T, V] `-inf`
tensor: the loss is taken at masked positions only, and the sampler never changes an unmasked token.

As the reference (kuleshov-group/mdlm, configs/config.yaml and diffusion.py): no time conditioning
(`time_conditioning: False`: the backbone's time input is 0, so the adaLN conditioning is a learned
constant), antithetic t (`_sample_t`: t_i = eps + (1 - eps)(i + u_i)/B), eps = 1e-3 for both t and
the log-linear schedule, the loss averaged over the batch's tokens. Deviations:
- the backbone is the kit's DiT (LDLM's blocks, learned positions), not MDLM's DDiT (rotary);
- the head is the kit's over the corpus vocabulary (+ "other"), adaptive softmax when
  `adaptive_head` is on, as LDLM's token decoder; the reference has a linear head over all ids;
- antithetic strata span the global batch (position i of B), not each process's share, so N
  processes train as one does (ldlm.nets.noise);
- the sampler draws in float64 (the reference: float32 Gumbel), draws an unmask coin before the
  class, runs the head only at unmasking positions and calls no network on a step where nothing
  unmasks; its grid ends at t = 0, where alpha = 1 unmasks every token by sampling (the reference
  stops at t = 1e-5 and sets the tokens still masked to the argmax, `noise_removal`).
`mdlm_time_conditioning=on` feeds t to the backbone (the reference's `time_conditioning: True`).

    alpha_t = 1 - (1 - eps) t                                   log-linear schedule
    L       = E_t [ -alpha_t' / (1 - alpha_t) sum_{i masked} -log p_theta(x_i | x_t) ]   (MDLM eq. 10/11)
            = E_t [ 1/t sum_{i masked} CE_i ]                   for the log-linear schedule
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .categorical import sample_categorical, tempered
from .layers import AdaLNBackbone, Stack, head_logits, head_nll, vocab_head

EPS = 1e-3  # alpha_1 = eps: MDLM's log-linear noise schedule


def log_linear_alpha(t: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """alpha_t = 1 - (1 - eps) t: the probability that a token is still unmasked at time t."""
    return 1 - (1 - eps) * t


def nelbo_weight(t: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """-alpha_t' / (1 - alpha_t) (MDLM eq. 10), = (1 - eps) / ((1 - eps) t) = 1/t for the log-linear schedule.

    Equal to MDLM's dsigma / expm1(sigma) with sigma_t = -log alpha_t. Infinite at t = 0, where
    nothing is masked; the caller draws t in (0, 1] (MDLM: t = eps + (1 - eps) u).
    """
    return (1 - eps) / (1 - log_linear_alpha(t, eps))


def mask_tokens(tokens: torch.Tensor, t: torch.Tensor, mask_u: torch.Tensor, mask_id: int,
                eps: float = EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward process q(x_t | x_0): position i is masked iff mask_u_i < 1 - alpha_t. Returns (x_t, masked)."""
    masked = mask_u < (1 - log_linear_alpha(t, eps))[:, None]
    return tokens.masked_fill(masked, mask_id), masked


class MDLM(AdaLNBackbone):
    """(x_t [B, T] over vocab_size + 1 ids, t [B]) -> logits [B, T, vocab_size] of x_0 (no MASK class):
    a token embedding, the DiT trunk LDLM's DiT uses (`models.AdaLNBackbone`), and a vocabulary head.

    Without time conditioning (the reference default) t is replaced by 0, as the reference's
    `_process_sigma` zeroes sigma. With it the embedding is of t (the reference embeds sigma_t =
    -log alpha_t, a monotone function of t).
    """

    def __init__(self, vocab_size: int, seq_len: int, stack: Stack, adaptive_head: bool = False,
                 time_conditioning: bool = False):
        super().__init__()
        self.time_conditioning = time_conditioning
        self.vocab_size, self.mask_id = vocab_size, vocab_size  # the last input id is MASK
        self.embed = nn.Embedding(vocab_size + 1, stack.width)
        self.build_backbone(seq_len, stack)
        self.out = vocab_head(stack.width, vocab_size, adaptive_head)  # the same head kind as LDLM's token decoder
        if isinstance(self.out, nn.Linear):  # zero-init (DiT, MDLM): the first prediction is uniform
            nn.init.zeros_(self.out.weight), nn.init.zeros_(self.out.bias)

    def features(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.embed(x_t), t if self.time_conditioning else torch.zeros_like(t))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return head_logits(self.out, self.features(x_t, t))


def mdlm_loss(model: MDLM, tokens: torch.Tensor, t: torch.Tensor, mask_u: torch.Tensor,
              valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Continuous-time NELBO (MDLM eq. 11): mean over valid tokens of 1/t * CE at masked positions.

    tokens [B, T] long, t [B] in (0, 1], mask_u [B, T] ~ U[0, 1) (both drawn by the caller, so the loss
    is a deterministic function of its inputs), valid [B, T] bool (None: all). Unmasked positions
    contribute 0 (SUBS carry-over: their x_0 is known). Returns (loss, per-sample loss [B], detached).
    """
    x_t, masked = mask_tokens(tokens, t, mask_u, model.mask_id)
    valid = torch.ones_like(tokens, dtype=torch.bool) if valid is None else valid
    target = masked & valid
    features = model.features(x_t, t)
    ce = torch.zeros(tokens.shape, dtype=torch.float32, device=tokens.device)
    ce[target] = head_nll(model.out, features[target], tokens[target])  # masked rows only
    per_token = nelbo_weight(t.float())[:, None] * ce
    n_valid = valid.sum(1)
    loss = per_token.sum() / n_valid.sum().clamp(min=1)  # MDLM: mean over the batch's tokens
    return loss, (per_token.sum(1) / n_valid.clamp(min=1)).detach()


@torch.no_grad()
def mdlm_sample(model: MDLM, n: int, seq_len: int, steps: int, generator: torch.Generator | None = None,
                dtype: torch.dtype = torch.float64, callback: Callable[[int, torch.Tensor], None] | None = None,
                temperature: float = 1.0) -> torch.Tensor:
    """Ancestral sampling (the reference's `ddpm_cache` predictor) on the grid t_k = 1 - k/steps, k = 0..steps.

    From t to s < t, a masked position stays masked with probability (1 - alpha_s) / (1 - alpha_t) and
    otherwise takes a class drawn from p_theta(x_0 | x_t) (MDLM eq. 7 under SUBS; drawn here as an unmask
    coin, then the class at the unmasked positions only); unmasked tokens are carried over. alpha_0 = 1,
    so the last step unmasks everything. The class is drawn from softmax(logits / temperature) (1: p_theta
    itself; 0: its argmax), in `dtype` (float64, see sample_categorical); the unmask coins do not depend on
    the temperature. All noise from `generator`. Call model.eval() first.

    Because the unmask coin does not depend on the model, p_theta is needed only where a token unmasks:
    the head runs on those positions alone (each position once over the whole trajectory, as LDLM's
    token decoder), and a step where nothing unmasks calls no model at all. Both shortcuts are exact:
    the tokens are those of the same sampler with the full head at every step (tests). The reference's
    `ddpm_cache` saves calls differently, reusing p_theta after a step that changed no token, which is
    exact there because without time conditioning p_theta depends on x_t alone. NFE <= steps.
    `callback(k, x)` sees the tokens after step k. Returns tokens [n, seq_len] in [0, vocab_size).
    """
    if steps < 1:
        raise ValueError(f"steps={steps}: need at least one sampling step")
    if not temperature >= 0:
        raise ValueError(f"temperature={temperature}: must be >= 0 (0 = argmax)")
    device = next(model.parameters()).device  # the model's
    noise_device = generator.device if generator is not None else device
    ts = torch.linspace(1, 0, steps + 1, dtype=torch.float64)
    x = torch.full((n, seq_len), model.mask_id, dtype=torch.long, device=device)
    for k in range(steps):
        a_t, a_s = log_linear_alpha(ts[k]), log_linear_alpha(ts[k + 1])
        u = torch.rand((n, seq_len), generator=generator, dtype=torch.float64, device=noise_device).to(device)
        unmask = (x == model.mask_id) & (u < (a_s - a_t) / (1 - a_t))
        if unmask.any():
            features = model.features(x, ts[k].float().expand(n).to(device))[unmask]
            logits = head_logits(model.out, features)
            x[unmask] = (logits.argmax(-1) if temperature == 0
                         else sample_categorical(tempered(logits, temperature, dtype), generator))
        if callback is not None:
            callback(k, x)
    return x
