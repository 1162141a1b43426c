"""Samples from any model kind, as rows: keyed batches (the same samples for any number of processes), the
settings they ran with, their documents decoded. `python -m ldlm.trained.sample` writes them as JSON lines,
the pipeline as its sample files, `ldlm.load(...).generate` returns their texts.

Batch k of `batch_size` samples draws from a generator seeded by (seed, k), so the samples are the
same for any number of processes (under torchrun ranks take every world-th batch; rank 0 writes).
Sampling runs in the run's training precision (`ldlm.runtime.precision`: bf16 on GPUs under precision=auto).
One row per sample: text (its documents joined by a blank line), docs (the documents: a wrapped
block can span several), token_ids (the documents' tokens), raw_ids (the sampled row as is, specials
included), steps, top_p, temperature, seed, sampler, dtype (of the model's compute), draw_dtype (of the
random draws).
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import torch

from ..kinds.protocol import TextModel
from ..nets.noise import seed_for
from ..nets.samplers import SAMPLER_VERSION
from ..runtime.distributed import DistEnv, gather_objects
from ..runtime.precision import autocast, compute_dtype
from ..text.data import join_docs, unpack_docs


def row_docs(tokenizer, row: list[int], pack_mode: str) -> tuple[list[str], list[list[int]]]:
    """(the documents' texts, their token ids) of one sampled or decoded row."""
    docs_ids = unpack_docs(tokenizer, row, pack_mode)
    return [t for t in (tokenizer.decode(d).strip() for d in docs_ids) if t], docs_ids


def row_text(tokenizer, row: list[int], pack_mode: str) -> str:
    """One row as a sample's text: its documents joined by a blank line."""
    return join_docs(row_docs(tokenizer, row, pack_mode)[0])


@dataclass(frozen=True)
class SeededBatches:
    """Which samples are drawn: n of them in batches of `batch_size`, batch k from a generator seeded by
    (seed, k), so that they are the same for any number of processes."""
    n: int
    seed: int = 0
    batch_size: int = 64

    def mine(self, env: DistEnv) -> list[tuple[int, int]]:
        """(k, first sample) of the batches this rank draws: k = rank mod world."""
        return [(k, start) for k, start in enumerate(range(0, self.n, self.batch_size)) if k % env.world == env.rank]

    def size(self, start: int) -> int:
        return min(self.batch_size, self.n - start)


def setting_knobs(setting: dict) -> tuple:
    """(steps, sampler, top_p, temperature) of a sampling setting: a dict with "steps" and, optionally,
    "sampler" (None: the run's), "top_p" (1: no truncation) and "temperature" (None: the kind's default).
    An entry of `sampling.settings.sampling_settings` is one."""
    return setting["steps"], setting.get("sampler"), setting.get("top_p", 1.0), setting.get("temperature")


def sample_rows(model: TextModel, cfg, tokenizer, batches: SeededBatches, setting: dict, env: DistEnv = DistEnv(),
                callback=None, progress: bool = False) -> tuple[list[dict], float]:
    """The sample rows (module docstring; token ids in the model's tokenizer) of `batches` at `setting`
    (`setting_knobs`), and seconds."""
    device = next(model.parameters()).device
    record = model.sampling_record(*setting_knobs(setting))  # as they run; checks the temperature
    t0 = time.perf_counter()
    with autocast(cfg, device):
        ids = sample_ids(model, cfg, batches, setting, env, callback, progress)
    seconds = time.perf_counter() - t0
    rows = []
    for row in ids.tolist():
        docs, docs_ids = row_docs(tokenizer, row, cfg.pack_mode)
        rows.append(dict(text=join_docs(docs), docs=docs, token_ids=[i for d in docs_ids for i in d], raw_ids=row,
                         n_other=row.count(-1), steps=record["steps"], top_p=record["top_p"],
                         temperature=record["temperature"], seed=batches.seed,
                         sampler=record["sampler"], dtype=compute_dtype(cfg, device), draw_dtype=record["draw_dtype"],
                         sampler_version=SAMPLER_VERSION))
    return rows, seconds


def _counted(bar, callback, *args) -> None:
    """A reverse step: one tick of the bar, then the caller's callback if there is one."""
    bar.update(1)
    if callback is not None:
        callback(*args)


@torch.no_grad()
def sample_ids(model: TextModel, cfg, batches: SeededBatches, setting: dict, env: DistEnv = DistEnv(), callback=None,
               progress: bool = False) -> torch.Tensor:
    """Token ids [n, seq_len] of `batches` at `setting` (`setting_knobs`); under torchrun rank r makes the
    batches k = r mod world and every rank gets all n rows, in order.
    `callback(k, step, z_t, x0_hat)` at every reverse step of batch k (models with latents only);
    `progress`: a bar over this rank's reverse steps (models with latents; the others: its samples), so
    that it moves within one batch too."""
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    steps, sampler, top_p, temperature = setting_knobs(setting)
    mine = []
    todo = batches.mine(env)
    by_step = model.has_latents
    bar = tqdm(total=len(todo) * steps if by_step else sum(batches.size(s) for _, s in todo),
               desc="sampling", unit="step" if by_step else "sample", disable=not progress)
    for k, start in todo:
        generator = torch.Generator(device=device).manual_seed(seed_for(batches.seed, k))
        step_callback = functools.partial(callback, k) if callback is not None else None
        if by_step and progress:
            step_callback = functools.partial(_counted, bar, step_callback)
        ids = model.generate(batches.size(start), steps, generator, sampler, top_p, temperature, step_callback)
        bar.update(0 if by_step else len(ids))
        mine.append((k, ids.cpu()))
    bar.close()
    done = sorted(gather_objects(mine, env), key=lambda kb: kb[0])
    return torch.cat([b for _, b in done]) if done else torch.empty(0, cfg.seq_len, dtype=torch.long)
