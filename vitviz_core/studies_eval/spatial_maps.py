"""Patch activation maps by depth (paper Fig. 6): the most selective features per image, the
spatial spread of activation mass per block, and the saliency figure."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from vitviz_core.errors import VitvizError
from vitviz_core.evaluate.stats import Estimate, bootstrap_ci
from vitviz_core.plot.images import to_hwc
from vitviz_core.plot.images import upsample


def top_feature_maps(
    model: Any, x: Tensor, hook: str, n: int = 2, stat: str = "max", selective: bool = True
) -> tuple[Tensor, Tensor, Tensor]:
    """The ``n`` channels of ``hook`` that respond most to each image, with their maps.

    Args:
        x: ``(B, 3, H, W)`` normalised model input.
        stat: ``"max"`` or ``"mean"`` over patch positions.
        selective: rank channels by how much more they respond to this image than to the
            other images of the batch (z-score over the batch, needs ``B >= 2``) instead of
            by raw response (which favours channels that fire on every image).
    Returns:
        ``features (B, n)`` long, ``scores (B, n)`` (raw ``stat``), ``maps (B, n, h, w)``
        on the patch grid.
    """
    from vitviz_core.hooks import capture, to_patch_maps

    with torch.inference_mode(), capture(model, [hook], stop_early=True) as cap:
        cap.forward(x)
        maps = to_patch_maps(cap.activations[hook], cap.specs[hook]).float()  # (B, C, h, w)
    return _pick_features(maps, n, stat, selective)


def _pick_features(maps: Tensor, n: int, stat: str, selective: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Top-``n`` channels per image of patch maps ``(B, C, h, w)`` (see :func:`top_feature_maps`)."""
    from vitviz_core.evaluate.exemplars import score_maps

    raw = score_maps(maps, stat)  # (B, C)
    rank = raw
    if selective:
        if raw.shape[0] < 2:
            raise VitvizError("selective=True compares images of a batch: pass at least 2 images")
        rank = (raw - raw.mean(0, keepdim=True)) / (raw.std(0, keepdim=True) + 1e-6)
    feats = rank.topk(n, dim=1).indices  # (B, n)
    scores = raw.gather(1, feats)
    picked = maps.gather(1, feats[:, :, None, None].expand(-1, -1, *maps.shape[-2:]))
    return feats, scores, picked  # (B, n), (B, n), (B, n, h, w)


@dataclass
class DepthMaps:
    """Per block: each image's most selective FFN feature and its map, and how spread out
    over the image the block's activation mass is."""

    blocks: list[int]
    features: dict[int, Tensor]  # block -> (B,) feature index
    maps: dict[int, Tensor]  # block -> (B, h, w) activation map of that feature
    spread: dict[int, Estimate]  # block -> mass-weighted normalised spatial entropy (1 = uniform)
    per_image: dict[int, np.ndarray] = field(default_factory=dict)  # block -> (B,) spread


def spatial_spread(maps: Tensor) -> Tensor:
    """How uniformly each image's activation mass is spread over the patch grid:
    ``(B, C, h, w)`` -> ``(B,)``, the normalised entropy (0 = one patch, 1 = uniform) of each
    channel's positive activation, averaged over channels weighted by their mass."""
    m = maps.float().clamp_min(0).flatten(2)  # (B, C, N)
    mass = m.sum(2)  # (B, C)
    p = m / mass.clamp_min(1e-12)[..., None]
    ent = -(p * p.clamp_min(1e-12).log()).sum(2) / math.log(m.shape[2])  # (B, C)
    w = mass / mass.sum(1, keepdim=True).clamp_min(1e-12)
    return (ent * w).sum(1)  # (B,)


def depth_maps(
    model: Any,
    x: Tensor,
    blocks: Sequence[int],
    hook: str = "blocks.{i}.mlp.hook_post",
    stat: str = "max",
    n_boot: int = 1000,
) -> DepthMaps:
    """One capture pass over ``blocks``: each image's most selective feature per block (see
    :func:`top_feature_maps`) and the block's :func:`spatial_spread` with a bootstrap CI over
    images. ``x``: ``(B, 3, H, W)`` normalised input, ``B >= 2``."""
    from vitviz_core.hooks import capture, to_patch_maps

    names = [hook.format(i=b) for b in blocks]
    res = DepthMaps(blocks=list(blocks), features={}, maps={}, spread={})
    with torch.inference_mode(), capture(model, names, stop_early=True) as cap:
        cap.forward(x)
        for b, nm in zip(blocks, names):
            maps = to_patch_maps(cap.activations[nm], cap.specs[nm]).float()  # (B, C, h, w)
            feats, _, picked = _pick_features(maps, 1, stat, True)
            res.features[b], res.maps[b] = feats[:, 0].cpu(), picked[:, 0].cpu()
            res.per_image[b] = spatial_spread(maps).cpu().numpy()
            res.spread[b] = bootstrap_ci(res.per_image[b], n_boot=n_boot)
    return res


def spread_figure(res: DepthMaps, title: str | None = None) -> Figure:
    """Spatial spread of the FFN activation mass by block, with its 95 % CI band."""
    from vitviz_core.plot.evaluation import accuracy_curves

    fig = accuracy_curves(
        {"FFN activations (mass-weighted)": (res.blocks, [res.spread[b] for b in res.blocks])},
        xlabel="block",
        ylabel="spatial spread (%; 100 = uniform)",
        title=title,
        size=(5.4, 3.1),
    )
    fig.axes[0].set_xticks(res.blocks)
    fig.tight_layout()
    return fig


def saliency_figure(
    images: Sequence[Tensor],
    maps: Tensor,
    titles: Sequence[Sequence[str]],
    col_titles: Sequence[str] | None = None,
    row_labels: Sequence[str] | None = None,
    cell_inches: float = 1.35,
    alpha: float = 0.55,
) -> Figure:
    """Images (top row) and, below each, ``n`` activation maps overlaid (paper Fig. 6).

    Args:
        images: ``B`` pixel images ``(3, H, W)`` in [0, 1] (the model's view).
        maps: ``(B, n, h, w)`` activation maps; each is scaled to its own [0, max].
        titles: ``B`` lists of ``n`` titles (e.g. ``"#123"``).
    """
    b, n = maps.shape[:2]
    fig = Figure(figsize=(b * cell_inches, (n + 1) * (cell_inches + 0.2)))
    axes = fig.subplots(n + 1, b, squeeze=False)
    for j in range(b):
        img = to_hwc(images[j])
        axes[0, j].imshow(img)
        if col_titles is not None:
            axes[0, j].set_title(col_titles[j], fontsize=7)
        for i in range(n):
            m = upsample(maps[j, i].clamp_min(0), img.shape[:2])
            axes[i + 1, j].imshow(img)
            axes[i + 1, j].imshow(m, cmap="inferno", alpha=alpha, vmin=0, vmax=max(float(m.max()), 1e-6))
            axes[i + 1, j].set_title(titles[j][i], fontsize=7)
    for ax in axes.flat:
        ax.set_axis_off()
    for i, text in enumerate(row_labels or []):
        axes[i + 1, 0].text(
            -0.06,
            0.5,
            text,
            transform=axes[i + 1, 0].transAxes,
            rotation=90,
            ha="right",
            va="center",
            fontsize=7.5,
        )
    fig.subplots_adjust(
        left=0.04 if row_labels else 0.01, right=0.99, top=0.95, bottom=0.01, wspace=0.05, hspace=0.22
    )
    return fig
