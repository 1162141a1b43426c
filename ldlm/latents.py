"""Views of a trained run's latent space, as small DataFrames (the latent-inspection notebook's logic)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .frozen_lm import attention_mask, load_tokenizer
from .models import normalize_latents
from .sample import content_ids
from .samplers import generate_latents


class LatentView:
    """Latents of the first `n` held-out examples of a corpus, encoded once (clean, no decoder noise)."""

    def __init__(self, model, data, n: int = 64):
        self.model, self.cfg = model.eval(), model.cfg
        self.tokenizer = load_tokenizer(self.cfg.frozen_lm)
        rows = np.arange(min(n, len(data.tokens.valid)))
        h, self.tokens, self.lengths = data.batch("valid", rows, "cpu")
        with torch.no_grad():
            self.z = model.encode(model.standardize(h))

    def text(self, ids) -> str:
        ids = ids.tolist() if torch.is_tensor(ids) else list(ids)
        return self.tokenizer.decode(content_ids(self.tokenizer, ids, self.cfg.pack_mode))

    def decode(self, z: torch.Tensor) -> list[str]:
        return [self.text(row) for row in self.model.latents_to_tokens(z)]

    def reconstructions(self, k: int = 3) -> pd.DataFrame:
        pred = self.model.latents_to_tokens(self.z[:k])
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
        alphas = torch.linspace(0, 1, points)
        z = torch.stack([normalize_latents((1 - a) * self.z[i] + a * self.z[j]) for a in alphas])
        return pd.DataFrame(dict(alpha=alphas.tolist(), text=self.decode(z)))

    def trajectory(self, steps: int = 50, seed: int = 0, every: int = 10) -> pd.DataFrame:
        """The x0 estimate of one reverse process, decoded every `every` steps."""
        snapshots = []
        keep = lambda i, z, x0: snapshots.append((i, x0.clone())) if i % every == 0 else None
        generator = torch.Generator().manual_seed(seed)
        final = generate_latents(self.model, 1, steps, self.cfg, generator, callback=keep)
        snapshots.append((steps, final))
        return pd.DataFrame(dict(step=[i for i, _ in snapshots], text=[self.decode(x0)[0] for _, x0 in snapshots]))

    def dimension_stats(self) -> pd.DataFrame:
        """Mean and std of each latent dimension over all held-out positions."""
        flat = self.z.flatten(0, 1)
        return pd.DataFrame(dict(dim=range(flat.shape[1]), mean=flat.mean(0).tolist(), std=flat.std(0).tolist()))
