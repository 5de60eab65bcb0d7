"""The one registry of tiny random timm models the tests use (tests/ is on sys.path under
pytest): ``TINY[family] = (timm architecture, kwargs that shrink it)``, timm-style, and
:func:`make` to build one. Each has a few thousand parameters and runs in milliseconds on a CPU.
"""

from __future__ import annotations

import timm
import torch

_TINY_VIT = dict(depth=2, embed_dim=32, num_heads=2)

# name -> (timm architecture, kwargs that shrink it)
TINY = {
    "vit": ("vit_tiny_patch16_224", dict(img_size=32, patch_size=8, num_classes=10, **_TINY_VIT)),
    "vit_rect": ("vit_tiny_patch16_224", dict(img_size=(32, 48), patch_size=8, num_classes=10, **_TINY_VIT)),
    "deit_distilled": (
        "deit_tiny_distilled_patch16_224",
        dict(img_size=32, patch_size=8, num_classes=10, **_TINY_VIT),
    ),
    "dinov2_reg": (
        "vit_small_patch14_reg4_dinov2",
        dict(img_size=28, patch_size=7, num_classes=0, **_TINY_VIT),
    ),
    "clip": ("vit_base_patch16_clip_224", dict(img_size=32, patch_size=8, num_classes=0, **_TINY_VIT)),
    "convit": (
        "convit_tiny",
        dict(
            img_size=32, patch_size=8, depth=3, embed_dim=16, num_heads=2, local_up_to_layer=2, num_classes=10
        ),
    ),
    "pit": (
        "pit_ti_224",
        dict(
            img_size=48,
            patch_size=8,
            stride=4,
            base_dims=[8, 8, 8],
            depth=[1, 1, 1],
            heads=[1, 2, 2],
            num_classes=10,
        ),
    ),
    "pit_distilled": (
        "pit_ti_distilled_224",
        dict(
            img_size=48,
            patch_size=8,
            stride=4,
            base_dims=[8, 8, 8],
            depth=[1, 1, 1],
            heads=[1, 2, 2],
            num_classes=10,
        ),
    ),
    "swin": (
        "swin_tiny_patch4_window7_224",
        dict(
            img_size=32,
            patch_size=4,
            window_size=4,
            embed_dim=16,
            depths=(2, 2),
            num_heads=(1, 2),
            num_classes=10,
        ),
    ),
    "coat": (
        "coat_lite_tiny",
        dict(
            img_size=32,
            embed_dims=[8, 16, 16, 16],
            serial_depths=[1, 1, 1, 1],
            num_heads=2,
            crpe_window={3: 1, 5: 1},
            mlp_ratios=[2, 2, 2, 2],
            num_classes=10,
        ),
    ),
    "twins_pcpvt": (
        "twins_pcpvt_small",
        dict(
            img_size=32,
            embed_dims=[8, 16, 16, 16],
            depths=[1, 1, 1, 1],
            num_heads=[1, 2, 2, 2],
            mlp_ratios=[2, 2, 2, 2],
            sr_ratios=[4, 2, 1, 1],
            num_classes=10,
        ),
    ),
    "twins_svt": (
        "twins_svt_small",
        dict(
            img_size=64,
            embed_dims=[8, 16, 16, 16],
            depths=[2, 2, 2, 2],
            num_heads=[1, 2, 2, 2],
            mlp_ratios=[2, 2, 2, 2],
            wss=[4, 4, 4, 4],
            num_classes=10,
        ),
    ),
    "efficientnet": (
        "tf_efficientnet_lite0",
        dict(num_classes=10, pretrained_cfg_overlay=dict(input_size=(3, 64, 64))),
    ),
    "resnet": ("resnet10t", dict(num_classes=10, pretrained_cfg_overlay=dict(input_size=(3, 64, 64)))),
}


def make(family: str = "vit", seed: int = 0, **overrides) -> torch.nn.Module:
    """A fresh tiny ``family`` model in eval mode, initialised from ``torch.manual_seed(seed)``;
    ``overrides`` replace registry kwargs (e.g. ``depth=1``)."""
    arch, kwargs = TINY[family]
    torch.manual_seed(seed)
    return timm.create_model(arch, pretrained=False, **{**kwargs, **overrides}).eval()
