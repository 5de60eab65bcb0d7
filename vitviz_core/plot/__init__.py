"""Figures, by kind. Every function returns a :class:`matplotlib.figure.Figure` built without
pyplot state: a library call never shows or saves anything; a notebook displays the returned
figure as its cell's value.

- :mod:`vitviz_core.plot.images`      image helpers: :func:`to_hwc`, :func:`image_array`, :func:`upsample`
- :mod:`vitviz_core.plot.grids`       labelled image grids: :func:`feature_grid`, :func:`save_grid_png`
- :mod:`vitviz_core.plot.evaluation`  evaluation figures: overlays, exemplar grids, accuracy curves, bars
- :mod:`vitviz_core.plot.neurons`     the neurons chapter's figures (level-0 views, probes, purity, ...)
"""

from __future__ import annotations

from vitviz_core.plot.grids import feature_grid, save_grid_png, wrap_label
from vitviz_core.plot.images import image_array, to_hwc, upsample

__all__ = ["feature_grid", "save_grid_png", "wrap_label", "to_hwc", "image_array", "upsample"]
