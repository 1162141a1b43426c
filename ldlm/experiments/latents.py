"""Views of a trained LDLM's latent space, as small DataFrames (the latent-inspection notebook's logic).

Encoding, decoding and interpolation are the pipeline's (ldlm.trained.api); this module adds what needs a set
of real texts: held-out blocks (or your own sentences), their PCA, neighbours and statistics. The
denoising trajectory is `ldlm.evaluation.diagnostics.denoising_trajectory`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..evaluation.diagnostics import latent_geometry
from ..text.data import build_token_data
from ..text.frozen_lm import attention_mask
from ..trained.api import interpolate_latents


class LatentView:
    """Latents of a set of rows, encoded once (clean, no decoder noise): the first `n` held-out blocks of
    the model's corpus, or your own texts (`LatentView.of_texts`). `pipe` is an LDLM pipeline
    (`ldlm.load`); `lengths` are the positions that count (shown as text, scored)."""

    def __init__(self, pipe, n: int = 64):
        pipe._needs_latents("LatentView")
        data = build_token_data(pipe.cfg, pipe.tokenizer, pipe.cfg.frozen_lm)
        rows = slice(0, min(n, len(data.valid)))
        self._setup(pipe, torch.as_tensor(np.array(data.valid[rows], dtype=np.int64)),
                    torch.as_tensor(np.array(data.valid_len[rows], dtype=np.int64)))

    @classmethod
    def of_texts(cls, pipe, texts: list[str]) -> "LatentView":
        """Your own texts, framed as `pipe.tokenize` frames them."""
        pipe._needs_latents("LatentView")
        view = cls.__new__(cls)
        view._setup(pipe, *pipe.tokenize(list(texts)))
        return view

    def _setup(self, pipe, tokens: torch.Tensor, lengths: torch.Tensor) -> None:
        self.pipe, self.model, self.cfg = pipe, pipe.model, pipe.cfg
        self.tokens, self.lengths = tokens, lengths
        self.z = pipe.encode_hidden(pipe.hidden_states(tokens, lengths)).cpu()

    def text(self, ids, length: int | None = None) -> str:
        """The text of a row's first `length` positions (all by default)."""
        return self.pipe.text((ids.tolist() if torch.is_tensor(ids) else list(ids))[:length])

    def decode(self, z: torch.Tensor, length: int | None = None) -> list[str]:
        return [self.text(row, length) for row in self.model.latents_to_tokens(z.to(self.pipe.device)).cpu()]

    def reconstructions(self, k: int | None = None) -> pd.DataFrame:
        """The first k rows (all by default) and their reconstructions, with token accuracy over `lengths`."""
        k = len(self.z) if k is None else k
        pred = self.model.latents_to_tokens(self.z[:k].to(self.pipe.device)).cpu()
        mask = attention_mask(self.lengths[:k], self.tokens.shape[1]).bool()
        acc = ((pred == self.tokens[:k]) & mask).sum(1) / mask.sum(1)
        lengths = self.lengths[:k].tolist()
        return pd.DataFrame(dict(original=[self.text(t, n) for t, n in zip(self.tokens[:k], lengths)],
                                 reconstruction=[self.text(p, n) for p, n in zip(pred, lengths)], token_acc=acc.tolist()))

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
                                 text=[self.text(self.tokens[j]) for j in order]))

    def interpolate(self, i: int, j: int, points: int = 5) -> pd.DataFrame:
        """Decode (1 - a) z_i + a z_j, renormalised to the latent scale, for a in [0, 1]."""
        alphas, z = interpolate_latents(self.z[i], self.z[j], points)
        return pd.DataFrame(dict(alpha=alphas.tolist(), text=self.decode(z, int(self.lengths[[i, j]].max()))))

    def geometry(self) -> dict:
        """How the latents of the valid positions fill their space: mean share, variance per dimension,
        participation ratio (`ldlm.evaluation.diagnostics.latent_geometry`)."""
        return latent_geometry(self.z, attention_mask(self.lengths, self.tokens.shape[1]))

    def dimension_stats(self) -> pd.DataFrame:
        """Mean and std of each latent dimension over all held-out positions."""
        flat = self.z.flatten(0, 1)
        return pd.DataFrame(dict(dim=range(flat.shape[1]), mean=flat.mean(0).tolist(), std=flat.std(0).tolist()))
