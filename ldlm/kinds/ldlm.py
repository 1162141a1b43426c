"""LDLM as a model kind (ldlm.kinds.protocol): the four networks of ldlm.nets.layers, the frozen LM's state
statistics, the joint loss (ldlm.kinds.losses), adaptive time sampling and latent samplers (ldlm.nets).

    h  --LatentEncoder (Perceiver)-->  z0  --DiT (adaLN, self-cond.)-->  x0-prediction
    z  --LatentDecoder (Perceiver)-->  h_hat  --TokenDecoder (on sg(h_hat))-->  token logits
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..nets.diffusion import AdaptiveTimeSampler, UniformTimeSampler, encoder_gamma, tangent_alpha_sigma
from ..nets.flops import backbone_forward, blocks_forward, head_forward, linear_weights, perceiver_forward
from ..nets.layers import DiT, LatentNorm, Perceiver, Stack, TokenDecoder, set_gelu, token_matches
from ..nets.samplers import generate_latents
from ..text.frozen_lm import attention_mask
from .losses import ldlm_loss
from .protocol import LossOutput, TextModel


class LDLM(TextModel):
    """Encoder, DiT, decoder, token decoder, plus the frozen LM's state statistics and the token map.

    Buffers: `h_mean`, `h_std` standardise the frozen LM's states (the MSE target and the encoder
    input); `head_ids` / `to_head` (VocabMap) say which tokenizer ids the token head predicts. The
    adaptive timestep sampler is training state (`observe`, `training_state`), not weights.
    """

    uses_frozen_lm = True
    has_latents = True
    default_temperature = 0.0  # the token decoder's argmax, as the paper decodes
    held_out_keys = ("correct", "tokens", "loss_h", "rows")

    def __init__(self, cfg, vocab_size: int, head_vocab: int | None = None, lm_width: int | None = None):
        super().__init__(cfg, vocab_size, head_vocab)
        seq, lat_len = cfg.seq_len, cfg.latent_len or cfg.seq_len
        head_vocab = head_vocab or vocab_size
        self.encoder = Perceiver(lm_width, cfg.latent_dim, seq, lat_len, Stack.of(cfg, "enc"))
        self.dit = DiT(cfg.latent_dim, lat_len, Stack.of(cfg, "dit"))
        self.latent_norm = LatentNorm(cfg.latent_norm, cfg.latent_dim)
        self.decoder = Perceiver(cfg.latent_dim, lm_width, lat_len, seq, Stack.of(cfg, "dec"))
        self.token_decoder = TokenDecoder(lm_width, head_vocab + 1, seq, Stack.of(cfg, "tok"), cfg.adaptive_head)
        self.register_buffer("h_mean", torch.zeros(lm_width))
        self.register_buffer("h_std", torch.ones(lm_width))
        self.time_sampler = (AdaptiveTimeSampler(cfg.time_bins, cfg.time_ema, cfg.t_min)
                             if cfg.time_sampling == "adaptive" else UniformTimeSampler(cfg.t_min))
        set_gelu(self, cfg.gelu)

    def set_h_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.h_mean.copy_(mean), self.h_std.copy_(std.clamp(min=1e-4))

    def standardize(self, h: torch.Tensor) -> torch.Tensor:
        return (h.float() - self.h_mean) / self.h_std

    def encode(self, h_std: torch.Tensor) -> torch.Tensor:
        return self.latent_norm(self.encoder(h_std))

    def denoise(self, z_t: torch.Tensor, t: torch.Tensor, x0_self_cond: torch.Tensor | None = None) -> torch.Tensor:
        """x0 estimate of z_t at times t [B]: x0_hat = c_skip z_t + c_out DiT(z_t) (k-diffusion's Denoiser).

        cfg.dit_param x0: (c_skip, c_out) = (0, 1), the DiT is the x0-prediction (the paper's). v: (alpha,
        sigma), EDM's c_skip = alpha s^2 / (alpha^2 s^2 + sigma^2), c_out = sigma s / sqrt(alpha^2 s^2 +
        sigma^2) for a VP process with data std s = 1 (Karras et al. 2022, Table 1 in VP form) =
        v-prediction: as sigma -> 0 the identity costs the network nothing, where an x0-network must learn
        to copy its input."""
        if self.cfg.dit_param == "x0":
            return self.dit(z_t, t, x0_self_cond)
        alpha, sigma = (s.to(z_t.dtype)[:, None, None] for s in tangent_alpha_sigma(t, self.cfg.schedule_d))
        return alpha * z_t + sigma * self.dit(z_t, t, x0_self_cond)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    @torch.no_grad()
    def hidden_to_tokens(self, h_hat: torch.Tensor, temperature: float = 0.0,
                         generator: torch.Generator | None = None) -> torch.Tensor:
        """Tokenizer ids [B, T] for reconstructed states h_hat: the most likely (temperature 0, argmax
        decoding) or drawn at `temperature` with `generator` (TokenDecoder.sample)."""
        return self.head_to_tokens(self.token_decoder.sample(self.token_decoder.features(h_hat), temperature, generator))

    @torch.no_grad()
    def latents_to_tokens(self, z: torch.Tensor, temperature: float = 0.0,
                          generator: torch.Generator | None = None) -> torch.Tensor:
        return self.hidden_to_tokens(self.decode(z), temperature, generator)

    # -- the protocol (ldlm.kinds.protocol) ----------------------------------------------------------------
    def prepare(self, data, device) -> None:
        """State statistics from 256 training rows (fixed by the seed)."""
        rows = np.random.default_rng(self.cfg.seed).choice(len(data.tokens.train), min(256, len(data.tokens.train)),
                                                           replace=False)
        h, _, _ = data.batch("train", rows, device)
        self.set_h_stats(h.mean(dim=(0, 1)), h.std(dim=(0, 1)))

    def loss(self, h, tokens, lengths, noise, step: int) -> LossOutput:
        cfg = self.cfg
        return ldlm_loss(self, h, tokens, cfg, encoder_gamma(cfg, step), self.time_sampler, noise, lengths)

    def observe(self, t, losses) -> None:
        self.time_sampler.update(t.cpu(), losses.cpu())

    def training_state(self) -> dict:
        return self.time_sampler.state_dict()

    def load_training_state(self, state: dict) -> None:
        self.time_sampler.load_state_dict(state)

    def log_stats(self) -> dict:
        return self.time_sampler.summary()

    def compile_targets(self) -> list[tuple[nn.Module, str]]:
        return [(self.encoder, "forward"), (self.dit, "forward"), (self.decoder, "forward"),
                (self.token_decoder, "features")]

    def held_out_sums(self, h, tokens, lengths, noise) -> dict[str, torch.Tensor]:
        """Reconstruction from clean latents (no decoder noise): matching tokens, tokens, L_h * rows, rows."""
        h_std = self.standardize(h)
        h_hat = self.decode(self.encode(h_std)).float()
        preds = self.hidden_to_tokens(h_hat)
        correct, count = token_matches(preds, tokens, attention_mask(lengths, tokens.shape[1]))
        return dict(correct=correct, tokens=count, loss_h=F.mse_loss(h_hat, h_std).double() * len(h),
                    rows=torch.tensor(float(len(h)), device=h.device))

    @staticmethod
    def held_out_metrics(sums: dict) -> dict:
        return {"recon_acc": sums["correct"] / max(sums["tokens"], 1), "valid_loss_h": sums["loss_h"] / max(sums["rows"], 1),
                "valid_tokens": int(sums["tokens"])}

    def generate(self, n, steps, generator, sampler=None, top_p=1.0, temperature=None, callback=None) -> torch.Tensor:
        """Reverse process from N(0, I) with `steps` steps, then decoder -> token decoder -> ids: the argmax
        (temperature 0, the default) or drawn at `temperature` with the same generator, after the latents."""
        z = generate_latents(self, n, steps, self.cfg, generator, sampler or self.cfg.sampler, callback)
        return self.latents_to_tokens(z, self.temperature(temperature), generator)

    def sampling_record(self, steps, sampler, top_p, temperature=None) -> dict:
        # Gaussian noise is drawn in the latents' float32; tokens are the argmax, or at T > 0 drawn in float64
        t = self.temperature(temperature)
        return dict(steps=steps, top_p=None, temperature=t, sampler=sampler or self.cfg.sampler,
                    draw_dtype="float32" if t == 0 else "float32, tokens float64")

    def nfe(self, steps: int) -> int:
        return steps + 1  # the DiT at every step and once more at t_min (samplers.py)


def ldlm_forward_flops(model: LDLM, classes=None) -> dict:
    """Forward FLOPs of a training sequence (ldlm.nets.flops): "grad" through encoder, DiT, decoder and token
    decoder; "no_grad": the self-conditioning pass of the DiT, on a self_cond_prob share of sequences."""
    T, Lz, tok = model.cfg.seq_len, model.cfg.latent_len or model.cfg.seq_len, model.token_decoder
    dit = backbone_forward(model.dit, Lz) + 2 * (linear_weights(model.dit.in_proj) + linear_weights(model.dit.out)) * Lz
    tokens = (blocks_forward(tok.blocks, tok.in_proj.out_features, T)
              + (2 * linear_weights(tok.in_proj) + head_forward(tok.head, classes)) * T)
    grad = perceiver_forward(model.encoder, T, Lz) + perceiver_forward(model.decoder, Lz, T) + dit + tokens
    return dict(grad=grad, no_grad=model.cfg.self_cond_prob * dit)


def count_parameters(cfg, lm_width: int, vocab_size: int) -> dict[str, int]:
    """Trainable parameters per module, computed on the meta device (no memory allocated)."""
    with torch.device("meta"):
        model = LDLM(cfg, vocab_size, lm_width=lm_width)
    counts = {name: sum(p.numel() for p in getattr(model, name).parameters())
              for name in ("encoder", "dit", "decoder", "token_decoder")}
    counts["total"] = sum(counts.values())
    return counts
