"""Shared plumbing of the evaluation experiments: data loading and a
batched "evaluate several image variants" loop that keeps per-image correctness.

Images flow in pixel space ``[0, 1]`` (``LoadedModel.pixel_transform``); every variant
(masked, filtered...) is made there and then normalised with the model's own
``normalize`` right before the forward pass.

Unreadable files: :func:`make_loader` batches with :func:`vitviz_core.data.collate_skipping`,
so a file the dataset could not read is dropped from its batch (never replaced by another
sample, never counted), a batch with nothing readable is not yielded at all, and every
skipped file is recorded (:func:`vitviz_core.data.skipped_files`; ``loader.skipped`` for
the last pass). Result records report ``n_skipped`` (see :mod:`.records`). This works with
DataLoader worker processes: the skip information travels inside each batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from vitviz_core.errors import DataError, VitvizError
from vitviz_core.models import as_loaded

__all__ = [
    "model_device", "pixel_dataset", "model_dataset", "make_loader",
    "SkippingLoader", "unpack_batch", "Correctness", "evaluate_variants",
]


def model_device(model: Any) -> torch.device:
    try:
        return next(as_loaded(model).model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _dataset_from_name(name: str, root: str | Path | None, transform: Callable,
                       max_images: int | None) -> Dataset:
    from vitviz_core import data as vdata

    folder = vdata.find_dataset(name, root)
    return vdata.ImageFolderDataset(folder, transform=transform, max_images=max_images)


def pixel_dataset(model: Any, name: str = "imagenet-val-1300", root: str | Path | None = None,
                  max_images: int | None = None) -> Dataset:
    """ImageFolder dataset in the model's *pixel* view (resize + crop, values in [0, 1])."""
    return _dataset_from_name(name, root, as_loaded(model).pixel_transform(), max_images)


def model_dataset(model: Any, name: str = "imagenet-sample-1000", root: str | Path | None = None,
                  max_images: int | None = None) -> Dataset:
    """ImageFolder dataset in the model's input view (resize + crop + normalise)."""
    return _dataset_from_name(name, root, as_loaded(model).eval_transform(), max_images)


class SkippingLoader:
    """A DataLoader that drops unreadable samples and counts them (see the module docstring).

    Iterating yields the DataLoader's batches without the unreadable samples (batches with
    none readable are not yielded). After (or during) a pass, ``skipped`` maps the dataset
    index of every sample skipped in that pass to its file name, and ``n_images`` counts
    the samples yielded. A pass in which every file was unreadable raises DataError.
    """

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader
        self.dataset = loader.dataset
        self.skipped: dict[int, str] = {}
        self.n_images = 0

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def batch_size(self) -> int | None:
        return self.loader.batch_size

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)

    def __iter__(self):
        from vitviz_core.data import note_skipped

        self.skipped = {}
        self.n_images = 0
        for batch in self.loader:
            skipped = list(getattr(batch, "skipped", ()))
            if skipped:
                files = list(getattr(batch, "skipped_files", ()))
                self.skipped.update(zip(skipped, files))
                note_skipped(self.dataset, skipped, files)
            if len(batch) == 0:
                continue  # every sample of this batch was unreadable
            first = batch[0] if not isinstance(batch, Tensor) else batch
            self.n_images += int(first.shape[0]) if isinstance(first, Tensor) else len(first)
            yield batch
        if self.n_images == 0 and self.skipped:
            desc = getattr(self.dataset, "description", "") or "the dataset"
            raise DataError(f"no readable image in {desc} ({len(self.skipped)} files, all unreadable)")


def make_loader(dataset: Dataset, batch_size: int = 32, num_workers: int = 0,
                pin_memory: bool = False) -> SkippingLoader:
    """A sequential loader over ``dataset`` that drops and counts unreadable samples;
    ``num_workers`` processes decode ahead of the model, ``pin_memory`` (for CUDA) makes the
    host -> device copies asynchronous."""
    from vitviz_core.data import collate_skipping

    return SkippingLoader(DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                     pin_memory=pin_memory, collate_fn=collate_skipping))


def unpack_batch(batch: Any, offset: int) -> tuple[Tensor, Tensor, Tensor, tuple]:
    """``(images, labels, indices, rest)`` from a batch of ``(x, y, idx, *rest)``,
    ``(x, y)`` or ``x`` (missing labels are -1, missing indices count from ``offset``).

    A :class:`~vitviz_core.data.Batch` from :func:`make_loader` holds only readable samples,
    with their own dataset indices, so nothing downstream counts or repeats a skipped file.
    """
    if isinstance(batch, Tensor):
        x = batch
        return (x, torch.full((x.shape[0],), -1, dtype=torch.long),
                torch.arange(offset, offset + x.shape[0]), ())
    items = list(batch)
    if not items:
        raise DataError("an empty batch (every sample unreadable) reached unpack_batch; "
                        "iterate make_loader(...), which drops such batches")
    x = items[0]
    y = items[1] if len(items) > 1 else torch.full((x.shape[0],), -1, dtype=torch.long)
    idx = items[2] if len(items) > 2 else torch.arange(offset, offset + x.shape[0])
    return x, torch.as_tensor(y).long(), torch.as_tensor(idx).long(), tuple(items[3:])


@dataclass
class Correctness:
    """Per-image top-k correctness of several variants of the same images."""

    labels: np.ndarray                                   # (N,) int
    indices: np.ndarray                                  # (N,) dataset indices
    correct: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)  # variant -> k -> (N,) bool
    skipped: dict[int, str] = field(default_factory=dict)  # unreadable samples left out: index -> file

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)

    def accuracy(self, variant: str, k: int = 1) -> float:
        return float(self.correct[variant][k].mean())


def evaluate_variants(
    model: Any,
    loader: Iterable,
    variants: Callable[..., Mapping[str, Tensor]],
    ks: Sequence[int] = (1, 5),
    device: str | torch.device | None = None,
    progress: bool = True,
    desc: str = "evaluate",
    classify: Callable[[Tensor], Tensor] | None = None,
) -> Correctness:
    """Run every image variant of every batch through the model and keep correctness.

    Args:
        model: LoadedModel (its ``normalize`` is applied to each variant) or nn.Module
            (variants are fed as they are).
        loader: yields ``(x01, labels, indices, *rest)`` with ``x01`` ``(B, 3, H, W)`` in [0, 1].
        variants: ``f(x01, labels, indices, *rest) -> {name: (B, 3, H, W)}`` in pixel space.
        classify: optional replacement for the forward pass (input -> logits).
    """
    from tqdm.auto import tqdm

    from vitviz_core.evaluate.stats import topk_correct

    loaded = as_loaded(model)
    module = loaded.model
    dev = torch.device(device) if device is not None else model_device(model)
    norm = loaded.normalize
    forward = classify or module
    labels: list[Tensor] = []
    indices: list[Tensor] = []
    hits: dict[str, dict[int, list[Tensor]]] = {}
    offset = 0
    total = len(loader) if hasattr(loader, "__len__") else None
    with torch.inference_mode():
        for batch in tqdm(loader, total=total, desc=desc, disable=not progress, leave=False):
            x, y, idx, rest = unpack_batch(batch, offset)
            offset += x.shape[0]
            x = x.to(dev)  # (B, 3, H, W)
            for name, xv in variants(x, y, idx, *rest).items():
                logits = forward(norm(xv))  # (B, K)
                for k, c in topk_correct(logits.float(), y, ks).items():
                    hits.setdefault(name, {}).setdefault(k, []).append(c.cpu())
            labels.append(y)
            indices.append(idx)
    if not labels:
        raise VitvizError("the dataset is empty: nothing to evaluate")
    return Correctness(
        labels=torch.cat(labels).numpy(),
        indices=torch.cat(indices).numpy(),
        correct={n: {k: torch.cat(v).numpy() for k, v in d.items()} for n, d in hits.items()},
        skipped=dict(getattr(loader, "skipped", {}) or {}),
    )
