"""The baselines as model kinds of the kit (ldlm.kinds.protocol): an MDLM and a GPT over the same token
classes as LDLM's head.

Each holds its network (`net`) and LDLM's vocabulary map (corpus ids + "other"), so a baseline run
trains on the same token blocks, with the same head kind, batch, steps and schedule as an LDLM run
(`model=mdlm` or `model=ar` in the config). The backbone width, depth and heads come from the DiT's
keys (`dit_width`, `dit_layers`, `dit_heads`); the GPT gets the depth that matches the DiT's block
parameters (`size.ar_layers_for`).
"""
from __future__ import annotations

import torch
from torch import nn

from ..nets.ar import GPT, ar_loss, ar_sample
from ..nets.diffusion import UniformTimeSampler
from ..nets.flops import backbone_forward, blocks_forward, head_forward
from ..nets.layers import Stack, set_gelu
from ..nets.mdlm import MDLM, mdlm_loss, mdlm_sample
from ..nets.size import ar_layers_for
from ..text.frozen_lm import attention_mask
from .protocol import LossOutput, TextModel


def no_callback(model: TextModel, callback) -> None:
    if callback is not None:  # the samplers draw tokens, not latents: there is no x0 estimate to report
        raise ValueError(f"callback: a {model.cfg.model!r} model samples tokens and has no per-step latents; "
                         f"use an LDLM, or generate without callback")


class Baseline(TextModel):
    """What the two baselines share: a network on head classes, evaluated by its held-out loss."""

    held_out_keys = ("loss_x_tokens", "tokens")

    def __init__(self, cfg, vocab_size: int, head_vocab: int | None = None, lm_width: int | None = None):
        super().__init__(cfg, vocab_size, head_vocab)
        self.register_buffer("bos_class", torch.tensor(0))  # the AR prefix, set from the tokenizer

    def classes(self) -> int:
        return len(self.head_ids) + 1  # + "other"

    def prepare(self, data, device) -> None:
        self.bos_class.fill_(int(self.to_head[data.bos]))

    def loss(self, h, tokens, lengths, noise, step: int) -> LossOutput:
        loss, _ = self.token_loss(tokens, attention_mask(lengths, tokens.shape[1]).bool(), noise)
        return LossOutput(loss, dict(loss=loss.item()))

    def compile_targets(self) -> list[tuple[nn.Module, str]]:
        return [(self.net, "features")]  # the trunk; the head's loss is computed on selected rows, outside

    def held_out_sums(self, h, tokens, lengths, noise) -> dict[str, torch.Tensor]:
        """Held-out loss (MDLM: NELBO bound at fixed noise per row; GPT: NLL) times tokens, and tokens."""
        valid = attention_mask(lengths, tokens.shape[1]).bool()
        _, per_sample = self.token_loss(tokens, valid, noise)
        n = valid.sum(1).double()
        return dict(loss_x_tokens=(per_sample.double() * n).sum(), tokens=n.sum())

    @staticmethod
    def held_out_metrics(sums: dict) -> dict:
        return {"valid_loss": sums["loss_x_tokens"] / max(sums["tokens"], 1), "valid_tokens": int(sums["tokens"])}

    def token_loss(self, tokens, valid, noise) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, per-sample loss [B]) on tokenizer ids [B, T]; all randomness from `noise`."""
        raise NotImplementedError


class MaskedDiffusion(Baseline):
    """MDLM (`mdlm.py`): antithetic t over the global batch, ancestral unmasking sampler."""

    def __init__(self, cfg, vocab_size: int, head_vocab: int | None = None, lm_width: int | None = None):
        super().__init__(cfg, vocab_size, head_vocab)
        self.net = MDLM(self.classes(), cfg.seq_len, Stack.of(cfg, "dit"), adaptive_head=cfg.adaptive_head,
                        time_conditioning=cfg.mdlm_time_conditioning)
        set_gelu(self, cfg.gelu)

    def times(self, noise) -> torch.Tensor:
        """Antithetic t in [t_min, 1) [B]: one draw per 1/batch_size stratum of the global batch."""
        return UniformTimeSampler(self.cfg.t_min).from_uniform(noise.stratified(self.cfg.batch_size))

    def token_loss(self, tokens, valid, noise):
        t = self.times(noise).to(tokens.device)
        mask_u = noise.uniform(tokens.shape[1]).to(tokens.device)
        return mdlm_loss(self.net, self.to_head[tokens], t, mask_u, valid)

    def generate(self, n, steps, generator, sampler=None, top_p=1.0, temperature=None, callback=None) -> torch.Tensor:
        no_callback(self, callback)
        return self.head_to_tokens(mdlm_sample(self.net, n, self.cfg.seq_len, steps, generator,
                                               temperature=self.temperature(temperature)))

    def sampling_record(self, steps, sampler, top_p, temperature=None) -> dict:
        return dict(steps=steps, top_p=None, temperature=self.temperature(temperature), sampler="ancestral",
                    draw_dtype="float64")  # sample_categorical

    def nfe(self, steps: int) -> int:
        return steps  # at most: a step that unmasks nothing calls no network


class Autoregressive(Baseline):
    """The GPT (`ar.py`): next-token loss, nucleus sampling with a KV cache (one call per token)."""

    def __init__(self, cfg, vocab_size: int, head_vocab: int | None = None, lm_width: int | None = None):
        super().__init__(cfg, vocab_size, head_vocab)
        layers = ar_layers_for(cfg.dit_layers, cfg.dit_width, cfg.dit_heads, cfg.mlp_ratio)
        self.net = GPT(self.classes(), cfg.seq_len, cfg.dit_width, layers, cfg.dit_heads, mlp_ratio=cfg.mlp_ratio,
                       dropout=cfg.dropout, adaptive_head=cfg.adaptive_head)
        set_gelu(self, cfg.gelu)

    def token_loss(self, tokens, valid, noise):
        return ar_loss(self.net, self.to_head[tokens], valid)

    def generate(self, n, steps, generator, sampler=None, top_p=1.0, temperature=None, callback=None) -> torch.Tensor:
        """`steps` is fixed by the length: one token per step."""
        no_callback(self, callback)
        return self.head_to_tokens(ar_sample(self.net, n, self.cfg.seq_len, generator, int(self.bos_class),
                                             temperature=self.temperature(temperature), top_p=top_p))

    def sampling_record(self, steps, sampler, top_p, temperature=None) -> dict:
        return dict(steps=self.cfg.seq_len - 1, top_p=top_p, temperature=self.temperature(temperature), sampler="nucleus",
                    draw_dtype="float64")

    def nfe(self, steps: int) -> int:
        return self.cfg.seq_len - 1


def mdlm_forward_flops(model: MaskedDiffusion, classes=None) -> dict:
    """Forward FLOPs of a training sequence (ldlm.nets.flops); the head runs at masked positions only: half of
    them on average over t ~ U(0, 1)."""
    T = model.cfg.seq_len
    return dict(grad=backbone_forward(model.net, T) + head_forward(model.net.out, classes) * T / 2)


def ar_forward_flops(model: Autoregressive, classes=None) -> dict:
    """Forward FLOPs of a training sequence (ldlm.nets.flops): next-token prediction on the first T - 1 positions."""
    n = model.cfg.seq_len - 1
    return dict(grad=blocks_forward(model.net.blocks, model.net.pos.shape[1], n) + head_forward(model.net.head, classes) * n)
