"""Small experiment compositions the book's chapters share.

Each function runs several optimizer calls that belong together (an ablation of the recipe,
a sweep over depth, a set of hook types) and returns plain data: the images, the labels to
show under them and a table of numbers. Figures are drawn by the caller (``vitviz_core.plot``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import Tensor

__all__ = [
    "RECIPE_STEPS",
    "StudyResult",
    "recipe_ablation",
    "hook_sweep",
    "recipe_comparison",
    "depth_layers",
]

#: The augmented recipe built up one ingredient at a time (paper Sec. 3): each entry's
#: overrides are applied to the ``paper`` recipe.
RECIPE_STEPS: dict[str, dict[str, Any]] = {
    "plain (no augmentation, no TV)": dict(
        n_augment=1, jitter=0, color_mode="none", noise_mode="none", tv_weight=0.0
    ),
    "+ jitter": dict(color_mode="none", noise_mode="none", tv_weight=0.0),
    "+ color shift": dict(noise_mode="none", tv_weight=0.0),
    "+ noise": dict(tv_weight=0.0),
    "+ TV = paper recipe": dict(),
}


@dataclass
class StudyResult:
    """Images of several optimizer runs laid out as a grid (row = run, column = feature)."""

    images: Tensor  # (rows * cols, 3, H, W) in [0, 1]
    labels: list[str]  # one per image
    rows: list[str]  # row names
    cols: int  # images per row
    table: list[dict[str, Any]] = field(default_factory=list)  # one dict of numbers per run
    seconds: float = 0.0


def _run(
    loaded: Any,
    hook: str,
    features: Sequence[int],
    *,
    recipe: str,
    steps: int,
    n_augment: int | None,
    seed: int,
    progress: bool,
    **overrides: Any,
):
    from vitviz_core.optimize import optimize_features, score_images

    if n_augment is not None and "n_augment" not in overrides:
        overrides["n_augment"] = n_augment
    res = optimize_features(
        loaded, hook, list(features), recipe=recipe, steps=steps, seed=seed, progress=progress, **overrides
    )
    clean = score_images(loaded, hook, res.images, list(features))  # (K,) objective, no augmentation
    return res, clean


def recipe_ablation(
    loaded: Any,
    hook: str,
    features: Sequence[int],
    *,
    steps: int,
    n_augment: int = 8,
    seed: int = 0,
    variants: dict[str, dict[str, Any]] | None = None,
    recipes: Sequence[str] = ("paper",),
    progress: bool = False,
) -> StudyResult:
    """The same features optimized under each recipe variant (default :data:`RECIPE_STEPS`).

    ``recipes`` names base recipes for the variants; with ``variants={}`` and
    ``recipes=("paper", "released")`` it compares the two recipes unchanged.
    """
    variants = RECIPE_STEPS if variants is None else variants
    runs = [(r, name, ov) for r in recipes for name, ov in (variants.items() or [("", {})])]
    images, labels, rows, table, seconds = [], [], [], [], 0.0
    for recipe, name, overrides in runs:
        ov = dict(overrides)
        res, clean = _run(
            loaded,
            hook,
            features,
            recipe=recipe,
            steps=steps,
            n_augment=ov.pop("n_augment", n_augment),
            seed=seed,
            progress=progress,
            **ov,
        )
        row = f"{recipe}: {name}" if name and len(recipes) > 1 else (name or recipe)
        rows.append(row)
        images.append(res.images)
        labels += [f"#{f}: {v:.2f}" for f, v in zip(features, clean.tolist())]
        table.append(
            {"variant": row, "mean clean activation": float(clean.mean()), "seconds": round(res.seconds, 1)}
        )
        seconds += res.seconds
    return StudyResult(torch.cat(images), labels, rows, len(features), table, seconds)


def _exemplars(
    loaded: Any,
    hooks: Sequence[str],
    pool_images: int | None,
    progress: bool,
    pool: str = "imagenet-sample-1000",
    pool_root: Any = None,
) -> Any:
    """One exemplar search (top-8 of ``pool_images`` images of ``pool``) for all ``hooks``."""
    from vitviz_core.evaluate.exemplars import find_exemplars

    return find_exemplars(
        loaded,
        None,
        hooks=list(hooks),
        k=8,
        stats=("mean",),
        keep_maps=False,
        data_name=pool,
        data_root=pool_root,
        max_images=pool_images,
        progress=progress,
    )


def _scored_row(
    loaded: Any, hook: str, features: Sequence[int], images: Tensor, found: Any
) -> tuple[list[str], dict]:
    """Labels with each image's quality scores and the row's mean scores."""
    from vitviz_core.quality import quality_scores

    sc = quality_scores(loaded, hook, list(features), images, exemplars=found)

    def mean(key: str) -> float | None:
        vals = [getattr(s, key) for s in sc if getattr(s, key) is not None]
        return float(sum(vals) / len(vals)) if vals else None

    labels = [f"#{s.feature}: {s.caption()}" for s in sc]
    return labels, {
        "mean clean activation": mean("activation"),
        "activation / exemplars": mean("activation_ratio"),
        "HF energy / natural": mean("naturalness"),
        "exemplar agreement": mean("exemplar_agreement"),
    }


def hook_sweep(
    loaded: Any,
    hooks: Sequence[str],
    features: Sequence[int],
    *,
    steps: int,
    n_augment: int = 8,
    seed: int = 0,
    recipe: str = "paper",
    progress: bool = False,
    scores: bool = False,
    pool_images: int | None = 200,
    pool: str = "imagenet-sample-1000",
    pool_root: Any = None,
) -> StudyResult:
    """The same feature indices optimized at several hook points (depths or hook types).

    ``scores=True`` labels each image with its quality scores (:mod:`vitviz_core.quality`,
    exemplars: top-8 of ``pool_images`` images of imagenet-sample-1000) instead of its clean
    activation alone.
    """
    images, labels, table, seconds = [], [], [], 0.0
    found = _exemplars(loaded, hooks, pool_images, progress, pool, pool_root) if scores else None
    for hook in hooks:
        res, clean = _run(
            loaded,
            hook,
            features,
            recipe=recipe,
            steps=steps,
            n_augment=n_augment,
            seed=seed,
            progress=progress,
        )
        images.append(res.images)
        if scores:
            row_labels, means = _scored_row(loaded, hook, features, res.images, found)
            labels += row_labels
            table.append({"hook": hook, "recipe": recipe, **means, "seconds": round(res.seconds, 1)})
        else:
            labels += [f"#{f}: {v:.2f}" for f, v in zip(features, clean.tolist())]
            table.append(
                {"hook": hook, "mean clean activation": float(clean.mean()), "seconds": round(res.seconds, 1)}
            )
        seconds += res.seconds
    return StudyResult(torch.cat(images), labels, list(hooks), len(features), table, seconds)


def recipe_comparison(
    loaded: Any,
    hook: str,
    features: Sequence[int],
    *,
    recipes: Sequence[str] = ("paper", "fourier", "maco"),
    steps: int,
    n_augment: int = 4,
    seed: int = 0,
    pool_images: int | None = 200,
    pool: str = "imagenet-sample-1000",
    pool_root: Any = None,
    progress: bool = False,
) -> StudyResult:
    """The same features under each named recipe at equal compute (``steps x n_augment`` image
    passes per feature), each image labelled with its quality scores; one table row per recipe."""
    found = _exemplars(loaded, [hook], pool_images, progress, pool, pool_root)
    images, labels, table, seconds = [], [], [], 0.0
    for recipe in recipes:
        res, _ = _run(
            loaded,
            hook,
            features,
            recipe=recipe,
            steps=steps,
            n_augment=n_augment,
            seed=seed,
            progress=progress,
        )
        row_labels, means = _scored_row(loaded, hook, features, res.images, found)
        images.append(res.images)
        labels += row_labels
        table.append({"recipe": recipe, **means, "seconds": round(res.seconds, 1)})
        seconds += res.seconds
    return StudyResult(torch.cat(images), labels, list(recipes), len(features), table, seconds)


def depth_layers(depth: int, n: int = 4) -> list[int]:
    """``n`` block indices spread from early to late (e.g. 12 blocks, n=4 -> [1, 4, 7, 10])."""
    if n >= depth:
        return list(range(depth))
    step = depth / n
    return [int(step * i + step / 2 - 0.5) for i in range(n)]
