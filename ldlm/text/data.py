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

Text is extracted at run time from the installed packages (no corpus text is committed). Hub
datasets stay `datasets.Dataset`s (memory-mapped Arrow) all the way; the local corpora are wrapped in
one, so both take the same path: tokenized by `Dataset.map` in `workers` processes, then packed
chunk by chunk into `.npy` arrays that are opened memory-mapped (`python -m ldlm.tools.prepare` builds them
ahead of training). OpenWebText's ~9B GPT-2 tokens are 18 GB as uint16 and are never read into RAM.

Cache entry: a folder `cache_dir()/tokens/<dataset>-<digest>/` (digest of everything that determines
the arrays) with `train.npy`, `valid.npy` [N, seq_len] (uint16 when the vocabulary fits, else int32),
`train_len.npy`, `valid_len.npy` [N] (int32) and `meta.json` (pad_id, mode, stats). It is built in
a temporary sibling folder and renamed into place, so a killed build is never mistaken for a cache.
meta.json records each array's checksum (ldlm.checksum), verified whenever the entry is read: a
changed array is one line naming it (delete the entry to rebuild it), never a silent rebuild.

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
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from .. import checksum
from ..io import atomic_dir, cache_dir, new_memmap, read_utf8, write_json, writing

DATA_VERSION = 3  # bump when extraction or packing changes, so caches are rebuilt (3: .npy folders, uint16)

# Hub copies stored as parquet (datasets >= 4 dropped loading scripts). `revision` pins the dataset
# repo's commit: fill in the sha on a machine with hub access (huggingface_hub.HfApi().dataset_info(
# path).sha) and check that no loading script is left at it. None = "main", i.e. whatever the hub
# serves today. A `dataset_revision` other than "main" in the config overrides the pin.
HUB_DATASETS = {
    "openwebtext": dict(path="Skylion007/openwebtext", split="train", revision=None),
    "lm1b": dict(path="dvruette/lm1b", split="train", valid_split="test", revision=None),
}
SPLIT_FILES = ("train", "valid", "train_len", "valid_len")
CHUNK_DOCS = 10_000  # documents per packing chunk: ~10M OpenWebText tokens in memory at a time


class DataError(RuntimeError):
    """A dataset that cannot be loaded; the message says what to do instead."""


@dataclass
class Corpus:
    """Raw documents; lists for the local corpora, lazy `datasets` columns for the hub ones."""
    name: str
    train: Sequence[str]
    valid: Sequence[str]


@dataclass
class TokenData:
    """Token blocks [N, seq_len] (uint16 or int32, memory-mapped read-only from the cache), their
    lengths without padding (int32), and what made them."""
    train: np.ndarray
    valid: np.ndarray
    train_len: np.ndarray
    valid_len: np.ndarray
    pad_id: int
    mode: str
    stats: dict
    folder: Path | None = None  # the cache entry they are read from

    def train_targets(self, max_tokens: int | None = None) -> np.ndarray:
        """The training split's tokens without padding, flat: what a token head learns to predict. With
        `max_tokens`, those of evenly spaced rows holding at most that many positions; only those rows
        are read from the memory-mapped cache."""
        blocks, lengths = self.train, self.train_len
        if max_tokens is not None and blocks.size > max_tokens:
            rows = np.linspace(0, len(blocks) - 1, max(1, max_tokens // blocks.shape[1])).astype(np.int64)
            blocks, lengths = blocks[rows], lengths[rows]
        return np.asarray(blocks)[np.arange(blocks.shape[1]) < lengths[:, None]]


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
    if file.is_dir():
        raise DataError(f"corpus {kind}:{file} is a folder; give one file as {kind}:PATH")
    if not file.is_file():
        raise DataError(f"corpus file {str(file)!r} does not exist; give an existing path as {kind}:PATH")
    text = read_utf8(file, "corpus file")
    if kind == "text":
        docs = [d.strip() for d in re.split(r"\n\s*\n", text)]
    else:
        docs = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                docs.append(str(json.loads(line)["text"]).strip())
            except (json.JSONDecodeError, KeyError, TypeError):
                raise DataError(f"{file}:{n}: expected a JSON object with a 'text' field") from None
    docs = [d for d in docs if d]
    if len(docs) < 2:
        raise DataError(f"corpus file {str(file)!r} holds {'one document' if docs else 'no text'}; it needs at least two "
                        f"(separated by blank lines in text:, one per line in jsonl:)")
    return docs


DATASET_DEFAULT_VALID = {"wiki": 6, "openwebtext": 100_000}


def held_out_count(name: str, n_docs: int, valid_docs: int) -> int:
    """How many of the last documents are held out: `valid_docs`, else the dataset's convention."""
    n_valid = valid_docs if valid_docs >= 0 else DATASET_DEFAULT_VALID.get(name, max(1, n_docs // 20))
    if n_docs < 2:  # no valid_docs works: one document is held out or trained on, not both
        raise DataError(f"dataset {name!r} has {n_docs} document{'' if n_docs == 1 else 's'}: it needs at least two, "
                        f"one to train on and one to hold out; use a larger corpus")
    if not 0 < n_valid < n_docs:
        asked = f"valid_docs={valid_docs}" if valid_docs >= 0 else f"valid_docs=-1 (the dataset's {n_valid})"
        raise DataError(f"{asked} holds out {'too many' if n_valid > 0 else 'nothing'}: dataset {name!r} has "
                        f"{n_docs} documents; set valid_docs between 1 and {n_docs - 1}")
    return n_valid


def hub_revision(name: str, requested: str = "main") -> str:
    """The revision to load: the config's if it names one, else the pinned one, else "main"."""
    return requested if requested != "main" else HUB_DATASETS[name]["revision"] or "main"


def hub_splits(name: str, valid_docs: int = -1, revision: str = "main"):
    """(train, valid) `datasets.Dataset`s with a "text" column; never turned into Python lists.

    OpenWebText has one split: its last `valid_docs` (100k) documents are held out with `.select`,
    which for a contiguous range is a zero-copy view of the memory-mapped Arrow table."""
    spec = HUB_DATASETS[name]
    revision = hub_revision(name, revision)
    try:
        import datasets

        train = datasets.load_dataset(spec["path"], split=spec["split"], revision=revision)
        valid = None
        if "valid_split" in spec:
            valid = datasets.load_dataset(spec["path"], split=spec["valid_split"], revision=revision)
    except Exception as err:  # offline, missing revision, renamed repo: all end the same way
        raise DataError(
            f"dataset {name!r} needs the Hugging Face hub ({spec['path']}@{revision}) and could not be "
            f"loaded ({type(err).__name__}: {str(err)[:200]}). Offline, use the embedded stand-ins: "
            f"--preset tiny with dataset=wiki (for {name!r}-style long documents) or dataset=news "
            f"(short sentences), or your own dataset=text:PATH."
        ) from err
    if valid is None:
        n = len(train)
        n_valid = held_out_count(name, n, valid_docs)
        train, valid = train.select(range(n - n_valid)), train.select(range(n - n_valid, n))
    return train.select_columns(["text"]), valid.select_columns(["text"])


def corpus_file(name: str) -> Path | None:
    """The file of a text:PATH or jsonl:PATH dataset, else None."""
    kind, _, path = name.partition(":")
    return Path(path).expanduser() if kind in ("text", "jsonl") and path else None


def load_corpus(name: str, valid_docs: int = -1, revision: str = "main") -> Corpus:
    """Raw documents of dataset `name`, split deterministically into train / valid."""
    if name == "news":
        train, valid = news_documents()
        return Corpus(name, train, valid)
    if name in HUB_DATASETS:
        train, valid = hub_splits(name, valid_docs, revision)
        return Corpus(name, train["text"], valid["text"])
    if name == "wiki":
        docs = wiki_documents()
    elif ":" in name and name.split(":", 1)[0] in ("text", "jsonl"):
        kind, path = name.split(":", 1)
        docs = read_user_corpus(kind, path)
    else:
        raise DataError(
            f"unknown dataset {name!r}; choose wiki, news, openwebtext, lm1b, text:PATH or jsonl:PATH"
        )
    n_valid = held_out_count(name, len(docs), valid_docs)
    return Corpus(name, docs[:-n_valid], docs[-n_valid:])


def document_splits(name: str, valid_docs: int = -1, revision: str = "main"):
    """(train, valid) as `datasets.Dataset`s with a "text" column: the hub datasets as loaded, the
    local corpora wrapped with `Dataset.from_dict`, so that both are tokenized by the same code."""
    import datasets

    if name in HUB_DATASETS:
        return hub_splits(name, valid_docs, revision)
    corpus = load_corpus(name, valid_docs, revision)
    features = datasets.Features({"text": datasets.Value("string")})
    wrap = lambda docs: datasets.Dataset.from_dict({"text": list(docs)}, features=features)
    return wrap(corpus.train), wrap(corpus.valid)


# ----------------------------------------------------------------------------------------------
# packing: pure reference functions, and the streaming versions that write into preallocated arrays


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


def wrap_rows(n_tokens: int, n_docs: int, seq_len: int) -> int:
    """Number of blocks `pack_wrap` makes from n_docs documents of n_tokens tokens in all."""
    return (n_tokens + n_docs) // (seq_len - 2)


def fill_wrap(chunks: Iterable[tuple[np.ndarray, np.ndarray]], out: np.ndarray, bos: int, eos: int) -> int:
    """`pack_wrap` streamed: documents arrive in chunks of (all their ids, one after another; their
    lengths) and fill `out` [N, seq_len] row by row until it is full. Returns the rows written."""
    n_rows, seq_len = out.shape
    body = seq_len - 2
    row, carry = 0, np.empty(0, dtype=out.dtype)
    for ids, lengths in chunks:
        if row == n_rows:
            break
        stream = np.empty(len(ids) + len(lengths), dtype=out.dtype)
        is_eos = np.zeros(len(stream), dtype=bool)
        is_eos[np.cumsum(lengths + 1) - 1] = True  # EOS after each document
        stream[is_eos], stream[~is_eos] = eos, ids
        stream = np.concatenate([carry, stream])
        k = min(len(stream) // body, n_rows - row)
        out[row:row + k, 0], out[row:row + k, -1] = bos, eos
        out[row:row + k, 1:-1] = stream[: k * body].reshape(k, body)
        row, carry = row + k, stream[k * body:]
    return row


def fill_pad(chunks: Iterable[tuple[np.ndarray, np.ndarray]], out: np.ndarray, out_len: np.ndarray,
             bos: int, eos: int, pad: int) -> int:
    """`pack_pad` streamed: one document per row of `out` [N, seq_len] (lengths into `out_len`) until
    it is full. Returns the rows written."""
    n_rows, seq_len = out.shape
    row = 0
    for ids, lengths in chunks:
        if row == n_rows:
            break
        k = min(len(lengths), n_rows - row)
        lengths, ids = lengths[:k], ids[: int(lengths[:k].sum())]
        block = np.full((k, seq_len), pad, dtype=out.dtype)
        block[:, 0] = bos
        doc = np.repeat(np.arange(k), lengths)
        pos = np.arange(len(ids)) - np.repeat(np.cumsum(lengths) - lengths, lengths)  # position in its document
        kept = pos < seq_len - 1  # BOS + seq_len - 1 tokens when truncated (no EOS then)
        block[doc[kept], 1 + pos[kept]] = ids[kept]
        fits = lengths + 2 <= seq_len
        block[np.flatnonzero(fits), lengths[fits] + 1] = eos
        out[row:row + k], out_len[row:row + k] = block, np.minimum(lengths + 2, seq_len)
        row += k
    return row


DOC_SEP = "\n\n"  # between the documents of a sample in its `text` (for people and the featurizer)


def join_docs(docs: Sequence[str]) -> str:
    """A sample's documents (decoded from `unpack_docs`) as one text, separated by a blank line."""
    return DOC_SEP.join(docs)


def unpack_docs(tokenizer, ids: list[int], pack_mode: str) -> list[list[int]]:
    """The documents of one packed row (the inverse of `pack_wrap` / `pack_pad`), as token ids: no BOS,
    no special tokens, no "other" (-1); wrap: split at each EOS (document boundary), pad: up to the
    first EOS. Empty documents are left out."""
    bos, eos, _ = special_ids(tokenizer)
    ids = ids[1:] if ids and ids[0] == bos else ids
    if pack_mode == "pad" and eos in ids:
        ids = ids[: ids.index(eos)]
    special = set(tokenizer.all_special_ids)
    docs = [[]]
    for i in ids:
        if i == eos:
            docs.append([])
        elif i >= 0 and i not in special:
            docs[-1].append(i)
    return [d for d in docs if d]


def special_ids(tokenizer) -> tuple[int, int, int]:
    """(bos, eos, pad) for BERT-style ([CLS]/[SEP]/[PAD]) and GPT-style (<|endoftext|>) tokenizers."""
    bos = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    eos = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    if bos is None or eos is None:
        raise DataError(f"tokenizer {tokenizer.name_or_path!r} has neither CLS/SEP nor BOS/EOS tokens")
    return bos, eos, pad


def check_token_ids(ids, vocab: int, source: str) -> None:
    """Every id of `ids` (a numpy array or CPU tensor) is in [0, vocab), else one DataError naming the
    first bad one and `source`: an embedding would fail on it with an IndexError deep inside torch."""
    if len(ids) and (int(ids.max()) >= vocab or int(ids.min()) < 0):
        bad = int(ids.max()) if int(ids.max()) >= vocab else int(ids.min())
        raise DataError(f"token id {bad} in {source} is out of range for a vocabulary of {vocab} ids: the cache is "
                        f"damaged or from another tokenizer; delete it and run again, which rebuilds it")


def token_dtype(tokenizer) -> np.dtype:
    """uint16 when every id fits (GPT-2: 50257, MiniLM/BERT: 30522), else int32."""
    return np.dtype(np.uint16 if len(tokenizer) <= 1 << 16 else np.int32)


# ----------------------------------------------------------------------------------------------
# tokenizing in parallel


def tokenize(docs, tokenizer, dtype: np.dtype, workers: int, arrow_file: Path, fingerprint: str):
    """`datasets.Dataset` of "ids" (no special tokens) and "n" (their count) per document, in order.

    `workers` processes each take a contiguous shard (`Dataset.map(num_proc=...)`) and the shards are
    read back in order, so the result does not depend on `workers`. Written as Arrow to `arrow_file`
    (the build folder), never to the shared Hugging Face cache."""
    import datasets

    def encode(batch):
        ids = tokenizer(batch["text"], add_special_tokens=False, verbose=False)["input_ids"]
        return {"ids": ids, "n": [len(x) for x in ids]}

    features = datasets.Features({"ids": datasets.List(datasets.Value(dtype.name)), "n": datasets.Value("int64")})
    num_proc = min(workers, len(docs))
    return docs.map(encode, batched=True, num_proc=num_proc if num_proc > 1 else None,
                    remove_columns=docs.column_names, features=features, cache_file_name=str(arrow_file),
                    load_from_cache_file=False, new_fingerprint=fingerprint, desc=f"tokenizing {arrow_file.stem}")


def token_chunks(tokenized, batch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids of `batch` documents, one after another; their lengths), straight from the Arrow table."""
    for table in tokenized.with_format("arrow").iter(batch_size=batch):
        yield table.column("ids").combine_chunks().flatten().to_numpy(), table.column("n").to_numpy()


def pack_split(tokenized, folder: Path, split: str, cfg, ids: tuple[int, int, int], dtype: np.dtype) -> dict:
    """Pack one tokenized split into folder/{split}.npy and {split}_len.npy; returns its stats."""
    bos, eos, pad = ids
    n = tokenized.with_format("numpy")["n"][:]
    stats = {f"{split}_tokens": int(n.sum())}
    rows = wrap_rows(int(n.sum()), len(n), cfg.seq_len) if cfg.pack_mode == "wrap" else len(n)
    if split == "train" and cfg.max_train_tokens > 0:
        rows = min(rows, max(1, cfg.max_train_tokens // cfg.seq_len))
    if cfg.pack_mode == "pad":
        stats[f"{split}_truncated_docs"] = int((n + 2 > cfg.seq_len).sum())
    if rows == 0:
        raise DataError(
            f"dataset {cfg.dataset!r} gives no {split} block of seq_len={cfg.seq_len} tokens "
            f"({stats[f'{split}_tokens']} tokens); use a larger corpus or a smaller seq_len"
        )
    out = new_memmap(folder / f"{split}.npy", dtype, (rows, cfg.seq_len))
    out_len = new_memmap(folder / f"{split}_len.npy", np.int32, (rows,))
    if cfg.pack_mode == "wrap":
        written = fill_wrap(token_chunks(tokenized, CHUNK_DOCS), out, bos, eos)
        out_len[:] = cfg.seq_len
    else:
        written = fill_pad(token_chunks(tokenized, CHUNK_DOCS), out, out_len, bos, eos, pad)
    assert written == rows, f"packed {written} of {rows} {split} rows"
    out.flush(), out_len.flush()
    stats[f"{split}_blocks"] = rows
    return stats


# ----------------------------------------------------------------------------------------------
# the cache: one folder of .npy files per key, renamed into place when complete


def token_key(cfg, tokenizer, tokenizer_name: str) -> dict:
    """Everything that determines the token arrays (not `workers`: the arrays do not depend on it)."""
    revision = hub_revision(cfg.dataset, cfg.dataset_revision) if cfg.dataset in HUB_DATASETS else cfg.dataset_revision
    key = dict(
        v=DATA_VERSION, dataset=cfg.dataset, revision=revision, valid_docs=cfg.valid_docs,
        tokenizer=tokenizer_name, vocab=len(tokenizer), seq_len=cfg.seq_len, mode=cfg.pack_mode,
        max_train_tokens=cfg.max_train_tokens,
    )
    if ":" in cfg.dataset:  # user corpora: the file's size and mtime are part of the key
        source = Path(cfg.dataset.split(":", 1)[1]).expanduser()
        key["source"] = [source.stat().st_size, source.stat().st_mtime_ns] if source.is_file() else None
    return key


def token_cache_path(cfg, tokenizer, tokenizer_name: str) -> Path:
    """The cache folder of cfg's token arrays (it may not exist yet)."""
    digest = hashlib.sha1(json.dumps(token_key(cfg, tokenizer, tokenizer_name), sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / "tokens" / f"{cfg.dataset.replace('/', '_').replace(':', '_')[-40:]}-{digest}"


def rebuild_hint(folder: Path, preset: str) -> str:
    """How to rebuild the token cache entry `folder` (its meta.json names the dataset)."""
    try:
        dataset = json.loads((folder / "meta.json").read_text())["stats"]["dataset"]
    except (OSError, ValueError, KeyError, TypeError):
        dataset = "..."
    return (f"delete the entry (rm -r {folder}) and run again, or rebuild it ahead with "
            f"python -m ldlm.tools.prepare --preset {preset} --dataset {dataset}")


def read_token_cache(folder: Path, preset: str = "PRESET") -> TokenData | None:
    """The cached arrays, memory-mapped read-only; None if the folder is missing, incomplete or does
    not match its meta.json's shapes (then it is rebuilt, never trusted). An array that does not match
    the checksum meta.json recorded is CacheCorrupt (one line: which file, how to rebuild); an entry
    written before checksums were kept has them recorded now (ldlm.checksum.adopt)."""
    files = [f"{name}.npy" for name in SPLIT_FILES]
    try:
        meta = json.loads((folder / "meta.json").read_text())
        recorded = meta.get("checksums")
        if recorded is not None:  # before np.load: a truncated array is a damaged entry, not a missing one
            checksum.verify(recorded, folder, rebuild_hint(folder, preset))
        arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in SPLIT_FILES}
        if any(list(arrays[name].shape) != meta["shapes"][name] for name in SPLIT_FILES):
            return None
        data = TokenData(**arrays, pad_id=int(meta["pad_id"]), mode=meta["mode"], stats=meta["stats"], folder=folder)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if recorded is None:
        write_json(folder / "meta.json", dict(meta, checksums={f: checksum.of_file(folder / f) for f in files}))
        checksum.adopt("token cache", folder)
    return data


def build_token_data(cfg, tokenizer, tokenizer_name: str, workers: int = 1) -> TokenData:
    """Token blocks for cfg.dataset, memory-mapped from the cache; built there first if missing.

    `workers` tokenizer processes; the arrays are byte-identical for any number of them."""
    final = token_cache_path(cfg, tokenizer, tokenizer_name)
    cached = read_token_cache(final, cfg.preset)
    if cached is not None:
        return cached
    if workers < 1:
        raise DataError(f"workers={workers}: need at least one tokenizer process")
    with writing(final):  # a full disk names the cache entry; the build folder goes with it
        _build(cfg, tokenizer, tokenizer_name, workers, final)
    data = read_token_cache(final)
    if data is None:
        raise DataError(f"token cache {final} could not be written or read back; check the disk (df -h {final.parent})")
    return data


def _build(cfg, tokenizer, tokenizer_name: str, workers: int, final: Path) -> None:
    """Build cfg's token arrays in a temporary sibling of `final` and rename it into place (io.atomic_dir)."""
    key = token_key(cfg, tokenizer, tokenizer_name)
    with atomic_dir(final, complete=lambda folder: read_token_cache(folder) is not None) as tmp:
        train_docs, valid_docs = document_splits(cfg.dataset, cfg.valid_docs, cfg.dataset_revision)
        ids, dtype = special_ids(tokenizer), token_dtype(tokenizer)
        stats = dict(key, train_docs=len(train_docs), valid_docs_held_out=len(valid_docs), token_dtype=dtype.name)
        for split, docs in (("train", train_docs), ("valid", valid_docs)):
            tokenized = tokenize(docs, tokenizer, dtype, workers, tmp / "arrow" / f"{split}.arrow",
                                 fingerprint=f"{final.name}-{split}")
            stats.update(pack_split(tokenized, tmp, split, cfg, ids, dtype))
            del tokenized
        shutil.rmtree(tmp / "arrow")
        shapes = {name: list(np.load(tmp / f"{name}.npy", mmap_mode="r").shape) for name in SPLIT_FILES}
        sums = {f"{name}.npy": checksum.of_file(tmp / f"{name}.npy") for name in SPLIT_FILES}
        write_json(tmp / "meta.json", dict(pad_id=ids[2], mode=cfg.pack_mode, shapes=shapes, stats=stats, checksums=sums))
