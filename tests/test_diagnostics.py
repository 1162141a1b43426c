"""The diffusion diagnostics (ldlm.evaluation.diagnostics) on a smoke run, and on a stand-in model whose right
answers are known: a perfect autoencoder (latent = the token's codeword, decoding = the nearest
codeword) with the Bayes-optimal linear denoiser x0 = alpha_t z_t of N(0, I) latents."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import ldlm
from ldlm.runtime import checkpoint; from ldlm.evaluation import diagnostics; from ldlm.experiments import latents
from ldlm.training.batches import held_out_chunks, load_training_data
from ldlm.config import make_config
from ldlm.nets.diffusion import tangent_alpha_sigma
from ldlm.runtime.distributed import DistEnv
from ldlm.io import read_jsonl
from ldlm.kinds.protocol import held_out_metrics
from ldlm.nets.samplers import time_grid
from ldlm.training.train import train


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    summary = train(make_config("smoke"), out, progress=False)
    pipe = ldlm.load(out, device="cpu")
    return out, summary, pipe, pipe.cfg, load_training_data(pipe.cfg, "cpu")


def test_time_profile_is_the_sampler_the_run_trained_with(smoke_run):
    out, _, _, cfg, _ = smoke_run
    profile = diagnostics.time_profile(out)
    assert len(profile) == cfg.time_bins and profile["p_adaptive"].sum() == pytest.approx(1.0, abs=1e-12)
    assert (profile["p_uniform"] == 1 / cfg.time_bins).all() and (profile["p_adaptive"] > 0).all()
    assert profile["seen"].sum() == cfg.max_steps * cfg.batch_size  # every training sample fell in one bin
    assert profile["loss"].isna().equals(profile["seen"] == 0)
    assert profile["t_lo"].iloc[0] == cfg.t_min and profile["t_hi"].iloc[-1] == 1.0
    # its CDF inverts to the t quartiles the training log recorded after the last step
    last = [r for r in read_jsonl(out / "metrics.jsonl") if "t_q50" in r][-1]
    edges = np.r_[profile["t_lo"].iloc[0], profile["t_hi"]]
    cdf = np.r_[0.0, profile["p_adaptive"].cumsum()]
    for q in (25, 50, 75):
        assert np.interp(q / 100, cdf, edges) == pytest.approx(last[f"t_q{q}"], abs=1e-6)


def test_time_profile_refuses_a_uniform_run(smoke_run, tmp_path):
    state = checkpoint.load(smoke_run[0])  # the smoke run as a uniform-t run would have saved it
    state.update(config=dict(state["config"], time_sampling="uniform"), time_sampler={})
    checkpoint.save(tmp_path / "ckpt.pt", **{k: v for k, v in state.items() if k != "format"})
    with pytest.raises(ValueError, match="adaptive runs only"):
        diagnostics.time_profile(tmp_path)


@pytest.mark.parametrize("gamma_max", [1.0, 0.1])
def test_gamma_rises_from_gamma_min_to_gamma_max_at_the_end_of_the_warmup(gamma_max):
    cfg = make_config("tiny", max_steps=400, gamma_max=gamma_max)
    gamma = diagnostics.gamma_schedule(cfg).set_index("step")["gamma"]
    assert gamma[0] == cfg.gamma_min and gamma[cfg.warmup_steps] == gamma_max and gamma.iloc[-1] == gamma_max
    assert gamma.is_monotonic_increasing and gamma.index[-1] == cfg.max_steps
    assert (gamma[gamma.index < cfg.warmup_steps] < gamma_max).all()
    off = diagnostics.gamma_schedule(make_config("tiny", variant="no_warmup"))
    assert (off["gamma"] == 1.0).all()


def test_gamma_schedule_is_the_gamma_training_used(smoke_run):
    out, _, _, cfg, _ = smoke_run
    gamma = diagnostics.gamma_schedule(cfg, points=cfg.max_steps + 1).set_index("step")["gamma"]
    logged = [r for r in read_jsonl(out / "metrics.jsonl") if "gamma" in r]
    assert logged and any(r["gamma"] < 1 for r in logged)
    for row in logged:  # a log row at step k reports the gamma of training step k - 1
        assert gamma[row["step"] - 1] == pytest.approx(row["gamma"], rel=1e-12)


def test_trajectory_has_one_row_per_denoiser_call(smoke_run):
    _, _, pipe, cfg, _ = smoke_run
    view = latents.LatentView(pipe, 4)
    steps = 6
    rows = diagnostics.denoising_trajectory(view, steps, seed=0, n=3, text_rows=3)
    assert len(rows) == steps + 1 and list(rows["step"]) == list(range(steps + 1))
    assert np.allclose(rows["t"], time_grid(steps, cfg.t_min).numpy())
    assert np.allclose(rows["sigma"], tangent_alpha_sigma(time_grid(steps, cfg.t_min), cfg.schedule_d)[1].numpy())
    assert np.isnan(rows["tokens_changed"].iloc[0])
    assert rows["tokens_changed"].iloc[1:].between(0, cfg.seq_len).all() and rows["frac_final"].iloc[-1] == 1.0
    assert list(rows.index[rows["text"].notna()]) == [0, steps // 2, steps]  # the text at 3 evenly spaced steps
    same = diagnostics.denoising_trajectory(view, steps, seed=0, n=3, text_rows=3)
    assert rows.equals(same)  # seeded


def test_your_sentences_are_encoded_in_the_run_framing(smoke_run):
    _, _, pipe, cfg, _ = smoke_run
    sentences = ["the cat sat on the mat.", "a much longer second sentence about rivers and the sea."]
    view = latents.LatentView.of_texts(pipe, sentences)
    assert view.z.shape == (2, cfg.seq_len, cfg.latent_dim)
    tokenizer = pipe.tokenizer
    tokens = [tokenizer(s, add_special_tokens=False)["input_ids"] for s in sentences]
    assert view.lengths.tolist() == [len(t) + 2 for t in tokens]  # BOS + text + EOS (ldlm.trained.api framing)
    for row, ids in zip(view.tokens.tolist(), tokens):
        assert row[1:len(ids) + 1] == ids
        assert view.text(row, len(ids) + 2) == tokenizer.decode(ids)
    recon = view.reconstructions()
    assert list(recon["original"]) == [tokenizer.decode(t) for t in tokens] and recon["token_acc"].between(0, 1).all()
    assert len(view.interpolate(0, 1, points=3)) == 3


def test_recon_without_noise_is_the_training_held_out_accuracy(smoke_run):
    _, _, pipe, cfg, data = smoke_run
    # what training reports: the first batch_size held-out rows
    expected = held_out_metrics(pipe.model, data, cfg, "cpu", held_out_chunks(data, cfg, 1, DistEnv()))
    view = latents.LatentView(pipe, cfg.batch_size)
    rows = diagnostics.reconstruction_vs_noise(view, ts=[0.5], sigmas=[0.0, 1.0], seed=0)
    assert list(rows["kind"]) == ["diffusion", "decoder", "decoder"]
    clean = rows[(rows["kind"] == "decoder") & (rows["sigma"] == 0)].iloc[0]
    assert clean["token_acc"] == pytest.approx(expected["recon_acc"], abs=1e-12)
    assert clean["tokens"] == expected["valid_tokens"] and rows["token_acc"].between(0, 1).all()


class StandIn(torch.nn.Module):
    """A perfectly trained LDLM in miniature: token v's latent is codeword v (unit-variance entries);
    decoding picks the nearest codeword; the denoiser is alpha_t z_t."""

    def __init__(self, vocab=40, dim=32, seq_len=12, schedule_d=3.0, t_min=1e-3):
        super().__init__()
        self.codes = torch.nn.Parameter(torch.randn(vocab, dim, generator=torch.Generator().manual_seed(0)),
                                        requires_grad=False)
        self.cfg = SimpleNamespace(seq_len=seq_len, latent_len=0, latent_dim=dim, t_min=t_min, schedule_d=schedule_d,
                                   sampler="ddpm")

    def denoise(self, z, t, x0_self_cond=None):
        return tangent_alpha_sigma(t.double(), self.cfg.schedule_d)[0].float()[:, None, None] * z

    def latents_to_tokens(self, z):
        return torch.cdist(z, self.codes.expand(len(z), -1, -1)).argmin(-1)


def stand_in_view(rows=8):
    model = StandIn()
    tokens = torch.randint(len(model.codes), (rows, model.cfg.seq_len), generator=torch.Generator().manual_seed(1))
    return SimpleNamespace(model=model, cfg=model.cfg, z=model.codes[tokens], tokens=tokens,
                           lengths=torch.full((rows,), model.cfg.seq_len), text=lambda ids, length=None: str(ids.tolist()))


def test_recon_accuracy_falls_with_the_noise_from_exact_at_zero():
    view = stand_in_view()
    rows = diagnostics.reconstruction_vs_noise(view, ts=np.linspace(view.cfg.t_min, 1, 9),
                                               sigmas=[0, 0.5, 1, 2, 4, 8], seed=0)
    for kind in ("diffusion", "decoder"):
        acc = rows.loc[rows["kind"] == kind, "token_acc"].to_numpy()
        assert acc[0] == 1.0 and (np.diff(acc) <= 0).all() and acc[-1] < acc[0]
    assert (rows["tokens"] == view.tokens.numel()).all()


def test_denoising_a_lightly_noised_latent_returns_its_tokens():
    view = stand_in_view(rows=1)
    rows = diagnostics.denoising_trajectory(view, 8, seed=0, n=2, start=0, t_start=0.05)
    assert rows["t"].iloc[0] == pytest.approx(0.05) and rows["tokens_changed"].iloc[-1] == 0
    assert rows["text"].iloc[-1] == str(view.tokens[0].tolist())  # the final estimate decodes to the start's tokens


def test_latents_that_are_one_vector_hold_all_their_energy_in_the_mean():
    z = torch.randn(16).expand(4, 8, 16)
    geometry = diagnostics.latent_geometry(z)
    assert geometry["mean_share"] == pytest.approx(1.0) and geometry["var_per_dim"] == pytest.approx(0.0, abs=1e-12)


def test_isotropic_latents_use_every_dimension_and_a_line_uses_one():
    g = torch.Generator().manual_seed(0)
    iso = diagnostics.latent_geometry(torch.randn(200, 50, 16, generator=g))
    assert iso["mean_share"] < 0.01 and iso["var_per_dim"] == pytest.approx(1.0, abs=0.02)
    assert iso["participation_ratio"] == pytest.approx(16, rel=0.02)
    line = diagnostics.latent_geometry(torch.randn(200, 50, 1, generator=g) * torch.randn(16, generator=g) + 3.0)
    assert line["participation_ratio"] == pytest.approx(1.0) and line["mean_share"] > 0.5


def test_the_mask_leaves_padding_positions_out_of_the_geometry():
    z = torch.randn(2, 6, 4, generator=torch.Generator().manual_seed(0))
    z[:, 3:] = 100.0  # padding
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[:, :3] = True
    assert diagnostics.latent_geometry(z, mask) == diagnostics.latent_geometry(z[:, :3])


def test_the_wiener_denoiser_reaches_its_textbook_error_on_gaussian_latents():
    g = torch.Generator().manual_seed(0)
    lam = torch.tensor([4.0, 1.0, 0.25, 0.01], dtype=torch.float64)
    z = torch.randn(400, 50, 4, generator=g, dtype=torch.float64) * lam.sqrt() + 1.0
    denoise = diagnostics.wiener_denoiser(z, d=3.0)
    t = torch.full((400,), 0.3)
    alpha, sigma = (float(v) for v in tangent_alpha_sigma(t[:1].double(), 3.0))
    x0 = denoise(alpha * z + sigma * torch.randn(z.shape, generator=g, dtype=torch.float64), t)
    per_dim_mse = (x0 - z).pow(2).flatten(0, 1).mean(0)
    assert torch.allclose(per_dim_mse, lam * sigma**2 / (alpha**2 * lam + sigma**2), rtol=0.05)


def test_the_latent_report_scores_the_denoiser_against_the_wiener_bound():
    view = stand_in_view(rows=16)  # its denoiser alpha_t z_t is near exact at t_min, worse than Wiener later
    report = diagnostics.latent_report(view, ts=(view.cfg.t_min, 0.3))
    assert list(report) == diagnostics.report_columns((view.cfg.t_min, 0.3))
    assert report["dit_acc_t0.001"] == report["decoder_acc"] == 1.0 and report["dit_r2_t0.001"] > 0.99
    assert report["wiener_r2_t0.3"] > report["dit_r2_t0.3"]
