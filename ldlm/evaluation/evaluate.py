"""Evaluate a samples file (or the real-text ceiling of a dataset) into one tidy JSON row.

    python -m ldlm.evaluation.evaluate --samples S.jsonl --dataset wiki --judge smollm2 --featurizer minilm --out row.json
    python -m ldlm.evaluation.evaluate --reference --dataset news --n 64 --length 64 --out ceiling.json

Sample rows (as `ldlm.trained.sample` writes them): {"text": str, "docs": [str, ...], "token_ids": [int, ...],
"raw_ids": [int, ...], "steps": int, "seed": int, "dtype": str, "draw_dtype": str}; only "text" is
required. The judge gets "docs" and entropy uses "raw_ids" (else "token_ids") when every row has them
(metrics.evaluate_samples). "steps", "top_p", "temperature", "seed", "dtype", "draw_dtype" and "sampler"
are copied into the result row (one value, or the sorted list of distinct values if rows differ).
Bad input (missing or empty file, a row without text, unknown judge/featurizer/dataset) prints one
error line and exits with status 2 without writing anything.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from ..config import ConfigError, check_counts
from ..io import PathError, check_output, read_utf8, write_json
from ..text.data import DataError, corpus_file, load_corpus
from ..text.frozen_lm import ModelUnavailable
from .judges import DEFAULT_FEATURIZER, DEFAULT_JUDGE
from .metrics import EvalError, References, evaluate_samples, reference_ceiling
from .results import versions

SAMPLE_META = ("steps", "top_p", "temperature", "seed", "dtype", "draw_dtype", "sampler", "sample_seconds")


def read_samples(path: str | os.PathLike) -> list[dict]:
    """Rows of a samples JSONL file, each checked to have a string "text"."""
    file = Path(path)
    if not file.is_file():
        raise EvalError(f"samples file {str(file)!r} does not exist")
    rows = []
    for n, line in enumerate(read_utf8(file, "samples file").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise EvalError(f"{file}:{n}: not valid JSON ({err.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise EvalError(f"{file}:{n}: expected a JSON object with a string 'text' field")
        rows.append(row)
    if not rows:
        raise EvalError(f"samples file {str(file)!r} holds no samples")
    return rows


def _meta(rows: list[dict]) -> dict:
    """steps / seed / dtype of the sample rows: one value, or the sorted distinct values."""
    out = {}
    for key in SAMPLE_META:
        values = sorted({json.dumps(r[key]) for r in rows if key in r})
        if values:
            decoded = [json.loads(v) for v in values]
            out[key] = decoded[0] if len(decoded) == 1 else decoded
    return out


def _versions() -> dict:
    return {f"version_{p.replace('-', '_')}": v for p, v in versions().items() if p in ("torch", "transformers", "mauve-text")}


def _clean(row: dict) -> dict:
    """NaN -> None so that the file is strict JSON."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}


def evaluate_file(samples: str | os.PathLike, references: References, judge: str = DEFAULT_JUDGE,
                  featurizer: str = DEFAULT_FEATURIZER, out: str | os.PathLike | None = None, **kwargs) -> dict:
    """Evaluate a samples JSONL file against `references` (metrics.References); write the row to `out`
    (atomically) if given; return it."""
    rows = read_samples(samples)
    row = evaluate_samples(rows, references, judge, featurizer, **kwargs)
    row = _clean(dict(row, **_meta(rows), **_versions(), samples=str(samples)))
    if out is not None:
        write_json(out, row)
    return row


def evaluate_reference(references: References, n: int, judge: str = DEFAULT_JUDGE, featurizer: str = DEFAULT_FEATURIZER,
                       out: str | os.PathLike | None = None, **kwargs) -> dict:
    """The reference ceiling of `references` (see metrics.reference_ceiling); written to `out` if given."""
    row = _clean(dict(reference_ceiling(references, n, judge, featurizer, **kwargs), **_versions()))
    if out is not None:
        write_json(out, row)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ldlm.evaluation.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--samples", help="samples JSONL (one {'text': ...} per line)")
    parser.add_argument("--dataset", required=True, help="wiki | news | openwebtext | lm1b | text:PATH | jsonl:PATH")
    parser.add_argument("--valid-docs", type=int, default=-1,
                        help="held-out documents, as the run's valid_docs (default -1: the dataset's convention)")
    parser.add_argument("--dataset-revision", default="main", help="hub datasets: as the run's dataset_revision")
    parser.add_argument("--judge", default=DEFAULT_JUDGE, help="smollm2 (offline) | gpt2-large | HF id or folder")
    parser.add_argument("--featurizer", default=DEFAULT_FEATURIZER,
                        help="minilm (offline, fast, order-blind) | smollm2-mean (offline, sees word order) | gpt2-large | HF id")
    parser.add_argument("--out", required=True, help="where to write the JSON row")
    parser.add_argument("--reference", action="store_true", help="score held-out real text instead of samples")
    parser.add_argument("--n", "--num-samples", dest="n", type=int, default=128, help="--reference: samples per side")
    parser.add_argument("--length", type=int, default=64,
                        help="--reference: tokens per held-out row, BOS/EOS framing included (the model's seq_len)")
    parser.add_argument("--ref-length", type=int, default=None,
                        help="MAUVE reference rows of this many tokens, framing included (default: the samples' "
                             "row length, else their median length + 2)")
    parser.add_argument("--pack-mode", default="wrap", choices=("wrap", "pad"),
                        help="how references are packed, as the model's training data (default: wrap)")
    parser.add_argument("--text-tokenizer", default=None,
                        help="count lengths in this tokenizer (the model's, e.g. minilm) instead of the judge's")
    parser.add_argument("--ref-split", default="valid", choices=("valid", "train"),
                        help="split the MAUVE references come from (default: held-out)")
    parser.add_argument("--seed", type=int, default=0, help="seed that picks the reference pieces")
    parser.add_argument("--batch-size", type=int, default=16, help="judge batch (16 was fastest on CPU)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (default 0: the cores idle at start, ldlm.runtime.threads)")
    args = parser.parse_args(argv)
    if not args.reference and not args.samples:
        parser.error("give --samples FILE, or --reference for the dataset's real-text ceiling")

    import transformers

    from ..runtime.threads import check_threads, use_threads

    transformers.utils.logging.disable_progress_bar()  # keep the command's output to its result line
    common = dict(judge=args.judge, featurizer=args.featurizer, batch_size=args.batch_size, progress=sys.stderr.isatty())
    try:
        check_counts(batch_size=args.batch_size, n=args.n, length=args.length, ref_length=args.ref_length)
        check_threads(args.threads, "--threads ")
        use_threads(args.threads)
        check_output(args.out, inputs={"--samples": args.samples, "--dataset": corpus_file(args.dataset)})
        corpus = load_corpus(args.dataset, args.valid_docs, args.dataset_revision)
        references = References(corpus, length=args.length if args.reference else args.ref_length,
                                pack_mode=args.pack_mode, split=args.ref_split, tokenizer=args.text_tokenizer,
                                seed=args.seed)
        if args.reference:
            row = evaluate_reference(references, args.n, out=args.out, **common)
        else:
            row = evaluate_file(args.samples, references, out=args.out, **common)
    except (EvalError, DataError, ModelUnavailable, PathError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({k: row[k] for k in ("gen_ppl_tok", "gen_ppl_seq", "entropy", "rep_4", "mauve", "n_samples")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
