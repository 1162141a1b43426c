"""Run folders: one writer at a time, and no file the kit did not write is ever overwritten.

A run folder holds config.json, resume.json, data.json, metrics.jsonl, ckpt.pt, summary.json (see
ldlm.training.train) and `.lock`: the training process holds an exclusive flock on it (its pid written inside)
for the whole run, so a second training of the same folder stops with the holder's pid instead of
interleaving metrics and checkpoints. The kernel drops the lock when the process dies, so a kill never
leaves a folder locked. Under torchrun rank 0 holds it, and every rank stops with rank 0's refusal.

config.json is the config the run trains with (after a `--resume` that changed max_steps, the new
value); resume.json lists the keys such a resume may change (RESUME_MUTABLE). The list is a file of
its own so that config.json stays exactly a config: `--config run/config.json` and config_from_dict
read it with no key to skip, and it equals the checkpoint's config.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path

from ..config import ConfigError, config_from_dict
from ..io import PathError, check_output, disk_full, write_json, write_text, writing
from . import checkpoint, distributed
from .checkpoint import CKPT_NAME

LOCK_NAME = ".lock"
BUSY = "is being trained by another process"  # in RunFolderBusy's message: a caller may wait and retry
RESUME_NAME = "resume.json"
# beside a run trained elsewhere whose weights stayed there (ldlm.tools.gpu_run): its model's shape (vocab_size,
# head_vocab, lm_width: what ldlm.kinds.build.build_model needs besides the config) and where it was trained
SHAPE_NAME = "shape.json"
TRAINED_ON_NAME = "trained_on.json"

# Resuming may change these (e.g. train longer); any other difference from the saved config is an error.
RESUME_MUTABLE = {"max_steps", "log_every", "eval_every", "ckpt_every", "eval_batches", "device", "num_threads",
                  "precision", "compile", "num_workers", "micro_batch_size", "logger", "eval_samples"}


class RunFolderError(RuntimeError):
    """An --out folder that cannot be trained into now; the message says why and what to do."""


class RunFolderBusy(RunFolderError):
    """Another process is training this run folder."""


def wait_for_writer(out: Path) -> None:
    """Return once no process trains `out` (a shared flock is granted only when the writer's exclusive
    one is gone), so a notebook reuses a run another notebook is training instead of failing."""
    lock = Path(out) / LOCK_NAME
    if lock.exists():
        with open(lock) as handle:
            fcntl.flock(handle, fcntl.LOCK_SH)


def check_resume(saved: dict, given: dict) -> None:
    """`given` (any subset of config keys) may differ from the saved run only in RESUME_MUTABLE."""
    for key, value in given.items():
        if key not in RESUME_MUTABLE and saved.get(key) != value:
            raise ConfigError(
                f"--resume: {key}={value!r} differs from the saved run ({saved.get(key)!r}); "
                f"only {sorted(RESUME_MUTABLE)} may change when resuming. Use a new --out for a new run."
            )


def record_config(out: Path, cfg: dict) -> None:
    """Write the run's config.json (`cfg`, a resume's changes included) and resume.json (what a resume
    may change), each atomically; config.json first, since a folder with resume.json alone would be
    refused as someone else's."""
    write_json(out / "config.json", cfg)
    write_json(out / RESUME_NAME, {
        "may_change": sorted(RESUME_MUTABLE),
        "note": "python -m ldlm.training.train --out DIR --resume key=value ... may change these keys of config.json; "
                "any other difference is refused. config.json and ckpt.pt hold the values the run continued with.",
    })


def saved_config(out: Path) -> dict | None:
    """The run's config.json if it is one of the kit's configs, else None (absent, or a user's file)."""
    try:
        values = json.loads((out / "config.json").read_text())
        return config_from_dict(values).to_dict()
    except (OSError, ValueError, TypeError, AttributeError):  # ConfigError is a ValueError
        return None


def _nothing_to_resume(out: Path) -> RunFolderError:
    return RunFolderError(f"--resume: {out} holds no checkpoint ({CKPT_NAME}) to resume; "
                          f"drop --resume to start a new run there")


def resumed_config(out: Path) -> dict:
    """The config `--resume` continues: the checkpoint's, or after a kill before the first checkpoint
    the folder's config.json (that run then starts over); an error if the folder holds neither."""
    if (out / CKPT_NAME).exists():
        return checkpoint.load_config(checkpoint.load(out / CKPT_NAME)).to_dict()
    saved = saved_config(out)
    if saved is None:
        raise _nothing_to_resume(out)
    return saved


def is_run(out: Path) -> bool:
    return (out / CKPT_NAME).exists() or saved_config(out) is not None


def _refuse_foreign(out: Path) -> None:
    """A folder that holds files but no run is someone else's: the kit writes nothing into it."""
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--out {out} is a file; give a folder for the run")
    foreign = sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) if out.is_dir() else []
    if foreign and not is_run(out):
        raise RunFolderError(f"--out {out} is not empty and not a run folder (it holds {foreign[:5]}); "
                             f"not writing into it. Choose a new or empty folder")
    check_output(out, "--out", folder=True)  # nor inside another run or a saved model


def _check_contents(out: Path, cfg: dict, resume: bool) -> None:
    """Refuse a run this training must not touch; clean up after a kill before the first checkpoint
    (its metrics would be written again)."""
    saved = saved_config(out)
    has_ckpt = (out / CKPT_NAME).exists()
    if not has_ckpt and saved is None:
        if resume:
            raise _nothing_to_resume(out)
        return
    if has_ckpt and not resume:
        raise RunFolderError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    try:
        check_resume(saved or {}, cfg if saved else {})
    except ConfigError as err:
        raise RunFolderError(f"{out} holds another run: {err}") from None
    if not has_ckpt and saved != cfg and not resume:  # e.g. another max_steps: a new run or this one again?
        changed = ", ".join(f"{k}={cfg[k]!r} (was {saved.get(k)!r})" for k in sorted(cfg) if saved.get(k) != cfg[k])
        raise RunFolderError(f"{out} holds an earlier start of this run (no checkpoint yet) and this one changes "
                             f"{changed}; pass --resume to start it over with the new values (its metrics.jsonl is "
                             f"dropped), or choose another --out")
    if not has_ckpt:  # killed before its first checkpoint: start over, without the old log lines
        (out / "metrics.jsonl").unlink(missing_ok=True)


@contextlib.contextmanager
def claim(out: Path, cfg: dict, resume: bool):
    """Hold run folder `out` for one training of config `cfg` (a dict): RunFolderError if another
    process trains it, if it holds files that are not a run's, if it holds a run that `resume` must
    not touch, or if it cannot be written."""
    out = Path(out)
    _refuse_foreign(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        handle = open(out / LOCK_NAME, "a+")
    except OSError as err:
        raise disk_full(err, out / LOCK_NAME) or RunFolderError(
            f"--out {out} cannot be written ({err.strerror}); choose a writable folder") from None
    with handle:  # closing it releases the lock
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise RunFolderBusy(f"run folder {out} {BUSY} (pid {holder}); "
                                 f"wait for it to finish, or choose another --out") from None
        with writing(out / LOCK_NAME):
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
        _check_contents(out, cfg, resume)
        yield


def _shareable(err: Exception, out: Path) -> Exception:
    """`err` as the other ranks raise it: the kit's one-line errors as they are; anything else (which
    may not pickle) as a RunFolderError naming it."""
    if isinstance(err, (RunFolderError, PathError, ConfigError)):
        return err
    return RunFolderError(f"rank 0 could not claim run folder {out} ({type(err).__name__}: {err})")


@contextlib.contextmanager
def claim_ranks(out: Path, cfg: dict, resume: bool, env: distributed.DistEnv):
    """`claim` by rank 0, and its outcome on every rank: under torchrun a refusal stops all ranks at
    once, each with the same one-line error (exit 2), instead of the others waiting in the next
    collective for a rank 0 that has left. Needs the process group (distributed.setup) first."""
    with contextlib.ExitStack() as held:
        refusal = None
        if env.is_main:
            try:
                held.enter_context(claim(out, cfg, resume))
            except Exception as err:
                refusal = err
        shared = distributed.broadcast_object(None if refusal is None else _shareable(refusal, out), env)
        if refusal is not None:
            raise refusal  # rank 0: the original, traceback and all
        if shared is not None:
            raise shared
        yield


# ----------------------------------------------------------------------------------------------
# training a run from another process (the pipeline's notebooks, gpu_check)

OUT_OF_MEMORY = 3  # python -m ldlm.training.train's exit status when the device runs out of memory
TRAIN_LOG = "train.log"  # a run folder's log of the training command's output (the notebooks show one line)
FAILURE_LINES = 30  # of a failed training's output, shown where its log would have been quiet


def train_command(config: Path, out: Path, nproc: int = 1, resume: bool = False) -> list[str]:
    """`python -m ldlm.training.train` on a resolved config file, under torchrun when nproc > 1, log lines only."""
    import sys

    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else []
    return [sys.executable, *launcher, "-m", "ldlm.training.train", "--config", str(config), "--out", str(out), "--no-progress",
            *(["--resume"] if resume else [])]


def relay(cmd: list[str], log: Path | None = None) -> tuple[int, str]:
    """Run cmd, its stdout and stderr printed here as they come; (exit status, its last line). With
    `log` (a run folder's TRAIN_LOG) they go to that file instead, added once cmd ends, and only the
    last lines of a failure are printed; a folder that is no run (a refused --out) gets no file."""
    import subprocess

    lines, last = [], ""

    def take(line: str) -> None:
        lines.append(line)
        if log is None:
            print(line, end="", flush=True)

    take(" ".join(cmd) + "\n")
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        for line in proc.stdout:
            take(line)
            last = line.strip() or last
    if log is not None:
        if proc.returncode != 0:
            print("".join(lines[-FAILURE_LINES:]), end="", flush=True)
        if is_run(log.parent) and BUSY not in last:  # a busy folder's log is its own trainer's
            write_text(log, (log.read_text() if log.exists() else "") + "".join(lines))
    return proc.returncode, last
