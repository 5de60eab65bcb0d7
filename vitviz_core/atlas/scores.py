"""Neuron scores of the atlas: the one place that turns a neuron's results into numbers.

Every score shown in the index and on the site comes from :func:`neuron_scores`. Today it
records the visualization's clean activation, the mean activation of its top-k dataset
exemplars (same reduction: mean over patch tokens), and their ratio (DESIGN §11,
"activation ratio": > 1 means the optimizer found a stronger stimulus than any image in the
data), and the visualization's spectral naturalness (:func:`vitviz_core.quality.spectral_naturalness`,
computed by the visualization task: 1.0 = the spectrum of natural images, colour noise >= 10).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["neuron_scores", "SCORE_LABELS", "GRID_SCORE"]

#: the score shown under each thumbnail of the neuron grid
GRID_SCORE = "activation_ratio"

SCORE_LABELS = {
    "vis_activation": "activation of the visualization (mean over patches)",
    "exemplar_mean": "mean activation of the top-k exemplars",
    "exemplar_top": "activation of the best exemplar",
    "activation_ratio": "visualization / exemplar mean",
    "naturalness": "spectral naturalness (1 = natural images, noise >= 10)",
}


def neuron_scores(
    vis_activation: float | None, exemplar_values: np.ndarray | None, naturalness: float | None = None
) -> dict[str, Any]:
    """Scores of one neuron from its visualization's clean activation, its exemplars'
    activations ``(k,)`` (best first) and its spectral naturalness; missing inputs give
    ``None`` entries."""
    out: dict[str, Any] = {k: None for k in SCORE_LABELS}
    if naturalness is not None and math.isfinite(float(naturalness)):
        out["naturalness"] = float(naturalness)
    if vis_activation is not None and math.isfinite(float(vis_activation)):
        out["vis_activation"] = float(vis_activation)
    if exemplar_values is not None:
        v = np.asarray(exemplar_values, dtype=np.float64)
        v = v[np.isfinite(v)]
        if v.size:
            out["exemplar_mean"] = float(v.mean())
            out["exemplar_top"] = float(v.max())
    if out["vis_activation"] is not None and out["exemplar_mean"] is not None and out["exemplar_mean"] > 0:
        out["activation_ratio"] = out["vis_activation"] / out["exemplar_mean"]
    return out
