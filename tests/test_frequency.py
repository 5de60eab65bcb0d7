"""Known-answer tests of the ideal and Gaussian radial filters (paper Fig. 16)."""

from __future__ import annotations

import math

import pytest
import torch

from vitviz_core.errors import VitvizError
from vitviz_core.evaluate import frequency as fq


def _cosine(f: int, n: int = 64) -> torch.Tensor:
    """0.5 + 0.5 cos(2 pi f x / n) along the width: one frequency at radius f. (1, 1, n, n)"""
    x = torch.arange(n, dtype=torch.float64)
    row = 0.5 + 0.5 * torch.cos(2 * math.pi * f * x / n)
    return row.expand(n, n)[None, None].clone()


def test_gaussian_low_pass_halves_the_amplitude_at_the_cut_off():
    x = _cosine(5)
    out = fq.low_pass(x, 5.0, window="gaussian")
    assert torch.allclose(out, 0.5 + 0.5 * (x - 0.5), atol=1e-5)  # amplitude x 1/2
    out = fq.low_pass(x, 10.0, window="gaussian")
    assert torch.allclose(out, 0.5 + 2**-0.25 * (x - 0.5), atol=1e-5)  # 2^-(5/10)^2


def test_gaussian_filters_keep_the_mean_and_complement_each_other():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 40, dtype=torch.float64)
    mean = x.mean(dim=(-2, -1), keepdim=True).expand_as(x)
    for c in (0.0, 1.0, 4.0, 16.0):
        low = fq.low_pass(x, c, window="gaussian")
        assert torch.allclose(low.mean(dim=(-2, -1)), x.mean(dim=(-2, -1)), atol=1e-5)
        assert torch.allclose(low + fq.high_pass(x, c, keep_dc=False, window="gaussian"), x, atol=1e-5)
    assert torch.allclose(fq.low_pass(x, 0.0, window="gaussian"), mean, atol=1e-5)
    assert torch.allclose(fq.low_pass(x, math.inf, window="gaussian"), x, atol=1e-5)


def test_gaussian_low_pass_does_not_ring_where_the_ideal_one_does():
    """A step edge: the ideal low-pass overshoots (Gibbs ringing), the Gaussian stays in range."""
    x = torch.zeros(1, 1, 64, 64, dtype=torch.float64)
    x[..., 16:48] = 1.0
    ideal = fq.low_pass(x, 8.0)
    gauss = fq.low_pass(x, 8.0, window="gaussian")
    assert ideal.max() > 1.05 and ideal.min() < -0.05
    assert gauss.max() <= 1 + 1e-6 and gauss.min() >= -1e-6


def test_ideal_is_the_default_and_bad_windows_fail():
    x = _cosine(5)
    assert torch.equal(fq.low_pass(x, 4.9), fq.low_pass(x, 4.9, window="ideal"))
    with pytest.raises(VitvizError):
        fq.low_pass(x, 4.0, window="hann")
    g = fq.frequency_gain(8, 8, 2.0, "high", "gaussian")
    assert g[0, 0] == 0 and g.shape == (8, 5)
