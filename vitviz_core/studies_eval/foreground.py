"""Foreground maps from the img-focus saliency model, computed once per image at the image's
own size and reused by every model, as boxes or mapped into a model's view."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from vitviz_core.evaluate.records import weights_fingerprint
from vitviz_core.studies_eval.cache import cached


def _fg_model_key(fg_model: Any) -> dict[str, Any]:
    path = getattr(fg_model, "onnx_path", None)
    if path is not None and Path(path).is_file():
        st = Path(path).stat()
        return {"onnx": str(path), "size": st.st_size, "mtime": st.st_mtime_ns}
    from vitviz_core.models import LoadedModel, as_loaded

    if isinstance(fg_model, (nn.Module, LoadedModel)):
        return {"weights": weights_fingerprint(as_loaded(fg_model).model)}
    return {"repr": repr(fg_model)}


def foreground_maps(
    dataset: Any, fg_model: Any, batch_size: int = 16, cache: bool = True, progress: bool = False
) -> list[np.ndarray]:
    """Foreground probability of every image of ``dataset`` at the image's own size, as
    ``uint8`` arrays ``(H, W)`` (0..255), one per sample, cached.

    ``dataset`` yields ``(x01, label, index)`` with ``x01`` the *untransformed* image in
    [0, 1] (an ``ImageFolderDataset`` without transform). Consecutive images of equal size
    are batched through ``fg_model`` (``x01 (B,3,H,W) -> (B,1,H,W)``).
    """
    from tqdm.auto import tqdm

    def compute() -> list[np.ndarray]:
        out: list[np.ndarray] = []
        buf: list[Tensor] = []

        def flush() -> None:
            if buf:
                p = fg_model(torch.stack(buf))  # (B, 1, H, W)
                out.extend((p[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy())
                buf.clear()

        from vitviz_core.data import Unreadable

        for i in tqdm(range(len(dataset)), desc="foreground", disable=not progress, leave=False):
            item = dataset[i]
            if isinstance(item, Unreadable):  # keeps maps aligned with dataset indices; the
                flush()  # image itself is dropped from every pass
                out.append(np.zeros((1, 1), np.uint8))
                continue
            x = item[0]  # (3, H, W)
            if buf and (x.shape != buf[0].shape or len(buf) >= batch_size):
                flush()
            buf.append(x)
        flush()
        return out

    return cached(
        "foreground", compute, data=dataset, settings={"fg": _fg_model_key(fg_model)}, enabled=cache
    )


def _stem(path: Any) -> str:
    return Path(path).stem


def saliency_boxes(
    maps: Sequence[np.ndarray],
    samples: Sequence[tuple[Any, int]],
    threshold: float = 0.5,
    fallback: float = 0.5,
) -> tuple[dict[str, list], int]:
    """One box per image: the bounding box of the pixels whose foreground probability
    exceeds ``threshold`` (the analogue of the paper's ground-truth boxes).

    Images with no such pixel use ``fallback * max`` of their own map instead; their count is
    returned. Boxes are in the image's own pixels (inclusive corners), keyed by file stem.
    Returns ``(boxes, n_fallback)``.
    """
    from vitviz_core.data import Box, imagenet_wnids

    wnids = imagenet_wnids()
    boxes: dict[str, list] = {}
    n_fallback = 0
    for m, (path, label) in zip(maps, samples):
        p = np.asarray(m, dtype=np.float32) / 255.0
        keep = p > threshold
        if p.size <= 1:  # the stand-in map of an unreadable image (dropped from every pass)
            keep = np.ones_like(keep)
        elif not keep.any():
            n_fallback += 1
            keep = p >= fallback * max(float(p.max()), 1e-6)
        ys, xs = np.nonzero(keep)
        wnid = wnids[label] if 0 <= label < len(wnids) else "unknown"
        boxes[_stem(path)] = [Box(wnid, float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max()))]
    return boxes, n_fallback


def maps_in_view(maps: Sequence[np.ndarray], transform: Callable) -> Tensor:
    """Foreground maps through a model's pixel transform (resize + crop): ``(N, H, W)`` in [0, 1]."""
    from PIL import Image

    out = [transform(Image.fromarray(np.asarray(m, dtype=np.uint8)).convert("RGB"))[0] for m in maps]
    return torch.stack(out).float().clamp(0, 1)  # (N, H, W)
