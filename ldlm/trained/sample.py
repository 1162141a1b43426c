"""Unconditional samples from a trained run (LDLM, or a baseline: MDLM, GPT).

    python -m ldlm.trained.sample --run runs/tiny-wiki --n 16 --steps 100 --out samples.jsonl [--seed 0]
    torchrun --nproc_per_node 8 -m ldlm.trained.sample --run-dir runs/owt --num-samples 5000 --out samples.jsonl

LDLM: reverse process from N(0, I) with `--steps` steps (self-conditioned x0 estimates), then latent
decoder -> token decoder -> argmax tokens -> text. MDLM: `--steps` ancestral unmasking steps. GPT:
one token per step with nucleus `--top-p` (steps = NFE = seq_len - 1). `--temperature T` draws every
categorical choice from softmax(logits / T): LDLM's tokens (default 0: the argmax), MDLM's unmasked
classes and the GPT's next tokens (default 1: the model's distribution). Uses the EMA weights; `--run`
is a run folder, a checkpoint file or a saved model (`python -m ldlm.trained.export`).
Samples are drawn by ldlm.sampling.rows (one JSON line per sample, its fields said there).
"""
from __future__ import annotations

import argparse
import sys

from ..config import TEMPERATURE_RULE, ConfigError, check_counts, is_temperature
from ..io import PathError, check_output, dumps, write_jsonl
from ..nets.samplers import SAMPLERS
from ..runtime import checkpoint, distributed
from ..runtime.threads import check_threads
from ..sampling.rows import SeededBatches, sample_rows
from ..text.frozen_lm import ModelUnavailable
from .api import load


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
    setting = dict(steps=args.steps or cfg.sample_steps, sampler=args.sampler, top_p=args.top_p,
                   temperature=args.temperature)
    rows, seconds = sample_rows(model, cfg, tokenizer, SeededBatches(args.n, args.seed, args.batch_size), setting, env,
                                progress=env.is_main and sys.stderr.isatty())
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
