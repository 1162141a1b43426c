"""One flat dataclass config, named presets, typed overrides.

The dataclass defaults are the paper-scale values (paper.md; tags [S]/[R] there say how sure each
is). Presets are small dicts of overrides on top of them; every value a preset sets that the paper
does not give is marked "ours" with the reason. Overrides come as keyword arguments or `key=value`
strings from the command line / a notebook's parameters cell; an unknown key or a value of the wrong
type is an error that names the key.

    cfg = make_config("tiny", dataset="news", decoder_noise=0.0)
    cfg = make_config("tiny", overrides=["max_steps=200", "encoder_warmup=off"])
"""
from __future__ import annotations

import dataclasses
import json
import math
import numbers
import typing
from dataclasses import dataclass


class ConfigError(ValueError):
    """A preset, key or value that the config does not know."""


def parse_problem(err: Exception) -> str:
    """A YAML or JSON parse error in one line: YAML's messages span lines, so its problem and where."""
    mark = getattr(err, "problem_mark", None)
    return f"{err.problem}, line {mark.line + 1} column {mark.column + 1}" if mark else " ".join(str(err).split())


@dataclass
class Config:
    # --- run ---------------------------------------------------------------------------------
    preset: str = "owt"
    variant: str = "full"            # recipe variant, see VARIANTS (full, naive, no_<component>)
    seed: int = 0
    device: str = "auto"             # auto | cpu | cuda | cuda:N (under torchrun: cuda:LOCAL_RANK)
    num_threads: int = 0             # torch CPU threads; 0 = ldlm.runtime.threads' default (idle cores)
    precision: str = "auto"          # auto (bf16 autocast on GPU, fp32 on CPU) | bf16 | fp32
    compile: bool = False            # torch.compile what the loss runs (compile_targets); 15-70 s to start on CPU
    num_workers: int = 4             # data-loader worker processes (pinned memory on GPU)
    micro_batch_size: int = 0        # per-device batch; 0 = batch_size / processes (no accumulation)

    # --- data ----------------------------------------------------------------------------------
    dataset: str = "openwebtext"     # wiki | news | openwebtext | lm1b | text:PATH | jsonl:PATH
    seq_len: int = 1024              # tokens per example, BOS/EOS framing included
    pack_mode: str = "wrap"          # wrap: concatenate documents and cut blocks; pad: one per example
    valid_docs: int = -1             # last N documents held out; -1 = the dataset's own convention
    max_train_tokens: int = 0        # 0 = all; otherwise the training split is cut to this many
    dataset_revision: str = "main"   # hub datasets only

    # --- frozen LM (encoder input) ---------------------------------------------------------------
    frozen_lm: str = "gpt2"          # minilm | gpt2 | any Hugging Face model id
    lm_layer: int = -3               # hidden_states index; paper: third-to-last [S]
    cache_hidden: bool = False       # keep the frozen LM's states on disk across runs

    # --- model -----------------------------------------------------------------------------------
    model: str = "ldlm"              # the model kind, a name in ldlm.kinds.registry.KINDS (the baselines: backbone sized from the dit_* keys)
    mdlm_time_conditioning: bool = False  # MDLM backbone sees t; off = the reference default (time_conditioning)
    latent_dim: int = 768            # [S]
    latent_len: int = 0              # 0 = one latent per token [R]; the paper's value is unknown
    enc_width: int = 768
    enc_layers: int = 6              # [S]
    enc_heads: int = 12
    dit_width: int = 768
    dit_layers: int = 12             # [S]
    dit_heads: int = 12
    dec_width: int = 768
    dec_layers: int = 6              # [S]
    dec_heads: int = 12
    tok_width: int = 768
    tok_layers: int = 3              # [S]
    tok_heads: int = 12
    mlp_ratio: int = 4
    gelu: str = "tanh"               # every FFN's GELU: tanh (DiT's and MDLM's approximation) | exact (erf); same weights
    dropout: float = 0.0
    corpus_vocab: bool = False       # restrict the token head to tokens seen in the training split
    adaptive_head: bool = False      # adaptive softmax token head (needs corpus_vocab: frequency order)
    self_cond_prob: float = 0.5      # [S]
    dit_param: str = "x0"            # x0: the DiT's output is x0 [S] | v: x0 = alpha z_t + sigma F (v-prediction = EDM's
                                     #   c_skip/c_out for unit-variance latents), the identity free at low noise (ours;
                                     #   every preset). A config saved before the key was x0: the default keeps it
    latent_norm: str = "l2"          # l2: each latent L2-normalised to norm sqrt(d) (Cosmos-era option) [?] |
                                     #   standard: per-dimension mean 0, std 1 | whiten: mean 0, covariance I
                                     #   (batch statistics in training, running ones at evaluation; ours)

    # --- diffusion -------------------------------------------------------------------------------
    schedule_d: float = 3.0          # tangent schedule alpha_t = (1 + d^2 tan^2(pi t / 2))^-1/2 [S/R]
    t_min: float = 1e-3              # smallest diffusion time used in training and sampling [R]

    # --- the four recipe components ---------------------------------------------------------------
    decoder_loss: str = "mse"        # mse (paper) | ce (naive: token CE shapes the latents)
    encoder_warmup: bool = True      # diffusion-to-encoder gradient warmup gamma(s)
    warmup_frac: float = 0.25        # S_wu / max_steps: the paper's 50k of 200k [S-weak]; see warmup_steps
    gamma_min: float = 0.001         # [S-weak]
    gamma_max: float = 1.0           # gamma after the warmup; < 1 keeps the encoder's diffusion gradient scaled down (ours)
    warmup_k: float = 10.0           # sigmoid steepness [S]
    warmup_c: float = 0.8            # sigmoid centre [S]
    time_sampling: str = "adaptive"  # adaptive | uniform
    time_bins: int = 100             # [S-weak]
    time_ema: float = 0.999          # per-bin loss EMA decay [S-weak]
    decoder_noise: float = 3.0       # sigma_dec; 0 = off [S]

    # --- loss weights [S-weak: 1/1/1] ---------------------------------------------------------------
    w_diff: float = 1.0
    w_h: float = 1.0
    w_tok: float = 1.0

    # --- optimisation [R: TEncDM defaults] -----------------------------------------------------------
    batch_size: int = 512            # global batch; per-device batch and accumulation are derived
    max_steps: int = 200_000
    lr: float = 2e-4
    tok_lr: float = 0.0              # token decoder's learning rate; 0 = lr (it learns from sg(h_hat) alone)
    lr_warmup: int = 5_000
    lr_min_ratio: float = 0.1        # cosine decay to lr * lr_min_ratio
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.98
    grad_clip: float = 1.0
    ema_decay: float = 0.9999        # the cap of the EMA warm-up (optim.ema_decay_at): any budget's EMA forgets its init

    # --- logging / checkpoints / evaluation --------------------------------------------------------
    log_every: int = 100
    eval_every: int = 5_000
    ckpt_every: int = 5_000
    eval_batches: int = 20           # held-out batches for reconstruction accuracy during training
    logger: str = "tensorboard"      # tensorboard (RUN/tb/) | jsonl | wandb (offline unless WANDB_MODE); metrics.jsonl always
    eval_samples: int = 4            # texts sampled by the EMA model (<= 20 steps) at each evaluation, for the logger; 0 = off

    # --- sampling defaults --------------------------------------------------------------------------
    sample_steps: int = 200
    sampler: str = "ddpm"            # ddpm (ancestral) | ddim (deterministic)

    @property
    def warmup_steps(self) -> int:
        """S_wu, the length of the encoder warmup: the same fraction of every budget (preset, notebook
        override, gpu_check), so gamma(s) has the same shape in a 150-step and a 200k-step run."""
        return round(self.warmup_frac * self.max_steps)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


CHOICES = {
    "decoder_loss": ("mse", "ce"),
    "time_sampling": ("adaptive", "uniform"),
    "pack_mode": ("wrap", "pad"),
    "sampler": ("ddpm", "ddim"),
    "gelu": ("tanh", "exact"),
    "dit_param": ("x0", "v"),
    "latent_norm": ("l2", "standard", "whiten"),
    "precision": ("auto", "bf16", "fp32"),
    "logger": ("tensorboard", "jsonl", "wandb"),
}

# The named presets. Values not in the paper are ours; each says why.
PRESETS: dict[str, dict] = {
    # the dataclass defaults: GPT-2 small frozen, OpenWebText, 1024 tokens (field convention), with
    "owt": dict(dit_param="v"),  # ours: the identity is free at low noise (tiny: DiT x0 accuracy at t=.001 0.12 -> 0.63)
    "lm1b": dict(
        dataset="lm1b", seq_len=128, pack_mode="pad",  # field convention for LM1B (MDLM) [R]
        dit_param="v",                                 # ours, as owt
    ),
    # ours: sized so a whole training run of its own budget (max_steps below: `make tiny-run`) takes <= 10 min on
    # a 2-core CPU (see README, calibration); `make reproduce` trains it at the budgets of params/tiny.yaml instead.
    "tiny": dict(
        dataset="wiki", frozen_lm="minilm", cache_hidden=True,  # ours: states computed once, ~80 s
        seq_len=64, num_workers=0,          # ours: the token blocks are in memory; workers cost more than they save
        latent_dim=384,                     # ours: = the frozen LM's width, as the paper's 768 = GPT-2's
        enc_width=128, enc_layers=2, enc_heads=4,
        dit_width=128, dit_layers=4, dit_heads=4,
        dec_width=128, dec_layers=2, dec_heads=4,
        tok_width=128, tok_layers=1, tok_heads=4,
        corpus_vocab=True,                  # ours: head over the ~21k WordPiece ids the corpus uses
        adaptive_head=True,                 # ours: a 21k-way linear head costs most of a CPU step
        gelu="exact",                       # ours: on CPU the tanh form takes 2-4x as long (1-5% of a step)
        tok_lr=3e-3,                        # ours: the token decoder is the slowest learner at this budget
        decoder_noise=0.5,                  # ours: sigma=3 needs far longer than 10 CPU minutes to learn
        dit_param="v",                      # ours: DiT x0 accuracy at t=.001 0.12 -> 0.63 (decoder: 0.63), 250 steps
        gamma_max=0.1,                      # ours: with gamma -> 1 the latents collapse onto their mean at this budget
                                            #   (mean share 0.82, DiT R2 at t=.2 < 0); 0.1: 0.11, DiT acc .65 of .71
        time_ema=0.95,                      # ours: the per-bin loss average follows a short run
        batch_size=32, max_steps=1200, lr=1e-3, lr_warmup=50, ema_decay=0.995,
        log_every=25, eval_every=200, ckpt_every=200, eval_batches=10,
        sample_steps=100,
    ),
    # ours: seconds per run; for tests, CI and notebook smoke runs.
    "smoke": dict(
        dataset="wiki", frozen_lm="minilm", cache_hidden=True,
        seq_len=32, max_train_tokens=20_000, num_workers=0,
        latent_dim=16,
        enc_width=32, enc_layers=1, enc_heads=2,
        dit_width=32, dit_layers=1, dit_heads=2,
        dec_width=32, dec_layers=1, dec_heads=2,
        tok_width=32, tok_layers=1, tok_heads=2,
        corpus_vocab=True, adaptive_head=True, gelu="exact", decoder_noise=0.5, dit_param="v", gamma_max=0.1,
        time_ema=0.9, time_bins=20,
        batch_size=16, max_steps=30, lr=1e-3, lr_warmup=5, ema_decay=0.9,
        log_every=5, eval_every=15, ckpt_every=15, eval_batches=2,
        sample_steps=10,
    ),
}

# ours: the tiny model and recipe with budgets only a GPU affords (params/gpu.yaml: every run of the pipeline in one
# <= 8-minute job on one H100/H200, python -m ldlm.tools.gpu_run, docs/gpu.md; scoring and figures then run on a CPU
# machine). The architecture stays tiny's: the offline corpora (wiki 0.57M training tokens, news 73k) are small for
# more parameters, and its LDLM's EMA weights (15 MB) are the one model small enough to come back from the box.
PRESETS["gpu"] = dict(
    PRESETS["tiny"],
    batch_size=64, max_steps=700, lr_warmup=100, ema_decay=0.999,  # ours: params/gpu.yaml sizes the budgets
    log_every=50, eval_every=500, ckpt_every=500,
)

@dataclass(frozen=True)
class Variant:
    """A recipe variant of the ablation: its config overrides and how tables, figures and readings name it."""
    overrides: dict
    title: str                  # its row in the tables
    label: str                  # in figure legends and axes
    colour: str                 # in every figure (the full recipe: LDLM's)
    called: str | None = None   # in a sentence; None: its name


# Recipe variants for the ablation: the full recipe, each component removed, and all four removed.
VARIANTS: dict[str, Variant] = {
    "full": Variant({}, "LDLM (full recipe)", "full recipe", "#0173b2", called="the full recipe"),
    "no_mse": Variant(dict(decoder_loss="ce"), "− MSE decoder loss (CE)", "− MSE loss", "#cc78bc"),
    "no_warmup": Variant(dict(encoder_warmup=False), "− encoder warmup", "− enc. warmup", "#ca9161"),
    "no_adaptive": Variant(dict(time_sampling="uniform"), "− adaptive timesteps", "− adaptive t", "#56b4e9"),
    "no_decoder_noise": Variant(dict(decoder_noise=0.0), "− decoder noise", "− dec. noise", "#882255"),
    "naive": Variant(dict(decoder_loss="ce", encoder_warmup=False, time_sampling="uniform", decoder_noise=0.0),
                     "naive joint training (all four off)", "naive (all off)", "#d55e00", called="naive joint training"),
}

_FIELDS = {f.name: f for f in dataclasses.fields(Config)}
_TYPES = typing.get_type_hints(Config)
_TRUE, _FALSE = {"1", "true", "on", "yes"}, {"0", "false", "off", "no"}


def _coerce(key: str, value):
    """Convert `value` (a string from the command line, or a Python value) to the field's type."""
    kind = _TYPES[key]
    if isinstance(value, str) and kind is not str:
        text = value.strip().lower()
        if kind is bool:
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ConfigError(f"{key}={value!r}: expected on/off (or true/false)")
        try:
            number = float(text)
        except ValueError:
            raise ConfigError(f"{key}={value!r}: expected a {kind.__name__}") from None
        if kind is int and not number.is_integer():
            raise ConfigError(f"{key}={value!r}: expected an int")
        return kind(number)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{key}={value!r}: expected a {kind.__name__}, got {type(value).__name__}")
    return value


def _check_key(key: str) -> None:
    if key not in _FIELDS:
        close = [k for k in _FIELDS if key.split("_")[0] in k][:5]
        hint = f" (did you mean one of {close}?)" if close else ""
        raise ConfigError(f"unknown config key {key!r}{hint}; python -m ldlm.training.train --help lists all keys")


def parse_overrides(items: typing.Iterable[str]) -> dict:
    """['a=1', 'b=x'] -> {'a': '1', 'b': 'x'}; raw strings, typed later."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, value = item.split("=", 1)
        _check_key(key.strip())
        out[key.strip()] = value
    return out


def make_config(preset: str = "tiny", overrides: typing.Iterable[str] = (), base: dict | None = None,
                **kwargs) -> Config:
    """Preset values, then `base` (an experiment spec's values over its preset: params/*.yaml), then the
    recipe variant, then explicit overrides (keyword or key=value)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    given = {**parse_overrides(overrides), **kwargs}
    base = base or {}
    for key in (*base, *given):
        _check_key(key)
    values = {"preset": preset, **PRESETS[preset], **base}
    variant = given.get("variant", "full")
    if variant not in VARIANTS:
        raise ConfigError(f"unknown variant {variant!r}; choose one of {sorted(VARIANTS)}")
    values.update(VARIANTS[variant].overrides)
    values.update(given)
    cfg = Config(**{k: _coerce(k, v) for k, v in values.items()})
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    for key, allowed in CHOICES.items():
        if getattr(cfg, key) not in allowed:
            raise ConfigError(f"{key}={getattr(cfg, key)!r}: choose one of {allowed}")
    for key in ("enc", "dit", "dec", "tok"):
        width, heads = getattr(cfg, f"{key}_width"), getattr(cfg, f"{key}_heads")
        if width % heads:
            raise ConfigError(f"{key}_width={width} must be divisible by {key}_heads={heads}")
    if cfg.adaptive_head and not cfg.corpus_vocab:
        raise ConfigError("adaptive_head=on needs corpus_vocab=on (the head is ordered by corpus frequency)")
    if cfg.valid_docs == 0 or cfg.valid_docs < -1:
        raise ConfigError(f"valid_docs={cfg.valid_docs}: hold out >= 1 documents, or -1 for the dataset's own split")
    if cfg.decoder_noise < 0:
        raise ConfigError(f"decoder_noise={cfg.decoder_noise}: must be >= 0 (0 = off)")
    if not 0.0 <= cfg.self_cond_prob <= 1.0:
        raise ConfigError(f"self_cond_prob={cfg.self_cond_prob}: must be in [0, 1]")
    if not 0.0 <= cfg.warmup_frac <= 1.0:
        raise ConfigError(f"warmup_frac={cfg.warmup_frac}: must be in [0, 1] (S_wu as a fraction of max_steps)")
    if not 0.0 <= cfg.ema_decay < 1.0:
        raise ConfigError(f"ema_decay={cfg.ema_decay}: must be in [0, 1)")
    if cfg.num_threads < 0:
        raise ConfigError(f"num_threads={cfg.num_threads}: must be >= 0 (0 = the cores idle at start, ldlm.runtime.threads)")
    if cfg.eval_samples < 0:
        raise ConfigError(f"eval_samples={cfg.eval_samples}: must be >= 0 (0 = off)")
    if not 0.0 < cfg.gamma_min <= 1.0:
        raise ConfigError(f"gamma_min={cfg.gamma_min}: must be in (0, 1]")
    if not 0.0 <= cfg.gamma_max <= 1.0:
        raise ConfigError(f"gamma_max={cfg.gamma_max}: must be in [0, 1]")
    for key, low in (("seq_len", 4), ("batch_size", 1), ("max_steps", 1), ("log_every", 1), ("eval_every", 1),
                     ("ckpt_every", 1), ("eval_batches", 1), ("sample_steps", 1), ("time_bins", 1)):
        if getattr(cfg, key) < low:
            raise ConfigError(f"{key}={getattr(cfg, key)}: must be >= {low}")
    for key in ("lr", "tok_lr", "weight_decay", "grad_clip", "t_min"):
        value = getattr(cfg, key)
        if not math.isfinite(value) or value < 0 or (key == "lr" and value == 0):
            raise ConfigError(f"{key}={value}: must be a finite number {'> 0' if key == 'lr' else '>= 0'}")


TEMPERATURE_RULE = "must be a number >= 0 (0 = argmax decoding)"


def is_temperature(value) -> bool:
    """A sampling temperature: a finite real number >= 0 (not a bool, not NaN)."""
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    return real and math.isfinite(value) and value >= 0


def check_counts(*, as_flags: bool = True, **counts) -> None:
    """Counts (n, batch_size, ...; None = not given) are integers >= 1: checked before any work. The error
    names a count as the command-line flag (`--batch-size 0`), or with as_flags=False as the Python
    argument (`batch_size=0`, ldlm.load's methods)."""
    for name, value in counts.items():
        if value is not None and (not isinstance(value, int) or value < 1):
            shown = f"--{name.replace('_', '-')} {value}" if as_flags else f"{name}={value!r}"
            raise ConfigError(f"{shown}: must be an integer >= 1")


def config_from_dict(values: dict) -> Config:
    """Rebuild a saved config (e.g. from a checkpoint); unknown keys are an error."""
    if "warmup_steps" in values:  # runs saved before S_wu became a fraction of the budget
        values = dict(values)
        values.setdefault("warmup_frac", values.pop("warmup_steps") / max(1, int(values.get("max_steps", 1))))
    for key in values:
        _check_key(key)
    cfg = Config(**{k: _coerce(k, v) for k, v in values.items()})
    validate(cfg)
    return cfg
