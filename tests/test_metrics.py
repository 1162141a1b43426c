"""Metric tests: tiny random judges for exactness (fast), the real offline judge/featurizer (slow)."""
import dataclasses
import json
import math
import os
import random

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

from ldlm.evaluation import evaluate, metrics
from ldlm.text.frozen_lm import load_tokenizer
from ldlm.evaluation.judges import Judge, load_featurizer, load_judge
from ldlm.text.data import load_corpus, unpack_docs
from ldlm.evaluation.metrics import (count_empty, distinct_n, gen_ppl, mauve_buckets, mauve_score, per_sample_nll, rep_n,
                                     token_accuracy, truncate_texts, unigram_entropy)
from ldlm.text.data import join_docs

TEXTS = [
    "The city was founded in the twelfth century on the banks of the river.",
    "It grew quickly.",
    "Trade with the neighbouring towns brought wealth, and by 1400 the population had doubled again.",
    "A small chapel stands near the old bridge.",
]


@pytest.fixture(scope="module")
def bert_tokenizer():
    return load_tokenizer("minilm")  # bundled WordPiece tokenizer: offline and fast


def tiny_judge(tokenizer, arch: str) -> Judge:
    """A randomly initialised tiny causal LM; a large init std makes its predictions far from uniform."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if arch == "llama":
        cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                          initializer_range=0.3)
        model = LlamaForCausalLM(cfg)
    else:
        cfg = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=4, n_positions=128, bos_token_id=tokenizer.cls_token_id,
                         eos_token_id=tokenizer.sep_token_id,
                         initializer_range=0.3)
        model = GPT2LMHeadModel(cfg)
    return Judge(f"tiny-{arch}", model.eval(), tokenizer, bos_id=tokenizer.cls_token_id,
                 pad_id=tokenizer.pad_token_id, max_length=128, eos_id=tokenizer.sep_token_id)


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def judge(request, bert_tokenizer):
    return tiny_judge(bert_tokenizer, request.param)


def hf_ppl(judge: Judge, text: str) -> float:
    """exp of the Hugging Face loss on BOS + text: the reference the metric must reproduce."""
    ids = [judge.bos_id] + judge.tokenizer(text, add_special_tokens=False)["input_ids"]
    inp = torch.tensor([ids])
    with torch.no_grad():
        return math.exp(judge.model(input_ids=inp, labels=inp).loss.item())


# ----------------------------------------------------------------------------------------------
# generative perplexity, tiny judges


def test_gen_ppl_tok_equals_exp_hf_loss(judge):
    for text in TEXTS[:2]:
        assert gen_ppl([text], judge)["gen_ppl_tok"] == pytest.approx(hf_ppl(judge, text), rel=1e-5)


def test_random_judge_is_not_uniform(judge):
    # guards the tests above: a uniform judge would give PPL == vocab size for every text
    ppl = gen_ppl(TEXTS, judge)["gen_ppl_tok"]
    assert abs(ppl - len(judge.tokenizer)) > 0.05 * len(judge.tokenizer)


def test_batched_equals_one_by_one(judge):
    ids = metrics.judge_token_ids(TEXTS, judge.tokenizer)
    batched, nb, _ = per_sample_nll(ids, judge, batch_size=len(ids))
    single = [per_sample_nll([x], judge, batch_size=1) for x in ids]
    np.testing.assert_allclose(batched, [s[0][0] for s in single], rtol=1e-5)
    np.testing.assert_array_equal(nb, [s[1][0] for s in single])
    a, b = gen_ppl(TEXTS, judge, batch_size=len(TEXTS)), gen_ppl(TEXTS, judge, batch_size=1)
    assert a["gen_ppl_tok"] == pytest.approx(b["gen_ppl_tok"], rel=1e-5)
    assert a["gen_ppl_seq"] == pytest.approx(b["gen_ppl_seq"], rel=1e-5)


def test_padding_token_does_not_matter(judge):
    # TEXTS[1] is short, so in one batch with long texts it is mostly padding
    ids = metrics.judge_token_ids(TEXTS, judge.tokenizer)
    base = per_sample_nll(ids, judge, batch_size=4)[0]
    for pad in (judge.tokenizer.sep_token_id, 1000, 7592):
        other = per_sample_nll(ids, dataclasses.replace(judge, pad_id=pad), batch_size=4)[0]
        np.testing.assert_allclose(other, base, rtol=1e-5)


def test_token_counts_and_truncation(judge):
    ids = metrics.judge_token_ids(TEXTS, judge.tokenizer)
    out = gen_ppl(TEXTS, judge)
    assert out["n_tokens"] == sum(map(len, ids)) and out["n_truncated"] == 0
    short = gen_ppl(TEXTS, judge, max_length=6)
    assert short["n_tokens"] == sum(min(len(x), 5) for x in ids)
    assert short["n_truncated"] == sum(len(x) > 5 for x in ids)


def test_empty_samples_are_counted_and_excluded(judge):
    out = gen_ppl([TEXTS[0], "", "   \n", TEXTS[1]], judge)
    ref = gen_ppl([TEXTS[0], TEXTS[1]], judge)
    assert out["n_empty"] == 2 and out["n_scored"] == 2
    assert out["gen_ppl_tok"] == pytest.approx(ref["gen_ppl_tok"], rel=1e-9)
    assert out["gen_ppl_seq"] == pytest.approx(ref["gen_ppl_seq"], rel=1e-9)
    all_empty = gen_ppl(["", " "], judge)
    assert all_empty["n_empty"] == 2 and math.isnan(all_empty["gen_ppl_tok"])


def test_ppl_conventions_jensen(judge):
    # Same token length, very different NLL: mean of per-sample PPL > token-weighted PPL (Jensen).
    a, b = "the the the the the the the the", "city river music water house paper school light"
    ids = metrics.judge_token_ids([a, b], judge.tokenizer)
    assert len(ids[0]) == len(ids[1])
    nll, n, _ = per_sample_nll(ids, judge)
    out = gen_ppl([a, b], judge)
    assert out["gen_ppl_tok"] == pytest.approx(math.exp(nll.sum() / n.sum()), rel=1e-9)
    assert out["gen_ppl_seq"] == pytest.approx(np.exp(nll / n).mean(), rel=1e-9)
    assert out["gen_ppl_seq"] > out["gen_ppl_tok"] * 1.01


def test_gen_ppl_puts_the_judges_eos_between_documents_and_does_not_score_it(judge):
    # Known answer: the judge reads BOS a EOS b; every token of a and b is scored, EOS only as context.
    a, b = TEXTS[0], TEXTS[1]
    ids_a, ids_b = metrics.judge_token_ids([a, b], judge.tokenizer)
    inp = torch.tensor([[judge.bos_id, *ids_a, judge.eos_id, *ids_b]])
    with torch.no_grad():
        logp = judge.model(input_ids=inp).logits.float().log_softmax(-1)[0, :-1]
    nll = -logp.gather(-1, inp[0, 1:, None])[:, 0]
    scored = inp[0, 1:] != judge.eos_id
    out = gen_ppl([[a, b]], judge)
    assert out["n_tokens"] == len(ids_a) + len(ids_b) == int(scored.sum())
    assert out["nll_tok"] == pytest.approx(nll[scored].mean().item(), rel=1e-5)
    merged = gen_ppl([join_docs([a, b])], judge)  # no boundary: the judge reads one document
    assert merged["n_tokens"] == out["n_tokens"] and merged["nll_tok"] != pytest.approx(out["nll_tok"], rel=1e-4)
    # one document (pad mode) is the plain text; empty documents add no boundary
    assert gen_ppl([[a]], judge)["nll_tok"] == gen_ppl([a], judge)["nll_tok"]
    assert gen_ppl([["", a, " "]], judge)["nll_tok"] == gen_ppl([a], judge)["nll_tok"]
    assert gen_ppl([[], [" "]], judge)["n_empty"] == 2


def test_samples_are_split_into_documents_at_eos_in_wrap_mode_and_cut_at_it_in_pad_mode(bert_tokenizer):
    cls, sep, pad = bert_tokenizer.cls_token_id, bert_tokenizer.sep_token_id, bert_tokenizer.pad_token_id
    row = [cls, 11, 12, sep, 13, -1, 14, sep, sep, 15, pad, sep]
    assert unpack_docs(bert_tokenizer, row, "wrap") == [[11, 12], [13, 14], [15]]
    assert unpack_docs(bert_tokenizer, row, "pad") == [[11, 12]]
    assert unpack_docs(bert_tokenizer, [cls, sep, pad, pad], "pad") == []


def test_judge_runs_in_fp32_even_under_autocast(judge):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = gen_ppl(TEXTS, judge)["gen_ppl_tok"]
    assert inside == pytest.approx(gen_ppl(TEXTS, judge)["gen_ppl_tok"], rel=1e-6)


# ----------------------------------------------------------------------------------------------
# entropy, accuracy, counts, MAUVE plumbing, references


def test_entropy_is_duos_over_the_raw_sampled_ids(bert_tokenizer):
    # Duo's record_entropy: per sample entr(counts / total).sum() over the sample's raw ids, then the mean
    cls, sep, pad = bert_tokenizer.cls_token_id, bert_tokenizer.sep_token_id, bert_tokenizer.pad_token_id
    raw = [[cls, 5, 5, sep, pad, pad], [cls, 7, 8, 9, sep, sep]]
    by_hand = (math.log(6) / 3 + 2 * math.log(3) / 3 + 2 * math.log(6) / 3 + math.log(3) / 3) / 2  # 1.4452
    duo = np.mean([torch.special.entr(torch.unique(torch.tensor(r), return_counts=True)[1] / len(r)).sum().item()
                   for r in raw])
    assert unigram_entropy(raw) == pytest.approx(by_hand, rel=1e-12) == pytest.approx(duo, rel=1e-6)
    # evaluate_samples uses raw_ids by default; the content-id entropy is the extra column
    docs = [unpack_docs(bert_tokenizer, r, "wrap") for r in raw]
    texts = [join_docs([bert_tokenizer.decode(d) for d in ds]) for ds in docs]
    content = [[i for d in ds for i in d] for ds in docs]
    rows = [dict(text=t, token_ids=c, raw_ids=r) for t, c, r in zip(texts, content, raw)]
    refs = metrics.References("wiki", tokenizer=bert_tokenizer)
    row = metrics.evaluate_samples(rows, refs, tiny_judge(bert_tokenizer, "gpt2"), FakeFeaturizer())
    assert row["entropy"] == pytest.approx(by_hand) and row["entropy_tokens"] == "raw_ids"
    assert row["entropy_content"] == pytest.approx((math.log(1) + math.log(3)) / 2)
    assert row["ref_length"] == 6  # the samples' rows
    old = metrics.evaluate_samples([dict(text=t, token_ids=c) for t, c in zip(texts, content)], refs,
                                   tiny_judge(bert_tokenizer, "gpt2"), FakeFeaturizer())
    assert old["entropy"] == old["entropy_content"] and old["entropy_tokens"] == "token_ids"


class FakeFeaturizer:
    """Random features: enough to run the MAUVE plumbing in tests that check other columns."""
    name = "fake"

    def encode(self, texts):
        return np.random.default_rng(len(texts)).normal(size=(len(texts), 8)).astype(np.float32)


def test_unigram_entropy_known_values():
    assert unigram_entropy([[7, 7, 7, 7]]) == pytest.approx(0.0)
    assert unigram_entropy([[1, 2]]) == pytest.approx(math.log(2))
    assert unigram_entropy([[1, 2, 3, 4]]) == pytest.approx(math.log(4))
    assert unigram_entropy([[1, 1, 2, 2]]) == pytest.approx(math.log(2))
    p = np.array([3, 1]) / 4
    assert unigram_entropy([[5, 5, 5, 9]]) == pytest.approx(-(p * np.log(p)).sum())
    # averaged per sample, not pooled: pooled [1,1,1,1,1,2,3,4] would give a different value
    assert unigram_entropy([[1, 1, 1, 1], [1, 2, 3, 4]]) == pytest.approx(math.log(4) / 2)
    assert unigram_entropy([[], [1, 2]]) == pytest.approx(math.log(2))
    assert math.isnan(unigram_entropy([[]]))


def test_rep_n_is_the_share_of_a_samples_repeated_n_grams():
    a, b, c, d = 1, 2, 3, 4
    assert rep_n([[a, b, a, b, a, b]], 2) == pytest.approx(1 - 2 / 5)  # bigrams ab ba ab ba ab: 2 unique of 5
    assert rep_n([[a, b, c, d, a, b, c, d]], 4) == pytest.approx(1 - 4 / 5)  # abcd bcda cdab dabc abcd
    assert rep_n([[7] * 10], 4) == pytest.approx(1 - 1 / 7)
    assert rep_n([[a, b, c, d, 5, 6]], 4) == 0.0
    # averaged over samples, not pooled: the second sample repeats the first's bigram but not its own
    assert rep_n([[a, b, a, b, a, b], [a, b, c]], 2) == pytest.approx((0.6 + 0) / 2)


def test_samples_shorter_than_n_contribute_nothing_and_no_n_grams_give_nan():
    assert rep_n([[1, 2, 1, 2, 1, 2], [5, 6, 7], []], 4) == pytest.approx(1 - 2 / 3)  # 1212 2121 1212
    assert math.isnan(rep_n([], 4)) and math.isnan(rep_n([[1, 2, 3], []], 4))
    assert math.isnan(distinct_n([], 4)) and math.isnan(distinct_n([[1, 2, 3]], 4))


def test_distinct_n_pools_the_n_grams_of_all_samples():
    # bigrams: ab ba ab ba ab | ab bc -> 3 unique of 7; two samples that repeat each other score low too
    assert distinct_n([[1, 2, 1, 2, 1, 2], [1, 2, 3]], 2) == pytest.approx(3 / 7)
    assert distinct_n([[1, 2, 3, 4, 5], [1, 2, 3, 4, 5]], 4) == pytest.approx(2 / 4)
    assert distinct_n([[1, 2, 3, 4, 5], [6, 7, 8, 9], [1]], 4) == 1.0


def test_repetition_is_counted_on_the_content_ids_not_the_padding(bert_tokenizer):
    """A pad-mode row ends in padding, whose repeated 4-grams are no repetition of the text (held-out news
    packed in pad mode: rep_4 0.41 over raw ids, 0.0001 over its documents' ids)."""
    cls, sep, pad = bert_tokenizer.cls_token_id, bert_tokenizer.sep_token_id, bert_tokenizer.pad_token_id
    raw = [[cls, 7, 8, 9, 10, 11, sep, *[pad] * 10], [cls, 12, 12, 12, 12, 12, 12, sep, *[pad] * 9]]
    docs = [unpack_docs(bert_tokenizer, r, "pad") for r in raw]
    texts = [join_docs([bert_tokenizer.decode(d) for d in ds]) for ds in docs]
    content = [[i for d in ds for i in d] for ds in docs]
    rows = [dict(text=t, token_ids=c, raw_ids=r) for t, c, r in zip(texts, content, raw)]
    row = metrics.evaluate_samples(rows, metrics.References("wiki", pack_mode="pad", tokenizer=bert_tokenizer),
                                   tiny_judge(bert_tokenizer, "gpt2"), FakeFeaturizer())
    assert row["entropy_tokens"] == "raw_ids" and rep_n(raw) > 0.3  # the padding would count
    assert row["rep_4"] == pytest.approx((0 + (1 - 1 / 3)) / 2)  # 7 8 9 10 11: none; 12 x 6: 1 of 3
    assert row["distinct_4"] == pytest.approx(3 / 5)


def test_token_accuracy():
    pred = [[1, 2, 3], [4, 5, 6]]
    target = [[1, 0, 3], [4, 5, 0]]
    assert token_accuracy(pred, target, [[1, 1, 1], [1, 1, 0]]) == pytest.approx(4 / 5)
    assert token_accuracy(pred, target, [[0, 1, 0], [0, 0, 1]]) == 0.0
    assert math.isnan(token_accuracy(pred, target, [[0, 0, 0], [0, 0, 0]]))


def test_count_empty():
    assert count_empty(["a", "", "  ", "\n", "b c"]) == 3
    assert count_empty([]) == 0


def test_mauve_plumbing():
    assert [mauve_buckets(n) for n in (5, 64, 128, 1000, 50_000)] == [2, 6, 12, 100, 500]
    with pytest.raises(metrics.EvalError, match="equal shape"):
        mauve_score(np.zeros((10, 4)), np.zeros((9, 4)))


def test_mauve_without_faiss_clustering_warning_and_with_the_same_clusters(capfd):
    import mauve

    rng = np.random.default_rng(0)
    p, q = rng.normal(size=(40, 8)).astype(np.float32), rng.normal(0.5, 1, size=(40, 8)).astype(np.float32)
    plain = mauve.compute_mauve(p_features=p, q_features=q, num_buckets=mauve_buckets(40), seed=25, verbose=False).mauve
    assert "WARNING clustering" in capfd.readouterr().err  # faiss's own warning, from C++, on the plain call
    assert mauve_score(p, q) == plain
    assert "WARNING clustering" not in capfd.readouterr().err


def test_references_are_held_out_rows_of_the_samples_length(bert_tokenizer):
    cls, sep = bert_tokenizer.cls_token_id, bert_tokenizer.sep_token_id
    # wrap (wiki, news): documents concatenated with EOS after each, rows of exactly `length` tokens
    for dataset in ("wiki", "news"):
        pieces = metrics.reference_pieces(dataset, 16, bert_tokenizer)
        assert len(pieces) > 10 and all(len(p.raw) == 16 and p.raw[0] == cls and p.raw[-1] == sep for p in pieces)
        for p in pieces:  # every body token is a document token or a boundary
            assert sum(map(len, p.docs)) + p.raw[1:-1].count(sep) == 14
    news = metrics.reference_pieces("news", 16, bert_tokenizer)
    assert any(len(p.docs) > 1 for p in news)  # short sentences share rows, as in training
    # pad: one document per row, cut at the row length
    padded = metrics.reference_pieces("news", 16, bert_tokenizer, pack_mode="pad")
    assert all(len(p.raw) == 16 and len(p.docs) == 1 and len(p.docs[0]) <= 15 for p in padded)  # BOS + 15 if cut
    cut = truncate_texts(["one two three four five six", "one"], 3, bert_tokenizer)
    assert cut == ["one two three", "one"]
    with pytest.raises(metrics.EvalError, match="reference split"):
        metrics.reference_pieces("wiki", 10, bert_tokenizer, split="test")


# ----------------------------------------------------------------------------------------------
# command line: bad input exits 2 and writes nothing


def run_cli(tmp_path, *args):
    out = tmp_path / "row.json"
    code = evaluate.main([*args, "--dataset", "wiki", "--out", str(out)])
    return code, out


def test_cli_missing_file(tmp_path, capsys):
    code, out = run_cli(tmp_path, "--samples", str(tmp_path / "nope.jsonl"))
    assert code == 2 and not out.exists()
    assert "does not exist" in capsys.readouterr().err


def test_cli_empty_file(tmp_path, capsys):
    (tmp_path / "s.jsonl").write_text("\n")
    code, out = run_cli(tmp_path, "--samples", str(tmp_path / "s.jsonl"))
    assert code == 2 and not out.exists()
    assert "no samples" in capsys.readouterr().err


def test_cli_row_without_text(tmp_path, capsys):
    (tmp_path / "s.jsonl").write_text(json.dumps({"token_ids": [1, 2]}) + "\n")
    code, out = run_cli(tmp_path, "--samples", str(tmp_path / "s.jsonl"))
    assert code == 2 and not out.exists()
    assert "'text'" in capsys.readouterr().err


def test_cli_unknown_judge(tmp_path, capsys):
    (tmp_path / "s.jsonl").write_text(json.dumps({"text": "hello"}) + "\n")
    code, out = run_cli(tmp_path, "--samples", str(tmp_path / "s.jsonl"), "--judge", "no-such-judge-xyz")
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert "no-such-judge-xyz" in err and "smollm2" in err


def test_sample_meta_is_copied():
    rows = [dict(text="a", steps=100, seed=1, dtype="float64"), dict(text="b", steps=100, seed=2, dtype="float64")]
    assert evaluate._meta(rows) == dict(steps=100, seed=[1, 2], dtype="float64")
    assert evaluate._meta([dict(text="a")]) == {}


# ----------------------------------------------------------------------------------------------
# slow: the real offline judge and featurizer


def shuffle_words(text: str, rng: random.Random) -> str:
    words = text.split()
    rng.shuffle(words)
    return " ".join(words)


def token_pieces(dataset: str, length: int, tok) -> list[list[int]]:
    """Held-out documents as pieces of <= `length` tokens: long ones cut into full chunks, short ones whole."""
    ids = metrics.judge_token_ids(load_corpus(dataset).valid, tok)
    return [x[k:k + length] for x in ids if x for k in (range(0, len(x) - length + 1, length) if len(x) > length else [0])]


def held_out_pieces(dataset: str) -> list[str]:
    """Held-out text as pieces of <= 64 MiniLM tokens, in a fixed random order (for the featurizers)."""
    tok = load_tokenizer("minilm")
    pieces = token_pieces(dataset, 64, tok)
    order = np.random.default_rng(0).permutation(len(pieces))
    return [tok.decode(pieces[i]) for i in order]


@pytest.fixture(scope="module")
def wiki_pieces():
    return held_out_pieces("wiki")


@pytest.mark.slow
def test_smollm2_matches_hf_loss_and_prefers_real_text(wiki_pieces):
    judge = load_judge("smollm2")
    assert next(judge.model.parameters()).dtype == torch.float32 and not judge.model.training
    assert load_judge("smollm2") is judge  # loaded once per process
    text = "The history of the city is marked by a mix of historical landmarks and cultural institutions."
    assert gen_ppl([text], judge)["gen_ppl_tok"] == pytest.approx(hf_ppl(judge, text), rel=1e-4)

    judge_tok = judge.tokenizer
    real = [judge_tok.decode(p) for p in token_pieces("wiki", 64, judge_tok)[:16]]
    rng = random.Random(0)
    shuffled = [shuffle_words(t, rng) for t in real]
    ppl_real, ppl_shuf = gen_ppl(real, judge)["gen_ppl_tok"], gen_ppl(shuffled, judge)["gen_ppl_tok"]
    assert 5 < ppl_real < 100       # fluent Wikipedia, ~30-40 for this judge
    assert ppl_shuf > 5 * ppl_real  # word salad, ~700


def shuffle_across(texts: list[str], rng: random.Random) -> list[str]:
    """All words of all texts shuffled together, re-cut to each text's word count."""
    words = [w for t in texts for w in t.split()]
    rng.shuffle(words)
    out, k = [], 0
    for t in texts:
        out.append(" ".join(words[k:k + len(t.split())]))
        k += len(t.split())
    return out


@pytest.mark.slow
def test_mauve_minilm_real_vs_shuffled(wiki_pieces):
    feat = load_featurizer("minilm")
    n = 200
    p, q = wiki_pieces[:n], wiki_pieces[n:2 * n]
    fp = feat.encode(p)
    assert fp.shape == (n, 384) and np.allclose(np.linalg.norm(fp, axis=1), 1, atol=1e-4)
    assert mauve_score(fp, feat.encode(q)) > 0.9                                      # measured 0.95
    assert mauve_score(fp, feat.encode(shuffle_across(p, random.Random(0)))) < 0.1    # measured 0.02
    # Known limitation, pinned so nobody relies on it: MiniLM sentence embeddings are nearly
    # bag-of-words, so shuffling words *within* each text is invisible to MAUVE (measured 1.0).
    # Fluency is what Gen PPL measures; MAUVE with minilm features measures content/topic. For word
    # order use the smollm2-mean featurizer (next test).
    rng = random.Random(0)
    assert mauve_score(fp, feat.encode([shuffle_words(t, rng) for t in p])) > 0.5


@pytest.mark.slow
@pytest.mark.parametrize("dataset, n", [("wiki", 128), ("news", 64)])  # news: 150 held-out pieces
def test_mauve_smollm2_mean_sees_word_order(dataset, n):
    # Issue 3's criterion, literally: held-out vs held-out > 0.9, held-out vs the same texts with the
    # words shuffled inside each text < 0.1. Measured 1.00 / 0.014 (wiki), 1.00 / 0.024 (news); over
    # 10 other draws of pieces, mean (worst): wiki 0.97 (0.91) / 0.013 (0.018), news 0.97 (0.94) / 0.03 (0.07).
    texts = held_out_pieces(dataset)
    feat = load_featurizer("smollm2-mean")
    p, q = texts[:n], texts[n:2 * n]
    fp = feat.encode(p)
    assert fp.shape == (n, 576) and np.allclose(np.linalg.norm(fp, axis=1), 1, atol=1e-4)
    hh = mauve_score(fp, feat.encode(q))
    rng = random.Random(0)
    shuffled = mauve_score(fp, feat.encode([shuffle_words(t, rng) for t in p]))
    assert hh > 0.9
    assert shuffled < 0.1


@pytest.mark.slow
def test_evaluate_file_end_to_end(tmp_path, wiki_pieces):
    tok = load_tokenizer("minilm")
    rows = [dict(text=t, token_ids=tok(t, add_special_tokens=False)["input_ids"], steps=50, seed=3,
                 dtype="float64") for t in wiki_pieces[-40:]] + [dict(text="", token_ids=[], steps=50, seed=3,
                                                                       dtype="float64")]
    samples = tmp_path / "s.jsonl"
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "row.json"
    assert evaluate.main(["--samples", str(samples), "--dataset", "wiki", "--out", str(out),
                          "--text-tokenizer", "minilm"]) == 0
    row = json.loads(out.read_text())
    assert row["n_samples"] == 41 and row["n_empty"] == 1 and row["n_scored"] == 40
    assert row["steps"] == 50 and row["seed"] == 3 and row["dtype"] == "float64"
    assert row["judge"] == "smollm2" and row["featurizer"] == "minilm"
    assert row["metrics_version"] == metrics.METRICS_VERSION and row["entropy_tokens"] == "token_ids"
    assert row["mauve_n"] == 41 and row["ref_length"] == 66 and 0 <= row["mauve"] <= 1  # 64 + BOS/EOS
    assert row["gen_ppl_seq"] >= row["gen_ppl_tok"] > 1
    assert 3 < row["entropy"] < math.log(64)


def test_ablation_table_marks_differences_within_the_seed_spread():
    import pandas as pd
    from ldlm.evaluation.tables import WITHIN_SPREAD, ablation_table

    rows = pd.DataFrame([dict(variant=v, seed=s, gen_ppl_tok=x, entropy=e) for v, s, x, e in [
        ("full", 0, 100.0, 3.0), ("full", 1, 120.0, 3.2),          # mean 110, std 14.1
        ("no_mse", 0, 105.0, 2.0), ("no_mse", 1, 125.0, 2.1),      # 115: within the spread
        ("naive", 0, 900.0, 3.1), ("naive", 1, 1000.0, 3.1)]])     # 950: outside
    table = ablation_table(rows, ["full", "no_mse", "naive"])
    ppl, ent = table["Gen PPL (tok) ↓"], table["Entropy"]
    assert ppl.iloc[1].endswith(WITHIN_SPREAD) and not ppl.iloc[2].endswith(WITHIN_SPREAD)
    assert not ent.iloc[1].endswith(WITHIN_SPREAD) and ent.iloc[2].endswith(WITHIN_SPREAD)
    assert not ppl.iloc[0].endswith(WITHIN_SPREAD) and list(table["seeds"]) == [2, 2, 2]


def test_equal_seed_values_a_last_bit_apart_are_within_the_spread():
    import pandas as pd
    from ldlm.evaluation.tables import WITHIN_SPREAD, ablation_table

    floor, above = 0.0040720962619612555, 0.004072096261961256  # MAUVE's floor in two runs: one ulp apart
    rows = pd.DataFrame([dict(variant=v, seed=s, mauve=x) for v, s, x in [  # as results/ablation.csv held them
        ("full", 0, floor), ("naive", 0, above), ("full", 1, floor), ("naive", 1, above), ("full", 2, floor),
        ("naive", 2, floor)]])
    assert ablation_table(rows, ["full", "naive"])["MAUVE ↑"].iloc[1].endswith(WITHIN_SPREAD)


def test_quality_matched_speedup_compares_seed_means():
    import pandas as pd
    from ldlm.evaluation.tables import quality_matched_speedup

    main = pd.DataFrame([dict(model=m, steps=k, top_p=None, seed=s, gen_ppl_tok=x, entropy=3.5) for m, k, s, x in [
        ("ldlm", 10, 0, 90.0), ("ldlm", 10, 1, 130.0),     # mean 110: not as good as MDLM's 100
        ("ldlm", 30, 0, 80.0), ("ldlm", 30, 1, 100.0),     # mean 90: matches
        ("mdlm", 100, 0, 95.0), ("mdlm", 100, 1, 105.0)]])
    speed = pd.DataFrame([dict(model=m, steps=k, batch=64, samples_per_s=v) for m, k, v in
                          [("ldlm", 10, 40.0), ("ldlm", 30, 20.0), ("mdlm", 100, 5.0)]])
    table = quality_matched_speedup(main, speed, batch=64)  # LDLM's frontier: one point, 30 steps (the most)
    row = table.iloc[0]
    assert len(table) == 1 and (row["LDLM Gen PPL at that entropy"], row["LDLM no worse"]) == ("90", "yes")
    assert row["speed-up"] == "4.00x" and row["LDLM frontier entropy"] == "3.5–3.5 (30 steps)"


def test_all_empty_samples_have_no_mauve(bert_tokenizer):
    """Nothing to compare: MAUVE is NaN for all-empty samples (it scored 0.07 for a collapsed variant)."""
    row = metrics.evaluate_samples([dict(text="", token_ids=[]), dict(text=" ", token_ids=[])],
                                   metrics.References("wiki", length=8, tokenizer=bert_tokenizer),
                                   tiny_judge(bert_tokenizer, "gpt2"), FakeFeaturizer())
    assert math.isnan(row["mauve"]) and row["n_empty"] == 2


def test_tables_say_when_a_metric_has_fewer_seeds_than_the_row():
    import pandas as pd
    from ldlm.evaluation.tables import ablation_table

    rows = pd.DataFrame([dict(variant="full", seed=0, gen_ppl_tok=float("nan"), entropy=0.0),
                         dict(variant="full", seed=1, gen_ppl_tok=50.0, entropy=1.0)])
    table = ablation_table(rows, ["full"])
    assert table["Gen PPL (tok) ↓"].iloc[0] == "50 (1 of 2 seeds)" and table["Entropy"].iloc[0] == "0.5 ± 0.71"


def test_the_ceiling_names_a_missing_reference_length_before_loading_anything():
    with pytest.raises(metrics.EvalError, match="references.length=None"):
        metrics.reference_ceiling(metrics.References("wiki"), 4, judge=None, featurizer=None)
