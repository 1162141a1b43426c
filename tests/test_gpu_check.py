"""The GPU check command: refusal without a GPU, a tiny CPU run end to end, the FLOP count."""
import math
import random

import pandas as pd
import pytest

from ldlm.tools import gpu_check
from ldlm.config import PRESETS, make_config
from ldlm.tools.flops import meta_model, training_flops
from ldlm.tools.gpu_check import CSV_COLUMNS, CSV_KEY, MARKER, CheckError, check_config, nominal_peak, prepare_run_dir
from ldlm.evaluation.results import upsert_rows

MINILM = dict(params=7_246_464, layers=4, width=384, max_positions=512)  # frozen_lm_shape("minilm", -3)


def test_refuses_without_gpu(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(gpu_check, "gpu_available", lambda: False)
    code = gpu_check.main(["--steps", "1", "--out", str(tmp_path / "c.csv"), "--run-dir", str(tmp_path / "run")])
    assert code == 2
    err = capsys.readouterr().err
    assert "GPU" in err and "--allow-cpu" in err
    assert not (tmp_path / "c.csv").exists() and not (tmp_path / "run").exists()


def test_cpu_check_end_to_end_with_fallback(monkeypatch, tmp_path, capsys):
    # the preset's frozen LM cannot be loaded (offline, no such model): the check falls back to minilm
    monkeypatch.setitem(PRESETS, "smoke", {**PRESETS["smoke"], "frozen_lm": "ldlm-test/no-such-model"})
    out, run = tmp_path / "gpu_check.csv", tmp_path / "run"
    # a small corpus instead of `wiki`, whose extraction and states alone take ~35 s on one thread
    rng = random.Random(0)
    words = "the a of river city music was is in by and year first team built north king song".split()
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(" ".join(rng.choices(words, k=120)) + "." for _ in range(40)))
    run.mkdir()
    (run / MARKER).write_text("")
    (run / "ckpt.pt").write_text("an earlier check")  # deleted: a check starts over
    argv = ["--allow-cpu", "--preset", "smoke", "--steps", "6", "--sample-batch", "1", "3", "--sample-steps", "2", "4",
            "--repeats", "1", "--no-progress", "--out", str(out), "--run-dir", str(run), "num_threads=1",
            f"dataset=text:{corpus}"]
    assert gpu_check.main(argv) == 0
    printed = capsys.readouterr().out
    assert "MFU" in printed and "sample 0:" in printed and "sample 2:" in printed

    df = pd.read_csv(out)
    assert list(df.columns) == CSV_COLUMNS
    assert list(df["kind"]) == ["training"] + ["sampling"] * 4
    assert set(zip(df["batch"][1:], df["steps"][1:])) == {(1, 2), (1, 4), (3, 2), (3, 4)}
    assert (df["frozen_lm"] == "minilm").all() and df["frozen_lm_note"].str.contains("no-such-model").all()
    assert (df["device"] == "cpu").all() and (df["seq_len"] == 32).all() and (df["train_steps"] == 6).all()
    assert not df["train_compiled"].any()  # the smoke preset trains eagerly
    train = df.iloc[0]
    # `steps` and `nfe` mean a sampling row's reverse steps and network calls, in bench's rows too: none for training
    assert (train["steps"], train["nfe"]) == (0, 0)
    for col in ("tokens_per_s", "train_tokens_per_s_overall", "train_seconds", "params_trainable", "flops_per_token",
                "achieved_flops_per_s", "matmul_peak_flops_per_s", "mfu", "wall_seconds"):
        assert math.isfinite(train[col]) and train[col] > 0, col
    assert train["achieved_flops_per_s"] == pytest.approx(train["flops_per_token"] * train["tokens_per_s"])
    assert train["mfu"] == pytest.approx(train["achieved_flops_per_s"] / train["matmul_peak_flops_per_s"])
    assert math.isnan(train["mfu_vs_nominal"])  # no nominal peak for a CPU
    assert 0 <= train["ema_recon_acc"] <= 1 and (df["dtype"] == "float32").all()  # one naming in the file
    sampling = df.iloc[1:]
    for col in ("seconds", "samples_per_s", "tokens_per_s"):
        assert (sampling[col] > 0).all() and sampling[col].map(math.isfinite).all(), col
    assert list(sampling["tokens_per_s"]) == pytest.approx(list(sampling["samples_per_s"] * 32))
    assert (sampling["nfe"] == sampling["steps"] + 1).all()
    assert (run / "summary.json").exists() and not (run / "ckpt.pt").read_bytes().startswith(b"an earlier")


def test_a_compiled_check_keeps_the_eager_rows_beside_its_own(tmp_path):
    out = tmp_path / "gpu_check.csv"
    base = {c: None for c in CSV_COLUMNS} | dict(kind="training", preset="owt", dataset="wiki", frozen_lm="minilm",
                                                hardware="H200", device="cuda", seq_len=512, train_steps=300,
                                                batch=64, steps=0)
    upsert_rows(out, [base | dict(train_compiled=False, tokens_per_s=1.0)], key=CSV_KEY)
    upsert_rows(out, [base | dict(train_compiled=True, tokens_per_s=2.0)], key=CSV_KEY)
    upsert_rows(out, [base | dict(train_compiled=False, tokens_per_s=3.0)], key=CSV_KEY)  # a re-run replaces its own
    df = pd.read_csv(out)
    assert sorted(zip(df["train_compiled"], df["tokens_per_s"])) == [(False, 3.0), (True, 2.0)]


def test_owt_check_config():
    cfg = check_config("owt", 300, "gpt2", {})
    assert (cfg.dataset, cfg.seq_len, cfg.batch_size, cfg.frozen_lm, cfg.max_steps) == ("wiki", 1024, 32, "gpt2", 300)
    assert (cfg.enc_width, cfg.dit_width, cfg.enc_layers, cfg.dit_layers, cfg.dec_layers, cfg.tok_layers) == \
        (768, 768, 6, 12, 6, 3)
    assert cfg.eval_every == cfg.ckpt_every == 300 and cfg.lr_warmup < 50 and cfg.warmup_steps == 75
    assert cfg.ema_decay == make_config("owt").ema_decay and not cfg.cache_hidden  # the EMA warm-up handles 300 steps
    gpt2 = dict(params=10 * 7_087_872, layers=10, width=768, max_positions=1024)  # GPT-2 small cut at layer -3
    flops = training_flops(meta_model(cfg, 50257, lm_width=768), gpt2)
    assert 2.0e9 < flops["total"] < 2.3e9 and flops["frozen_lm"] > 1e8  # 6 x 284M would say 1.71e9 + LM
    cached = check_config("owt", 300, "gpt2", {"cache_hidden": "on"})
    assert training_flops(meta_model(cached, 50257, lm_width=768), gpt2)["frozen_lm"] == 0
    # MiniLM reads 512 positions: same tokens per step at seq_len 512
    fallback = check_config("owt", 300, "minilm", {}, MINILM)
    assert (fallback.seq_len, fallback.batch_size) == (512, 64)
    assert check_config("owt", 300, "minilm", {"seq_len": "256"}, MINILM).seq_len == 256
    with pytest.raises(CheckError, match="512"):
        check_config("owt", 300, "minilm", {"seq_len": "1024"}, MINILM)


def test_run_dir_is_only_deleted_when_the_check_made_it(tmp_path):
    run = tmp_path / "run"
    prepare_run_dir(run)  # made, and marked as the check's
    assert (run / MARKER).exists()
    (run / "metrics.jsonl").write_text("{}\n")
    prepare_run_dir(run)  # an earlier check's: emptied
    assert sorted(p.name for p in run.iterdir()) == [MARKER]
    real = tmp_path / "real"  # a real run (only run-file names) or anything else: never deleted
    real.mkdir()
    (real / "ckpt.pt").write_bytes(b"weights")
    (real / "config.json").write_text("{}")
    with pytest.raises(CheckError, match="not deleting"):
        prepare_run_dir(real)
    assert (real / "ckpt.pt").read_bytes() == b"weights"


def test_nominal_peaks():
    assert nominal_peak("NVIDIA H100 80GB HBM3") == 989e12 and nominal_peak("NVIDIA H200") == 989e12
    assert nominal_peak("NVIDIA A100-SXM4-80GB") == 312e12 and nominal_peak("NVIDIA H100 PCIe") == 756e12
    assert nominal_peak("NVIDIA GeForce RTX 4090") is None


def test_explicit_frozen_lm_is_strict(tmp_path, capsys):
    argv = ["--allow-cpu", "--preset", "smoke", "--frozen-lm", "ldlm-test/no-such-model", "--no-progress",
            "--out", str(tmp_path / "c.csv"), "--run-dir", str(tmp_path / "run")]
    assert gpu_check.main(argv) == 2
    assert "no fallback" in capsys.readouterr().err and not (tmp_path / "c.csv").exists()


def test_out_of_memory_halves_the_micro_batch(monkeypatch, tmp_path):
    """The training process exits runs.OUT_OF_MEMORY twice (as python -m ldlm.training.train does on a GPU that
    runs out): the check starts over at half the micro-batch, the same global batch."""
    import json

    from ldlm.runtime import runs
    from ldlm.config import config_from_dict

    calls = []

    def fake_relay(cmd):
        config = cmd[cmd.index("--config") + 1]
        cfg = config_from_dict(json.loads(open(config).read()))
        calls.append(cfg.micro_batch_size)
        if len(calls) < 3:
            return runs.OUT_OF_MEMORY, "error: out of memory"
        (tmp_path / "run" / "summary.json").write_text(json.dumps({"step": cfg.max_steps}))
        return 0, ""

    monkeypatch.setattr(runs, "relay", fake_relay)
    cfg = check_config("owt", 10, "gpt2", {})
    cfg, summary = gpu_check.train_with_retry(cfg, tmp_path / "run")
    assert calls == [0, 16, 8] and cfg.micro_batch_size == 8 and cfg.batch_size == 32 and summary["step"] == 10
