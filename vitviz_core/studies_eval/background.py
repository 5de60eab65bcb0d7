"""Background features (paper Fig. 9): the share of each feature's activation mass that lies
outside the foreground, and its figures."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import Tensor

from vitviz_core.errors import DataError, VitvizError
from vitviz_core.evaluate.common import model_device
from vitviz_core.evaluate.stats import Estimate, ratio_with_ci
from vitviz_core.plot.images import to_hwc
from vitviz_core.studies_eval.cache import cached


@dataclass
class BackgroundFeatures:
    """Where each feature of a hook puts its activation mass, relative to the foreground."""

    hook: str
    bg_fraction: np.ndarray  # (C,) share of the feature's (positive) activation mass outside the foreground
    mass: np.ndarray  # (C,) mean activation mass per image and patch
    bg_area: float  # share of all patch area that is background (uniform-activation baseline)
    ranked: list[int]  # features by bg_fraction, descending, among those with enough mass
    top_ci: dict[int, Estimate] = field(default_factory=dict)  # bootstrap CI of bg_fraction (ranked[:top])
    image_scores: np.ndarray | None = None  # (N, C) patch-mean activation per image (exemplar ranking)
    min_mass: float = 0.0

    def exemplars(self, feature: int, k: int = 4) -> list[int]:
        """Dataset indices of the ``k`` images with the highest patch-mean activation."""
        if self.image_scores is None:
            raise VitvizError("this result kept no per-image scores")
        return [int(i) for i in np.argsort(-self.image_scores[:, feature], kind="stable")[:k]]


def background_features(
    model: Any,
    dataset: Any,
    fg_view: Tensor,
    hook: str,
    *,
    batch_size: int = 32,
    min_mass_quantile: float = 0.5,
    top: int = 8,
    n_boot: int = 1000,
    cache: bool = True,
    progress: bool = False,
) -> BackgroundFeatures:
    """Rank the channels of ``hook`` by the share of their activation mass that falls outside
    the foreground (paper Fig. 9: features that fire on background).

    Args:
        dataset: items ``(x, label, index)``, ``x`` the normalised model input; ``index``
            addresses ``fg_view``.
        fg_view: ``(N, H, W)`` foreground probability in the model's view (:func:`maps_in_view`),
            reduced to the activation grid by area averaging.
        min_mass_quantile: only features whose mean positive activation is at least this
            quantile over channels are ranked (features that hardly fire have noisy shares).
        top: how many of the ranked features get a bootstrap CI (over images).
        cache: keep the result on disk, keyed by model, data, ``fg_view`` and settings.
    The bootstrap CI of a top feature's share is computed on the images it was selected on.
    """
    fg_key = hashlib.sha256(fg_view.detach().cpu().float().contiguous().numpy().tobytes()).hexdigest()[:16]
    return cached(
        "background",
        lambda: _background_features(
            model, dataset, fg_view, hook, batch_size, min_mass_quantile, top, n_boot, progress
        ),
        models=[model],
        data=dataset,
        enabled=cache,
        settings={"fg": fg_key, "hook": hook, "q": min_mass_quantile, "top": top, "n_boot": n_boot},
    )


def _background_features(
    model: Any,
    dataset: Any,
    fg_view: Tensor,
    hook: str,
    batch_size: int,
    min_mass_quantile: float,
    top: int,
    n_boot: int,
    progress: bool,
) -> BackgroundFeatures:
    from tqdm.auto import tqdm

    from vitviz_core.evaluate.common import make_loader, model_device, unpack_batch
    from vitviz_core.hooks import capture, to_patch_maps
    from vitviz_core.models import as_loaded

    module = as_loaded(model).model
    dev = model_device(model)
    bg_rows: list[Tensor] = []
    tot_rows: list[Tensor] = []
    mean_rows: list[Tensor] = []
    idx_rows: list[Tensor] = []
    bg_area_sum, area_n = 0.0, 0
    offset = 0
    with torch.inference_mode(), capture(module, [hook], stop_early=True) as cap:
        for batch in tqdm(
            make_loader(dataset, batch_size), desc="background features", disable=not progress, leave=False
        ):
            x, _, idx, _ = unpack_batch(batch, offset)
            offset += x.shape[0]
            cap.forward(x.to(dev))
            maps = to_patch_maps(cap.activations[hook], cap.specs[hook]).float()  # (B, C, h, w)
            fg = fg_view[idx].to(maps.device)[:, None]  # (B, 1, H, W)
            fg = F.adaptive_avg_pool2d(fg, maps.shape[-2:])[:, 0]  # (B, h, w) foreground share per patch
            pos = maps.clamp_min(0)
            bg_rows.append((pos * (1 - fg)[:, None]).sum((2, 3)).cpu())  # (B, C)
            tot_rows.append(pos.sum((2, 3)).cpu())  # (B, C)
            mean_rows.append(maps.mean((2, 3)).cpu())  # (B, C)
            idx_rows.append(idx)
            bg_area_sum += float((1 - fg).sum())
            area_n += fg.numel()
    if offset == 0:
        raise DataError("the dataset is empty: nothing to rank")
    bg = torch.cat(bg_rows).double().numpy()  # (N, C)
    tot = torch.cat(tot_rows).double().numpy()  # (N, C)
    order = torch.cat(idx_rows).numpy()
    scores = np.zeros((int(order.max()) + 1, bg.shape[1]), dtype=np.float32)
    scores[order] = torch.cat(mean_rows).numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(tot.sum(0) > 0, bg.sum(0) / np.maximum(tot.sum(0), 1e-12), np.nan)
    n_pos = float(np.prod(maps.shape[-2:]))
    mass = tot.mean(0) / n_pos
    min_mass = float(np.quantile(mass, min_mass_quantile))
    eligible = np.nonzero((mass >= min_mass) & np.isfinite(frac))[0]
    ranked = [int(c) for c in eligible[np.argsort(-frac[eligible], kind="stable")]]
    top_ci = {c: ratio_with_ci(bg[:, c], tot[:, c], n_boot=n_boot) for c in ranked[:top]}
    return BackgroundFeatures(
        hook=hook,
        bg_fraction=frac,
        mass=mass,
        bg_area=bg_area_sum / max(area_n, 1),
        ranked=ranked,
        top_ci=top_ci,
        image_scores=scores,
        min_mass=min_mass,
    )


def background_feature_figure(
    bf: BackgroundFeatures,
    model: Any,
    pixels: Any,
    fg_view: Tensor,
    features: Sequence[int],
    k: int = 4,
    cell_inches: float = 1.3,
    class_names: Callable[[int], str] | None = None,
) -> Figure:
    """One row per feature: its top-``k`` images (of the ranked pool) with the feature's
    activation map overlaid and the foreground outline (cyan) drawn.

    ``pixels`` yields ``(x01, label, index)`` in the model's pixel view (same indices as the
    dataset :func:`background_features` ran on)."""
    from vitviz_core.evaluate.exemplars import activation_maps

    rows = len(features)
    fig = Figure(figsize=(k * cell_inches + 0.5, rows * (cell_inches + 0.28)))
    axes = fig.subplots(rows, k, squeeze=False)
    dev = model_device(model)
    for r, f in enumerate(features):
        ids = bf.exemplars(f, k)
        items = [pixels[i] for i in ids]
        x01 = torch.stack([it[0] for it in items])  # (k, 3, H, W)
        maps = (
            activation_maps(model, model.normalize(x01).to(dev), bf.hook, f).clamp_min(0).cpu()
        )  # (k, H, W)
        vmax = max(float(maps.max()), 1e-6)
        for j, ax in enumerate(axes[r]):
            ax.set_axis_off()
            if j >= len(items):
                continue
            ax.imshow(to_hwc(x01[j]))
            ax.imshow(maps[j].numpy(), cmap="inferno", alpha=0.55, vmin=0, vmax=vmax)
            fg = fg_view[ids[j]].numpy()
            if fg.max() > 0.5 > fg.min():
                ax.contour(fg, levels=[0.5], colors="cyan", linewidths=0.8)
            name = class_names(int(items[j][1]))[:16] if class_names is not None else ""
            ax.set_title(name, fontsize=8, pad=2)
        ci = bf.top_ci.get(f)
        share = ci.percent(0) if ci is not None else f"{100 * bf.bg_fraction[f]:.0f}"
        axes[r, 0].text(
            -0.06,
            0.5,
            f"#{f}\nbg {share.split(' ')[0]}%",
            transform=axes[r, 0].transAxes,
            rotation=90,
            ha="right",
            va="center",
            fontsize=8.5,
        )
    fig.subplots_adjust(left=0.07, right=0.995, top=0.96, bottom=0.01, wspace=0.04, hspace=0.22)
    return fig


def background_histogram(
    results: Mapping[str, BackgroundFeatures], bins: int = 30, size: tuple[float, float] = (5.6, 3.2)
) -> Figure:
    """Distribution over features of the background share of activation mass, one
    histogram per model, with each model's background-area baseline (dashed)."""
    fig = Figure(figsize=size)
    ax = fig.add_subplot(1, 1, 1)
    edges = np.linspace(0, 100, bins + 1)
    for name, bf in results.items():
        v = 100 * bf.bg_fraction[bf.ranked]
        w = np.full(v.shape, 100.0 / max(len(v), 1))
        (patch,) = ax.hist(
            v, bins=edges, weights=w, histtype="step", lw=1.5, label=f"{name} ({len(v)} features)"
        )[2][:1]
        ax.axvline(100 * bf.bg_area, ls="--", lw=1, color=patch.get_edgecolor())
    ax.set_xlabel("share of the feature's activation mass outside the foreground (%)")
    ax.set_ylabel("features (%)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
