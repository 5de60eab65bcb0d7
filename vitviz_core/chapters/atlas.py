"""The atlas chapter: a small neuron atlas (the ``atlas`` command) and its figures, for
``book/atlas.md``.

:func:`run` plans the job from the profile's atlas knobs, runs it into ``out`` (the static
site the book links; the only files written, by :func:`vitviz_core.atlas.run_atlas`, to the
folder the caller names) and returns the overview and one neuron's figure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vitviz_core.chapters.common import device_for, split_overrides
from vitviz_core.chapters.result import ChapterResult
from vitviz_core.profiles import Profile

__all__ = ["run", "KNOBS"]

#: The chapter's parameter names -> the Profile fields they override (None = the profile's).
KNOBS: dict[str, str] = {
    "hooks": "atlas_hooks",
    "features": "atlas_features",
    "steps": "atlas_steps",
    "n_images": "atlas_images",
}

_OPTIONS = {
    "data": "imagenet-val-1300",
    "recipe": "maco",
    "k": 6,
    "executor": "local",
    "seed": 0,
    "device": None,
    "show": ("blocks.6.mlp.hook_post", 3),
}


def run(
    model: Any = "vit-ti16", profile: str | Profile = "cpu", *, out: str | Path, **overrides: Any
) -> ChapterResult:
    """Build the atlas of ``model`` into the folder ``out`` and compute the chapter's values.

    Args:
        model: built-in / timm name or an :class:`~vitviz_core.atlas.ModelSpec`.
        profile: ``"cpu"``, ``"full"`` or a :class:`Profile`.
        out: the atlas store and site folder (the book uses ``atlas.site.book_site_dir("atlas")``).
        **overrides: the chapter's parameters (:data:`KNOBS`; None = the profile's value), any
            Profile field, and the options ``data``, ``recipe``, ``k`` (exemplars per neuron),
            ``executor`` (``"local"`` or ``"ray"``), ``seed``, ``device``, ``show`` ((hook,
            feature) of the neuron drawn in full).

    Returns:
        a :class:`ChapterResult` with the glue names ``atlas_*``.
    """
    from vitviz_core.atlas import DataSpec, ModelSpec, plan_job, run_atlas
    from vitviz_core.atlas.figures import describe_neuron, neuron_figure, overview_figure, pick_neuron

    P, opt = split_overrides("atlas", profile, overrides, KNOBS, _OPTIONS)
    device = device_for(P, opt["device"])
    spec = ModelSpec(model) if isinstance(model, str) else model
    job = plan_job(
        spec,
        P.atlas_hooks,
        P.atlas_features,
        DataSpec(opt["data"], max_images=P.atlas_images),
        steps=P.atlas_steps or P.steps,
        n_augment=P.n_augment,
        seed=opt["seed"],
        k=opt["k"],
        recipe=opt["recipe"],
    )
    report = run_atlas(job, out, executor=opt["executor"], device=device, progress=False)
    recipe = job.recipe_dict()
    setting = (
        f"{job.model_label}; {', '.join(job.hooks)}; {len(report.neurons)} neurons; recipe {job.recipe}, "
        f"{recipe['steps']} steps x {recipe['n_augment']} augmentations; "
        f"exemplars from {job.n_images} images of {opt['data']}; profile `{P.name}`"
    )
    res = ChapterResult(chapter="atlas", setting=setting, profile=P)
    shown = pick_neuron(report.neurons, *opt["show"])
    res.values.update(
        atlas_setting=setting,
        atlas_neurons=len(report.neurons),
        atlas_tasks=len(report.tasks_run),
        atlas_seconds=f"{report.seconds:.0f}",
        atlas_per_neuron=f"{report.seconds / len(report.neurons):.1f}",
        atlas_shown=describe_neuron(shown),
    )
    res.figures.update(
        atlas_overview_fig=overview_figure(report.neurons, out), atlas_neuron_fig=neuron_figure(shown, out)
    )
    res.data["report"] = report
    return res
