"""Token mixing (paper Sec. 4): cached Table 1 and join-layer sweeps, one-way CLS/patch cuts,
the DINOv2 probe, and the tables and figures that put them beside the paper."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from vitviz_core.errors import DataError, VitvizError
from vitviz_core.evaluate.stats import Estimate
from vitviz_core.studies_eval.helpers import _num, _pct, eval_subset
from vitviz_core.studies_eval.cache import cached
from vitviz_core.studies_eval.paper_numbers import PAPER_CLS_SWEEP, PAPER_DROP_SWEEP, PAPER_TABLE1


def token_mixing_runs(
    model: Any,
    dataset_table: Any,
    dataset_sweep: Any,
    *,
    probe: Any = None,
    batch_size: int = 32,
    n_boot: int = 1000,
    cache: bool = True,
    progress: bool = False,
) -> tuple[Any, Any]:
    """Table 1 run (natural, CLS joining at ``depth - 1``, classifier head on every patch) and
    the full sweep (CLS join and patch drop at every ``L = 0..depth``), cached.

    When both datasets are the same images, one run with everything serves both. ``probe``
    (a CLS :class:`~vitviz_core.evaluate.probe.LinearProbe`) replaces the model's head.
    """
    from vitviz_core.evaluate.records import dataset_fingerprint
    from vitviz_core.evaluate.token_mixing import check_vit, token_mixing_experiment

    module = check_vit(model)
    depth = len(module.blocks)
    heads = {} if probe is None else {"head": probe.head_for(module), "token_head": probe.token_head}
    models = [model] + ([probe] if probe is not None else [])

    def run(dataset: Any, joins: Any, drops: Any, patch: bool) -> Any:
        settings = {
            "joins": joins,
            "drops": drops,
            "patch": patch,
            "batch_size": batch_size,
            "n_boot": n_boot,
        }
        return cached(
            "token_mixing",
            lambda: token_mixing_experiment(
                model,
                dataset,
                join_layers=joins,
                drop_layers=drops,
                patch_head=patch,
                batch_size=batch_size,
                n_boot=n_boot,
                progress=progress,
                **heads,
            ),
            models=models,
            data=dataset,
            settings=settings,
            enabled=cache,
        )

    same = dataset_fingerprint(dataset_table) == dataset_fingerprint(dataset_sweep)
    if same:
        both = run(dataset_table, None, None, True)
        return both, both
    table = run(dataset_table, [0, depth - 1], [], True)
    sweep = run(dataset_sweep, None, None, False)
    return table, sweep


ONE_WAY = {
    "cls_blind": "CLS cannot see the patches (patches still see CLS)",
    "patches_blind": "patches cannot see CLS (CLS sees everything)",
}


def _one_way_mask(kind: str) -> Callable[[int], Tensor]:
    """``n_tokens -> (L, L)`` boolean attention mask (True = may attend) cutting one direction
    between token 0 (CLS) and the others."""
    if kind not in ONE_WAY:
        raise VitvizError(f"unknown one-way isolation {kind!r}: use one of {sorted(ONE_WAY)}")

    def mask_fn(n_tokens: int) -> Tensor:
        mask = torch.ones(n_tokens, n_tokens, dtype=torch.bool)
        if kind == "cls_blind":
            mask[0, 1:] = False
        else:
            mask[1:, 0] = False
        return mask

    return mask_fn


def one_way_logits(
    model: Any, x: Tensor, layers: Mapping[str, Sequence[int]], head: Callable[[Tensor], Tensor] | None = None
) -> dict[str, dict[int, Tensor]]:
    """Logits with attention cut in **one** direction between CLS and the patches in blocks
    ``[0, L)`` (the paper's isolation cuts both): ``layers = {"cls_blind": [...],
    "patches_blind": [...]}`` -> ``{kind: {L: (B, K)}}``. One branching forward pass with
    the cut as an attention-mask edit (:func:`~vitviz_core.evaluate.token_mixing.prefix_masked_logits`):
    the masked prefix is shared by all ``L`` of a kind."""
    from vitviz_core.evaluate.token_mixing import prefix_masked_logits

    groups = {kind: (_one_way_mask(kind), ls) for kind, ls in layers.items()}
    return prefix_masked_logits(model, x, groups, (), head)["groups"]


def one_way_run(
    model: Any,
    dataset: Any,
    layers: Mapping[str, Sequence[int]],
    *,
    probe: Any = None,
    batch_size: int = 32,
    n_boot: int = 1000,
    cache: bool = True,
    progress: bool = False,
) -> dict[str, dict[int, dict[int, Estimate]]]:
    """Accuracy (95 % CIs) of :func:`one_way_logits` over ``dataset`` (normalised inputs),
    cached: ``{kind: {L: {k: Estimate}}}``."""
    from tqdm.auto import tqdm

    from vitviz_core.evaluate.common import make_loader, model_device, unpack_batch
    from vitviz_core.evaluate.stats import accuracy_with_ci, topk_correct
    from vitviz_core.models import as_loaded

    head = probe.head_for(as_loaded(model).model) if probe is not None else None
    layers = {k: sorted({int(v) for v in ls}) for k, ls in layers.items()}

    def compute() -> dict[str, dict[int, dict[int, Estimate]]]:
        dev = model_device(model)
        hits: dict[str, dict[int, dict[int, list[Tensor]]]] = {}
        offset = 0
        with torch.inference_mode():
            for batch in tqdm(
                make_loader(dataset, batch_size), desc="one-way isolation", disable=not progress, leave=False
            ):
                x, y, _, _ = unpack_batch(batch, offset)
                offset += x.shape[0]
                for kind, per in one_way_logits(model, x.to(dev), layers, head).items():
                    for layer, logits in per.items():
                        for k, c in topk_correct(logits.float(), y, (1, 5)).items():
                            hits.setdefault(kind, {}).setdefault(layer, {}).setdefault(k, []).append(c.cpu())
        if offset == 0:
            raise DataError("the dataset is empty: nothing to evaluate")
        return {
            kind: {
                layer: {k: accuracy_with_ci(torch.cat(v).numpy(), n_boot=n_boot) for k, v in d.items()}
                for layer, d in per.items()
            }
            for kind, per in hits.items()
        }

    models = [model] + ([probe] if probe is not None else [])
    return cached(
        "one_way",
        compute,
        models=models,
        data=dataset,
        enabled=cache,
        settings={"layers": layers, "batch_size": batch_size, "n_boot": n_boot},
    )


def one_way_frame(sweep: Any, one_way: Mapping[str, Mapping[int, Mapping[int, Estimate]]]) -> Any:
    """Per ``L``: the paper's two-way isolation beside the two one-way cuts (top-1, CIs)."""
    import pandas as pd

    layers = sorted({v for per in one_way.values() for v in per})
    rows = []
    for v in layers:
        row = {"L": v, "both directions cut (paper)": _pct(sweep.isolate.get(v, {}).get(1))}
        for kind, text in ONE_WAY.items():
            if kind in one_way:
                row[text] = _pct(one_way[kind].get(v, {}).get(1))
        rows.append(row)
    return pd.DataFrame(rows)


def fit_probe_run(
    model: Any,
    *,
    pool_name: str = "imagenet-sample-1000",
    n_pool: int | None = None,
    views: int = 1,
    teacher: Any = None,
    epochs: int = 300,
    batch_size: int = 32,
    cache: bool = True,
    progress: bool = False,
) -> Any:
    """A linear probe on the CLS token of a headless backbone, fitted on ``pool_name`` (never
    on the evaluation images), optionally distilling ``teacher``'s logits; cached."""
    from vitviz_core.evaluate.probe import extract_features, fit_linear_probe

    pool = eval_subset(pool_name, n_pool, transform=model.pixel_transform())

    def compute() -> Any:
        feats, labels, tlog = extract_features(
            model,
            pool,
            features="cls",
            views=views,
            teacher=teacher,
            batch_size=batch_size,
            progress=progress,
        )
        npre = int(getattr(model.model, "num_prefix_tokens", 1))
        return fit_linear_probe(
            feats,
            tlog if tlog is not None else labels,
            num_classes=1000,
            features="cls",
            num_prefix_tokens=npre,
            epochs=epochs,
            labels=labels if tlog is not None else None,
        )

    return cached(
        "probe",
        compute,
        models=[model] + ([teacher] if teacher is not None else []),
        data=pool,
        settings={"views": views, "epochs": epochs},
        enabled=cache,
    )


def table1_frame(result: Any, paper: Mapping[str, Any] | None = PAPER_TABLE1, label: str = "ours") -> Any:
    """Table 1 analogue as a DataFrame: ours (95 % CIs) beside the paper's numbers."""
    import pandas as pd

    d = result.depth
    rows = [
        ("Natural", result.natural, "natural"),
        (f"Isolating CLS (joins at layer {d - 1})", result.isolate.get(d - 1), "isolate"),
        ("Classifier head on each patch: average", result.patch_mean or None, "patch_mean"),
        (
            f"Classifier head on each patch: best {tuple(result.best_position or ())}",
            result.patch_best or None,
            "patch_best",
        ),
    ]
    out = []
    for name, est, key in rows:
        row = {
            "setting": name,
            f"{label} top-1 % [95% CI]": _pct(est.get(1)) if est else "–",
            f"{label} top-5 % [95% CI]": _pct(est.get(5)) if est else "–",
        }
        if paper is not None:
            p = paper.get(key)
            row[f"paper {paper['model']} top-1 %"] = _num(p[0] if p else None)
            row[f"paper {paper['model']} top-5 %"] = _num(p[1] if p else None)
        out.append(row)
    return pd.DataFrame(out)


def sweep_frame(
    result: Any,
    paper: Mapping[int, float | None] | None = PAPER_CLS_SWEEP,
    paper_model: str = "ViT-B/16",
    paper_drop: Mapping[int, float | None] | None = PAPER_DROP_SWEEP,
) -> Any:
    """One row per layer ``L``: CLS-join and patch-drop top-1 (ours, CIs) and the paper's
    released CLS-join and patch-drop top-1."""
    import pandas as pd

    layers = sorted(set(result.isolate) | set(result.drop))
    rows = []
    for v in layers:
        row = {
            "L": v,
            "CLS joins at block L: top-1 % [95% CI]": _pct(result.isolate.get(v, {}).get(1)),
            "patches dropped from block L: top-1 % [95% CI]": _pct(result.drop.get(v, {}).get(1)),
        }
        if paper is not None:
            row[f"paper {paper_model}, CLS joins at L: top-1 %"] = _num(paper.get(v))
        if paper_drop is not None:
            row[f"paper {paper_model}, patches dropped from L: top-1 %"] = _num(paper_drop.get(v))
        rows.append(row)
    return pd.DataFrame(rows)


def sweep_figure(
    result: Any,
    paper: Mapping[int, float | None] | None = PAPER_CLS_SWEEP,
    paper_model: str = "ViT-B/16",
    k: int = 1,
    title: str | None = None,
    one_way: Mapping[str, Mapping[int, Mapping[int, Estimate]]] | None = None,
    paper_drop: Mapping[int, float | None] | None = PAPER_DROP_SWEEP,
) -> Figure:
    """The join/drop sweeps with 95 % CI bands (``plot.evaluation.join_layer_curves``), the
    one-way "CLS cannot see the patches" points with CI bars, and the paper's released
    CLS-join (grey squares) and patch-drop (grey triangles) values."""
    from vitviz_core.plot.evaluation import join_layer_curves

    fig = join_layer_curves(result, k=k, title=title, size=(6.4, 3.8))
    ax = fig.axes[0]
    blind = (one_way or {}).get("cls_blind")
    if blind:
        ls = sorted(blind)
        est = [blind[v][k] for v in ls]
        v = np.array([100 * e.value for e in est])
        err = np.array([[100 * (e.value - e.low) for e in est], [100 * (e.high - e.value) for e in est]])
        ax.errorbar(
            ls,
            v,
            yerr=np.clip(err, 0, None),
            fmt="D",
            ms=4,
            capsize=3,
            color="tab:green",
            label="CLS cannot see patches in [0, L) (patches see CLS)",
        )
    if paper is not None and k == 1:
        pts = sorted((v, y) for v, y in paper.items() if y is not None and v <= result.depth)
        ax.plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            ls=":",
            marker="s",
            ms=4,
            color="0.45",
            label=f"paper {paper_model}, CLS joins at L (released logs)",
        )
    if paper_drop is not None and k == 1:
        pts = sorted((v, y) for v, y in paper_drop.items() if y is not None and v <= result.depth)
        ax.plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            ls="--",
            marker="^",
            ms=5,
            color="0.25",
            label=f"paper {paper_model}, patches dropped from L (released logs)",
        )
    for t in ax.texts:  # the "natural" label of plot.evaluation: below its line, clear of the markers
        t.set_x(result.depth / 2)
        t.set_verticalalignment("top")
    ax.set_xticks(range(result.depth + 1))
    ax.set_ylim(-2, 100)
    fig.set_size_inches(6.4, 4.6)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    fig.tight_layout()
    return fig


@dataclass
class MixingComparison:
    """What the patch-drop sweep and the one-way cuts say, ours beside the paper's logs.

    ``last_gain``: natural minus patches-dropped-before-the-last-block top-1 (paired, CI):
    what the last block's reading of the patches adds. ``drop_last_share``: that dropped
    accuracy as a fraction of natural. The one-way fields are the top-1 with CLS isolated
    both ways, with only CLS blinded and with only the patches blinded, all at the last
    block ``layer``. Fractions, not percent; the paper's values are percent from its logs.
    """

    layer: int
    natural: Estimate
    drop_last: Estimate
    last_gain: Estimate
    paper_natural: float | None
    paper_drop_last: float | None
    isolate: Estimate | None = None
    cls_blind: Estimate | None = None
    patches_blind: Estimate | None = None
    paper_isolate: float | None = None

    @property
    def paper_last_gain(self) -> float | None:
        """Points the paper's model loses when the last block cannot read the patches."""
        if self.paper_natural is None or self.paper_drop_last is None:
            return None
        return self.paper_natural - self.paper_drop_last

    @property
    def globalization_holds(self) -> bool:
        """True when our last-block gain is above zero (CI excludes 0) and the paper's is positive."""
        return bool(self.last_gain.low > 0 and (self.paper_last_gain or 0) > 0)

    @property
    def patches_need_cls(self) -> bool | None:
        """True when blinding only the patches to CLS costs more than blinding only CLS to
        the patches (95 % intervals do not overlap); None without one-way cuts."""
        if self.cls_blind is None or self.patches_blind is None:
            return None
        return bool(self.patches_blind.high < self.cls_blind.low)

    @property
    def isolation_cause(self) -> str | None:
        """Which one-way cut costs more at ``layer`` (95 % intervals apart): ``"patches"``
        (the patches losing CLS), ``"cls"`` (CLS not reading the patches before ``layer``),
        ``"unresolved"`` (intervals overlap) or None without one-way cuts."""
        if self.cls_blind is None or self.patches_blind is None:
            return None
        if self.patches_blind.high < self.cls_blind.low:
            return "patches"
        if self.cls_blind.high < self.patches_blind.low:
            return "cls"
        return "unresolved"


def mixing_comparison(
    sweep: Any,
    one_way: Mapping[str, Mapping[int, Mapping[int, Estimate]]] | None = None,
    *,
    layer: int | None = None,
    n_boot: int = 1000,
    paper_drop: Mapping[int, float | None] | None = PAPER_DROP_SWEEP,
    paper_cls: Mapping[int, float | None] | None = PAPER_CLS_SWEEP,
) -> MixingComparison:
    """Compare the last-block patch-drop loss of ``sweep`` (a TokenMixingResult with per-image
    ``correct`` and ``drop`` at ``layer``, default ``depth - 1``) with the paper's released
    ViT-B/16 sweep, and (with ``one_way``) the two one-way cuts at ``layer``."""
    from vitviz_core.studies_eval.frequency_study import difference_ci

    depth = sweep.depth
    v = depth - 1 if layer is None else int(layer)
    if v not in sweep.drop:
        raise VitvizError(
            f"the sweep has no patch-drop result at L = {v}: run it with drop layers including {v}"
        )
    key = f"drop@{v}"
    if "natural" not in sweep.correct or key not in sweep.correct:
        raise VitvizError("the sweep keeps no per-image correctness: re-run token_mixing_experiment")
    gain = difference_ci(sweep.correct["natural"][1], sweep.correct[key][1], n_boot=n_boot)
    # the paper's L counts blocks of its 12-block ViT-B/16: compare at the same distance from the end
    pl = 12 - (depth - v)
    cut = one_way or {}
    return MixingComparison(
        layer=v,
        natural=sweep.natural[1],
        drop_last=sweep.drop[v][1],
        last_gain=gain,
        paper_natural=(paper_drop or {}).get(12),
        paper_drop_last=(paper_drop or {}).get(pl),
        isolate=sweep.isolate.get(v, {}).get(1),
        cls_blind=cut.get("cls_blind", {}).get(v, {}).get(1),
        patches_blind=cut.get("patches_blind", {}).get(v, {}).get(1),
        paper_isolate=(paper_cls or {}).get(pl),
    )
