"""Atomic file writes and the cache folder.

Everything the kit writes (checkpoints, results, caches) goes through these helpers: write to a
temporary file in the same folder, then `os.replace` it over the target, so an interrupted run never
leaves a half-written file behind.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path


def cache_dir() -> Path:
    """Folder for derived data (tokenized corpora, frozen-LM states, converted models).

    `$LDLM_CACHE` if set, else `~/.cache/ldlm`. Never inside the repository.
    """
    path = Path(os.environ.get("LDLM_CACHE", Path.home() / ".cache" / "ldlm"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path next to `target`; on success rename it over `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix + ".tmp", dir=target.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; results should read like any other file
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def write_json(target: str | os.PathLike, obj) -> None:
    write_text(target, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_jsonl(target: str | os.PathLike, rows) -> None:
    write_text(target, "".join(json.dumps(r, default=str) + "\n" for r in rows))


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
