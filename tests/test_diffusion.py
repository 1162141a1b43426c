import math

import pytest
import torch

from ldlm.diffusion import AdaptiveTimeSampler, UniformTimeSampler, log_snr, tangent_alpha_sigma, warmup_gamma

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
