"""Matplotlib figures of an atlas (for the book; the site itself is HTML).

Both read the images a run wrote (paths in :attr:`AtlasReport.neurons` are relative to the
output folder) and return a :class:`matplotlib.figure.Figure` without showing or saving it.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure

from vitviz_core.atlas.scores import GRID_SCORE

__all__ = ["overview_figure", "neuron_figure", "pick_neuron", "describe_neuron"]


def _read(out: Path, rel: str) -> np.ndarray:
    from PIL import Image

    with Image.open(out / rel) as im:
        return np.asarray(im.convert("RGB"))  # (H, W, 3) uint8


def overview_figure(
    neurons: Sequence[dict[str, Any]], out: str | os.PathLike, max_neurons: int = 16, ncols: int = 8
) -> Figure:
    """The visualizations of the first ``max_neurons`` neurons, labelled ``layer #feature``
    and their grid score (:data:`~vitviz_core.atlas.scores.GRID_SCORE`)."""
    from vitviz_core.plot import feature_grid

    items = list(neurons)[:max_neurons]
    images = [_read(Path(out), n["image"]).astype(np.float32) / 255 for n in items]
    labels = []
    for n in items:
        score = n["scores"].get(GRID_SCORE)
        short = n["hook"].replace(".mlp.hook_post", "").replace("blocks.", "L")
        labels.append(f"{short} #{n['feature']}" + (f" ({score:.2f})" if score is not None else ""))
    return feature_grid(images, labels, ncols=min(ncols, len(images)))


def neuron_figure(neuron: dict[str, Any], out: str | os.PathLike, cell_inches: float = 1.5) -> Figure:
    """One neuron: its visualization (left), its top-k exemplars (top row) and their
    activation-map overlays (bottom row), each titled with its activation."""
    out = Path(out)
    ex = neuron["exemplars"]
    k = len(ex)
    fig = Figure(figsize=((k + 1) * cell_inches, 2 * cell_inches + 0.6))
    axes = fig.subplots(2, k + 1, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    axes[0, 0].imshow(_read(out, neuron["image"]))
    axes[0, 0].set_title("visualization", fontsize=8)
    for j, e in enumerate(ex):
        axes[0, j + 1].imshow(_read(out, e["image"]))
        axes[0, j + 1].set_title(f"{textwrap.fill(e['class'] or '', 16)}\n{e['activation']:.2f}", fontsize=8)
        axes[1, j + 1].imshow(_read(out, e["overlay"]))
    axes[1, 0].text(
        0.5, 0.5, "activation\nmaps →", ha="center", va="center", fontsize=8, transform=axes[1, 0].transAxes
    )
    fig.suptitle(f"{neuron['hook']} #{neuron['feature']}", fontsize=9)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.84, bottom=0.01, wspace=0.05, hspace=0.35)
    return fig


def pick_neuron(neurons: Sequence[dict[str, Any]], hook: str, feature: int) -> dict[str, Any]:
    """The neuron ``(hook, feature)`` of a run (VitvizError naming the choices if absent)."""
    from vitviz_core.errors import VitvizError

    for n in neurons:
        if n["hook"] == hook and n["feature"] == int(feature):
            return n
    raise VitvizError(
        f"neuron {hook} #{feature} is not in this atlas; it has "
        f"{', '.join(sorted({n['hook'] for n in neurons}))} with features "
        f"{sorted({n['feature'] for n in neurons})}"
    )


def describe_neuron(neuron: dict[str, Any]) -> str:
    """One line: the classes of its exemplars, best first, and its scores."""
    classes = ", ".join(e["class"] or e["file"].rsplit("/", 1)[-1] for e in neuron["exemplars"])
    s = neuron["scores"]
    ratio = "n/a" if s.get("activation_ratio") is None else f"{s['activation_ratio']:.2f}"
    natural = "" if s.get("naturalness") is None else f", spectral naturalness {s['naturalness']:.2f}"
    return (
        f"{neuron['hook']} #{neuron['feature']}: exemplars {classes}; visualization activation "
        f"{s['vis_activation']:.2f}, exemplar mean {s['exemplar_mean']:.2f}, ratio {ratio}{natural}"
    )
