"""The language-supervision chapter (Ghiasi, Kazemi et al. 2022, Sec. 6): every number and
figure of ``book/language_supervision.md``.

:func:`run` tries to load CLIP (never falling back to random weights), measures how many
ImageNet classes the top exemplars of late FFN features span for a supervised and a
self-supervised ViT, and builds the feature explorer. Without CLIP weights the measurement
asks only the category half of the paper's question, and says so.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from vitviz_core.chapters.common import device_for, load, resolve_models, split_overrides
from vitviz_core.chapters.result import ChapterResult
from vitviz_core.profiles import Profile

__all__ = ["run", "DEFAULT_MODELS"]

#: Model roles and their default built-ins: ``clip`` (may be unavailable offline),
#: ``contrast`` (a supervised ImageNet ViT), ``ssl`` (a self-supervised ViT).
DEFAULT_MODELS: dict[str, Any] = {"clip": "clip-b16", "contrast": "vit-ti16", "ssl": "dinov2-s14"}

_OPTIONS = {
    "n_layers_back": 1,
    "span_k": 5,
    "seed": 0,
    "device": None,
    "pool_name": "imagenet-val-1300",
    "explore": True,
}


def _ci(e: Any) -> str:
    return f"{e.value:.2f} [{e.low:.2f}, {e.high:.2f}]"


def span_verdict(sup: str, ssl: str, e_sup: Any, e_ssl: Any) -> str:
    """Which model's late features concentrate more on single classes, judged by whether the
    95 % intervals of their same-class pair shares overlap."""
    if e_sup.low > e_ssl.high:
        return f"{sup}'s late features are more concentrated on single classes than {ssl}'s (the intervals do not overlap)"
    if e_ssl.low > e_sup.high:
        return f"{ssl}'s late features are more concentrated on single classes than {sup}'s (the intervals do not overlap)"
    return "the two models' intervals overlap: no difference in class concentration is resolved"


def run(
    models: Mapping[str, Any] | None = None, profile: str | Profile = "cpu", **overrides: Any
) -> ChapterResult:
    """Compute every number and figure of the language-supervision chapter.

    Args:
        models: role -> built-in / timm name / file or a loaded model (:data:`DEFAULT_MODELS`);
            ``clip=None`` runs without CLIP.
        profile: ``"cpu"``, ``"full"`` or a :class:`Profile`.
        **overrides: any Profile field and the options ``n_layers_back`` (the block is
            depth - 1 - n_layers_back), ``span_k`` (exemplars per feature), ``seed``,
            ``device``, ``pool_name`` and ``explore`` (build the explorer).

    Returns:
        a :class:`ChapterResult` whose keys are the chapter's glue names (``ls_*``); its
        ``data`` holds the two class-span results (``span_sup``, ``span_ssl``).
    """
    from vitviz_core.errors import VitvizError
    from vitviz_core.explorer import FeatureExplorer
    from vitviz_core.models import public_message
    from vitviz_core.studies_eval import concept_span as cs
    from vitviz_core.studies_eval import eval_subset, short_source

    P, opt = split_overrides("language supervision", profile, overrides, {}, _OPTIONS)
    roles = resolve_models("language supervision", models, DEFAULT_MODELS)
    device = device_for(P, opt["device"])
    back, span_k, pool_name = opt["n_layers_back"], opt["span_k"], opt["pool_name"]
    try:
        clip = None if roles["clip"] is None else load(roles["clip"], device)
        clip_status = "not requested" if clip is None else f"{clip.name}: {clip.weights_label}"
    except VitvizError as exc:  # weights unavailable offline: say so, never fall back to random
        clip, clip_status = None, f"not available here ({public_message(exc).split(' (')[0]})"
    model = clip if clip is not None else load(roles["contrast"], device)
    who = "CLIP" if clip is not None else "the supervised ViT (contrast; not CLIP)"
    setting = f"{model.name} ({model.weights_label}); {P.describe()}"
    res = ChapterResult(chapter="language_supervision", setting=setting, profile=P)
    v = res.values
    v.update(ls_clip_status=clip_status, ls_who=who, ls_setting=setting)

    sup = model if clip is None else load(roles["contrast"], device)
    ssl = load(roles["ssl"], device)
    sup_layer = len(sup.model.blocks) - 1 - back
    ssl_layer = len(ssl.model.blocks) - 1 - back
    sup_pool = eval_subset(pool_name, P.eval_images, sup.eval_transform())
    ssl_pool = eval_subset(pool_name, P.eval_images, ssl.eval_transform())
    span_sup = cs.class_span_run(
        sup,
        f"blocks.{sup_layer}.mlp.hook_post",
        sup_pool,
        k=span_k,
        batch_size=P.batch_size,
        n_boot=P.bootstrap,
    )
    span_ssl = cs.class_span_run(
        ssl,
        f"blocks.{ssl_layer}.mlp.hook_post",
        ssl_pool,
        k=span_k,
        batch_size=P.batch_size,
        n_boot=P.bootstrap,
    )
    res.figures["ls_span_fig"] = cs.class_span_figure([span_sup, span_ssl])
    e_sup, e_ssl = span_sup.summary["same_pair"], span_ssl.summary["same_pair"]
    v.update(
        ls_span_setting=(
            f"{sup.name} ({short_source(sup)}) and {ssl.name} ({short_source(ssl)}); "
            f"profile `{P.name}`; {P.bootstrap} bootstrap resamples over features"
        ),
        ls_sup=sup.name,
        ls_ssl=ssl.name,
        ls_k=span_k,
        ls_pool_n=f"{len(sup_pool)} images of {pool_name} ({len(set(sup_pool.targets))} classes)",
        ls_sup_hook=span_sup.hook,
        ls_ssl_hook=span_ssl.hook,
        ls_sup_nf=len(span_sup.distinct),
        ls_ssl_nf=len(span_ssl.distinct),
        ls_chance=f"{100 * span_sup.chance:.2f}",
        ls_sup_distinct=_ci(span_sup.summary["distinct"]),
        ls_ssl_distinct=_ci(span_ssl.summary["distinct"]),
        ls_sup_pair=e_sup.percent(1),
        ls_ssl_pair=e_ssl.percent(1),
        ls_sup_ratio=f"{span_sup.ratio_to_chance.value:.0f}",
        ls_ssl_ratio=f"{span_ssl.ratio_to_chance.value:.0f}",
        ls_span_verdict=span_verdict(sup.name, ssl.name, e_sup, e_ssl),
    )
    res.data.update(span_sup=span_sup, span_ssl=span_ssl)
    if opt["explore"]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(opt["seed"])
            res.widgets["ls_explorer"] = FeatureExplorer(
                {model.name: model},
                pool="imagenet-sample-1000",
                pool_images=P.pool_images,
                steps=P.steps,
                n_augment=P.n_augment,
                seed=opt["seed"],
                recipe=P.vis_recipe,
                default=(model.name, sup_layer if clip is None else len(model.model.blocks) - 2, 0),
            )
    return res
