"""The `threads` setting (issue 26): a default that takes only the idle cores, and one knob each in the
command lines, the Python API and the notebooks. How fast each count runs is measured outside the tests
(the issue's notes), never timed here."""
from pathlib import Path

import pytest
import torch

import ldlm
from ldlm.runtime import threads
from ldlm.config import ConfigError, make_config
from ldlm.trained.sample import main as sample_main
from ldlm.training.train import _parser, main as train_main

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "tiny-wiki-ldlm"


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("idle,expected", [(0.0, 1), (0.4, 1), (1.2, 1), (1.6, 2), (64.0, 2), (None, 2)])
def test_the_default_takes_the_idle_cores_at_least_one_at_most_torchs(idle, expected, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "torch_threads", lambda: 2)
    monkeypatch.setattr(threads, "idle_cores", lambda: idle)
    assert threads.default_threads() == expected


def test_a_pinned_omp_num_threads_is_the_default(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setattr(threads, "idle_cores", lambda: 0.0)  # busy: the user's pin still wins
    assert threads.default_threads() == 3


def test_idle_cores_is_between_zero_and_the_cores_of_this_process():
    idle = threads.idle_cores(window=0.05)
    import os

    assert idle is None or 0 <= idle <= len(os.sched_getaffinity(0)) + 1e-9


def test_use_threads_sets_torchs_count_and_pins_children_only_when_given(restore_threads, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads.use_threads(1, children=True) == 1 and torch.get_num_threads() == 1
    import os

    assert os.environ["OMP_NUM_THREADS"] == "1"
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(threads, "idle_cores", lambda: 0.0)
    threads.use_threads(0, children=True)  # the default is measured again in each child, not pinned
    assert "OMP_NUM_THREADS" not in os.environ


@pytest.mark.parametrize("bad", [-1, 1.5, "2", True])
def test_a_bad_thread_count_names_the_value(bad):
    with pytest.raises(ConfigError, match=f"threads={bad!r}"):
        threads.check_threads(bad)


def test_load_takes_threads(restore_threads):
    ldlm.load(SHIPPED, device="cpu", threads=1)
    assert torch.get_num_threads() == 1
    with pytest.raises(ConfigError, match="threads=-2"):
        ldlm.load(SHIPPED, device="cpu", threads=-2)


def test_the_train_command_takes_threads_into_num_threads(capsys):
    assert train_main(["--threads", "1", "--print-config"]) == 0
    assert '"num_threads": 1' in capsys.readouterr().out
    assert "--threads" in _parser([]).format_help()


def test_negative_num_threads_is_a_config_error():
    with pytest.raises(ConfigError, match="num_threads=-1"):
        make_config("smoke", ["num_threads=-1"])


def test_the_sample_command_refuses_a_negative_thread_count_in_one_line(tmp_path, capsys):
    assert sample_main(["--run", str(SHIPPED), "--threads", "-1", "--out", str(tmp_path / "s.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --threads -1") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s.jsonl").exists()
