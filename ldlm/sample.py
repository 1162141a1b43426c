"""Unconditional samples from a trained run (LDLM, or a baseline: MDLM, GPT).

    python -m ldlm.sample --run runs/tiny-wiki --n 16 --steps 100 --out samples.jsonl [--seed 0]
    torchrun --nproc_per_node 8 -m ldlm.sample --run-dir runs/owt --num-samples 5000 --out samples.jsonl

LDLM: reverse process from N(0, I) with `--steps` steps (self-conditioned x0 estimates), then latent
decoder -> token decoder -> argmax tokens -> text. MDLM: `--steps` ancestral unmasking steps. GPT:
one token per step with nucleus `--top-p` (steps = NFE = seq_len - 1). Uses the EMA weights.
Batch k of `--batch-size` samples draws from a generator seeded by (seed, k), so the samples are the
same for any number of processes (under torchrun ranks take every world-th batch; rank 0 writes).
Sampling runs in the run's training precision (`train.autocast`: bf16 on GPUs under precision=auto).
One JSON line per sample: text (its documents joined by a blank line), docs (the documents: a wrapped
block can span several), token_ids (the documents' tokens), raw_ids (the sampled row as is, specials
included), steps, seed, sampler, dtype (of the model's compute), draw_dtype (of the random draws).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from . import checkpoint, distributed
from .baselines.model import Baseline
from .bench import compute_dtype
from .data import unpack_docs
from .distributed import DistEnv, gather_objects
from .frozen_lm import ModelUnavailable, load_tokenizer
from .config import ConfigError, check_counts
from .io import PathError, check_output, write_jsonl
from .metrics import join_docs
from .models import LDLM
from .noise import seed_for
from .sampling import SAMPLERS, generate_latents
from .train import autocast


def load_run(run: str | Path, device="cpu", weights: str = "ema") -> tuple[LDLM | Baseline, object]:
    """(model with the run's EMA (or raw) weights, its config) from a run folder or checkpoint file."""
    from .train import build_model

    state = checkpoint.load(run)
    cfg = checkpoint.load_config(state)
    model = build_model(cfg, state["lm_width"], state["vocab_size"], state["head_vocab"])
    checkpoint.load_module(model, state[weights], f"{weights} weights")
    return model.to(device).eval(), cfg


def content_ids(tokenizer, ids: list[int], pack_mode: str) -> list[int]:
    """The sample's text tokens: its documents' (`data.unpack_docs`), one after another."""
    return [i for doc in unpack_docs(tokenizer, ids, pack_mode) for i in doc]


def sampler_name(model, sampler: str | None, cfg) -> str:
    if isinstance(model, Baseline):
        return "ancestral" if model.kind == "mdlm" else "nucleus"
    return sampler or cfg.sampler


def sample_rows(model: LDLM | Baseline, cfg, tokenizer, n: int, steps: int, seed: int = 0, batch_size: int = 64,
                sampler: str | None = None, top_p: float = 1.0, env: DistEnv = DistEnv()) -> tuple[list[dict], float]:
    """n sample rows (module docstring; token ids in the model's tokenizer) and seconds."""
    device = next(model.parameters()).device
    t0 = time.perf_counter()
    with autocast(cfg, device):
        ids = generate(model, cfg, n, steps, seed, batch_size, sampler, top_p, env)
    seconds = time.perf_counter() - t0
    ar = isinstance(model, Baseline) and model.kind == "ar"
    # the baselines' categorical draws are float64 (baselines.sample_categorical); LDLM draws only
    # Gaussian noise, in the latents' float32, and picks tokens by argmax
    draw_dtype = "float64" if isinstance(model, Baseline) else "float32"
    rows = []
    for row in ids.tolist():
        docs_ids = unpack_docs(tokenizer, row, cfg.pack_mode)
        docs = [t for t in (tokenizer.decode(d).strip() for d in docs_ids) if t]
        rows.append(dict(text=join_docs(docs), docs=docs, token_ids=[i for d in docs_ids for i in d], raw_ids=row,
                         n_other=row.count(-1), steps=cfg.seq_len - 1 if ar else steps, top_p=top_p if ar else None,
                         seed=seed, sampler=sampler_name(model, sampler, cfg), dtype=compute_dtype(cfg, device),
                         draw_dtype=draw_dtype))
    return rows, seconds


@torch.no_grad()
def generate(model: LDLM | Baseline, cfg, n: int, steps: int, seed: int = 0, batch_size: int = 64,
             sampler: str | None = None, top_p: float = 1.0, env: DistEnv = DistEnv()) -> torch.Tensor:
    """Token ids [n, seq_len] of n samples. Batch k draws from a generator seeded by (seed, k); under
    torchrun rank r makes the batches k = r mod world and every rank gets all n rows, in order."""
    device = next(model.parameters()).device
    mine = []
    for k, start in enumerate(range(0, n, batch_size)):
        if k % env.world != env.rank:
            continue
        generator = torch.Generator(device=device).manual_seed(seed_for(seed, k))
        size = min(batch_size, n - start)
        if isinstance(model, Baseline):
            ids = model.generate(size, cfg.seq_len, steps, generator, top_p)
        else:
            ids = model.latents_to_tokens(generate_latents(model, size, steps, cfg, generator, sampler or cfg.sampler))
        mine.append((k, ids.cpu()))
    batches = sorted(gather_objects(mine, env), key=lambda kb: kb[0])
    return torch.cat([b for _, b in batches]) if batches else torch.empty(0, cfg.seq_len, dtype=torch.long)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ldlm.sample", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    # --run-dir / --num-samples: the spellings torchrun lets through (it takes --run and --n for its own options)
    parser.add_argument("--run", "--run-dir", dest="run", required=True, help="run folder (or checkpoint file)")
    parser.add_argument("--n", "--num-samples", dest="n", type=int, default=16, help="number of samples")
    parser.add_argument("--steps", type=int, default=None, help="reverse steps (default: the run's sample_steps)")
    parser.add_argument("--out", required=True, help="output JSONL")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--sampler", choices=sorted(SAMPLERS), default=None, help="LDLM only")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus p (GPT baseline only)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    try:  # every input is checked before any work: a bad value never costs (or empties) an existing --out
        check_counts(n=args.n, steps=args.steps, batch_size=args.batch_size)
        if not 0 < args.top_p <= 1:
            raise ConfigError(f"--top-p {args.top_p}: must be in (0, 1] (1 = no nucleus truncation)")
        check_output(args.out)
        env, device = distributed.setup(args.device)
        model, cfg = load_run(args.run, device)
        tokenizer = load_tokenizer(cfg.frozen_lm)
    except (checkpoint.CheckpointError, ModelUnavailable, ConfigError, PathError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    steps = args.steps or cfg.sample_steps
    rows, seconds = sample_rows(model, cfg, tokenizer, args.n, steps, args.seed, args.batch_size, args.sampler,
                                args.top_p, env)
    distributed.teardown()
    if not env.is_main:
        return 0
    try:
        write_jsonl(args.out, [dict(r, run=str(args.run)) for r in rows])
    except PathError as err:  # a full disk: the earlier --out file stays
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {len(rows)} samples to {args.out} in {seconds:.1f} s ({len(rows) / seconds:.2f} samples/s)")
    for row in rows[:3]:
        print("-", row["text"][:200])
    return 0


if __name__ == "__main__":
    sys.exit(main())
