"""How many classes a feature's top exemplars span (the language-supervision chapter, paper
Sec. 6, asked without CLIP).

The paper's claim: late FFN features of CLIP respond to *concepts* (exemplars of many
classes that share a meaning), those of supervised ViTs to object *categories*. With no CLIP
weights offline, the chapter measures the category side on the models that exist — a
supervised ViT against a self-supervised one — by how concentrated on one class each
feature's top-k exemplars are:

- ``distinct``: number of distinct classes among a feature's top-k images;
- ``same_pair``: share of the ``k (k - 1) / 2`` exemplar pairs that show the same class.
  Its chance level for k images drawn at random from the pool is
  :func:`chance_same_pair` (``sum_c n_c (n_c - 1) / (N (N - 1))``), so the ratio to chance
  does not depend on how many images per class the pool has;
- ``distinct_groups``: the same count over super-categories when a class -> group mapping is
  given (e.g. WordNet hypernyms, when a WordNet database is installed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from vitviz_core.errors import VitvizError
from vitviz_core.evaluate.stats import Estimate, bootstrap_ci


def chance_same_pair(pool_labels: Sequence[int]) -> float:
    """Probability that two different images drawn at random from the pool share a class."""
    lab = np.asarray(pool_labels).reshape(-1)
    n = lab.size
    if n < 2:
        raise VitvizError("the pool needs at least two images")
    _, counts = np.unique(lab, return_counts=True)
    return float((counts * (counts - 1)).sum() / (n * (n - 1)))


@dataclass
class ClassSpan:
    """Per-feature class span of top-k exemplars for one model and hook."""

    model: str
    hook: str
    k: int
    labels: np.ndarray  # (F, k) class index of each exemplar
    distinct: np.ndarray  # (F,) distinct classes
    same_pair: np.ndarray  # (F,) share of same-class exemplar pairs
    chance: float  # same_pair of random images of the pool
    distinct_groups: np.ndarray | None = None  # (F,) distinct super-categories
    summary: dict[str, Estimate] = field(default_factory=dict)  # mean over features, 95 % CIs

    @property
    def ratio_to_chance(self) -> Estimate:
        """Mean same-class pair share divided by its chance level (with the CI scaled alike)."""
        e = self.summary["same_pair"]
        return Estimate(e.value / self.chance, e.low / self.chance, e.high / self.chance, e.n, e.method)


def class_span(
    labels: np.ndarray,
    pool_labels: Sequence[int],
    *,
    model: str = "",
    hook: str = "",
    groups: Mapping[int, str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> ClassSpan:
    """Class span of ``labels`` ``(F, k)`` (the class of each feature's top-k exemplars, best
    first) against a pool with ``pool_labels``; CIs by bootstrap over features."""
    lab = np.asarray(labels)
    if lab.ndim != 2 or lab.shape[1] < 2:
        raise VitvizError(f"labels must be (features, k >= 2), got shape {lab.shape}")
    f, k = lab.shape
    distinct = np.array([len(set(row.tolist())) for row in lab])  # (F,)
    same = lab[:, :, None] == lab[:, None, :]  # (F, k, k)
    iu = np.triu_indices(k, 1)
    same_pair = same[:, iu[0], iu[1]].mean(axis=1)  # (F,)
    out = ClassSpan(
        model=model,
        hook=hook,
        k=k,
        labels=lab,
        distinct=distinct,
        same_pair=same_pair,
        chance=chance_same_pair(pool_labels),
    )
    if groups is not None:
        missing = sorted({int(c) for c in lab.reshape(-1)} - {int(c) for c in groups})
        if missing:
            raise VitvizError(f"classes {missing[:5]} have no group in the mapping")
        out.distinct_groups = np.array([len({groups[int(c)] for c in row}) for row in lab])
    ci = dict(n_boot=n_boot, seed=seed)
    out.summary = {
        "distinct": bootstrap_ci(distinct.astype(np.float64), **ci),
        "same_pair": bootstrap_ci(same_pair, **ci),
    }
    if out.distinct_groups is not None:
        out.summary["distinct_groups"] = bootstrap_ci(out.distinct_groups.astype(np.float64), **ci)
    return out


def class_span_run(
    model: Any,
    hook: str,
    dataset: Any,
    *,
    k: int = 5,
    features: Sequence[int] | None = None,
    batch_size: int = 32,
    n_boot: int = 1000,
    progress: bool = False,
) -> ClassSpan:
    """Top-``k`` exemplars (mean activation over patches) of every feature of ``hook`` (or of
    ``features``) over ``dataset`` (a labelled image folder in the model's ``eval_transform``),
    then :func:`class_span`. The exemplar search is cached by ``find_exemplars``."""
    from vitviz_core.evaluate.exemplars import find_exemplars

    found = find_exemplars(
        model,
        dataset,
        hooks=[hook],
        k=k,
        stats=("mean",),
        keep_maps=False,
        batch_size=batch_size,
        progress=progress,
    )
    if not found.labels:
        raise VitvizError("the exemplar search kept no labels: use a labelled image folder")
    idx = found.topk[hook]["mean"].indices  # (k, C) dataset indices
    feats = range(idx.shape[1]) if features is None else [int(f) for f in features]
    labels = np.array([[found.labels[int(i)] for i in idx[:, f]] for f in feats])  # (F, k)
    return class_span(labels, found.labels, model=getattr(model, "name", ""), hook=hook, n_boot=n_boot)


def class_span_figure(spans: Sequence[ClassSpan]) -> Figure:
    """Histogram per model of the number of distinct classes among each feature's top-k
    exemplars (share of features), with the mean and 95 % CI in the legend."""
    fig = Figure(figsize=(6.4, 3.4))
    ax = fig.add_subplot(1, 1, 1)
    k = max(s.k for s in spans)
    bins = np.arange(0.5, k + 1.5)
    width = 0.8 / max(len(spans), 1)
    for j, s in enumerate(spans):
        hist, _ = np.histogram(s.distinct, bins=bins)
        e = s.summary["distinct"]
        x = np.arange(1, k + 1) + (j - (len(spans) - 1) / 2) * width
        ax.bar(
            x,
            100 * hist / max(len(s.distinct), 1),
            width,
            label=f"{s.model} {s.hook.replace('.hook_post', '')}: mean {e.value:.2f} [{e.low:.2f}, {e.high:.2f}]",
        )
    ax.set_xticks(range(1, k + 1))
    ax.set_xlabel(f"distinct classes among a feature's top-{k} exemplars")
    ax.set_ylabel("features (%)")
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig
