"""The reverse-process samplers and the argmax decoding that turns their latents into tokens."""
import pytest
import torch
from torch import nn

from ldlm.nets.diffusion import tangent_alpha_sigma
from ldlm.nets.layers import adaptive_argmax
from ldlm.nets.samplers import sample_ddim, sample_ddpm, time_grid

D = 3.0


def exact_denoiser(x0: torch.Tensor):
    return lambda z, t, self_cond: x0.expand_as(z)


def test_ddim_with_the_exact_denoiser_stays_on_its_noise_path():
    # DDIM keeps eps_hat = (z_t - alpha_t x0) / sigma_t, so with x0_hat = x0: z_t = alpha_t x0 + sigma_t eps at every t
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 5, 3, generator=g), torch.randn(2, 5, 3, generator=g)
    ts = time_grid(20, 1e-3, 0.9)
    alpha, sigma = tangent_alpha_sigma(ts, D)
    seen = []
    out = sample_ddim(exact_denoiser(x0), float(alpha[0]) * x0 + float(sigma[0]) * eps, ts, D,
                      callback=lambda i, z, x0_hat: seen.append(z))
    for i, z in enumerate(seen):
        assert torch.allclose(z, float(alpha[i]) * x0 + float(sigma[i]) * eps, atol=1e-5)
    assert len(seen) == 20 and torch.equal(out, x0)


def test_ddpm_with_the_exact_denoiser_has_the_forward_marginals():
    # the posterior q(z_s | z_t, x0) of VDM eq. 33 keeps z_s ~ N(alpha_s x0, sigma_s^2) at every step
    x0 = torch.full((1, 20_000, 1), 0.7)
    ts = time_grid(10)
    alpha, sigma = tangent_alpha_sigma(ts, D)
    g = torch.Generator().manual_seed(1)
    seen = []
    sample_ddpm(exact_denoiser(x0), torch.randn(x0.shape, generator=g), ts, D, generator=g,
                callback=lambda i, z, x0_hat: seen.append(z))
    for i, z in enumerate(seen):
        standardized = (z - float(alpha[i]) * x0) / float(sigma[i])
        assert abs(standardized.mean()) < 0.03 and abs(standardized.std() - 1) < 0.03, i


@pytest.mark.parametrize("scale", [0.0, 1.0, 8.0])  # ties everywhere, flat and peaked distributions
def test_adaptive_argmax_is_the_argmax_of_the_full_log_probabilities(scale):
    torch.manual_seed(0)
    head = nn.AdaptiveLogSoftmaxWithLoss(16, 300, [20, 80], div_value=2.0)
    x = scale * torch.randn(4000, 16)
    with torch.no_grad():
        pruned = adaptive_argmax(head, x)
        assert torch.equal(pruned, head.log_prob(x).argmax(-1))
        assert torch.equal(pruned, head.predict(x))
        assert torch.equal(adaptive_argmax(head, x, chunk=7), pruned)  # row chunks change nothing
        tail = pruned >= head.shortlist_size
    if scale == 8.0:
        assert 0 < tail.float().mean() < 1  # both kinds of rows occur


# ----------------------------------------------------------------------------------------------
# the temperature of LDLM's token decoder


def small_ldlm(adaptive: bool = False):
    from ldlm.kinds.build import build_model
    from ldlm.config import make_config

    cfg = make_config("smoke", seq_len=12, corpus_vocab=adaptive, adaptive_head=adaptive)
    torch.manual_seed(0)
    model = build_model(cfg, 2100, lm_width=24).eval()  # 2100 classes: the adaptive head has a tail
    with torch.no_grad():
        for p in model.token_decoder.parameters():  # peaked, tie-free token distributions
            p.add_(torch.randn_like(p) * 0.3)
    return model


@pytest.mark.parametrize("adaptive", [False, True])
def test_temperature_zero_is_the_argmax_decoding(adaptive):
    """T = 0 is today's decoding bit for bit: the same ids as the default and as the head's argmax, and no
    noise drawn after the latents (the generator is where the latents left it)."""
    model = small_ldlm(adaptive)
    assert model.default_temperature == 0.0
    g_default, g_zero = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    ids = model.generate(3, 4, g_default)
    assert torch.equal(model.generate(3, 4, g_zero, temperature=0), ids)
    assert torch.equal(g_default.get_state(), g_zero.get_state())
    h_hat = torch.randn(3, 12, 24, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        features = model.token_decoder.features(h_hat)
        argmax = head_log_probs(model.token_decoder.head, features).argmax(-1)
    assert torch.equal(model.hidden_to_tokens(h_hat, 0.0), model.head_to_tokens(argmax))


def head_log_probs(head, features):
    from ldlm.nets.layers import head_logits

    return head_logits(head, features).float().log_softmax(-1)


@pytest.mark.parametrize("adaptive", [False, True])
@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_token_decoder_draws_from_the_tempered_head_distribution(adaptive, temperature):
    """At T > 0 a position's class is drawn from softmax(log p / T): p^(1/T), renormalised."""
    decoder = small_ldlm(adaptive).token_decoder
    features = torch.randn(1, decoder.in_proj.out_features, generator=torch.Generator().manual_seed(5)).expand(40_000, -1)
    with torch.no_grad():
        target = (head_log_probs(decoder.head, features[:1])[0].double() / temperature).softmax(-1)
        drawn = decoder.sample(features, temperature, torch.Generator().manual_seed(6))
    freq = torch.bincount(drawn, minlength=len(target)).double() / len(drawn)
    top = target.argsort(descending=True)[:5]  # the likely classes: the rest are too rare to count
    assert torch.allclose(freq[top], target[top], atol=0.01)


def test_a_tiny_temperature_draws_the_argmax_and_a_draw_is_reproducible():
    model = small_ldlm(adaptive=True)
    h_hat = torch.randn(4, 12, 24, generator=torch.Generator().manual_seed(7))
    draw = lambda t, seed: model.hidden_to_tokens(h_hat, t, torch.Generator().manual_seed(seed))
    assert torch.equal(draw(1e-4, 0), model.hidden_to_tokens(h_hat))
    assert torch.equal(draw(1.0, 1), draw(1.0, 1)) and not torch.equal(draw(1.0, 1), draw(1.0, 2))
