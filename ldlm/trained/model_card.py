"""The model card (README.md) of a saved model: what it is, how to load it, and its run's numbers.

Built from the saved config.json alone (ldlm.trained.hub.saved_config), so the card never says more than the
folder holds; no dates or paths, so exporting the same run twice gives the same bytes.
"""
from __future__ import annotations

import math

from ..evaluation.columns import COLUMNS
from ..kinds.registry import KINDS

# result-row columns shown, and their headers: what produced the row, the measured columns a card shows
# (ldlm.evaluation.columns), then the judges
CARD_COLUMNS = {"model": "model", "steps": "steps", "top_p": "top p", "temperature": "temperature", "seed": "seed",
                "n_samples": "n", **{c.name: c.header for c in COLUMNS if c.card}, "degenerate": "degenerate",
                "judge": "judge", "featurizer": "featurizer"}
SUMMARY_KEYS = {"step": "training steps", "train_tokens": "training tokens", "train_seconds": "training seconds",
                "ema_recon_acc": "held-out reconstruction accuracy (EMA)", "ema_valid_loss_h": "held-out L_h (EMA)",
                "ema_valid_loss": "held-out loss (EMA)",
                "precision": "precision", "processes": "processes"}
CONFIG_KEYS = ("preset", "dataset", "variant", "seed", "max_steps", "batch_size", "seq_len", "pack_mode", "frozen_lm",
               "lm_layer", "latent_dim", "dit_width", "dit_layers", "decoder_noise", "sample_steps", "sampler")


def cell(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}" if not value.is_integer() else str(int(value))
    return str(value)


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows])


def card_text(config: dict) -> str:
    cfg, run = config["config"], config.get("run") or {}
    kind = KINDS[config["model_kind"]]
    latent = kind.model.has_latents
    use = ['import ldlm', 'pipe = ldlm.load("path/to/this/folder")   # or its hub id',
           'pipe.generate(4, steps=30, seed=0)      # 4 texts; the same seed gives the same texts']
    if latent:
        use += ['z = pipe.encode(["A sentence to encode."])  # latents [1, latent_len, latent_dim]',
                'pipe.decode(z)', 'pipe.interpolate("One text.", "Another text.", points=5)']
    parts = [
        "---", "library_name: ldlm", "pipeline_tag: text-generation",
        "tags:", *(f"- {t}" for t in ("latent-diffusion", "diffusion-language-model", "ldlm")), "---", "",
        f"# {run.get('run_id') or kind.name}", "",
        f"{kind.about}, trained with the ldlm kit (version {config['kit_version']}) on `{cfg['dataset']}` "
        f"(preset `{cfg['preset']}`, variant `{cfg['variant']}`, seed {cfg['seed']}): the EMA weights "
        f"({config['weights_dtype']}). Paper: Meshchaninov et al., *How to Train Your Latent Diffusion Language "
        f"Model Jointly With the Latent Space*, arXiv 2605.07933.", "",
        f"Tokenizer and frozen LM: `{config['frozen_lm_id']}` (kit name `{config['frozen_lm']}`)"
        + (f"; the encoder reads its hidden states at layer {config['lm_layer']}, so `encode`, `reconstruct` and "
           f"`interpolate` load it; `generate` and `decode` do not." if latent else "; only its tokenizer is used."), "",
        "## Use it", "", "```python", *use, "```", "",
        "Needs the ldlm kit (`pip install -e .` in its repository). `python -m ldlm.trained.export --run RUN --out DIR` "
        "wrote this folder from a training run.", "",
    ]
    summary = run.get("summary") or {}
    if summary:
        parts += ["## Training", "", table(["", ""], [[SUMMARY_KEYS[k], summary[k]] for k in SUMMARY_KEYS
                                                     if k in summary]), ""]
    results = run.get("results") or []
    if results:
        columns = [c for c in CARD_COLUMNS if any(c in r for r in results)]
        parts += ["## Results", "",
                  "Rows of the kit's results table for this run (one per sampling setting and seed). Gen PPL is "
                  "judged by the named judge and MAUVE uses the named featurizer: numbers compare models inside "
                  "the kit, not with published ones.", "",
                  table([CARD_COLUMNS[c] for c in columns], [[r.get(c) for c in columns] for r in results]), ""]
    parts += ["## Configuration", "", table(["key", "value"], [[k, cfg[k]] for k in CONFIG_KEYS if k in cfg]), "",
              "The whole resolved config is `config[\"config\"]` in config.json.", ""]
    return "\n".join(parts)
