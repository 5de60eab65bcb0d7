"""Frequency robustness (paper Fig. 16): low- and high-pass sweeps with per-image correctness
for paired ViT-minus-CNN differences, and their tables and figures."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure
from torch import Tensor

from vitviz_core.evaluate.stats import Estimate, bootstrap_ci
from vitviz_core.studies_eval.helpers import _pct
from vitviz_core.studies_eval.cache import cached


#: How the tables and figures name each kind of filter.
KIND_LABELS: dict[str, str] = {
    "low": "low-pass",
    "high": "high-pass",
    "gaussian": "Gaussian low-pass (gain 1/2 at)",
}


@dataclass
class FrequencyStudy:
    """Low-/high-pass accuracy of one model, with per-image correctness kept."""

    model: str
    results: dict[str, Any]  # kind -> FrequencyResult (inf = unfiltered)
    correct: dict[str, dict[int, np.ndarray]] = field(
        default_factory=dict
    )  # "kind@c" / "natural" -> k -> (N,)


def frequency_run(
    model: Any,
    dataset: Any,
    *,
    low: Sequence[float] = (4, 8, 16, 32, 64),
    high: Sequence[float] = (8, 32),
    gaussian: Sequence[float] = (),
    batch_size: int = 32,
    n_boot: int = 1000,
    cache: bool = True,
    progress: bool = False,
) -> FrequencyStudy:
    """Radial low-pass and high-pass accuracy versus cut-off (cycles per image), each kind
    with its own cut-offs, every image decoded once; cached.

    ``dataset`` yields ``(x01, label, index)`` in the model's pixel view. The unfiltered
    accuracy is appended to the low-pass curves as cut-off ``inf`` (for a high-pass the
    unfiltered image is cut-off 0; it stays in ``natural_top1``). ``gaussian`` gives the
    cut-offs of a Gaussian low-pass (gain 1/2 at the cut-off; kind ``"gaussian"``) run beside
    the ideal one (kind ``"low"``).
    """
    from vitviz_core.evaluate.common import evaluate_variants, make_loader
    from vitviz_core.evaluate.frequency import FrequencyResult, high_pass, low_pass
    from vitviz_core.evaluate.records import ResultRecord
    from vitviz_core.evaluate.stats import accuracy_with_ci

    cuts = {"low": [float(c) for c in low], "high": [float(c) for c in high]}
    if gaussian:
        cuts["gaussian"] = [float(c) for c in gaussian]

    def variants(x: Tensor, *_: Any) -> dict[str, Tensor]:
        out = {"natural": x}
        for c in cuts["low"]:
            out[f"low@{c:g}"] = low_pass(x, c)
        for c in cuts["high"]:
            out[f"high@{c:g}"] = high_pass(x, c)
        for c in cuts.get("gaussian", []):
            out[f"gaussian@{c:g}"] = low_pass(x, c, window="gaussian")
        return out

    def compute() -> FrequencyStudy:
        record = ResultRecord.start(
            "frequency_run",
            model,
            dataset,
            {
                "cutoffs": cuts,
                "units": "cycles per image (radius)",
                "keep_dc": True,
                "batch_size": batch_size,
                "n_boot": n_boot,
            },
        )
        corr = evaluate_variants(
            model, make_loader(dataset, batch_size), variants, progress=progress, desc="frequency"
        )
        record.finish()
        ci = {"n_boot": n_boot}
        nat = {k: accuracy_with_ci(corr.correct["natural"][k], **ci) for k in (1, 5)}
        results = {}
        for kind, cs in cuts.items():
            if not cs:
                continue
            tail = (
                [math.inf] if kind in ("low", "gaussian") else []
            )  # a low-pass at cut-off inf is the unfiltered image
            res = FrequencyResult(
                cutoffs=cs + tail, kinds=[kind], natural_top1=nat[1], natural_top5=nat[5], record=record
            )
            for k, store in ((1, res.top1), (5, res.top5)):
                store[kind] = [accuracy_with_ci(corr.correct[f"{kind}@{c:g}"][k], **ci) for c in cs] + [
                    nat[k] for _ in tail
                ]
            results[kind] = res
        return FrequencyStudy(
            model=getattr(model, "name", type(model).__name__), results=results, correct=corr.correct
        )

    settings: dict[str, Any] = {"cuts": cuts, "batch_size": batch_size, "n_boot": n_boot}

    return cached("frequency", compute, models=[model], data=dataset, enabled=cache, settings=settings)


def difference_ci(a: np.ndarray, b: np.ndarray, n_boot: int = 1000, seed: int = 0) -> Estimate:
    """Paired difference of two accuracies on the same images (``mean(a) - mean(b)``)."""

    def diff(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return x.mean(axis=-1) - y.mean(axis=-1)

    return bootstrap_ci(
        np.asarray(a, np.float64), np.asarray(b, np.float64), statistic=diff, n_boot=n_boot, seed=seed
    )


def frequency_frame(
    a: FrequencyStudy, b: FrequencyStudy, kind: str = "low", k: int = 1, n_boot: int = 1000
) -> Any:
    """Per cut-off (then unfiltered): top-k of both models and their paired difference
    ``a - b`` (95 % CIs, the same images resampled for both)."""
    import pandas as pd

    ra, rb = a.results[kind], b.results[kind]
    rows = []
    cuts = [c for c in ra.cutoffs if math.isfinite(c)]
    for i, c in enumerate(cuts + [math.inf]):
        key = f"{kind}@{c:g}" if math.isfinite(c) else "natural"
        if math.isfinite(c):
            est_a, est_b = (
                (ra.top1 if k == 1 else ra.top5)[kind][i],
                (rb.top1 if k == 1 else rb.top5)[kind][i],
            )
        else:
            est_a, est_b = (
                (ra.natural_top1, rb.natural_top1) if k == 1 else (ra.natural_top5, rb.natural_top5)
            )
        d = difference_ci(a.correct[key][k], b.correct[key][k], n_boot=n_boot)
        rows.append(
            {
                f"{KIND_LABELS.get(kind, kind)} cut-off": f"{c:g}"
                if math.isfinite(c)
                else "none (unfiltered)",
                f"{a.model} top-{k} %": _pct(est_a),
                f"{b.model} top-{k} %": _pct(est_b),
                "difference (points)": f"{100 * d.value:+.1f} [{100 * d.low:+.1f}, {100 * d.high:+.1f}]",
            }
        )
    return pd.DataFrame(rows)


def frequency_figure(studies: Sequence[FrequencyStudy], kind: str = "low", k: int = 1) -> Figure:
    """Top-k against cut-off per model with 95 % bands (``plot.evaluation.frequency_curves``); for
    high-pass curves the unfiltered accuracies are dashed lines."""
    from vitviz_core.plot.evaluation import frequency_curves

    results = {st.model: st.results[kind] for st in studies}
    fig = frequency_curves(
        results, kind, k, xlabel=f"{KIND_LABELS.get(kind, kind)} cut-off (cycles per image)"
    )
    if kind == "high":  # the unfiltered image is cut-off 0: draw it as a line in each model's colour
        ax = fig.axes[0]
        for st, line in zip(studies, ax.get_lines()):
            nat = st.results[kind].natural_top1 if k == 1 else st.results[kind].natural_top5
            ax.axhline(100 * nat.value, ls="--", lw=1, color=line.get_color(), label=f"{st.model} unfiltered")
        ax.set_ylim(-2, 100)
        ax.legend(fontsize=7)
    return fig
