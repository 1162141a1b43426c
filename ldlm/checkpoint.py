"""Atomic checkpoints that hold everything needed to resume exactly (or to sample from a run)."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from .config import Config, ConfigError, config_from_dict
from .io import WriteAll, atomic_path

FORMAT = 1
CKPT_NAME = "ckpt.pt"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupt, or does not fit the model it is loaded into."""


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: str | Path, **state) -> None:
    """torch.save to a temporary file, then rename: a kill never leaves a half-written checkpoint, and
    a full disk is io.DiskFull naming `path` (the previous checkpoint stays)."""
    with atomic_path(path, suffix=".pt") as tmp, WriteAll(tmp, "wb") as f:
        try:
            torch.save({"format": FORMAT, **state}, f)
        except RuntimeError:
            if f.error is None:
                raise
            raise f.error from None  # torch reports the failed write without its errno


def load(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / CKPT_NAME
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {str(path)!r}; train a run first (python -m ldlm.train --out DIR)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupt or not an ldlm checkpoint ({type(err).__name__}); "
            f"delete it to start the run over, or restore it from a copy"
        ) from err
    if not isinstance(state, dict) or state.get("format") != FORMAT or "model" not in state:
        raise CheckpointError(f"{str(path)!r} is not an ldlm checkpoint of format {FORMAT}")
    return state


def load_config(state: dict) -> Config:
    try:
        return config_from_dict(state["config"])
    except ConfigError as err:
        raise CheckpointError(f"the checkpoint's config does not fit this version of ldlm: {err}") from err


def load_module(module: torch.nn.Module, weights: dict, what: str) -> None:
    try:
        module.load_state_dict(weights)
    except RuntimeError as err:
        raise CheckpointError(
            f"the checkpoint's {what} does not match the model built from its config "
            f"(was it written by another version of ldlm?): {str(err).splitlines()[0]}"
        ) from err
