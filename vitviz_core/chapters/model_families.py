"""The model-families appendix (Ghiasi, Kazemi et al. 2022, Appendix): every number, table and
figure of ``book/model_families.md``.

:func:`run` lists the hook points of the first block of every family the paper visualizes
(architectures built with random weights; shapes do not depend on weights), and visualizes
one block of every built-in model whose trained weights exist on this machine.
"""

from __future__ import annotations

from typing import Any, Mapping

import pandas as pd
import torch

from vitviz_core.chapters.common import device_for, split_overrides
from vitviz_core.chapters.result import ChapterResult
from vitviz_core.profiles import Profile

__all__ = ["run", "FAMILIES", "hook_table", "pick_spec"]

#: Family -> timm architecture whose hook points the appendix lists.
FAMILIES: dict[str, str] = {
    "ViT (the paper's ViT-B/16)": "vit_base_patch16_384.orig_in21k_ft_in1k",
    "DeiT distilled": "deit_small_distilled_patch16_224",
    "CoaT": "coat_lite_tiny",
    "ConViT": "convit_tiny",
    "PiT": "pit_ti_224",
    "Swin": "swin_tiny_patch4_window7_224",
    "Twins": "twins_pcpvt_small",
    "CLIP ViT": "vit_base_patch16_clip_224",
    "DINOv2": "vit_small_patch14_dinov2",
    "EfficientNet": "tf_efficientnet_lite0",
    "ResNet (the paper's ResNet-50)": "resnet50.tv_in1k",
}

_OPTIONS = {"layer_fraction": 0.5, "seed": 0, "device": None, "families": None, "models": None}


def hook_table(families: Mapping[str, str]) -> tuple[pd.DataFrame, dict[str, int]]:
    """The hook points of each family's first block (or stage), up to 12 (8 of the whole model
    when no block is recognized), and each family's total number of hook points."""
    import timm

    from vitviz_core.hooks import list_hooks

    rows, counts = [], {}
    for family, arch in families.items():
        kwargs = {"img_size": 224} if "dinov2" in arch else {}
        net = timm.create_model(arch, pretrained=False, **kwargs).eval()
        specs = list_hooks(net)
        counts[family] = len(specs)
        first = [s for s in specs if s.name.startswith(("blocks.0.", "stages.0.blocks.0.", "stages.0."))][:12]
        rows += [
            {
                "family": family,
                "timm model": arch,
                "hook": s.name,
                "module": s.module_path,
                "layout": s.layout,
                "channels": s.channels,
                "prefix": s.num_prefix_tokens,
                "grid": "x".join(map(str, s.grid)) if s.grid else "-",
            }
            for s in first or specs[:8]
        ]
        del net
    return pd.DataFrame(rows), counts


def pick_spec(module: Any, layer_fraction: float) -> Any:
    """The hook visualized for a model: its FFN (or CNN block) outputs, the one at
    ``layer_fraction`` of the depth."""
    from vitviz_core.hooks import list_hooks

    specs = [
        s
        for s in list_hooks(module)
        if s.name.endswith(("mlp.hook_post", "hook_post")) or (s.layout == "NCHW" and s.name.count(".") == 3)
    ]
    if not specs:
        specs = [s for s in list_hooks(module) if s.layout == "NCHW"]
    return specs[int(layer_fraction * (len(specs) - 1))]


def run(models: Any = None, profile: str | Profile = "cpu", **overrides: Any) -> ChapterResult:
    """Compute the appendix's hook table and its visualization grid.

    Args:
        models: built-in names to visualize; None = every built-in whose weights are available.
        profile: ``"cpu"``, ``"full"`` or a :class:`Profile`.
        **overrides: any Profile field and the options ``layer_fraction`` (which block, as a
            fraction of the depth), ``seed``, ``device`` and ``families`` (family -> timm
            architecture for the hook table; None = :data:`FAMILIES`).

    Returns:
        a :class:`ChapterResult` with the glue names ``mf_*`` (table ``mf_hooks_table``).
    """
    from vitviz_core.models import describe_builtin_models, load_model
    from vitviz_core.optimize import optimize_features
    from vitviz_core.plot import feature_grid

    P, opt = split_overrides("model families", profile, overrides, {}, _OPTIONS)
    device = device_for(P, opt["device"])
    families = FAMILIES if opt["families"] is None else dict(opt["families"])
    res = ChapterResult(chapter="model_families", setting=P.describe(), profile=P)
    v = res.values
    table, counts = hook_table(families)
    res.tables["mf_hooks_table"] = table
    v.update(mf_n_families=len(families), mf_n_hooks=sum(counts.values()))

    if models is None:
        models = [r["name"] for r in describe_builtin_models() if r["available"]]
    images, labels, shown = [], [], []
    for spec in models:
        loaded = load_model(spec, device=device) if isinstance(spec, str) else spec
        hook = pick_spec(loaded.model, opt["layer_fraction"])
        out = optimize_features(
            loaded,
            hook.name,
            list(range(P.n_features)),
            steps=P.steps,
            n_augment=P.n_augment,
            seed=opt["seed"],
            recipe=P.vis_recipe,
            progress=False,
        )
        images.append(out.images)  # (n_features, 3, H, W)
        labels += [f"{loaded.name} {hook.name} #{f}" for f in out.features]
        shown.append(f"{loaded.name} ({hook.name})")
    v.update(
        mf_shown="; ".join(shown),
        mf_recipe=f"the {P.vis_recipe} recipe at {P.steps} steps x {P.n_augment} copies (profile {P.name})",
    )
    if images:
        res.figures["mf_fig"] = feature_grid(torch.cat(images), labels, ncols=P.n_features, fontsize=6)
    return res
