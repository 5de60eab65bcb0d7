"""The feature-visualization chapter (Ghiasi, Kazemi et al. 2022, Sec. 3, Appendix B): every
number, table and figure of ``book/feature_visualization.md``.

:func:`run` optimizes FFN features of one ViT (and of a second, self-supervised one) through
the compositions of :mod:`vitviz_core.studies`, in the chapter's sections:

- ``ablation``    the paper's recipe built up one ingredient at a time;
- ``recipes``     the paper's recipe against the authors' released code;
- ``compare``     pixel, Fourier and MaCo parametrizations at equal compute, with quality scores;
- ``hooks``       query, key, value and FFN features of one block;
- ``depth``       FFN features from early to late blocks, for both models;
- ``exemplars``   the late features beside their most-activating pool images;
- ``explore``     the :class:`~vitviz_core.explorer.FeatureExplorer`.
"""

from __future__ import annotations

from typing import Any, Mapping

import pandas as pd
import torch

from vitviz_core.chapters.common import device_for, load, resolve_models, split_overrides
from vitviz_core.chapters.result import ChapterResult
from vitviz_core.profiles import Profile

__all__ = ["run", "SECTIONS", "DEFAULT_MODELS", "KNOBS"]

SECTIONS: tuple[str, ...] = ("ablation", "recipes", "compare", "hooks", "depth", "exemplars", "explore")

#: Model roles and their default built-ins: ``vit`` (supervised), ``second`` (self-supervised).
DEFAULT_MODELS: dict[str, Any] = {"vit": "vit-ti16", "second": "dinov2-s14"}

#: The chapter's parameter names -> the Profile fields they override (None = the profile's).
KNOBS: dict[str, str] = {
    "recipe": "vis_recipe",
    "steps": "steps",
    "n_augment": "n_augment",
    "n_features": "n_features",
}

_OPTIONS = {
    "layer": 6,
    "features": None,
    "seed": 0,
    "device": None,
    "sections": SECTIONS,
    "compare_recipes": ("paper", "fourier", "maco"),
    "n_depths": 4,
}


def run(
    models: Mapping[str, Any] | None = None, profile: str | Profile = "cpu", **overrides: Any
) -> ChapterResult:
    """Compute every number, table and figure of the feature-visualization chapter.

    Args:
        models: role -> built-in / timm name or a loaded model (:data:`DEFAULT_MODELS`).
        profile: ``"cpu"``, ``"full"`` or a :class:`Profile`.
        **overrides: the chapter's parameters (:data:`KNOBS`: ``recipe`` of the depth and
            exemplar figures, ``steps``, ``n_augment``, ``n_features``; None = the profile's),
            any Profile field, and the options ``layer`` (block of the recipe ablations),
            ``features`` (FFN channels; None = the first ``n_features``), ``seed``, ``device``,
            ``sections`` (a subset of :data:`SECTIONS`; ``exemplars`` and ``explore`` need
            ``depth``), ``compare_recipes`` and ``n_depths`` (blocks of the depth figure).

    Returns:
        a :class:`ChapterResult` whose keys are the chapter's glue names (``fv_*``); its
        ``data`` holds the :class:`~vitviz_core.studies.StudyResult` of each section.
    """
    from vitviz_core.recipes import get_recipe

    P, opt = split_overrides("feature visualization", profile, overrides, KNOBS, _OPTIONS, SECTIONS)
    roles = resolve_models("feature visualization", models, DEFAULT_MODELS)
    device = device_for(P, opt["device"])
    sections = set(opt["sections"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(opt["seed"])
        vit = load(roles["vit"], device)
        features = list(range(P.n_features)) if opt["features"] is None else list(opt["features"])
        setting = f"{vit.name} ({vit.weights_label}); {P.describe()}"
        res = ChapterResult(chapter="feature_visualization", setting=setting, profile=P)
        paper = get_recipe("paper")
        passes = P.steps * P.n_augment
        res.values.update(
            fv_setting=setting,
            fv_steps=P.steps,
            fv_augment=P.n_augment,
            fv_layer=opt["layer"],
            fv_vis_recipe=P.vis_recipe,
            fv_paper_passes=paper.steps * paper.n_augment,
            fv_profile_passes=passes,
            fv_pass_ratio=f"{paper.steps * paper.n_augment / passes:.0f}",
        )
        ctx = dict(
            P=P,
            opt=opt,
            vit=vit,
            features=features,
            hook=f"blocks.{opt['layer']}.mlp.hook_post",
            run=dict(steps=P.steps, n_augment=P.n_augment, seed=opt["seed"]),
            device=device,
        )
        if "ablation" in sections:
            _ablation(res, ctx)
        if "recipes" in sections:
            _recipes(res, ctx)
        if "compare" in sections:
            _compare(res, ctx)
        if "hooks" in sections:
            _hooks(res, ctx)
        if "depth" in sections:
            _depth(res, ctx)
            ctx["second"] = load(roles["second"], device)
            _second(res, ctx)
            if "exemplars" in sections:
                _exemplars(res, ctx)
            if "explore" in sections:
                from vitviz_core.explorer import FeatureExplorer

                second = ctx["second"]
                res.widgets["fv_explorer"] = FeatureExplorer(
                    {vit.name: vit, second.name: second},
                    pool="imagenet-sample-1000",
                    pool_images=P.pool_images,
                    steps=P.steps,
                    n_augment=P.n_augment,
                    default=(vit.name, ctx["layers"][1], features[0]),
                    seed=opt["seed"],
                    recipe=P.vis_recipe,
                )
    return res


def _grid(study: Any) -> Any:
    from vitviz_core.plot import feature_grid

    return feature_grid(study.images, study.labels, ncols=study.cols)


def _ablation(res: ChapterResult, ctx: dict) -> None:
    """The recipe built up one ingredient at a time."""
    from vitviz_core.quality import spectral_naturalness
    from vitviz_core.studies import recipe_ablation

    n = len(ctx["features"])
    ablation = recipe_ablation(ctx["vit"], ctx["hook"], ctx["features"], **ctx["run"])
    table = pd.DataFrame(ablation.table)
    res.figures["fv_ablation_fig"] = _grid(ablation)
    res.tables["fv_ablation_table"] = table
    res.values.update(
        fv_plain_act=f"{table['mean clean activation'].iloc[0]:.2f}",
        fv_paper_act=f"{table['mean clean activation'].iloc[-1]:.2f}",
        fv_plain_hf=f"{spectral_naturalness(ablation.images[:n]).mean():.1f}",
        fv_paper_hf=f"{spectral_naturalness(ablation.images[-n:]).mean():.1f}",
    )
    res.data["ablation"] = ablation


def _recipes(res: ChapterResult, ctx: dict) -> None:
    """The paper's recipe (Appendix B) against the released code's."""
    from vitviz_core.quality import spectral_naturalness
    from vitviz_core.studies import recipe_ablation

    n = len(ctx["features"])
    both = recipe_ablation(
        ctx["vit"], ctx["hook"], ctx["features"], variants={}, recipes=("paper", "released"), **ctx["run"]
    )
    res.figures["fv_recipes_fig"] = _grid(both)
    res.tables["fv_recipes_table"] = pd.DataFrame(both.table)
    res.values.update(
        fv_hf_paper=f"{spectral_naturalness(both.images[:n]).mean():.1f}",
        fv_hf_released=f"{spectral_naturalness(both.images[n:]).mean():.1f}",
    )
    res.data["recipes"] = both


def _compare(res: ChapterResult, ctx: dict) -> None:
    """Image parametrizations at equal compute, with quality scores."""
    from vitviz_core.studies import recipe_comparison

    P, vis = ctx["P"], ctx["P"].vis_recipe
    cmp = recipe_comparison(
        ctx["vit"],
        ctx["hook"],
        ctx["features"],
        recipes=tuple(ctx["opt"]["compare_recipes"]),
        pool_images=P.pool_images,
        **ctx["run"],
    )
    table = pd.DataFrame(cmp.table).set_index("recipe")
    res.figures["fv_cmp_fig"] = _grid(cmp)
    res.tables["fv_cmp_table"] = table.reset_index()
    res.values.update(
        fv_cmp_paper_ratio=f"{table.loc['paper', 'activation / exemplars']:.2f}",
        fv_cmp_paper_hf=f"{table.loc['paper', 'HF energy / natural']:.1f}",
        fv_cmp_vis_ratio=f"{table['activation / exemplars'].get(vis, float('nan')):.2f}",
        fv_cmp_vis_hf=f"{table['HF energy / natural'].get(vis, float('nan')):.1f}",
    )
    res.data["compare"] = cmp


def _hooks(res: ChapterResult, ctx: dict) -> None:
    """Query, key, value and FFN features of one block, same channel indices."""
    from vitviz_core.studies import hook_sweep

    kinds = ["attn.hook_q", "attn.hook_k", "attn.hook_v", "mlp.hook_post"]
    qkv = hook_sweep(
        ctx["vit"], [f"blocks.{ctx['opt']['layer']}.{k}" for k in kinds], ctx["features"], **ctx["run"]
    )
    res.figures["fv_qkv_fig"] = _grid(qkv)
    res.tables["fv_qkv_table"] = pd.DataFrame(qkv.table)
    res.data["hooks"] = qkv


def _depth(res: ChapterResult, ctx: dict) -> None:
    """FFN features from early to late blocks, with quality scores."""
    from vitviz_core.studies import depth_layers, hook_sweep

    P, vit = ctx["P"], ctx["vit"]
    layers = depth_layers(len(vit.model.blocks), ctx["opt"]["n_depths"])
    prog = hook_sweep(
        vit,
        [f"blocks.{i}.mlp.hook_post" for i in layers],
        ctx["features"],
        recipe=P.vis_recipe,
        scores=True,
        pool_images=P.pool_images,
        **ctx["run"],
    )
    res.values["fv_layers"] = ", ".join(map(str, layers))
    res.figures["fv_depth_fig"] = _grid(prog)
    res.tables["fv_depth_table"] = pd.DataFrame(prog.table)
    ctx.update(layers=layers, prog=prog)
    res.data["depth"] = prog


def _second(res: ChapterResult, ctx: dict) -> None:
    """The depth figure of the second model (``Profile.fv_second_depths`` blocks; 1: one late block)."""
    from vitviz_core.studies import depth_layers, hook_sweep

    P, second = ctx["P"], ctx["second"]
    depth = len(second.model.blocks)
    layers = depth_layers(depth, P.fv_second_depths) if P.fv_second_depths > 1 else [depth - 2]
    prog = hook_sweep(
        second,
        [f"blocks.{i}.mlp.hook_post" for i in layers],
        ctx["features"],
        recipe=P.vis_recipe,
        scores=True,
        pool_images=P.pool_images,
        **ctx["run"],
    )
    res.values.update(fv_dino_layers=", ".join(map(str, layers)), fv_dino_source=second.weights_label)
    res.figures["fv_dino_fig"] = _grid(prog)
    res.data["second"] = prog


def _exemplars(res: ChapterResult, ctx: dict) -> None:
    """The late features' visualizations beside their most-activating pool images."""
    from vitviz_core.explorer import exemplar_rows, feature_panel

    P, n, prog = ctx["P"], len(ctx["features"]), ctx["prog"]
    late = f"blocks.{ctx['layers'][-1]}.mlp.hook_post"
    rows = exemplar_rows(
        ctx["vit"],
        late,
        ctx["features"],
        prog.images[-n:],
        k=4,
        captions=prog.labels[-n:],
        pool="imagenet-sample-1000",
        pool_images=P.pool_images,
    )
    res.values["fv_pool"] = f"{P.pool_images or 'all'} images of imagenet-sample-1000"
    res.figures["fv_exemplar_fig"] = feature_panel(rows)
