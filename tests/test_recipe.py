"""Each of the four recipe switches changes what it should, on a small synthetic model."""
import copy

import pytest
import torch

from ldlm.config import make_config
from ldlm.evaluation.diagnostics import latent_geometry
from ldlm.nets.diffusion import AdaptiveTimeSampler, UniformTimeSampler, encoder_gamma, tangent_alpha_sigma, warmup_gamma
from ldlm.text.frozen_lm import attention_mask
from ldlm.kinds.losses import ldlm_loss
from ldlm.kinds.ldlm import LDLM, count_parameters
from ldlm.nets.noise import SampleNoise
from ldlm.training.optim import update_ema
from ldlm.tools.params import main as params_main

LM_WIDTH, VOCAB = 24, 50


def small_model(**overrides):
    cfg = make_config("smoke", seq_len=12, **overrides)
    torch.manual_seed(0)
    return LDLM(cfg, VOCAB, lm_width=LM_WIDTH), cfg


def batch(seed=0, n=6, seq=12):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, VOCAB, (n, seq), generator=g)
    table = torch.randn(VOCAB, LM_WIDTH, generator=g)
    return table[tokens] + 0.1 * torch.randn(n, seq, LM_WIDTH, generator=g), tokens


def noise(n=6, step=0):
    return SampleNoise(seed=0, step=step, positions=range(n))


def encoder_grad(model, cfg, gamma, seed=0):
    model.zero_grad()
    h, tokens = batch()
    ldlm_loss(model, h, tokens, cfg, gamma, UniformTimeSampler(cfg.t_min), noise()).loss.backward()
    return torch.cat([p.grad.flatten() for p in model.encoder.parameters() if p.grad is not None])


def test_warmup_scales_the_encoder_gradient_of_l_diff_by_gamma_min():
    # only L_diff, no self-conditioning, so the encoder gradient is linear in gamma
    model, cfg = small_model(w_h=0.0, w_tok=0.0, self_cond_prob=0.0, gamma_min=1e-3)
    full = encoder_grad(model, cfg, gamma=1.0)
    warm = encoder_grad(model, cfg, gamma=cfg.gamma_min)
    assert full.abs().sum() > 0
    assert torch.allclose(warm, cfg.gamma_min * full, rtol=1e-4, atol=1e-9)


def test_warmup_leaves_the_dit_gradient_unscaled():
    model, cfg = small_model(w_h=0.0, w_tok=0.0, self_cond_prob=0.0)
    grads = []
    for gamma in (1.0, 1e-3):
        model.zero_grad()
        h, tokens = batch()
        ldlm_loss(model, h, tokens, cfg, gamma, UniformTimeSampler(), noise()).loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.dit.parameters() if p.grad is not None]))
    # the DiT sees the same inputs and targets: its gradient does not depend on gamma
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("decoder_loss, reaches", [("mse", False), ("ce", True)])
def test_token_loss_reaches_the_encoder_only_with_ce(decoder_loss, reaches):
    model, cfg = small_model(decoder_loss=decoder_loss, w_diff=0.0, w_h=0.0, decoder_noise=0.0)
    g = encoder_grad(model, cfg, gamma=1.0)
    assert (g.abs().sum() > 0) == reaches
    # the token decoder itself always learns from L_w
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.token_decoder.parameters())


def test_mse_decoder_loss_trains_encoder_through_l_h():
    model, cfg = small_model(decoder_loss="mse", w_diff=0.0, w_tok=0.0)
    assert encoder_grad(model, cfg, gamma=1.0).abs().sum() > 0


def capture_decoder_input(model, cfg, train: bool):
    seen = {}
    original = model.decode
    model.decode = lambda z: (seen.setdefault("z", z), original(z))[1]
    enc = model.encode
    model.encode = lambda h: (seen.setdefault("z0", enc(h)), seen["z0"])[1]
    model.train(train)
    h, tokens = batch()
    ldlm_loss(model, h, tokens, cfg, 1.0, UniformTimeSampler(), noise())
    return seen["z"] - seen["z0"]


def test_decoder_noise_only_in_training_with_sigma_dec():
    model, cfg = small_model(decoder_noise=2.0)
    noise = capture_decoder_input(model, cfg, train=True)
    assert noise.std().item() == pytest.approx(2.0, rel=0.1)
    assert capture_decoder_input(model, cfg, train=False).abs().max() == 0
    model, cfg = small_model(decoder_noise=0.0)
    assert capture_decoder_input(model, cfg, train=True).abs().max() == 0


def test_time_sampling_switch():
    assert isinstance(small_model()[0].time_sampler, AdaptiveTimeSampler)
    assert isinstance(small_model(time_sampling="uniform")[0].time_sampler, UniformTimeSampler)


def test_adaptive_time_sampler_receives_per_sample_losses():
    model, cfg = small_model()
    sampler = AdaptiveTimeSampler(cfg.time_bins, cfg.time_ema, cfg.t_min)
    h, tokens = batch()
    out = ldlm_loss(model, h, tokens, cfg, 1.0, sampler, noise())
    assert out.t.shape == out.per_sample.shape == (len(h),)
    sampler.update(out.t, out.per_sample)
    assert sampler.seen.sum() == len(h)


def test_noise_of_a_sample_does_not_depend_on_the_split():
    whole = SampleNoise(3, 7, range(8))
    halves = [SampleNoise(3, 7, range(0, 4)), SampleNoise(3, 7, range(4, 8))]
    for draw in (lambda n: n.uniform(), lambda n: n.normal(5, 2), lambda n: n.stratified(8)):
        assert torch.equal(draw(whole), torch.cat([draw(n) for n in halves]))
    assert whole.coin(0.5) == halves[0].coin(0.5) == halves[1].coin(0.5)
    assert not torch.equal(SampleNoise(3, 8, range(8)).normal(5), SampleNoise(3, 7, range(8)).normal(5))


def test_per_sample_loss_does_not_depend_on_the_batch_split():
    model, cfg = small_model()
    model.train()
    h, tokens = batch(n=6)
    whole = ldlm_loss(model, h, tokens, cfg, 0.5, UniformTimeSampler(), noise(6, step=3))
    parts = [ldlm_loss(model, h[s], tokens[s], cfg, 0.5, UniformTimeSampler(), SampleNoise(0, 3, range(6)[s]))
             for s in (slice(0, 2), slice(2, 6))]
    assert torch.equal(whole.t, torch.cat([p.t for p in parts]))
    assert torch.allclose(whole.per_sample, torch.cat([p.per_sample for p in parts]), atol=1e-6)


def test_latents_have_fixed_scale():
    model, cfg = small_model()
    h, _ = batch()
    z = model.encode(model.standardize(h))
    assert torch.allclose(z.pow(2).mean(-1), torch.ones(z.shape[:2]), atol=1e-5)


def test_overfits_one_batch():
    model, cfg = small_model(decoder_noise=0.1, self_cond_prob=0.5)
    h, tokens = batch(n=8)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    sampler = UniformTimeSampler()
    first = None
    for step in range(150):
        out = ldlm_loss(model, h, tokens, cfg, 1.0, sampler, noise(8, step))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        first = first if first is not None else out.parts
    model.eval()
    pred = model.latents_to_tokens(model.encode(model.standardize(h)))
    assert (pred == tokens).float().mean() > 0.95
    assert out.parts["loss"] < 0.3 * first["loss"]
    assert out.parts["loss_h"] < 0.5 * first["loss_h"]


def test_parameter_count_without_allocation_matches_real_model():
    cfg = make_config("smoke")
    counts = count_parameters(cfg, 384, 1000)
    real = LDLM(cfg, 1000, lm_width=384)
    assert counts["total"] == sum(p.numel() for p in real.parameters())


def test_paper_preset_sizes_near_reported(capsys):
    counts = count_parameters(make_config("owt"), 768, 50257)
    # paper.md §2.1 [S]: encoder ~50M, DiT ~132M, decoder ~50M, token decoder ~66M
    for name, paper in {"encoder": 50e6, "dit": 132e6, "decoder": 50e6, "token_decoder": 66e6}.items():
        assert abs(counts[name] - paper) / paper < 0.15, name
    assert params_main(["--preset", "owt"]) == 0
    assert "dit" in capsys.readouterr().out


def test_padding_positions_are_masked_out_of_l_h_and_l_w():
    # pack_mode=pad: L_h and L_w are means over the first `lengths` positions of each row, as the baselines'
    model, cfg = small_model()
    model.eval()  # no decoder noise: h_hat below is the loss's own
    h, tokens = batch()
    lengths = torch.tensor([12, 7, 5, 12, 9, 3])
    valid = attention_mask(lengths, tokens.shape[1]).bool()
    out = ldlm_loss(model, h, tokens, cfg, 1.0, UniformTimeSampler(), noise(), lengths)
    with torch.no_grad():
        h_std = model.standardize(h)
        err = (model.decode(model.encode(h_std)) - h_std).pow(2).mean(-1)
    assert out.parts["loss_h"] == pytest.approx(err[valid].mean().item(), rel=1e-5)
    assert out.parts["loss_h"] != pytest.approx(err.mean().item(), rel=1e-3)  # the unmasked mean differs
    # padding tokens are no targets: other ids there leave L_w (and the total) unchanged
    other = torch.where(valid, tokens, (tokens + 7) % VOCAB)
    out2 = ldlm_loss(model, h, other, cfg, 1.0, UniformTimeSampler(), noise(), lengths)
    assert out2.parts["loss_tok"] == pytest.approx(out.parts["loss_tok"], rel=1e-6)
    assert out2.loss.item() == pytest.approx(out.loss.item(), rel=1e-6)
    unmasked = ldlm_loss(model, h, other, cfg, 1.0, UniformTimeSampler(), noise())
    assert unmasked.parts["loss_tok"] != pytest.approx(out.parts["loss_tok"], rel=1e-3)


# --- the switches against latent collapse (issue: a diffusion model that denoises) -------------------


def test_the_v_parameterised_denoiser_is_the_identity_as_sigma_goes_to_zero_at_init():
    model, cfg = small_model(dit_param="v")
    z = torch.randn(3, 12, cfg.latent_dim)
    x0 = model.denoise(z, torch.full((3,), 1e-6))
    assert torch.allclose(x0, z, atol=1e-5)
    plain, _ = small_model(dit_param="x0")  # the x0-network starts at 0 (zero-initialised output): no copy
    assert plain.denoise(z, torch.full((3,), 1e-6)).abs().max() == 0


def test_the_v_parameterisation_predicts_x0_as_alpha_z_plus_sigma_f():
    model, cfg = small_model(dit_param="v")
    torch.nn.init.normal_(model.dit.out.weight)  # a non-zero network output F
    z, t = torch.randn(2, 12, cfg.latent_dim), torch.tensor([0.3, 0.7])
    alpha, sigma = (s[:, None, None] for s in tangent_alpha_sigma(t, cfg.schedule_d))
    assert torch.allclose(model.denoise(z, t), alpha * z + sigma * model.dit(z, t), atol=1e-6)


@pytest.mark.parametrize("kind", ["standard", "whiten"])
def test_batch_latent_norms_centre_and_scale_the_training_batch(kind):
    model, cfg = small_model(latent_norm=kind)
    h, _ = batch(n=40)
    flat = model.encode(model.standardize(h)).flatten(0, 1).double()
    cov = torch.cov(flat.T)
    assert flat.mean(0).abs().max() < 1e-4
    assert torch.allclose(torch.diagonal(cov), torch.ones(cfg.latent_dim, dtype=torch.float64), atol=0.01)
    off_diagonal = (cov - torch.diag(torch.diagonal(cov))).abs().max()
    assert (off_diagonal < 1e-3) == (kind == "whiten")  # only whitening decorrelates the dimensions


def test_whitening_leaves_the_encoder_no_direction_to_collapse_into():
    model, cfg = small_model(latent_norm="whiten")
    h, _ = batch(n=40)
    rank_one = torch.randn(cfg.latent_dim)[None, None] * torch.randn(40, 12, 1) + 0.01 * torch.randn(40, 12, cfg.latent_dim)
    model.encoder.forward = lambda h: rank_one  # an encoder that has folded everything onto one line
    geometry = latent_geometry(model.encode(h))
    assert geometry["mean_share"] < 0.01 and geometry["participation_ratio"] > 0.8 * cfg.latent_dim


def test_evaluation_uses_the_running_statistics_of_training():
    model, cfg = small_model(latent_norm="whiten")
    h, _ = batch(n=40)
    model.latent_norm.momentum = 0.1  # (0.01 in training): the running statistics converge to the batch's
    with torch.no_grad():
        for _ in range(300):
            train_z = model.encode(model.standardize(h))
    model.eval()
    assert torch.allclose(model.encode(model.standardize(h)), train_z, atol=1e-3)


def test_gamma_max_caps_the_encoder_warmup():
    assert warmup_gamma(0, 100, 1e-3, gamma_max=0.1) == pytest.approx(1e-3)
    ramp = [warmup_gamma(s, 100, 1e-3, gamma_max=0.1) for s in range(0, 201, 10)]
    assert all(b >= a for a, b in zip(ramp, ramp[1:])) and ramp[-1] == 0.1 and max(ramp) == 0.1
    _, cfg = small_model(encoder_warmup=False, gamma_max=0.1)
    assert encoder_gamma(cfg, 0) == 1.0  # warmup off: gamma = 1 throughout, whatever the cap


def test_the_ema_follows_the_running_statistics_and_keeps_constant_buffers_exactly():
    model, cfg = small_model(latent_norm="whiten")
    model.set_h_stats(torch.randn(LM_WIDTH), torch.rand(LM_WIDTH) + 0.5)
    ema = copy.deepcopy(model)
    model.latent_norm.running_mean.fill_(1.0)
    update_ema(ema, model, 0.9, step=10**6)
    assert torch.allclose(ema.latent_norm.running_mean, torch.full((cfg.latent_dim,), 0.1))
    assert torch.equal(ema.h_mean, model.h_mean) and torch.equal(ema.h_std, model.h_std)
