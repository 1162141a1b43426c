"""Atomic checkpoints that hold everything needed to resume exactly (or to sample from a run).

A checkpoint holds tensors and plain Python values only, and is read with torch.load(weights_only=True):
a ckpt.pt from elsewhere can hold a pickle that runs code when loaded, and the safe unpickler refuses
every global outside torch's own allow-list (plus, for checkpoints written before, a NumPy uint32 array)."""
from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import torch

from ..config import Config, ConfigError, config_from_dict
from ..io import WriteAll, atomic_path, kit_folder

FORMAT = 1
CKPT_NAME = "ckpt.pt"
# what ldlm.training.train writes, and what a resume reads
KEYS = ("config", "step", "model", "ema", "optimizer", "scheduler", "time_sampler", "vocab_size", "head_vocab",
        "lm_width")
# what sampling, evaluation and the diagnostics read (a checkpoint slimmed for sharing holds these alone)
READ_KEYS = ("config", "step", "ema", "time_sampler", "vocab_size", "head_vocab", "lm_width")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupt, or does not fit the model it is loaded into."""


def rng_state() -> dict:
    kind, keys, *rest = np.random.get_state()  # its keys as a tensor: the safe unpickler refuses NumPy arrays
    return {"torch": torch.get_rng_state(), "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), *rest),
            "python": random.getstate(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, *rest = state["numpy"]  # a tensor, or the NumPy array of checkpoints written before
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
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


def _legacy_globals() -> list:
    """What the NumPy RNG state (a uint32 array) of checkpoints written before needs besides torch's
    allow-list: an array, its dtype and the function that rebuilds it, and nothing that runs code."""
    from numpy._core.multiarray import _reconstruct

    return [_reconstruct, (_reconstruct, "numpy.core.multiarray._reconstruct"),  # NumPy 1 wrote this name
            np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def _unsafe_globals(path: Path) -> list[str]:
    """The globals a refused checkpoint asks for (read from its pickle, nothing run), for the error."""
    try:
        allowed = {g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__name__}" for g in _legacy_globals()}
        return [g for g in torch.serialization.get_unsafe_globals_in_checkpoint(path) if g not in allowed]
    except Exception:
        return []


def _fix(path: Path) -> str:
    """What to do about an unreadable checkpoint: a run folder's own may be deleted to start over; any
    other file is the user's, and was only given in the wrong place."""
    owner = kit_folder(path)
    if path.name == CKPT_NAME and owner and owner[0] == path.resolve().parent:
        return "delete it to start the run over, or restore it from a copy"
    return "give a run folder (python -m ldlm.training.train --out DIR) or its ckpt.pt"


def load(path: str | Path, keys: tuple[str, ...] = READ_KEYS) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / CKPT_NAME
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {str(path)!r}; train a run first (python -m ldlm.training.train --out DIR)")
    try:
        with torch.serialization.safe_globals(_legacy_globals()):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        unsafe = _unsafe_globals(path)
        if not unsafe:
            raise CheckpointError(f"checkpoint {str(path)!r} is corrupt or not an ldlm checkpoint (UnpicklingError); "
                                  f"{_fix(path)}") from err
        raise CheckpointError(
            f"checkpoint {str(path)!r} asks to run {', '.join(unsafe[:3])} when loaded: not loading it (an ldlm "
            f"checkpoint holds tensors and plain values only); use a checkpoint you trust, or train the run again"
        ) from None
    except Exception as err:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupt or not an ldlm checkpoint ({type(err).__name__}); {_fix(path)}"
        ) from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not an ldlm checkpoint of format {FORMAT}; {_fix(path)}")
    missing = [k for k in keys if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {str(path)!r} lacks {', '.join(missing)} (an ldlm checkpoint holds "
                              f"{', '.join(KEYS)}{'' if keys == KEYS else '; this command reads ' + ', '.join(keys)}); "
                              f"restore it from a copy, or train the run again")
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
