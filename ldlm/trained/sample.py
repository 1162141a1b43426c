"""Unconditional samples from a trained run (LDLM, or a baseline: MDLM, GPT).

    python -m ldlm.trained.sample --run runs/tiny-wiki --n 16 --steps 100 --out samples.jsonl [--seed 0]
    torchrun --nproc_per_node 8 -m ldlm.trained.sample --run-dir runs/owt --num-samples 5000 --out samples.jsonl

LDLM: reverse process from N(0, I) with `--steps` steps (self-conditioned x0 estimates), then latent
decoder -> token decoder -> argmax tokens -> text. MDLM: `--steps` ancestral unmasking steps. GPT:
one token per step with nucleus `--top-p` (steps = NFE = seq_len - 1). `--temperature T` draws every
categorical choice from softmax(logits / T): LDLM's tokens (default 0: the argmax), MDLM's unmasked
classes and the GPT's next tokens (default 1: the model's distribution). Uses the EMA weights; `--run`
is a run folder, a checkpoint file or a saved model (`python -m ldlm.trained.export`).
Batch k of `--batch-size` samples draws from a generator seeded by (seed, k), so the samples are the
same for any number of processes (under torchrun ranks take every world-th batch; rank 0 writes).
Sampling runs in the run's training precision (`ldlm.runtime.precision`: bf16 on GPUs under precision=auto).
One JSON line per sample: text (its documents joined by a blank line), docs (the documents: a wrapped
block can span several), token_ids (the documents' tokens), raw_ids (the sampled row as is, specials
included), steps, top_p, temperature, seed, sampler, dtype (of the model's compute), draw_dtype (of the
random draws).
"""
from __future__ import annotations

import argparse
import functools
import sys
import time

import torch

from ..runtime import checkpoint, distributed
from ..config import TEMPERATURE_RULE, ConfigError, check_counts, is_temperature
from ..text.data import unpack_docs
from ..runtime.distributed import DistEnv, gather_objects
from ..text.frozen_lm import ModelUnavailable
from ..io import PathError, check_output, dumps, write_jsonl
from ..evaluation.metrics import join_docs
from ..nets.noise import seed_for
from ..runtime.precision import autocast, compute_dtype
from ..kinds.protocol import TextModel
from ..nets.samplers import SAMPLER_VERSION, SAMPLERS
from ..runtime.threads import check_threads


def row_docs(tokenizer, row: list[int], pack_mode: str) -> tuple[list[str], list[list[int]]]:
    """(the documents' texts, their token ids) of one sampled or decoded row."""
    docs_ids = unpack_docs(tokenizer, row, pack_mode)
    return [t for t in (tokenizer.decode(d).strip() for d in docs_ids) if t], docs_ids


def row_text(tokenizer, row: list[int], pack_mode: str) -> str:
    """One row as a sample's text: its documents joined by a blank line."""
    return join_docs(row_docs(tokenizer, row, pack_mode)[0])


def sample_rows(model: TextModel, cfg, tokenizer, n: int, steps: int, seed: int = 0, batch_size: int = 64,
                sampler: str | None = None, top_p: float = 1.0, env: DistEnv = DistEnv(), callback=None,
                progress: bool = False, temperature: float | None = None) -> tuple[list[dict], float]:
    """n sample rows (module docstring; token ids in the model's tokenizer) and seconds. temperature:
    None = the model kind's default (TextModel.default_temperature)."""
    device = next(model.parameters()).device
    setting = model.sampling_record(steps, sampler, top_p, temperature)  # as they run; checks the temperature
    t0 = time.perf_counter()
    with autocast(cfg, device):
        ids = generate(model, cfg, n, steps, seed, batch_size, sampler, top_p, env, callback, progress, temperature)
    seconds = time.perf_counter() - t0
    rows = []
    for row in ids.tolist():
        docs, docs_ids = row_docs(tokenizer, row, cfg.pack_mode)
        rows.append(dict(text=join_docs(docs), docs=docs, token_ids=[i for d in docs_ids for i in d], raw_ids=row,
                         n_other=row.count(-1), steps=setting["steps"], top_p=setting["top_p"],
                         temperature=setting["temperature"], seed=seed,
                         sampler=setting["sampler"], dtype=compute_dtype(cfg, device), draw_dtype=setting["draw_dtype"],
                         sampler_version=SAMPLER_VERSION))
    return rows, seconds


def _counted(bar, callback, *args) -> None:
    """A reverse step: one tick of the bar, then the caller's callback if there is one."""
    bar.update(1)
    if callback is not None:
        callback(*args)


@torch.no_grad()
def generate(model: TextModel, cfg, n: int, steps: int, seed: int = 0, batch_size: int = 64,
             sampler: str | None = None, top_p: float = 1.0, env: DistEnv = DistEnv(), callback=None,
             progress: bool = False, temperature: float | None = None) -> torch.Tensor:
    """Token ids [n, seq_len] of n samples. Batch k draws from a generator seeded by (seed, k); under
    torchrun rank r makes the batches k = r mod world and every rank gets all n rows, in order.
    `callback(k, step, z_t, x0_hat)` at every reverse step of batch k (models with latents only);
    `progress`: a bar over this rank's reverse steps (models with latents; the others: its samples), so
    that it moves within one batch too."""
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    mine = []
    batches = [(k, start) for k, start in enumerate(range(0, n, batch_size)) if k % env.world == env.rank]
    by_step = model.has_latents
    bar = tqdm(total=len(batches) * steps if by_step else sum(min(batch_size, n - s) for _, s in batches),
               desc="sampling", unit="step" if by_step else "sample", disable=not progress)
    for k, start in batches:
        generator = torch.Generator(device=device).manual_seed(seed_for(seed, k))
        step_callback = functools.partial(callback, k) if callback is not None else None
        if by_step and progress:
            step_callback = functools.partial(_counted, bar, step_callback)
        ids = model.generate(min(batch_size, n - start), steps, generator, sampler, top_p, temperature, step_callback)
        bar.update(0 if by_step else len(ids))
        mine.append((k, ids.cpu()))
    bar.close()
    batches = sorted(gather_objects(mine, env), key=lambda kb: kb[0])
    return torch.cat([b for _, b in batches]) if batches else torch.empty(0, cfg.seq_len, dtype=torch.long)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ldlm.trained.sample", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    # --run-dir / --num-samples: the spellings torchrun lets through (it takes --run and --n for its own options)
    parser.add_argument("--run", "--run-dir", dest="run", required=True,
                        help="run folder, checkpoint file or saved model (python -m ldlm.trained.export)")
    parser.add_argument("--n", "--num-samples", dest="n", type=int, default=16, help="number of samples")
    parser.add_argument("--steps", type=int, default=None, help="reverse steps (default: the run's sample_steps)")
    parser.add_argument("--out", required=True, help="output JSONL; - writes the lines to stdout (the report to stderr)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--sampler", choices=sorted(SAMPLERS), default=None, help="LDLM only")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus p (GPT baseline only)")
    parser.add_argument("--temperature", type=float, default=None,
                        help="sampling temperature, >= 0 (0 = argmax; default: LDLM 0, MDLM and GPT 1)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (default 0: the cores idle at start, ldlm.runtime.threads)")
    args = parser.parse_args(argv)
    try:  # every input is checked before any work: a bad value never costs (or empties) an existing --out
        check_counts(n=args.n, steps=args.steps, batch_size=args.batch_size)
        check_threads(args.threads, "--threads ")
        if not 0 < args.top_p <= 1:
            raise ConfigError(f"--top-p {args.top_p}: must be in (0, 1] (1 = no nucleus truncation)")
        if args.temperature is not None and not is_temperature(args.temperature):
            raise ConfigError(f"--temperature {args.temperature}: {TEMPERATURE_RULE}")
        if args.out != "-":
            check_output(args.out, inputs={"--run": args.run})
        env, device = distributed.setup(args.device)
        from .api import load

        pipe = load(args.run, device, threads=args.threads)
        model, cfg, tokenizer = pipe.model, pipe.cfg, pipe.tokenizer
    except (checkpoint.CheckpointError, ModelUnavailable, ConfigError, PathError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    steps = args.steps or cfg.sample_steps
    rows, seconds = sample_rows(model, cfg, tokenizer, args.n, steps, args.seed, args.batch_size, args.sampler,
                                args.top_p, env, progress=env.is_main and sys.stderr.isatty(), temperature=args.temperature)
    distributed.teardown()
    if not env.is_main:
        return 0
    rows = [dict(r, run=str(args.run)) for r in rows]
    report = sys.stdout
    try:
        if args.out == "-":  # the samples are stdout's content: the report goes to stderr
            sys.stdout.write("".join(dumps(r) + "\n" for r in rows))
            sys.stdout.flush()
            report = sys.stderr
        else:
            write_jsonl(args.out, rows)
    except PathError as err:  # a full disk: the earlier --out file stays
        print(f"error: {err}", file=sys.stderr)
        return 2
    where = "stdout" if args.out == "-" else args.out
    print(f"wrote {len(rows)} samples to {where} in {seconds:.1f} s ({len(rows) / seconds:.2f} samples/s)", file=report)
    for row in rows[:3]:
        print("-", row["text"][:200], file=report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
