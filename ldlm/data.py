"""Datasets by name: raw documents -> deterministic train/valid split -> fixed-length token blocks.

Registry (`dataset` config value):

| name          | what                                                     | split                          |
|---------------|----------------------------------------------------------|--------------------------------|
| `wiki`        | Wikipedia excerpt inside the gensim wheel (OWT stand-in) | last 6 of 106 articles held out|
| `news`        | Lee ABC news corpus in the gensim wheel, one sentence    | `lee.cor` (50 articles, not in |
|               | per document (LM1B stand-in)                             | the 300 background ones) held out |
| `openwebtext` | Hugging Face hub parquet copy                            | last 100k documents (MDLM/Duo) |
| `lm1b`        | Hugging Face hub parquet copy                            | the dataset's test split       |
| `text:PATH`   | a text file, documents separated by blank lines          | last `valid_docs` documents    |
| `jsonl:PATH`  | one JSON object per line with a "text" field             | last `valid_docs` documents    |

Text is extracted at run time from the installed packages (no corpus text is committed). Token
blocks are cached under `ldlm.io.cache_dir()` by a key of everything that determines them.

Packing (`pack_mode`):
- `wrap`: documents are concatenated with EOS after each, cut into blocks of `seq_len - 2` tokens and
  framed as BOS + block + EOS (MDLM's OWT convention); only the tail shorter than a block is dropped.
- `pad`: one document per example, BOS + tokens + EOS, truncated to `seq_len` and padded (MDLM's
  LM1B convention); the number of truncated documents is recorded.
"""
from __future__ import annotations

import bz2
import hashlib
import importlib.resources
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .io import atomic_path, cache_dir

DATA_VERSION = 2  # bump when extraction or packing changes, so caches are rebuilt

# Hub copies stored as parquet (datasets >= 4 dropped loading scripts).
HUB_DATASETS = {
    "openwebtext": dict(path="Skylion007/openwebtext", split="train", valid_docs=100_000),
    "lm1b": dict(path="dvruette/lm1b", split="train", valid_split="test"),
}


class DataError(RuntimeError):
    """A dataset that cannot be loaded; the message says what to do instead."""


@dataclass
class Corpus:
    name: str
    train: list[str]
    valid: list[str]


@dataclass
class TokenData:
    """Token blocks [N, seq_len] (int32), their lengths without padding, and what made them."""
    train: np.ndarray
    valid: np.ndarray
    train_len: np.ndarray
    valid_len: np.ndarray
    pad_id: int
    mode: str
    stats: dict


# ----------------------------------------------------------------------------------------------
# raw corpora


def _gensim_data(name: str) -> Path:
    try:
        root = importlib.resources.files("gensim") / "test" / "test_data"
    except ModuleNotFoundError:
        raise DataError("the embedded corpora come from the gensim wheel: pip install gensim==4.4.0") from None
    return Path(str(root / name))


def wiki_documents() -> list[str]:
    """The 106 real articles of gensim's Wikipedia dump excerpt, markup stripped."""
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki

    path = _gensim_data("enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
    docs = []
    with bz2.open(path) as f:
        for _title, text, _pageid in extract_pages(f):
            if text.lower().startswith("#redirect"):
                continue
            clean = re.sub(r"'{2,}", "", filter_wiki(text))  # drop ''bold''/''italic'' quote marks
            lines = [line.strip() for line in clean.splitlines() if len(line.split()) >= 5]
            if lines:
                docs.append("\n".join(lines))
    return docs


_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"']))\s+(?=[\"'A-Z0-9])")


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if len(s.split()) >= 3]


def news_documents() -> tuple[list[str], list[str]]:
    """Lee corpus sentences: (300 background articles, 50 evaluation articles)."""
    read = lambda name: _gensim_data(name).read_text(encoding="utf-8", errors="replace").splitlines()
    to_sentences = lambda articles: [s for a in articles for s in split_sentences(a)]
    return to_sentences(read("lee_background.cor")), to_sentences(read("lee.cor"))


def read_user_corpus(kind: str, path: str) -> list[str]:
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"corpus file {str(file)!r} does not exist; give an existing path as {kind}:PATH")
    if kind == "text":
        docs = [d.strip() for d in re.split(r"\n\s*\n", file.read_text(encoding="utf-8"))]
    else:
        docs = []
        for n, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                docs.append(str(json.loads(line)["text"]).strip())
            except (json.JSONDecodeError, KeyError, TypeError):
                raise DataError(f"{file}:{n}: expected a JSON object with a 'text' field") from None
    docs = [d for d in docs if d]
    if not docs:
        raise DataError(f"corpus file {str(file)!r} holds no text; it needs at least two non-empty documents")
    return docs


def hub_documents(name: str, revision: str) -> tuple[list[str], list[str] | None]:
    spec = HUB_DATASETS[name]
    try:
        import datasets

        train = datasets.load_dataset(spec["path"], split=spec["split"], revision=revision)["text"]
        valid = None
        if "valid_split" in spec:
            valid = datasets.load_dataset(spec["path"], split=spec["valid_split"], revision=revision)["text"]
    except Exception as err:  # offline, missing revision, renamed repo: all end the same way
        raise DataError(
            f"dataset {name!r} needs the Hugging Face hub ({spec['path']}@{revision}) and could not be "
            f"loaded ({type(err).__name__}: {str(err)[:200]}). Offline, use the embedded stand-ins: "
            f"--preset tiny with dataset=wiki (for {name!r}-style long documents) or dataset=news "
            f"(short sentences), or your own dataset=text:PATH."
        ) from err
    return list(train), (list(valid) if valid is not None else None)


DATASET_DEFAULT_VALID = {"wiki": 6, "openwebtext": 100_000}


def load_corpus(name: str, valid_docs: int = -1, revision: str = "main") -> Corpus:
    """Raw documents of dataset `name`, split deterministically into train / valid."""
    if name == "news":
        train, valid = news_documents()
        return Corpus(name, train, valid)
    if name == "wiki":
        docs = wiki_documents()
    elif name in HUB_DATASETS:
        docs, valid = hub_documents(name, revision)
        if valid is not None:
            return Corpus(name, docs, valid)
    elif ":" in name and name.split(":", 1)[0] in ("text", "jsonl"):
        kind, path = name.split(":", 1)
        docs = read_user_corpus(kind, path)
    else:
        raise DataError(
            f"unknown dataset {name!r}; choose wiki, news, openwebtext, lm1b, text:PATH or jsonl:PATH"
        )
    n_valid = valid_docs if valid_docs >= 0 else DATASET_DEFAULT_VALID.get(name, max(1, len(docs) // 20))
    if len(docs) < 2 or not 0 < n_valid < len(docs):
        raise DataError(
            f"dataset {name!r} has {len(docs)} documents; cannot hold out {n_valid} of them "
            f"(set valid_docs between 1 and {len(docs) - 1})"
        )
    return Corpus(name, docs[:-n_valid], docs[-n_valid:])


# ----------------------------------------------------------------------------------------------
# packing


def pack_wrap(docs_ids: list[list[int]], seq_len: int, bos: int, eos: int) -> np.ndarray:
    """Concatenate documents (EOS after each), cut into BOS + (seq_len - 2) tokens + EOS blocks."""
    body = seq_len - 2
    stream = np.fromiter((t for ids in docs_ids for t in (*ids, eos)), dtype=np.int64)
    n_blocks = len(stream) // body
    blocks = stream[: n_blocks * body].reshape(n_blocks, body)
    framed = np.empty((n_blocks, seq_len), dtype=np.int32)
    framed[:, 0], framed[:, 1:-1], framed[:, -1] = bos, blocks, eos
    return framed


def pack_pad(docs_ids: list[list[int]], seq_len: int, bos: int, eos: int, pad: int):
    """One document per row: BOS + tokens + EOS, truncated to seq_len, right-padded with `pad`.

    Returns (blocks, lengths, number of truncated documents)."""
    out = np.full((len(docs_ids), seq_len), pad, dtype=np.int32)
    lengths = np.zeros(len(docs_ids), dtype=np.int32)
    truncated = 0
    for row, ids in enumerate(docs_ids):
        seq = [bos, *ids, eos]
        truncated += len(seq) > seq_len
        seq = seq[:seq_len]
        out[row, : len(seq)] = seq
        lengths[row] = len(seq)
    return out, lengths, truncated


def special_ids(tokenizer) -> tuple[int, int, int]:
    """(bos, eos, pad) for BERT-style ([CLS]/[SEP]/[PAD]) and GPT-style (<|endoftext|>) tokenizers."""
    bos = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    eos = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    if bos is None or eos is None:
        raise DataError(f"tokenizer {tokenizer.name_or_path!r} has neither CLS/SEP nor BOS/EOS tokens")
    return bos, eos, pad


def _tokenize(tokenizer, docs: list[str]) -> list[list[int]]:
    return tokenizer(docs, add_special_tokens=False, verbose=False)["input_ids"] if docs else []


def build_token_data(cfg, tokenizer, tokenizer_name: str) -> TokenData:
    """Token blocks for cfg.dataset, cached on disk by everything that determines them."""
    key = dict(
        v=DATA_VERSION, dataset=cfg.dataset, revision=cfg.dataset_revision, valid_docs=cfg.valid_docs,
        tokenizer=tokenizer_name, vocab=len(tokenizer), seq_len=cfg.seq_len, mode=cfg.pack_mode,
        max_train_tokens=cfg.max_train_tokens,
    )
    if ":" in cfg.dataset:  # user corpora: the file's size and mtime are part of the key
        source = Path(cfg.dataset.split(":", 1)[1]).expanduser()
        key["source"] = [source.stat().st_size, source.stat().st_mtime_ns] if source.is_file() else None
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / "tokens" / f"{cfg.dataset.replace('/', '_').replace(':', '_')[-40:]}-{digest}.npz"
    if path.exists():
        with np.load(path) as z:
            stats = json.loads(str(z["stats"]))
            return TokenData(z["train"], z["valid"], z["train_len"], z["valid_len"], int(z["pad_id"]),
                             cfg.pack_mode, stats)

    corpus = load_corpus(cfg.dataset, cfg.valid_docs, cfg.dataset_revision)
    bos, eos, pad = special_ids(tokenizer)
    splits, stats = {}, dict(key, train_docs=len(corpus.train), valid_docs_held_out=len(corpus.valid))
    for split, docs in (("train", corpus.train), ("valid", corpus.valid)):
        ids = _tokenize(tokenizer, docs)
        stats[f"{split}_tokens"] = int(sum(map(len, ids)))
        if cfg.pack_mode == "wrap":
            blocks = pack_wrap(ids, cfg.seq_len, bos, eos)
            lengths = np.full(len(blocks), cfg.seq_len, dtype=np.int32)
        else:
            blocks, lengths, stats[f"{split}_truncated_docs"] = pack_pad(ids, cfg.seq_len, bos, eos, pad)
        if split == "train" and cfg.max_train_tokens > 0:
            keep = max(1, cfg.max_train_tokens // cfg.seq_len)
            blocks, lengths = blocks[:keep], lengths[:keep]
        if len(blocks) == 0:
            raise DataError(
                f"dataset {cfg.dataset!r} gives no {split} block of seq_len={cfg.seq_len} tokens "
                f"({stats[f'{split}_tokens']} tokens); use a larger corpus or a smaller seq_len"
            )
        splits[split], splits[f"{split}_len"] = blocks, lengths
        stats[f"{split}_blocks"] = len(blocks)
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **splits, pad_id=pad, stats=json.dumps(stats))
    return TokenData(splits["train"], splits["valid"], splits["train_len"], splits["valid_len"], pad,
                     cfg.pack_mode, stats)
