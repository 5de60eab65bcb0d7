"""Augmentations of the feature-visualization ensemble, each drawing from an explicit generator.

Every step the optimizer expands each optimized image into ``n`` augmented copies (the
*ensemble*) and maximizes the objective averaged over them. Three augmentations, from
Ghiasi, Kazemi et al. (2022), Sec. 3 / Appendix B, each with the paper's and the released
code's variant:

- :class:`Jitter`: circular shift (``torch.roll``) by ``(dy, dx)`` drawn uniformly from
  ``[-j, j]``; one shift per copy (paper) or one per image's ensemble (released).
- :class:`ColorShift`: per copy and channel ``mu ~ U(-1, 1)``, ``sigma = exp(U(-1, 1))``;
  ``sigma * x + mu`` (paper) or ``(x - mu) / sigma`` (released).
- :class:`GaussianNoise`: ``N(0, s^2)`` per pixel (paper) or one offset per copy and channel,
  shape ``B x 3 x 1 x 1`` (released); ``s`` decays from 0.5 to 0 over the run
  (:func:`noise_std_at`).

Each augmentation separates drawing (``sample``: all randomness, from the generator passed
in) from applying (``apply``: deterministic, differentiable). The optimizer draws the
parameters of each feature's copies from generators seeded by a counter
(:class:`CounterStreams`): the seed of feature ``f``'s draws at step ``t`` is a hash of
``(seed, f, t)``. No generator carries state from one step to the next, so optimizing K
features in one batch, alone, or in any chunking draws exactly the same numbers, and a chunk
can be re-run (or a probe step taken) without disturbing any stream.

Per-feature draws stay per feature (one small tensor each, concatenated): transcendental
CPU kernels (``exp``, ``log``, ``cos``) give results that depend on where an element falls
in the tensor (vector body vs scalar tail), so a batch-wide ``exp`` would break "one feature
alone == inside a batch" bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vitviz_core.recipes import Recipe

__all__ = [
    "Jitter",
    "ColorShift",
    "GaussianNoise",
    "noise_std_at",
    "FeatureStreams",
    "CounterStreams",
    "counter_seed",
    "stream_seeds",
    "RandomAffine",
    "EnsembleAugment",
]


def noise_std_at(step: int, steps: int, std: float = 0.5, schedule: str = "linear") -> float:
    """Standard deviation of the Gaussian noise at ``step`` (0-based) of a ``steps``-step run.

    - ``"linear"`` (paper): ``std * (1 - step / (steps - 1))``: ``std`` at the first step, 0 at
      the last.
    - ``"released"``: the released ``GaussianNoise`` module's counter, ``T = steps - 1``
      (``max_iter=400`` for the 401-step loop): ``std * ((T - 2 - step) mod T) / T``. It starts
      at ``0.4975``, reaches 0 at step 398, then wraps to ``0.49875`` for the last two steps.
    """
    if schedule == "linear":
        if steps <= 1:
            return float(std)
        return float(std) * max(0.0, 1.0 - step / (steps - 1))
    if schedule == "released":
        period = max(steps - 1, 1)
        return float(std) * ((period - 2 - step) % period) / period
    raise ValueError(f"unknown noise schedule {schedule!r}")


class Jitter:
    """Circular shift of each copy by ``(dy, dx)``, both uniform integers in ``[-max_shift, max_shift]``.

    ``per_copy=True`` (paper) draws one shift per copy; ``False`` (released) one per image,
    shared by its ``n_copies`` consecutive copies. Offsets are drawn on the CPU from
    ``generator`` (which must be a CPU generator), so no device synchronisation is needed.
    """

    def __init__(self, max_shift: int = 32, per_copy: bool = True) -> None:
        self.max_shift = int(max_shift)
        self.per_copy = bool(per_copy)

    def sample(self, n_images: int, n_copies: int, generator: torch.Generator) -> Tensor:
        """Offsets ``(n_images * n_copies, 2)`` int64 on the CPU, columns ``(dy, dx)``."""
        j = self.max_shift
        rows = n_images * n_copies if self.per_copy else n_images
        offsets = torch.randint(-j, j + 1, (rows, 2), generator=generator)  # (rows, 2)
        if not self.per_copy:
            offsets = offsets.repeat_interleave(n_copies, dim=0)  # (n_images * n_copies, 2)
        return offsets

    @staticmethod
    def apply(x: Tensor, offsets: Tensor) -> Tensor:
        """``torch.roll`` of sample ``b`` of ``x`` (B, C, H, W) by ``offsets[b]`` = (dy, dx)."""
        shifts = offsets.tolist()
        if len(shifts) != x.shape[0]:
            raise ValueError(f"{len(shifts)} offsets for a batch of {x.shape[0]}")
        if len({tuple(s) for s in shifts}) > 2:
            # one gather for the whole batch; its backward is one scatter-add, where per-run
            # rolls cost a zero-filled batch-sized gradient per slice (3x slower on the CPU)
            return Jitter._apply_gather(x, offsets)
        out: list[Tensor] = []
        start = 0
        for b in range(1, len(shifts) + 1):  # roll runs of equal offsets in one call
            if b == len(shifts) or shifts[b] != shifts[start]:
                dy, dx = shifts[start]
                chunk = x[start:b]
                out.append(torch.roll(chunk, shifts=(dy, dx), dims=(2, 3)) if (dy or dx) else chunk)
                start = b
        return out[0] if len(out) == 1 else torch.cat(out, dim=0)

    @staticmethod
    def _apply_gather(x: Tensor, offsets: Tensor) -> Tensor:
        """The same rolls as one gather over the flattened pixels (a few kernels, any batch)."""
        b, c, h, w = x.shape
        if x.is_cuda and offsets.device.type == "cpu":
            offsets = offsets.pin_memory()  # an asynchronous copy: no wait for the device queue
        off = offsets.to(x.device, non_blocking=True)  # (B, 2)
        rows = (torch.arange(h, device=x.device).view(1, h) - off[:, :1]) % h  # (B, H)
        cols = (torch.arange(w, device=x.device).view(1, w) - off[:, 1:]) % w  # (B, W)
        flat = (rows[:, :, None] * w + cols[:, None, :]).view(b, 1, h * w)  # (B, 1, H*W)
        out = x.reshape(b, c, h * w).gather(2, flat.expand(b, c, h * w))  # (B, C, H*W)
        return out.view(b, c, h, w)

    def __call__(self, x: Tensor, generator: torch.Generator, n_copies: int = 1) -> Tensor:
        """Sample and apply: ``x`` holds ``x.shape[0] // n_copies`` images' consecutive copies."""
        return self.apply(x, self.sample(x.shape[0] // n_copies, n_copies, generator))


class ColorShift:
    """Per copy and channel ``mu ~ U(-mu_range, mu_range)``, ``sigma = exp(U(-s, s))``.

    ``mode="affine"`` (paper): ``sigma * x + mu``; ``"standardize"`` (released):
    ``(x - mu) / sigma``. ``mu`` is drawn before ``sigma``.
    """

    def __init__(self, mu_range: float = 1.0, log_sigma_range: float = 1.0, mode: str = "affine") -> None:
        if mode not in ("affine", "standardize"):
            raise ValueError(f"unknown color shift mode {mode!r}")
        self.mu_range = float(mu_range)
        self.log_sigma_range = float(log_sigma_range)
        self.mode = mode

    def sample(
        self, n: int, generator: torch.Generator, device: torch.device | str | None = None, channels: int = 3
    ) -> tuple[Tensor, Tensor]:
        """``(mu, sigma)``, each ``(n, channels, 1, 1)`` float32 on ``device``."""
        device = generator.device if device is None else device
        mu = (torch.rand(n, channels, 1, 1, generator=generator, device=device) * 2 - 1) * self.mu_range
        log_sigma = torch.rand(n, channels, 1, 1, generator=generator, device=device) * 2 - 1
        sigma = (log_sigma * self.log_sigma_range).exp()
        return mu, sigma  # (n, C, 1, 1) each

    def apply(self, x: Tensor, params: tuple[Tensor, Tensor]) -> Tensor:
        mu, sigma = params
        if self.mode == "affine":
            return x * sigma + mu
        return (x - mu) / sigma

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        return self.apply(x, self.sample(x.shape[0], generator, x.device, x.shape[1]))


class GaussianNoise:
    """Additive ``N(0, s^2)`` noise: per pixel (``mode="pixel"``, paper) or one value per copy
    and channel (``mode="channel"``, released, shape ``(B, C, 1, 1)``)."""

    def __init__(self, std: float = 0.5, mode: str = "pixel", schedule: str = "linear") -> None:
        if mode not in ("pixel", "channel"):
            raise ValueError(f"unknown noise mode {mode!r}")
        noise_std_at(0, 2, std, schedule)  # validates the schedule name
        self.std = float(std)
        self.mode = mode
        self.schedule = schedule

    def std_at(self, step: int, steps: int) -> float:
        """Noise standard deviation at ``step`` of ``steps`` (see :func:`noise_std_at`)."""
        return noise_std_at(step, steps, self.std, self.schedule)

    def sample(
        self,
        n: int,
        shape: Sequence[int],
        std: float,
        generator: torch.Generator,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Noise for ``n`` copies of images of ``shape`` = (C, H, W), scaled by ``std``."""
        device = generator.device if device is None else device
        c, h, w = shape
        size = (n, c, h, w) if self.mode == "pixel" else (n, c, 1, 1)
        return torch.randn(size, generator=generator, device=device) * std

    @staticmethod
    def apply(x: Tensor, noise: Tensor) -> Tensor:
        return x + noise

    def __call__(self, x: Tensor, generator: torch.Generator, step: int = 0, steps: int = 1) -> Tensor:
        return self.apply(
            x, self.sample(x.shape[0], x.shape[1:], self.std_at(step, steps), generator, x.device)
        )


def stream_seeds(seed: int, feature: int, mode: str = "mixed") -> tuple[int, int]:
    """``(host_seed, device_seed)`` of one feature's random streams.

    ``"mixed"``: both from ``numpy.random.SeedSequence([seed, feature])`` (well separated for
    any pair). ``"feature"`` (released: "seed = feature index"): the device stream is seeded
    with ``seed + feature``; the host stream (jitter offsets) with that value xor a constant,
    so the two streams are not copies of each other.
    """
    if mode == "feature":
        base = int(seed) + int(feature)
        return base ^ 0x5EED_0000_0000, base
    if mode != "mixed":
        raise ValueError(f"unknown seed mode {mode!r}")
    state = np.random.SeedSequence([int(seed) & 0xFFFF_FFFF_FFFF_FFFF, int(feature)]).generate_state(
        4, np.uint32
    )
    host = (int(state[0]) << 31) ^ int(state[1])
    dev = (int(state[2]) << 31) ^ int(state[3])
    return host, dev


@dataclass
class FeatureStreams:
    """The two generators of one feature: ``host`` (CPU: jitter offsets) and ``device``
    (initial image, colour shifts, noise)."""

    host: torch.Generator
    device: torch.Generator

    @classmethod
    def create(
        cls, seed: int, feature: int, device: torch.device | str = "cpu", mode: str = "mixed"
    ) -> "FeatureStreams":
        host_seed, dev_seed = stream_seeds(seed, feature, mode)
        host = torch.Generator(device="cpu")
        host.manual_seed(host_seed)
        dev = torch.Generator(device=torch.device(device))
        dev.manual_seed(dev_seed)
        return cls(host=host, device=dev)


_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    """The splitmix64 finaliser: a bijective 64-bit mix (Steele et al. 2014)."""
    z = (x + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


#: the ``step`` of the initial image's draws (before step 0)
INIT_STEP = -1


def counter_seed(base: int, step: int, stream: int = 0) -> int:
    """A 63-bit generator seed for ``(base, step, stream)``: ``base`` is one feature's seed
    (:func:`stream_seeds`), ``step`` the optimizer step (:data:`INIT_STEP` for the initial
    image), ``stream`` 0 = host, 1 = device. Pure: no state, any order."""
    counter = ((int(step) + 1) << 1) | int(stream)
    return _splitmix64((int(base) & _MASK64) ^ _splitmix64(counter)) >> 1


class CounterStreams:
    """Counter-based random streams of the K features of one run, keyed by (seed, feature, step).

    ``host(i, step)`` / ``device(i, step)`` return a generator (CPU: jitter offsets; the run's
    device: initial image, colour, noise, affine) freshly seeded with
    :func:`counter_seed` of feature ``i``'s base seed. Seeding a generator is a host-side
    operation (no device synchronisation); two generator objects are reused for every draw.
    The numbers feature ``f`` gets at step ``t`` depend only on ``(seed, f, t)``: not on the
    other features of the batch, the chunking, or the steps run before.
    """

    def __init__(
        self, seed: int, features: Sequence[int], device: torch.device | str = "cpu", mode: str = "mixed"
    ) -> None:
        self.features = [int(f) for f in features]
        self.seed = int(seed)
        self.keys = [stream_seeds(seed, f, mode) for f in self.features]  # (host base, device base)
        self.on = torch.device(device)
        self._host = torch.Generator(device="cpu")
        self._dev = torch.Generator(device=self.on)

    def __len__(self) -> int:
        return len(self.features)

    def host(self, i: int, step: int) -> torch.Generator:
        """The CPU generator of feature ``i`` (position in ``features``) at ``step``."""
        self._host.manual_seed(counter_seed(self.keys[i][0], step, 0))
        return self._host

    def device(self, i: int, step: int) -> torch.Generator:
        """The device generator of feature ``i`` at ``step`` (valid until the next call)."""
        self._dev.manual_seed(counter_seed(self.keys[i][1], step, 1))
        return self._dev


class RandomAffine:
    """Random zoom, rotation and shift of each copy (bilinear ``grid_sample``, reflected borders).

    Per copy: scale ``s ~ U(scale_range)`` (> 1 zooms in), angle ``~ U(-rotate, rotate)``
    degrees, and shift ``~ U(-shift, shift)`` as a fraction of the image size. Used by the
    Fourier/MaCo recipes (lucid's ``random_scale`` + ``random_rotate`` + ``jitter``, in one
    resampling); the paper's pixel recipes do not use it.
    """

    def __init__(
        self, scale_range: tuple[float, float] = (1.0, 1.0), rotate: float = 0.0, shift: float = 0.0
    ) -> None:
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.rotate = float(rotate)
        self.shift = float(shift)

    @property
    def active(self) -> bool:
        return self.scale_range != (1.0, 1.0) or self.rotate != 0 or self.shift != 0

    def sample(self, n: int, generator: torch.Generator, device: torch.device | str | None = None) -> Tensor:
        """Affine matrices ``(n, 2, 3)`` for ``F.affine_grid`` (output -> input coordinates)."""
        device = generator.device if device is None else device
        u = torch.rand(n, 4, generator=generator, device=device)  # (n, 4)
        lo, hi = self.scale_range
        scale = lo + (hi - lo) * u[:, 0]
        angle = (u[:, 1] * 2 - 1) * math.radians(self.rotate)
        tx, ty = (u[:, 2] * 2 - 1) * self.shift * 2, (u[:, 3] * 2 - 1) * self.shift * 2
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        return torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)  # (n, 2, 3)

    @staticmethod
    def apply(x: Tensor, theta: Tensor) -> Tensor:
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)  # (B, H, W, 2)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


class EnsembleAugment:
    """The recipe's augmentation pipeline applied to a batch of images of several features.

    The recipe builds a list of transform objects (:class:`Jitter`, :class:`ColorShift`,
    :class:`GaussianNoise`, :class:`RandomAffine`), each with a ``sample`` step (all its
    randomness, from the feature's generators) and an ``apply`` step (deterministic,
    differentiable). ``images`` (P, 3, H, W) holds ``images_per_stream`` consecutive images per
    stream (feature); the output (P * n, 3, H, W) holds each image's ``n`` copies consecutively.
    For each stream, in stream order, the random numbers are drawn in a fixed order (jitter
    offsets, colour ``mu``, ``sigma``, noise, affine) whatever order they are applied in
    (``recipe.order``).
    """

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe
        self.n = recipe.n_augment
        self.jitter = Jitter(recipe.jitter, per_copy=recipe.jitter_mode == "per_copy")
        self.color = (
            None
            if recipe.color_mode == "none"
            else ColorShift(recipe.color_mu, recipe.color_log_sigma, recipe.color_mode)
        )
        self.noise = (
            None
            if recipe.noise_mode == "none"
            else GaussianNoise(recipe.noise_std, recipe.noise_mode, recipe.noise_schedule)
        )
        affine = RandomAffine(recipe.scale_range, recipe.rotate, recipe.shift)
        self.affine = affine if affine.active else None
        #: (name, transform) in drawing order; ``None`` entries are off in this recipe
        self.transforms: list[tuple[str, object | None]] = [
            ("jitter", self.jitter),
            ("color", self.color),
            ("noise", self.noise),
            ("affine", self.affine),
        ]

    def _draw(
        self,
        name: str,
        t: object,
        m: int,
        n: int,
        s: FeatureStreams,
        shape: tuple[int, int, int],
        std: float,
        device: torch.device,
    ) -> object:
        if name == "jitter":
            return self.jitter.sample(m, n, s.host)
        if name == "color":
            return self.color.sample(m * n, s.device, device, shape[0])
        if name == "noise":
            return self.noise.sample(m * n, shape, std, s.device, device)
        return self.affine.sample(m * n, s.device, device)

    def __call__(
        self,
        images: Tensor,
        streams: Sequence[FeatureStreams] | CounterStreams,
        step: int,
        steps: int,
        images_per_stream: int = 1,
    ) -> Tensor:
        """``images`` (P, C, H, W) -> (P * n, C, H, W). ``streams``: a :class:`CounterStreams`
        (draws keyed by (seed, feature, step)) or one stateful :class:`FeatureStreams` per feature."""
        p, c, h, w = images.shape
        m, n = images_per_stream, self.n
        if p != len(streams) * m:
            raise ValueError(f"{p} images for {len(streams)} streams x {m} images")
        std = self.noise.std_at(step, steps) if self.noise is not None else 0.0
        active = [(name, t) for name, t in self.transforms if t is not None]
        drawn: dict[str, list] = {name: [] for name, _ in active}
        counter = isinstance(streams, CounterStreams)
        for i in range(len(streams)):  # per-feature draws: batching does not change any stream
            if counter:
                s = FeatureStreams(host=streams.host(i, step), device=streams.device(i, step))
            else:
                s = streams[i]
            for name, t in active:
                drawn[name].append(self._draw(name, t, m, n, s, (c, h, w), std, images.device))
        x = images.repeat_interleave(n, dim=0)  # (P * n, C, H, W)
        for name in self.recipe.order:
            if name not in drawn:
                continue
            if name == "jitter" and self.jitter.max_shift > 0:
                x = self.jitter.apply(x, torch.cat(drawn[name]))
            elif name == "color":
                x = self.color.apply(
                    x, (torch.cat([d[0] for d in drawn[name]]), torch.cat([d[1] for d in drawn[name]]))
                )
            elif name == "noise" and std > 0:
                x = GaussianNoise.apply(x, torch.cat(drawn[name]))
            elif name == "affine":
                x = RandomAffine.apply(x, torch.cat(drawn[name]))
        return x
