"""Parameter counts of a preset's trainable modules, computed on the meta device (nothing allocated).

    python -m ldlm.tools.params --preset owt

The frozen LM's width and vocabulary come from its known configuration, so no weights are loaded.
"""
from __future__ import annotations

import argparse
import sys

from ..config import ConfigError, make_config
from ..kinds.ldlm import count_parameters

# (hidden width, vocabulary) of the registry's frozen LMs, so counting needs no download.
LM_SHAPES = {"gpt2": (768, 50257), "minilm": (384, 30522)}

# paper.md §2.1 [S]: what the paper reports (approximately), in millions.
PAPER_MILLIONS = {"encoder": 50, "dit": 132, "decoder": 50, "token_decoder": 66, "total": 298}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ldlm.tools.params", description=__doc__)
    parser.add_argument("--preset", default="owt")
    parser.add_argument("overrides", nargs="*", help="config key=value pairs")
    args = parser.parse_args(argv)
    try:
        cfg = make_config(args.preset, args.overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if cfg.frozen_lm not in LM_SHAPES:
        print(f"error: widths of {cfg.frozen_lm!r} are not known offline; choose frozen_lm from {sorted(LM_SHAPES)}",
              file=sys.stderr)
        return 2
    width, vocab = LM_SHAPES[cfg.frozen_lm]
    counts = count_parameters(cfg, width, vocab)
    print(f"preset {cfg.preset} (frozen {cfg.frozen_lm}: width {width}, vocabulary {vocab})")
    print(f"{'module':<15}{'ours (M)':>10}{'paper (M)':>11}")
    for name, n in counts.items():
        paper = f"~{PAPER_MILLIONS[name]}" if cfg.preset in ("owt", "lm1b") else "-"
        print(f"{name:<15}{n / 1e6:>10.1f}{paper:>11}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
