"""Does the default thread count hold up on a busy machine? (issue 26; docs/speed.md, "Threads")

Thread settings 1, 2 and the default (0: the cores idle at start, ldlm.runtime.threads) x no load / LOAD busy
processes: `generate(8, steps=100)` on the shipped model (timed inside the process, after one warm-up call)
and 30 tiny training steps (the run's own train_seconds). Each measurement is a fresh process; median of 3.

    .venv/bin/python scripts/threads_check.py --out threads.json      # about 25 minutes on 2 cores
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
GENERATE = ("import time, ldlm; m = ldlm.load('models/tiny-wiki-ldlm', threads={t}); m.generate(1, steps=2, progress=False); "
            "t0 = time.perf_counter(); m.generate(8, steps=100, progress=False); print('SECONDS', time.perf_counter() - t0)")


def clean_env() -> dict:
    """No OMP_NUM_THREADS: the default must decide alone."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    return env | {"HF_HUB_OFFLINE": "1"}


def generate_seconds(threads: int) -> float:
    out = subprocess.run([PY, "-c", GENERATE.format(t=threads)], cwd=ROOT, env=clean_env(),
                         capture_output=True, text=True, check=True).stdout
    return float(out.split("SECONDS")[1])


def train_seconds(threads: int, runs: Path) -> float:
    run = runs / f"t{threads}-{time.time_ns()}"
    subprocess.run([PY, "-m", "ldlm.training.train", "--preset", "tiny", "--dataset", "wiki", "--out", str(run), "--no-progress",
                    "--threads", str(threads), "max_steps=30", "eval_every=100000", "log_every=10"],
                   cwd=ROOT, env=clean_env(), capture_output=True, text=True, check=True)
    return json.loads((run / "summary.json").read_text())["train_seconds"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="JSON file for the rows")
    ap.add_argument("--load", type=int, default=2, help="busy processes in the loaded condition")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as runs:
        train_seconds(1, Path(runs))  # builds the caches, not counted
        for load in (0, args.load):
            busy = [subprocess.Popen([PY, "-c", "while True: pass"]) for _ in range(load)]
            try:
                for threads in (1, 2, 0):
                    generate = [generate_seconds(threads) for _ in range(3)]
                    train = [train_seconds(threads, Path(runs)) for _ in range(3)]
                    rows.append(dict(load=load, threads=threads or "default", generate_s=statistics.median(generate),
                                     train_s=statistics.median(train), generate_all=generate, train_all=train))
                    print(json.dumps(rows[-1]), flush=True)
            finally:
                for p in busy:
                    p.kill()
    Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
