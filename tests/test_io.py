"""Files the kit writes: strict JSON, temp files of killed writers removed, unusable folders named, a
full disk one line that names the file while the previous file stays."""
import contextlib
import errno
import json
import math
import os
import resource
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from ldlm.runtime import checkpoint
from ldlm.io import (DiskFull, PathError, atomic_path, cache_dir, new_memmap, read_jsonl, write_json, write_jsonl,
                     writing)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_killed_writers_temp_file_is_removed_by_the_next_write(tmp_path):
    """E.g. a hidden-state cache (hundreds of MB) interrupted mid-build: the next build removes it."""
    target = tmp_path / "minilm-L4-abc.npy"
    host = socket.gethostname()
    killed = tmp_path / f".{target.name}.{host}-{_dead_pid()}.x1y2.npy.tmp"
    live = tmp_path / f".{target.name}.{host}-{os.getpid()}.z3.npy.tmp"
    other_host = tmp_path / f".{target.name}.elsewhere-{_dead_pid()}.q9.npy.tmp"
    for tmp in (killed, live, other_host):
        tmp.write_bytes(b"half")
    with atomic_path(target, suffix=".npy") as tmp:
        np.save(tmp, np.zeros(3))
    assert target.exists() and not killed.exists()
    assert live.exists() and other_host.exists()  # a live writer's, or another host's: left alone


def test_every_json_the_kit_writes_is_strict_json(tmp_path):
    write_json(tmp_path / "s.json", {"loss": math.nan, "acc": [1.0, math.inf], "n": 3})
    write_jsonl(tmp_path / "m.jsonl", [{"loss": -math.inf}])
    strict = lambda text: json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c}"))
    assert strict((tmp_path / "s.json").read_text()) == {"loss": None, "acc": [1.0, None], "n": 3}
    assert strict((tmp_path / "m.jsonl").read_text()) == {"loss": None}


def test_an_unusable_cache_folder_is_one_clear_error(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("LDLM_CACHE", str(tmp_path / "file"))
    with pytest.raises(PathError, match="LDLM_CACHE=.*file"):
        cache_dir()


@contextlib.contextmanager
def file_size_limit(nbytes: int):
    """A real write failure in this process: files may not grow past `nbytes` (EFBIG, as ulimit -f)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel's SIGXFSZ kills us
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def _siblings(path):
    return sorted(p.name for p in path.parent.iterdir())


@pytest.mark.parametrize("code,what", [(errno.ENOSPC, "no space left on device"), (errno.EDQUOT, "disk quota exceeded")])
def test_a_full_disk_is_one_line_naming_the_file_and_the_previous_file_stays(tmp_path, monkeypatch, code, what):
    target = tmp_path / "out" / "row.json"
    write_json(target, {"earlier": 1})
    before = target.read_bytes()
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError(code, os.strerror(code))))
    with pytest.raises(DiskFull) as caught:
        write_json(target, {"new": 2})
    message = str(caught.value)
    assert message == f"{what} writing {target}; free space{' in your quota' if code == errno.EDQUOT else ''} " \
                      f"or point --out elsewhere"
    assert "\n" not in message and caught.value.__cause__ is None
    assert target.read_bytes() == before and _siblings(target) == ["row.json"]  # the temp file is gone


def test_a_checkpoint_over_the_file_size_limit_keeps_the_last_one(tmp_path):
    """torch.save reports a failed write as a RuntimeError without errno; it still ends as DiskFull."""
    path = tmp_path / "ckpt.pt"
    checkpoint.save(path, model={"w": torch.zeros(4)})
    before = path.read_bytes()
    with file_size_limit(len(before) + 4096), pytest.raises(DiskFull, match=f"file size limit exceeded writing {path}; "
                                                                             r"raise the limit \(ulimit -f\)"):
        checkpoint.save(path, model={"w": torch.zeros(100_000)})
    assert path.read_bytes() == before and _siblings(path) == ["ckpt.pt"]


def test_a_cache_file_that_does_not_fit_names_ldlm_cache_before_any_work(tmp_path, monkeypatch):
    """The memmap is reserved on disk when made: a full disk is an error then, not a SIGBUS mid-way."""
    monkeypatch.setenv("LDLM_CACHE", str(tmp_path / "cache"))
    target = cache_dir() / "hidden" / "states.npy"
    monkeypatch.setattr(os, "posix_fallocate", lambda *a: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    with pytest.raises(DiskFull, match=f"no space left on device writing {target}; free space or point LDLM_CACHE"):
        with atomic_path(target, suffix=".npy") as tmp:
            new_memmap(tmp, np.float16, (8, 4))
            pytest.fail("the memmap was made on a full disk")
    assert not target.parent.exists() or _siblings(target) == []


def test_a_cache_file_behind_a_linked_cache_folder_still_names_ldlm_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LDLM_CACHE", str(tmp_path / "cache"))
    (tmp_path / "shared").mkdir()
    cache_dir().joinpath("models").symlink_to(tmp_path / "shared", target_is_directory=True)
    target = cache_dir() / "models" / "smollm2"
    with pytest.raises(DiskFull, match=f"writing {target}; free space or point LDLM_CACHE elsewhere"):
        with writing(target):
            raise OSError(errno.ENOSPC, "No space left on device")


def test_a_memmap_past_the_file_size_limit_fails_when_made(tmp_path):
    with file_size_limit(1024), pytest.raises(OSError) as caught:
        new_memmap(tmp_path / "a.npy", np.float16, (1024, 4))
    assert caught.value.errno == errno.EFBIG


def test_a_rust_writers_os_error_counts_as_a_full_disk(tmp_path):
    """safetensors (judge conversion) raises SafetensorError('... (os error 28)'), with no errno."""
    class SafetensorError(Exception):
        pass

    with pytest.raises(DiskFull, match="no space left on device writing"):
        with writing(tmp_path / "model"):
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    with pytest.raises(SafetensorError):
        with writing(tmp_path / "model"):
            raise SafetensorError("Error while serializing: bad dtype")


def test_a_metrics_line_cut_short_by_a_full_disk_is_dropped_on_read(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "lo')
    assert read_jsonl(path) == [{"step": 1}, {"step": 2}]
    path.write_text('{"step": 1}\n{"step": 2}')  # complete, only the newline missing: kept
    assert read_jsonl(path) == [{"step": 1}, {"step": 2}]
    path.write_text('{"step": 1}\n{"step": 2, "lo\n{"step": 3}\n')  # a broken line inside is still an error
    with pytest.raises(json.JSONDecodeError):
        read_jsonl(path)
