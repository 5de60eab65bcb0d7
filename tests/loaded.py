"""A real :class:`~vitviz_core.models.LoadedModel` around any test module (tests/ is on
sys.path under pytest): the tests see the same type the package hands out."""

from __future__ import annotations

from torch import nn

from vitviz_core.models import LoadedModel


def loaded(model: nn.Module, size: int = 32, name: str = "toy", num_classes: int = 10) -> LoadedModel:
    """``model`` (used as it is: mode and grad flags untouched) as a LoadedModel fed ``size`` x ``size`` images
    normalised with mean = std = 0.5 (resize + center crop, bilinear, crop_pct 1)."""
    return LoadedModel(
        model=model,
        name=name,
        arch="toy",
        weights_source="random init (test)",
        pretrained=False,
        data_config={
            "input_size": (3, size, size),
            "interpolation": "bilinear",
            "mean": (0.5,) * 3,
            "std": (0.5,) * 3,
            "crop_pct": 1.0,
            "crop_mode": "center",
        },
        num_classes=num_classes,
    )
