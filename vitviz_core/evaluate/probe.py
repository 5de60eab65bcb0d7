"""Linear heads for headless backbones (DINOv2): fit on a pool, evaluate elsewhere.

Token-mixing experiments need a classifier. A headless backbone gets a linear probe on its
frozen final-norm features: the CLS token (``features="cls"``), or CLS concatenated with the
mean patch token (``"cls+mean"``). Fit it on ``imagenet-sample-1000`` only (one image per
class, optionally several augmented views each, optionally distilling a teacher's logits,
e.g. EfficientNet-Lite0) and evaluate it on ``imagenet-val-1300`` only; never on images it
was fitted on.

A probe on ``"cls"`` can also be applied to every patch token (``probe.token_head``), which is
what the per-patch classification experiment needs.

This is the package's one linear probe: :func:`fit_linear_probe` fits a :class:`LinearProbe`
(standardise -> linear) by full-batch Adam (``method="adam"``, distillation-capable) or as a
multinomial logistic regression (``method="logistic"``, scikit-learn's L-BFGS, the level-0
semantic probes of :mod:`vitviz_core.neurons.level0`), and :func:`probe_accuracy` scores it
into the one :class:`ProbeResult` (per-image correctness first, estimates as views).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
import numpy as np
from torch import Tensor, nn

from vitviz_core.errors import VitvizError
from vitviz_core.evaluate.records import ResultRecord
from vitviz_core.evaluate.stats import Estimate, accuracy_with_ci, topk_correct

__all__ = [
    "pool_tokens",
    "extract_features",
    "LinearProbe",
    "fit_linear_probe",
    "ProbeResult",
    "probe_accuracy",
    "evaluate_probe",
    "random_view",
]

FEATURES = ("cls", "cls+mean", "mean")


def pool_tokens(tokens: Tensor, features: str = "cls", num_prefix_tokens: int = 1) -> Tensor:
    """Final-normed tokens ``(B, L, C)`` -> probe features ``(B, D)``."""
    if features == "cls":
        return tokens[:, 0]
    patches = tokens[:, num_prefix_tokens:]  # (B, N, C)
    if features == "mean":
        return patches.mean(1)
    if features == "cls+mean":
        return torch.cat([tokens[:, 0], patches.mean(1)], dim=-1)  # (B, 2C)
    raise VitvizError(f"unknown probe features {features!r}: use one of {FEATURES}")


def _final_tokens(module: nn.Module, x: Tensor) -> Tensor:
    t = module.forward_features(x)
    if t.dim() != 3:
        raise VitvizError("linear probes need a token model whose forward_features returns (B, L, C)")
    return t  # (B, L, C), after the final norm


def random_view(
    x01: Tensor, generator: torch.Generator, scale: tuple[float, float] = (0.35, 1.0), flip: bool = True
) -> Tensor:
    """A random resized crop (+ horizontal flip) of each image ``(B, 3, H, W)``, same size."""
    b, _, h, w = x01.shape
    out = []
    for i in range(b):
        s = float(torch.empty(1).uniform_(*scale, generator=generator))
        ar = float(torch.exp(torch.empty(1).uniform_(-0.29, 0.29, generator=generator)))  # ~3/4..4/3
        ch = int(round(min(h, (s * h * w / ar) ** 0.5)))
        cw = int(round(min(w, (s * h * w * ar) ** 0.5)))
        y0 = int(torch.randint(0, h - ch + 1, (1,), generator=generator))
        x0 = int(torch.randint(0, w - cw + 1, (1,), generator=generator))
        v = F.interpolate(
            x01[i : i + 1, :, y0 : y0 + ch, x0 : x0 + cw],
            size=(h, w),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        if flip and bool(torch.rand(1, generator=generator) < 0.5):
            v = v.flip(-1)
        out.append(v)
    return torch.cat(out).clamp(0, 1)


def extract_features(
    model: Any,
    dataset: Any = None,
    features: str = "cls",
    views: int = 1,
    teacher: Any = None,
    data_name: str = "imagenet-sample-1000",
    data_root: str | Path | None = None,
    max_images: int | None = None,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    seed: int = 0,
    progress: bool = True,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Frozen probe features of a dataset.

    Args:
        model: a LoadedModel (then ``dataset`` yields pixel images in [0, 1], normalised here
            per view) or an nn.Module (then ``dataset`` yields model inputs; ``views`` and
            ``teacher`` need a LoadedModel).
        views: 1 = the plain eval view; ``n > 1`` = the plain view plus ``n - 1`` random
            resized crops/flips of each image.
        teacher: optional LoadedModel classifier whose logits on the same views are returned
            (for distillation).
    Returns:
        ``(features (N*views, D), labels (N*views,), teacher_logits (N*views, K) | None)``.
    """
    from tqdm.auto import tqdm

    from vitviz_core.evaluate.common import make_loader, model_device, pixel_dataset, unpack_batch
    from vitviz_core.models import LoadedModel, as_loaded

    module = as_loaded(model).model
    npre = int(getattr(module, "num_prefix_tokens", 1))
    pixel = isinstance(model, LoadedModel)  # a bare module is fed the dataset's tensors as they are
    if not pixel and (views > 1 or teacher is not None):
        raise VitvizError("augmented views and teachers need a LoadedModel (pixel-space data)")
    if dataset is None:
        if not pixel:
            raise VitvizError("pass dataset= when model is a bare nn.Module")
        dataset = pixel_dataset(model, data_name, data_root, max_images)
    norm = as_loaded(model).normalize if pixel else (lambda t: t)
    dev = torch.device(device) if device is not None else model_device(model)
    gen = torch.Generator().manual_seed(seed)
    feats: list[Tensor] = []
    labels: list[Tensor] = []
    tlogits: list[Tensor] = []
    offset = 0
    with torch.inference_mode():
        for batch in tqdm(
            make_loader(dataset, batch_size), desc="probe features", disable=not progress, leave=False
        ):
            x, y, _, _ = unpack_batch(batch, offset)
            offset += x.shape[0]
            for v in range(views):
                xv = x if v == 0 else random_view(x, gen)
                xv = xv.to(dev)
                feats.append(pool_tokens(_final_tokens(module, norm(xv)), features, npre).float().cpu())
                labels.append(y)
                if teacher is not None:
                    tsize = tuple(teacher.input_size)
                    xt = (
                        xv
                        if tuple(xv.shape[-2:]) == tsize
                        else F.interpolate(
                            xv, size=tsize, mode="bilinear", align_corners=False, antialias=True
                        )
                    )
                    tlm = as_loaded(teacher)
                    tlogits.append(tlm.model(tlm.normalize(xt)).float().cpu())
    return (torch.cat(feats), torch.cat(labels), torch.cat(tlogits) if teacher is not None else None)


class LinearProbe(nn.Module):
    """Standardise -> linear layer, on pooled final-normed tokens."""

    def __init__(self, in_dim: int, num_classes: int, features: str = "cls", num_prefix_tokens: int = 1):
        super().__init__()
        if features not in FEATURES:
            raise VitvizError(f"unknown probe features {features!r}: use one of {FEATURES}")
        self.features = features
        self.num_prefix_tokens = num_prefix_tokens
        self.register_buffer("mu", torch.zeros(in_dim))
        self.register_buffer("sigma", torch.ones(in_dim))
        self.linear = nn.Linear(in_dim, num_classes)

    def forward(self, feats: Tensor) -> Tensor:
        """Features ``(..., D)`` -> logits ``(..., K)`` (in the probe's own dtype)."""
        feats = feats.to(self.mu.dtype)
        return self.linear((feats - self.mu) / self.sigma)

    def head_for(self, module: nn.Module) -> Callable[[Tensor], Tensor]:
        """``tokens after the blocks (B, L, C) -> logits (B, K)`` (applies the final norm):
        the ``head=`` argument of the token-mixing functions."""

        def head(tokens: Tensor) -> Tensor:
            return self(pool_tokens(module.norm(tokens), self.features, self.num_prefix_tokens))

        return head

    def token_head(self, tokens: Tensor) -> Tensor:
        """Final-normed tokens ``(B, N, C)`` -> per-token logits ``(B, N, K)`` (CLS probes only)."""
        if self.features != "cls":
            raise VitvizError("per-token logits need a probe fitted with features='cls'")
        return self(tokens)


def fit_linear_probe(
    feats: Tensor,
    targets: Tensor,
    num_classes: int = 1000,
    features: str = "cls",
    num_prefix_tokens: int = 1,
    epochs: int = 300,
    lr: float = 1e-2,
    weight_decay: float = 1e-4,
    temperature: float = 1.0,
    label_weight: float = 1.0,
    labels: Tensor | None = None,
    seed: int = 0,
    method: str = "adam",
    C: float = 1.0,
    max_iter: int = 300,
) -> LinearProbe:
    """Fit a linear probe on frozen features.

    Args:
        feats: ``(N, D)`` features (from :func:`extract_features`).
        targets: ``(N,)`` integer labels, or ``(N, K)`` teacher logits (distillation with
            ``temperature``; ``labels`` + ``label_weight`` add a hard-label term).
        method: ``"adam"``: full-batch Adam with a cosine schedule (``epochs``, ``lr``,
            ``weight_decay``); ``"logistic"``: multinomial logistic regression on standardised
            features (scikit-learn L-BFGS, inverse regularisation ``C``, ``max_iter``; integer
            labels only), in float64. Classes absent from ``targets`` then get a ``-inf``
            logit: they are never predicted (see :func:`probe_accuracy`).
    """
    if feats.dim() != 2 or feats.shape[0] == 0:
        raise VitvizError(f"fit_linear_probe needs features (N, D) with N >= 1, got {tuple(feats.shape)}")
    if method == "logistic":
        return _fit_logistic(feats, targets, num_classes, features, num_prefix_tokens, C, max_iter, seed)
    if method != "adam":
        raise VitvizError(f"unknown probe method {method!r}: use 'adam' or 'logistic'")
    torch.manual_seed(seed)
    feats = feats.float()
    probe = LinearProbe(feats.shape[1], num_classes, features, num_prefix_tokens)
    probe.mu.copy_(feats.mean(0))
    probe.sigma.copy_(feats.std(0).clamp_min(1e-6))
    soft = targets.dim() == 2
    if soft:
        p_t = F.softmax(targets.float() / temperature, dim=-1)  # (N, K)
    else:
        if (targets < 0).any() or (targets >= num_classes).any():
            raise VitvizError("labels must lie in [0, num_classes): unlabelled images cannot fit a probe")
    opt = torch.optim.Adam(probe.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    with torch.enable_grad():
        for _ in range(epochs):
            opt.zero_grad()
            logits = probe(feats)  # (N, K)
            if soft:
                loss = -(p_t * F.log_softmax(logits / temperature, -1)).sum(-1).mean() * temperature**2
                if labels is not None and label_weight > 0:
                    loss = loss + label_weight * F.cross_entropy(logits, labels.long())
            else:
                loss = F.cross_entropy(logits, targets.long())
            loss.backward()
            opt.step()
            sched.step()
    probe.requires_grad_(False)
    return probe.eval()


def _fit_logistic(
    feats: Tensor,
    targets: Tensor,
    num_classes: int,
    features: str,
    num_prefix_tokens: int,
    C: float,
    max_iter: int,
    seed: int,
) -> LinearProbe:
    """scikit-learn's StandardScaler + LogisticRegression, copied into a float64 LinearProbe."""
    import warnings

    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    if targets.dim() != 1:
        raise VitvizError("method='logistic' needs integer labels (N,), not teacher logits")
    x = feats.detach().cpu().numpy()
    y = targets.detach().cpu().long().numpy()
    if (y < 0).any() or (y >= num_classes).any():
        raise VitvizError("labels must lie in [0, num_classes): unlabelled images cannot fit a probe")
    scaler = StandardScaler().fit(x)
    clf = LogisticRegression(C=C, max_iter=max_iter, random_state=seed)
    with warnings.catch_warnings():
        # one image per class (imagenet-sample-1000) is a legitimate few-shot probe
        warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%")
        clf.fit(scaler.transform(x), y)
    coef, bias = np.asarray(clf.coef_, np.float64), np.asarray(clf.intercept_, np.float64)
    if coef.shape[0] == 1 and len(clf.classes_) == 2:  # binary: logits (0, d) rank like its probabilities
        coef, bias = np.concatenate([np.zeros_like(coef), coef]), np.concatenate([[0.0], bias])
    probe = LinearProbe(x.shape[1], num_classes, features, num_prefix_tokens).double()
    with torch.no_grad():
        probe.mu.copy_(torch.from_numpy(np.asarray(scaler.mean_, np.float64)))
        probe.sigma.copy_(torch.from_numpy(np.asarray(scaler.scale_, np.float64)))
        probe.linear.weight.zero_()
        probe.linear.bias.fill_(-float("inf"))  # classes never seen in training
        cls = torch.from_numpy(np.asarray(clf.classes_, np.int64))
        probe.linear.weight[cls] = torch.from_numpy(coef)
        probe.linear.bias[cls] = torch.from_numpy(bias)
    probe.requires_grad_(False)
    return probe.eval()


@dataclass
class ProbeResult:
    """A linear probe's held-out accuracy: per-image correctness and predictions, with the
    top-1 / top-5 estimates (bootstrap 95 % intervals over test images) as views of them."""

    top1: Estimate
    top5: Estimate
    record: ResultRecord | None = None
    feature: str = ""  # what the probe read (e.g. a hook name)
    n_train: int = 0
    n_test: int = 0
    n_train_classes: int = 0
    seconds: float = 0.0
    correct1: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # (N_test,) bool
    correct5: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # (N_test,) bool
    predicted: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (N_test,) top-1 class

    def row(self) -> dict:
        return {
            "feature": self.feature,
            "top1": self.top1.value,
            "top1_low": self.top1.low,
            "top1_high": self.top1.high,
            "top5": self.top5.value,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "seconds": self.seconds,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "top1": self.top1.to_dict(),
            "top5": self.top5.to_dict(),
            "record": self.record.to_dict() if self.record is not None else None,
            "feature": self.feature,
            "n_train": self.n_train,
            "n_test": self.n_test,
        }


def probe_accuracy(
    probe: LinearProbe, feats: Tensor, labels: Tensor, n_boot: int = 2000, seed: int = 0, **info: Any
) -> ProbeResult:
    """Score a probe on held-out features ``(N, D)`` with labels ``(N,)``.

    A class the probe never saw (``-inf`` logit) is never predicted, and an image of such a
    class is never right. ``info`` fills the other :class:`ProbeResult` fields (``feature``,
    ``record``, ``n_train``...).
    """
    with torch.inference_mode():
        logits = probe(feats)  # (N, K)
    labels = labels.long().to(logits.device)
    known = torch.isfinite(logits)  # (N, K)
    hits = topk_correct(logits, labels, (1, 5))
    k_known = int(known[0].sum()) if len(known) else 0
    if k_known < 5:  # fewer candidates than 5: only classes the probe knows may count
        top = logits.topk(min(5, logits.shape[-1]), -1).indices[:, : max(k_known, 1)]  # (N, <=5)
        hits = {1: top[:, 0] == labels, 5: (top == labels[:, None]).any(1)}
    c1, c5 = hits[1].cpu().numpy(), hits[5].cpu().numpy()
    return ProbeResult(
        top1=accuracy_with_ci(c1, n_boot=n_boot, seed=seed),
        top5=accuracy_with_ci(c5, n_boot=n_boot, seed=seed),
        n_test=int(len(labels)),
        correct1=c1,
        correct5=c5,
        predicted=logits.argmax(-1).cpu().numpy(),
        **info,
    )


def evaluate_probe(
    model: Any,
    probe: LinearProbe,
    dataset: Any = None,
    data_name: str = "imagenet-val-1300",
    data_root: str | Path | None = None,
    max_images: int | None = None,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    progress: bool = True,
) -> ProbeResult:
    """Top-1/top-5 (bootstrap CIs) of backbone + probe on held-out images (``dataset``:
    pixel-space items for a LoadedModel, default ``data_name`` in the model's pixel view)."""
    from vitviz_core.evaluate.common import pixel_dataset

    if dataset is None:
        dataset = pixel_dataset(model, data_name, data_root, max_images)
    record = ResultRecord.start(
        "linear_probe_eval", model, dataset, {"features": probe.features, "n_boot": n_boot, "seed": seed}
    )
    t0 = time.perf_counter()
    feats, labels, _ = extract_features(
        model,
        dataset,
        probe.features,
        1,
        None,
        data_name,
        data_root,
        max_images,
        batch_size,
        device,
        seed,
        progress,
    )
    res = probe_accuracy(
        probe,
        feats,
        labels,
        n_boot=n_boot,
        seed=seed,
        feature=probe.features,
        seconds=time.perf_counter() - t0,
    )
    res.record = record.finish()
    return res
