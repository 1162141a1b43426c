"""The reverse-process samplers and the argmax decoding that turns their latents into tokens."""
import pytest
import torch
from torch import nn

from ldlm.diffusion import tangent_alpha_sigma
from ldlm.models import adaptive_argmax
from ldlm.samplers import sample_ddim, sample_ddpm, time_grid

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
