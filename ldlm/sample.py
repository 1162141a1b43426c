"""Unconditional samples from a trained run.

    python -m ldlm.sample --run runs/tiny-wiki --n 16 --steps 100 --out samples.jsonl [--seed 0]

Reverse process from N(0, I) with `--steps` steps (self-conditioned x0 estimates), then latent
decoder -> token decoder -> argmax tokens -> text. Uses the EMA weights. Deterministic on CPU for a
given seed (and batch size). One JSON line per sample: text, token_ids, steps, seed, sampler, dtype.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from . import checkpoint
from .data import special_ids
from .frozen_lm import ModelUnavailable, default_device, load_tokenizer
from .io import write_jsonl
from .models import LDLM
from .sampling import SAMPLERS, generate_latents


def load_run(run: str | Path, device="cpu", weights: str = "ema") -> tuple[LDLM, object]:
    """(model with the run's EMA (or raw) weights, its config) from a run folder or checkpoint file."""
    state = checkpoint.load(run)
    cfg = checkpoint.load_config(state)
    model = LDLM(cfg, state["lm_width"], state["vocab_size"], head_vocab=state["head_vocab"])
    checkpoint.load_module(model, state[weights], f"{weights} weights")
    return model.to(device).eval(), cfg


def content_ids(tokenizer, ids: list[int], pack_mode: str) -> list[int]:
    """The sample's text tokens: no BOS, no special tokens, no "other" (-1); in pad mode up to the first EOS."""
    bos, eos, _ = special_ids(tokenizer)
    ids = ids[1:] if ids and ids[0] == bos else ids
    if pack_mode == "pad" and eos in ids:
        ids = ids[: ids.index(eos)]
    special = set(tokenizer.all_special_ids)
    return [i for i in ids if i >= 0 and i not in special]


def sample_rows(model: LDLM, cfg, tokenizer, n: int, steps: int, seed: int = 0, batch_size: int = 64,
                sampler: str | None = None) -> tuple[list[dict], float]:
    """n sample rows (text, token_ids = the text's tokens in the model's tokenizer, settings) and seconds."""
    t0 = time.perf_counter()
    ids = generate(model, cfg, n, steps, seed, batch_size, sampler)
    seconds = time.perf_counter() - t0
    rows = []
    for row in ids.tolist():
        content = content_ids(tokenizer, row, cfg.pack_mode)
        rows.append(dict(text=tokenizer.decode(content).strip(), token_ids=content, n_other=row.count(-1),
                         steps=steps, seed=seed, sampler=sampler or cfg.sampler, dtype="float32"))
    return rows, seconds


@torch.no_grad()
def generate(model: LDLM, cfg, n: int, steps: int, seed: int = 0, batch_size: int = 64,
             sampler: str | None = None) -> torch.Tensor:
    """Token ids [n, seq_len] of n samples; batches draw from one generator seeded with `seed`."""
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    out = []
    for start in range(0, n, batch_size):
        z0 = generate_latents(model, min(batch_size, n - start), steps, cfg, generator, sampler or cfg.sampler)
        out.append(model.latents_to_tokens(z0).cpu())
    return torch.cat(out) if out else torch.empty(0, cfg.seq_len, dtype=torch.long)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ldlm.sample", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="run folder (or checkpoint file)")
    parser.add_argument("--n", type=int, default=16, help="number of samples")
    parser.add_argument("--steps", type=int, default=None, help="reverse steps (default: the run's sample_steps)")
    parser.add_argument("--out", required=True, help="output JSONL")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--sampler", choices=sorted(SAMPLERS), default=None)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    if args.n < 1 or (args.steps is not None and args.steps < 1):
        print("error: --n and --steps must be >= 1", file=sys.stderr)
        return 2
    try:
        device = default_device(args.device)
        model, cfg = load_run(args.run, device)
        tokenizer = load_tokenizer(cfg.frozen_lm)
    except (checkpoint.CheckpointError, ModelUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    steps = args.steps or cfg.sample_steps
    rows, seconds = sample_rows(model, cfg, tokenizer, args.n, steps, args.seed, args.batch_size, args.sampler)
    write_jsonl(args.out, [dict(r, run=str(args.run)) for r in rows])
    print(f"wrote {len(rows)} samples to {args.out} in {seconds:.1f} s ({len(rows) / seconds:.2f} samples/s)")
    for row in rows[:3]:
        print("-", row["text"][:200])
    return 0


if __name__ == "__main__":
    sys.exit(main())
