"""The one interface every model kind (LDLM, MDLM, the GPT) offers the rest of the kit.

`train`, `sample`, `bench`, `pipeline` and `gpu_check` call these methods and never ask which kind
they hold (k-diffusion's `Denoiser.loss()` is the example: the training loop has no model branches).
The protocol is what training and sampling run; what the rest of the kit says about a kind (its label,
colour, sampling knob, FLOP count) is its record in `ldlm.kinds.registry.KINDS`, and a run's result
columns come from its summary (`ldlm.evaluation.columns`).

    loss(h, tokens, lengths, noise, step) -> LossOutput     training loss of a micro-batch
    observe(t, losses)                                      per-sample losses of the global batch (adaptive t)
    held_out_sums(h, tokens, lengths, noise) -> sums        summable held-out statistics of a chunk ...
    held_out_metrics(sums) -> metrics                       ... and the metrics they give
    generate(n, steps, generator, sampler, top_p, temperature, callback) -> ids   tokenizer ids [n, seq_len] (-1 = "other")
    sampling_record(steps, sampler, top_p, temperature) -> dict   what a sample row records of that setting
    nfe(steps) -> int                                       network calls of one sampling run
    compile_targets() -> [(module, method)]                 what `compile=on` compiles (compile_hot_paths)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import TEMPERATURE_RULE, is_temperature
from ..runtime.distributed import DistEnv, all_reduce_sum

EVAL_STREAM = 2**40  # the "step" of the noise used by held-out losses: never a training step


def check_temperature(temperature) -> None:
    """A ValueError naming `temperature` unless it is None (the kind's default) or a temperature."""
    if temperature is not None and not is_temperature(temperature):
        raise ValueError(f"temperature={temperature!r}: {TEMPERATURE_RULE}")


@dataclass
class LossOutput:
    loss: torch.Tensor
    parts: dict                           # floats for the log
    t: torch.Tensor | None = None         # diffusion times [B] the adaptive sampler learns from
    per_sample: torch.Tensor | None = None  # detached diffusion loss per sample [B], with t


class VocabMap(nn.Module):
    """The token classes a model predicts: `head_ids` [V'] lists the tokenizer ids of the head (with
    corpus_vocab, the ids seen in training, most frequent first); `to_head` maps tokenizer ids to
    classes, and an id outside them to an extra "other" class V' that never matches a real token."""

    def __init__(self, vocab_size: int, head_vocab: int | None = None):
        super().__init__()
        self.register_buffer("head_ids", torch.arange(head_vocab or vocab_size))
        self.register_buffer("to_head", torch.arange(vocab_size))

    def set_vocab(self, head_ids: torch.Tensor) -> None:
        """Restrict the head to `head_ids`; other tokenizer ids map to the "other" class."""
        assert len(head_ids) == len(self.head_ids), "head size is fixed at construction"
        self.head_ids.copy_(head_ids)
        self.to_head.fill_(len(head_ids))
        self.to_head[head_ids] = torch.arange(len(head_ids), device=head_ids.device)

    def head_to_tokens(self, idx: torch.Tensor) -> torch.Tensor:
        """Head class indices -> tokenizer ids ("other" -> -1)."""
        return torch.cat([self.head_ids, self.head_ids.new_full((1,), -1)])[idx]


class TextModel(VocabMap):
    """Base of the model kinds: built from (config, tokenizer vocabulary, head size, frozen-LM width)."""

    uses_frozen_lm = False  # does training read the frozen LM's hidden states?
    has_latents = False     # encode/decode/latents_to_tokens and a per-step callback of generate (LDLM)

    def __init__(self, cfg, vocab_size: int, head_vocab: int | None = None, lm_width: int | None = None):
        super().__init__(vocab_size, head_vocab)
        self.cfg = cfg

    # -- training --------------------------------------------------------------------------------
    def prepare(self, data, device) -> None:
        """Set what the model takes from the training split before step 0 (state statistics, BOS)."""

    def loss(self, h, tokens: torch.Tensor, lengths: torch.Tensor, noise, step: int) -> LossOutput:
        raise NotImplementedError

    def observe(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Learn from the global batch's per-sample losses (LossOutput.t, .per_sample); default: nothing."""

    def training_state(self) -> dict:
        """Training state outside the weights that a checkpoint keeps (the adaptive sampler's)."""
        return {}

    def load_training_state(self, state: dict) -> None:
        pass

    def log_stats(self) -> dict:
        """Extra columns of each metrics-log line."""
        return {}

    def compile_targets(self) -> list[tuple[nn.Module, str]]:
        """(module, method name) pairs that carry the training compute, each a method the loss calls."""
        raise NotImplementedError

    def compile_hot_paths(self, backend: str | object = "inductor") -> None:
        """torch.compile every compile target in place: the compiled method shadows the class's on the
        instance, so weights and state_dict keys stay as they are. (`nn.Module.compile` would compile
        `forward` only, which the baselines' losses never call.)"""
        for module, method in self.compile_targets():
            setattr(module, method, torch.compile(getattr(module, method), backend=backend))

    # -- evaluation ------------------------------------------------------------------------------
    held_out_keys: tuple[str, ...] = ()  # the names of held_out_sums, in the order they are reduced

    def held_out_sums(self, h, tokens: torch.Tensor, lengths: torch.Tensor, noise) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    @staticmethod
    def held_out_metrics(sums: dict[str, float]) -> dict:
        raise NotImplementedError

    # -- sampling ----------------------------------------------------------------------------------
    # The temperature a kind samples at unless told: the one that gives its samples of before the knob
    # existed (LDLM: 0, the token decoder's argmax; the baselines: 1, their model's own distribution).
    default_temperature = 1.0

    def temperature(self, temperature: float | None) -> float:
        """`temperature`, or the kind's default when None; a ValueError naming it when it is negative,
        infinite or NaN (0 = argmax decoding, the most likely class at every draw)."""
        check_temperature(temperature)
        return self.default_temperature if temperature is None else float(temperature)

    def generate(self, n: int, steps: int, generator: torch.Generator, sampler: str | None = None,
                 top_p: float = 1.0, temperature: float | None = None, callback=None) -> torch.Tensor:
        """`temperature`: None = the kind's default (`default_temperature`). `callback(step, z_t, x0_hat)`
        at every reverse step: kinds with `has_latents` only."""
        raise NotImplementedError

    def sampling_record(self, steps: int, sampler: str | None, top_p: float, temperature: float | None = None) -> dict:
        """steps, top_p, temperature, sampler and draw_dtype as a setting runs (None: the kind's default)."""
        raise NotImplementedError

    def nfe(self, steps: int) -> int:
        raise NotImplementedError


@torch.no_grad()
def held_out_metrics(model: TextModel, data, cfg, device, chunks, env: DistEnv = DistEnv()) -> dict:
    """The model's held-out metrics over this rank's row `chunks` (batches.held_out_chunks): its
    `held_out_sums` added over chunks in float64 and over ranks, so any sharding gives the same numbers."""
    from ..nets.noise import SampleNoise
    from ..runtime.precision import autocast

    model.eval()
    totals = torch.zeros(len(model.held_out_keys), dtype=torch.float64, device=device)
    for idx in chunks:
        h, tokens, lengths = data.batch("valid", idx, device)
        with autocast(cfg, device):
            sums = model.held_out_sums(h, tokens, lengths, SampleNoise(cfg.seed, EVAL_STREAM, idx, device))
        totals += torch.stack([sums[k].double() for k in model.held_out_keys])
    return model.held_out_metrics(dict(zip(model.held_out_keys, all_reduce_sum(totals, env).tolist())))
