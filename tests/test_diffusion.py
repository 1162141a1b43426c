import math

import numpy as np
import pytest
import torch

from ldlm.nets.diffusion import (AdaptiveTimeSampler, UniformTimeSampler, log_snr, monotone_fit, tangent_alpha_sigma,
                            warmup_gamma)

T = torch.linspace(0, 1, 1001, dtype=torch.float64)


@pytest.mark.parametrize("d", [1.0, 3.0, 9.0])
def test_variance_preserving(d):
    alpha, sigma = tangent_alpha_sigma(T, d)
    assert torch.allclose(alpha**2 + sigma**2, torch.ones_like(T), atol=1e-12)
    assert alpha[0] == 1 and alpha[-1] == 0


@pytest.mark.parametrize("d", [1.0, 3.0])
def test_snr_strictly_decreasing(d):
    snr = log_snr(T[1:-1], d)
    assert (snr[1:] < snr[:-1]).all()


def test_d1_is_cosine_schedule():
    alpha, _ = tangent_alpha_sigma(T, 1.0)
    assert torch.allclose(alpha, torch.cos(math.pi * T / 2), atol=1e-12)


def test_d3_values_from_paper_notes():
    alpha, _ = tangent_alpha_sigma(torch.tensor([0.05, 0.1, 0.5, 0.9], dtype=torch.float64), 3.0)
    assert torch.allclose(alpha, torch.tensor([0.973, 0.903, 0.316, 0.053], dtype=torch.float64), atol=1e-3)


def test_schedule_float32_input_is_computed_in_float64():
    a32, _ = tangent_alpha_sigma(torch.tensor([0.999], dtype=torch.float32), 3.0)
    a64, _ = tangent_alpha_sigma(torch.tensor([0.999], dtype=torch.float64), 3.0)
    assert a32.dtype == torch.float32 and abs(float(a32) - float(a64)) < 1e-7


def test_gamma_endpoints_and_shape():
    assert warmup_gamma(0, 1000, gamma_min=1e-3) == pytest.approx(1e-3)
    assert warmup_gamma(1000, 1000) == 1.0 and warmup_gamma(5000, 1000) == 1.0
    assert warmup_gamma(999, 1000) == pytest.approx(1.0, abs=1e-2)
    values = [warmup_gamma(s, 1000) for s in range(0, 1001, 10)]
    assert all(b >= a for a, b in zip(values, values[1:]))
    # paper.md's table with gamma_min = 0.001: s/S = 0.5 -> 0.054, 0.8 -> 0.568
    assert warmup_gamma(500, 1000) == pytest.approx(0.054, abs=1e-3)
    assert warmup_gamma(800, 1000) == pytest.approx(0.568, abs=1e-3)


def test_uniform_sampler_bounds():
    t = UniformTimeSampler(1e-3).sample(10_000, torch.Generator().manual_seed(0))
    assert t.min() >= 1e-3 and t.max() <= 1


def test_adaptive_sampler_bounds_and_monotone_inverse_cdf():
    sampler = AdaptiveTimeSampler(bins=50, ema=0.9, t_min=1e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):  # a loss that rises steeply around t = 0.3
        t = sampler.sample(256, g)
        sampler.update(t, torch.sigmoid((t - 0.3) * 30))
    t = sampler.sample(10_000, g)
    assert t.min() >= 1e-3 and t.max() <= 1
    inv = sampler.inverse_cdf(torch.linspace(0, 1, 2001, dtype=torch.float64))
    assert (inv[1:] >= inv[:-1]).all() and inv[0] == pytest.approx(1e-3) and inv[-1] == pytest.approx(1.0)
    # samples concentrate where the loss grows: most mass within 0.15 of t = 0.3
    assert ((t - 0.3).abs() < 0.15).float().mean() > 0.7


def test_adaptive_sampler_is_uniform_for_linear_loss_and_before_data():
    sampler = AdaptiveTimeSampler(bins=20, ema=0.5)
    t = sampler.sample(20_000, torch.Generator().manual_seed(1))
    assert abs(float((t < 0.5).float().mean()) - 0.5) < 0.02
    grid = torch.linspace(0.001, 1, 5000)
    for _ in range(5):
        sampler.update(grid, grid * 2.0)
    t = sampler.sample(20_000, torch.Generator().manual_seed(1))
    assert abs(float((t < 0.5).float().mean()) - 0.5) < 0.03


def test_adaptive_sampler_state_round_trip():
    a = AdaptiveTimeSampler(bins=10, ema=0.9)
    a.update(torch.rand(100), torch.rand(100))
    b = AdaptiveTimeSampler(bins=10, ema=0.9)
    b.load_state_dict(a.state_dict())
    u = torch.rand(50, dtype=torch.float64)
    assert torch.equal(a.inverse_cdf(u), b.inverse_cdf(u))


def test_monotone_fit_pools_violators_into_weighted_knots():
    x, y = np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 3.0, 2.0, 4.0])
    kx, ky = monotone_fit(x, y, np.ones(4))  # 3 > 2 pool to 2.5, centred between them
    assert np.allclose(kx, [0, 1.5, 3]) and np.allclose(ky, [1, 2.5, 4])
    kx, ky = monotone_fit(x, y, np.array([1.0, 1.0, 3.0, 1.0]))  # weighted: (3 + 3 * 2) / 4 at (1 + 3 * 2) / 4
    assert np.allclose(kx, [0, 1.75, 3]) and np.allclose(ky, [1, 2.25, 4])
    kx, ky = monotone_fit(x[:3], np.array([3.0, 2.0, 1.0]), np.ones(3))  # a decreasing run is one block
    assert np.allclose(kx, [1]) and np.allclose(ky, [2])


def test_adaptive_sampler_spreads_a_dip_over_its_pooled_bins():
    sampler = AdaptiveTimeSampler(bins=4, t_min=0.0, mix=0.0)
    sampler.load_state_dict({"loss": torch.tensor([1.0, 3.0, 2.0, 4.0]), "seen": torch.ones(4, dtype=torch.long)})
    # knots (0, 0), (0.125, 1), (0.5, 2.5), (0.875, 4), flat after: L at the edges 0, 1.5, 2.5, 3.5, 4
    assert torch.allclose(sampler.fitted_loss(), torch.tensor([0, 1.5, 2.5, 3.5, 4], dtype=torch.float64))
    # raw increments gave the dip's bin 2 nothing: [1, 2, 0, 2] / 5
    assert torch.allclose(sampler.probabilities(), torch.tensor([0.375, 0.25, 0.25, 0.125], dtype=torch.float64))
    mixed = AdaptiveTimeSampler(bins=4, t_min=0.0)
    mixed.load_state_dict(sampler.state_dict())
    assert torch.allclose(mixed.probabilities(), 0.9 * sampler.probabilities() + 0.1 / 4)


def test_adaptive_sampler_makes_a_known_loss_linear_in_u():
    curve = lambda t: 1 - torch.exp(-4 * (t - 1e-3))  # steep early, flat late; 0 at t_min as the sampler assumes
    sampler = AdaptiveTimeSampler(bins=100, ema=0.9, t_min=1e-3, mix=0.0)
    sampler.update(*(lambda t: (t, curve(t)))(torch.linspace(1e-3, 1, 100_000, dtype=torch.float64)))
    u = torch.linspace(0, 1, 1001, dtype=torch.float64)
    loss = curve(sampler.inverse_cdf(u))
    linear = u * loss[-1]
    assert (loss - linear).abs().max() < 1e-3 * loss[-1]
    uniform_t = curve(1e-3 + (1 - 1e-3) * u)  # what uniform t gives: far from linear
    assert (uniform_t - linear).abs().max() > 0.3


def test_adaptive_sampler_starves_no_bin_under_noisy_losses():
    """A short training run's worth of noisy per-sample losses (tiny preset: 100 bins, ema 0.95, batch 32): with
    raw clipped increments a bin whose first estimate fell below its neighbour's froze at p ~ 1e-5, never drawn
    again (about half the bins here); every bin must keep p >= 1 / (10 bins) and be drawn."""
    bins, g = 100, torch.Generator().manual_seed(0)
    sampler = AdaptiveTimeSampler(bins=bins, ema=0.95)
    curve = lambda t: 1 - torch.exp(-4 * t)
    for _ in range(300):
        t = sampler.sample(32, g).double()
        sampler.update(t, curve(t) * torch.exp(0.5 * torch.randn(32, generator=g, dtype=torch.float64) - 0.125))
    p = sampler.probabilities()
    assert p.min() >= 1 / (10 * bins) - 1e-12 and p.sum() == pytest.approx(1.0)
    assert sampler.seen.min() >= 1
    assert p[:10].sum() > 0.25  # still follows dL/dt: the true share of t < 0.1 is 0.31, uniform's 0.1
