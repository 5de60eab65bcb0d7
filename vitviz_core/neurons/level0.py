"""Level-0 neurons: what each patch-embedding filter sees (Nguyen et al. 2022, Sec. 3).

A timm VisionTransformer embeds an image with one strided convolution
``model.patch_embed.proj`` whose weight ``W`` is ``(C, 3, p, p)``. The response of
embedding neuron ``c`` to patch ``j`` is ``sum(W[c] * x_j) + b[c]``, so the element-wise
product ``W[c] * x_j`` (a ``(3, p, p)`` image) is exactly what neuron ``c`` "sees" in that
patch: its *level-0 view*. Views live in the model's normalized input space (what the conv
really multiplies); they sum, over pixels and channels, to the conv output minus its bias.
Views are taken before any ``patch_embed.norm`` and before position embeddings are added.

Besides views, this module characterizes filters (colour vs. luminance energy, spatial
frequency, orientation coherence -> "colour" / "flat" / "edge" / "texture"), measures which
neurons respond to colour, edges or texture on real patches, and fits linear probes on
mean-pooled patch tokens to test whether level-0 embeddings already carry semantics (the
package's one probe, :mod:`vitviz_core.evaluate.probe`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vitviz_core.errors import HookError, VitvizError
from vitviz_core.evaluate.probe import ProbeResult as _ProbeResult
from vitviz_core.models import as_loaded

__all__ = [
    "patch_embedding",
    "extract_patches",
    "stitch_patches",
    "level0_views",
    "level0_view_map",
    "neuron_responses",
    "FilterStats",
    "filter_stats",
    "classify_filters",
    "patch_descriptors",
    "descriptor_correlations",
    "pooled_token_features",
    "ProbeResult",
    "linear_probe",
    "probe_hooks",
]


# --------------------------------------------------------------------------------------
# The patch-embedding convolution
# --------------------------------------------------------------------------------------


def patch_embedding(model: Any) -> tuple[Tensor, Tensor | None, int]:
    """``(weight (C, 3, p, p), bias (C,) or None, patch size p)`` of a timm ViT.

    Args:
        model: a LoadedModel or a timm VisionTransformer-like module with
            ``patch_embed.proj`` (a Conv2d whose stride equals its kernel size).
    """
    module = as_loaded(model).model
    proj = getattr(getattr(module, "patch_embed", None), "proj", None)
    if not isinstance(proj, nn.Conv2d):
        raise HookError(
            f"{type(module).__name__} has no patch_embed.proj Conv2d: level-0 views need a "
            "timm VisionTransformer-style model (e.g. vit_tiny_patch16_224)"
        )
    kh, kw = proj.kernel_size
    if kh != kw or tuple(proj.stride) != (kh, kw):
        raise HookError(
            f"patch_embed.proj has kernel {proj.kernel_size} and stride {proj.stride}: level-0 "
            "views need square, non-overlapping patches (stride == kernel)"
        )
    weight = proj.weight.detach()  # (C, 3, p, p)
    bias = proj.bias.detach() if proj.bias is not None else None  # (C,)
    return weight, bias, int(kh)


def _as_batch(x: Tensor) -> tuple[Tensor, bool]:
    if x.dim() == 3:
        return x.unsqueeze(0), True
    if x.dim() != 4:
        raise VitvizError(f"expected an image (3, H, W) or a batch (B, 3, H, W), got shape {tuple(x.shape)}")
    return x, False


def extract_patches(x: Tensor, patch_size: int) -> Tensor:
    """Non-overlapping ``p x p`` patches in row-major (token) order.

    Args:
        x: ``(B, C, H, W)`` or ``(C, H, W)``; H and W must be multiples of ``patch_size``.
    Returns:
        ``(B, P, C, p, p)`` (or ``(P, C, p, p)`` for a single image), ``P = H/p * W/p``.
    """
    xb, single = _as_batch(x)
    b, c, h, w = xb.shape
    p = int(patch_size)
    if h % p or w % p:
        raise VitvizError(
            f"image size {h}x{w} is not a multiple of the patch size {p}: "
            "resize or crop the image to the model's input size first"
        )
    cols = F.unfold(xb, kernel_size=p, stride=p)  # (B, C*p*p, P)
    patches = cols.transpose(1, 2).reshape(b, -1, c, p, p)  # (B, P, C, p, p)
    return patches[0] if single else patches


def stitch_patches(patches: Tensor, grid: tuple[int, int]) -> Tensor:
    """Inverse of :func:`extract_patches`: ``(..., P, C, p, p)`` -> ``(..., C, gh*p, gw*p)``."""
    gh, gw = grid
    *lead, n, c, p, q = patches.shape
    if n != gh * gw:
        raise VitvizError(f"{n} patches do not fill a {gh}x{gw} grid")
    x = patches.reshape(*lead, gh, gw, c, p, q)  # (..., gh, gw, C, p, q)
    nl = len(lead)
    perm = [*range(nl), nl + 2, nl + 0, nl + 3, nl + 1, nl + 4]
    return x.permute(*perm).reshape(*lead, c, gh * p, gw * q)  # (..., C, H, W)


def level0_views(x: Tensor, weight: Tensor, neurons: int | Sequence[int] | None = None) -> Tensor:
    """Element-wise products of patch-embedding filters with every image patch.

    Args:
        x: model input (normalized space), ``(B, 3, H, W)`` or ``(3, H, W)``.
        weight: ``(C, 3, p, p)`` patch-embedding filters (:func:`patch_embedding`).
        neurons: one neuron index -> views ``(B, P, 3, p, p)``; a sequence of K indices ->
            ``(B, P, K, 3, p, p)``; None -> all C neurons (memory: B*P*C*3*p*p floats).
    Returns:
        The views; the leading B is dropped for a single ``(3, H, W)`` image. For neuron c and
        patch j, ``views.sum((-3, -2, -1))`` equals the conv output minus bias.
    """
    xb, single = _as_batch(x)
    p = weight.shape[-1]
    patches = extract_patches(xb, p)  # (B, P, 3, p, p)
    w = weight.to(patches.device, patches.dtype)
    if isinstance(neurons, (int, np.integer)):
        c = int(neurons)
        if not -w.shape[0] <= c < w.shape[0]:
            raise HookError(f"neuron {c} out of range: the patch embedding has {w.shape[0]} neurons")
        views = patches * w[c]  # (B, P, 3, p, p)
    else:
        idx = list(range(w.shape[0])) if neurons is None else [int(n) for n in neurons]
        bad = [n for n in idx if not -w.shape[0] <= n < w.shape[0]]
        if bad:
            raise HookError(f"neurons {bad} out of range: the patch embedding has {w.shape[0]} neurons")
        views = patches.unsqueeze(2) * w[idx].unsqueeze(0).unsqueeze(0)  # (B, P, K, 3, p, p)
    return views[0] if single else views


def level0_view_map(x: Tensor, weight: Tensor, neuron: int) -> Tensor:
    """One neuron's views stitched back into an image: ``(3, H, W)`` (or ``(B, 3, H, W)``)."""
    xb, single = _as_batch(x)
    p = weight.shape[-1]
    grid = (xb.shape[-2] // p, xb.shape[-1] // p)
    maps = stitch_patches(level0_views(xb, weight, int(neuron)), grid)  # (B, 3, H, W)
    return maps[0] if single else maps


def neuron_responses(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """Patch-embedding outputs ``(B, P, C)`` (the conv, flattened in token order)."""
    xb, _ = _as_batch(x)
    p = weight.shape[-1]
    w = weight.to(xb.device, xb.dtype)
    b = bias.to(xb.device, xb.dtype) if bias is not None else None
    out = F.conv2d(xb, w, b, stride=p)  # (B, C, gh, gw)
    return out.flatten(2).transpose(1, 2)  # (B, P, C)


# --------------------------------------------------------------------------------------
# What kind of filter is it? Colour, flat, edge, texture
# --------------------------------------------------------------------------------------


@dataclass
class FilterStats:
    """Per-filter descriptors (all arrays of shape ``(C,)``)."""

    colour_fraction: np.ndarray  # energy off the gray axis / total energy, in [0, 1]
    dc_fraction: np.ndarray  # energy at zero spatial frequency / total energy
    mean_frequency: np.ndarray  # power-weighted mean radial frequency, cycles/pixel (Nyquist 0.5)
    orientation: np.ndarray  # dominant orientation of the gradient, radians in [0, pi)
    coherence: np.ndarray  # orientation coherence in [0, 1] (1 = a single orientation)
    norm: np.ndarray  # L2 norm of the filter
    labels: list[str] = field(default_factory=list)  # "colour" | "flat" | "edge" | "texture"

    def counts(self) -> dict[str, int]:
        out = {k: 0 for k in ("colour", "flat", "edge", "texture")}
        for lab in self.labels:
            out[lab] = out.get(lab, 0) + 1
        return out


def filter_stats(
    weight: Tensor,
    std: Sequence[float] | Tensor | None = None,
    colour_threshold: float = 0.5,
    dc_threshold: float = 0.5,
    frequency_threshold: float = 0.2,
) -> FilterStats:
    """Describe each patch-embedding filter by colour and spatial-frequency energy.

    The filter is split orthogonally into a luminance part (its mean over RGB, repeated on
    every channel) and a colour part (the rest): ``colour_fraction`` is the colour part's
    share of the squared norm. Its 2-D power spectrum (summed over channels) gives the share
    at zero frequency (``dc_fraction``), the power-weighted mean radial frequency, and an
    orientation and coherence from the spectrum's second moments.

    Labels (first rule that applies): ``colour`` if ``colour_fraction >= colour_threshold``;
    ``flat`` if ``dc_fraction >= dc_threshold``; ``texture`` if
    ``mean_frequency >= frequency_threshold`` cycles/pixel; otherwise ``edge``.

    Args:
        weight: ``(C, 3, p, p)`` filters, in the model's normalized input space.
        std: the model's normalization std per channel; when given, filters are mapped to
            pixel space (``W / std``), so "colour" means colour in the image, not in the
            normalized tensor.
    """
    w = weight.detach().double().cpu()  # (C, 3, p, p)
    if w.dim() != 4:
        raise VitvizError(f"expected filters (C, 3, p, p), got shape {tuple(w.shape)}")
    if std is not None:
        s = torch.as_tensor(std, dtype=torch.float64).view(1, -1, 1, 1)
        w = w / s
    c, _, p, q = w.shape
    total = w.pow(2).sum((1, 2, 3)).clamp_min(1e-30)  # (C,)
    lum = w.mean(1, keepdim=True)  # (C, 1, p, p)
    colour = (w - lum).pow(2).sum((1, 2, 3)) / total  # (C,)
    power = torch.fft.fft2(w).abs().pow(2).sum(1)  # (C, p, q)
    fy = torch.fft.fftfreq(p, dtype=torch.float64).view(p, 1).expand(p, q)  # cycles/pixel
    fx = torch.fft.fftfreq(q, dtype=torch.float64).view(1, q).expand(p, q)
    radius = (fx.pow(2) + fy.pow(2)).sqrt()  # (p, q)
    ptot = power.sum((1, 2)).clamp_min(1e-30)  # (C,)
    dc = power[:, 0, 0] / ptot
    mean_freq = (power * radius).sum((1, 2)) / ptot
    # Second moments of the (non-DC) spectrum: the principal frequency axis is the direction
    # across the stripes, i.e. the gradient direction of an edge.
    jxx = (power * fx * fx).sum((1, 2))
    jyy = (power * fy * fy).sum((1, 2))
    jxy = (power * fx * fy).sum((1, 2))
    orient = (0.5 * torch.atan2(2 * jxy, jxx - jyy)) % math.pi
    coh = ((jxx - jyy).pow(2) + 4 * jxy.pow(2)).sqrt() / (jxx + jyy).clamp_min(1e-30)
    labels = []
    for i in range(c):
        if colour[i] >= colour_threshold:
            labels.append("colour")
        elif dc[i] >= dc_threshold:
            labels.append("flat")
        elif mean_freq[i] >= frequency_threshold:
            labels.append("texture")
        else:
            labels.append("edge")
    return FilterStats(
        colour_fraction=colour.numpy(),
        dc_fraction=dc.numpy(),
        mean_frequency=mean_freq.numpy(),
        orientation=orient.numpy(),
        coherence=coh.numpy(),
        norm=total.sqrt().numpy(),
        labels=labels,
    )


def classify_filters(
    weight: Tensor, std: Sequence[float] | Tensor | None = None, **thresholds: float
) -> list[str]:
    """Labels ``"colour" | "flat" | "edge" | "texture"`` per filter (see :func:`filter_stats`)."""
    return filter_stats(weight, std=std, **thresholds).labels


# --------------------------------------------------------------------------------------
# Which neurons respond to colour, edges, texture on real images?
# --------------------------------------------------------------------------------------


def patch_descriptors(x01: Tensor, patch_size: int) -> dict[str, Tensor]:
    """Simple per-patch image statistics, ``{name: (B, P)}``, from pixels in [0, 1].

    ``colourfulness``: mean distance of a pixel's RGB from its own gray value;
    ``edges``: mean finite-difference gradient magnitude of luminance;
    ``texture``: mean squared luminance after removing a 3x3 box blur (high-pass energy);
    ``brightness``: mean luminance.
    """
    xb, _ = _as_batch(x01)
    lum = (0.299 * xb[:, 0] + 0.587 * xb[:, 1] + 0.114 * xb[:, 2]).unsqueeze(1)  # (B, 1, H, W)
    chroma = (xb - xb.mean(1, keepdim=True)).pow(2).sum(1, keepdim=True).sqrt()  # (B, 1, H, W)
    gx = F.pad(lum[..., :, 1:] - lum[..., :, :-1], (0, 1, 0, 0))
    gy = F.pad(lum[..., 1:, :] - lum[..., :-1, :], (0, 0, 0, 1))
    grad = (gx.pow(2) + gy.pow(2)).sqrt()  # (B, 1, H, W)
    blur = F.avg_pool2d(F.pad(lum, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    high = (lum - blur).pow(2)  # (B, 1, H, W)
    p = int(patch_size)

    def pool(m: Tensor) -> Tensor:
        return F.avg_pool2d(m, p, stride=p).flatten(1)  # (B, P)

    return {
        "colourfulness": pool(chroma),
        "edges": pool(grad),
        "texture": pool(high),
        "brightness": pool(lum),
    }


def _rank(a: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(a, axis=0)  # average ranks along axis 0


def descriptor_correlations(
    responses: Tensor, descriptors: dict[str, Tensor], absolute: bool = True
) -> dict[str, np.ndarray]:
    """Spearman correlation of every neuron's response with each patch descriptor.

    Args:
        responses: ``(N, C)`` or ``(B, P, C)`` neuron outputs (e.g. :func:`neuron_responses`).
        descriptors: ``{name: (N,) or (B, P)}`` from :func:`patch_descriptors`.
        absolute: correlate ``|response|`` (a filter of either sign "responds").
    Returns:
        ``{name: (C,)}`` rank correlations in [-1, 1].
    """
    r = responses.detach().reshape(-1, responses.shape[-1]).double().cpu().numpy()  # (N, C)
    if absolute:
        r = np.abs(r)
    rr = _rank(r)
    rr = (rr - rr.mean(0)) / (rr.std(0) + 1e-12)
    out = {}
    for name, d in descriptors.items():
        v = d.detach().reshape(-1).double().cpu().numpy()  # (N,)
        if v.shape[0] != r.shape[0]:
            raise VitvizError(f"descriptor {name!r} has {v.shape[0]} patches, responses {r.shape[0]}")
        rv = _rank(v)
        rv = (rv - rv.mean()) / (rv.std() + 1e-12)
        out[name] = (rr * rv[:, None]).mean(0)
    return out


# --------------------------------------------------------------------------------------
# Do level-0 embeddings carry semantics? Linear probes on mean-pooled patch tokens
# --------------------------------------------------------------------------------------


def pooled_token_features(
    model: Any,
    batches: Iterable,
    hook_names: Sequence[str],
    device: str | torch.device | None = None,
    progress: bool = True,
    desc: str = "features",
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Mean-pooled patch-token features at several hook points, in one forward per batch.

    Args:
        model: LoadedModel or timm ViT (inputs must already be normalized for a bare module).
        batches: yields ``(x, labels[, indices])`` with x in the model's input space.
        hook_names: e.g. ``["hook_embed", "blocks.5.hook_resid_post", "blocks.11.hook_resid_post"]``.
    Returns:
        ``({name: (N, C) float32}, labels (N,) int64)``; prefix tokens (CLS...) are excluded.
    """
    from tqdm.auto import tqdm

    from vitviz_core import hooks

    module = as_loaded(model).model
    dev = torch.device(device) if device is not None else next(module.parameters()).device
    feats: dict[str, list[np.ndarray]] = {n: [] for n in hook_names}
    labels: list[np.ndarray] = []
    total = len(batches) if hasattr(batches, "__len__") else None
    with torch.inference_mode(), hooks.capture(module, list(hook_names)) as cap:
        for batch in tqdm(batches, total=total, desc=desc, disable=not progress, leave=False):
            x, y = batch[0], batch[1]
            cap.forward(x.to(dev))
            for n in hook_names:
                maps = hooks.to_patch_maps(cap.activations[n], cap.specs[n])  # (B, C, gh, gw)
                feats[n].append(maps.float().mean((2, 3)).cpu().numpy())
            labels.append(torch.as_tensor(y).long().numpy())
    if not labels:
        raise VitvizError("no images: the feature loader is empty")
    return {n: np.concatenate(v) for n, v in feats.items()}, np.concatenate(labels)


#: The one probe result type (:class:`vitviz_core.evaluate.probe.ProbeResult`), under its old name here.
ProbeResult = _ProbeResult


def linear_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    feature: str = "",
    C: float = 1.0,
    max_iter: int = 300,
    n_boot: int = 1000,
    seed: int = 0,
) -> ProbeResult:
    """Fit a multinomial logistic regression on standardized features; score held-out images.

    The package's one linear probe (:func:`vitviz_core.evaluate.probe.fit_linear_probe` with
    ``method="logistic"``, scored by :func:`~vitviz_core.evaluate.probe.probe_accuracy`).
    The scaler and the classifier see only ``train_x``; accuracy is measured on ``test_x``
    only (top-1/top-5 with a percentile-bootstrap 95 % interval over test images). Test
    classes absent from the training set count as errors.
    """
    import time

    from vitviz_core.evaluate.probe import fit_linear_probe, probe_accuracy

    if len(train_x) == 0 or len(test_x) == 0:
        raise VitvizError("linear_probe needs non-empty training and test sets")
    t0 = time.perf_counter()
    tr_y = torch.as_tensor(np.asarray(train_y)).long()
    te_y = torch.as_tensor(np.asarray(test_y)).long()
    num_classes = int(max(tr_y.max(), te_y.max())) + 1
    probe = fit_linear_probe(
        torch.as_tensor(np.asarray(train_x)),
        tr_y,
        num_classes=num_classes,
        method="logistic",
        C=C,
        max_iter=max_iter,
        seed=seed,
    )
    return probe_accuracy(
        probe,
        torch.as_tensor(np.asarray(test_x)),
        te_y,
        n_boot=n_boot,
        seed=seed,
        feature=feature,
        n_train=int(len(train_x)),
        n_train_classes=int(torch.unique(tr_y).numel()),
        seconds=time.perf_counter() - t0,
    )


def probe_hooks(
    model: Any,
    train_batches: Iterable,
    test_batches: Iterable,
    hook_names: Sequence[str],
    *,
    C: float = 0.1,
    max_iter: int = 300,
    n_boot: int = 1000,
    seed: int = 0,
    progress: bool = False,
) -> list[ProbeResult]:
    """:func:`linear_probe` on the mean-pooled tokens (ViT) or feature maps (CNN) of each of
    ``hook_names``, features taken in one pass per split: one :class:`ProbeResult` per hook.

    The same call serves a ViT's level-0 tokens (``hook_embed``, the patch embedding) and a
    CNN's stem output (``hook_embed`` of an EfficientNet: stem convolution + BN + activation),
    so the two arms of the level-0 comparison use one probe.
    """
    from threadpoolctl import threadpool_limits

    tr_x, tr_y = pooled_token_features(
        model, train_batches, hook_names, progress=progress, desc="train features"
    )
    te_x, te_y = pooled_token_features(
        model, test_batches, hook_names, progress=progress, desc="test features"
    )
    with threadpool_limits(limits=1):  # small problems: one BLAS thread is several times faster
        return [
            linear_probe(
                tr_x[n], tr_y, te_x[n], te_y, feature=n, C=C, max_iter=max_iter, n_boot=n_boot, seed=seed
            )
            for n in hook_names
        ]
