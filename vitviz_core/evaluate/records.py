"""What produced a number: a small provenance record attached to every result.

Each experiment in :mod:`vitviz_core.evaluate` returns a result object whose ``record`` says
which model (name, timm architecture, weights source), which data (folder, number of images,
content fingerprint) and which settings (batch size, cut-offs, fills, seeds...) produced it,
plus library versions and the wall-clock time. ``to_dict()`` gives plain JSON-able data.

Unreadable files: ``finish()`` reports the files that passes over the record's dataset
skipped (``vitviz_core.data.skipped_files``): ``data["n_files"]`` (files listed),
``data["n_skipped"]`` and ``data["skipped_files"]`` (file names), and ``data["n_images"]``
becomes the number of images actually used.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "ResultRecord",
    "model_info",
    "data_info",
    "skip_info",
    "dataset_fingerprint",
    "weights_fingerprint",
    "jsonable",
]


def jsonable(obj: Any) -> Any:
    """Convert tensors, arrays, paths, dataclasses and tuples into JSON-friendly values."""
    import numpy as np

    if is_dataclass(obj) and not isinstance(obj, type):
        if hasattr(obj, "to_dict"):
            return jsonable(obj.to_dict())
        return jsonable(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().tolist()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and obj == float("inf"):
        return "inf"
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return repr(obj)


@dataclass
class ResultRecord:
    """Provenance of one experiment result."""

    experiment: str
    model: dict[str, Any] = field(default_factory=dict)  # name, arch, weights, pretrained
    data: dict[str, Any] = field(default_factory=dict)  # name/root, n_images, fingerprint
    settings: dict[str, Any] = field(default_factory=dict)  # every knob that changes the number
    versions: dict[str, str] = field(default_factory=dict)
    started: str = ""
    duration_s: float = 0.0

    @classmethod
    def start(
        cls, experiment: str, model: Any = None, data: Any = None, settings: dict[str, Any] | None = None
    ) -> "ResultRecord":
        import timm

        import vitviz_core

        rec = cls(
            experiment=experiment,
            model=model_info(model) if model is not None else {},
            data=data_info(data) if data is not None else {},
            settings=jsonable(settings or {}),
            versions={
                "vitviz_core": vitviz_core.__version__,
                "torch": torch.__version__,
                "timm": timm.__version__,
                "python": platform.python_version(),
            },
            started=time.strftime("%Y-%m-%dT%H:%M:%S"),
        )
        rec._t0 = time.perf_counter()  # type: ignore[attr-defined]
        rec._dataset = data  # type: ignore[attr-defined]
        return rec

    def finish(self) -> "ResultRecord":
        """Stamp the duration and the skipped-file counts of the record's dataset."""
        t0 = getattr(self, "_t0", None)
        if t0 is not None:
            self.duration_s = round(time.perf_counter() - t0, 3)
        dataset = getattr(self, "_dataset", None)
        if dataset is not None:
            self.data.update(skip_info(dataset))
        return self

    def to_dict(self) -> dict[str, Any]:
        return jsonable({k: v for k, v in asdict(self).items()})

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)


def model_info(model: Any) -> dict[str, Any]:
    """Name, architecture and weights source of a LoadedModel (or a bare nn.Module)."""
    if hasattr(model, "weights_source") and hasattr(model, "model"):
        return {
            "name": model.name,
            "arch": model.arch,
            "weights": model.weights_source,
            "pretrained": bool(model.pretrained),
            "input_size": list(model.data_config.get("input_size", [])),
        }
    if isinstance(model, torch.nn.Module):
        cfg = getattr(model, "pretrained_cfg", None) or {}
        return {
            "name": type(model).__name__,
            "arch": cfg.get("architecture", type(model).__name__),
            "weights": "unknown (bare nn.Module)",
            "pretrained": None,
        }
    return {"name": str(model)}


def data_info(dataset: Any) -> dict[str, Any]:
    """Where a dataset lives, its size, and a content fingerprint (if it can be computed)."""
    info: dict[str, Any] = {"type": type(dataset).__name__}
    try:
        info["n_images"] = len(dataset)
    except TypeError:
        pass
    info.update(skip_info(dataset))
    root = getattr(dataset, "root", None)
    if root is not None:
        info["root"] = str(root)
        info["name"] = Path(root).name
    try:
        info["fingerprint"] = dataset_fingerprint(dataset)
    except ValueError:
        pass
    return info


def skip_info(dataset: Any) -> dict[str, Any]:
    """``n_files``, ``n_skipped``, ``skipped_files`` and ``n_images`` (files actually used)
    of a dataset, from the unreadable files its passes met (``data.skipped_files``)."""
    from vitviz_core.data import skipped_files

    skipped = skipped_files(dataset)
    info: dict[str, Any] = {"n_skipped": len(skipped), "skipped_files": [skipped[i] for i in sorted(skipped)]}
    try:
        info["n_files"] = len(dataset)
        info["n_images"] = len(dataset) - len(skipped)
    except TypeError:
        pass
    return info


def dataset_fingerprint(dataset: Any) -> str:
    """A hash of a dataset's content: file paths + sizes + mtimes + labels for file-backed
    datasets (``samples`` of ``(path, label)``), the raw bytes for tensor datasets.

    Raises ValueError when neither is available (the caller then cannot cache).
    """
    h = hashlib.sha256()
    base = getattr(dataset, "dataset", None)
    indices = getattr(dataset, "indices", None)
    if base is not None and indices is not None:  # torch.utils.data.Subset
        h.update(dataset_fingerprint(base).encode())
        h.update(json.dumps([int(i) for i in indices]).encode())
        return h.hexdigest()[:16]
    samples = getattr(dataset, "samples", None)
    if samples is not None:
        for item in samples:
            path, label = (item[0], item[1]) if isinstance(item, (tuple, list)) else (item, -1)
            try:
                st = os.stat(path)
                h.update(f"{path}|{st.st_size}|{st.st_mtime_ns}|{label}\n".encode())
            except (OSError, TypeError):
                h.update(f"{path}|?|{label}\n".encode())
        h.update(repr(getattr(dataset, "transform", None)).encode())
        return h.hexdigest()[:16]
    tensors = getattr(dataset, "tensors", None)
    if tensors is not None:
        for t in tensors:
            t = t.detach().cpu().contiguous()
            h.update(str((tuple(t.shape), str(t.dtype))).encode())
            h.update(t.numpy().tobytes())
        return h.hexdigest()[:16]
    raise ValueError(
        f"cannot fingerprint a {type(dataset).__name__}: it has neither `samples` (file list) nor `tensors`"
    )


def weights_fingerprint(module: torch.nn.Module) -> str:
    """A hash of every parameter and buffer (names, shapes, values) of a module."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
        if t.dtype == torch.bfloat16:
            t = t.float()
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]
