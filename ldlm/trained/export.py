"""A training run as a shareable saved model (ldlm.trained.hub): EMA weights as model.safetensors, config.json,
tokenizer files and a model card with the run's result rows.

    python -m ldlm.trained.export --run runs/tiny-wiki-ldlm-full-s0-77250c2b --out models/tiny-wiki-ldlm \\
        --results results/main_wiki.csv

--results (repeatable) adds the CSV rows whose run_id is the run's to the model card. The run folder's
ckpt.pt is left as it is (it is what training resumes from). --out must be new, empty, or a folder this
command wrote before; bad input exits 2 with one line naming the value and the fix.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import ConfigError
from ..io import PathError
from ..runtime import checkpoint
from ..text.frozen_lm import ModelUnavailable
from .hub import DTYPES, WEIGHTS_NAME, check_save_folder
from .model_card import CARD_COLUMNS


def result_rows(csv_paths: list[str], run_id: str) -> list[dict]:
    """The rows of `run_id` in the results CSVs (only the model card's columns); an error if a file is
    missing, is no results table, or has no row of this run."""
    import pandas as pd

    from ..evaluation.results import of_runs

    rows = []
    for path in csv_paths:
        if not Path(path).is_file():
            raise PathError(f"--results {path!r} does not exist; give a results CSV such as results/main_wiki.csv")
        try:
            frame = pd.read_csv(path)
        except (ValueError, UnicodeDecodeError) as err:
            raise PathError(f"--results {path!r} is not a CSV table ({type(err).__name__}); give a results CSV "
                            f"such as results/main_wiki.csv") from None
        if "run_id" not in frame.columns:
            raise PathError(f"--results {path!r} has no run_id column; give a results table the notebooks wrote")
        mine = of_runs(frame, [run_id])
        if mine.empty:
            raise PathError(f"--results {path!r} has no row of run {run_id}; give the CSV of this run's dataset "
                            f"or leave --results out")
        columns = [c for c in CARD_COLUMNS if c in mine.columns]
        rows += [{k: (None if pd.isna(v) else v) for k, v in row.items()} for row in mine[columns].to_dict("records")]
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ldlm.trained.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="run folder (or its ckpt.pt)")
    parser.add_argument("--out", required=True, help="folder of the saved model")
    parser.add_argument("--results", action="append", default=[], help="results CSV with rows of this run (repeatable)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32",
                        help="storage dtype of the weights (default float32, as trained; loading casts back)")
    args = parser.parse_args(argv)
    try:  # everything is checked before anything is written
        if not Path(args.run).exists():  # a local run only: ldlm.load would try the name as a hub id
            raise PathError(f"--run {args.run!r} does not exist; give a run folder (python -m ldlm.training.train --out DIR)")
        out = check_save_folder(args.out, "--out", inputs={"--run": args.run})
        from .api import ModelPipeline

        pipe = ModelPipeline.load(args.run, device="cpu")
        rows = result_rows(args.results, pipe.source.get("run_id")) if args.results else None
        pipe.save_pretrained(out, weights_dtype=args.dtype, results=rows)
    except (checkpoint.CheckpointError, ModelUnavailable, ConfigError, PathError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    size = (out / WEIGHTS_NAME).stat().st_size / 1e6
    print(f"wrote {out} ({pipe.kind}, run {pipe.source.get('run_id')}, {WEIGHTS_NAME} {size:.1f} MB {args.dtype}, "
          f"{len(rows or [])} result rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
