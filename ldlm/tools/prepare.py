"""Tokenize a dataset once, in parallel, into the memory-mapped token arrays that training reads.

    python -m ldlm.tools.prepare --preset owt --workers 16                   # OpenWebText, GPT-2 tokens, wrapped
    python -m ldlm.tools.prepare --preset lm1b --workers 16                  # LM1B unwrapped (pack_mode=pad)
    python -m ldlm.tools.prepare --preset lm1b --workers 16 pack_mode=wrap   # LM1B wrapped
    python -m ldlm.tools.prepare --preset tiny --dataset wiki --workers 2    # the embedded stand-ins
    python -m ldlm.tools.prepare --preset tiny --dataset news --states --judge smollm2 --featurizer minilm

The arrays go to the token cache (`ldlm.io.cache_dir()/tokens`, see `ldlm.text.data`) under a key of
everything that determines them (dataset, revision, held-out documents, tokenizer, seq_len,
pack_mode, max_train_tokens), so a training run with the same config finds them instead of
tokenizing in its own single process. `--workers` changes only how long it takes: the arrays are
byte-identical for any number of workers. Run it once before `torchrun`: there rank 0 would build
the cache alone while the other ranks wait. Prints the folder, the shapes and token counts, and the
seconds it took (0 when the arrays were already there).

`--states` also caches the frozen LM's hidden states of every block (presets with cache_hidden=on:
the CPU ones), and `--judge` / `--featurizer` load those evaluation models once, so that their
weights are converted and cached: `make reproduce` runs this first, so that the notebooks it runs
side by side neither wait on these caches nor build them twice.
"""
from __future__ import annotations

import argparse
import sys
import time

from ..config import ConfigError, check_counts, make_config
from ..evaluation.judges import load_featurizer, load_judge
from ..io import PathError
from ..kinds.build import model_class
from ..runtime.distributed import default_device
from ..text.data import DataError, build_token_data, read_token_cache, token_cache_path
from ..text.frozen_lm import ModelUnavailable, load_tokenizer
from ..training.batches import load_training_data


def describe(data, folder, seconds: float, built: bool) -> str:
    """What `main` prints: where the arrays are, their shapes and token counts, and the time."""
    s = data.stats
    lines = [f"tokens: {folder}",
             f"  dataset={s['dataset']} revision={s['revision']} tokenizer={s['tokenizer']} "
             f"seq_len={s['seq_len']} pack_mode={data.mode} dtype={data.train.dtype}"]
    for split in ("train", "valid"):
        blocks, lengths = getattr(data, split), getattr(data, f"{split}_len")
        truncated = f", {s[f'{split}_truncated_docs']:,} truncated" if f"{split}_truncated_docs" in s else ""
        docs = s["train_docs"] if split == "train" else s["valid_docs_held_out"]
        lines.append(f"  {split}: {blocks.shape[0]:,} x {blocks.shape[1]} blocks, {int(lengths.sum(dtype='int64')):,} "
                     f"tokens in them; {s[f'{split}_tokens']:,} tokens from {docs:,} documents{truncated}")
    lines.append(f"  {'built' if built else 'found in the cache'} in {seconds:.1f} s")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ldlm.tools.prepare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny", help="smoke | tiny | lm1b | owt (default tiny)")
    parser.add_argument("--dataset", default=None, help="wiki | news | openwebtext | lm1b | text:PATH | jsonl:PATH")
    parser.add_argument("--workers", type=int, default=1, help="tokenizer processes (default 1)")
    parser.add_argument("--states", action="store_true", help="also cache the frozen LM's states (cache_hidden presets)")
    parser.add_argument("--judge", default=None, help="also load (and so cache) this Gen-PPL judge")
    parser.add_argument("--featurizer", default=None, help="also load (and so cache) this MAUVE featurizer")
    parser.add_argument("overrides", nargs="*", help="config key=value pairs (see ldlm/config.py)")
    args = parser.parse_args(argv)
    try:
        check_counts(workers=args.workers)
        given = {"dataset": args.dataset} if args.dataset is not None else {}
        cfg = make_config(args.preset, args.overrides, **given)
        tokenizer = load_tokenizer(cfg.frozen_lm)
        folder = token_cache_path(cfg, tokenizer, cfg.frozen_lm)
        built = read_token_cache(folder, cfg.preset) is None
        t0 = time.perf_counter()
        data = build_token_data(cfg, tokenizer, cfg.frozen_lm, workers=args.workers)
        seconds = time.perf_counter() - t0
        print(describe(data, folder, seconds, built), flush=True)
        if args.states:
            t0 = time.perf_counter()
            if cfg.cache_hidden and model_class(cfg.model).uses_frozen_lm:
                load_training_data(cfg, default_device(cfg.device))
                print(f"states: {cfg.frozen_lm} layer {cfg.lm_layer} cached in {time.perf_counter() - t0:.1f} s")
            else:
                print("states: not cached for this config (cache_hidden=off: training computes them)")
        for name, load in ((args.judge, load_judge), (args.featurizer, load_featurizer)):
            if name:
                t0 = time.perf_counter()
                load(name)
                print(f"{load.__name__.removeprefix('load_')} {name}: ready in {time.perf_counter() - t0:.1f} s")
    except (ConfigError, DataError, ModelUnavailable, PathError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
