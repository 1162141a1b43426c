"""Sample-quality metrics with their conventions in their names: Gen PPL, entropy, MAUVE, accuracy.

Every result row carries METRICS_VERSION; bump it whenever a number computed here would change
(evaluation code drift silently changing metrics is a known problem in the field: flm #6).

Conventions, in one place:
- Gen PPL: texts are re-tokenized with the judge's tokenizer (no special tokens), the judge's
  document-start token (`Judge.bos_id`) is prepended so that the first token is scored too, no EOS is appended (samples are usually cut
  mid-text), tokens beyond the judge's context are cut and counted (`n_truncated`). The judge runs in
  fp32 outside autocast; NLL sums are float64; padding is masked out. Both aggregations are reported:
  `gen_ppl_tok` = exp(sum NLL / sum tokens) over all samples (token-weighted, MDLM/Duo, who however
  prepend no BOS) and `gen_ppl_seq` = mean over samples of exp(mean NLL of the sample) (LD4LG /
  SEDD, no trimming). Empty samples (whitespace only) have no tokens: they are counted in `n_empty`
  and left out of both PPLs, never silently.
- Entropy: Duo's definition, the unigram entropy (natural log) of each sample's token ids, averaged
  over samples; the row says which tokenizer the ids come from. Empty samples are left out.
- MAUVE: `mauve-text` on features only (it would otherwise download GPT-2 Large), equal numbers of
  samples and references, references from the dataset's held-out split cut to the samples' token
  length (SimCTG #7), fixed k-means seed, `num_buckets = mauve_buckets(n)`. With `minilm` features
  MAUVE sees content/topic, not word order (shuffling the words inside each text leaves it at ~1.0);
  `smollm2-mean` features see it (ldlm.judges), at ~4x the cost.
- Under torchrun, judge scoring and MAUVE featurization are sharded over the ranks (contiguous
  parts, gathered in order), so every rank computes the same row.
"""
from __future__ import annotations

import math
import time
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .distributed import DistEnv, map_sharded

METRICS_VERSION = "1"


class EvalError(ValueError):
    """Inputs that cannot be evaluated; the message says what is wrong."""


def _load(judge=None, featurizer=None):
    """Accept registry names (loaded on the GPU if there is one) or already loaded objects."""
    from .frozen_lm import default_device
    from .judges import load_featurizer, load_judge

    j = load_judge(judge, default_device()) if isinstance(judge, str) else judge
    f = load_featurizer(featurizer, default_device()) if isinstance(featurizer, str) else featurizer
    return j, f


# ----------------------------------------------------------------------------------------------
# simple counts


def count_empty(texts: Sequence[str]) -> int:
    """Number of samples that are empty or whitespace only."""
    return sum(not t.strip() for t in texts)


def token_matches(pred_ids, target_ids, mask) -> tuple[torch.Tensor, torch.Tensor]:
    """(number of positions where pred == target and mask is true, number where mask is true), as
    tensors on the inputs' device, so that shards can be summed before dividing."""
    pred, target = torch.as_tensor(pred_ids), torch.as_tensor(target_ids)
    mask = torch.as_tensor(mask, dtype=torch.bool, device=pred.device)
    return ((pred == target) & mask).sum(), mask.sum()


def token_accuracy(pred_ids, target_ids, mask) -> float:
    """Reconstruction token accuracy: mean of (pred == target) over positions where mask is true."""
    correct, n = token_matches(pred_ids, target_ids, mask)
    return float(correct) / int(n) if n else float("nan")


def unigram_entropy(token_lists: Sequence[Sequence[int]]) -> float:
    """Duo's entropy: per sample, H = -sum_v p_v ln p_v over the sample's own token frequencies;
    averaged over samples. Natural log. Empty samples are skipped (nan if all are empty)."""
    values = []
    for ids in token_lists:
        if len(ids) == 0:
            continue
        _, counts = np.unique(np.asarray(ids), return_counts=True)
        p = counts / counts.sum()
        values.append(float(-(p * np.log(p)).sum()))
    return float(np.mean(values)) if values else float("nan")


# ----------------------------------------------------------------------------------------------
# generative perplexity


def judge_token_ids(texts: Sequence[str], tokenizer) -> list[list[int]]:
    """Texts re-tokenized with `tokenizer`, no special tokens; whitespace-only texts give []."""
    ids = tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"] if len(texts) else []
    return [x if t.strip() else [] for t, x in zip(texts, ids)]


@torch.inference_mode()
def per_sample_nll(token_lists: Sequence[Sequence[int]], judge, batch_size: int = 16,
                   max_length: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """(sum of NLL per sample [float64], scored tokens per sample, number of truncated samples).

    Input per sample: BOS + its tokens (cut to max_length - 1), right-padded with judge.pad_id; each
    token is scored given BOS and the tokens before it. Samples are batched by length so that little
    padding is computed; padding never enters the sums."""
    max_length = max_length or judge.max_length
    seqs = [list(ids[: max_length - 1]) for ids in token_lists]
    truncated = sum(len(ids) > max_length - 1 for ids in token_lists)
    nll, ntok = np.zeros(len(seqs), np.float64), np.zeros(len(seqs), np.int64)
    order = sorted((i for i in range(len(seqs)) if seqs[i]), key=lambda i: -len(seqs[i]))
    device = judge.device
    for k in range(0, len(order), batch_size):
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
        mask = att[:, 1:].to(torch.float64)
        nll[idx] = (tok_nll.double() * mask).sum(1).cpu().numpy()
        ntok[idx] = mask.sum(1).long().cpu().numpy()
    return nll, ntok, truncated


def gen_ppl(texts: Sequence[str], judge, batch_size: int = 16, max_length: int | None = None,
            env: DistEnv = DistEnv()) -> dict:
    """Generative perplexity of `texts` under `judge`, both conventions (module docstring).

    gen_ppl_tok = exp(sum_i NLL_i / sum_i T_i)   (token-weighted; MDLM / Duo)
    gen_ppl_seq = mean_i exp(NLL_i / T_i)        (per-sample, then averaged; LD4LG / SEDD)
    By Jensen, gen_ppl_seq >= gen_ppl_tok when all samples have the same length."""
    judge, _ = _load(judge=judge)
    ids = judge_token_ids(texts, judge.tokenizer)

    def score(part):  # (nll, tokens, truncated) per sample; the part's truncation count rides on its first
        nll, ntok, truncated = per_sample_nll(part, judge, batch_size, max_length)
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
    return float(mauve.compute_mauve(p_features=p, q_features=q, num_buckets=buckets, seed=seed,
                                     verbose=False, **kwargs).mauve)


# ----------------------------------------------------------------------------------------------
# references: held-out text cut to the samples' length


def truncate_texts(texts: Sequence[str], length: int, tokenizer) -> list[str]:
    """Each text cut to its first `length` tokens of `tokenizer` (not words) and decoded back."""
    return [tokenizer.decode(ids[:length]) for ids in judge_token_ids(texts, tokenizer)]


def token_pieces(docs: Sequence[str], length: int, tokenizer) -> list[list[int]]:
    """Documents as pieces of at most `length` tokens: a document longer than that is cut into
    consecutive full `length`-token chunks (its shorter tail is dropped, like wrap packing); a shorter
    document (e.g. a news sentence) is kept whole, like pad packing."""
    pieces = []
    for ids in judge_token_ids(docs, tokenizer):
        if len(ids) <= length:
            pieces += [ids] if ids else []
        else:
            pieces += [ids[k:k + length] for k in range(0, len(ids) - length + 1, length)]
    return pieces


def reference_pieces(dataset: str, length: int, tokenizer, split: str = "valid") -> list[list[int]]:
    """Token pieces (`token_pieces`) of the dataset's held-out split (or its train split)."""
    from .data import load_corpus

    if split not in ("valid", "train"):
        raise EvalError(f"reference split {split!r}: choose 'valid' (held-out) or 'train'")
    corpus = load_corpus(dataset)
    return token_pieces(corpus.valid if split == "valid" else corpus.train, length, tokenizer)


def _pick(pieces: list, n: int, rng: np.random.Generator) -> list:
    return [pieces[i] for i in rng.permutation(len(pieces))[:n]]


def _tokenizer_for(text_tokenizer, judge):
    """(tokenizer that lengths are counted in, its name for the row)."""
    if text_tokenizer is None:
        return judge.tokenizer, f"judge:{judge.name}"
    if isinstance(text_tokenizer, str):
        from .frozen_lm import load_tokenizer

        return load_tokenizer(text_tokenizer), text_tokenizer
    return text_tokenizer, getattr(text_tokenizer, "name_or_path", "custom")


def _decode(tokenizer, pieces):
    """Pieces back to text, stripped like the sampler strips its decoded samples."""
    return [tokenizer.decode(p, skip_special_tokens=True).strip() for p in pieces]


# ----------------------------------------------------------------------------------------------
# one row per sample set


def evaluate_samples(texts: Sequence[str], token_ids: Sequence[Sequence[int]] | None, dataset: str,
                     judge="smollm2", featurizer="minilm", *, ref_length: int | None = None,
                     text_tokenizer=None, ref_split: str = "valid", seed: int = 0, batch_size: int = 16,
                     env: DistEnv = DistEnv()) -> dict:
    """Every metric of one sample set, as one tidy row (dict of scalars).

    Lengths are counted in `text_tokenizer`'s tokens if given (pass the model's own tokenizer, e.g.
    "minilm": the references then also go through its encode/decode and carry the same
    normalisation, such as lower-casing), else in the judge's tokens. MAUVE references: held-out
    pieces of at most `ref_length` tokens (default: the samples' median length), as many as there are
    samples (if the held-out split has fewer pieces, a seeded subset of the samples of that size is
    used; `mauve_n` says how many). `ref_split="train"` draws them from the training split instead:
    with a small or topically narrow held-out split (wiki: 6 articles) even perfect samples of the
    training distribution score low against held-out references (see reference_ceiling's
    `mauve_train`). Entropy uses `token_ids` if given, else the same tokenizer."""
    start = time.time()
    judge, featurizer = _load(judge, featurizer)
    texts = list(texts)
    if not texts:
        raise EvalError("no samples to evaluate")
    tok, tok_name = _tokenizer_for(text_tokenizer, judge)
    ids = judge_token_ids(texts, tok)
    lengths = np.array([len(x) for x in ids])
    if not ref_length:  # the median non-empty sample: robust to a few odd lengths
        ref_length = int(np.median(lengths[lengths > 0])) if (lengths > 0).any() else 1
    length = int(ref_length)
    pool = reference_pieces(dataset, length, tok, split=ref_split)  # before the slow part: bad names fail fast

    row = dict(gen_ppl(texts, judge, batch_size, env=env), n_samples=len(texts), dataset=dataset,
               judge=judge.name, featurizer=featurizer.name, metrics_version=METRICS_VERSION,
               length_tokens=tok_name, sample_len_tokens=float(lengths.mean()), ref_length=length)
    if token_ids is not None:
        row.update(entropy=unigram_entropy(token_ids), entropy_tokens="token_ids",
                   sample_len_token_ids=float(np.mean([len(x) for x in token_ids])))
    else:
        row.update(entropy=unigram_entropy(ids), entropy_tokens=tok_name)

    rng = np.random.default_rng(seed)
    refs = _pick(pool, len(texts), rng)
    keep = np.sort(rng.permutation(len(texts))[: len(refs)])  # all samples unless refs run short
    features = lambda items: np.stack(map_sharded(lambda part: list(featurizer.encode(part)), items, env))
    row.update(mauve=mauve_score(features([texts[i] for i in keep]), features(_decode(tok, refs))),
               mauve_n=len(refs), mauve_num_buckets=mauve_buckets(len(refs)), mauve_seed=25, ref_seed=seed,
               ref_split=ref_split,
               ref_len_tokens=float(np.mean([len(r) for r in refs])), seconds=round(time.time() - start, 2))
    return row


def reference_ceiling(dataset: str, n: int, length: int, judge="smollm2", featurizer="minilm",
                      seed: int = 0, *, text_tokenizer=None, batch_size: int = 16) -> dict:
    """The metrics of real held-out text: what a model that samples the held-out data would score.

    2n disjoint held-out pieces of at most `length` tokens (`token_pieces`): the first n play the
    samples (Gen PPL, entropy), MAUVE compares them with the other n (held-out vs held-out).
    `mauve_train` compares n training-split pieces with the same n held-out references: the score of
    a model that samples the training distribution perfectly (lower when the held-out split is
    small or topically narrow)."""
    start = time.time()
    judge, featurizer = _load(judge, featurizer)
    tok, tok_name = _tokenizer_for(text_tokenizer, judge)
    pool = reference_pieces(dataset, length, tok)
    if len(pool) < 2 * n:
        raise EvalError(f"dataset {dataset!r} has {len(pool)} held-out pieces of <= {length} tokens; "
                        f"the ceiling needs 2n, so use n <= {len(pool) // 2}")
    rng = np.random.default_rng(seed)
    both = _pick(pool, 2 * n, rng)
    a, b = both[:n], both[n:]
    train = _pick(reference_pieces(dataset, length, tok, split="train"), n, rng)
    texts_a = _decode(tok, a)
    feats_b = featurizer.encode(_decode(tok, b))
    return dict(
        gen_ppl(texts_a, judge, batch_size), entropy=unigram_entropy(a), entropy_tokens=tok_name,
        mauve=mauve_score(featurizer.encode(texts_a), feats_b),
        mauve_train=mauve_score(featurizer.encode(_decode(tok, train)), feats_b) if len(train) == n else float("nan"),
        mauve_n=n, mauve_num_buckets=mauve_buckets(n), mauve_seed=25, ref_seed=seed,
        reference=True, dataset=dataset, n_samples=n, ref_length=length, length_tokens=tok_name,
        sample_len_tokens=float(np.mean([len(x) for x in a])), held_out_pieces=len(pool),
        judge=judge.name, featurizer=featurizer.name, metrics_version=METRICS_VERSION,
        seconds=round(time.time() - start, 2),
    )
