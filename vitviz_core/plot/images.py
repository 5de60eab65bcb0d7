"""Image helpers every figure uses: tensors, arrays and PIL images to displayable arrays,
activation maps resized to an image."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["to_hwc", "image_array", "upsample"]


def to_hwc(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """(3, H, W) or (H, W, 3) or (H, W) in [0, 1] -> float array (H, W, 3|1) clipped to [0, 1]."""
    arr = (
        image.detach().float().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image, float)
    )
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(1, 2, 0)  # (H, W, C)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    return np.clip(arr, 0.0, 1.0)


def image_array(image: Any) -> np.ndarray:
    """PIL image, (3, H, W) / (H, W, 3) tensor or array in [0, 1] -> (H, W, 3) float array."""
    if hasattr(image, "convert"):  # PIL
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    arr = (
        image.detach().float().cpu().numpy()
        if isinstance(image, torch.Tensor)
        else np.asarray(image, np.float32)
    )
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(1, 2, 0)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    return np.clip(arr, 0.0, 1.0)


def upsample(amap: Any, size: tuple[int, int]) -> np.ndarray:
    """An (h, w) activation map as an (H, W) float array, bilinearly resized to ``size``."""
    t = torch.as_tensor(
        np.asarray(amap.detach().cpu() if isinstance(amap, torch.Tensor) else amap, dtype=np.float32)
    )
    if t.dim() != 2:
        raise ValueError(f"an activation map must be (H, W), got shape {tuple(t.shape)}")
    if tuple(t.shape) != tuple(size):
        t = torch.nn.functional.interpolate(t[None, None], size=size, mode="bilinear", align_corners=False)[
            0, 0
        ]
    return t.numpy()
