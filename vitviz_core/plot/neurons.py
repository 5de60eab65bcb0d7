"""Figures for the "what neurons tell" chapter (Nguyen et al. 2022).

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot state: it
never shows or saves anything; a notebook displays the returned figure as a cell value.

- :func:`level0_views_figure`   the image and each neuron's stitched level-0 view
- :func:`filters_figure`        patch-embedding filters, titled by their class
- :func:`filter_stats_figure`   colour fraction vs. spatial frequency, coloured by class
- :func:`probe_figure`          linear-probe accuracy by depth with 95 % intervals
- :func:`propagation_figure`    what one token aggregates, layer by layer
- :func:`purity_figure`         clustering purity vs. depth, with the chance level
- :func:`embeddings_figure`     2-D token embeddings per layer, object vs. background
- :func:`robustness_figure`     shuffle / occlusion accuracy curves with 95 % intervals

Display helpers: :func:`stretch` (scale signed maps for display), :func:`legend_outside`.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from vitviz_core.plot.images import to_hwc

__all__ = [
    "signed_to_rgb",
    "stretch",
    "legend_outside",
    "level0_views_figure",
    "filters_figure",
    "filter_stats_figure",
    "probe_figure",
    "propagation_figure",
    "purity_figure",
    "embeddings_figure",
    "robustness_figure",
]

LABEL_COLOURS = {"colour": "tab:red", "flat": "tab:gray", "edge": "tab:blue", "texture": "tab:green"}


def _np(a: Any) -> np.ndarray:
    return a.detach().float().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a, dtype=float)


def signed_to_rgb(view: Any, scale: float | None = None) -> np.ndarray:
    """A signed ``(3, H, W)`` view or filter -> displayable ``(H, W, 3)`` in [0, 1]: 0 maps to
    gray, ``+-scale`` (default: the largest magnitude) to the extremes."""
    a = _np(view)
    if a.ndim == 3 and a.shape[0] in (1, 3):
        a = a.transpose(1, 2, 0)
    s = float(np.abs(a).max()) if scale is None else float(scale)
    s = s if s > 0 else 1.0
    out = np.clip(0.5 + 0.5 * a / s, 0.0, 1.0)
    return np.repeat(out, 3, axis=-1) if out.shape[-1] == 1 else out


def stretch(maps: torch.Tensor, q: float = 0.99) -> torch.Tensor:
    """Display only: scale each signed map of ``maps`` ``(K, ...)`` so that the ``q``-quantile
    of its ``|value|`` is 1, clipped to [-1, 1] (a few extreme pixels would otherwise turn the
    rest gray)."""
    s = torch.quantile(maps.abs().flatten(1).float(), q, dim=1).clamp_min(1e-12)  # (K,)
    return (maps / s.view(-1, *[1] * (maps.dim() - 1))).clamp(-1, 1)


def legend_outside(fig: Figure, ax_index: int = -1, below: bool = False) -> Figure:
    """Move one axes' legend out of the plot, to its right or below it, and grow the figure
    to make room (the lines stay readable). Returns ``fig``."""
    ax = fig.axes[ax_index]
    if below:
        ax.legend(fontsize=7, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    else:
        ax.legend(fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1.01, 0.5))
    w, h = fig.get_size_inches()
    fig.set_size_inches(w if below else w + 2.2, h + 0.9 if below else h)
    fig.tight_layout()
    return fig


def _grid(n: int, ncols: int | None, max_cols: int = 8) -> tuple[int, int]:
    ncols = ncols or min(max_cols, max(1, math.ceil(math.sqrt(n))))
    return math.ceil(n / ncols), ncols


def level0_views_figure(
    image01: Any,
    view_maps: Any,
    neurons: Sequence[int],
    *,
    labels: Sequence[str] | None = None,
    cell_inches: float = 1.8,
    ncols: int | None = None,
) -> Figure:
    """The input image followed by one stitched level-0 view per neuron.

    Args:
        image01: ``(3, H, W)`` image in [0, 1].
        view_maps: ``(K, 3, H, W)`` stitched views (:func:`~vitviz_core.neurons.level0_view_map`),
            each shown with its own symmetric scale (gray = 0).
    """
    maps = _np(view_maps)
    n = len(neurons) + 1
    nrows, ncols = _grid(n, ncols)
    fig = Figure(figsize=(ncols * cell_inches, nrows * (cell_inches + 0.25)))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i == 0:
            ax.imshow(to_hwc(image01))
            ax.set_title("image", fontsize=8)
        elif i < n:
            ax.imshow(signed_to_rgb(maps[i - 1]), interpolation="nearest")
            lab = f"neuron {neurons[i - 1]}" + (f" ({labels[i - 1]})" if labels else "")
            ax.set_title(lab, fontsize=8)
    fig.tight_layout()
    return fig


def filters_figure(
    weight: Any,
    labels: Sequence[str] | None = None,
    neurons: Sequence[int] | None = None,
    *,
    ncols: int = 16,
    cell_inches: float = 0.7,
) -> Figure:
    """Patch-embedding filters ``(C, 3, p, p)`` (each on its own symmetric scale), titled by class."""
    w = _np(weight)
    idx = list(range(w.shape[0])) if neurons is None else list(neurons)
    nrows, ncols = _grid(len(idx), ncols, max_cols=ncols)
    fig = Figure(figsize=(ncols * cell_inches, nrows * (cell_inches + 0.18)))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i < len(idx):
            c = idx[i]
            ax.imshow(signed_to_rgb(w[c]), interpolation="nearest")
            if labels is not None:
                ax.set_title(
                    f"{c}:{labels[c][:3]}", fontsize=5, pad=1, color=LABEL_COLOURS.get(labels[c], "black")
                )
    fig.tight_layout(pad=0.2)
    return fig


def filter_stats_figure(stats: Any) -> Figure:
    """Scatter of each filter's colour fraction against its mean spatial frequency."""
    fig = Figure(figsize=(5.0, 3.8))
    ax = fig.subplots()
    labels = np.asarray(stats.labels)
    for lab, col in LABEL_COLOURS.items():
        sel = labels == lab
        if sel.any():
            ax.scatter(
                stats.mean_frequency[sel],
                stats.colour_fraction[sel],
                s=14,
                c=col,
                label=f"{lab} ({int(sel.sum())})",
                alpha=0.8,
            )
    ax.set_xlabel("mean spatial frequency (cycles / pixel)")
    ax.set_ylabel("colour share of filter energy")
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def probe_figure(
    results: Sequence[Any],
    names: Sequence[str] | None = None,
    *,
    title: str | None = None,
    extra: Sequence[tuple[str, Any]] = (),
) -> Figure:
    """Top-1 (and top-5) linear-probe accuracy per feature with 95 % intervals.

    Args:
        results: :class:`~vitviz_core.neurons.level0.ProbeResult` in depth order (joined by lines).
        extra: ``(label, ProbeResult)`` of another model (e.g. a CNN's first layer), drawn as
            unconnected squares right of a dashed separator.
    """
    n = len(results) + len(extra)
    fig = Figure(figsize=(max(4.0, 0.55 * n + 2), 3.4))
    ax = fig.subplots()
    x = np.arange(len(results))
    xe = np.arange(len(results), n) + 0.5
    for key, col in (("top1", "tab:blue"), ("top5", "tab:orange")):
        for xs, rs, style in (
            (x, list(results), dict(marker="o")),
            (xe, [r for _, r in extra], dict(marker="s", ls="none")),
        ):
            if not rs:
                continue
            est = [getattr(r, key) for r in rs]
            v = np.array([100 * e.value for e in est])
            err = np.array([[100 * (e.value - e.low) for e in est], [100 * (e.high - e.value) for e in est]])
            ax.errorbar(
                xs,
                v,
                yerr=err,
                capsize=3,
                color=col,
                label=key.replace("top", "top-") if style["marker"] == "o" else None,
                **style,
            )
    if extra:
        ax.axvline(len(results) - 0.25, color="0.6", ls="--", lw=1)
    labels = list(names or [r.feature for r in results]) + [lab for lab, _ in extra]
    ax.set_xticks(np.concatenate([x, xe]), labels, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_ylim(bottom=0)
    ax.legend(frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def propagation_figure(
    image01: Any, maps: Any, layer_names: Sequence[str], *, heat: Any | None = None, cell_inches: float = 1.6
) -> Figure:
    """What one token aggregates: the image, then per layer the weighted view map
    ``(n_layers, 3, H, W)`` (shared symmetric scale) and, optionally, the rollout heat map
    ``(n_layers, gh, gw)`` underneath."""
    m = _np(maps)
    n = m.shape[0] + 1
    rows = 2 if heat is not None else 1
    fig = Figure(figsize=(n * cell_inches, rows * (cell_inches + 0.25)))
    axes = fig.subplots(rows, n, squeeze=False)
    scale = float(np.abs(m).max()) or 1.0
    axes[0, 0].imshow(to_hwc(image01))
    axes[0, 0].set_title("image", fontsize=8)
    for j in range(1, n):
        axes[0, j].imshow(signed_to_rgb(m[j - 1], scale), interpolation="nearest")
        axes[0, j].set_title(layer_names[j - 1], fontsize=8)
    if heat is not None:
        h = _np(heat)
        for j in range(1, n):
            axes[1, j].imshow(h[j - 1], cmap="magma", interpolation="nearest")
    for ax in axes.flat:
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def purity_figure(
    rows: Sequence[Mapping[str, Any]],
    layer_names: Sequence[str] | None = None,
    *,
    metric: str = "purity",
    title: str | None = None,
) -> Figure:
    """Purity (with 95 % CI band) vs. depth for each (model, method), the chance level dashed.

    Args:
        rows: :func:`~vitviz_core.neurons.clustering.summarize_scores` rows, optionally with a
            ``"model"`` key; layers are plotted in the order they first appear.
    """
    fig = Figure(figsize=(6.0, 3.6))
    ax = fig.subplots()
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault((str(r.get("model", "")), str(r["method"])), []).append(r)
    for (model, method), rs in groups.items():
        x = np.arange(len(rs))
        v = np.array([r[metric] for r in rs])
        lab = f"{model} {method}".strip()
        line = ax.plot(x, v, marker="o", label=lab)[0]
        if f"{metric}_low" in rs[0]:
            ax.fill_between(
                x,
                [r[f"{metric}_low"] for r in rs],
                [r[f"{metric}_high"] for r in rs],
                color=line.get_color(),
                alpha=0.2,
            )
        if metric == "purity" and method == list(groups)[0][1]:
            ax.plot(
                x,
                [r["baseline"] for r in rs],
                ls="--",
                color=line.get_color(),
                alpha=0.6,
                label=f"{model} chance (majority share)".strip(),
            )
    first = next(iter(groups.values()))
    names = layer_names or [
        str(r["layer"]).replace(".hook_resid_post", "").replace("blocks.", "b") for r in first
    ]
    ax.set_xticks(np.arange(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(metric)
    ax.legend(fontsize=7, frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def embeddings_figure(
    embeddings: Sequence[Any],
    labels: Any,
    titles: Sequence[str],
    *,
    cell_inches: float = 2.0,
    ncols: int | None = None,
) -> Figure:
    """2-D embeddings ``[(N, 2)]`` per layer, object (orange) vs. background (blue)."""
    lab = _np(labels).astype(bool).reshape(-1)
    nrows, ncols = _grid(len(embeddings), ncols, max_cols=7)
    fig = Figure(figsize=(ncols * cell_inches, nrows * (cell_inches + 0.2)))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= len(embeddings):
            ax.set_axis_off()
            continue
        e = _np(embeddings[i])
        ax.scatter(e[~lab, 0], e[~lab, 1], s=4, c="tab:blue", label="background")
        ax.scatter(e[lab, 0], e[lab, 1], s=4, c="tab:orange", label="object")
        ax.set_title(titles[i], fontsize=8)
    axes.flat[0].legend(fontsize=6, frameon=False, markerscale=2)
    fig.tight_layout()
    return fig


def robustness_figure(rows: Sequence[Mapping[str, Any]], *, title: str | None = None) -> Figure:
    """Accuracy curves with 95 % intervals: left, patch shuffling vs. grid size; right,
    occlusion vs. ratio per mode (line style) and fill (marker); one colour per model.

    Args:
        rows: :func:`~vitviz_core.neurons.robustness.summarize_sweep` rows.
    """
    fig = Figure(figsize=(10.0, 3.6))
    ax_s, ax_o = fig.subplots(1, 2)
    models = list(dict.fromkeys(r["model"] for r in rows))
    colours = {m: f"C{i}" for i, m in enumerate(models)}
    styles = {"random": "-", "most": "--", "least": ":"}

    def curve(ax: Any, rs: list[Mapping[str, Any]], **kw: Any) -> None:
        rs = sorted(rs, key=lambda r: r["param"])
        x = [r["param"] for r in rs]
        v = np.array([100 * r["acc"] for r in rs])
        err = np.array(
            [[100 * (r["acc"] - r["low"]) for r in rs], [100 * (r["high"] - r["acc"]) for r in rs]]
        )
        kw.setdefault("marker", "o")
        ax.errorbar(x, v, yerr=err, ms=3, capsize=2, **kw)

    for m in models:
        mine = [r for r in rows if r["model"] == m]
        clean = [r for r in mine if r["kind"] == "clean"]
        shuf = [r for r in mine if r["kind"] == "shuffle"]
        if shuf:
            curve(ax_s, shuf, color=colours[m], label=m)
        settings = dict.fromkeys((r["mode"], r.get("fill", "")) for r in mine if r["kind"] == "occlude")
        markers = {f: mk for f, mk in zip(dict.fromkeys(f for _, f in settings), "osD^v")}
        for mode, fill in settings:
            occ = [
                r for r in mine if r["kind"] == "occlude" and r["mode"] == mode and r.get("fill", "") == fill
            ]
            occ = [{**c, "param": 0.0} for c in clean] + occ
            curve(
                ax_o,
                occ,
                color=colours[m],
                ls=styles.get(mode, "-"),
                marker=markers[fill],
                label=f"{m} {mode} {fill}".strip(),
            )
    ax_s.set_xscale("log", base=2)
    ax_s.set_xlabel("shuffle grid g (g x g tiles)")
    ax_s.set_ylabel("top-1 (%)")
    ax_o.set_xlabel("occluded fraction of patches")
    for ax in (ax_s, ax_o):
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
