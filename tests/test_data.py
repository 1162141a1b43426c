import json

import numpy as np
import pytest

from ldlm.config import make_config
from ldlm.data import DataError, build_token_data, load_corpus, pack_pad, pack_wrap, split_sentences
from ldlm.frozen_lm import load_tokenizer


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
