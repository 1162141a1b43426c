"""A first look in about a minute: the model the repository ships (or yours) generates, reconstructs and
shows how a sample forms; one figure written, its path printed.

    make demo                                   # = python -m ldlm.tools.demo
    python -m ldlm.tools.demo --model runs/tiny-wiki --out results/demo --threads 1

The shipped model is the main comparison's LDLM run on wiki, seed 0: the tiny preset trained at the budget of
the experiment spec params/tiny.yaml (150 steps; not the preset's own 1,200), a 2-core CPU's scale. Its samples
are word salad, and that is what a correct install shows (the README's samples are the same kind).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "tiny-wiki-ldlm"
SENTENCES = ["the river flows through the old town and into the sea.",
             "he was born in london and studied music at the royal academy.",
             "trilobites are a group of extinct marine arthropods."]
FIGURE = "demo_trajectory"


def demo(model: str | Path = SHIPPED, out: str | Path = "results/demo", n: int = 4, steps: int = 50,
         threads: int = 0, show=print) -> Path:
    """Generate n texts in `steps` reverse steps, reconstruct SENTENCES, and draw how a sample forms
    (diagnostics.denoising_trajectory: tokens that change per step) into out/FIGURE.png; `show` gets
    each line of the report. Returns the figure's path."""
    from ..evaluation import diagnostics, figures, plotstyle
    from ..io import write_text
    from ..experiments.latents import LatentView
    from ..trained.api import load

    t0 = time.perf_counter()
    pipe = load(model, device="cpu", threads=threads)
    show(f"{pipe}")
    show(f"\n{n} samples, {steps} steps (seed 0):")
    for text in pipe.generate(n, steps=steps, seed=0, progress=False):
        show(f"  - {text[:200]}")
    show("\nreconstructions (text -> latents -> text):")
    for text, back in zip(SENTENCES, pipe.reconstruct(SENTENCES, progress=False)):
        show(f"  {text}\n  -> {back}")
    out = Path(out)
    trajectory = diagnostics.denoising_trajectory(LatentView.of_texts(pipe, SENTENCES), steps, seed=0)
    write_text(out / "trajectory.csv", trajectory.assign(preset=pipe.cfg.preset, dataset=pipe.cfg.dataset,
                                                         start="noise").to_csv(index=False))
    with plotstyle.style():
        png = plotstyle.save(figures.draw("trajectory", out), out, FIGURE)[0]
    show(f"\nhow a sample forms, step by step: {png}")
    show(f"done in {time.perf_counter() - t0:.0f} s")
    return png


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ldlm.tools.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(SHIPPED), help="a saved model, run folder or checkpoint (default: the shipped one)")
    parser.add_argument("--out", default="results/demo", help="folder for the figure and its CSV")
    parser.add_argument("--n", type=int, default=4, help="samples to generate")
    parser.add_argument("--steps", type=int, default=50, help="reverse steps per sample")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default 0: the cores idle now)")
    args = parser.parse_args(argv)
    from ..trained.api import Unsupported
    from ..runtime.checkpoint import CheckpointError
    from ..config import ConfigError, check_counts
    from ..text.frozen_lm import ModelUnavailable
    from ..io import PathError

    try:
        check_counts(n=args.n, steps=args.steps)
        demo(args.model, args.out, args.n, args.steps, args.threads)
    except (CheckpointError, ConfigError, ModelUnavailable, PathError, Unsupported) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
