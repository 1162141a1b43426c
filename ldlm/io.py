"""Atomic file writes and the cache folder.

Everything the kit writes (checkpoints, results, caches) goes through these helpers: write to a
temporary file in the same folder, then `os.replace` it over the target, so an interrupted run never
leaves a half-written file behind. Temporary names carry "<host>-<pid>", so that the next write of the
same target removes those of killed processes (`remove_stale`). A full disk (or quota, or file size
limit) is one line naming the file and the fix (`DiskFull`), and the file that was there stays.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
from io import FileIO
import json
import math
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

import numpy as np


class PathError(RuntimeError):
    """A file or folder the kit cannot read or write; the message names it and what to do."""


class DiskFull(PathError):
    """A write that failed for want of space (ENOSPC, EDQUOT) or of file size (EFBIG: ulimit -f)."""

    def __init__(self, message: str, target: Path, cause: OSError):
        super().__init__(message)
        self.target, self.cause = target, cause

    def __reduce__(self):  # picklable (torchrun ranks pass errors on)
        return type(self), (str(self), self.target, self.cause)


# errno -> (what happened, how to fix it); EFBIG is a size limit, not a full disk, and has its own fix
DISK_FULL = {
    errno.ENOSPC: ("no space left on device", "free space"),
    errno.EDQUOT: ("disk quota exceeded", "free space in your quota"),
    errno.EFBIG: ("file size limit exceeded", "raise the limit (ulimit -f)"),
}


def cache_root() -> Path:
    """`$LDLM_CACHE` if set, else `~/.cache/ldlm` (not created: see cache_dir)."""
    return Path(os.environ.get("LDLM_CACHE", Path.home() / ".cache" / "ldlm"))


def _errno_of(err: BaseException) -> int | None:
    """An OSError's errno; for errors of Rust writers (safetensors' SafetensorError), which carry no
    errno attribute, the "(os error N)" their message ends with."""
    if isinstance(err, OSError):
        return err.errno
    found = re.search(r"\(os error (\d+)\)", str(err))
    return int(found.group(1)) if found else None


def disk_full(err: BaseException, target: str | os.PathLike, flag: str = "--out") -> DiskFull | None:
    """The one-line error for `err` while writing `target` if it is a full disk (or a file size limit),
    else None. The fix names LDLM_CACHE for cache files and `flag` for everything else. A DiskFull is
    restated for `target`: the outer name (a cache entry, not its build folder's meta.json) is the one
    the user knows."""
    if isinstance(err, DiskFull):
        err = err.cause
    code = _errno_of(err)
    if code not in DISK_FULL:
        return None
    what, fix = DISK_FULL[code]
    target = Path(target)
    root = cache_root()  # a folder inside it may link elsewhere (the tests share converted judges that way)
    in_cache = target.absolute().is_relative_to(root.absolute()) or target.resolve().is_relative_to(root.resolve())
    return DiskFull(f"{what} writing {target}; {fix} or point {'LDLM_CACHE' if in_cache else flag} elsewhere",
                    target, err)


@contextlib.contextmanager
def writing(target: str | os.PathLike):
    """Turn a full disk while the block writes `target` into DiskFull naming it; other errors pass."""
    try:
        yield
    except Exception as err:
        full = disk_full(err, target)
        if full is None:
            raise
        raise full from None


def cache_dir() -> Path:
    """Folder for derived data (tokenized corpora, frozen-LM states, converted models).

    `$LDLM_CACHE` if set, else `~/.cache/ldlm`. Never inside the repository.
    """
    path = cache_root()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PathError(f"cache folder LDLM_CACHE={str(path)!r} cannot be created ({err.strerror}); "
                        f"point LDLM_CACHE at a writable folder") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise PathError(f"cache folder LDLM_CACHE={str(path)!r} is not writable; point LDLM_CACHE at a writable folder")
    return path


# Names of files the kit writes into a run folder (ldlm.training.train) or a saved model (ldlm.trained.hub): no command's
# output file takes one. A folder holding config.json and a marker is the kit's: no output goes inside it.
KIT_FILES = ("ckpt.pt", "config.json", "metrics.jsonl", "resume.json")
KIT_SUFFIXES = (".pt", ".safetensors")
KIT_MARKERS = {"ckpt.pt": "run folder", "resume.json": "run folder", "model.safetensors": "saved model"}


def kit_folder(path: str | os.PathLike) -> tuple[Path, str] | None:
    """(the folder, its marker) of the run folder or saved model that is or holds `path` (links resolved)."""
    for folder in (resolved := Path(path).resolve(), *resolved.parents):
        marker = next((m for m in KIT_MARKERS if (folder / m).is_file()), None)
        if marker and (folder / "config.json").is_file():
            return folder, marker
    return None


def _refuse_inputs(target: Path, flag: str, inputs: dict) -> None:
    """An output that is one of the command's inputs (the same file after links, or inside an input folder)
    would destroy it: PathError."""
    for name, given in inputs.items():
        if given is None:
            continue
        source = Path(given)
        same = target.exists() and source.exists() and os.path.samefile(target, source)
        if same or target.resolve().is_relative_to(source.resolve()):
            where = "is" if same or target.resolve() == source.resolve() else "is inside"
            raise PathError(f"{flag} {str(target)!r} {where} the command's {name} {str(given)!r}; writing it would "
                            f"destroy its input. Choose another path")


def check_output(target: str | os.PathLike, flag: str = "--out", inputs: dict | None = None,
                 folder: bool = False) -> Path:
    """`target` as a Path if the command may write there (checked before long work), else PathError.
    Never one of `inputs` ({flag: path}: the command's own), never a kit file name (KIT_FILES), never
    inside a run folder or saved model (a `folder` output may be one itself: a resume, a re-export)."""
    target = Path(target)
    if target.is_dir() and not folder:
        raise PathError(f"{flag} {str(target)!r} is a folder; give a file path")
    _refuse_inputs(target, flag, inputs or {})
    if not folder and (target.name in KIT_FILES or target.suffix in KIT_SUFFIXES):
        raise PathError(f"{flag} {str(target)!r} is named like a file the kit writes into run folders and saved "
                        f"models ({', '.join((*KIT_FILES, *('*' + s for s in KIT_SUFFIXES)))}); choose another name")
    owner = kit_folder(target.parent if folder else target)
    if owner:
        where, marker = owner
        raise PathError(f"{flag} {str(target)!r} is inside the {KIT_MARKERS[marker]} {str(where)!r} (it holds "
                        f"config.json and {marker}); the kit writes nothing else there. Choose a path outside it")
    if folder:
        return target
    parent = next((p for p in (target.parent, *target.parent.parents) if p.exists()), Path("."))
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise PathError(f"{flag} {str(target)!r} cannot be written ({parent} is not a writable folder); "
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
    """Yield a temporary path next to `target`; on success rename it over `target`. A full disk
    (DiskFull, one line naming `target`) leaves `target` as it was and removes the temporary file."""
    target = Path(target)
    tmp = None
    with writing(target):
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            remove_stale(target)
            fd, tmp = tempfile.mkstemp(prefix=temp_prefix(target), suffix=suffix + ".tmp", dir=target.parent)
            os.close(fd)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; results should read like any other file
            yield Path(tmp)
            os.replace(tmp, target)
        finally:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)


class WriteAll(FileIO):
    """A binary file whose write() writes every byte or raises: torch.save checks the count a short
    write returns and turns it into a RuntimeError without errno, so a full disk would not be known as
    one. `error` keeps the OSError for the caller to raise instead."""
    error: OSError | None = None

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        try:
            while view:
                view = view[super().write(view):]
        except OSError as err:
            self.error = self.error or err
            raise
        return len(data)


def new_memmap(path: str | os.PathLike, dtype, shape) -> np.ndarray:
    """np.lib.format.open_memmap(path, "w+") with its blocks reserved on disk: a memmap of a sparse
    file on a full disk dies of SIGBUS at some later page write; reserved, a full disk is an OSError
    here, before any work. File systems that cannot reserve (EOPNOTSUPP) are left sparse."""
    array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as err:
        if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise
    finally:
        os.close(fd)
    return array


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
            try:
                swap_in(tmp, target)  # the replaced folder is now `tmp`, removed below
            except OSError:  # lost a race: fine if the winner's folder is complete
                if not complete(target):
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders' names in one step (Linux renameat2 RENAME_EXCHANGE); False where the system or
    file system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def swap_in(new: Path, target: Path) -> None:
    """Folder `new` becomes `target`; an existing `target` moves to `new`'s name (the caller removes it).
    One exchange where the system has it, so no moment lacks a whole `target`; else two renames."""
    if not target.exists():
        os.replace(new, target)
    elif not _exchange(new, target):
        aside = new.with_name(new.name + ".old.tmp")  # named for remove_stale if we die between the renames
        os.replace(target, aside)
        os.replace(new, target)
        os.replace(aside, new)


@contextlib.contextmanager
def hold_folder(folder: Path, busy: str):
    """An exclusive lock on `folder` (made if absent, removed again if left empty) while the block runs:
    PathError `busy` if another process holds it. The kernel drops the lock when the process dies."""
    made = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PathError(busy) from None
        yield
    finally:
        os.close(fd)
        if made:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if still empty


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
    """Rows of a JSONL file the kit wrote. An unterminated last line that does not parse is dropped:
    it is an append cut short (a kill, a full disk), and every complete row ends with a newline."""
    with open(path) as f:
        lines = f.read().split("\n")
    tail = lines.pop()  # "" when the file ends with a newline
    rows = [json.loads(line) for line in lines if line.strip()]
    if tail.strip():
        try:
            rows.append(json.loads(tail))
        except json.JSONDecodeError:
            pass
    return rows
