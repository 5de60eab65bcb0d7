"""The atlas tasks as pure functions of (loaded model, job, task), and the worker that runs them.

A :class:`Worker` loads the model once (per process, or per Ray actor) and checks that its
weights hash is the one the job was planned with, then runs tasks. Each task returns a
:class:`Payload`: plain numpy arrays, PNG bytes by relative file name, and JSON metadata. The
driver writes payloads into the store, so workers on a cluster need no shared disk (only the
model weights and the data, at paths their own configuration finds).

- :func:`run_vis` calls :func:`vitviz_core.optimize.optimize_features` and scores the clean
  visualizations with :func:`vitviz_core.optimize.score_images`.
- :func:`run_exemplars` calls :func:`vitviz_core.evaluate.exemplars.find_exemplars` on one
  shard of the dataset, for all hooks of the job at once.
- :func:`run_maps` calls :func:`vitviz_core.evaluate.exemplars.activation_maps` on the merged
  top-k exemplars of a chunk of features and draws thumbnails with overlays.
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vitviz_core.atlas.plan import AtlasJob, Task
from vitviz_core.errors import VitvizError

__all__ = ["Payload", "Worker", "run_vis", "run_exemplars", "run_maps", "png_bytes", "THUMB"]

log = logging.getLogger(__name__)

THUMB = 112  # px, side of grid thumbnails and exemplar images on neuron pages


@dataclass
class Payload:
    """A finished task's result, ready to be written by the store."""

    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)  # relative name -> PNG bytes
    seconds: float = 0.0


def png_bytes(image: Tensor | np.ndarray) -> bytes:
    """``(3, H, W)`` float in [0, 1] or ``(H, W, 3)`` uint8 -> PNG bytes (deterministic)."""
    from PIL import Image

    if isinstance(image, Tensor):
        arr = (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)
    else:
        arr = np.asarray(image)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _resize(x: Tensor, size: int) -> Tensor:
    """``(B, 3, H, W)`` -> ``(B, 3, size, size)``, antialiased."""
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def _naturalness(images: Tensor) -> Tensor:
    """Spectral naturalness of ``images`` (K, 3, H, W) (:mod:`vitviz_core.quality`; 1.0 =
    natural, colour noise >= 10), NaN where no natural-image data gives the reference."""
    from vitviz_core.errors import VitvizError
    from vitviz_core.quality import spectral_naturalness

    try:
        return spectral_naturalness(images).float()
    except VitvizError:
        return torch.full((images.shape[0],), float("nan"))


def run_vis(loaded: Any, job: AtlasJob, task: Task) -> Payload:
    """Feature visualizations of ``task.features`` of ``task.hook``: full-size and thumbnail
    PNGs, the objective history and the clean activation of each visualization."""
    from vitviz_core.optimize import optimize_features, score_images

    res = optimize_features(
        loaded,
        task.hook,
        list(task.features),
        recipe=job.recipe,
        steps=job.steps,
        n_augment=job.n_augment,
        seed=job.seed,
        progress=False,
    )
    images = res.images  # (K, 3, H, W) in [0, 1]
    clean = score_images(loaded, task.hook, images, list(task.features))  # (K,)
    natural = _naturalness(images)  # (K,), NaN without data
    thumbs = _resize(images, THUMB)  # (K, 3, T, T)
    files = {}
    for i, f in enumerate(task.features):
        files[f"f{f:05d}.png"] = png_bytes(images[i])
        files[f"f{f:05d}.thumb.png"] = png_bytes(thumbs[i])
    return Payload(
        arrays={
            "clean_activation": clean.numpy().astype(np.float32),  # (K,)
            "naturalness": natural.numpy().astype(np.float32),  # (K,)
            "history": res.history.numpy().astype(np.float32),
        },  # (steps, K)
        meta={
            "features": list(task.features),
            "objective": res.config["objective"],
            "image_size": res.config["image_size"],
            "spec": {
                "model": job.model_label,
                "recipe": job.recipe,
                "seed": job.seed,
                "steps": res.config["steps"],
                "n_augment": res.config["recipe"]["n_augment"],
                "vitviz": job.version,
            },
        },
        files=files,
    )


def run_exemplars(loaded: Any, job: AtlasJob, task: Task) -> Payload:
    """Top-k images of every job feature of every job hook over one shard of the data."""
    from torch.utils.data import Subset

    from vitviz_core.evaluate.exemplars import find_exemplars

    dataset = job.data.dataset(loaded)
    if len(dataset) != job.n_images:
        raise VitvizError(
            f"the dataset {job.data.name!r} has {len(dataset)} images on this worker, "
            f"{job.n_images} when the job was planned; give every worker the same data"
        )
    shard = Subset(dataset, range(*task.shard))
    res = find_exemplars(
        loaded,
        shard,
        hooks=list(job.hooks),
        k=job.k,
        stats=("mean",),
        batch_size=job.batch_size,
        keep_maps=True,
        cache=False,
        progress=False,
    )
    arrays = {}
    for hook, feats in zip(job.hooks, job.features):
        t = res.topk[hook]["mean"]
        cols = torch.tensor(feats)
        arrays[f"{hook}/values"] = t.values[:, cols].numpy()  # (n, F) float32
        arrays[f"{hook}/indices"] = t.indices[:, cols].numpy()  # (n, F) int64
        arrays[f"{hook}/maps"] = t.maps[:, cols].numpy()  # (n, F, h, w) float16
    return Payload(arrays=arrays, meta={"shard": list(task.shard), "images": task.shard[1] - task.shard[0]})


def _overlay(images: Tensor, maps: Tensor, vmax: float) -> Tensor:
    """Images ``(B, 3, H, W)`` in [0, 1] blended with the inferno colour of ``maps (B, H, W)``
    scaled to [0, vmax] (negative activations show as none) -> ``(B, 3, H, W)``."""
    from matplotlib import colormaps

    m = (maps / max(vmax, 1e-12)).clamp(0, 1)  # (B, H, W)
    lut = torch.tensor(colormaps["inferno"](np.linspace(0, 1, 256))[:, :3], dtype=torch.float32)
    color = lut[(m * 255).round().long()].permute(0, 3, 1, 2)  # (B, 3, H, W)
    alpha = 0.25 + 0.5 * m[:, None]  # (B, 1, H, W)
    return images * (1 - alpha) + color * alpha


def run_maps(loaded: Any, job: AtlasJob, task: Task) -> Payload:
    """Exemplar thumbnails and activation-map overlays of a chunk of features."""
    from vitviz_core.data import class_name
    from vitviz_core.evaluate.exemplars import activation_maps

    dataset = job.data.dataset(loaded, pixels=True)
    files: dict[str, bytes] = {}
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {"features": list(task.features), "exemplars": {}}
    dev = loaded.device
    for f, idx in zip(task.features, task.exemplars):
        items = [dataset[i] for i in idx]
        x = torch.stack([it[0] for it in items]).to(dev)  # (k, 3, H, W) in [0, 1]
        grid_maps = activation_maps(loaded, loaded.normalize(x), task.hook, f, size=None)  # (k, h, w)
        up = F.interpolate(
            grid_maps[:, None].float(), size=(THUMB, THUMB), mode="bilinear", align_corners=False
        )[:, 0]  # (k, T, T)
        small = _resize(x.float(), THUMB).clamp(0, 1).cpu()  # (k, 3, T, T)
        over = _overlay(small, up.cpu(), float(grid_maps.max()))
        for j in range(len(idx)):
            files[f"f{f:05d}.ex{j}.png"] = png_bytes(small[j])
            files[f"f{f:05d}.ov{j}.png"] = png_bytes(over[j])
        arrays[f"f{f:05d}/maps"] = grid_maps.float().cpu().numpy()  # (k, h, w)
        arrays[f"f{f:05d}/map_mean"] = grid_maps.float().mean(dim=(1, 2)).cpu().numpy()  # (k,)
        meta["exemplars"][str(f)] = [
            {
                "index": int(it[2]),
                "file": job.files[int(it[2])],
                "label": int(it[1]),
                "class": class_name(int(it[1])) if 0 <= int(it[1]) < 1000 else "",
            }
            for it in items
        ]
    return Payload(arrays=arrays, meta=meta, files=files)


RUNNERS = {"vis": run_vis, "exemplars": run_exemplars, "maps": run_maps}


class Worker:
    """Loads the job's model once and runs its tasks (in this process or inside a Ray actor)."""

    def __init__(self, job: AtlasJob, device: str = "cpu", threads: int | None = None) -> None:
        import vitviz_core
        from vitviz_core.evaluate.records import weights_fingerprint

        if threads:
            torch.set_num_threads(int(threads))
        if vitviz_core.__version__ != job.version:
            raise VitvizError(
                f"this worker runs vitviz {vitviz_core.__version__} but the job was planned "
                f"with {job.version}; install the same version on every node"
            )
        self.job = job
        self.loaded = job.model.load(device)
        got = weights_fingerprint(self.loaded.model)
        if got != job.weights_hash:
            raise VitvizError(
                f"the model {job.model.name!r} loads different weights on this worker (hash "
                f"{got}, planned {job.weights_hash}); give every node the same weights"
            )
        self.tasks_run = 0

    def run(self, task: Task) -> Payload:
        """The payload of one task (a pure function of the job and the task)."""
        start = time.perf_counter()
        payload = RUNNERS[task.kind](self.loaded, self.job, task)
        payload.seconds = time.perf_counter() - start
        self.tasks_run += 1
        return payload

    def ping(self) -> int:
        return self.tasks_run
