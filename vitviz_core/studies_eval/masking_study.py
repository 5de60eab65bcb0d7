"""Foreground/background masking (paper Table 2): cached runs over several models and fills,
and the tables beside the paper's numbers."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from vitviz_core.evaluate.stats import Estimate, bootstrap_ci
from vitviz_core.studies_eval.helpers import _num, _pct, eval_subset
from vitviz_core.studies_eval.cache import cached
from vitviz_core.studies_eval.paper_numbers import PAPER_MASKING_LOGS, PAPER_TABLE2


@dataclass
class MaskingStudy:
    """Table 2 rows of several models on the same images, with per-image top-k correctness
    kept so that models can be compared pairwise (``MaskingResult`` keeps only estimates)."""

    results: dict[str, Any]  # model -> MaskingResult
    correct: dict[str, dict[str, dict[int, np.ndarray]]] = field(
        default_factory=dict
    )  # model -> condition -> k -> (N,)

    def difference(
        self, a: str, b: str, condition: str = "background", k: int = 5, n_boot: int = 1000, seed: int = 0
    ) -> Estimate:
        """Paired bootstrap of ``normalised top-k(a) - normalised top-k(b)`` for ``condition``
        (masked top-k over full-image top-k), resampling the same images for both models."""
        ca, cb = self.correct[a], self.correct[b]

        def stat(na: np.ndarray, da: np.ndarray, nb: np.ndarray, db: np.ndarray) -> np.ndarray:
            with np.errstate(invalid="ignore", divide="ignore"):
                return na.sum(-1) / da.sum(-1) - nb.sum(-1) / db.sum(-1)

        arrays = [
            np.asarray(v, np.float64)
            for v in (ca[condition][k], ca["full"][k], cb[condition][k], cb["full"][k])
        ]
        return bootstrap_ci(*arrays, statistic=stat, n_boot=n_boot, seed=seed)


def _masking_one(
    model: Any,
    boxes: Mapping[str, list],
    data_name: str,
    n_images: int | None,
    fill: Any,
    batch_size: int,
    n_boot: int,
    progress: bool,
) -> tuple[Any, dict[str, dict[int, np.ndarray]]]:
    """One model's full / foreground-only / background-only evaluation with the given boxes:
    :func:`vitviz_core.evaluate.masking.masking_one` (the loop of ``masking_experiment``) on a
    :class:`~vitviz_core.evaluate.masking.BoxMaskDataset`, with its per-image correctness."""
    from vitviz_core.evaluate.common import pixel_dataset
    from vitviz_core.evaluate.masking import BoxMaskDataset, masking_one

    base = pixel_dataset(model, data_name, None, n_images)
    dataset = BoxMaskDataset(base, dict(boxes), model.pixel_transform())
    res = masking_one(
        model,
        dataset,
        None,
        fill,
        batch_size=batch_size,
        n_boot=n_boot,
        progress=progress,
        settings={
            "masks": "boxes (given)",
            "fill": fill,
            "batch_size": batch_size,
            "n_boot": n_boot,
            "space": "pixel [0,1] before the model's normalisation",
        },
    )
    return res, res.correctness.correct


def masking_run(
    models: Sequence[Any],
    boxes: Mapping[str, list],
    *,
    data_name: str = "imagenet-val-1300",
    n_images: int | None = None,
    fill: Any = "black",
    batch_size: int = 32,
    n_boot: int = 1000,
    cache: bool = True,
    progress: bool = False,
) -> MaskingStudy:
    """Table 2 analogue with the given boxes (e.g. :func:`saliency_boxes`) for each model on
    the same images, cached per model. Each model sees the images (and the boxes) through its
    own pixel transform."""
    from vitviz_core.evaluate.fill import check_fill

    check_fill(fill)  # validate the fill early
    data = eval_subset(data_name, n_images)
    box_key = hashlib.sha256(
        json.dumps(
            {k: [[b.xmin, b.ymin, b.xmax, b.ymax] for b in v] for k, v in sorted(boxes.items())}
        ).encode()
    ).hexdigest()[:16]
    study = MaskingStudy(results={})
    for model in models:
        res, correct = cached(
            "masking",
            lambda m=model: _masking_one(m, boxes, data_name, n_images, fill, batch_size, n_boot, progress),
            models=[model],
            data=data,
            enabled=cache,
            settings={"boxes": box_key, "fill": fill, "batch_size": batch_size, "n_boot": n_boot},
        )
        study.results[res.model] = res
        study.correct[res.model] = correct
    return study


def fills_frame(results: Mapping[str, Mapping[str, Any]]) -> Any:
    """Normalised top-5 (foreground only / background only) per model and fill:
    ``results = {fill: {model name: MaskingResult}}``."""
    import pandas as pd

    rows = []
    for fill, per in results.items():
        for name, r in per.items():
            rows.append(
                {
                    "model": name,
                    "fill": str(fill),
                    "normalised top-5: fg only": _pct(r.normalized_top5.get("foreground")),
                    "normalised top-5: bg only": _pct(r.normalized_top5.get("background")),
                }
            )
    return pd.DataFrame(rows)


def table2_frame(
    results: Mapping[str, Any],
    paper: Mapping[str, tuple[float, float]] | None = PAPER_TABLE2,
    labels: Mapping[str, str] | None = None,
    paper_logs: Mapping[str, Mapping[str, tuple[float, float]]] | None = PAPER_MASKING_LOGS,
) -> Any:
    """Table 2 analogue, one column per model: full / foreground-only / background-only top-1
    and top-5 and the normalised top-5 (ours with 95 % CIs), then the paper's models: the
    normalised top-5 of ``paper`` and, where ``paper_logs`` has the model, the top-1/top-5 of
    the authors' released logs (the full-image column included; "–" where neither has a number)."""
    import pandas as pd

    metrics = [
        ("full image: top-1", "top1", "full"),
        ("full image: top-5", "top5", "full"),
        ("foreground only: top-1", "top1", "foreground"),
        ("foreground only: top-5", "top5", "foreground"),
        ("background only: top-1", "top1", "background"),
        ("background only: top-5", "top5", "background"),
        ("normalised top-5: foreground only", "normalized_top5", "foreground"),
        ("normalised top-5: background only", "normalized_top5", "background"),
    ]
    table: dict[str, list[str]] = {"%": [m[0] for m in metrics]}
    for name, r in results.items():
        col = f"{(labels or {}).get(name, name)} (ours)"
        table[col] = [_pct(getattr(r, attr).get(cond)) for _, attr, cond in metrics]
    for name, (fg, bg) in (paper or {}).items():
        logs = (paper_logs or {}).get(name, {})
        raw = [
            _num(logs[cond][0 if attr == "top1" else 1]) if cond in logs else "–"
            for _, attr, cond in metrics[:6]
        ]
        table[f"{name} (paper)"] = raw + [_num(fg), _num(bg)]
    return pd.DataFrame(table)
