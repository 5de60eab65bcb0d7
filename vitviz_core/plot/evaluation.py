"""Figures of the evaluation experiments (they return a matplotlib Figure; never show or save).

- :func:`overlay_activation`: an image with a patch activation map on top (paper Fig. 3/6/9).
- :func:`exemplar_grid`: the top-k images of one feature, each with its activation map.
- :func:`patch_accuracy_heatmap`: per-patch-position accuracy of the classifier head (Fig. 7).
- :func:`accuracy_curves`: accuracy versus a swept parameter with 95 % CI bands
  (low-pass cut-off, Fig. 16; CLS join layer).
- :func:`frequency_curves`, :func:`join_layer_curves`: those curves from result objects.
- :func:`masking_bars`: full / foreground-only / background-only bars per model (Table 2).

Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot state).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from vitviz_core.plot.images import image_array, upsample

__all__ = [
    "overlay_activation",
    "exemplar_grid",
    "patch_accuracy_heatmap",
    "accuracy_curves",
    "frequency_curves",
    "join_layer_curves",
    "masking_bars",
]


def _draw_overlay(
    ax: Any, image: Any, amap: Any, alpha: float, cmap: str, vmin: float | None, vmax: float | None
) -> Any:
    img = image_array(image)
    m = upsample(amap, img.shape[:2])
    ax.imshow(img, interpolation="bilinear")
    im = ax.imshow(m, cmap=cmap, alpha=alpha, vmin=vmin, vmax=vmax, interpolation="bilinear")
    ax.set_axis_off()
    return im


def overlay_activation(
    image: Any,
    amap: Any,
    *,
    alpha: float = 0.5,
    cmap: str = "inferno",
    title: str | None = None,
    colorbar: bool = True,
    vmin: float | None = None,
    vmax: float | None = None,
    size_inches: float = 3.2,
) -> Figure:
    """One image with its activation map ``(h, w)`` (any grid; upsampled bilinearly)."""
    fig = Figure(figsize=(size_inches * (1.25 if colorbar else 1.0), size_inches))
    ax = fig.add_subplot(1, 1, 1)
    im = _draw_overlay(ax, image, amap, alpha, cmap, vmin, vmax)
    if colorbar:
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def _square_view(img: Any, size: int) -> Any:
    from PIL import Image

    w, h = img.size
    s = min(w, h)
    img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    return img.resize((size, size), Image.BICUBIC)


def exemplar_grid(
    result: Any,
    hook: str,
    feature: int,
    stat: str = "mean",
    *,
    n: int | None = None,
    transform: Callable[[Any], torch.Tensor] | None = None,
    overlay: bool = True,
    alpha: float = 0.5,
    cmap: str = "inferno",
    ncols: int | None = None,
    cell_inches: float = 1.8,
    class_names: Sequence[str] | None = None,
) -> Figure:
    """Top images of one feature from an :class:`~vitviz_core.evaluate.exemplars.ExemplarResult`,
    with their activation maps overlaid. ``transform`` (e.g. ``model.pixel_transform()``)
    reproduces the model's view so the map lines up; default: centre square crop."""
    top = result.top(hook, feature, stat)
    images = result.images(hook, feature, stat)
    maps = result.maps(hook, feature, stat) if overlay else None  # (k, h, w)
    count = len(top) if n is None else min(n, len(top))
    ncols = ncols or min(count, 5)
    nrows = math.ceil(count / ncols)
    fig = Figure(figsize=(ncols * cell_inches, nrows * (cell_inches + 0.25) + 0.3))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    vmax = float(maps[:count].max()) if maps is not None else None
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= count:
            continue
        img = transform(images[i]) if transform is not None else _square_view(images[i], 224)
        if maps is not None:
            _draw_overlay(ax, img, maps[i], alpha, cmap, 0.0 if vmax and vmax > 0 else None, vmax)
        else:
            ax.imshow(image_array(img))
        idx, score = top[i]
        label = ""
        if class_names is not None and result.labels and result.labels[idx] >= 0:
            label = class_names[result.labels[idx]][:18] + "\n"
        ax.set_title(f"{label}{stat} {score:.2f}", fontsize=7, pad=2)
    fig.suptitle(f"{hook} feature {feature} (top by patch-{stat})", fontsize=9)
    fig.tight_layout()
    return fig


def patch_accuracy_heatmap(
    result_or_map: Any,
    k: int = 1,
    *,
    cmap: str = "viridis",
    title: str | None = None,
    annotate: bool = False,
    size_inches: float = 4.0,
) -> Figure:
    """Per-patch accuracy of the classifier head on each patch token (Fig. 7).
    Takes a :class:`TokenMixingResult` (uses ``patch_map[k]``) or an ``(H, W)`` array."""
    amap = result_or_map.patch_map[k] if hasattr(result_or_map, "patch_map") else result_or_map
    arr = 100 * np.asarray(amap, dtype=np.float64)
    fig = Figure(figsize=(size_inches * 1.2, size_inches))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(arr, cmap=cmap, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=f"top-{k} accuracy (%)")
    best = getattr(result_or_map, "best_position", None)
    if best is not None:
        ax.scatter([best[1]], [best[0]], marker="s", s=60, facecolors="none", edgecolors="red")
    if annotate:
        for (r, c), v in np.ndenumerate(arr):
            ax.text(c, r, f"{v:.0f}", ha="center", va="center", fontsize=5, color="white")
    ax.set_xlabel("patch column")
    ax.set_ylabel("patch row")
    ax.set_title(title or f"classifier head on each patch: top-{k}", fontsize=9)
    fig.tight_layout()
    return fig


def accuracy_curves(
    curves: Mapping[str, tuple[Sequence[float], Sequence[Any]]],
    *,
    xlabel: str = "",
    ylabel: str = "top-1 accuracy (%)",
    title: str | None = None,
    logx: bool = False,
    xticklabels: Sequence[str] | None = None,
    hlines: Mapping[str, float] | None = None,
    size: tuple[float, float] = (5.5, 3.6),
) -> Figure:
    """Lines with 95 % CI bands: ``{label: (xs, [Estimate, ...])}`` (values in percent)."""
    fig = Figure(figsize=size)
    ax = fig.add_subplot(1, 1, 1)
    for label, (xs, ests) in curves.items():
        xs_arr = np.asarray(xs, dtype=np.float64)
        v = 100 * np.array([e.value for e in ests])
        lo = 100 * np.array([e.low for e in ests])
        hi = 100 * np.array([e.high for e in ests])
        (line,) = ax.plot(xs_arr, v, marker="o", ms=3, label=label)
        ax.fill_between(xs_arr, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    for label, y in (hlines or {}).items():
        ax.axhline(100 * y, ls="--", lw=0.8, color="gray")
        ax.text(ax.get_xlim()[0], 100 * y, f" {label}", va="bottom", fontsize=7, color="gray")
    if logx:
        ax.set_xscale("log", base=2)
    if xticklabels is not None:
        first = next(iter(curves.values()))[0]
        ax.set_xticks(list(first))
        ax.set_xticklabels(list(xticklabels))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def frequency_curves(results: Mapping[str, Any], kind: str = "low", k: int = 1, **kwargs: Any) -> Figure:
    """Top-k versus cut-off per model from :class:`FrequencyResult` objects (Fig. 16).
    The unfiltered ``inf`` cut-off is drawn at twice the largest finite cut-off."""
    curves = {}
    ticks: list[str] | None = None
    for name, res in results.items():
        cut = list(res.cutoffs)
        finite = [c for c in cut if math.isfinite(c)]
        xs = [c if math.isfinite(c) else 2 * max(finite or [1.0]) for c in cut]
        ticks = [f"{c:g}" if math.isfinite(c) else "none" for c in cut]
        ests = (res.top1 if k == 1 else res.top5)[kind]
        curves[name] = (xs, ests)
    kwargs.setdefault("xlabel", f"{kind}-pass cut-off (cycles per image)")
    kwargs.setdefault("ylabel", f"top-{k} accuracy (%)")
    kwargs.setdefault("logx", True)
    fig = accuracy_curves(curves, xticklabels=ticks, **kwargs)
    return fig


def join_layer_curves(result: Any, k: int = 1, **kwargs: Any) -> Figure:
    """Isolating-CLS and patch-dropping sweeps of a :class:`TokenMixingResult`."""
    curves = {}
    if result.isolate:
        layers = sorted(result.isolate)
        curves["CLS isolated in blocks [0, L)"] = (layers, [result.isolate[v][k] for v in layers])
    if result.drop:
        layers = sorted(result.drop)
        curves["patches dropped from block L"] = (layers, [result.drop[v][k] for v in layers])
    kwargs.setdefault("xlabel", "layer L")
    kwargs.setdefault("ylabel", f"top-{k} accuracy (%)")
    hl = {"natural": result.natural[k].value} if result.natural else None
    return accuracy_curves(curves, hlines=hl, **kwargs)


def masking_bars(
    results: Mapping[str, Any],
    metric: str = "top5",
    *,
    title: str | None = None,
    size: tuple[float, float] = (5.5, 3.4),
) -> Figure:
    """Grouped bars per model: ``metric`` = ``"top1"``, ``"top5"`` (full / fg / bg) or
    ``"normalized_top5"`` (fg / bg relative to full), with 95 % CI error bars."""
    names = list(results)
    first = getattr(results[names[0]], metric)
    conds = list(first)
    width = 0.8 / max(len(conds), 1)
    fig = Figure(figsize=size)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(names))
    for j, cond in enumerate(conds):
        ests = [getattr(results[n], metric)[cond] for n in names]
        v = 100 * np.array([e.value for e in ests])
        err = 100 * np.array([[e.value - e.low for e in ests], [e.high - e.value for e in ests]])
        ax.bar(
            x + (j - (len(conds) - 1) / 2) * width,
            v,
            width,
            yerr=np.clip(err, 0, None),
            capsize=3,
            label=cond,
        )
    ax.set_xticks(x)
    ax.set_xticklabels(names)
    ax.set_ylabel({"normalized_top5": "top-5 / full-image top-5 (%)"}.get(metric, f"{metric} (%)"))
    ax.set_title(title or f"foreground vs background: {metric}", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig
