"""Atomic file writes and the cache folder.

Everything the kit writes (checkpoints, results, caches) goes through these helpers: write to a
temporary file in the same folder, then `os.replace` it over the target, so an interrupted run never
leaves a half-written file behind. Temporary names carry "<host>-<pid>", so that the next write of the
same target removes those of killed processes (`remove_stale`).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import socket
import tempfile
from pathlib import Path


class PathError(RuntimeError):
    """A file or folder the kit cannot read or write; the message names it and what to do."""


def cache_dir() -> Path:
    """Folder for derived data (tokenized corpora, frozen-LM states, converted models).

    `$LDLM_CACHE` if set, else `~/.cache/ldlm`. Never inside the repository.
    """
    path = Path(os.environ.get("LDLM_CACHE", Path.home() / ".cache" / "ldlm"))
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PathError(f"cache folder LDLM_CACHE={str(path)!r} cannot be created ({err.strerror}); "
                        f"point LDLM_CACHE at a writable folder") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise PathError(f"cache folder LDLM_CACHE={str(path)!r} is not writable; point LDLM_CACHE at a writable folder")
    return path


def check_output(target: str | os.PathLike, flag: str = "--out") -> Path:
    """`target` as a Path if a file can be written there (checked before long work), else PathError."""
    target = Path(target)
    if target.is_dir():
        raise PathError(f"{flag} {str(target)!r} is a folder; give a file path")
    folder = next((p for p in (target.parent, *target.parent.parents) if p.exists()), Path("."))
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise PathError(f"{flag} {str(target)!r} cannot be written ({folder} is not a writable folder); "
                        f"choose a writable path")
    return target


def temp_prefix(target: Path) -> str:
    """Name prefix of `target`'s temporary siblings: whose they are, for `remove_stale`."""
    return f".{target.name}.{socket.gethostname()}-{os.getpid()}."


def remove_stale(target: Path) -> None:
    """Delete temporary siblings of `target` (files or build folders, e.g. a GB-sized state cache) left
    by killed processes on this host. Those of a live process, or of another host (shared file
    systems), are left alone."""
    mine = f".{target.name}.{socket.gethostname()}-"
    for tmp in target.parent.glob(f".{target.name}.*.tmp"):
        pid = tmp.name[len(mine):].split(".")[0] if tmp.name.startswith(mine) else ""  # "<pid>.<random><suffix>.tmp"
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
        except PermissionError:
            pass  # alive, another user's


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path next to `target`; on success rename it over `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(target)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(target), suffix=suffix + ".tmp", dir=target.parent)
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


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike, complete=lambda folder: folder.is_dir()):
    """Yield a fresh temporary sibling folder of `target` to build in; on success it becomes `target`,
    unless another process completed `target` first (`complete(target)`: then its folder is kept and
    ours dropped). An incomplete `target` (a kit cache entry cut short) is replaced. The temporary
    folder is named for `remove_stale`, so one left by a killed build is removed by the next."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(target)  # build folders of killed processes (OpenWebText tokens: tens of GB each)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(target), suffix=".tmp", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700 folders; a cache should read like any other folder
    try:
        yield tmp
        if not complete(target):
            shutil.rmtree(target, ignore_errors=True)
            try:
                os.replace(tmp, target)
            except OSError:  # lost a race: fine if the winner's folder is complete
                if not complete(target):
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def finite(obj):
    """`obj` with every non-finite float (NaN, inf) replaced by None: JSON has no NaN."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def dumps(obj, **kwargs) -> str:
    """Valid JSON always (non-finite numbers as null); objects JSON does not know as their str()."""
    return json.dumps(finite(obj), allow_nan=False, default=str, **kwargs)


def write_text(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def write_json(target: str | os.PathLike, obj) -> None:
    write_text(target, dumps(obj, indent=2, sort_keys=True) + "\n")


def write_jsonl(target: str | os.PathLike, rows) -> None:
    write_text(target, "".join(dumps(r) + "\n" for r in rows))


def read_utf8(path: str | os.PathLike, what: str = "file") -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise PathError(f"{what} {str(path)!r} is not UTF-8 text (byte {err.start}); convert it, "
                        f"e.g. iconv -f latin1 -t utf-8") from None


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
