"""Views of a trained LDLM's latent space, as small DataFrames (the latent-inspection notebook's logic).

Encoding, decoding, interpolation and the sampling trajectory are the pipeline's (ldlm.api); this
module adds what needs a set of real texts: held-out blocks, their PCA, neighbours and statistics.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .api import interpolate_latents
from .data import build_token_data
from .frozen_lm import attention_mask


class LatentView:
    """Latents of the first `n` held-out blocks of the model's corpus, encoded once (clean, no decoder
    noise). `pipe` is an LDLM pipeline (`ldlm.load`); only those blocks go through the frozen LM."""

    def __init__(self, pipe, n: int = 64):
        pipe._needs_latents("LatentView")
        self.pipe, self.model, self.cfg = pipe, pipe.model, pipe.cfg
        data = build_token_data(self.cfg, pipe.tokenizer, self.cfg.frozen_lm)
        rows = slice(0, min(n, len(data.valid)))
        self.tokens = torch.as_tensor(np.array(data.valid[rows], dtype=np.int64))
        self.lengths = torch.as_tensor(np.array(data.valid_len[rows], dtype=np.int64))
        self.z = pipe.encode_hidden(pipe.hidden_states(self.tokens, self.lengths)).cpu()

    def text(self, ids) -> str:
        return self.pipe.text(ids)

    def decode(self, z: torch.Tensor) -> list[str]:
        return self.pipe.decode(z)

    def reconstructions(self, k: int = 3) -> pd.DataFrame:
        pred = self.model.latents_to_tokens(self.z[:k].to(self.pipe.device)).cpu()
        mask = attention_mask(self.lengths[:k], self.tokens.shape[1]).bool()
        acc = ((pred == self.tokens[:k]) & mask).sum(1) / mask.sum(1)
        return pd.DataFrame(dict(original=[self.text(t) for t in self.tokens[:k]],
                                 reconstruction=[self.text(p) for p in pred], token_acc=acc.tolist()))

    def sequence_vectors(self) -> torch.Tensor:
        """One vector per example: the mean of its latents over positions."""
        return self.z.mean(dim=1)

    def pca(self, components: int = 2) -> pd.DataFrame:
        x = self.sequence_vectors()
        x = x - x.mean(0)
        _, s, v = torch.linalg.svd(x, full_matrices=False)
        coords = x @ v[:components].T
        explained = (s**2 / (s**2).sum())[:components]
        frame = pd.DataFrame(coords.numpy(), columns=[f"pc{i + 1}" for i in range(components)])
        frame.insert(0, "index", range(len(frame)))
        frame["text"] = [self.text(t)[:80] for t in self.tokens]
        frame.attrs["explained_variance"] = explained.tolist()
        return frame

    def neighbours(self, i: int, k: int = 3) -> pd.DataFrame:
        x = torch.nn.functional.normalize(self.sequence_vectors(), dim=-1)
        sims = x @ x[i]
        order = sims.argsort(descending=True)[: k + 1]
        return pd.DataFrame(dict(index=order.tolist(), cosine=sims[order].tolist(),
                                 text=[self.text(self.tokens[j])[:120] for j in order]))

    def interpolate(self, i: int, j: int, points: int = 5) -> pd.DataFrame:
        """Decode (1 - a) z_i + a z_j, renormalised to the latent scale, for a in [0, 1]."""
        alphas, z = interpolate_latents(self.z[i], self.z[j], points)
        return pd.DataFrame(dict(alpha=alphas.tolist(), text=self.decode(z)))

    def trajectory(self, steps: int = 50, seed: int = 0, every: int = 10) -> pd.DataFrame:
        """The x0 estimate of one reverse process (the sample `pipe.generate(1, steps, seed=seed)`
        draws), decoded every `every` steps and at the end."""
        _, frame = self.pipe.generate(1, steps, seed=seed, return_trajectory=True, progress=False)
        keep = (frame["step"] % every == 0) | (frame["step"] == steps)
        return frame.loc[keep, ["step", "text"]].reset_index(drop=True)

    def dimension_stats(self) -> pd.DataFrame:
        """Mean and std of each latent dimension over all held-out positions."""
        flat = self.z.flatten(0, 1)
        return pd.DataFrame(dict(dim=range(flat.shape[1]), mean=flat.mean(0).tolist(), std=flat.std(0).tolist()))
