"""Where a run's metrics go besides metrics.jsonl (always written): the config key `logger`.

    tensorboard  event files in RUN/tb/ (`tensorboard --logdir runs/`)
    jsonl        nothing more
    wandb        a W&B run in RUN/wandb/, offline unless WANDB_MODE says otherwise (`pip install wandb`)

Every backend offers the one interface the training loop calls: `scalars(step, values)` with a
metrics.jsonl row, `text(step, name, texts)`, `close()`. A resumed run continues the same record:
what a killed run logged after its checkpoint is dropped, as its metrics.jsonl lines are.
"""
from __future__ import annotations

import atexit
import hashlib
import importlib.util
import os
from pathlib import Path

import torch

from ..config import ConfigError
from ..sampling.rows import SeededBatches, sample_rows
from ..text.frozen_lm import load_tokenizer

SAMPLE_STEPS = 20  # sampling steps of the evaluation samples (at most): a glimpse of the text, not a measurement


def check_logger(logger: str) -> None:
    """A clear one-line error, before any work, when the logger's package is not installed."""
    package = {"tensorboard": "tensorboard", "wandb": "wandb"}.get(logger)
    if package and importlib.util.find_spec(package) is None:
        raise ConfigError(f"logger={logger} needs the {package} package (pip install {package}), "
                          f"which is not installed; or use logger=jsonl (metrics.jsonl only)")


def tag(key: str) -> str:
    """The tracker's name of a metrics.jsonl column, grouped as TensorBoard shows them."""
    if key.startswith("ema_"):
        return f"eval/{key[4:]}"
    if key.startswith("loss"):
        return f"loss/{key}"
    if key.startswith("t_q"):
        return f"time_sampler/{key}"
    return f"train/{key}"


class Tracker:
    """logger=jsonl (metrics.jsonl alone, which train.py writes); also what ranks other than 0 hold."""

    shows_text = False  # is text kept? (if not, evaluation samples are not worth making)

    def scalars(self, step: int, values: dict) -> None:
        pass

    def text(self, step: int, name: str, texts: list[str]) -> None:
        pass

    def close(self) -> None:
        pass


def _markdown(texts: list[str]) -> str:
    """Samples as a numbered list; markdown characters escaped, so the text shows as it was sampled."""
    escape = str.maketrans({c: "\\" + c for c in "\\`*_{}[]<>()#+-.!|"})
    return "\n\n".join(f"{i}. {t.translate(escape) or '(empty)'}" for i, t in enumerate(texts, 1))


def _quiet_writer_thread_disk_full() -> None:
    """TensorBoard writes from a thread, which prints a traceback when the disk is full; its writer then
    raises the same error in the training thread (the next log or close), where train reports it in one
    line. Only that case is kept quiet; any other thread error prints as usual."""
    import threading

    from ..io import disk_full

    default = threading.excepthook
    if getattr(default, "ldlm_quiet", False):
        return

    def hook(args):
        if not (isinstance(args.exc_value, OSError) and disk_full(args.exc_value, ".") is not None):
            default(args)
    hook.ldlm_quiet = True
    threading.excepthook = hook


class TensorBoard(Tracker):
    shows_text = True

    def __init__(self, folder: Path, start: int):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: TensorBoard hides the older files' events from step start + 1 on (what a killed run
        # wrote after its checkpoint, or before its first one); flush_secs: a kill loses at most 30 s
        self.writer = SummaryWriter(str(folder), purge_step=start + 1, flush_secs=30)
        atexit.register(self._close_at_exit)  # a run that stops on an error still writes what it logged
        _quiet_writer_thread_disk_full()

    def scalars(self, step, values):
        for key, value in values.items():
            self.writer.add_scalar(tag(key), value, step)

    def text(self, step, name, texts):
        self.writer.add_text(name, _markdown(texts), step)

    def close(self):
        atexit.unregister(self._close_at_exit)
        self.writer.close()

    def _close_at_exit(self):
        """close() after an error: a full disk was reported by the training thread already."""
        from ..io import disk_full

        try:
            self.close()
        except OSError as err:
            if disk_full(err, ".") is None:
                raise


class WandB(Tracker):
    shows_text = True

    def __init__(self, out: Path, config: dict):
        import wandb

        self.wandb = wandb
        # the W&B run id comes from the run folder, so --resume continues the same W&B run
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "ldlm"), name=out.name,
                              id=hashlib.sha1(str(out.resolve()).encode()).hexdigest()[:16], resume="allow",
                              dir=str(out), config=config, mode=os.environ.get("WANDB_MODE", "offline"))

    def scalars(self, step, values):
        self.run.log({tag(k): v for k, v in values.items()}, step=step)

    def text(self, step, name, texts):
        self.run.log({name: self.wandb.Table(columns=["sample"], data=[[t] for t in texts])}, step=step)

    def close(self):
        self.run.finish()


def open_tracker(cfg, out: Path, start: int) -> Tracker:
    """The tracker of `cfg.logger` for run folder `out`, continuing at step `start`."""
    check_logger(cfg.logger)
    if cfg.logger == "tensorboard":
        return TensorBoard(Path(out) / "tb", start)
    if cfg.logger == "wandb":
        return WandB(Path(out), cfg.to_dict())
    return Tracker()


class EvalSamples:
    """`cfg.eval_samples` texts from the EMA model at each evaluation, logged as text.

    Their noise comes from their own generator seeded by the run's seed (ldlm.sampling.rows.sample_ids), the
    same at every evaluation, so the texts show what training changed, and the global generators (dropout,
    anything a resumed run restores) are never drawn from: training is the same with or without them."""

    def __init__(self, cfg, tracker: Tracker):
        self.cfg, self.tracker, self.tokenizer = cfg, tracker, None
        self.enabled = cfg.eval_samples > 0 and tracker.shows_text  # off on ranks other than 0 too

    @torch.no_grad()
    def log(self, model, step: int) -> None:
        if not self.enabled:
            return
        if self.tokenizer is None:  # loaded at the first evaluation, not at all when off
            self.tokenizer = load_tokenizer(self.cfg.frozen_lm)
        model.eval()  # no dropout: it would draw from the global generator
        n = self.cfg.eval_samples
        rows, _ = sample_rows(model, self.cfg, self.tokenizer, SeededBatches(n, self.cfg.seed, batch_size=n),
                              dict(steps=min(self.cfg.sample_steps, SAMPLE_STEPS)))
        self.tracker.text(step, "samples", [r["text"] for r in rows])
