"""Quality scores of feature visualizations: did the optimizer reach the feature, and does the
image look like a natural image rather than colour noise?

Four scores per visualization (:func:`quality_scores` computes all of them, :class:`QualityScores`
holds them):

- **activation ratio**: the clean (un-augmented) activation of the visualization, mean over
  patch tokens, divided by the mean of the same activation over the feature's top-k dataset
  exemplars (:func:`vitviz_core.evaluate.exemplars.find_exemplars`). >= 1: the image drives the
  feature as hard as the images that drive it most.
- **spectral naturalness** (:func:`spectral_naturalness`): the share of luminance power above
  1/4 of Nyquist (:func:`hf_share`), divided by the same share of natural images from the data
  (:func:`natural_hf_share`). 1.0 = as natural images, a constant image 0, colour noise >= 10.
- **seed stability** (:func:`seed_stability`): cosine between the hook vectors (all tokens x
  all channels) of two seeds' visualizations of the same feature.
- **exemplar agreement** (:func:`exemplar_agreement`): cosine between the visualization's
  channel vector (mean over patch tokens, all channels) and the mean vector of its exemplars,
  minus the same cosine for random dataset images (the baseline); > 0: the visualization looks
  to the layer more like its exemplars than a random image does.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vitviz_core.errors import VitvizError

__all__ = [
    "QualityScores",
    "quality_scores",
    "hf_share",
    "natural_hf_share",
    "spectral_naturalness",
    "hook_vectors",
    "seed_stability",
    "exemplar_agreement",
    "format_scores",
]

logger = logging.getLogger(__name__)

#: Luminance weights (ITU-R BT.601).
_LUMA = (0.299, 0.587, 0.114)


@dataclass
class QualityScores:
    """Scores of one visualization; a score is ``None`` when it was not computed."""

    feature: int
    activation: float  # clean activation, mean over patch tokens
    exemplar_activation: float | None = None  # mean clean activation of the top-k exemplars
    activation_ratio: float | None = None  # activation / exemplar_activation
    naturalness: float | None = None  # hf_share / natural images' hf_share (1 = natural)
    seed_stability: float | None = None  # cosine of two seeds' hook vectors
    exemplar_agreement: float | None = None  # cos(vis, exemplars) - cos(random images, exemplars)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def caption(self) -> str:
        """A short line for under an image, e.g. ``act 2.31 (1.10x exemplars) | HF 1.2``."""
        parts = [f"act {self.activation:.2f}"]
        if self.activation_ratio is not None:
            parts[0] += f" ({self.activation_ratio:.2f}x ex.)"
        if self.naturalness is not None:
            parts.append(f"HF {self.naturalness:.1f}")
        if self.seed_stability is not None:
            parts.append(f"stab {self.seed_stability:.2f}")
        if self.exemplar_agreement is not None:
            parts.append(f"agr {self.exemplar_agreement:+.2f}")
        return " | ".join(parts)


def hf_share(images: Tensor, cutoff: float = 0.25) -> Tensor:
    """Share of luminance power above ``cutoff`` x Nyquist, DC excluded -> (N,).

    ``images`` (N, 3, H, W) or (N, H, W) in [0, 1]. A constant image has no power besides DC
    and scores 0; white noise spreads its power evenly over the frequencies, so its share is
    the area of the frequency square outside the radius ``cutoff/2`` cycles/pixel (about 0.95).
    """
    x = images.float()
    if x.dim() == 4:
        if x.shape[1] == 3:
            x = sum(w * x[:, i] for i, w in enumerate(_LUMA))  # (N, H, W)
        else:
            x = x[:, 0]
    if x.dim() != 3:
        raise VitvizError(f"hf_share needs (N, 3, H, W) or (N, H, W) images, got {tuple(images.shape)}")
    h, w = x.shape[-2:]
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.rfft2(x).abs() ** 2  # (N, H, W//2+1)
    weight = torch.ones(w // 2 + 1)
    weight[1 : (w + 1) // 2] = 2.0  # both halves of rfft
    fy = torch.fft.fftfreq(h).view(-1, 1)
    fx = torch.fft.rfftfreq(w).view(1, -1)
    high = (torch.sqrt(fx * fx + fy * fy) > cutoff * 0.5).float()  # Nyquist = 0.5
    total = (power * weight).sum(dim=(-2, -1))
    above = (power * weight * high).sum(dim=(-2, -1))
    return torch.where(total > 0, above / total.clamp(min=1e-20), torch.zeros_like(total))


_NATURAL_CACHE: dict[tuple, float] = {}


def natural_hf_share(
    size: tuple[int, int] = (224, 224),
    n_images: int = 256,
    data_name: str = "imagenet-sample-1000",
    data_root: Any = None,
) -> float:
    """Mean :func:`hf_share` of ``n_images`` natural images (resized and cropped to ``size``),
    cached in memory and under ``cache_dir()/spectra``."""
    from vitviz_core import config
    from vitviz_core.param import natural_images

    key = (tuple(size), n_images, data_name, str(data_root))
    if key in _NATURAL_CACHE:
        return _NATURAL_CACHE[key]
    digest = hashlib.sha256(repr(key + ("v1",)).encode()).hexdigest()[:16]
    path = config.cache_dir() / "spectra" / f"hf-share-{digest}.npy"
    if path.is_file():
        value = float(np.load(path, allow_pickle=False))
    else:
        value = float(hf_share(natural_images(n_images, tuple(size), data_name, data_root)).mean())
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, np.float64(value), allow_pickle=False)
    _NATURAL_CACHE[key] = value
    return value


def spectral_naturalness(images: Tensor, reference: float | None = None) -> Tensor:
    """:func:`hf_share` of ``images`` divided by ``reference`` (default: :func:`natural_hf_share`
    at the images' size) -> (N,). 1.0 = natural, 0 = constant, colour noise >= 10."""
    if reference is None:
        reference = natural_hf_share(tuple(images.shape[-2:]))
    if reference <= 0:
        raise VitvizError(f"reference high-frequency share must be positive, got {reference}")
    return hf_share(images) / float(reference)


@torch.no_grad()
def hook_vectors(model: Any, hook: str, images: Tensor, *, batch_size: int = 32) -> Tensor:
    """The hook's output for ``images`` (N, 3, H, W) in [0, 1] (resized to the model input and
    normalised) as (N, T, C) token x channel arrays, float32 on the CPU (patch tokens only for
    token layouts; NCHW maps flattened to (N, H*W, C))."""
    from vitviz_core.hooks import capture, resolve_hook
    from vitviz_core.models import as_loaded
    from vitviz_core.scoring import _eval_mode, _model_device

    loaded = as_loaded(model)
    net, norm_fn, in_hw = loaded.model, loaded.normalize, loaded.input_size
    spec = resolve_hook(net, hook)
    dev = _model_device(net)
    out = []
    with _eval_mode(net), capture(net, [hook], stop_early=True, detach=True) as cap:
        for i in range(0, images.shape[0], batch_size):
            x = images[i : i + batch_size].to(dev, torch.float32)
            if tuple(x.shape[-2:]) != in_hw:
                x = F.interpolate(x, size=in_hw, mode="bilinear", align_corners=False)
            cap.forward(norm_fn(x))
            act = cap.activations[hook].float()
            if act.dim() == 4 and spec.layout == "NCHW":
                act = act.flatten(2).transpose(1, 2)  # (B, HW, C)
            elif act.dim() == 3:
                act = act[:, spec.num_prefix_tokens :]  # (B, T, C)
            else:
                raise VitvizError(f"hook {hook!r} (layout {spec.layout}) has no token x channel output")
            out.append(act.cpu())
    return torch.cat(out)


def seed_stability(vectors_a: Tensor, vectors_b: Tensor) -> Tensor:
    """Cosine between two seeds' hook vectors, per visualization: (N, T, C) x 2 -> (N,)."""
    return F.cosine_similarity(vectors_a.flatten(1), vectors_b.flatten(1), dim=1)


def exemplar_agreement(vis_vectors: Tensor, exemplar_means: Tensor, baseline_vectors: Tensor) -> Tensor:
    """``cos(vis, exemplars) - mean cos(baseline image, exemplars)`` per feature -> (K,).

    ``vis_vectors`` (K, C): each visualization's channel vector (mean over patch tokens);
    ``exemplar_means`` (K, C): the mean channel vector of each feature's exemplars;
    ``baseline_vectors`` (R, C): channel vectors of random dataset images.
    """
    cos_vis = F.cosine_similarity(vis_vectors, exemplar_means, dim=1)  # (K,)
    cos_base = F.cosine_similarity(baseline_vectors[None], exemplar_means[:, None], dim=2)  # (K, R)
    return cos_vis - cos_base.mean(dim=1)


def quality_scores(
    model: Any,
    hook: str,
    features: Sequence[int],
    images: Tensor,
    *,
    images_seed2: Tensor | None = None,
    exemplars: Any = None,
    k: int = 8,
    pool: str = "imagenet-sample-1000",
    pool_root: Any = None,
    pool_images: int | None = 200,
    naturalness: bool = True,
    n_baseline: int = 32,
    progress: bool = False,
) -> list[QualityScores]:
    """All quality scores of the visualizations ``images`` (K, 3, H, W) of ``features`` of ``hook``.

    This is the one public entry point (the atlas indexes neurons with it).

    Args:
        model: a LoadedModel (or bare timm model).
        hook, features: the hook point and the K feature indices, one per image.
        images: (K, 3, H, W) visualizations in [0, 1].
        images_seed2: (K, 3, H, W) the same features optimized with another seed -> seed stability.
        exemplars: ``False`` to skip the exemplar scores; an ``ExemplarResult`` with ``hook``; or
            ``None`` to search the ``pool`` (``pool_images`` images; cached by ``find_exemplars``).
        k: exemplars per feature (at most the result's k).
        naturalness: compute spectral naturalness (needs the image data for the reference).
        n_baseline: random pool images for the exemplar-agreement baseline.

    Returns: one :class:`QualityScores` per feature, in order.
    """
    from vitviz_core.scoring import score_images

    feats = [int(f) for f in features]
    if images.shape[0] != len(feats):
        raise VitvizError(f"{images.shape[0]} images for {len(feats)} features")
    acts = score_images(model, hook, images, feats)  # (K,)
    scores = [QualityScores(feature=f, activation=float(a)) for f, a in zip(feats, acts.tolist())]
    if naturalness:
        try:
            nat = spectral_naturalness(images)
            for s, v in zip(scores, nat.tolist()):
                s.naturalness = float(v)
        except VitvizError as exc:  # no image data here: the reference is unknown
            logger.info("spectral naturalness skipped: %s", exc)
    vis_vec = None
    if images_seed2 is not None:
        vis_vec = hook_vectors(model, hook, images)  # (K, T, C)
        stab = seed_stability(vis_vec, hook_vectors(model, hook, images_seed2))
        for s, v in zip(scores, stab.tolist()):
            s.seed_stability = float(v)
    if exemplars is False:
        return scores
    try:
        found = exemplars
        if found is None:
            from vitviz_core.evaluate.exemplars import find_exemplars

            found = find_exemplars(
                model,
                None,
                hooks=[hook],
                k=k,
                stats=("mean",),
                keep_maps=False,
                data_name=pool,
                data_root=pool_root,
                max_images=pool_images,
                progress=progress,
            )
        to_pixels = model.pixel_transform()
        vis_vec = hook_vectors(model, hook, images) if vis_vec is None else vis_vec
        vis_mean = vis_vec.mean(dim=1)  # (K, C)
        ex_means = []
        for s in scores:
            top = found.top(hook, s.feature, "mean")[:k]
            s.exemplar_activation = float(np.mean([v for _, v in top]))
            s.activation_ratio = s.activation / s.exemplar_activation if s.exemplar_activation > 0 else None
            pics = torch.stack([to_pixels(img) for img in found.images(hook, s.feature, "mean")[:k]])
            ex_means.append(hook_vectors(model, hook, pics).mean(dim=(0, 1)))  # (C,)
        base = _baseline_images(found, to_pixels, n_baseline)
        agree = exemplar_agreement(
            vis_mean, torch.stack(ex_means), hook_vectors(model, hook, base).mean(dim=1)
        )
        for s, v in zip(scores, agree.tolist()):
            s.exemplar_agreement = float(v)
    except VitvizError as exc:
        logger.info("exemplar scores skipped: %s", exc)
    return scores


def _baseline_images(found: Any, to_pixels: Any, n: int) -> Tensor:
    """``n`` pool images spread evenly over the searched pool -> (n, 3, H, W) in [0, 1]."""
    from PIL import Image

    files = [f for f in found.files if f]
    if not files:
        raise VitvizError("the exemplar search kept no file paths: no random-image baseline")
    pick = [files[int(i)] for i in np.linspace(0, len(files) - 1, min(n, len(files)))]
    out = []
    for path in pick:
        with Image.open(path) as img:
            out.append(to_pixels(img.convert("RGB")))
    return torch.stack(out)


def format_scores(scores: Sequence[QualityScores]) -> str:
    """A plain-text table of scores, one line per feature (for ``render --scores``)."""
    head = f"{'feature':>7}  {'activation':>10}  {'exemplars':>9}  {'ratio':>6}  {'HF/nat':>6}  {'stability':>9}  {'agreement':>9}"

    def fmt(v: float | None, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    lines = [head]
    for s in scores:
        lines.append(
            f"{s.feature:>7}  {s.activation:>10.3f}  {fmt(s.exemplar_activation, '.3f'):>9}  "
            f"{fmt(s.activation_ratio, '.2f'):>6}  {fmt(s.naturalness, '.2f'):>6}  "
            f"{fmt(s.seed_stability, '.2f'):>9}  {fmt(s.exemplar_agreement, '+.2f'):>9}"
        )
    return "\n".join(lines)
