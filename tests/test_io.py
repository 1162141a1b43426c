"""Files the kit writes: strict JSON, temp files of killed writers removed, unusable folders named."""
import json
import math
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from ldlm.io import PathError, atomic_path, cache_dir, write_json, write_jsonl


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
