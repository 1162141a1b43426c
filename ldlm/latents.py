"""Views of a trained run's latent space, as small DataFrames (the latent-inspection notebook's logic)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .data import pack_pad, pack_wrap, special_ids, unpack_docs
from .frozen_lm import attention_mask, load_tokenizer
from .models import normalize_latents
from .sample import content_ids


def pack_texts(tokenizer, texts: list[str], seq_len: int, pack_mode: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each text as one row framed as the run's training rows are: (tokens [N, T], the frozen LM's
    attention lengths [N], the text's own span BOS + ids + EOS [N]).

    pad: BOS + ids + EOS, padded. wrap: a training row never holds padding, so the text is repeated,
    EOS after each copy, until the block is full; only the first copy is the text's span."""
    bos, eos, pad = special_ids(tokenizer)
    rows, attend, spans = [], [], []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"][: seq_len - 2]
        if not ids:
            raise ValueError(f"text {text!r} has no tokens")
        if pack_mode == "pad":
            block, lengths, _ = pack_pad([ids], seq_len, bos, eos, pad)
            attend.append(int(lengths[0]))
        else:
            copies = -(-(seq_len - 2) // (len(ids) + 1))
            block = pack_wrap([ids] * copies, seq_len, bos, eos)[:1]
            attend.append(seq_len)
        rows.append(torch.as_tensor(block[0], dtype=torch.long))
        spans.append(len(ids) + 2)
    return torch.stack(rows), torch.tensor(attend), torch.tensor(spans)


class LatentView:
    """Latents of a set of rows, encoded once (clean, no decoder noise): the first `n` held-out rows
    of a corpus, or your own texts (`LatentView.of_texts`). `lengths` are the positions that count
    (shown as text, scored); a text view shows each decoded row's first document."""

    def __init__(self, model, corpus, n: int = 64):
        rows = np.arange(min(n, len(corpus.tokens.valid)))
        h, tokens, lengths = corpus.batch("valid", rows, "cpu")
        self._setup(model, h, tokens, lengths, first_document=False)

    @classmethod
    def of_texts(cls, model, corpus, texts: list[str]) -> "LatentView":
        """Your own texts through the run's frozen LM (`corpus.lm`) and encoder."""
        view = cls.__new__(cls)
        tokenizer = load_tokenizer(model.cfg.frozen_lm)
        tokens, attend, spans = pack_texts(tokenizer, list(texts), model.cfg.seq_len, model.cfg.pack_mode)
        h = corpus.lm(tokens, attention_mask(attend, tokens.shape[1])).float()
        view._setup(model, h, tokens, spans, first_document=True)
        return view

    def _setup(self, model, h: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor, first_document: bool):
        self.model, self.cfg = model.eval(), model.cfg
        self.tokenizer = load_tokenizer(self.cfg.frozen_lm)
        self.tokens, self.lengths, self.first_document = tokens, lengths, first_document
        with torch.no_grad():
            self.z = model.encode(model.standardize(h))

    def text(self, ids, length: int | None = None) -> str:
        """The text of a row's first `length` positions (all by default); of a text view, only its first
        document (the rest of a wrap row repeats it)."""
        ids = (ids.tolist() if torch.is_tensor(ids) else list(ids))[:length]
        if self.first_document:
            docs = unpack_docs(self.tokenizer, ids, self.cfg.pack_mode)
            return self.tokenizer.decode(docs[0]) if docs else ""
        return self.tokenizer.decode(content_ids(self.tokenizer, ids, self.cfg.pack_mode))

    def decode(self, z: torch.Tensor, length: int | None = None) -> list[str]:
        return [self.text(row, length) for row in self.model.latents_to_tokens(z)]

    def reconstructions(self, k: int | None = None) -> pd.DataFrame:
        """The first k rows (all by default) and their reconstructions, with token accuracy over `lengths`."""
        k = len(self.z) if k is None else k
        pred = self.model.latents_to_tokens(self.z[:k])
        mask = attention_mask(self.lengths[:k], self.tokens.shape[1]).bool()
        acc = ((pred == self.tokens[:k]) & mask).sum(1) / mask.sum(1)
        return pd.DataFrame(dict(original=[self.text(t, n) for t, n in zip(self.tokens[:k], self.lengths[:k].tolist())],
                                 reconstruction=[self.text(p, n) for p, n in zip(pred, self.lengths[:k].tolist())],
                                 token_acc=acc.tolist()))

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
        alphas = torch.linspace(0, 1, points)
        z = torch.stack([normalize_latents((1 - a) * self.z[i] + a * self.z[j]) for a in alphas])
        return pd.DataFrame(dict(alpha=alphas.tolist(), text=self.decode(z, int(self.lengths[[i, j]].max()))))

    def dimension_stats(self) -> pd.DataFrame:
        """Mean and std of each latent dimension over all held-out positions."""
        flat = self.z.flatten(0, 1)
        return pd.DataFrame(dict(dim=range(flat.shape[1]), mean=flat.mean(0).tolist(), std=flat.std(0).tolist()))
