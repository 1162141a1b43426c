"""The joint LDLM objective: L = w_diff L_diff + w_h L_h + w_tok L_w (paper.md §4, Appendix B).

The four recipe switches act here, and only here:
- decoder_loss   mse: L_h = ||D(z0 + sigma_dec eps) - h||^2 shapes the latents, L_w reads sg(h_hat);
                 ce:  no L_h; L_w = CE(TokDec(D(z0 + ...))) flows back into decoder and encoder.
- encoder_warmup the encoder receives gamma(s) * grad L_diff (gamma passed in by the caller).
- time_sampling  the caller's time sampler (adaptive or uniform) draws t.
- decoder_noise  sigma_dec, in training only (model.training).

All randomness comes from `noise` (ldlm.nets.noise.SampleNoise), drawn per sample in a fixed order
(time, decoder noise, diffusion noise, self-conditioning coin), so the loss of a sample does not
depend on which process or micro-batch computes it.
"""
from __future__ import annotations

import torch

from ..nets.diffusion import scale_encoder_grad, tangent_alpha_sigma
from ..text.frozen_lm import attention_mask
from .protocol import LossOutput


def ldlm_loss(model, h: torch.Tensor, tokens: torch.Tensor, cfg, gamma: float, time_sampler, noise,
              lengths: torch.Tensor | None = None) -> LossOutput:
    """One training loss on frozen-LM states h [B, T, lm_width] and their tokens [B, T].

    L_h and L_w are means over the valid positions (the first `lengths` of each row; all if None), as
    the baselines' losses: padding (pack_mode=pad) neither trains the decoders nor dilutes their loss."""
    valid = attention_mask(lengths, tokens.shape[1]).bool().flatten() if lengths is not None else None
    h = model.standardize(h)
    z0 = model.encode(h)
    u = noise.uniform(dtype=torch.float64)

    # decoder branch: reconstruct the frozen LM's states from noisy latents
    noisy = z0 + cfg.decoder_noise * noise.normal(*z0.shape[1:]).to(z0.dtype) if model.training and cfg.decoder_noise > 0 else z0
    h_hat = model.decode(noisy)
    sq_err = (h_hat - h).pow(2).mean(-1).flatten()
    features = model.token_decoder.features(h_hat.detach() if cfg.decoder_loss == "mse" else h_hat).flatten(0, 1)
    targets = model.to_head[tokens].flatten()
    if valid is not None:
        sq_err, features, targets = sq_err[valid], features[valid], targets[valid]
    loss_h = sq_err.mean()
    loss_tok = model.token_decoder.loss(features, targets)

    # diffusion branch: x0-prediction on z_t = alpha_t z0 + sigma_t eps
    z0_d = scale_encoder_grad(z0, gamma)
    t = time_sampler.from_uniform(u).to(z0.device)
    alpha, sigma = (s[:, None, None] for s in tangent_alpha_sigma(t, cfg.schedule_d))
    z_t = alpha * z0_d + sigma * noise.normal(*z0_d.shape[1:]).to(z0_d.dtype)
    self_cond = None
    if noise.coin(cfg.self_cond_prob):  # self-conditioning: a first pass without gradient
        with torch.no_grad():
            self_cond = model.denoise(z_t, t)
    x0_hat = model.denoise(z_t, t, self_cond)
    diff_per_sample = (x0_hat.float() - z0_d.float()).pow(2).mean(dim=(1, 2))
    loss_diff = diff_per_sample.mean()

    loss = cfg.w_diff * loss_diff + cfg.w_tok * loss_tok
    if cfg.decoder_loss == "mse":
        loss = loss + cfg.w_h * loss_h
    with torch.no_grad():  # on at most 256 positions: a progress signal, not a metric
        acc = (model.token_decoder.predict(features[:256].detach()) == targets[:256]).float().mean()
    parts = dict(loss=loss.item(), loss_diff=loss_diff.item(), loss_h=loss_h.item(), loss_tok=loss_tok.item(),
                 train_tok_acc=acc.item(), gamma=gamma)
    return LossOutput(loss, parts, t.detach(), diff_per_sample.detach())
