"""The baselines as runs of the kit: an MDLM or a GPT over the same token classes as LDLM's head.

`Baseline` holds the network and LDLM's vocabulary map (corpus ids + "other"), so a baseline run
trains on the same token blocks, with the same head kind, batch, steps and schedule as an LDLM run
(`model=mdlm` or `model=ar` in the config). The backbone width, depth and heads come from the
DiT's keys (`dit_width`, `dit_layers`, `dit_heads`); the GPT gets the depth that matches the DiT's
block parameters (`size.ar_layers_for`).
"""
from __future__ import annotations

import torch

from ..models import VocabMap
from .ar import GPT, ar_loss, ar_sample
from .mdlm import MDLM, mdlm_loss, mdlm_sample
from .size import ar_layers_for


class Baseline(VocabMap):
    def __init__(self, cfg, vocab_size: int, head_vocab: int | None = None):
        super().__init__(vocab_size, head_vocab)
        classes = len(self.head_ids) + 1  # + "other"
        kw = dict(mlp_ratio=cfg.mlp_ratio, dropout=cfg.dropout, adaptive_head=cfg.adaptive_head)
        if cfg.model == "mdlm":
            self.net = MDLM(classes, cfg.seq_len, cfg.dit_width, cfg.dit_layers, cfg.dit_heads,
                            time_conditioning=cfg.mdlm_time_conditioning, **kw)
        elif cfg.model == "ar":
            layers = ar_layers_for(cfg.dit_layers, cfg.dit_width, cfg.dit_heads, cfg.mlp_ratio)
            self.net = GPT(classes, cfg.seq_len, cfg.dit_width, layers, cfg.dit_heads, **kw)
        else:
            raise ValueError(f"model={cfg.model!r} is not a baseline")
        self.kind, self.strata = cfg.model, cfg.batch_size  # MDLM: antithetic t over the global batch
        self.register_buffer("bos_class", torch.tensor(0))  # the AR prefix, set from the tokenizer

    def loss(self, tokens: torch.Tensor, valid: torch.Tensor, noise, t_min: float):
        """(loss, t [B], per-sample loss [B]) on tokenizer ids [B, T]; all randomness from `noise`."""
        classes = self.to_head[tokens]
        if self.kind == "ar":
            loss, per_sample = ar_loss(self.net, classes, valid)
            return loss, torch.zeros(len(tokens), device=tokens.device), per_sample
        t = (t_min + (1 - t_min) * noise.stratified(self.strata)).float().to(tokens.device)  # antithetic
        mask_u = noise.uniform(tokens.shape[1]).to(tokens.device)
        loss, per_sample = mdlm_loss(self.net, classes, t, mask_u, valid)
        return loss, t, per_sample

    @torch.no_grad()
    def generate(self, n: int, seq_len: int, steps: int, generator: torch.Generator, top_p: float = 1.0) -> torch.Tensor:
        """Tokenizer ids [n, seq_len]: MDLM with `steps` steps, or the GPT (steps unused) with nucleus top_p."""
        if self.kind == "mdlm":
            classes = mdlm_sample(self.net, n, seq_len, steps, generator)
        else:
            classes = ar_sample(self.net, n, seq_len, generator, int(self.bos_class), top_p=top_p)
        return self.head_to_tokens(classes)
