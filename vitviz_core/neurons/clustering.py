"""Clustering patch embeddings layer by layer (Nguyen et al. 2022, Sec. 5).

Per image and per layer, the patch tokens are clustered (DBSCAN as in the paper, and
k-means) and the clusters are scored against an object mask on the patch grid:

- *purity* (each cluster votes for its majority class; share of tokens that agree),
  reported next to its chance level, the majority-class share of the image (a clustering
  into one blob already reaches it);
- adjusted Rand index (0 for chance, 1 for the mask's partition);
- silhouette of the *mask's* object/background partition in token space (how separated
  object and background tokens are, independent of any clustering algorithm), and of the
  predicted clusters.

Object versus object (:func:`object_pair_scores`): on images whose object mask has two
separate connected regions on the patch grid (:func:`salient_components`), the patches of the
two largest regions are clustered into two groups and scored against which region they
belong to. Two regions of a saliency mask are a proxy for two objects: they can also be two
visible parts of one object.

Object masks never come from hand-typed lists: they are foreground-model probabilities
(:func:`vitviz_core.models.load_foreground_model`) or ILSVRC boxes
(:func:`vitviz_core.data.boxes_to_mask`), reduced to the patch grid by
:func:`mask_to_patch_labels`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vitviz_core.errors import HookError, VitvizError
from vitviz_core.models import as_loaded

__all__ = [
    "layer_hook_names",
    "capture_patch_tokens",
    "mask_to_patch_labels",
    "purity",
    "cluster_tokens",
    "ClusterScore",
    "score_clustering",
    "layer_cluster_scores",
    "summarize_scores",
    "embed_2d",
    "salient_components",
    "object_pair_scores",
]


def layer_hook_names(model: Any, include_embed: bool = True) -> list[str]:
    """``["hook_embed", "blocks.0.hook_resid_post", ...]``: level 0 then every block's output."""
    module = as_loaded(model).model
    n = len(getattr(module, "blocks", []))
    if n == 0:
        raise HookError(f"{type(module).__name__} has no `blocks`: patch-token clustering needs a timm ViT")
    return (["hook_embed"] if include_embed else []) + [f"blocks.{i}.hook_resid_post" for i in range(n)]


def capture_patch_tokens(model: Any, x: Tensor, hook_names: Sequence[str]) -> dict[str, Tensor]:
    """Patch tokens ``{name: (B, P, C)}`` (prefix tokens dropped) at several hook points.

    ``x`` must already be in the model's input space.
    """
    from vitviz_core import hooks

    module = as_loaded(model).model
    out: dict[str, Tensor] = {}
    with torch.inference_mode(), hooks.capture(module, list(hook_names)) as cap:
        cap.forward(x)
        for n in hook_names:
            maps = hooks.to_patch_maps(cap.activations[n], cap.specs[n])  # (B, C, gh, gw)
            out[n] = maps.flatten(2).transpose(1, 2).float()  # (B, P, C)
    return out


def mask_to_patch_labels(mask: Tensor, grid: tuple[int, int], threshold: float = 0.5) -> Tensor:
    """Object mask -> patch labels ``(B, gh*gw)`` bool (or ``(gh*gw,)`` for one mask).

    Args:
        mask: ``(H, W)``, ``(B, H, W)`` or ``(B, 1, H, W)``, bool or probabilities in [0, 1].
        threshold: a patch is "object" when the mean mask value over its area is at least
            this (area-weighted, so any H, W works, not only multiples of the grid).
    """
    single = mask.dim() == 2
    m = mask.float()
    if m.dim() == 2:
        m = m[None, None]
    elif m.dim() == 3:
        m = m[:, None]
    elif m.dim() != 4 or m.shape[1] != 1:
        raise VitvizError(f"expected a mask (H, W), (B, H, W) or (B, 1, H, W), got {tuple(mask.shape)}")
    frac = F.adaptive_avg_pool2d(m, grid)  # (B, 1, gh, gw)
    labels = (frac >= threshold).flatten(1)  # (B, P)
    return labels[0] if single else labels


def purity(pred: np.ndarray | Tensor, true: np.ndarray | Tensor, noise: str = "cluster") -> float:
    """Cluster purity: ``(1/N) sum_k max_c |cluster_k & class_c|``.

    Args:
        pred: ``(N,)`` cluster ids; DBSCAN marks noise with -1.
        true: ``(N,)`` class ids (e.g. object/background).
        noise: how DBSCAN noise points count: ``"cluster"`` (all noise is one cluster, the
            conservative default), ``"singleton"`` (each its own pure cluster) or
            ``"exclude"`` (dropped; purity over clustered points only).
    """
    p = np.asarray(pred.cpu() if isinstance(pred, Tensor) else pred).reshape(-1)
    t = np.asarray(true.cpu() if isinstance(true, Tensor) else true).reshape(-1)
    if p.shape != t.shape:
        raise VitvizError(f"pred has {p.size} items, true has {t.size}")
    if p.size == 0:
        raise VitvizError("purity of an empty clustering is undefined")
    n = p.size
    is_noise = p < 0
    if noise == "exclude":
        p, t = p[~is_noise], t[~is_noise]
        if p.size == 0:
            return float("nan")
        n = p.size
    elif noise == "singleton":
        if is_noise.any():
            p = p.copy()
            p[is_noise] = p.max(initial=-1) + 1 + np.arange(is_noise.sum())
    elif noise != "cluster":
        raise VitvizError(f"unknown noise handling {noise!r}: use 'cluster', 'singleton' or 'exclude'")
    _, pi = np.unique(p, return_inverse=True)
    _, ti = np.unique(t, return_inverse=True)
    table = np.zeros((pi.max() + 1, ti.max() + 1), dtype=np.int64)
    np.add.at(table, (pi, ti), 1)
    return float(table.max(1).sum() / n)


def _prepare(tokens: np.ndarray, normalize: str) -> np.ndarray:
    x = np.asarray(tokens, dtype=np.float64)
    if normalize == "l2":
        x = x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)
    elif normalize == "standard":
        x = (x - x.mean(0)) / (x.std(0) + 1e-12)
    elif normalize != "none":
        raise VitvizError(f"unknown normalize {normalize!r}: use 'l2', 'standard' or 'none'")
    return x


def cluster_tokens(
    tokens: np.ndarray | Tensor,
    method: str = "kmeans",
    n_clusters: int = 2,
    eps: float | None = None,
    min_samples: int = 4,
    eps_quantile: float = 0.9,
    normalize: str = "l2",
    seed: int = 0,
) -> np.ndarray:
    """Cluster one image's patch tokens ``(P, C)`` -> labels ``(P,)`` (-1 = DBSCAN noise).

    Args:
        method: ``"kmeans"`` (``n_clusters``, seeded) or ``"dbscan"`` (paper).
        eps: DBSCAN radius; None picks it per image as the ``eps_quantile`` quantile of
            every token's distance to its ``min_samples``-th neighbour (k-distance heuristic),
            so it adapts to each layer's scale.
        normalize: ``"l2"`` (cosine geometry, default), ``"standard"`` or ``"none"``.
    """
    from sklearn.cluster import DBSCAN, KMeans

    x = _prepare(tokens.detach().cpu().numpy() if isinstance(tokens, Tensor) else tokens, normalize)
    if x.ndim != 2 or x.shape[0] < 2:
        raise VitvizError(f"expected tokens (P, C) with P >= 2, got shape {x.shape}")
    if method == "kmeans":
        k = min(int(n_clusters), x.shape[0])
        return KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(x)
    if method == "dbscan":
        if eps is None:
            sq = (x * x).sum(1)
            d = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * (x @ x.T), 0.0))  # (P, P)
            kth = np.sort(d, axis=1)[:, min(min_samples, x.shape[0] - 1)]
            eps = float(np.quantile(kth, eps_quantile))
            if eps <= 0:
                eps = 1e-6
        return DBSCAN(eps=eps, min_samples=min_samples).fit_predict(x)
    raise VitvizError(f"unknown clustering method {method!r}: use 'kmeans' or 'dbscan'")


@dataclass
class ClusterScore:
    """Scores of one image's clustering at one layer."""

    layer: str
    method: str
    purity: float
    baseline: float  # majority-class share: purity of a single cluster
    ari: float  # adjusted Rand index vs. the mask
    silhouette_mask: float  # silhouette of the object/background partition (nan if one class)
    silhouette_pred: float  # silhouette of the predicted clusters (nan if < 2 clusters)
    n_clusters: int
    noise_fraction: float


def score_clustering(
    tokens: np.ndarray | Tensor,
    labels: np.ndarray | Tensor,
    pred: np.ndarray,
    layer: str = "",
    method: str = "",
    normalize: str = "l2",
    noise: str = "cluster",
) -> ClusterScore:
    """Purity, chance level, ARI and silhouettes of a clustering ``pred`` of ``tokens (P, C)``."""
    from sklearn.metrics import adjusted_rand_score, silhouette_score

    x = _prepare(tokens.detach().cpu().numpy() if isinstance(tokens, Tensor) else tokens, normalize)
    t = np.asarray(labels.cpu() if isinstance(labels, Tensor) else labels).reshape(-1).astype(np.int64)
    p = np.asarray(pred).reshape(-1)
    frac = t.mean() if t.size else float("nan")
    sil_mask = float(silhouette_score(x, t)) if 1 < len(np.unique(t)) < len(t) else float("nan")
    p_sil = p[p >= 0]
    n_cl = len(np.unique(p_sil))
    sil_pred = float(silhouette_score(x[p >= 0], p_sil)) if 1 < n_cl < len(p_sil) else float("nan")
    return ClusterScore(
        layer=layer,
        method=method,
        purity=purity(p, t, noise=noise),
        baseline=float(max(frac, 1 - frac)),
        ari=float(adjusted_rand_score(t, p)),
        silhouette_mask=sil_mask,
        silhouette_pred=sil_pred,
        n_clusters=int(n_cl),
        noise_fraction=float((p < 0).mean()),
    )


def layer_cluster_scores(
    tokens: dict[str, Tensor],
    labels: Tensor,
    methods: Sequence[str] = ("kmeans", "dbscan"),
    n_clusters: int = 2,
    min_samples: int = 4,
    normalize: str = "l2",
    seed: int = 0,
    skip_single_class: bool = True,
    threads: int | None = 1,
) -> list[ClusterScore]:
    """Cluster and score every image at every layer.

    Args:
        tokens: ``{layer: (B, P, C)}`` (:func:`capture_patch_tokens`).
        labels: ``(B, P)`` bool object/background per patch (:func:`mask_to_patch_labels`).
        skip_single_class: skip images whose mask is all object or all background (purity is
            trivially 1 there).
        threads: BLAS/OpenMP threads while clustering (1 is much faster for a few hundred
            tokens: thread start-up dominates; None leaves the limits alone).
    Returns:
        One :class:`ClusterScore` per (image, layer, method), in that nesting order.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads):
        return _layer_cluster_scores(
            tokens, labels, methods, n_clusters, min_samples, normalize, seed, skip_single_class
        )


def _layer_cluster_scores(
    tokens: dict[str, Tensor],
    labels: Tensor,
    methods: Sequence[str],
    n_clusters: int,
    min_samples: int,
    normalize: str,
    seed: int,
    skip_single_class: bool,
) -> list[ClusterScore]:
    scores: list[ClusterScore] = []
    lab = labels.detach().cpu()
    for b in range(lab.shape[0]):
        t = lab[b].numpy().astype(np.int64)  # (P,)
        if skip_single_class and t.min() == t.max():
            continue
        for name, tok in tokens.items():
            x = tok[b].detach().cpu().numpy()  # (P, C)
            if x.shape[0] != t.shape[0]:
                raise VitvizError(
                    f"layer {name}: {x.shape[0]} tokens but {t.shape[0]} mask labels "
                    "(use mask_to_patch_labels with the model's patch grid)"
                )
            for m in methods:
                pred = cluster_tokens(
                    x,
                    method=m,
                    n_clusters=n_clusters,
                    min_samples=min_samples,
                    normalize=normalize,
                    seed=seed,
                )
                scores.append(score_clustering(x, t, pred, layer=name, method=m, normalize=normalize))
    return scores


def summarize_scores(scores: Sequence[ClusterScore], n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """Per (layer, method): mean purity with a bootstrap 95 % CI over images, mean chance
    level, mean purity gain over chance (with CI), ARI and silhouettes (nan-aware means)."""
    from vitviz_core.evaluate.stats import bootstrap_ci

    groups: dict[tuple[str, str], list[ClusterScore]] = {}
    for s in scores:
        groups.setdefault((s.layer, s.method), []).append(s)
    rows = []
    for (layer, method), ss in groups.items():
        pur = np.array([s.purity for s in ss])
        base = np.array([s.baseline for s in ss])
        est = bootstrap_ci(pur, n_boot=n_boot, seed=seed)
        gain = bootstrap_ci(pur - base, n_boot=n_boot, seed=seed)
        rows.append(
            {
                "layer": layer,
                "method": method,
                "n_images": len(ss),
                "purity": est.value,
                "purity_low": est.low,
                "purity_high": est.high,
                "baseline": float(base.mean()),
                "gain": gain.value,
                "gain_low": gain.low,
                "gain_high": gain.high,
                "ari": float(np.nanmean([s.ari for s in ss])),
                "silhouette_mask": _nanmean([s.silhouette_mask for s in ss]),
                "silhouette_pred": _nanmean([s.silhouette_pred for s in ss]),
                "n_clusters": float(np.mean([s.n_clusters for s in ss])),
                "noise_fraction": float(np.mean([s.noise_fraction for s in ss])),
            }
        )
    return rows


def _nanmean(v: Sequence[float]) -> float:
    a = np.asarray(v, dtype=np.float64)
    return float(np.nanmean(a)) if np.isfinite(a).any() else float("nan")


def embed_2d(
    tokens: np.ndarray | Tensor,
    method: str = "pca",
    seed: int = 0,
    normalize: str = "l2",
    perplexity: float = 30.0,
) -> np.ndarray:
    """2-D embedding ``(N, 2)`` of tokens ``(N, C)`` by ``"pca"`` or ``"tsne"`` (seeded)."""
    x = _prepare(tokens.detach().cpu().numpy() if isinstance(tokens, Tensor) else tokens, normalize)
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(x)
    if method == "tsne":
        from sklearn.manifold import TSNE

        perp = min(perplexity, max(2.0, (x.shape[0] - 1) / 3))
        return TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed).fit_transform(x)
    raise VitvizError(f"unknown embedding {method!r}: use 'pca' or 'tsne'")


def salient_components(
    patch_object: Tensor | np.ndarray, grid: tuple[int, int], min_patches: int = 4
) -> np.ndarray:
    """Connected object regions (4-neighbourhood) of one image's patch labels ``(P,)``:
    ``(P,)`` int, ``-1`` for background and for regions smaller than ``min_patches``, else
    the region's rank by size (0 = largest)."""
    from scipy import ndimage

    obj = np.asarray(patch_object.cpu() if isinstance(patch_object, Tensor) else patch_object).astype(bool)
    if obj.size != grid[0] * grid[1]:
        raise VitvizError(f"{obj.size} patch labels do not fit a {grid[0]}x{grid[1]} grid")
    lab, n = ndimage.label(obj.reshape(grid))  # (gh, gw), regions 1..n
    lab = lab.reshape(-1)
    sizes = np.bincount(lab, minlength=n + 1)[1:]  # (n,)
    order = [int(r) + 1 for r in np.argsort(-sizes, kind="stable") if sizes[r] >= min_patches]
    out = np.full(obj.size, -1, dtype=np.int64)
    for rank, region in enumerate(order):
        out[lab == region] = rank
    return out


def object_pair_scores(
    tokens: dict[str, Tensor],
    patch_object: Tensor,
    grid: tuple[int, int],
    *,
    min_patches: int = 4,
    normalize: str = "l2",
    seed: int = 0,
    threads: int | None = 1,
) -> list[ClusterScore]:
    """Object-vs-object clustering: for every image with at least two object regions of
    ``min_patches`` patches (:func:`salient_components`), k-means (k = 2) on the patch tokens
    of its two largest regions at every layer, scored against the region labels (purity,
    chance = the larger region's share, ARI, silhouettes). ``tokens``: ``{layer: (B, P, C)}``;
    ``patch_object``: ``(B, P)`` bool. One :class:`ClusterScore` per (image, layer)."""
    from threadpoolctl import threadpool_limits

    lab = patch_object.detach().cpu()
    scores: list[ClusterScore] = []
    with threadpool_limits(limits=threads):
        for b in range(lab.shape[0]):
            comp = salient_components(lab[b], grid, min_patches)  # (P,)
            keep = comp >= 0
            keep &= comp <= 1
            if comp.max() < 1:
                continue
            t = comp[keep]  # (P',) 0 / 1
            for name, tok in tokens.items():
                x = tok[b].detach().cpu().numpy()[keep]  # (P', C)
                pred = cluster_tokens(x, method="kmeans", n_clusters=2, normalize=normalize, seed=seed)
                scores.append(
                    score_clustering(x, t, pred, layer=name, method="kmeans-objects", normalize=normalize)
                )
    return scores
