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
    "model_device",
    "pixel_dataset",
    "model_dataset",
    "make_loader",
    "SkippingLoader",
    "unpack_batch",
    "Correctness",
    "SweepResult",
    "evaluate_variants",
    "evaluate_variants_many",
]


def model_device(model: Any) -> torch.device:
    try:
        return next(as_loaded(model).model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _dataset_from_name(
    name: str, root: str | Path | None, transform: Callable, max_images: int | None
) -> Dataset:
    from vitviz_core import data as vdata

    folder = vdata.find_dataset(name, root)
    return vdata.ImageFolderDataset(folder, transform=transform, max_images=max_images)


def pixel_dataset(
    model: Any, name: str = "imagenet-val-1300", root: str | Path | None = None, max_images: int | None = None
) -> Dataset:
    """ImageFolder dataset in the model's *pixel* view (resize + crop, values in [0, 1])."""
    return _dataset_from_name(name, root, as_loaded(model).pixel_transform(), max_images)


def model_dataset(
    model: Any,
    name: str = "imagenet-sample-1000",
    root: str | Path | None = None,
    max_images: int | None = None,
) -> Dataset:
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


def make_loader(
    dataset: Dataset, batch_size: int = 32, num_workers: int = 0, pin_memory: bool = False
) -> SkippingLoader:
    """A sequential loader over ``dataset`` that drops and counts unreadable samples;
    ``num_workers`` processes decode ahead of the model, ``pin_memory`` (for CUDA) makes the
    host -> device copies asynchronous."""
    from vitviz_core.data import collate_skipping

    return SkippingLoader(
        DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=False,
            num_workers=num_workers,
            pin_memory=pin_memory,
            collate_fn=collate_skipping,
        )
    )


def unpack_batch(batch: Any, offset: int) -> tuple[Tensor, Tensor, Tensor, tuple]:
    """``(images, labels, indices, rest)`` from a batch of ``(x, y, idx, *rest)``,
    ``(x, y)`` or ``x`` (missing labels are -1, missing indices count from ``offset``).

    A :class:`~vitviz_core.data.Batch` from :func:`make_loader` holds only readable samples,
    with their own dataset indices, so nothing downstream counts or repeats a skipped file.
    """
    if isinstance(batch, Tensor):
        x = batch
        return (
            x,
            torch.full((x.shape[0],), -1, dtype=torch.long),
            torch.arange(offset, offset + x.shape[0]),
            (),
        )
    items = list(batch)
    if not items:
        raise DataError(
            "an empty batch (every sample unreadable) reached unpack_batch; "
            "iterate make_loader(...), which drops such batches"
        )
    x = items[0]
    y = items[1] if len(items) > 1 else torch.full((x.shape[0],), -1, dtype=torch.long)
    idx = items[2] if len(items) > 2 else torch.arange(offset, offset + x.shape[0])
    return x, torch.as_tensor(y).long(), torch.as_tensor(idx).long(), tuple(items[3:])


@dataclass
class Correctness:
    """Per-image results of several variants of the same images under one model: the primary
    output of every variant experiment (masking, frequency cut-offs, shuffling, occlusion).
    Accuracies and confidence intervals are views of it (:meth:`accuracy`, :meth:`estimate`,
    :meth:`relative`)."""

    labels: np.ndarray  # (N,) int (-1 = unlabelled)
    indices: np.ndarray  # (N,) dataset indices
    correct: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)  # variant -> k -> (N,) bool
    skipped: dict[int, str] = field(default_factory=dict)  # unreadable samples left out: index -> file
    predicted: dict[str, np.ndarray] = field(default_factory=dict)  # variant -> (N,) top-1 class
    seconds: float = 0.0  # forward-pass seconds of this model

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)

    @property
    def variants(self) -> list[str]:
        return list(self.correct)

    def accuracy(self, variant: str, k: int = 1) -> float:
        """Top-k accuracy of one variant (a plain mean over images)."""
        return float(self.correct[variant][k].mean())

    def estimate(self, variant: str, k: int = 1, n_boot: int = 2000, seed: int = 0) -> Any:
        """Top-k accuracy with a bootstrap 95 % interval over images (an ``Estimate``)."""
        from vitviz_core.evaluate.stats import accuracy_with_ci

        return accuracy_with_ci(self.correct[variant][k], n_boot=n_boot, seed=seed)

    def relative(self, variant: str, reference: str, k: int = 1, n_boot: int = 2000, seed: int = 0) -> Any:
        """Top-k of ``variant`` over top-k of ``reference`` (paired bootstrap over images)."""
        from vitviz_core.evaluate.stats import ratio_with_ci

        return ratio_with_ci(self.correct[variant][k], self.correct[reference][k], n_boot=n_boot, seed=seed)


@dataclass
class SweepResult:
    """The same image variants under several models: one :class:`Correctness` per model
    (``by_model``), plus timings. ``correct``, ``labels``, ``indices`` and ``skipped`` are
    views of those records (``correct[model][variant][k]`` is ``(N,)`` bool)."""

    by_model: dict[str, Correctness] = field(default_factory=dict)
    variants: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # model / "variants" -> seconds

    def _first(self) -> Correctness:
        if not self.by_model:
            raise VitvizError("an empty sweep has no images")
        return next(iter(self.by_model.values()))

    @property
    def correct(self) -> dict[str, dict[str, dict[int, np.ndarray]]]:
        return {m: c.correct for m, c in self.by_model.items()}

    @property
    def labels(self) -> np.ndarray:
        return self._first().labels

    @property
    def indices(self) -> np.ndarray:
        return self._first().indices

    @property
    def skipped(self) -> dict[int, str]:
        return self._first().skipped

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)


def evaluate_variants_many(
    models: Mapping[str, Any],
    loader: Iterable,
    variants: Callable[..., Mapping[str, Tensor]],
    ks: Sequence[int] = (1, 5),
    device: str | torch.device | None = None,
    progress: bool = True,
    desc: str = "evaluate",
    classify: Mapping[str, Callable[[Tensor], Tensor]] | None = None,
) -> SweepResult:
    """The variant-evaluation core: make every variant of every batch once, run it through
    every model, keep per-image results.

    Args:
        models: ``{name: LoadedModel or nn.Module}``; a LoadedModel's ``normalize`` is applied
            to each variant, a bare module gets the variants as they are.
        loader: yields ``(x01, labels, indices, *rest)`` with ``x01`` ``(B, 3, H, W)`` in [0, 1]
            (or ``(x01, labels)`` or ``x01``; see :func:`unpack_batch`).
        variants: ``f(x01, labels, indices, *rest) -> {name: (B, 3, H, W)}`` in pixel space,
            computed once per batch and shared by all models.
        device: where images go (default: the first model's device).
        classify: optional ``{name: input -> logits}`` replacing a model's forward pass.
    Returns:
        A :class:`SweepResult` with one :class:`Correctness` per model; ``seconds["variants"]``
        is the time spent making variants.
    """
    import time

    from tqdm.auto import tqdm

    from vitviz_core.evaluate.stats import topk_correct

    if not models:
        raise VitvizError("evaluate_variants_many needs at least one model")
    first = next(iter(models.values()))
    dev = torch.device(device) if device is not None else model_device(first)
    loaded = {n: as_loaded(m) for n, m in models.items()}
    runs = {n: ((classify or {}).get(n) or lm.model, lm.normalize) for n, lm in loaded.items()}
    hits: dict[str, dict[str, dict[int, list[Tensor]]]] = {n: {} for n in models}
    preds: dict[str, dict[str, list[Tensor]]] = {n: {} for n in models}
    seconds = {n: 0.0 for n in models}
    seconds["variants"] = 0.0
    labels: list[Tensor] = []
    indices: list[Tensor] = []
    names: list[str] = []
    offset = 0
    total = len(loader) if hasattr(loader, "__len__") else None
    with torch.inference_mode():
        for batch in tqdm(loader, total=total, desc=desc, disable=not progress, leave=False):
            x, y, idx, rest = unpack_batch(batch, offset)
            offset += x.shape[0]
            x = x.to(dev)  # (B, 3, H, W)
            t0 = time.perf_counter()
            made = dict(variants(x, y, idx, *rest))  # name -> (B, 3, H, W)
            seconds["variants"] += time.perf_counter() - t0
            for v in made:
                if v not in names:
                    names.append(v)
            for mname, (forward, norm) in runs.items():
                t0 = time.perf_counter()
                for vname, xv in made.items():
                    logits = forward(norm(xv)).float()  # (B, K)
                    for k, c in topk_correct(logits, y, ks).items():
                        hits[mname].setdefault(vname, {}).setdefault(k, []).append(c.cpu())
                    preds[mname].setdefault(vname, []).append(logits.argmax(-1).cpu())
                seconds[mname] += time.perf_counter() - t0
            labels.append(y)
            indices.append(idx)
    if not labels:
        raise VitvizError("the dataset is empty: nothing to evaluate")
    lab, ind = torch.cat(labels).numpy(), torch.cat(indices).numpy()
    skipped = dict(getattr(loader, "skipped", {}) or {})
    by_model = {
        m: Correctness(
            labels=lab,
            indices=ind,
            correct={v: {k: torch.cat(c).numpy() for k, c in d.items()} for v, d in hits[m].items()},
            skipped=dict(skipped),
            predicted={v: torch.cat(p).numpy() for v, p in preds[m].items()},
            seconds=seconds[m],
        )
        for m in models
    }
    return SweepResult(by_model=by_model, variants=names, seconds=seconds)


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
    """:func:`evaluate_variants_many` for one model: its :class:`Correctness`.

    Args:
        model: LoadedModel (its ``normalize`` is applied to each variant) or nn.Module
            (variants are fed as they are).
        loader: yields ``(x01, labels, indices, *rest)`` with ``x01`` ``(B, 3, H, W)`` in [0, 1].
        variants: ``f(x01, labels, indices, *rest) -> {name: (B, 3, H, W)}`` in pixel space.
        classify: optional replacement for the forward pass (input -> logits).
    """
    res = evaluate_variants_many(
        {"model": model},
        loader,
        variants,
        ks=ks,
        device=device,
        progress=progress,
        desc=desc,
        classify={"model": classify} if classify is not None else None,
    )
    return res.by_model["model"]
