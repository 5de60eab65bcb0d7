"""Scoring images with a model's own activations: the clean (un-augmented) objective of images,
and the small model helpers it shares with the optimizer (normalisation, model unpacking,
feature checks). :mod:`vitviz_core.optimize` and :mod:`vitviz_core.quality` both build on it.
"""

from __future__ import annotations

import contextlib
import numbers
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vitviz_core.errors import HookError, VitvizError
from vitviz_core.objectives import ObjectiveContext, channel

__all__ = ["Normalize", "make_normalize", "check_features", "score_images"]

Normalize = Callable[[Tensor], Tensor]


def make_normalize(mean: Sequence[float], std: Sequence[float]) -> Normalize:
    """A differentiable ``(x - mean) / std`` over the channel dimension of (B, C, H, W)."""
    mean_t = torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    cache: dict[tuple[torch.device, torch.dtype], tuple[Tensor, Tensor]] = {}

    def normalize(x: Tensor) -> Tensor:
        stats = cache.get((x.device, x.dtype))
        if stats is None:  # one host -> device copy per device and dtype, then reused
            stats = cache[(x.device, x.dtype)] = (mean_t.to(x.device, x.dtype), std_t.to(x.device, x.dtype))
        return (x - stats[0]) / stats[1]  # (B, C, H, W)

    normalize.mean = tuple(float(v) for v in mean_t.flatten())  # type: ignore[attr-defined]
    normalize.std = tuple(float(v) for v in std_t.flatten())  # type: ignore[attr-defined]
    return normalize


def _is_loaded_model(model: Any) -> bool:
    from vitviz_core.models import LoadedModel

    return isinstance(model, LoadedModel)


def _unpack_model(
    model: Any, normalize: Normalize | tuple | None, input_size: int | Sequence[int] | None
) -> tuple[nn.Module, Normalize, tuple[int, int], dict]:
    """``(network, normalize, (H, W), description)``: :func:`vitviz_core.models.as_loaded`, plus
    a callable ``normalize`` that replaces the data config's."""
    from vitviz_core.models import as_loaded

    custom = normalize if callable(normalize) else None
    if (
        normalize is not None
        and custom is None
        and not (isinstance(normalize, (tuple, list)) and len(normalize) == 2)
    ):
        raise VitvizError("normalize must be a callable or a (mean, std) pair")
    loaded = as_loaded(
        model,
        None if custom is not None else normalize,
        tuple(input_size) if isinstance(input_size, list) else input_size,
    )
    info: dict[str, Any] = {"model": loaded.name, "arch": loaded.arch, "weights": loaded.weights_source}
    if custom is not None:
        info["normalize"] = getattr(custom, "__qualname__", "callable")
        return loaded.model, custom, loaded.input_size, info
    dc = loaded.data_config
    info["normalize"] = {"mean": list(dc["mean"]), "std": list(dc["std"])}
    return loaded.model, make_normalize(dc["mean"], dc["std"]), loaded.input_size, info


def _model_device(net: nn.Module) -> torch.device:
    for p in net.parameters():
        return p.device
    for b in net.buffers():
        return b.device
    return torch.device("cpu")


def check_features(features: Iterable[int], spec: Any, hook: str) -> list[int]:
    out = []
    for f in features:
        is_int = isinstance(f, numbers.Integral) or (
            isinstance(f, Tensor) and f.numel() == 1 and not f.is_floating_point()
        )
        if isinstance(f, bool) or not is_int:
            raise VitvizError(f"features must be integers, got {f!r}")
        f = int(f)
        if not 0 <= f < spec.channels:
            raise HookError(
                f"feature {f} is out of range for {hook}: it has {spec.channels} channels "
                f"(0-{spec.channels - 1})"
            )
        out.append(f)
    if not out:
        raise VitvizError("no features to optimize")
    return out


@contextlib.contextmanager
def _eval_mode(net: nn.Module):
    was_training = net.training
    net.eval()
    try:
        yield
    finally:
        net.train(was_training)


@torch.no_grad()
def score_images(
    model: Any,
    hook: str,
    images: Tensor,
    features: int | Sequence[int],
    *,
    normalize: Normalize | tuple | None = None,
    input_size: int | Sequence[int] | None = None,
    reduce: str = "mean",
    batch_size: int = 64,
) -> Tensor:
    """The objective of clean (un-augmented) images: channel ``features[i]`` of ``hook`` for
    image ``i`` (or one feature for all), mean (or sum) over patch tokens -> (N,) float32 CPU.

    ``images`` (N, 3, H, W) in [0, 1]; they are resized to the model's input size and normalised.
    """
    from vitviz_core.hooks import capture, resolve_hook

    net, norm_fn, in_hw, _ = _unpack_model(model, normalize, input_size)
    spec = resolve_hook(net, hook)
    nimg = images.shape[0]
    feats = [int(features)] * nimg if isinstance(features, int) else [int(f) for f in features]
    if len(feats) != nimg:
        raise VitvizError(f"{len(feats)} features for {nimg} images")
    check_features(feats, spec, hook)
    dev = _model_device(net)
    obj = channel(hook, None, reduce)
    out = []
    with _eval_mode(net), capture(net, [hook], stop_early=True, detach=True) as cap:
        for i in range(0, nimg, batch_size):
            batch = images[i : i + batch_size].to(dev, torch.float32)
            x = (
                batch
                if tuple(batch.shape[-2:]) == in_hw
                else F.interpolate(batch, size=in_hw, mode="bilinear", align_corners=False)
            )
            cap.forward(norm_fn(x))
            ctx = ObjectiveContext(
                activations=dict(cap.activations),
                specs=dict(cap.specs),
                images=batch,
                augmented=batch,
                features=torch.tensor(feats[i : i + batch_size], device=dev),
            )
            out.append(obj(ctx).float().cpu())
    return torch.cat(out)
