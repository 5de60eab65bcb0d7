"""Image subsets, model preparation and the small formatting helpers the studies' tables share.
(The chapters' image counts and cut-offs are :class:`vitviz_core.profiles.Profile` fields.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from vitviz_core.evaluate.stats import Estimate


def prefer_channels_last(model: Any) -> Any:
    """Put a convolutional network in channels-last memory format (about 1.5x faster on CPU
    for EfficientNet's depthwise convolutions; outputs unchanged up to float rounding).
    Token models are returned untouched. Returns ``model``."""
    from vitviz_core.models import as_loaded

    module = as_loaded(model).model
    convs = sum(isinstance(m, nn.Conv2d) for m in module.modules())
    if convs > 4 and not hasattr(module, "cls_token"):
        module.to(memory_format=torch.channels_last)
    return model


def eval_subset(
    name: str = "imagenet-val-1300",
    n: int | None = None,
    transform: Callable | None = None,
    root: str | Path | None = None,
) -> Any:
    """``n`` images of dataset ``name`` spread evenly over its sorted file list (all for None)."""
    from vitviz_core.data import ImageFolderDataset, find_dataset

    ds = ImageFolderDataset(find_dataset(name, root), transform=transform, max_images=n)
    ds.description = f"{name}: {len(ds)} images"
    return ds


def short_source(model: Any) -> str:
    """``weights_source`` of a LoadedModel with file paths reduced to the file name."""
    src = str(getattr(model, "weights_source", "unknown weights"))
    if src.startswith("file: "):
        return "file " + Path(src[len("file: ") :]).name
    return src


def styled(frame: Any) -> Any:
    """A DataFrame as the book shows tables: no index, padded cells, two decimals."""
    return (
        frame.style.hide(axis="index")
        .format(precision=2)
        .set_table_styles([{"selector": "th, td", "props": "padding: 0.2em 0.8em; text-align: left;"}])
    )


def _pct(e: Estimate | None, digits: int = 1) -> str:
    return "–" if e is None else e.percent(digits)


def _num(v: float | None, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"
