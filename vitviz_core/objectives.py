"""Objectives to maximize, composable with ``+``, ``-``, scalar ``*`` and ``/`` (lucent style).

An :class:`Objective` maps an :class:`ObjectiveContext` (the captured activations of one
augmented batch, the optimized images, the augmented batch and which feature each sample
optimizes) to one value per sample, shape ``(B,)``. The optimizer maximizes each image's
values averaged over its augmented copies.

Families:

- :func:`channel`: one channel of any hook point, mean or sum over patch positions with
  prefix tokens (CLS, distillation, registers) excluded; the paper's objective on
  ``blocks.{i}.mlp.hook_post``. ``feature=None`` makes it *batched*: each sample maximizes
  its own feature (``ctx.features``), picked with a gather over channels.
- :func:`neuron`: one channel at one patch position.
- :func:`direction`: a direction in channel space (dot product with a unit vector).
- :func:`total_variation`: TV of the images or of the augmented batch (subtract it).
- :func:`diversity`: pushes apart several images of one feature (needs ``images_per_feature > 1``).

Token layouts (NLC with prefix tokens), channels-last (NHWC) and CNN maps (NCHW) all go
through :func:`vitviz_core.hooks.to_patch_maps`, so every objective sees ``(B, C, H, W)``.

>>> obj = channel("blocks.6.mlp.hook_post") - 5e-5 * total_variation()
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "ObjectiveContext",
    "Objective",
    "channel",
    "neuron",
    "direction",
    "total_variation",
    "diversity",
    "tv",
]


@dataclass
class ObjectiveContext:
    """What an objective can look at for one forward pass of ``B = P * n_copies`` samples."""

    activations: dict[str, Tensor]  # hook name -> captured tensor in the spec's layout, (B, ...)
    specs: dict[str, object]  # hook name -> vitviz_core.hooks.HookSpec
    images: Tensor  # (P, 3, H, W) the optimized images, in [0, 1]
    augmented: Tensor  # (B, 3, H, W) the augmented batch (before resize / normalisation)
    features: Tensor | None = None  # (B,) int64: the feature index each sample maximizes
    n_copies: int = 1  # augmented copies per image (B = P * n_copies)
    images_per_group: int = 1  # consecutive images optimizing the same feature
    _maps: dict[str, Tensor] = field(default_factory=dict, repr=False)

    @property
    def batch_size(self) -> int:
        return self.augmented.shape[0]

    def patch_maps(self, hook: str) -> Tensor:
        """Activations of ``hook`` as float32 ``(B, C, H, W)`` patch maps, prefix tokens dropped."""
        if hook not in self._maps:
            from vitviz_core.hooks import to_patch_maps

            if hook not in self.activations:
                raise KeyError(f"hook {hook!r} was not captured (captured: {sorted(self.activations)})")
            act = self.activations[hook]
            self._maps[hook] = to_patch_maps(act, self.specs[hook]).float()  # (B, C, H, W)
        return self._maps[hook]

    def channel_values(self, hook: str, index: Tensor) -> Tensor:
        """Channel ``index[b]`` of ``hook`` at every patch position of sample ``b`` -> (B, N) float32.

        Gathers straight from the captured layout (no full (B, C, H, W) copy): the cheap path
        the batched optimizer relies on. Position order is the layout's, not always row-major.
        """
        if hook not in self.activations:
            raise KeyError(f"hook {hook!r} was not captured (captured: {sorted(self.activations)})")
        act, spec = self.activations[hook], self.specs[hook]
        layout = getattr(spec, "layout", None)
        b = act.shape[0]
        if layout == "NLC" and act.ndim == 3:
            tokens = act[:, spec.num_prefix_tokens :, :]  # (B, N, C)
            idx = index.view(b, 1, 1).expand(b, tokens.shape[1], 1)
            return tokens.gather(2, idx).squeeze(2).float()  # (B, N)
        if layout == "NHWC" and act.ndim == 4:
            idx = index.view(b, 1, 1, 1).expand(b, act.shape[1], act.shape[2], 1)
            return act.gather(3, idx).flatten(1).float()  # (B, H*W)
        if layout == "NCHW" and act.ndim == 4:
            idx = index.view(b, 1, 1, 1).expand(b, 1, act.shape[2], act.shape[3])
            return act.gather(1, idx).flatten(1).float()  # (B, H*W)
        if layout == "NC" and act.ndim == 2:  # logits, pooled
            return act.gather(1, index.view(b, 1)).float()  # (B, 1)
        maps = self.patch_maps(hook)  # (B, C, H, W)
        idx = index.view(b, 1, 1, 1).expand(b, 1, maps.shape[2], maps.shape[3])
        return maps.gather(1, idx).flatten(1)  # (B, H*W)

    def per_sample_features(self, feature: int | None) -> Tensor:
        """``(B,)`` feature indices: ``feature`` for all samples, or ``ctx.features`` when None."""
        if feature is not None:
            return torch.full(
                (self.batch_size,), int(feature), dtype=torch.long, device=self.augmented.device
            )
        if self.features is None:
            raise ValueError("this objective has feature=None (batched) but the context has no features")
        return self.features


class Objective:
    """A per-sample quantity to maximize; combine with ``+ - * /`` and scalars.

    ``fn(ctx) -> Tensor (B,)``; ``hooks`` names the hook points it needs captured.
    """

    def __init__(
        self,
        fn: Callable[[ObjectiveContext], Tensor],
        hooks: Iterable[str] = (),
        description: str = "objective",
    ) -> None:
        self.fn = fn
        self.hooks: tuple[str, ...] = tuple(dict.fromkeys(hooks))
        self.description = description

    def __call__(self, ctx: ObjectiveContext) -> Tensor:
        return self.fn(ctx)

    def __repr__(self) -> str:
        return f"Objective({self.description})"

    # -- arithmetic ---------------------------------------------------------------------------
    @staticmethod
    def _lift(other: "Objective | float") -> "Objective":
        if isinstance(other, Objective):
            return other
        if isinstance(other, numbers.Real):
            value = float(other)
            return Objective(
                lambda ctx: torch.full((ctx.batch_size,), value, device=ctx.augmented.device), (), repr(value)
            )
        return NotImplemented  # type: ignore[return-value]

    def __add__(self, other: "Objective | float") -> "Objective":
        o = self._lift(other)
        if o is NotImplemented:
            return NotImplemented
        return Objective(
            lambda ctx: self(ctx) + o(ctx), self.hooks + o.hooks, f"{self.description} + {o.description}"
        )

    __radd__ = __add__

    def __sub__(self, other: "Objective | float") -> "Objective":
        o = self._lift(other)
        if o is NotImplemented:
            return NotImplemented
        return Objective(
            lambda ctx: self(ctx) - o(ctx), self.hooks + o.hooks, f"{self.description} - ({o.description})"
        )

    def __rsub__(self, other: float) -> "Objective":
        return self._lift(other) - self

    def __neg__(self) -> "Objective":
        return Objective(lambda ctx: -self(ctx), self.hooks, f"-({self.description})")

    def __mul__(self, other: float) -> "Objective":
        if not isinstance(other, numbers.Real):
            return NotImplemented
        k = float(other)
        return Objective(lambda ctx: k * self(ctx), self.hooks, f"{k:g} * ({self.description})")

    __rmul__ = __mul__

    def __truediv__(self, other: float) -> "Objective":
        if not isinstance(other, numbers.Real):
            return NotImplemented
        k = float(other)
        return Objective(lambda ctx: self(ctx) / k, self.hooks, f"({self.description}) / {k:g}")


def _reduce(x: Tensor, reduce: str) -> Tensor:
    """``(B, H, W)`` -> ``(B,)`` by mean or sum over positions."""
    if reduce == "mean":
        return x.mean(dim=(1, 2))
    if reduce == "sum":
        return x.sum(dim=(1, 2))
    raise ValueError(f"reduce must be 'mean' or 'sum', got {reduce!r}")


def channel(hook: str, feature: int | None = None, reduce: str = "mean") -> Objective:
    """Channel ``feature`` of ``hook``, averaged (or summed) over patch positions.

    ``feature=None``: each sample uses its own ``ctx.features[b]`` (batched optimization).
    """
    if reduce not in ("mean", "sum"):
        raise ValueError(f"reduce must be 'mean' or 'sum', got {reduce!r}")

    def fn(ctx: ObjectiveContext) -> Tensor:
        values = ctx.channel_values(hook, ctx.per_sample_features(feature))  # (B, N)
        return values.mean(dim=1) if reduce == "mean" else values.sum(dim=1)  # (B,)

    what = "ctx.features" if feature is None else str(feature)
    return Objective(fn, (hook,), f"channel({hook}, {what}, {reduce})")


def neuron(hook: str, feature: int | None = None, y: int | None = None, x: int | None = None) -> Objective:
    """Channel ``feature`` of ``hook`` at one patch position ``(y, x)`` (default: the centre)."""

    def fn(ctx: ObjectiveContext) -> Tensor:
        maps = ctx.patch_maps(hook)  # (B, C, H, W)
        b, _, h, w = maps.shape
        yy = h // 2 if y is None else y
        xx = w // 2 if x is None else x
        if not (0 <= yy < h and 0 <= xx < w):
            raise IndexError(f"position ({yy}, {xx}) outside the {h}x{w} patch grid of {hook}")
        column = maps[:, :, yy, xx]  # (B, C)
        idx = ctx.per_sample_features(feature).view(b, 1)
        return column.gather(1, idx).squeeze(1)  # (B,)

    return Objective(fn, (hook,), f"neuron({hook}, {feature}, y={y}, x={x})")


def direction(hook: str, vector: Tensor, reduce: str = "mean") -> Objective:
    """Projection of ``hook``'s channel vector on ``vector`` (C,) (normalised to unit length),
    averaged (or summed) over patch positions."""
    v = torch.as_tensor(vector, dtype=torch.float32).flatten()
    v = v / v.norm().clamp_min(1e-12)

    def fn(ctx: ObjectiveContext) -> Tensor:
        maps = ctx.patch_maps(hook)  # (B, C, H, W)
        if maps.shape[1] != v.numel():
            raise ValueError(f"direction has {v.numel()} entries but {hook} has {maps.shape[1]} channels")
        proj = torch.einsum("bchw,c->bhw", maps, v.to(maps.device))  # (B, H, W)
        return _reduce(proj, reduce)

    return Objective(fn, (hook,), f"direction({hook}, {reduce})")


def tv(x: Tensor, directions: int = 2) -> Tensor:
    """Total variation of each image of ``x`` (B, C, H, W) -> (B,).

    For every direction (x, y; with ``directions=4`` also both diagonals) the L2 norm of the
    neighbour differences over the image plane, averaged over channels, summed over directions
    (the released code's ``TotalVariation(p=2)``; its batch mean is the mean of these values).
    """
    diffs = [
        x[:, :, :, 1:] - x[:, :, :, :-1],  # (B, C, H, W-1)
        x[:, :, 1:, :] - x[:, :, :-1, :],
    ]  # (B, C, H-1, W)
    if directions == 4:
        diffs += [
            x[:, :, 1:, 1:] - x[:, :, :-1, :-1],  # (B, C, H-1, W-1)
            x[:, :, 1:, :-1] - x[:, :, :-1, 1:],
        ]
    elif directions != 2:
        raise ValueError(f"directions must be 2 or 4, got {directions}")
    return sum(d.flatten(2).norm(p=2, dim=2).mean(dim=1) for d in diffs)  # (B,)


def total_variation(directions: int = 2, on: str = "image") -> Objective:
    """TV (a quantity to *subtract*): of the optimized images (``on="image"``, each sample
    gets its image's value) or of each augmented copy (``on="augmented"``)."""
    if on not in ("image", "augmented"):
        raise ValueError(f"on must be 'image' or 'augmented', got {on!r}")

    def fn(ctx: ObjectiveContext) -> Tensor:
        if on == "augmented":
            return tv(ctx.augmented, directions)  # (B,)
        return tv(ctx.images, directions).repeat_interleave(ctx.n_copies)  # (B,)

    return Objective(fn, (), f"total_variation({directions}, {on})")


def diversity(hook: str) -> Objective:
    """Minus the mean pairwise cosine similarity between the channel vectors (averaged over
    positions and copies) of the images that optimize the same feature. Zero with one image
    per feature. Every sample of a group carries its group's value."""

    def fn(ctx: ObjectiveContext) -> Tensor:
        m, n = ctx.images_per_group, ctx.n_copies
        b = ctx.batch_size
        if m < 2:
            return torch.zeros(b, device=ctx.augmented.device)
        vec = ctx.patch_maps(hook).mean(dim=(2, 3))  # (B, C)
        vec = vec.view(b // (m * n), m, n, -1).mean(dim=2)  # (G, m, C)
        vec = F.normalize(vec, dim=-1)
        sim = vec @ vec.transpose(1, 2)  # (G, m, m)
        off = sim.sum(dim=(1, 2)) - sim.diagonal(dim1=1, dim2=2).sum(dim=1)
        value = -off / (m * (m - 1))  # (G,)
        return value.repeat_interleave(m * n)  # (B,)

    return Objective(fn, (hook,), f"diversity({hook})")
