"""The token-mixing chapter (Ghiasi, Kazemi et al. 2022, Sec. 5 and Table 1): every number,
table and figure of ``book/token_mixing.md``.

:func:`run` measures, on one class-token ViT: the spatial layout of FFN activation maps and
their spread by depth; CLS isolation and the head on single patch tokens (Table 1); the
isolation, patch-drop and one-way-cut sweeps over the join layer *L*; optionally a headless
DINOv2 with a linear probe. Sentences whose wording depends on a result (verdicts) are
values too. ``benchmarks/paper_tables.py`` calls the same :func:`run` for Table 1.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from vitviz_core.chapters.common import device_for, load, resolve_models, split_overrides
from vitviz_core.chapters.result import ChapterResult
from vitviz_core.profiles import Profile

__all__ = ["run", "DEFAULT_MODELS", "KNOBS"]

#: Model roles and their default built-ins.
DEFAULT_MODELS: dict[str, Any] = {"vit": "vit-ti16", "dino": "dinov2-s14"}

#: The chapter's parameter names -> the Profile fields they override (None = the profile's).
KNOBS: dict[str, str] = {
    "n_table": "token_table_images",
    "n_sweep": "token_sweep_images",
    "run_dino": "token_dino",
}

_OPTIONS = {
    "probe_views": 4,
    "seed": 0,
    "device": None,
    "sections": ("maps", "table", "sweep", "dino", "explore"),
    "n_maps": 48,
}


def _share(part: float, whole: float) -> str:
    """``part`` as a percentage of ``whole``, rounded; ``'–'`` when ``whole`` is 0."""
    return f"{100 * part / whole:.0f}" if whole else "–"


def run(
    models: Mapping[str, Any] | None = None, profile: str | Profile = "cpu", **overrides: Any
) -> ChapterResult:
    """Compute every number, table and figure of the token-mixing chapter.

    Args:
        models: role -> built-in / timm name or a loaded model: ``vit`` (a class-token ViT with
            an ImageNet head), ``dino`` (a headless backbone probed linearly on its CLS token).
        profile: ``"cpu"``, ``"full"`` or a :class:`Profile`.
        **overrides: the chapter's parameters (:data:`KNOBS`: ``n_table``, ``n_sweep``,
            ``run_dino``; None = the profile's value), any Profile field, and the options
            ``probe_views``, ``seed``, ``device``, ``sections`` (a subset of ``maps``, ``table``,
            ``sweep``, ``dino``, ``explore``; ``sweep`` needs ``table``) and ``n_maps``.

    Returns:
        a :class:`ChapterResult` whose keys are the chapter's glue names (``tm_*``); its
        ``data`` holds the study results (``table``, ``sweep``, ``one_way``, ``depth_maps``).
    """
    from vitviz_core import studies_eval as se

    P, opt = split_overrides("token mixing", profile, overrides, KNOBS, _OPTIONS)
    roles = resolve_models("token mixing", models, DEFAULT_MODELS)
    device = device_for(P, opt["device"])
    sections = set(opt["sections"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(opt["seed"])
        vit = load(roles["vit"], device)
        depth = len(vit.model.blocks)
        table_data = se.eval_subset("imagenet-val-1300", P.token_table_images, vit.eval_transform())
        sweep_data = se.eval_subset("imagenet-val-1300", P.token_sweep_images, vit.eval_transform())
        setting = (
            f"{vit.name} ({vit.arch}; {se.short_source(vit)}); imagenet-val-1300, {len(table_data)} images "
            f"for Table 1 and {len(sweep_data)} for the sweeps (spread evenly over the sample); "
            f"profile `{P.name}`; 95% bootstrap intervals over images ({P.bootstrap} resamples)"
        )
        res = ChapterResult(chapter="token_mixing", setting=setting, profile=P)
        res.values.update(tm_setting=setting, tm_depth=depth, tm_last=depth - 1, tm_model=vit.name)
        ctx = dict(
            P=P,
            opt=opt,
            vit=vit,
            depth=depth,
            table_data=table_data,
            sweep_data=sweep_data,
            run=dict(batch_size=P.batch_size, n_boot=P.bootstrap),
            device=device,
        )
        pix = (
            se.eval_subset("imagenet-val-1300", opt["n_maps"], vit.pixel_transform())
            if sections & {"maps", "explore"}
            else None
        )
        if "maps" in sections:
            _maps(res, ctx, pix)
        if "table" in sections:
            _table(res, ctx)
            if "sweep" in sections:
                _sweep(res, ctx)
        if "dino" in sections:
            _dino(res, ctx, roles["dino"])
        if "explore" in sections:
            res.widgets["tm_explorer"] = se.TokenMixingExplorer(vit, pix, default=(8, depth - 1))
    return res


def _maps(res: ChapterResult, ctx: dict, pix: Any) -> None:
    """Activation maps of the most selective FFN features, and their spread by depth."""
    from vitviz_core import studies_eval as se
    from vitviz_core.data import class_name

    vit, depth, P, v = ctx["vit"], ctx["depth"], ctx["P"], res.values
    n = len(pix)
    x01 = torch.stack([pix[i][0] for i in range(n)])  # (n, 3, H, W)
    dm = se.depth_maps(vit, vit.normalize(x01).to(ctx["device"]), list(range(depth)), n_boot=P.bootstrap)
    rows = [depth // 2, (2 * depth) // 3, depth - 2, depth - 1]
    show = list(range(0, n, 8))
    maps = torch.stack([dm.maps[b][show] for b in rows], dim=1)  # (len(show), 4, h, w)
    titles = [[f"#{int(dm.features[b][j])}" for b in rows] for j in show]
    res.figures["tm_maps_fig"] = se.saliency_figure(
        list(x01[show]),
        maps,
        titles,
        col_titles=[class_name(pix[j][1])[:18] for j in show],
        row_labels=[f"block {b}" for b in rows],
    )
    res.figures["tm_spread_fig"] = se.spread_figure(dm)
    last_more = dm.spread[depth - 1].low > dm.spread[depth - 2].high
    v.update(
        tm_rows=", ".join(map(str, rows)),
        tm_spread_last=dm.spread[depth - 1].percent(0),
        tm_spread_prev=dm.spread[depth - 2].percent(0),
        tm_spread_n=n,
        tm_spread_verdict="more spread out" if last_more else "not clearly more spread out",
        tm_spread_reading="in line with" if last_more else "which does not clearly show",
    )
    res.data["depth_maps"] = dm


def _table(res: ChapterResult, ctx: dict) -> None:
    """Table 1: CLS isolated until the last block, the head on single patch tokens."""
    from vitviz_core import studies_eval as se
    from vitviz_core.plot.evaluation import patch_accuracy_heatmap

    vit, depth, v = ctx["vit"], ctx["depth"], res.values
    table, sweep = se.token_mixing_runs(vit, ctx["table_data"], ctx["sweep_data"], **ctx["run"])
    p1 = se.PAPER_TABLE1
    v.update(
        tm_nat1=table.natural[1].percent(1),
        tm_iso1=table.isolate[depth - 1][1].percent(1),
        tm_iso_keep=_share(table.isolate[depth - 1][1].value, table.natural[1].value),
        tm_pmean1=table.patch_mean[1].percent(1),
        tm_pbest1=table.patch_best[1].percent(1),
        tm_best_pos=f"row {table.best_position[0]}, column {table.best_position[1]}",
        tm_n_table=len(ctx["table_data"]),
        tm_paper_iso1=f"{p1['isolate'][0]:.2f}",
        tm_paper_keep=f"{100 * p1['isolate'][0] / p1['natural'][0]:.0f}",
        tm_paper_pmean1=f"{p1['patch_mean'][0]:.2f}",
    )
    res.figures["tm_heat_fig"] = patch_accuracy_heatmap(
        table, k=1, title=f"{vit.name}: head on each patch token, top-1"
    )
    res.tables["tm_table1"] = se.table1_frame(table, label=vit.name)
    res.data.update(table=table, sweep=sweep)


def _blind_verdict(blind: Mapping[int, float], nat: float, depth: int) -> str:
    """Which blocks CLS needs to read the patches in, from the CLS-blind sweep's top-1."""
    if blind[depth - 1] >= 0.9 * nat:
        return "so, as in the paper, CLS needs only the last block to read the patches"
    if blind[depth // 2] >= 0.9 * nat:
        late = min(b for b in blind if blind[b] < 0.9 * nat)
        return (
            f"so its CLS token gathers the class over several late blocks (it loses more than a tenth "
            f"of its accuracy once it is blind up to block {late}), not in the last block alone"
        )
    return "so its CLS token needs the patches already in the middle of the network"


_CAUSE = {
    "patches": "blinding the patches costs more, and the intervals do not overlap: the collapse of the two-way "
    "isolation comes mainly from the patches losing the CLS token",
    "cls": "blinding CLS costs more, and the intervals do not overlap: the collapse of the two-way isolation "
    "comes mainly from CLS not reading the patches before the last block; the patches losing CLS costs less",
    "unresolved": "the intervals overlap, so these images do not show which of the two cuts causes the collapse",
}


def _sweep(res: ChapterResult, ctx: dict) -> None:
    """The isolation and patch-drop sweeps over *L*, the one-way cuts and their verdicts."""
    from vitviz_core import studies_eval as se

    vit, depth, P, v = ctx["vit"], ctx["depth"], ctx["P"], res.values
    sweep = res.data["sweep"]
    one_way = se.one_way_run(
        vit,
        ctx["sweep_data"],
        {"cls_blind": [3, depth // 2, depth - 3, depth - 2, depth - 1], "patches_blind": [depth - 1]},
        **ctx["run"],
    )
    res.data["one_way"] = one_way
    res.figures["tm_sweep_fig"] = se.sweep_figure(sweep, one_way=one_way)
    half = next(
        (b for b in sorted(sweep.isolate) if sweep.isolate[b][1].value < 0.5 * sweep.natural[1].value), depth
    )
    nat = sweep.natural[1].value
    pv, pd_ = se.PAPER_CLS_SWEEP, se.PAPER_DROP_SWEEP
    blind = {b: e[1].value for b, e in one_way["cls_blind"].items()}
    pb = one_way["patches_blind"][depth - 1][1]
    mc = se.mixing_comparison(sweep, one_way, n_boot=P.bootstrap)
    v.update(
        tm_n_sweep=len(ctx["sweep_data"]),
        tm_drop_last=sweep.drop[depth - 1][1].percent(1),
        tm_drop_half=sweep.drop[depth // 2][1].percent(1),
        tm_blind_last=one_way["cls_blind"][depth - 1][1].percent(1),
        tm_blind_3=one_way["cls_blind"][depth - 3][1].percent(1),
        tm_blind_mid=one_way["cls_blind"][depth // 2][1].percent(1),
        tm_pblind_last=pb.percent(1),
        tm_iso_last_sweep=sweep.isolate[depth - 1][1].percent(1),
        tm_nat_sweep=sweep.natural[1].percent(1),
        tm_mid=depth // 2,
        tm_third=depth - 3,
        tm_half_text=(
            f"falls below half of its normal accuracy once CLS is isolated up to block {half}"
            if half < depth
            else "stays above half of its normal accuracy for every L below the depth"
        ),
        tm_paper_loss10=f"{pv[0] - pv[10]:.1f}",
        tm_blind_verdict=_blind_verdict(blind, nat, depth),
        tm_pblind_verdict="costs accuracy too" if pb.high < nat else "costs little",
        tm_gain=f"{100 * mc.last_gain.value:.1f} [{100 * mc.last_gain.low:.1f}, {100 * mc.last_gain.high:.1f}]",
        tm_paper_gain=f"{mc.paper_last_gain:.2f}",
        tm_drop_share=_share(mc.drop_last.value, mc.natural.value),
        tm_paper_drop_share=f"{100 * mc.paper_drop_last / mc.paper_natural:.0f}",
        tm_paper_drop_last=f"{pd_[11]:.2f}",
        tm_paper_drop_prev=f"{pd_[10]:.2f}",
        tm_drop_prev=sweep.drop[depth - 2][1].percent(1),
        tm_prev=depth - 2,
        tm_glob_verdict=(
            "the last block's reading of the patches adds accuracy in both models (our interval "
            "excludes zero), so the last-block globalization the paper describes holds for both"
            if mc.globalization_holds
            else "our interval does not exclude zero, so on these images the last block's reading of the "
            "patches is not shown to add accuracy in this model"
        ),
        tm_iso_vs_drop=(
            "above"
            if mc.isolate.low > mc.drop_last.high
            else "below"
            if mc.isolate.high < mc.drop_last.low
            else "not distinguishable from"
        ),
        tm_paper_iso_vs_drop="above" if mc.paper_isolate > mc.paper_drop_last else "below",
        tm_cause_verdict=_CAUSE[mc.isolation_cause],
        tm_paper_in_ci=", ".join(
            f"*L* = {b}: {pd_[b]:.2f} % is "
            f"{'inside' if sweep.drop[b][1].low <= pd_[b] / 100 <= sweep.drop[b][1].high else 'outside'} "
            f"our {sweep.drop[b][1].percent(1)} %"
            for b in (depth - 2, depth - 1)
        ),
    )
    res.tables["tm_sweep_table"] = se.sweep_frame(sweep)
    res.tables["tm_one_way_table"] = se.one_way_frame(sweep, one_way)


def _dino(res: ChapterResult, ctx: dict, spec: Any) -> None:
    """A headless backbone with a linear probe on its CLS token (or why it did not run)."""
    from vitviz_core import studies_eval as se

    P, opt = ctx["P"], ctx["opt"]
    views = opt["probe_views"]
    if not P.token_dino:
        res.values["tm_dino_text"] = (
            f"*Not run on the `{P.name}` profile.* DINOv2 has no classifier: a linear probe must first be fitted "
            f"on imagenet-sample-1000 (1000 images x {views} views through ViT-S/14), which does not fit "
            "this profile's time budget. The `full` profile runs it (`-p run_dino True` forces it on any profile) "
            "and shows its Table 1 and sweep here."
        )
        return
    dino = load(spec, ctx["device"])
    # all 1000 pool images (one per class): a probe fitted on fewer never sees some classes
    probe = se.fit_probe_run(dino, n_pool=None, views=views, batch_size=P.batch_size)
    d_table = se.eval_subset("imagenet-val-1300", P.token_table_images, dino.eval_transform())
    d_sweep = se.eval_subset("imagenet-val-1300", P.token_sweep_images, dino.eval_transform())
    d_res, d_sweep_res = se.token_mixing_runs(dino, d_table, d_sweep, probe=probe, **ctx["run"])
    res.values["tm_dino_text"] = (
        f"{dino.name} ({dino.weights_label}) with a linear probe on its CLS token, fitted on "
        f"imagenet-sample-1000 (one image per class, {views} views each: a one-shot probe, "
        "so its natural accuracy is far below DINOv2's published linear-probe numbers) and "
        "evaluated on the images above; the patch rows apply the same probe to each patch token:"
    )
    res.tables["tm_dino_table1"] = se.table1_frame(d_res, label=dino.name)
    res.figures["tm_dino_sweep_fig"] = se.sweep_figure(
        d_sweep_res, paper=None, title=f"{dino.name} + linear probe"
    )
    res.data.update(dino_table=d_res, dino_sweep=d_sweep_res)
