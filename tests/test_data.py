import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

import ldlm.text.data as data
from ldlm.tools import prepare
from ldlm.checksum import CacheCorrupt
from ldlm.config import ConfigError, make_config
from ldlm.text.data import (DataError, build_token_data, fill_pad, fill_wrap, held_out_count, load_corpus, pack_pad,
                       pack_wrap, read_token_cache, split_sentences, token_cache_path, wrap_rows)
from ldlm.text.frozen_lm import load_tokenizer


def test_wrap_packing_loses_no_token_but_the_tail():
    docs = [list(range(10, 10 + n)) for n in (5, 17, 3, 40, 11)]
    seq_len, bos, eos = 8, 1, 2
    blocks = pack_wrap(docs, seq_len, bos, eos)
    assert blocks.shape[1] == seq_len and (blocks[:, 0] == bos).all() and (blocks[:, -1] == eos).all()
    stream = [t for d in docs for t in (*d, eos)]
    body = blocks[:, 1:-1].reshape(-1).tolist()
    assert body == stream[: len(body)]
    assert len(stream) - len(body) < seq_len - 2  # only the tail shorter than one block is dropped


def test_pad_packing_frames_truncates_and_counts():
    docs = [[5, 6], [7] * 10, []]
    blocks, lengths, truncated = pack_pad(docs, 6, bos=1, eos=2, pad=0)
    assert blocks.tolist() == [[1, 5, 6, 2, 0, 0], [1, 7, 7, 7, 7, 7], [1, 2, 0, 0, 0, 0]]
    assert lengths.tolist() == [4, 6, 2] and truncated == 1


def test_sentence_split():
    assert split_sentences('He left the room. "Then she came in." The end was near! Ok then') == [
        "He left the room.", '"Then she came in."', "The end was near!"]  # < 3 words dropped


def test_embedded_corpora_split_deterministically():
    wiki = load_corpus("wiki")
    assert len(wiki.train) == 100 and len(wiki.valid) == 6
    assert load_corpus("wiki").valid == wiki.valid
    assert not set(wiki.train) & set(wiki.valid)
    news = load_corpus("news")
    assert len(news.train) > 2000 and len(news.valid) > 100
    assert not set(news.train) & set(news.valid)


def test_user_corpora(tmp_path):
    text = tmp_path / "c.txt"
    text.write_text("first doc line\nstill first\n\nsecond doc\n\n\nthird doc\n")
    corpus = load_corpus(f"text:{text}", valid_docs=1)
    assert corpus.train == ["first doc line\nstill first", "second doc"] and corpus.valid == ["third doc"]
    jl = tmp_path / "c.jsonl"
    jl.write_text("\n".join(json.dumps({"text": f"doc {i}"}) for i in range(5)))
    assert load_corpus(f"jsonl:{jl}", valid_docs=2).valid == ["doc 3", "doc 4"]


@pytest.mark.parametrize("content, match", [("", "no text"), ("\n\n  \n", "no text")])
def test_empty_corpus_is_a_clear_error(tmp_path, content, match):
    path = tmp_path / "empty.txt"
    path.write_text(content)
    with pytest.raises(DataError, match=match):
        load_corpus(f"text:{path}")


@pytest.mark.parametrize("n_docs, valid_docs, message", [
    (1, -1, "dataset 'text:c.txt' has 1 document: it needs at least two, one to train on and one to hold out"),
    (0, 1, "dataset 'text:c.txt' has 0 documents: it needs at least two"),
    (3, 5, "valid_docs=5 holds out too many: dataset 'text:c.txt' has 3 documents; set valid_docs between 1 and 2"),
    (3, 3, "valid_docs=3 holds out too many: dataset 'text:c.txt' has 3 documents; set valid_docs between 1 and 2"),
    (50, -1, "valid_docs=-1 (the dataset's 100000) holds out too many: dataset 'openwebtext' has 50 documents; "
             "set valid_docs between 1 and 49"),
])
def test_a_held_out_count_that_cannot_work_names_it_the_corpus_size_and_a_possible_fix(n_docs, valid_docs, message):
    name = "openwebtext" if "openwebtext" in message else "text:c.txt"
    with pytest.raises(DataError) as caught:
        held_out_count(name, n_docs, valid_docs)
    assert str(caught.value).startswith(message) and "between 1 and 0" not in str(caught.value)


@pytest.mark.parametrize("valid_docs", [0, -2])
def test_valid_docs_that_holds_out_nothing_is_refused_with_the_config(valid_docs):
    with pytest.raises(ConfigError, match=f"valid_docs={valid_docs}: hold out >= 1 documents, or -1"):
        make_config("smoke", valid_docs=valid_docs)


def test_bad_jsonl_and_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_corpus(f"text:{tmp_path / 'nope.txt'}")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"txt": 1}\n')
    with pytest.raises(DataError, match="bad.jsonl:1"):
        load_corpus(f"jsonl:{bad}")


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown dataset"):
        load_corpus("imagenet")


def test_hub_dataset_offline_says_what_works(monkeypatch):
    with pytest.raises(DataError, match="dataset=wiki"):
        load_corpus("openwebtext")


def test_token_data_is_cached_and_framed(tmp_path):
    cfg = make_config("smoke", dataset="news", pack_mode="pad")
    tok = load_tokenizer("minilm")
    first = build_token_data(cfg, tok, "minilm")
    again = build_token_data(cfg, tok, "minilm")
    assert np.array_equal(first.train, again.train) and np.array_equal(first.valid_len, again.valid_len)
    assert (first.train[:, 0] == tok.cls_token_id).all()
    rows = np.arange(len(first.valid))
    assert (first.valid[rows, first.valid_len - 1] == tok.sep_token_id).sum() >= len(rows) - first.stats["valid_truncated_docs"]
    assert first.stats["mode"] == "pad" and len(first.train) * cfg.seq_len <= cfg.max_train_tokens


def test_short_corpus_for_seq_len_is_clear(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("a b c\n\nd e f\n")
    cfg = make_config("smoke", dataset=f"text:{path}", seq_len=64, valid_docs=1)
    with pytest.raises(DataError, match="smaller seq_len"):
        build_token_data(cfg, load_tokenizer("minilm"), "minilm")


def _chunks(docs, sizes):
    """docs in chunks of the given sizes, as (ids one after another, lengths) like token_chunks gives."""
    start = 0
    for size in sizes:
        part = docs[start:start + size]
        start += size
        yield np.array([t for d in part for t in d], dtype=np.int64), np.array([len(d) for d in part], dtype=np.int64)


@pytest.mark.parametrize("sizes", [[40], [1] * 40, [3, 0, 17, 20]])
def test_streaming_packing_equals_the_reference(sizes):
    rng = np.random.default_rng(0)
    docs = [rng.integers(5, 60000, size=n).tolist() for n in rng.integers(0, 30, size=40)]
    seq_len, bos, eos, pad = 10, 1, 2, 0
    ref = pack_wrap(docs, seq_len, bos, eos)
    rows = wrap_rows(sum(map(len, docs)), len(docs), seq_len)
    out = np.zeros((rows, seq_len), dtype=np.uint16)
    assert fill_wrap(_chunks(docs, sizes), out, bos, eos) == rows == len(ref)
    assert np.array_equal(out, ref)
    cut = np.zeros((5, seq_len), dtype=np.uint16)  # max_train_tokens: the first rows, streaming stops early
    assert fill_wrap(_chunks(docs, sizes), cut, bos, eos) == 5 and np.array_equal(cut, ref[:5])

    ref_blocks, ref_len, truncated = pack_pad(docs, seq_len, bos, eos, pad)
    out, out_len = np.zeros((len(docs), seq_len), dtype=np.int32), np.zeros(len(docs), dtype=np.int32)
    assert fill_pad(_chunks(docs, sizes), out, out_len, bos, eos, pad) == len(docs)
    assert np.array_equal(out, ref_blocks) and np.array_equal(out_len, ref_len)
    assert truncated == sum(len(d) + 2 > seq_len for d in docs) > 0


def _cache_bytes(folder):
    return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))}


@pytest.mark.parametrize("dataset, mode", [("wiki", "wrap"), ("news", "pad")])
def test_workers_give_byte_identical_arrays(tmp_path, monkeypatch, dataset, mode):
    cfg = make_config("smoke", dataset=dataset, pack_mode=mode, max_train_tokens=0)
    tok = load_tokenizer("minilm")
    monkeypatch.setenv("LDLM_CACHE", str(tmp_path / "one"))
    one = token_cache_path(cfg, tok, "minilm")
    build_token_data(cfg, tok, "minilm", workers=1)
    monkeypatch.setenv("LDLM_CACHE", str(tmp_path / "two"))
    monkeypatch.setattr(data, "CHUNK_DOCS", 7)  # many packing chunks too: the arrays must not change
    two = token_cache_path(cfg, tok, "minilm")
    build_token_data(cfg, tok, "minilm", workers=2)
    assert one.name == two.name and sorted(os.listdir(one)) == ["meta.json", "train.npy", "train_len.npy",
                                                                "valid.npy", "valid_len.npy"]
    assert _cache_bytes(one) == _cache_bytes(two)


def test_cache_is_a_folder_of_memory_mapped_arrays():
    cfg = make_config("smoke", dataset="news")
    tok = load_tokenizer("minilm")
    tokens = build_token_data(cfg, tok, "minilm")
    folder = token_cache_path(cfg, tok, "minilm")
    for name in ("train", "valid", "train_len", "valid_len"):
        array = getattr(tokens, name)
        assert isinstance(array, np.memmap) and not array.flags.writeable
        assert np.array_equal(array, np.load(folder / f"{name}.npy"))
    assert tokens.train.dtype == np.uint16 and tokens.train_len.dtype == np.int32  # MiniLM: 30522 ids
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["pad_id"] == tokens.pad_id == tok.pad_token_id and meta["mode"] == "wrap"
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no build folder left behind


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_damaged_cache_is_refused_not_trusted_and_rebuilt_once_deleted(tmp_path, monkeypatch):
    monkeypatch.setenv("LDLM_CACHE", str(tmp_path))  # this test deletes its entry
    cfg = make_config("smoke", dataset="news", pack_mode="pad")
    tok = load_tokenizer("minilm")
    first = build_token_data(cfg, tok, "minilm")
    folder = token_cache_path(cfg, tok, "minilm")
    good = _cache_bytes(folder)

    (folder / "train_len.npy").unlink()  # a file missing: its checksum record says so (tests/test_integrity.py)
    with pytest.raises(CacheCorrupt, match="train_len.npy is missing"):
        build_token_data(cfg, tok, "minilm")
    shutil.rmtree(folder)  # what the error says to do
    assert np.array_equal(build_token_data(cfg, tok, "minilm").train_len, first.train_len)
    assert _cache_bytes(folder) == good

    train = (folder / "train.npy").read_bytes()  # a file cut short
    (folder / "train.npy").write_bytes(train[: len(train) // 2])
    with pytest.raises(CacheCorrupt, match="train.npy is"):
        read_token_cache(folder)
    shutil.rmtree(folder)
    build_token_data(cfg, tok, "minilm")
    assert _cache_bytes(folder) == good

    # a kill during the build leaves only the temporary sibling folder: never read, removed by the next build
    host = socket.gethostname()
    killed = folder.parent / f".{folder.name}.{host}-{_dead_pid()}.x1y2.tmp"
    running = folder.parent / f".{folder.name}.{host}-{os.getpid()}.z3.tmp"
    for tmp in (killed, running):
        tmp.mkdir()
        (tmp / "train.npy").write_bytes(b"half")
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()
    build_token_data(cfg, tok, "minilm")
    assert _cache_bytes(folder) == good
    assert not killed.exists() and running.exists()  # a live process's build folder is left alone


def test_hub_path_holds_out_the_last_documents_and_pins_revisions(tmp_path, monkeypatch):
    """The hub code path offline: load_dataset replaced by a local `datasets.Dataset`."""
    import datasets

    monkeypatch.setenv("LDLM_CACHE", str(tmp_path))  # the fake corpora's caches stay out of the session's

    docs = [f"document number {i} says something about topic {i % 7}." for i in range(60)]
    calls = []

    def fake_load_dataset(path, split, revision):
        calls.append((path, split, revision))
        texts = docs if split == "train" else docs[:9]
        return datasets.Dataset.from_dict({"text": texts, "id": list(range(len(texts)))})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    tok = load_tokenizer("minilm")
    cfg = make_config("smoke", dataset="openwebtext", valid_docs=10, seq_len=16, max_train_tokens=0)
    tokens = build_token_data(cfg, tok, "minilm", workers=2)
    assert calls == [("Skylion007/openwebtext", "train", "main")]
    assert tokens.stats["train_docs"] == 50 and tokens.stats["valid_docs_held_out"] == 10
    reference = load_corpus("openwebtext", valid_docs=10)
    assert list(reference.valid) == docs[-10:] and list(reference.train) == docs[:-10]
    ids = tok(docs[-10:], add_special_tokens=False)["input_ids"]
    assert np.array_equal(tokens.valid, pack_wrap(ids, 16, tok.cls_token_id, tok.sep_token_id))

    monkeypatch.setitem(data.HUB_DATASETS["lm1b"], "revision", "pinned-sha")
    calls.clear()
    lm1b = build_token_data(make_config("smoke", dataset="lm1b", pack_mode="pad", seq_len=16), tok, "minilm")
    assert calls == [("dvruette/lm1b", "train", "pinned-sha"), ("dvruette/lm1b", "test", "pinned-sha")]
    assert lm1b.mode == "pad" and lm1b.stats["revision"] == "pinned-sha" and len(lm1b.valid) == 9
    calls.clear()
    build_token_data(make_config("smoke", dataset="lm1b", pack_mode="pad", seq_len=16, dataset_revision="other"),
                     tok, "minilm")
    assert calls[0][2] == "other"  # an explicit dataset_revision overrides the pin


def test_prepare_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LDLM_CACHE", str(tmp_path))  # a fresh cache, whatever ran before
    assert prepare.main(["--preset", "smoke", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "tokens: " in out and "train: 625 x 32 blocks" in out and "dtype=uint16" in out and "built in" in out
    assert prepare.main(["--preset", "smoke"]) == 0
    assert "found in the cache" in capsys.readouterr().out
    # what `make reproduce` runs first: the frozen LM's states and the evaluation models, cached
    assert prepare.main(["--preset", "smoke", "--states", "--featurizer", "minilm"]) == 0
    out = capsys.readouterr().out
    assert "states: minilm layer" in out and "featurizer minilm: ready" in out
    assert len(list((tmp_path / "hidden").glob("*.npy"))) == 2  # train and valid


@pytest.mark.parametrize("args, message", [
    (["--preset", "smoke", "--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    (["--preset", "smoke", "seq_lenn=8"], "unknown config key"),
    (["--preset", "lm1b", "frozen_lm=minilm"], "needs the Hugging Face hub"),
    (["--preset", "smoke", "--workers", "0"], "--workers 0: must be an integer >= 1"),
    (["--preset", "smoke", "--judge", "no-such-judge"], "judge 'no-such-judge' could not be loaded"),
])
def test_prepare_errors_are_one_line_and_exit_2(capsys, args, message):
    assert prepare.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
