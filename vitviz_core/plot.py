"""Figures shared by the book and the command line.

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

import numpy as np
import torch
from matplotlib.figure import Figure

__all__ = ["feature_grid", "save_grid_png"]


def _to_hwc(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """(3, H, W) or (H, W, 3) or (H, W) in [0, 1] -> float array (H, W, 3|1) clipped to [0, 1]."""
    arr = image.detach().float().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image, float)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(1, 2, 0)  # (H, W, C)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    return np.clip(arr, 0.0, 1.0)


def feature_grid(images: torch.Tensor | Sequence, labels: Sequence[str] | None = None, *,
                 ncols: int | None = None, title: str | None = None, cell_inches: float = 1.6,
                 fontsize: float = 8.0) -> Figure:
    """A grid of ``images`` ((N, 3, H, W) tensor or a sequence of images in [0, 1]) with one
    label under each; ``ncols`` defaults to a near-square layout (at most 8 columns)."""
    items = list(images) if not isinstance(images, torch.Tensor) else [images[i] for i in range(images.shape[0])]
    n = len(items)
    if n == 0:
        raise ValueError("feature_grid needs at least one image")
    if labels is not None and len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} images")
    ncols = ncols or min(8, max(1, math.ceil(math.sqrt(n))))
    nrows = math.ceil(n / ncols)
    label_h = 0.22 if labels is not None else 0.0
    title_h = 0.35 if title else 0.0
    fig = Figure(figsize=(ncols * cell_inches, nrows * (cell_inches + label_h) + title_h))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= n:
            continue
        arr = _to_hwc(items[i])
        ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
        if labels is not None:
            ax.set_title(str(labels[i]), fontsize=fontsize, pad=2, y=-0.01, va="top")
    if title:  # wrapped to the figure width (about 0.55 em per character)
        width_chars = max(20, int(ncols * cell_inches * 72 / ((fontsize + 2) * 0.55)))
        lines = textwrap.wrap(title, width_chars)
        title_h = 0.2 * len(lines) + 0.15
        fig.set_figheight(nrows * (cell_inches + label_h) + title_h)
        fig.suptitle("\n".join(lines), fontsize=fontsize + 2)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01 + 0.2 * label_h / max(nrows, 1),
                        top=1 - title_h / fig.get_figheight() - 0.005, wspace=0.04,
                        hspace=0.04 + label_h / cell_inches)
    return fig


def save_grid_png(images: torch.Tensor | Sequence, labels: Sequence[str] | None, path: str | os.PathLike, *,
                  dpi: int = 150, metadata: dict[str, str] | None = None, **kwargs) -> Path:
    """Write :func:`feature_grid` of ``images`` to ``path`` as PNG (``metadata``: PNG text
    chunks, e.g. the run's settings); returns the path."""
    fig = feature_grid(images, labels, **kwargs)
    path = Path(path)
    fig.savefig(path, format="png", dpi=dpi, metadata=metadata)
    return path
