"""Checksums of cache files: recorded when a cache entry is written, verified on every use.

A file's checksum is "<size>:<method>:<sha256>". Up to SAMPLES * BLOCK bytes (64 MiB: every tiny and
smoke cache, and the token arrays of the embedded corpora) the sha256 is of the whole file
("sha256"); beyond, of SAMPLES blocks of BLOCK bytes at evenly spaced offsets, the first at the
header and the last at the end ("sha256-sampled": 64 MiB read whatever the size, e.g. of the 517 MB
SmolLM2 judge or 18 GB of OpenWebText tokens). The size is always exact; a change outside the sampled
blocks of a large file goes unseen, but a file zeroed, truncated, swapped or rewritten does not.

A mismatch is `CacheCorrupt`: one line naming the file and the fix (delete the entry and run again,
which rebuilds it); the kit never rebuilds over it by itself. An entry written before checksums were
kept is trusted once, as the atomic writers left it, and its checksums are recorded then (`adopt`).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from .io import PathError, write_json

BLOCK = 1 << 20
SAMPLES = 64
FOLDER_RECORD = "checksums.json"  # a cache folder's record (the converted judge), next to its files


class CacheCorrupt(PathError):
    """A cache file that no longer matches the checksum recorded when it was written."""


def of_file(path: str | os.PathLike) -> str:
    """The checksum of `path`: its size and the sha256 of it all, or of a sample of its blocks (module doc)."""
    size = os.path.getsize(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= SAMPLES * BLOCK:
            while chunk := f.read(BLOCK):
                digest.update(chunk)
            return f"{size}:sha256:{digest.hexdigest()}"
        for k in range(SAMPLES):
            f.seek(k * (size - BLOCK) // (SAMPLES - 1))
            digest.update(f.read(BLOCK))
    return f"{size}:sha256-sampled:{digest.hexdigest()}"


def verify(recorded: dict[str, str], folder: Path, fix: str) -> None:
    """Each file `folder/name` of `recorded` ({name: checksum}) matches it, else CacheCorrupt naming the
    file, what differs and `fix`."""
    for name, expected in sorted(recorded.items()):
        path = folder / name
        if not path.is_file():
            found = "is missing"
        else:
            actual = of_file(path)
            if actual == expected:
                continue
            size, expected_size = actual.split(":")[0], expected.split(":")[0]
            found = (f"is {size} bytes, {expected_size} when written" if size != expected_size
                     else "has changed since it was written (checksum mismatch)")
        raise CacheCorrupt(f"cache file {path} {found}; {fix}")


def adopt(what: str, path: Path) -> None:
    """Say that the checksums of an entry written before they were kept were recorded now."""
    print(f"note: recorded the checksums of {what} {path} (written before the kit kept them); "
          f"from now on it is verified on every use", file=sys.stderr)


# ---- a folder's files, recorded in FOLDER_RECORD ------------------------------------------------------

def record_folder(folder: Path) -> None:
    """Record the checksum of every file in `folder` (the record last: it is what marks it checked)."""
    files = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != FOLDER_RECORD)
    write_json(folder / FOLDER_RECORD, {"files": {name: of_file(folder / name) for name in files}})


def verified_folder(folder: Path, what: str, fix: str) -> Path:
    """`folder` once its files match their record; one without a record has it made now (`adopt`)."""
    record = folder / FOLDER_RECORD
    if not record.is_file():
        record_folder(folder)
        adopt(what, folder)
        return folder
    try:
        recorded = json.loads(record.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        raise CacheCorrupt(f"cache file {record} is not the checksum record the kit wrote; {fix}") from None
    verify(recorded, folder, fix)
    return folder


# ---- one file, recorded in a sidecar ---------------------------------------------------------------

def sidecar(path: Path) -> Path:
    """Where the checksum of the single-file cache entry `path` is kept."""
    return path.with_name(path.name + ".checksum.json")


def record_file(path: Path, checksum_of: Path | None = None) -> None:
    """Record the checksum of `checksum_of` (default `path`: a temporary file about to become it) for `path`."""
    write_json(sidecar(path), {"file": path.name, "checksum": of_file(checksum_of or path)})


def verified_file(path: Path, what: str, fix: str) -> None:
    """`path` matches its sidecar's checksum, else CacheCorrupt; without a sidecar one is made now (`adopt`)."""
    record = sidecar(path)
    if not record.is_file():
        record_file(path)
        adopt(what, path)
        return
    try:
        expected = json.loads(record.read_text())["checksum"]
    except (OSError, ValueError, KeyError, TypeError):
        raise CacheCorrupt(f"cache file {record} is not the checksum record the kit wrote; {fix}") from None
    verify({path.name: expected}, path.parent, fix)
