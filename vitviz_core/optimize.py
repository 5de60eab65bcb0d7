"""The augmented activation-maximization optimizer, batched over many features.

Ghiasi, Kazemi et al. (2022), Sec. 3 / Appendix B: start from a uniform random image, and
each step maximize the objective averaged over an ensemble of ``n`` augmented copies
(jitter, colour shift, Gaussian noise; :mod:`vitviz_core.augment`), minus a total-variation
penalty, with Adam and a cosine-annealed learning rate, clamping pixels to [0, 1] after every
step. The constants come from a :class:`~vitviz_core.recipes.Recipe` (``"paper"`` or
``"released"``).

Speed: K features are optimized in one run. Their K x n augmented copies form one batch, each
sample's objective is its own feature's channel (a gather over channels), and the forward pass
stops after the hooked module (:class:`vitviz_core.hooks.capture` with ``stop_early=True``).
On CUDA the model runs under bf16 autocast (objective and images stay float32).

Reproducibility: every feature draws its initial image and all its augmentations from its
own generators seeded from ``(seed, feature)`` (:class:`~vitviz_core.augment.FeatureStreams`),
and the loss is a sum over features, so feature ``f`` optimized in a batch of K gets the same
random numbers and gradients as ``f`` optimized alone; results agree up to float rounding of
batched kernels.

>>> from vitviz_core.models import load_model
>>> res = optimize_features(load_model("vit-ti16"), "blocks.6.mlp.hook_post", range(8), steps=50)
>>> res.images.shape                      # doctest: +SKIP
torch.Size([8, 3, 224, 224])
"""

from __future__ import annotations

import contextlib
import math
import numbers
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from vitviz_core.augment import EnsembleAugment, FeatureStreams
from vitviz_core.errors import HookError, VitvizError
from vitviz_core.objectives import Objective, ObjectiveContext, channel, total_variation
from vitviz_core.param import Parametrization, get_param
from vitviz_core.recipes import Recipe, get_recipe

__all__ = [
    "OptimizationResult",
    "optimize_features",
    "score_images",
    "estimate_seconds",
    "make_normalize",
    "check_features",
    "cosine_lr",
]

Normalize = Callable[[Tensor], Tensor]


@dataclass
class OptimizationResult:
    """What :func:`optimize_features` returns (all tensors on the CPU, float32)."""

    images: Tensor                    # (K * m, 3, H, W) final images in [0, 1]; m = images_per_feature
    features: list[int]               # the K features, in order
    history: Tensor                   # (steps, K) objective per feature and step (mean over its copies)
    snapshots: dict[int, Tensor]      # step -> (K * m, 3, H, W) images after that many updates (0 = init)
    config: dict[str, Any]            # everything that determined the result (recipe, hook, seed, ...)
    seconds: float = 0.0              # wall time of the optimization (model loading excluded)
    labels: list[str] = field(default_factory=list)   # one label per image, e.g. "#12"
    scores: list[Any] | None = None   # QualityScores per feature (first image each) with scores=...

    @property
    def seconds_per_step(self) -> float:
        """Wall seconds per optimizer step over all chunks (all K features)."""
        steps = self.history.shape[0] * max(1, self.config.get("chunks", 1))
        return self.seconds / max(steps, 1)

    @property
    def features_per_minute(self) -> float:
        return 60.0 * len(self.features) / self.seconds if self.seconds > 0 else float("inf")


def cosine_lr(step: int, lr: float, t_max: int) -> float:
    """``lr * (1 + cos(pi * step / t_max)) / 2``: ``CosineAnnealingLR`` with ``eta_min = 0``."""
    return lr * (1 + math.cos(math.pi * min(step, t_max) / t_max)) / 2


def make_normalize(mean: Sequence[float], std: Sequence[float]) -> Normalize:
    """A differentiable ``(x - mean) / std`` over the channel dimension of (B, C, H, W)."""
    mean_t = torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def normalize(x: Tensor) -> Tensor:
        return (x - mean_t.to(x.device, x.dtype)) / std_t.to(x.device, x.dtype)

    normalize.mean = tuple(float(v) for v in mean_t.flatten())  # type: ignore[attr-defined]
    normalize.std = tuple(float(v) for v in std_t.flatten())    # type: ignore[attr-defined]
    return normalize


def _is_loaded_model(model: Any) -> bool:
    from vitviz_core.models import LoadedModel

    return isinstance(model, LoadedModel)


def _unpack_model(model: Any, normalize: Normalize | tuple | None,
                  input_size: int | Sequence[int] | None) -> tuple[nn.Module, Normalize, tuple[int, int], dict]:
    """``(network, normalize, (H, W), description)``: :func:`vitviz_core.models.as_loaded`, plus
    a callable ``normalize`` that replaces the data config's."""
    from vitviz_core.models import as_loaded

    custom = normalize if callable(normalize) else None
    if normalize is not None and custom is None and not (isinstance(normalize, (tuple, list)) and len(normalize) == 2):
        raise VitvizError("normalize must be a callable or a (mean, std) pair")
    loaded = as_loaded(model, None if custom is not None else normalize,
                       tuple(input_size) if isinstance(input_size, list) else input_size)
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
        is_int = isinstance(f, numbers.Integral) or (isinstance(f, Tensor) and f.numel() == 1
                                                     and not f.is_floating_point())
        if isinstance(f, bool) or not is_int:
            raise VitvizError(f"features must be integers, got {f!r}")
        f = int(f)
        if not 0 <= f < spec.channels:
            raise HookError(f"feature {f} is out of range for {hook}: it has {spec.channels} channels "
                            f"(0-{spec.channels - 1})")
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


def optimize_features(
    model: Any,
    hook: str | None,
    features: int | Iterable[int],
    *,
    objective: Objective | None = None,
    recipe: str | Recipe = "paper",
    param: Any = None,
    normalize: Normalize | tuple | None = None,
    input_size: int | Sequence[int] | None = None,
    image_size: int | Sequence[int] | None = None,
    seed: int = 0,
    batch_features: int | None = None,
    images_per_feature: int = 1,
    snapshot_steps: Iterable[int] = (),
    device: str | torch.device | None = None,
    amp: bool | None = None,
    progress: bool = True,
    scores: bool | dict[str, Any] = False,
    **recipe_overrides: Any,
) -> OptimizationResult:
    """Optimize one image per feature (or ``images_per_feature``) to maximize it.

    Args:
        model: a :class:`~vitviz_core.models.LoadedModel` (normalisation and input size come
            with it) or a bare ``nn.Module`` (timm models: both read from its data config).
        hook: hook name (see :func:`vitviz_core.hooks.list_hooks`); the default objective is
            the mean over patch tokens of channel ``f`` of this hook.
        features: feature (channel) indices; K = their number.
        objective: what to maximize instead of the default; use ``channel(hook)`` with
            ``feature=None`` inside it for per-feature terms. The recipe's TV term (and the
            released recipe's 1/n factor) is still applied on top.
        recipe: ``"paper"``, ``"released"`` or a :class:`Recipe`; ``recipe_overrides`` change
            single fields (``steps=200``, ``n_augment=4``, ``tv_weight=0``...).
        param: the image parametrization: ``"pixel"``, ``"fourier"``, ``"maco"`` or an object
            with ``init``/``to_image``/``post_step`` (:mod:`vitviz_core.param`); default: the
            recipe's (``pixel`` for ``paper`` and ``released``).
        normalize: callable on (B, 3, H, W) in [0, 1], or a ``(mean, std)`` pair.
        input_size: the model's input (H, W); the augmented batch is resized to it.
        image_size: size of the optimized image (default: the input size).
        seed: base seed; feature ``f`` draws from generators seeded from ``(seed, f)``.
        batch_features: features per optimizer run (default: all K at once).
        images_per_feature: images per feature (m > 1 only makes sense with a diversity term).
        snapshot_steps: steps (0..steps) after which to keep a copy of the images.
        device: where to run; must be the model's device (default: the model's device).
        amp: bf16 autocast for the model forward (default: True on CUDA, False elsewhere).
        progress: show a tqdm progress bar.
        scores: also compute the quality scores of each feature's (first) image
            (:func:`vitviz_core.quality.quality_scores`; a dict passes options to it, e.g.
            ``{"exemplars": False}``) into ``result.scores``. Needs a LoadedModel and a hook.

    Raises:
        HookError: unknown hook or feature out of range. VitvizError: other bad arguments.
    """
    from vitviz_core.hooks import capture, resolve_hook

    rec = get_recipe(recipe, **recipe_overrides)
    if param is None:
        parametrization = rec.make_param()
    elif isinstance(param, str):
        parametrization = rec.replace(param=param).make_param()
    else:
        parametrization = get_param(param)
    net, norm_fn, in_hw, info = _unpack_model(model, normalize, input_size)
    img_hw = in_hw if image_size is None else (
        (int(image_size), int(image_size)) if isinstance(image_size, int) else tuple(int(v) for v in image_size))
    if len(img_hw) != 2 or min(img_hw) <= 0:
        raise VitvizError(f"image_size must be a positive size, got {image_size}")

    dev = _model_device(net)
    want = torch.device(device) if device is not None else dev
    if want.type != dev.type or (want.index is not None and want != dev):
        raise VitvizError(f"the model is on {dev} but device={device!r}; move the model first (model.to(...))")
    use_amp = (dev.type == "cuda") if amp is None else bool(amp)
    if use_amp and dev.type != "cuda":
        raise VitvizError("amp (bf16 autocast) is only used on CUDA; pass amp=False on this device")

    feats = [features] if isinstance(features, numbers.Integral) else list(features)
    if objective is None:
        if hook is None:
            raise VitvizError("give a hook name or an objective")
        target = hook
        if rec.objective_on == "pre_activation" and hook.endswith("mlp.hook_post"):
            target = hook[: -len("hook_post")] + "hook_pre"  # same channel, before the GELU
        objective = channel(target, None, rec.reduce)
    hook_names = list(dict.fromkeys(([hook] if hook else []) + list(objective.hooks)))
    if not hook_names:
        raise VitvizError("the objective uses no hook point: nothing to run the model for")
    specs = {name: resolve_hook(net, name) for name in hook_names}
    if hook is not None:
        if specs[hook].layout == "BHLL":
            raise HookError(f"hook {hook!r} holds attention probabilities (layout BHLL), which have no "
                            "channels to maximize; pick a token hook (e.g. blocks.{i}.mlp.hook_post)")
        feats = check_features(feats, specs[hook], hook)
    else:
        feats = [int(f) for f in feats]
        if not feats:
            raise VitvizError("no features to optimize")
    m = int(images_per_feature)
    if m < 1:
        raise VitvizError(f"images_per_feature must be >= 1 (got {images_per_feature})")
    chunk = len(feats) if batch_features is None else int(batch_features)
    if chunk < 1:
        raise VitvizError(f"batch_features must be >= 1 (got {batch_features})")
    snaps = sorted({int(s) for s in snapshot_steps})
    if snaps and (snaps[0] < 0 or snaps[-1] > rec.steps):
        raise VitvizError(f"snapshot steps must lie in 0..{rec.steps}, got {snaps}")

    total = objective / rec.n_augment if rec.extra_batch_factor else objective
    if rec.tv_weight:
        total = total - rec.tv_weight * total_variation(rec.tv_directions, rec.tv_on)

    chunks = [feats[i:i + chunk] for i in range(0, len(feats), chunk)]
    images, histories = [], []
    snapshots: dict[int, list[Tensor]] = {s: [] for s in snaps}
    augment = EnsembleAugment(rec)
    bar = tqdm(total=rec.steps * len(chunks), disable=not progress, unit="step", leave=True,
               desc=f"{hook or objective.description} x{len(feats)}")
    start = time.perf_counter()
    try:
        with _eval_mode(net), capture(net, hook_names, stop_early=True, detach=False) as cap:
            for part in chunks:
                img, hist, snap = _run_chunk(net, cap, norm_fn, in_hw, img_hw, total, part, rec, augment,
                                             parametrization, seed, m, dev, use_amp, snaps, bar)
                images.append(img)
                histories.append(hist)
                for s, t in snap.items():
                    snapshots[s].append(t)
    finally:
        bar.close()
    seconds = time.perf_counter() - start

    config = {
        **info,
        "hook": hook,
        "objective": total.description,
        "features": feats,
        "recipe": rec.to_dict(),
        "param": getattr(parametrization, "name", type(parametrization).__name__),
        "steps": rec.steps,
        "seed": int(seed),
        "image_size": list(img_hw),
        "input_size": list(in_hw),
        "images_per_feature": m,
        "batch_features": chunk,
        "chunks": len(chunks),
        "device": str(dev),
        "amp": "bf16" if use_amp else None,
        "torch": torch.__version__,
    }
    labels = [f"#{f}" if m == 1 else f"#{f}.{i}" for f in feats for i in range(m)]
    result = OptimizationResult(
        images=torch.cat(images),
        features=feats,
        history=torch.cat(histories, dim=1),
        snapshots={s: torch.cat(v) for s, v in snapshots.items()},
        config=config,
        seconds=seconds,
        labels=labels,
    )
    if scores:
        if hook is None or not _is_loaded_model(model):
            raise VitvizError("scores=True needs a LoadedModel and a hook")
        from vitviz_core.quality import quality_scores

        opts = dict(scores) if isinstance(scores, dict) else {}
        result.scores = quality_scores(model, hook, feats, result.images[::m], **opts)
    return result


def _run_chunk(net: nn.Module, cap: Any, normalize: Normalize, in_hw: tuple[int, int],
               img_hw: tuple[int, int], objective: Objective, feats: list[int], rec: Recipe,
               augment: EnsembleAugment, parametrization: Parametrization, seed: int, m: int,
               dev: torch.device, use_amp: bool, snaps: list[int],
               bar: Any) -> tuple[Tensor, Tensor, dict[int, Tensor]]:
    """One optimization run of ``len(feats)`` features: images (P, 3, H, W), history (steps, K)."""
    k, n = len(feats), rec.n_augment
    p = k * m
    streams = [FeatureStreams.create(seed, f, dev, rec.seed_mode) for f in feats]
    init = [parametrization.init(m, img_hw, s.device, dev) for s in streams]
    param = torch.cat(init).requires_grad_(True)                           # (P, ...) e.g. (P, 3, H, W)
    opt = torch.optim.Adam([param], lr=rec.lr, betas=rec.betas, eps=rec.eps)
    sample_feats = torch.tensor(feats, device=dev).repeat_interleave(m * n)  # (B,)
    history: list[Tensor] = []
    snapshots: dict[int, Tensor] = {}

    def current() -> Tensor:
        with torch.no_grad():
            return parametrization.to_image(param).detach().float().cpu().clone()  # (P, 3, H, W)

    if 0 in snaps:
        snapshots[0] = current()
    autocast = (torch.autocast(device_type="cuda", dtype=torch.bfloat16) if use_amp
                else contextlib.nullcontext())
    t_max = rec.cosine_t_max
    for step in range(rec.steps):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, rec.lr, t_max) if rec.schedule == "cosine" else rec.lr
        image = parametrization.to_image(param)                            # (P, 3, H, W) in [0, 1]
        batch = augment(image, streams, step, rec.steps, images_per_stream=m)  # (B, 3, H, W)
        x = batch
        if tuple(x.shape[-2:]) != in_hw:
            x = F.interpolate(x, size=in_hw, mode="bilinear", align_corners=False)
        x = normalize(x)                                                   # (B, 3, h, w)
        with autocast:
            cap.forward(x)
        ctx = ObjectiveContext(activations=dict(cap.activations), specs=dict(cap.specs), images=image,
                               augmented=batch, features=sample_feats, n_copies=n, images_per_group=m)
        values = objective(ctx).float()                                    # (B,)
        per_image = values.view(p, n).mean(dim=1)                          # (P,)
        loss = -per_image.sum()  # a sum: each feature's gradient is what it would be alone
        (grad,) = torch.autograd.grad(loss, [param])
        param.grad = grad
        opt.step()
        parametrization.post_step(param)
        history.append(per_image.detach().view(k, m).mean(dim=1))         # (K,)
        if step + 1 in snaps:
            snapshots[step + 1] = current()
        bar.update(1)
        if (step + 1) % 25 == 0 or step + 1 == rec.steps:
            bar.set_postfix(objective=f"{history[-1].mean().item():.3g}", refresh=False)
    return current(), torch.stack(history).float().cpu(), snapshots


def estimate_seconds(model: Any, hook: str, features: Sequence[int], *, steps: int | None = None,
                     batch_features: int | None = None, **kwargs: Any) -> float:
    """Seconds :func:`optimize_features` will take, from one timed step on the real batch
    (the first chunk of ``batch_features`` features), times the steps and chunks."""
    feats = list(features)
    chunk = len(feats) if batch_features is None else int(batch_features)
    res = optimize_features(model, hook, feats[:chunk], steps=1, progress=False, **kwargs)
    total_steps = (steps if steps is not None else get_recipe(kwargs.get("recipe", "paper")).steps)
    return res.seconds * total_steps * math.ceil(len(feats) / chunk)


@torch.no_grad()
def score_images(model: Any, hook: str, images: Tensor, features: int | Sequence[int], *,
                 normalize: Normalize | tuple | None = None, input_size: int | Sequence[int] | None = None,
                 reduce: str = "mean", batch_size: int = 64) -> Tensor:
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
            batch = images[i:i + batch_size].to(dev, torch.float32)
            x = batch if tuple(batch.shape[-2:]) == in_hw else F.interpolate(
                batch, size=in_hw, mode="bilinear", align_corners=False)
            cap.forward(norm_fn(x))
            ctx = ObjectiveContext(activations=dict(cap.activations), specs=dict(cap.specs), images=batch,
                                   augmented=batch,
                                   features=torch.tensor(feats[i:i + batch_size], device=dev))
            out.append(obj(ctx).float().cpu())
    return torch.cat(out)
