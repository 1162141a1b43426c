"""Joint training of encoder, DiT, decoder and token decoder.

    python -m ldlm.train --preset tiny --dataset wiki --out runs/tiny-wiki [key=value ...]
    python -m ldlm.train --out runs/tiny-wiki --resume          # continue after a kill

A run folder holds config.json (the resolved config), data.json (dataset statistics),
metrics.jsonl (one line per log step and per evaluation), ckpt.pt (the last checkpoint, written
atomically) and summary.json (final metrics, wall time, throughput).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import checkpoint
from .config import Config, ConfigError, config_from_dict, make_config
from .data import DataError, TokenData, build_token_data
from .diffusion import make_time_sampler, warmup_gamma
from .frozen_lm import (FrozenLM, ModelUnavailable, attention_mask, cached_hidden_states, default_device,
                        load_frozen_lm, load_tokenizer)
from .io import read_jsonl, write_json, write_jsonl
from .losses import ldlm_loss
from .metrics import token_accuracy
from .models import LDLM

# Resuming may change these (e.g. train longer); any other difference from the saved config is an error.
RESUME_MUTABLE = {"max_steps", "log_every", "eval_every", "ckpt_every", "eval_batches", "device", "num_threads"}


@dataclass
class TrainingData:
    """Token blocks and (optionally cached) frozen-LM states for both splits."""
    tokens: TokenData
    lm: FrozenLM
    train_h: np.ndarray | None  # [N, T, lm_width] float16, or None to compute per batch
    valid_h: np.ndarray | None

    def batch(self, split: str, idx: np.ndarray, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(h [B, T, W] float32, tokens [B, T], lengths [B]) for rows `idx` of a split."""
        blocks = getattr(self.tokens, split)[idx]
        lengths = getattr(self.tokens, f"{split}_len")[idx]
        tokens = torch.as_tensor(blocks, dtype=torch.long, device=device)
        cached = self.train_h if split == "train" else self.valid_h
        if cached is not None:
            h = torch.as_tensor(np.asarray(cached[idx]), device=device).float()
        else:
            h = self.lm(tokens, attention_mask(lengths, tokens.shape[1]).to(device)).float()
        return h, tokens, torch.as_tensor(lengths, device=device)


def load_corpus_states(cfg: Config, device) -> TrainingData:
    tokenizer = load_tokenizer(cfg.frozen_lm)
    tokens = build_token_data(cfg, tokenizer, cfg.frozen_lm)
    lm = load_frozen_lm(cfg.frozen_lm, cfg.lm_layer, device)
    if not cfg.cache_hidden:
        return TrainingData(tokens, lm, None, None)
    train_h = cached_hidden_states(lm, cfg.frozen_lm, tokens.train, tokens.train_len)
    valid_h = cached_hidden_states(lm, cfg.frozen_lm, tokens.valid, tokens.valid_len)
    return TrainingData(tokens, lm, train_h, valid_h)


def build_model(cfg: Config, lm_width: int, vocab_size: int, head_ids: torch.Tensor | None = None) -> LDLM:
    model = LDLM(cfg, lm_width, vocab_size, head_vocab=len(head_ids) if head_ids is not None else None)
    if head_ids is not None:
        model.set_vocab(head_ids)
    return model


def init_model(cfg: Config, corpus: TrainingData, device) -> LDLM:
    """A fresh model whose token head and state statistics come from the training split."""
    vocab_size = int(corpus.lm.model.config.vocab_size)
    head_ids = None
    if cfg.corpus_vocab:  # ids seen in training, most frequent first (the adaptive head relies on the order)
        ids, counts = np.unique(corpus.tokens.train, return_counts=True)
        head_ids = torch.as_tensor(ids[np.argsort(-counts, kind="stable")])
    model = build_model(cfg, corpus.lm.width, vocab_size, head_ids).to(device)
    rows = np.random.default_rng(cfg.seed).choice(len(corpus.tokens.train), min(256, len(corpus.tokens.train)), replace=False)
    h, _, _ = corpus.batch("train", rows, device)
    model.set_h_stats(h.mean(dim=(0, 1)), h.std(dim=(0, 1)))
    return model


def lr_lambda(cfg: Config):
    """Linear warmup for lr_warmup steps, then cosine decay to lr * lr_min_ratio at max_steps."""
    def factor(step: int) -> float:
        if step < cfg.lr_warmup:
            return (step + 1) / cfg.lr_warmup
        progress = min(1.0, (step - cfg.lr_warmup) / max(1, cfg.max_steps - cfg.lr_warmup))
        return cfg.lr_min_ratio + (1 - cfg.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


def make_optimizer(cfg: Config, model: torch.nn.Module) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only (not on norms, biases, positions, queries); the token
    decoder at `tok_lr` if set (the LR schedule scales every group alike)."""
    groups = {}
    for name, p in model.named_parameters():
        decay = p.ndim >= 2 and not name.endswith(("pos", "queries"))
        lr = cfg.tok_lr if cfg.tok_lr and name.startswith("token_decoder.") else cfg.lr
        groups.setdefault((decay, lr), []).append(p)
    return torch.optim.AdamW([{"params": ps, "weight_decay": cfg.weight_decay if decay else 0.0, "lr": lr}
                              for (decay, lr), ps in groups.items()], lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8)


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - decay)


def batch_indices(n: int, batch: int, step: int, seed: int) -> np.ndarray:
    """Rows of step `step`: epoch-wise permutations seeded by (seed, epoch), so resuming at any step
    sees the same data as an uninterrupted run."""
    per_epoch = max(1, n // batch)
    epoch, pos = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    if n < batch:
        return np.resize(perm, batch)
    return perm[pos * batch:(pos + 1) * batch]


@torch.no_grad()
def evaluate(model: LDLM, corpus: TrainingData, cfg: Config, device, batches: int) -> dict:
    """Held-out reconstruction token accuracy from clean latents (no decoder noise), and losses."""
    model.eval()
    n = len(corpus.tokens.valid)
    rows = np.arange(n)[: batches * cfg.batch_size]
    preds, targets, masks, loss_h = [], [], [], 0.0
    for i in range(0, len(rows), cfg.batch_size):
        h, tokens, lengths = corpus.batch("valid", rows[i:i + cfg.batch_size], device)
        h_std = model.standardize(h)
        h_hat = model.decode(model.encode(h_std))
        preds.append(model.hidden_to_tokens(h_hat).cpu())
        targets.append(tokens.cpu())
        masks.append(attention_mask(lengths.cpu(), tokens.shape[1]).bool())
        loss_h += float(torch.nn.functional.mse_loss(h_hat, h_std)) * len(h)
    mask = torch.cat(masks)
    return {"recon_acc": token_accuracy(torch.cat(preds), torch.cat(targets), mask),
            "valid_loss_h": loss_h / max(len(rows), 1), "valid_tokens": int(mask.sum())}


def _check_resume_config(saved: Config, given: dict) -> None:
    for key, value in given.items():
        if key not in RESUME_MUTABLE and getattr(saved, key) != value:
            raise ConfigError(
                f"--resume: {key}={value!r} differs from the saved run ({getattr(saved, key)!r}); "
                f"only {sorted(RESUME_MUTABLE)} may change when resuming. Use a new --out for a new run."
            )


def train(cfg: Config, out: str | Path, resume: bool = False, progress: bool = True, stop_at: int | None = None) -> dict:
    """Train (or continue) the run in folder `out`; returns the summary dict.

    `stop_at` ends this call early at that step with a checkpoint (the schedule still runs to
    cfg.max_steps), as if the job had been killed right after saving; `resume=True` continues."""
    from tqdm.auto import tqdm

    out = Path(out)
    ckpt_path = out / checkpoint.CKPT_NAME
    if ckpt_path.exists() and not resume:
        raise FileExistsError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = default_device(cfg.device)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)

    corpus = load_corpus_states(cfg, device)
    model = init_model(cfg, corpus, device)
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = make_optimizer(cfg, model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    time_sampler = make_time_sampler(cfg)
    step, elapsed = 0, 0.0

    if resume and ckpt_path.exists():
        state = checkpoint.load(ckpt_path)
        checkpoint.load_module(model, state["model"], "model")
        checkpoint.load_module(ema, state["ema"], "EMA model")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        time_sampler.load_state_dict(state["time_sampler"])
        checkpoint.set_rng_state(state["rng"])
        step, elapsed = state["step"], state.get("elapsed", 0.0)
        # drop log lines written after the checkpoint: the resumed run writes them again
        if (out / "metrics.jsonl").exists():
            write_jsonl(out / "metrics.jsonl", [r for r in read_jsonl(out / "metrics.jsonl") if r["step"] <= step])
    else:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "config.json", cfg.to_dict())
        write_json(out / "data.json", corpus.tokens.stats)

    def save_checkpoint():
        checkpoint.save(ckpt_path, config=cfg.to_dict(), step=step, elapsed=elapsed, model=model.state_dict(),
                        ema=ema.state_dict(), optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                        time_sampler=time_sampler.state_dict(), rng=checkpoint.rng_state(),
                        lm_width=corpus.lm.width, vocab_size=len(model.to_head), head_vocab=len(model.head_ids))

    log = open(out / "metrics.jsonl", "a")
    def write_log(row: dict):
        log.write(json.dumps(row) + "\n")
        log.flush()

    tokens_per_step = cfg.batch_size * cfg.seq_len
    bar = tqdm(total=cfg.max_steps, initial=step, desc="train", disable=not progress, dynamic_ncols=True)
    window_t, window_steps = time.perf_counter(), 0
    last = min(cfg.max_steps, stop_at) if stop_at is not None else cfg.max_steps
    while step < last:
        model.train()
        t0 = time.perf_counter()
        gamma = warmup_gamma(step, cfg.warmup_steps, cfg.gamma_min, cfg.warmup_k, cfg.warmup_c) if cfg.encoder_warmup else 1.0
        h, tokens, _ = corpus.batch("train", batch_indices(len(corpus.tokens.train), cfg.batch_size, step, cfg.seed), device)
        result = ldlm_loss(model, h, tokens, cfg, gamma, time_sampler)
        optimizer.zero_grad(set_to_none=True)
        result.loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        update_ema(ema, model, cfg.ema_decay)
        time_sampler.update(result.t, result.diff_per_sample)
        step += 1
        elapsed += time.perf_counter() - t0
        window_steps += 1
        bar.update(1)

        if step % cfg.log_every == 0 or step == cfg.max_steps:
            now = time.perf_counter()
            row = dict(step=step, **result.parts, grad_norm=float(grad_norm), lr=scheduler.get_last_lr()[0],
                       tokens_per_s=window_steps * tokens_per_step / (now - window_t), **time_sampler.summary())
            write_log(row)
            bar.set_postfix(loss=f"{row['loss']:.3f}", diff=f"{row['loss_diff']:.3f}", acc=f"{row['train_tok_acc']:.2f}")
            window_t, window_steps = time.perf_counter(), 0
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            write_log(dict(step=step, **{f"ema_{k}": v for k, v in evaluate(ema, corpus, cfg, device, cfg.eval_batches).items()}))
            window_t = time.perf_counter()  # evaluation time is not training throughput
        if step % cfg.ckpt_every == 0 or step == last:
            save_checkpoint()
            window_t = time.perf_counter()
    bar.close()
    log.close()
    if not ckpt_path.exists():  # max_steps == 0
        save_checkpoint()

    final = evaluate(ema, corpus, cfg, device, batches=len(corpus.tokens.valid) // cfg.batch_size + 1)
    summary = dict(step=step, train_seconds=elapsed, train_tokens=step * tokens_per_step,
                   train_tokens_per_s=step * tokens_per_step / max(elapsed, 1e-9),
                   **{f"ema_{k}": v for k, v in final.items()})
    write_json(out / "summary.json", summary)
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ldlm.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default=None, help="smoke | tiny | lm1b | owt (default tiny)")
    parser.add_argument("--dataset", default=None, help="wiki | news | openwebtext | lm1b | text:PATH | jsonl:PATH")
    parser.add_argument("--variant", default=None, help="full | naive | no_mse | no_warmup | no_adaptive | no_decoder_noise")
    parser.add_argument("--out", required=True, help="run folder")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("overrides", nargs="*", help="config key=value pairs (see ldlm/config.py)")
    args = parser.parse_args(argv)
    try:
        given = {k: v for k, v in (("dataset", args.dataset), ("variant", args.variant)) if v is not None}
        if args.resume and (Path(args.out) / checkpoint.CKPT_NAME).exists():
            saved = checkpoint.load_config(checkpoint.load(Path(args.out) / checkpoint.CKPT_NAME))
            asked = make_config(args.preset or saved.preset, args.overrides, **given)  # validates keys and types
            explicit = [*given, *(o.split("=", 1)[0].strip() for o in args.overrides)] + (["preset"] if args.preset else [])
            _check_resume_config(saved, {k: getattr(asked, k) for k in explicit})
            cfg = config_from_dict({**saved.to_dict(), **{k: getattr(asked, k) for k in explicit}})
        else:
            cfg = make_config(args.preset or "tiny", args.overrides, **given)
        summary = train(cfg, args.out, resume=args.resume, progress=not args.no_progress)
    except (ConfigError, DataError, ModelUnavailable, checkpoint.CheckpointError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
