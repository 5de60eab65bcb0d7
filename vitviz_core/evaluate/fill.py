"""What replaces hidden pixels: the one home of fills, one meaning per name.

Masking (foreground / background only, paper Table 2) and occlusion (Nguyen et al. 2022)
both hide pixels and put a *fill* in their place. Everything is in pixel space ``[0, 1]``,
before each model's own normalisation.

Fill names:

- ``"black"``: zeros (the paper's choice);
- ``"gray"``: 0.5 on every channel;
- ``"dataset_mean"``: the ImageNet mean colour (``timm.data.IMAGENET_DEFAULT_MEAN``), the
  same colour for every image;
- ``"image_mean"``: each image's own mean colour (over all its pixels, hidden or not);
- ``"blur"``: a heavily blurred copy of the image (Gaussian, ``blur_sigma`` pixels);
- a number (gray level) or an ``(r, g, b)`` triple in [0, 1].

``"mean"`` is refused: it used to mean the dataset mean in masking and the image mean in
occlusion. Name the one you want.
"""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import torch
from torch import Tensor

from vitviz_core.errors import VitvizError

__all__ = ["FILLS", "Fill", "fill_image", "fill_name", "check_fill", "apply_fill"]

#: Named fills (besides a number or an RGB triple).
FILLS = ("black", "gray", "dataset_mean", "image_mean", "blur")

Fill = Union[str, float, Sequence[float]]

_AMBIGUOUS = (
    "fill 'mean' is ambiguous: use 'dataset_mean' (the ImageNet mean colour) "
    "or 'image_mean' (each image's own mean colour)"
)


def check_fill(fill: Fill, channels: int = 3) -> None:
    """Raise :class:`VitvizError` for an unknown fill name or a wrong number of values."""
    fill_image(torch.zeros(1, channels, 4, 4), fill, blur_sigma=1.0)


def fill_image(x: Tensor, fill: Fill = "black", blur_sigma: float = 10.0) -> Tensor:
    """The replacement image for hidden pixels: same shape as ``x`` ``(B, C, H, W)``.

    Args:
        x: ``(B, C, H, W)`` pixel images in [0, 1].
        fill: a name of :data:`FILLS`, a number or one value per channel.
        blur_sigma: Gaussian sigma in pixels for ``"blur"``.
    """
    b, c = x.shape[:2]
    if isinstance(fill, str):
        if fill == "black":
            return torch.zeros_like(x)
        if fill == "gray":
            return torch.full_like(x, 0.5)
        if fill == "dataset_mean":
            from timm.data import IMAGENET_DEFAULT_MEAN

            mean = torch.tensor(IMAGENET_DEFAULT_MEAN, dtype=x.dtype, device=x.device)  # (3,)
            if c != mean.numel():
                raise VitvizError(f"fill 'dataset_mean' has 3 values, the image has {c} channels")
            return mean.view(1, -1, 1, 1).expand_as(x).clone()
        if fill == "image_mean":
            return x.mean((2, 3), keepdim=True).expand_as(x).clone()  # (B, C, H, W)
        if fill == "blur":
            from torchvision.transforms.functional import gaussian_blur

            ks = int(2 * np.ceil(3 * blur_sigma) + 1)
            ks = min(ks, 2 * (min(x.shape[-2:]) // 2) - 1)  # odd and not larger than the image
            return gaussian_blur(x, [ks, ks], [blur_sigma, blur_sigma])
        if fill == "mean":
            raise VitvizError(_AMBIGUOUS)
        raise VitvizError(
            f"unknown fill {fill!r}: use one of {', '.join(FILLS)}, a number or an (r, g, b) triple in [0, 1]"
        )
    val = torch.as_tensor(fill, dtype=x.dtype, device=x.device).reshape(-1)
    if val.numel() not in (1, c):
        raise VitvizError(f"fill needs 1 or {c} values, got {val.numel()}")
    return val.view(1, -1, 1, 1).expand(b, c, *x.shape[-2:]).clone()


def apply_fill(x: Tensor, hide: Tensor, fill: Fill = "black", blur_sigma: float = 10.0) -> Tensor:
    """``x`` where ``hide`` is False, the fill where it is True.

    Args:
        x: ``(B, C, H, W)`` pixel images.
        hide: ``(B, 1, H, W)`` or ``(B, H, W)`` bool, broadcastable to ``x``.
    """
    if hide.dim() == 3:
        hide = hide.unsqueeze(1)  # (B, 1, H, W)
    return torch.where(hide.to(x.device), fill_image(x, fill, blur_sigma), x)


def fill_name(fill: Fill) -> str:
    """A short name for a fill, safe inside variant names: ``black``, ``0.5``, ``0.1_0.2_0.3``."""
    if isinstance(fill, str):
        return fill
    if isinstance(fill, (int, float)):
        return f"{float(fill):g}"
    return "_".join(f"{float(v):g}" for v in fill)
