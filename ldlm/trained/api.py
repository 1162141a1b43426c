"""Trained models from Python: `ldlm.load(path)` -> a `ModelPipeline`.

    import ldlm
    pipe = ldlm.load("models/tiny-wiki-ldlm")    # a saved model, a run folder, a ckpt.pt or a hub id
    pipe.generate(4, steps=30, seed=0)           # the texts of python -m ldlm.trained.sample --n 4 --steps 30 --seed 0
    z = pipe.encode(["some text"])               # latents [1, latent_len, latent_dim]       (LDLM only)
    pipe.decode(z), pipe.reconstruct(["some text"]), pipe.interpolate("one text", "another", points=5)
    pipe.save_pretrained("out/")                 # model.safetensors + config.json + model card (ldlm.trained.hub)

One object for the three kinds: the baselines (MDLM, GPT) generate; the latent operations raise
`Unsupported`, one line naming the kind and what works. Sampling is `ldlm.sampling.rows.sample_rows`, so the
texts are the sample command's for the same seed, batch size and device. Texts are encoded as
training frames them: BOS + tokens + EOS, padded to seq_len, the frozen LM's states at `lm_layer`.
"""
from __future__ import annotations

import numbers
import warnings
from pathlib import Path

import torch

from ..config import check_counts
from ..kinds.protocol import check_temperature
from ..nets.layers import normalize_latents
from ..nets.samplers import SAMPLERS
from ..runtime.precision import autocast, autocast_dtype
from ..runtime.threads import check_threads, use_threads
from ..sampling.rows import SeededBatches, row_text, sample_rows
from ..text.data import pack_pad, special_ids
from ..text.frozen_lm import attention_mask, load_frozen_lm
from .hub import SavedModelMixin


class Unsupported(RuntimeError):
    """An operation the loaded model's kind does not have; the message names the kind and what works."""


def interpolate_latents(z_a: torch.Tensor, z_b: torch.Tensor, points: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(alphas [points], latents [points, ...]): (1 - a) z_a + a z_b for a in [0, 1], each renormalised
    (`normalize_latents`): a plain mix is shorter than every latent the decoder was trained on."""
    alphas = torch.linspace(0, 1, points)
    return alphas, torch.stack([normalize_latents((1 - a) * z_a + a * z_b) for a in alphas])


class ModelPipeline(SavedModelMixin):
    """A trained model (EMA weights, eval mode), its config and tokenizer; the frozen LM is loaded on
    the first call that needs it (encode, reconstruct, interpolate). `source` is where the weights come
    from (run id, training summary, result rows): the model card's content."""

    def __init__(self, model, tokenizer, source: dict | None = None):
        self.model, self.cfg, self.tokenizer = model.eval(), model.cfg, tokenizer
        self.source = dict(source or {})
        self._frozen_lm = None

    @property
    def kind(self) -> str:
        return self.cfg.model

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def __repr__(self) -> str:
        params = sum(p.numel() for p in self.model.parameters())
        return (f"ModelPipeline({self.kind}, {params / 1e6:.1f}M parameters, seq_len {self.cfg.seq_len}, "
                f"frozen LM {self.cfg.frozen_lm}, {self.source.get('run_id', 'no run id')}, {self.device})")

    def _needs_latents(self, what: str) -> None:
        if not self.model.has_latents:
            raise Unsupported(f"{what}: a {self.kind!r} model has no latent space; it supports generate(n, steps=..., "
                              f"seed=...) only (encode, decode, reconstruct, interpolate and trajectories need an LDLM)")

    # -- sampling ----------------------------------------------------------------------------------
    def generate(self, n: int, steps: int | None = None, sampler: str | None = None, seed: int = 0,
                 top_p: float = 1.0, batch_size: int = 64, progress: bool = True, temperature: float | None = None):
        """n sampled texts. steps: reverse steps (default: the run's sample_steps; the GPT ignores it);
        sampler: ddpm | ddim (LDLM); top_p: nucleus p (GPT); temperature: >= 0, every categorical draw from
        softmax(logits / T) (0 = argmax; None = the kind's default: LDLM 0, MDLM and GPT 1); batch k is
        seeded by (seed, k)."""
        setting = self._setting(n, steps, sampler, top_p, batch_size, temperature)
        return self._texts(SeededBatches(n, seed, batch_size), setting, progress)

    def trajectory(self, n: int, steps: int | None = None, sampler: str | None = None, seed: int = 0,
                   batch_size: int = 64, progress: bool = True, temperature: float | None = None, callback=None):
        """(texts, trajectory) of LDLM: the texts `generate` gives with the same arguments, and a DataFrame
        (sample, step, text) of every reverse step's x0 estimate decoded (step = steps: the sample).
        callback(batch, step, z_t, x0_hat) at every reverse step."""
        self._needs_latents("trajectory(...)")
        setting = self._setting(n, steps, sampler, 1.0, batch_size, temperature)
        trajectory = []

        def record(k, i, z, x0):  # the decoded x0 estimate of every sample at every step
            trajectory.extend((k * batch_size + j, i, text) for j, text in enumerate(self.decode(x0)))
            if callback is not None:
                callback(k, i, z, x0)
        texts = self._texts(SeededBatches(n, seed, batch_size), setting, progress, record)
        import pandas as pd

        trajectory += [(j, setting["steps"], text) for j, text in enumerate(texts)]
        frame = pd.DataFrame(trajectory, columns=["sample", "step", "text"])
        return texts, frame.sort_values(["sample", "step"], kind="stable").reset_index(drop=True)

    def _setting(self, n, steps, sampler, top_p, batch_size, temperature) -> dict:
        """The sampling setting of generate/trajectory's arguments, each checked: one line naming a bad one."""
        check_counts(n=n, steps=steps, batch_size=batch_size, as_flags=False)
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p={top_p}: must be in (0, 1] (1 = no nucleus truncation)")
        if sampler is not None and sampler not in SAMPLERS:
            raise ValueError(f"sampler={sampler!r}: choose one of {sorted(SAMPLERS)}")
        check_temperature(temperature)
        return dict(steps=steps or self.cfg.sample_steps, sampler=sampler, top_p=top_p, temperature=temperature)

    def _texts(self, batches: SeededBatches, setting: dict, progress: bool, callback=None) -> list[str]:
        rows, _ = sample_rows(self.model, self.cfg, self.tokenizer, batches, setting, callback=callback, progress=progress)
        return [row["text"] for row in rows]

    def text(self, ids) -> str:
        """One row of tokenizer ids as text: its documents (no specials), joined by a blank line."""
        return row_text(self.tokenizer, ids.tolist() if torch.is_tensor(ids) else list(ids), self.cfg.pack_mode)

    # -- the latent space (LDLM) ---------------------------------------------------------------------
    @property
    def frozen_lm(self):
        self._needs_latents("frozen_lm")
        if self._frozen_lm is None:
            dtype = autocast_dtype(self.cfg, self.device) or torch.float32
            self._frozen_lm = load_frozen_lm(self.cfg.frozen_lm, self.cfg.lm_layer, self.device, dtype=dtype,
                                             width=len(self.model.h_mean))  # the run's state statistics
        return self._frozen_lm

    def tokenize(self, texts) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids [B, seq_len], lengths [B]) framed as training frames a document: BOS + tokens + EOS, then
        padding. A text longer than seq_len - 2 tokens is cut (no EOS then), as pack_mode=pad cuts."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts or not all(isinstance(t, str) for t in texts):
            raise ValueError(f"texts={texts!r:.80}: give a string or a non-empty list of strings")
        for i, text in enumerate(texts):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as err:  # the tokenizer would raise from Rust: a lone half of a UTF-16 pair
                raise ValueError(f"texts[{i}] holds {text[err.start]!r} at position {err.start}, a lone surrogate "
                                 f"(half of a UTF-16 pair), which is no Unicode text; decode your input with "
                                 f"errors='replace' or drop it") from None
        seq_len = self.cfg.seq_len
        encoded = self.tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
        blocks, lengths, cut = pack_pad(encoded, seq_len, *special_ids(self.tokenizer))
        ids, lengths = torch.as_tensor(blocks, dtype=torch.long), torch.as_tensor(lengths, dtype=torch.long)
        if cut:
            warnings.warn(f"{cut} of {len(texts)} texts are longer than the model's {seq_len - 2} tokens and were cut")
        return ids, lengths

    @torch.no_grad()
    def hidden_states(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The frozen LM's states [B, T, lm_width] at cfg.lm_layer, float32, as training read them."""
        device = self.device
        h = self.frozen_lm(ids.to(device), attention_mask(lengths, ids.shape[1]).to(device)).float()
        return h.half().float() if self.cfg.cache_hidden else h  # training read them from its float16 cache

    @torch.no_grad()
    def encode_hidden(self, h: torch.Tensor) -> torch.Tensor:
        """Clean latents [B, L, D] of frozen-LM states (standardised with the run's statistics)."""
        self._needs_latents("encode")
        with autocast(self.cfg, self.device):
            return self.model.encode(self.model.standardize(h.to(self.device))).float()

    def encode(self, texts, batch_size: int = 64, progress: bool = True) -> torch.Tensor:
        """Latents [B, latent_len, latent_dim] of texts (a str is one text)."""
        from tqdm.auto import tqdm

        self._needs_latents("encode")
        check_counts(batch_size=batch_size, as_flags=False)
        ids, lengths = self.tokenize(texts)
        starts = range(0, len(ids), batch_size)
        return torch.cat([self.encode_hidden(self.hidden_states(ids[i:i + batch_size], lengths[i:i + batch_size]))
                          for i in tqdm(starts, desc="encoding", unit="batch", disable=not progress or len(starts) < 2)])

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, lengths=None) -> list[str]:
        """Texts of latents [B, L, D] (decoder -> token decoder -> argmax); `lengths` [B] keeps only
        the first lengths[i] positions of row i (what `tokenize` framed)."""
        self._needs_latents("decode")
        latents = self.check_latents(latents)
        lengths = self.check_lengths(lengths, len(latents))
        with autocast(self.cfg, self.device):
            ids = self.model.latents_to_tokens(latents.to(self.device)).cpu()
        if lengths is not None:
            return [self.text(row[:k]) for row, k in zip(ids, lengths)]
        return [self.text(row) for row in ids]

    def check_latents(self, latents) -> torch.Tensor:
        """`latents` as float32 [B, L, D] if decode can read them (any floating dtype is cast), else ValueError."""
        shape = (self.cfg.latent_len or self.cfg.seq_len, self.cfg.latent_dim)
        if not torch.is_tensor(latents) or latents.dim() != 3 or tuple(latents.shape[1:]) != shape:
            got = f"of shape {list(latents.shape)}" if torch.is_tensor(latents) else f"of type {type(latents).__name__}"
            raise ValueError(f"latents {got}: expected a tensor [batch, {shape[0]}, {shape[1]}] (what encode returns)")
        if not latents.is_floating_point():
            raise ValueError(f"latents of dtype {latents.dtype}: expected floating point values (what encode returns)")
        bad = ~torch.isfinite(latents)
        if bad.any():
            row, pos, dim = bad.nonzero()[0].tolist()
            raise ValueError(f"latents hold {int(bad.sum())} non-finite values (NaN or inf), the first "
                             f"{latents[row, pos, dim].item()} at [{row}, {pos}, {dim}]; decode only finite latents")
        return latents.float()

    def check_lengths(self, lengths, batch: int) -> list[int] | None:
        """`lengths` as a list of `batch` ints in 1..seq_len (or None), else ValueError naming them."""
        if lengths is None:
            return None
        values = lengths.tolist() if torch.is_tensor(lengths) else lengths
        whole = lambda k: isinstance(k, numbers.Integral) and not isinstance(k, bool)
        if (isinstance(values, (str, bytes)) or not hasattr(values, "__len__") or len(values) != batch
                or not all(whole(k) and 1 <= k <= self.cfg.seq_len for k in values)):
            raise ValueError(f"lengths={values!r:.80}: give one integer in 1..{self.cfg.seq_len} (positions kept) "
                             f"per latent row ({batch})")
        return [int(k) for k in values]

    def reconstruct(self, texts, batch_size: int = 64, progress: bool = True) -> list[str]:
        """texts -> clean latents -> texts: what the autoencoder keeps (held-out recon_acc in one line)."""
        self._needs_latents("reconstruct")
        _, lengths = self.tokenize(texts)
        return self.decode(self.encode(texts, batch_size, progress), lengths)

    def interpolate(self, text_a: str, text_b: str, points: int = 5):
        """DataFrame (alpha, text): the latents of the two texts mixed as (1 - alpha) z_a + alpha z_b,
        renormalised, and decoded up to the length mixed the same way (alpha 0 and 1 are the two
        reconstructions; positions past a text's EOS decode padding, which the model never learned)."""
        import pandas as pd

        self._needs_latents("interpolate")
        check_counts(points=points, as_flags=False)
        _, lengths = self.tokenize([text_a, text_b])
        alphas, mixed = interpolate_latents(*self.encode([text_a, text_b], progress=False), points)
        mixed_lengths = ((1 - alphas) * lengths[0] + alphas * lengths[1]).round().long()
        return pd.DataFrame(dict(alpha=alphas.tolist(), text=self.decode(mixed, mixed_lengths)))


def load(path: str | Path, device: str = "auto", threads: int | None = 0, allow_mismatch: bool = False) -> ModelPipeline:
    """The model at `path`: a run folder (its ckpt.pt), a checkpoint file, a saved model
    (`save_pretrained`, `python -m ldlm.trained.export`) or a Hugging Face hub id of one. EMA weights, eval mode;
    device auto = the GPU if there is one. threads: torch's CPU threads, for the whole process, when the
    model runs on the CPU (0 = the cores idle now, ldlm.runtime.threads; N = exactly N). A saved model whose
    config.json or tokenizer differ from those it was exported with is refused, unless `allow_mismatch`
    (then a warning says so)."""
    check_threads(threads)
    pipe = ModelPipeline.load(path, device, allow_mismatch)
    if pipe.device.type == "cpu":
        use_threads(threads)
    return pipe
