"""Labelled grids of images, shared by the book and the command line.

- :func:`feature_grid`: a labelled grid of images (feature visualizations, exemplars).
- :func:`save_grid_png`: the same grid written to a PNG file.

Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot state), so a
library call never opens a window or draws into a notebook by itself; a notebook displays the
returned figure as its cell's value.
"""

from __future__ import annotations

import math
import os
import textwrap
from pathlib import Path
from typing import Sequence

import torch
from matplotlib.figure import Figure

from vitviz_core.plot.images import to_hwc

__all__ = ["feature_grid", "save_grid_png", "wrap_label"]


def wrap_label(text: str, cell_inches: float, fontsize: float) -> str:
    """``text`` wrapped (never cut) to the width of a cell of ``cell_inches`` at ``fontsize`` pt
    (about 0.55 em per character); existing line breaks are kept."""
    width = max(8, int(cell_inches * 72 / (fontsize * 0.55)))
    return "\n".join(line for part in str(text).split("\n") for line in (textwrap.wrap(part, width) or [""]))


def feature_grid(
    images: torch.Tensor | Sequence,
    labels: Sequence[str] | None = None,
    *,
    ncols: int | None = None,
    title: str | None = None,
    cell_inches: float = 2.4,
    fontsize: float = 9.0,
    dpi: int = 100,
) -> Figure:
    """A grid of ``images`` ((N, 3, H, W) tensor or a sequence of images in [0, 1]) with one
    label under each; ``ncols`` defaults to a near-square layout (at most 8 columns).

    Legibility: each cell is ``cell_inches`` wide at ``dpi`` (default 240 px, so a 224-px
    visualization is shown at least at its own size) and labels are wrapped onto as many lines
    as they need, never cut.
    """
    items = (
        list(images) if not isinstance(images, torch.Tensor) else [images[i] for i in range(images.shape[0])]
    )
    n = len(items)
    if n == 0:
        raise ValueError("feature_grid needs at least one image")
    if labels is not None and len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} images")
    ncols = ncols or min(8, max(1, math.ceil(math.sqrt(n))))
    nrows = math.ceil(n / ncols)
    wrapped = [wrap_label(t, cell_inches, fontsize) for t in labels] if labels is not None else None
    lines = max((t.count("\n") + 1 for t in wrapped), default=0) if wrapped else 0
    label_h = lines * fontsize * 1.35 / 72 + 0.06 if wrapped else 0.0
    title_lines = (
        textwrap.wrap(title, max(20, int(ncols * cell_inches * 72 / ((fontsize + 2) * 0.55))))
        if title
        else []
    )
    title_h = (0.2 * len(title_lines) + 0.15) if title else 0.0
    row_h = cell_inches + label_h
    fig = Figure(figsize=(ncols * cell_inches * 1.02, nrows * row_h + title_h), dpi=dpi)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= n:
            continue
        arr = to_hwc(items[i])
        ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
        if wrapped is not None:
            ax.set_title(wrapped[i], fontsize=fontsize, pad=2, y=-0.01, va="top")
    if title:
        fig.suptitle("\n".join(title_lines), fontsize=fontsize + 2)
    height = fig.get_figheight()
    fig.subplots_adjust(
        left=0.005,
        right=0.995,
        bottom=label_h / height,
        top=1 - title_h / height - 0.002,
        wspace=0.02,
        hspace=label_h / cell_inches + 0.02,
    )
    return fig


def save_grid_png(
    images: torch.Tensor | Sequence,
    labels: Sequence[str] | None,
    path: str | os.PathLike,
    *,
    dpi: int = 150,
    metadata: dict[str, str] | None = None,
    **kwargs,
) -> Path:
    """Write :func:`feature_grid` of ``images`` to ``path`` as PNG (``metadata``: PNG text
    chunks, e.g. the run's settings); returns the path."""
    fig = feature_grid(images, labels, **kwargs)
    path = Path(path)
    fig.savefig(path, format="png", dpi=dpi, metadata=metadata)
    return path
