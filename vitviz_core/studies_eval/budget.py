"""Image subsets, image budgets and cut-offs of the chapter profiles, and the small formatting
helpers their tables share."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from vitviz_core.errors import VitvizError
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


def eval_subset(name: str = "imagenet-val-1300", n: int | None = None,
                transform: Callable | None = None, root: str | Path | None = None) -> Any:
    """``n`` images of dataset ``name`` spread evenly over its sorted file list (all for None)."""
    from vitviz_core.data import ImageFolderDataset, find_dataset

    ds = ImageFolderDataset(find_dataset(name, root), transform=transform, max_images=n)
    ds.description = f"{name}: {len(ds)} images"
    return ds


#: Image counts of the cheap ``cpu`` profile (other profiles use ``Profile.eval_images``).
#: ``frequency``: 400 images put the 95 % interval of the paired ViT-minus-CNN difference at a
#: 16-cycle low-pass at about +-5 points, enough to resolve the ~10-point gap vit-ti16 and
#: efficientnet-lite0 show on all 1300 images (100 images gave +-8 and did not).
CPU_IMAGES: dict[str, int] = {"token_table": 400, "token_sweep": 200, "masking": 200, "frequency": 400}


#: Frequency cut-offs (cycles per image) of the cheap ``cpu`` profile and of the others.
CUTOFFS: dict[str, dict[str, tuple[float, ...]]] = {
    "cpu": {"low": (4, 8, 16, 32, 64), "high": (8, 32), "gaussian": (8, 16, 32)},
    "full": {"low": (2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96), "high": (2, 4, 8, 16, 32, 64),
             "gaussian": (2, 4, 8, 16, 32, 64)},
}


def cutoffs_for(value: Sequence[float] | None, profile: Any, kind: str) -> list[float]:
    """A chapter's cut-offs: ``value`` when given, else :data:`CUTOFFS` of the profile
    (``cpu`` or, for any other profile, ``full``)."""
    if value is not None:
        return [float(c) for c in value]
    return [float(c) for c in CUTOFFS["cpu" if profile.name == "cpu" else "full"][kind]]


def images_for(value: int | None, profile: Any, what: str) -> int | None:
    """A chapter's image count: ``value`` when given, else :data:`CPU_IMAGES` on the ``cpu``
    profile and ``profile.eval_images`` (None = all) on any other."""
    if value is not None:
        return int(value)
    if profile.name == "cpu":
        if what not in CPU_IMAGES:
            raise VitvizError(f"unknown image budget {what!r}: use one of {sorted(CPU_IMAGES)}")
        return min(CPU_IMAGES[what], profile.eval_images or CPU_IMAGES[what])
    return profile.eval_images


def short_source(model: Any) -> str:
    """``weights_source`` of a LoadedModel with file paths reduced to the file name."""
    src = str(getattr(model, "weights_source", "unknown weights"))
    if src.startswith("file: "):
        return "file " + Path(src[len("file: "):]).name
    return src


def styled(frame: Any) -> Any:
    """A DataFrame as the book shows tables: no index, padded cells."""
    return frame.style.hide(axis="index").set_table_styles(
        [{"selector": "th, td", "props": "padding: 0.2em 0.8em; text-align: left;"}])


def _pct(e: Estimate | None, digits: int = 1) -> str:
    return "–" if e is None else e.percent(digits)


def _num(v: float | None, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"
