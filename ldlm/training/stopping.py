"""A training stopped by SIGTERM (a scheduler's preemption, `kill`) or SIGINT (Ctrl-C) keeps its progress.

Within `on_signals()` either signal only asks to stop: the training finishes its current step, saves a
checkpoint and raises `Stopped`, whose one line says where the checkpoint is and how to resume. A second
Ctrl-C acts as it would have (KeyboardInterrupt now); a second SIGTERM changes nothing (a scheduler
signals every process of a job, and torchrun relays its own). Under torchrun every rank stops at the
same step (the ask is summed over ranks each step), and rank 0 writes the checkpoint.
"""
from __future__ import annotations

import contextlib
import signal
import threading

import torch

from ..runtime.distributed import DistEnv, all_reduce_sum

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(RuntimeError):
    """A training stopped by a signal after saving its checkpoint; exit status 128 + the signal's number."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


class StopAsk:
    """The signal handler: remembers the first signal."""

    def __init__(self, previous: dict):
        self.signum, self.previous = 0, previous  # 0 while no signal came

    def __call__(self, signum, frame):
        self.signum = self.signum or signum
        if signum == signal.SIGINT:  # Ctrl-C twice: now. A SIGTERM often comes twice (the scheduler's to every
            signal.signal(signum, self.previous[signum] or signal.SIG_DFL)  # process, torchrun's relay of it)

    def agreed(self, env: DistEnv, device: torch.device) -> bool:
        """Whether any rank was asked to stop (one tiny all-reduce per step under torchrun)."""
        if not env.enabled:
            return bool(self.signum)
        return all_reduce_sum(torch.tensor([float(bool(self.signum))], device=device), env).item() > 0


@contextlib.contextmanager
def on_signals():
    """Within: SIGTERM and SIGINT set `ask.signum` instead of ending the process. Outside the main thread
    (where Python cannot catch signals) nothing changes and no stop is ever asked."""
    catch = threading.current_thread() is threading.main_thread()
    ask = StopAsk({s: signal.getsignal(s) for s in SIGNALS} if catch else {})
    try:
        for s in ask.previous:
            signal.signal(s, ask)
        yield ask
    finally:
        for s, handler in ask.previous.items():
            signal.signal(s, handler or signal.SIG_DFL)  # None: set outside Python
