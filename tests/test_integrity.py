"""Caches and saved models are checked against their own files (issue 24, items 6, 7 and 10).

A cache entry (token arrays, frozen-LM states, the converted SmolLM2 judge) records a checksum when it
is written and is verified on every use: a changed file is one line naming it and the fix, never a
silent rebuild and never a wrong result. A saved model records hashes of its config and tokenizer in
its safetensors metadata and refuses files that no longer match. `decode` / `encode` refuse what they
cannot read in one line."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import ldlm
from ldlm import checksum; from ldlm.evaluation import judges
from ldlm.training.batches import load_training_data
from ldlm.runtime.checkpoint import CheckpointError
from ldlm.config import make_config
from ldlm.text.data import DataError, build_token_data, token_cache_path
from ldlm.text.frozen_lm import cached_hidden_states, load_frozen_lm, load_tokenizer
from ldlm.training.train import train

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "tiny-wiki-ldlm"


def _run(args, cache: Path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "LDLM_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)


def _refused(proc, *named: str) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and all(n in last for n in named), proc.stderr[-3000:]
    return last


def _one_line(err: pytest.ExceptionInfo, *named: str) -> str:
    text = str(err.value)
    assert "\n" not in text and all(n in text for n in named), text
    return text


def _zero(path: Path, offset: int, n: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(bytes(n))


def _bytes(folder: Path) -> dict:
    return {f: f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()}


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A cache of this test's own (the session's is shared with other tests)."""
    monkeypatch.setenv("LDLM_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _smoke_tokens():
    cfg = make_config("smoke")
    tok = load_tokenizer("minilm")
    data = build_token_data(cfg, tok, "minilm")
    return cfg, tok, data, token_cache_path(cfg, tok, "minilm")


@pytest.fixture
def tokens(tmp_path, monkeypatch) -> Path:
    """The smoke token cache entry, built once in the session's cache and copied into one of this test's own."""
    _, _, _, shared = _smoke_tokens()
    monkeypatch.setenv("LDLM_CACHE", str(tmp_path / "cache"))
    return Path(shutil.copytree(shared, tmp_path / "cache" / "tokens" / shared.name))


# ---- 6. caches carry a checksum ---------------------------------------------------------------------

def test_a_token_cache_records_the_checksum_of_each_array():
    _, _, _, folder = _smoke_tokens()
    recorded = json.loads((folder / "meta.json").read_text())["checksums"]
    assert sorted(recorded) == ["train.npy", "train_len.npy", "valid.npy", "valid_len.npy"]
    assert recorded["train.npy"] == checksum.of_file(folder / "train.npy")


def test_a_zeroed_token_cache_is_refused_naming_the_file_and_the_fix_and_is_not_rebuilt(tokens):
    folder = tokens
    _zero(folder / "train.npy", 4096, 2048)
    before = _bytes(folder)
    last = _refused(_run(["ldlm.tools.prepare", "--preset", "smoke"], folder.parents[1]), str(folder / "train.npy"), "rm -r",
                    "python -m ldlm.tools.prepare --preset smoke --dataset wiki")
    assert "checksum" in last
    assert _bytes(folder) == before  # refused, not rebuilt over


def test_a_truncated_token_array_is_refused_not_rebuilt(tokens):
    folder = tokens
    with open(folder / "valid_len.npy", "r+b") as f:
        f.truncate(200)
    before = _bytes(folder)
    with pytest.raises(checksum.CacheCorrupt) as err:
        _smoke_tokens()
    _one_line(err, str(folder / "valid_len.npy"), "rm -r")
    assert _bytes(folder) == before


def test_a_token_cache_written_before_checksums_records_them_on_first_use_and_is_checked_after(tokens, capsys):
    folder = tokens
    data = _smoke_tokens()[2]
    meta = json.loads((folder / "meta.json").read_text())
    recorded = meta.pop("checksums")
    (folder / "meta.json").write_text(json.dumps(meta))
    arrays = {f: f.read_bytes() for f in folder.glob("*.npy")}
    _, _, again, _ = _smoke_tokens()  # used as it is (not rebuilt), its checksums recorded with a note
    assert np.array_equal(again.train, data.train)
    assert "recorded the checksums" in capsys.readouterr().err
    assert json.loads((folder / "meta.json").read_text())["checksums"] == recorded
    assert {f: f.read_bytes() for f in folder.glob("*.npy")} == arrays
    _zero(folder / "valid.npy", 200, 64)
    with pytest.raises(checksum.CacheCorrupt):
        _smoke_tokens()


def test_a_token_id_out_of_range_is_one_line_naming_the_id_and_the_cache(tokens):
    """A cache whose checksum matches (recorded before the damage: an old cache) still never feeds an
    out-of-range id to the embedding: one line, not an IndexError from inside torch."""
    folder = tokens
    meta = json.loads((folder / "meta.json").read_text())
    del meta["checksums"]
    (folder / "meta.json").write_text(json.dumps(meta))
    train_npy = np.load(folder / "train.npy", mmap_mode="r+")
    train_npy[:, 1] = 65000
    train_npy.flush()
    del train_npy
    cfg = make_config("smoke", cache_hidden=False)
    data = load_training_data(cfg, "cpu")
    with pytest.raises(DataError) as err:
        data.batch("train", np.arange(4), "cpu")
    _one_line(err, "65000", str(folder), "30522")


def test_a_token_id_out_of_range_is_refused_before_caching_states(cache):
    lm = load_frozen_lm("minilm", -3)
    blocks = np.array([[101, 1996, 40000, 102]], dtype=np.int32)
    with pytest.raises(DataError) as err:
        cached_hidden_states(lm, "minilm", blocks, np.array([4], dtype=np.int32))
    _one_line(err, "40000", "30522")


def _states(lm):
    blocks = np.array([[101, 1996, 4937, 102], [101, 7592, 102, 0]], dtype=np.int32)
    return blocks, cached_hidden_states(lm, "minilm", blocks, np.array([4, 3], dtype=np.int32))


def test_a_zeroed_or_truncated_state_cache_is_refused_naming_the_file(cache):
    lm = load_frozen_lm("minilm", -3)
    blocks, states = _states(lm)
    path = Path(states.filename)
    assert checksum.sidecar(path).is_file()
    del states
    _zero(path, 200, 256)
    with pytest.raises(checksum.CacheCorrupt) as err:
        _states(lm)
    _one_line(err, str(path), "rm")
    with open(path, "r+b") as f:
        f.truncate(100)
    with pytest.raises(checksum.CacheCorrupt):
        _states(lm)
    assert path.stat().st_size == 100  # not silently recomputed over


def test_a_state_cache_written_before_checksums_is_used_and_recorded(cache, capsys):
    lm = load_frozen_lm("minilm", -3)
    _, first = _states(lm)
    path, values = Path(first.filename), np.array(first)
    del first
    checksum.sidecar(path).unlink()
    _, again = _states(lm)
    assert np.array_equal(again, values) and checksum.sidecar(path).is_file()
    assert "recorded the checksum" in capsys.readouterr().err
    del again
    _zero(path, 200, 256)
    with pytest.raises(checksum.CacheCorrupt):
        _states(lm)


@pytest.mark.slow
def test_train_on_a_zeroed_state_cache_exits_2_naming_the_file(cache):
    cfg = make_config("smoke")
    load_training_data(cfg, "cpu")  # builds the token arrays and both state caches
    states = sorted((cache / "hidden").glob("*.npy"))
    assert len(states) == 2
    _zero(states[0], 1 << 16, 1 << 16)
    before = _bytes(cache)
    _refused(_run(["ldlm.training.train", "--preset", "smoke", "--no-progress", "--out", str(cache.parent / "run")], cache),
             str(states[0]), "rm")
    assert _bytes(cache) == before


def _fake_smollm2(cache: Path) -> Path:
    """A converted-judge folder as smollm2_checkpoint leaves it (its files only: nothing loads them here)."""
    folder = cache / "models" / "smollm2"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "llama"}\n')
    (folder / "model.safetensors").write_bytes(np.random.default_rng(0).bytes(300_000))
    return folder


def test_a_converted_judge_is_verified_before_use_and_a_zeroed_one_refused(cache, tmp_path):
    folder = _fake_smollm2(cache)
    checksum.record_folder(folder)
    assert judges.smollm2_checkpoint() == folder
    _zero(folder / "model.safetensors", 1000, 50_000)
    before = _bytes(folder)
    samples = tmp_path / "s.jsonl"
    samples.write_text('{"text": "One sample."}\n')
    _refused(_run(["ldlm.evaluation.evaluate", "--samples", str(samples), "--dataset", "wiki", "--judge", "smollm2",
                   "--out", str(tmp_path / "row.json")], cache), str(folder / "model.safetensors"), "rm -r")
    assert _bytes(folder) == before


def test_a_converted_judge_written_before_checksums_records_them_on_first_use(cache, capsys):
    folder = _fake_smollm2(cache)
    assert judges.smollm2_checkpoint() == folder
    assert "recorded the checksums" in capsys.readouterr().err
    assert judges.smollm2_checkpoint() == folder
    (folder / "config.json").write_text('{"model_type": "gpt2"}\n')
    with pytest.raises(checksum.CacheCorrupt) as err:
        judges.smollm2_checkpoint()
    _one_line(err, str(folder / "config.json"))


def test_the_sampled_checksum_sees_a_change_in_any_sampled_block_of_a_large_file(tmp_path, monkeypatch):
    monkeypatch.setattr(checksum, "BLOCK", 1024)  # a "large" file without writing 64 MiB
    monkeypatch.setattr(checksum, "SAMPLES", 8)
    path = tmp_path / "big.bin"
    path.write_bytes(np.random.default_rng(1).bytes(100_000))
    recorded = checksum.of_file(path)
    assert "sampled" in recorded
    _zero(path, 100_000 - 500, 10)  # the last block is always sampled
    assert checksum.of_file(path) != recorded
    path.write_bytes(np.random.default_rng(1).bytes(100_000) + b"x")
    assert checksum.of_file(path) != recorded  # the size is part of it


# ---- 7. a saved model is checked against its own files ----------------------------------------------

@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("saved")
    train(make_config("smoke", max_steps=2, eval_every=100, ckpt_every=100), root / "run", progress=False)
    ldlm.load(root / "run", device="cpu").save_pretrained(root / "model")
    return root / "model"


@pytest.fixture
def model(saved, tmp_path) -> Path:
    """A copy of the saved model for one test to change."""
    return Path(shutil.copytree(saved, tmp_path / "model"))


def _edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config["config"].update(changes)
    (folder / "config.json").write_text(json.dumps(config, indent=2))


def test_a_saved_model_records_hashes_of_its_config_and_tokenizer(saved):
    with safe_open(saved / "model.safetensors", "pt") as f:
        meta = f.metadata()
    assert len(meta["ldlm_config_sha256"]) == 64 and len(meta["ldlm_tokenizer_sha256"]) == 64
    assert ldlm.load(saved, device="cpu").kind == "ldlm"


@pytest.mark.parametrize("change", [dict(lm_layer=-2), dict(pack_mode="pad")], ids=["lm_layer", "pack_mode"])
def test_an_edited_config_is_refused_in_one_line(model, change):
    _edit_config(model, **change)
    with pytest.raises(CheckpointError) as err:
        ldlm.load(model, device="cpu")
    _one_line(err, str(model / "config.json"), "allow_mismatch=True")


def test_another_tokenizer_is_refused_in_one_line(model):
    tok = json.loads((model / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    vocab["zzzz"], vocab["the"] = vocab["the"], vocab.pop("zzzz", len(vocab))  # another vocabulary
    (model / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(CheckpointError) as err:
        ldlm.load(model, device="cpu")
    _one_line(err, "tokenizer", str(model), "allow_mismatch=True")


def test_the_sample_command_refuses_an_edited_saved_model(model, tmp_path):
    _edit_config(model, lm_layer=-2)
    _refused(_run(["ldlm.trained.sample", "--run", str(model), "--n", "1", "--steps", "1", "--out", str(tmp_path / "s.jsonl")],
                  tmp_path / "cache"), str(model / "config.json"))
    assert not (tmp_path / "s.jsonl").exists()


def test_allow_mismatch_loads_an_edited_model_and_says_so(model):
    _edit_config(model, lm_layer=-2)
    with pytest.warns(UserWarning, match="does not match"):
        pipe = ldlm.load(model, device="cpu", allow_mismatch=True)
    assert pipe.cfg.lm_layer == -2


@pytest.mark.parametrize("name, cut", [("config.json", 0.5), ("model.safetensors", 0.5), ("model.safetensors", 0.0)])
def test_a_saved_model_cut_short_is_one_error_line_naming_the_file(model, tmp_path, name, cut):
    path = model / name
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * cut)])
    with pytest.raises(CheckpointError, match=re.escape(repr(str(path)))) as err:
        ldlm.load(model, device="cpu")
    assert "\n" not in str(err.value) and "export the model again" in str(err.value)
    _refused(_run(["ldlm.trained.sample", "--run", str(model), "--n", "1", "--steps", "1", "--out", str(tmp_path / "s.jsonl")],
                  tmp_path / "cache"), str(path))


def test_a_model_exported_before_the_hashes_still_loads(model):
    weights = load_file(model / "model.safetensors")
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})  # as older exports wrote it
    with pytest.warns(UserWarning, match="not checked"):
        pipe = ldlm.load(model, device="cpu")
    assert pipe.kind == "ldlm"


# ---- 10. decode and encode refuse what they cannot read ------------------------------------------------

@pytest.fixture(scope="module")
def shipped():
    return ldlm.load(SHIPPED, device="cpu")


@pytest.fixture(scope="module")
def z(shipped):
    return shipped.encode(["The city is on the river."], progress=False)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_decode_refuses_non_finite_latents(shipped, z, bad):
    broken = z.clone()
    broken[0, 3, 5] = bad
    with pytest.raises(ValueError) as err:
        shipped.decode(broken)
    _one_line(err, "non-finite", "latents")


@pytest.mark.parametrize("lengths", [[-5], [0], [65], [1.5], [3, 4], ["x"]])
def test_decode_refuses_bad_lengths(shipped, z, lengths):
    with pytest.raises(ValueError) as err:
        shipped.decode(z, lengths=lengths)
    _one_line(err, "lengths=")


def test_decode_reads_other_float_dtypes_as_float32(shipped, z):
    assert shipped.decode(z.double()) == shipped.decode(z) == shipped.decode(z.half().float())
    assert shipped.decode(z, lengths=torch.tensor([5])) == shipped.decode(z, lengths=[5])


def test_decode_refuses_integer_latents(shipped, z):
    with pytest.raises(ValueError) as err:
        shipped.decode(z.long())
    _one_line(err, "torch.int64")


@pytest.mark.parametrize("texts", [["\ud800"], ["fine", "half a pair \udfff"]])
def test_encode_refuses_text_that_is_not_unicode_in_one_line(shipped, texts):
    with pytest.raises(ValueError) as err:
        shipped.encode(texts, progress=False)
    _one_line(err, f"texts[{len(texts) - 1}]", "surrogate")
