"""Sample-quality metrics with their conventions in their names: Gen PPL, entropy, repetition, MAUVE, accuracy.

Every result row carries METRICS_VERSION; bump it whenever a number computed here would change
(evaluation code drift silently changing metrics is a known problem in the field: flm #6).

Conventions, in one place (MDLM: kuleshov-group/mdlm diffusion.py, Duo: s-sahoo/duo metrics.py):
- Samples: a sampled row keeps its document boundaries. In wrap mode (documents concatenated with
  EOS after each and cut into BOS + block + EOS rows) a sample is the list of its documents, split at
  its EOS tokens (`data.unpack_docs`); in pad mode (one document per row) it is one document, up to
  the first EOS. Other special tokens and "other" ids (-1) are dropped. `text` (for people and the
  featurizer) is the documents joined by a blank line (ldlm.text.data.DOC_SEP).
- Gen PPL: each document is re-tokenized with the judge's tokenizer (no special tokens) and the
  judge's own EOS (`Judge.eos_id`: <|endoftext|> for SmolLM2 and GPT-2) goes between documents, as
  MDLM/Duo decode with the special tokens and GPT-2 reads <|endoftext|> back as its EOS. A boundary
  EOS is context, not scored: MDLM/Duo score non-EOS tokens plus the first EOS, and their rows begin
  with it, so no later EOS is scored. The judge's document-start token (`Judge.bos_id`) is prepended
  so that the first token is scored too (MDLM/Duo prepend nothing; their first token is the row's
  BOS), no EOS is appended (samples are usually cut mid-text), tokens beyond the judge's context are
  cut and counted (`n_truncated`). The judge runs in fp32 outside autocast; NLL sums are float64;
  padding is masked out. Both aggregations are reported: `gen_ppl_tok` = exp(sum NLL / sum tokens)
  over all samples (token-weighted, MDLM/Duo) and `gen_ppl_seq` = mean over samples of exp(mean NLL
  of the sample) (LD4LG / SEDD, no trimming). Empty samples (whitespace only) have no tokens: they
  are counted in `n_empty` and left out of both PPLs, never silently.
- Entropy: Duo's `record_entropy`, over the raw sampled ids (`raw_ids`: the whole row, BOS, EOS and
  padding included): per sample -sum_v p_v ln p_v of its own token frequencies (natural log), then
  the mean over samples. `entropy_content` is the same over the documents' tokens only; the row's
  `entropy_tokens` says which ids `entropy` used (raw_ids, token_ids, or a tokenizer's).
- Repetition: `rep_4` (Welleck et al. 2020's seq-rep-4: per sample, 1 - unique 4-grams / 4-grams, then
  the mean over samples) and `distinct_4` (unique 4-grams / 4-grams, pooled over all samples), both
  over the ids of `entropy_content` (the documents' tokens), not the raw ids: in pad mode a raw row
  ends in a run of padding, whose repeated 4-grams would make held-out text itself look repetitive.
  A loop is easy to predict, so a repetitive sampler gets a low Gen PPL: these columns (and the
  entropy) are what `results.degenerate` flags such rows by.
- MAUVE: `mauve-text` on features only (it would otherwise download GPT-2 Large), equal numbers of
  samples and references, fixed k-means seed, `num_buckets = mauve_buckets(n)`. References have the
  samples' length (SimCTG #7): the dataset's held-out split packed as training packs it (same
  pack_mode, rows of the samples' seq_len) and unpacked as samples are, so they carry the same
  boundaries and framing. With `minilm` features
  MAUVE sees content/topic, not word order (shuffling the words inside each text leaves it at ~1.0);
  `smollm2-mean` features see it (ldlm.evaluation.judges), at ~4x the cost.
- Precision (the result rows' columns, from the sample rows): `dtype` is the model's compute dtype
  while sampling (`bench.compute_dtype`: bfloat16 under GPU autocast, else float32) and `draw_dtype`
  that of its random draws (float64 categorical draws for MDLM and the GPT, as MDLM/Duo's
  use_float64; float32 Gaussian noise for LDLM). Reference rows sample nothing: float32, the judge's.
- Under torchrun, judge scoring and MAUVE featurization are sharded over the ranks (contiguous
  parts, gathered in order), so every rank computes the same row.
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..nets.layers import token_matches
from ..runtime.distributed import DistEnv, map_sharded
from ..text.data import join_docs
from .judges import DEFAULT_FEATURIZER, DEFAULT_JUDGE

METRICS_VERSION = "3"  # 3: rep_4 and distinct_4


class EvalError(ValueError):
    """Inputs that cannot be evaluated; the message says what is wrong."""


def _load(judge=None, featurizer=None):
    """Accept registry names (loaded on the GPU if there is one) or already loaded objects."""
    from ..runtime.distributed import default_device
    from .judges import load_featurizer, load_judge

    j = load_judge(judge, default_device()) if isinstance(judge, str) else judge
    f = load_featurizer(featurizer, default_device()) if isinstance(featurizer, str) else featurizer
    return j, f


# ----------------------------------------------------------------------------------------------
# simple counts


def _text(sample) -> str:
    return sample if isinstance(sample, str) else join_docs(sample)


def count_empty(samples) -> int:
    """Number of samples (texts or lists of documents) that are empty or whitespace only."""
    return sum(not _text(t).strip() for t in samples)


def token_accuracy(pred_ids, target_ids, mask) -> float:
    """Reconstruction token accuracy: mean of (pred == target) over positions where mask is true."""
    correct, n = token_matches(pred_ids, target_ids, mask)
    return float(correct) / int(n) if n else float("nan")


def unigram_entropy(token_lists: Sequence[Sequence[int]]) -> float:
    """Duo's entropy: per sample, H = -sum_v p_v ln p_v over the sample's own token frequencies;
    averaged over samples. Natural log. Empty samples are skipped (nan if all are empty).
    Duo passes the raw sampled ids (`raw_ids`: specials and padding included)."""
    values = []
    for ids in token_lists:
        if len(ids) == 0:
            continue
        _, counts = np.unique(np.asarray(ids), return_counts=True)
        p = counts / counts.sum()
        values.append(float(-(p * np.log(p)).sum()))
    return float(np.mean(values)) if values else float("nan")


def _ngrams(ids, n: int) -> list[tuple]:
    ids = list(ids)
    return list(zip(*(ids[k:] for k in range(n))))


def rep_n(token_lists: Sequence[Sequence[int]], n: int = 4) -> float:
    """Welleck et al. 2020's seq-rep-n: per sample, the share of its n-grams that repeat one before it
    (1 - unique n-grams / n-grams), averaged over samples. Samples shorter than n have no n-grams and
    contribute nothing (nan if no sample has any): a sample is not called repetitive for being short."""
    values = []
    for ids in token_lists:
        grams = _ngrams(ids, n)
        if grams:
            values.append(1 - len(set(grams)) / len(grams))
    return float(np.mean(values)) if values else float("nan")


def distinct_n(token_lists: Sequence[Sequence[int]], n: int = 4) -> float:
    """distinct-n (Li et al. 2016): unique n-grams / n-grams, both counted over all samples together,
    so samples that repeat each other score low too. Li et al. divide by the number of tokens; the
    n-gram count (the common variant) makes all-distinct text 1. Samples shorter than n contribute
    nothing; nan if no sample has an n-gram."""
    grams = [g for ids in token_lists for g in _ngrams(ids, n)]
    return len(set(grams)) / len(grams) if grams else float("nan")


# ----------------------------------------------------------------------------------------------
# generative perplexity


def judge_token_ids(texts: Sequence[str], tokenizer) -> list[list[int]]:
    """Texts re-tokenized with `tokenizer`, no special tokens; whitespace-only texts give []."""
    ids = tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"] if len(texts) else []
    return [x if t.strip() else [] for t, x in zip(texts, ids)]


def judge_sample_ids(samples, judge) -> list[list[int]]:
    """judge_token_ids of each sample; a sample given as a list of documents gets the judge's own
    EOS (`judge.eos_id`) between its documents, so that the judge does not score them as one."""
    docs = [[s] if isinstance(s, str) else [d for d in s if d.strip()] for s in samples]
    flat = iter(judge_token_ids([d for ds in docs for d in ds], judge.tokenizer))
    out = []
    for ds in docs:
        ids = []
        for k, doc in enumerate(next(flat) for _ in ds):
            ids += ([judge.eos_id] if k else []) + doc
        out.append(ids)
    return out


@torch.inference_mode()
def per_sample_nll(token_lists: Sequence[Sequence[int]], judge, batch_size: int = 16,
                   max_length: int | None = None, progress: bool = False) -> tuple[np.ndarray, np.ndarray, int]:
    """(sum of NLL per sample [float64], scored tokens per sample, number of truncated samples).

    Input per sample: BOS + its tokens (cut to max_length - 1), right-padded with judge.pad_id; each
    token is scored given BOS and the tokens before it, except document boundaries (judge.eos_id:
    context, not scored, as in MDLM/Duo). Samples are batched by length so that little padding is
    computed; padding never enters the sums. `progress`: a bar over the batches."""
    from tqdm.auto import tqdm

    max_length = max_length or judge.max_length
    seqs = [list(ids[: max_length - 1]) for ids in token_lists]
    truncated = sum(len(ids) > max_length - 1 for ids in token_lists)
    nll, ntok = np.zeros(len(seqs), np.float64), np.zeros(len(seqs), np.int64)
    order = sorted((i for i in range(len(seqs)) if seqs[i]), key=lambda i: -len(seqs[i]))
    device = judge.device
    for k in tqdm(range(0, len(order), batch_size), desc="judge", unit="batch", disable=not progress, leave=False):
        idx = order[k:k + batch_size]
        width = 1 + len(seqs[idx[0]])
        inp = torch.full((len(idx), width), judge.pad_id, dtype=torch.long)
        att = torch.zeros((len(idx), width), dtype=torch.long)
        for r, i in enumerate(idx):
            inp[r, : 1 + len(seqs[i])] = torch.tensor([judge.bos_id, *seqs[i]])
            att[r, : 1 + len(seqs[i])] = 1
        inp, att = inp.to(device), att.to(device)
        with torch.autocast(device.type, enabled=False):  # the judge is scored in fp32, always
            logits = judge.model(input_ids=inp, attention_mask=att).logits.float()
        # vocab as the last, contiguous dim: the [B, V, T] layout sums less accurately (1e-4 off)
        tok_nll = F.cross_entropy(logits[:, :-1].flatten(0, 1), inp[:, 1:].flatten(), reduction="none")
        tok_nll = tok_nll.view(len(idx), width - 1)
        mask = (att[:, 1:].bool() & (inp[:, 1:] != judge.eos_id)).to(torch.float64)
        nll[idx] = (tok_nll.double() * mask).sum(1).cpu().numpy()
        ntok[idx] = mask.sum(1).long().cpu().numpy()
    return nll, ntok, truncated


def gen_ppl(texts, judge, batch_size: int = 16, max_length: int | None = None,
            env: DistEnv = DistEnv(), progress: bool = False) -> dict:
    """Generative perplexity of `texts` (each a text, or a list of documents) under `judge`, both
    conventions (module docstring).

    gen_ppl_tok = exp(sum_i NLL_i / sum_i T_i)   (token-weighted; MDLM / Duo)
    gen_ppl_seq = mean_i exp(NLL_i / T_i)        (per-sample, then averaged; LD4LG / SEDD)
    By Jensen, gen_ppl_seq >= gen_ppl_tok when all samples have the same length."""
    judge, _ = _load(judge=judge)
    ids = judge_sample_ids(texts, judge)

    def score(part):  # (nll, tokens, truncated) per sample; the part's truncation count rides on its first
        nll, ntok, truncated = per_sample_nll(part, judge, batch_size, max_length, progress and env.is_main)
        return [(float(a), int(b), int(truncated) if i == 0 else 0) for i, (a, b) in enumerate(zip(nll, ntok))]

    scored_rows = map_sharded(score, ids, env)
    nll = np.array([r[0] for r in scored_rows], dtype=np.float64)
    ntok = np.array([r[1] for r in scored_rows], dtype=np.int64)
    truncated = sum(r[2] for r in scored_rows)
    scored = ntok > 0
    total = int(ntok.sum())
    return dict(
        gen_ppl_tok=math.exp(nll.sum() / total) if total else float("nan"),
        gen_ppl_seq=float(np.exp(nll[scored] / ntok[scored]).mean()) if scored.any() else float("nan"),
        nll_tok=float(nll.sum() / total) if total else float("nan"),
        n_tokens=total, n_scored=int(scored.sum()), n_empty=count_empty(texts), n_truncated=int(truncated),
    )


# ----------------------------------------------------------------------------------------------
# MAUVE


def _features(featurizer, texts, progress: bool) -> np.ndarray:
    """featurizer.encode(texts), with a progress bar when asked (a user's featurizer needs only encode(texts))."""
    return featurizer.encode(texts, progress=True) if progress else featurizer.encode(texts)


def mauve_buckets(n: int) -> int:
    """k-means clusters for n samples per side: n/10, the MAUVE authors' heuristic ('auto'), so
    each cluster holds ~10 points of each side; at least 2, and at most 500 (the value for the
    papers' 5000 samples) because k-means cost grows with it. Fewer points per cluster make the
    histograms noisy and bias MAUVE down."""
    return max(2, min(500, n // 10))


def mauve_score(p_features: np.ndarray, q_features: np.ndarray, num_buckets: int | None = None,
                seed: int = 25, **kwargs) -> float:
    """MAUVE (Pillutla et al. 2021) of two equally sized feature sets [n, d], via mauve-text.

    Only features are passed, never text (text would make mauve-text download GPT-2 Large).
    seed=25 is mauve-text's default k-means seed; pass it explicitly so results are reproducible."""
    import mauve

    p, q = np.asarray(p_features, np.float32), np.asarray(q_features, np.float32)
    if p.ndim != 2 or p.shape != q.shape:
        raise EvalError(f"MAUVE needs two feature sets of equal shape [n, d]; got {p.shape} and {q.shape}")
    if len(p) < 2:
        raise EvalError(f"MAUVE needs at least 2 samples per side; got {len(p)}")
    buckets = num_buckets or mauve_buckets(len(p))
    with kmeans_told_cluster_size(points_per_cluster=max(1, 2 * len(p) // buckets)):
        return float(mauve.compute_mauve(p_features=p, q_features=q, num_buckets=buckets, seed=seed,
                                         verbose=False, **kwargs).mauve)


@contextmanager
def kmeans_told_cluster_size(points_per_cluster: int):
    """Within: mauve-text's faiss k-means knows that ~points_per_cluster points per cluster is intended.

    MAUVE's n/10 heuristic puts ~20 points (of p and q together) in each cluster; faiss wants 39 and
    prints "WARNING clustering N points to K centroids" from C++ on every call otherwise. Its
    `min_points_per_centroid` only gates that warning (subsampling is `max_points_per_centroid`), so
    setting it to the intended size changes no cluster (tested) and ends the warning at its source.
    mauve-text passes no k-means options through, hence the module attribute swapped for the call."""
    import importlib

    mauve_module = importlib.import_module("mauve.compute_mauve")  # `import mauve.compute_mauve` gives the function
    faiss = mauve_module.faiss

    class Faiss:  # faiss, with Kmeans told the cluster size
        def __getattr__(self, name):
            return getattr(faiss, name)

        @staticmethod
        def Kmeans(d, k, **kwargs):
            return faiss.Kmeans(d, k, min_points_per_centroid=min(points_per_cluster, 39), **kwargs)

    mauve_module.faiss = Faiss()
    try:
        yield
    finally:
        mauve_module.faiss = faiss


# ----------------------------------------------------------------------------------------------
# references: held-out text packed and unpacked as the samples are


class Piece(NamedTuple):
    """One held-out row: its ids as packed for training (`raw`, the counterpart of a sample's
    raw_ids) and its documents' ids (`docs`, the counterpart of a sample's docs)."""
    raw: list[int]
    docs: list[list[int]]


def truncate_texts(texts: Sequence[str], length: int, tokenizer) -> list[str]:
    """Each text cut to its first `length` tokens of `tokenizer` (not words) and decoded back."""
    return [tokenizer.decode(ids[:length]) for ids in judge_token_ids(texts, tokenizer)]


def held_out_corpus(corpus):
    """`corpus` as a data.Corpus: pass the run's own (data.load_corpus(cfg.dataset, cfg.valid_docs,
    cfg.dataset_revision)) so evaluation holds out what training held out; a bare dataset name gets
    that dataset's default split."""
    from ..text.data import Corpus, load_corpus

    return corpus if isinstance(corpus, Corpus) else load_corpus(corpus)


def reference_pieces(corpus, length: int, tokenizer, split: str = "valid",
                     pack_mode: str = "wrap") -> list[Piece]:
    """The corpus's held-out split (or its train split) packed as training packs it (`pack_mode`, rows
    of `length` tokens with the BOS/EOS framing: the samples' seq_len) and unpacked as the sampler
    unpacks a sample (`data.unpack_docs`); rows without text are left out."""
    from ..text.data import pack_pad, pack_wrap, special_ids, unpack_docs

    if split not in ("valid", "train"):
        raise EvalError(f"reference split {split!r}: choose 'valid' (held-out) or 'train'")
    if pack_mode not in ("wrap", "pad") or length < 3:
        raise EvalError(f"references need pack_mode wrap or pad and length >= 3; got {pack_mode!r}, {length}")
    corpus = held_out_corpus(corpus)
    ids = judge_token_ids(corpus.valid if split == "valid" else corpus.train, tokenizer)
    bos, eos, pad = special_ids(tokenizer)
    rows = pack_wrap(ids, length, bos, eos) if pack_mode == "wrap" else pack_pad(ids, length, bos, eos, pad)[0]
    pieces = [Piece(r, unpack_docs(tokenizer, r, pack_mode)) for r in rows.tolist()]
    return [p for p in pieces if p.docs]


@dataclass(frozen=True)
class References:
    """The real text a sample set is measured against: rows of `corpus`'s `split` (a data.Corpus, or a
    dataset name: `held_out_corpus`) packed with `pack_mode` at `length` tokens (`reference_pieces`; None:
    the samples' own length), their lengths counted in `tokenizer`'s tokens (a tokenizer or its name; None:
    the judge's), a subset picked by `seed`."""
    corpus: object
    length: int | None = None
    pack_mode: str = "wrap"
    split: str = "valid"
    tokenizer: object = None
    seed: int = 0


def _pick(pieces: list, n: int, rng: np.random.Generator) -> list:
    return [pieces[i] for i in rng.permutation(len(pieces))[:n]]


def _tokenizer_for(text_tokenizer, judge):
    """(tokenizer that lengths are counted in, its name for the row)."""
    if text_tokenizer is None:
        return judge.tokenizer, f"judge:{judge.name}"
    if isinstance(text_tokenizer, str):
        from ..text.frozen_lm import load_tokenizer

        return load_tokenizer(text_tokenizer), text_tokenizer
    return text_tokenizer, getattr(text_tokenizer, "name_or_path", "custom")


def _decode(tokenizer, pieces: Sequence[Piece]) -> list[list[str]]:
    """Each piece's documents as texts, decoded and stripped as the sampler does."""
    return [[t for t in (tokenizer.decode(d).strip() for d in p.docs) if t] for p in pieces]


def _content(pieces: Sequence[Piece]) -> list[list[int]]:
    return [[i for d in p.docs for i in d] for p in pieces]


# ----------------------------------------------------------------------------------------------
# one row per sample set


def evaluate_samples(samples: Sequence[dict], references: References, judge=DEFAULT_JUDGE,
                     featurizer=DEFAULT_FEATURIZER, *, batch_size: int = 16, env: DistEnv = DistEnv(),
                     progress: bool = False) -> dict:
    """Every metric of one sample set, as one tidy row (dict of scalars). `samples`: sample rows as
    sampling writes them, "text" and, when every row has them, "docs", "token_ids" and "raw_ids".

    The rows' `docs` (each sample's documents) go to the judge if given, else their texts; the featurizer
    gets the texts. Entropy: over `raw_ids` if given (Duo), else over `token_ids`, else over the texts'
    tokens; `entropy_content`, `rep_4` and `distinct_4` are always over the content tokens (`token_ids`,
    else the texts').
    Lengths are counted in `references.tokenizer`'s tokens if given (pass the model's own tokenizer, e.g.
    "minilm": the references then come in the model's tokens and carry the same normalisation, such
    as lower-casing), else in the judge's tokens. MAUVE references (`reference_pieces`): rows packed with
    `references.pack_mode` at `references.length` tokens (default: the samples' row length, len(raw_ids[0]),
    else their median content length + 2 for BOS/EOS), as many as there are samples (if the split has
    fewer, a subset of the samples of that size picked by `references.seed` is used; `mauve_n` says how many).
    `references.split="train"` draws them from the training split instead: with a small or topically narrow
    held-out split (wiki: 6 articles) even perfect samples of the training distribution score low
    against held-out references (see reference_ceiling's `mauve_train`)."""
    texts = [r["text"] for r in samples]
    column = lambda key: [r[key] for r in samples] if all(key in r for r in samples) else None
    token_ids, docs, raw_ids = column("token_ids"), column("docs"), column("raw_ids")
    pack_mode, ref_split, seed = references.pack_mode, references.split, references.seed
    start = time.time()
    judge, featurizer = _load(judge, featurizer)
    if not texts:
        raise EvalError("no samples to evaluate")
    tok, tok_name = _tokenizer_for(references.tokenizer, judge)
    ids = judge_token_ids(texts, tok)
    lengths = np.array([len(x) for x in ids])
    ref_length = references.length
    if not ref_length:  # the samples' rows; else the median non-empty sample, robust to a few odd lengths
        ref_length = len(raw_ids[0]) if raw_ids else 2 + (int(np.median(lengths[lengths > 0])) if (lengths > 0).any() else 1)
    length = int(ref_length)
    corpus = held_out_corpus(references.corpus)
    pool = reference_pieces(corpus, length, tok, split=ref_split, pack_mode=pack_mode)  # bad names fail fast

    row = dict(gen_ppl(docs if docs is not None else texts, judge, batch_size, env=env, progress=progress), n_samples=len(texts),
               dataset=corpus.name, judge=judge.name, featurizer=featurizer.name, metrics_version=METRICS_VERSION,
               length_tokens=tok_name, sample_len_tokens=float(lengths.mean()), ref_length=length,
               ref_pack_mode=pack_mode)
    content, content_name = (token_ids, "token_ids") if token_ids is not None else (ids, tok_name)
    row.update(entropy_content=unigram_entropy(content),
               entropy=unigram_entropy(raw_ids) if raw_ids else unigram_entropy(content),
               entropy_tokens="raw_ids" if raw_ids else content_name,
               rep_4=rep_n(content, 4), distinct_4=distinct_n(content, 4))
    if token_ids is not None:
        row.update(sample_len_token_ids=float(np.mean([len(x) for x in token_ids])))

    rng = np.random.default_rng(seed)
    refs = _pick(pool, len(texts), rng)
    keep = np.sort(rng.permutation(len(texts))[: len(refs)])  # all samples unless refs run short
    features = lambda items: np.stack(map_sharded(lambda part: list(_features(featurizer, part, progress and env.is_main)),
                                                  items, env))
    ref_texts = [join_docs(d) for d in _decode(tok, refs)]
    # all-empty samples have no distribution to compare: MAUVE is undefined (NaN), not a number of the clustering
    mauve = (float("nan") if count_empty(texts) == len(texts)
             else mauve_score(features([texts[i] for i in keep]), features(ref_texts)))
    row.update(mauve=mauve,
               mauve_n=len(refs), mauve_num_buckets=mauve_buckets(len(refs)), mauve_seed=25, ref_seed=seed,
               ref_split=ref_split, ref_len_tokens=float(np.mean([len(r) for r in _content(refs)])),
               seconds=round(time.time() - start, 2))
    return row


def reference_ceiling(references: References, n: int, judge=DEFAULT_JUDGE, featurizer=DEFAULT_FEATURIZER, *,
                      batch_size: int = 16, progress: bool = False) -> dict:
    """The metrics of real held-out text: what a model that samples the held-out data would score.

    2n disjoint held-out rows of `references.length` tokens (`reference_pieces`, packed with
    `references.pack_mode`, picked by `references.seed`; its `split` is not read: the ceiling takes both):
    the first n play the samples (Gen PPL on their documents, entropy on their packed ids as a sample's
    raw_ids, entropy_content and repetition on their documents' ids), MAUVE compares them with the
    other n (held-out vs held-out). `mauve_train` compares n training-split rows with the same n
    held-out references: the score of a model that samples the training distribution perfectly (lower
    when the held-out split is small or topically narrow)."""
    length, pack_mode, seed = references.length, references.pack_mode, references.seed
    if not length:
        raise EvalError(f"references.length={length!r}: the ceiling needs the rows' length in tokens (the model's seq_len)")
    start = time.time()
    judge, featurizer = _load(judge, featurizer)
    tok, tok_name = _tokenizer_for(references.tokenizer, judge)
    corpus = held_out_corpus(references.corpus)
    pool = reference_pieces(corpus, length, tok, pack_mode=pack_mode)
    if len(pool) < 2 * n:
        raise EvalError(f"dataset {corpus.name!r} has {len(pool)} held-out rows of {length} tokens; "
                        f"the ceiling needs 2n, so use n <= {len(pool) // 2}")
    rng = np.random.default_rng(seed)
    both = _pick(pool, 2 * n, rng)
    a, b = both[:n], both[n:]
    train = _pick(reference_pieces(corpus, length, tok, split="train", pack_mode=pack_mode), n, rng)
    docs_a = _decode(tok, a)
    texts_a = [join_docs(d) for d in docs_a]
    feats_b = _features(featurizer, [join_docs(d) for d in _decode(tok, b)], progress)
    train_texts = [join_docs(d) for d in _decode(tok, train)]
    return dict(
        gen_ppl(docs_a, judge, batch_size, progress=progress), entropy=unigram_entropy([p.raw for p in a]),
        entropy_tokens="raw_ids", entropy_content=unigram_entropy(_content(a)),
        rep_4=rep_n(_content(a), 4), distinct_4=distinct_n(_content(a), 4),
        mauve=mauve_score(_features(featurizer, texts_a, progress), feats_b),
        mauve_train=mauve_score(_features(featurizer, train_texts, progress), feats_b) if len(train) == n else float("nan"),
        mauve_n=n, mauve_num_buckets=mauve_buckets(n), mauve_seed=25, ref_seed=seed,
        reference=True, dataset=corpus.name, n_samples=n, ref_length=length, ref_pack_mode=pack_mode,
        length_tokens=tok_name, sample_len_tokens=float(np.mean([len(x) for x in _content(a)])),
        held_out_pieces=len(pool), judge=judge.name, featurizer=featurizer.name, metrics_version=METRICS_VERSION,
        seconds=round(time.time() - start, 2),
    )
