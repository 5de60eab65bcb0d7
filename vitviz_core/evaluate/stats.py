"""Accuracies with confidence intervals.

Small evaluation sets (1300 images) need error bars. Every accuracy in
:mod:`vitviz_core.evaluate` is an :class:`Estimate`: the point value plus a 95 % interval,
by default a percentile bootstrap over images with a fixed seed (so the same data give the
same interval), or a Wilson score interval for a single proportion.

Per-image results are kept as boolean "correct" vectors, so paired statistics (a ratio of
two accuracies on the same images, a difference between two conditions) are bootstrapped by
resampling the same image indices for every vector.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Callable, Sequence

import numpy as np
import torch

from vitviz_core.errors import VitvizError

__all__ = [
    "Estimate",
    "bootstrap_ci",
    "wilson_ci",
    "accuracy_with_ci",
    "ratio_with_ci",
    "topk_correct",
]

ArrayLike = "np.ndarray | torch.Tensor | Sequence[float]"


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a confidence interval (all as fractions, not percent)."""

    value: float
    low: float
    high: float
    n: int
    method: str  # "bootstrap" | "wilson"
    level: float = 0.95

    def to_dict(self) -> dict:
        return asdict(self)

    def percent(self, digits: int = 2) -> str:
        """``"82.62 [80.54, 84.62]"``: value and interval in percent."""
        return f"{100 * self.value:.{digits}f} [{100 * self.low:.{digits}f}, {100 * self.high:.{digits}f}]"

    def __str__(self) -> str:
        return self.percent()


def _as_numpy(a: "ArrayLike") -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def _mean_last(*arrays: np.ndarray) -> np.ndarray:
    return arrays[0].mean(axis=-1)


def bootstrap_ci(
    *arrays: "ArrayLike",
    statistic: Callable[..., np.ndarray] | None = None,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """Percentile bootstrap over items (images) for any statistic of paired per-item arrays.

    Args:
        arrays: one or more per-item arrays of the same length N (e.g. 0/1 correctness).
            They are resampled with the same indices (paired bootstrap).
        statistic: vectorised function of the resampled arrays, each of shape
            ``(n_boot, N)`` (or ``(N,)`` for the point estimate), returning the statistic
            along the last axis. Default: the mean of the first array.
        n_boot: number of bootstrap resamples.
        level: confidence level of the two-sided percentile interval.
        seed: seed of the resampling generator (same inputs -> same interval).
    """
    if not arrays:
        raise VitvizError("bootstrap_ci needs at least one per-item array")
    data = [_as_numpy(a) for a in arrays]
    n = data[0].shape[-1]
    if n == 0:
        raise VitvizError("bootstrap_ci got an empty array: evaluate on at least one image")
    if any(d.shape != data[0].shape or d.ndim != 1 for d in data):
        raise VitvizError("bootstrap_ci: all arrays must be 1-D and of the same length (paired items)")
    stat = statistic or _mean_last
    value = float(stat(*data))
    rng = np.random.default_rng(seed)
    # Resample in chunks to bound memory at ~n_chunk * N indices.
    chunk = max(1, min(n_boot, 4_000_000 // max(n, 1)))
    boots: list[np.ndarray] = []
    done = 0
    while done < n_boot:
        m = min(chunk, n_boot - done)
        idx = rng.integers(0, n, size=(m, n))  # (m, N)
        boots.append(np.asarray(stat(*(d[idx] for d in data)), dtype=np.float64).reshape(m))
        done += m
    b = np.concatenate(boots)
    b = b[np.isfinite(b)]
    alpha = 1.0 - level
    if b.size == 0:
        lo = hi = float("nan")
    else:
        lo, hi = (float(v) for v in np.quantile(b, [alpha / 2, 1 - alpha / 2]))
    return Estimate(value=value, low=lo, high=hi, n=int(n), method="bootstrap", level=level)


def wilson_ci(successes: int, n: int, level: float = 0.95) -> Estimate:
    """Wilson score interval for a single proportion ``successes / n``."""
    if n <= 0:
        raise VitvizError("wilson_ci needs n >= 1 trials")
    if not 0 <= successes <= n:
        raise VitvizError(f"wilson_ci: successes={successes} must lie in [0, n={n}]")
    z = NormalDist().inv_cdf(1 - (1 - level) / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return Estimate(value=p, low=low, high=high, n=int(n), method="wilson", level=level)


def accuracy_with_ci(
    correct: "ArrayLike",
    method: str = "bootstrap",
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """Accuracy of a per-image 0/1 vector with a 95 % interval ("bootstrap" or "wilson")."""
    c = _as_numpy(correct).reshape(-1)
    if method == "bootstrap":
        return bootstrap_ci(c, n_boot=n_boot, level=level, seed=seed)
    if method == "wilson":
        return wilson_ci(int(round(c.sum())), int(c.size), level=level)
    raise VitvizError(f"unknown CI method {method!r}: use 'bootstrap' or 'wilson'")


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    d = den.sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(d > 0, num.sum(axis=-1) / np.where(d > 0, d, 1), np.nan)


def ratio_with_ci(
    numerator: "ArrayLike",
    denominator: "ArrayLike",
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """``mean(numerator) / mean(denominator)`` on paired per-image vectors, with a paired
    bootstrap interval (e.g. foreground-only top-5 normalised by full-image top-5)."""
    return bootstrap_ci(numerator, denominator, statistic=_ratio, n_boot=n_boot, level=level, seed=seed)


def topk_correct(
    logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)
) -> dict[int, torch.Tensor]:
    """Per-image top-k correctness.

    Args:
        logits: ``(B, K)`` or ``(B, N, K)`` (per-token logits).
        labels: ``(B,)`` integer class indices.
    Returns:
        ``{k: bool tensor (B,) or (B, N)}``.
    """
    kmax = min(max(ks), logits.shape[-1])
    top = logits.topk(kmax, dim=-1).indices  # (..., kmax)
    lab = labels.to(top.device).view(-1, *([1] * (logits.dim() - 1)))  # (B, 1) or (B, 1, 1)
    hit = top == lab  # (..., kmax)
    return {k: hit[..., : min(k, kmax)].any(dim=-1) for k in ks}
