"""The augmented activation-maximization optimizer, batched over many features.

Ghiasi, Kazemi et al. (2022), Sec. 3 / Appendix B: start from a uniform random image, and
each step maximize the objective averaged over an ensemble of ``n`` augmented copies
(jitter, colour shift, Gaussian noise; :mod:`vitviz_core.augment`), minus a total-variation
penalty, with Adam and a cosine-annealed learning rate, clamping pixels to [0, 1] after every
step. The constants come from a :class:`~vitviz_core.recipes.Recipe` (``"paper"`` or
``"released"``).

Speed: K features are optimized in one run. Their K x n augmented copies form one batch, each
sample's objective is its own feature's channel (a gather over channels), and the forward pass
stops after the hooked module (:class:`vitviz_core.hooks.capture` with ``stop_early=True`` and
``copy=False``: the hooked activation is not cloned). ``compile=True`` instead compiles a
truncated forward (patch embed -> ``blocks[:L]`` -> the hooked op, built with torch.fx, no
exception) with :func:`torch.compile`. On CUDA the model runs in pure bf16 by default
(``precision="bf16"``: a bf16 copy of the frozen model made once, so no weight is re-cast per
step); the image, Adam's state and the loss stay float32. A step issues no host
synchronisation: normalisation constants live on the device, the objective history stays on
the device until the end, and ``.item()`` runs only when a progress bar shows the objective.
With ``batch_features=None`` the K features are split into chunks sized from the free memory
(the activation memory of one image pass is measured by a one-image probe).

Reproducibility: every feature draws its initial image and all its augmentations from
generators seeded by a counter, ``(seed, feature, step)``
(:class:`~vitviz_core.augment.CounterStreams`), and the loss is a sum over features, so
feature ``f`` optimized in a batch of K, alone, or in any chunking gets the same random numbers
and gradients; results agree up to float rounding of batched kernels (bit for bit on the CPU
in the tests).

>>> from vitviz_core.models import load_model
>>> res = optimize_features(load_model("vit-ti16"), "blocks.6.mlp.hook_post", range(8), steps=50)
>>> res.images.shape                      # doctest: +SKIP
torch.Size([8, 3, 224, 224])
"""

from __future__ import annotations

import contextlib
import copy as _copy
import math
import numbers
import os
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from vitviz_core.augment import INIT_STEP, CounterStreams, EnsembleAugment
from vitviz_core.errors import HookError, VitvizError
from vitviz_core.objectives import Objective, ObjectiveContext, channel, total_variation
from vitviz_core.param import Parametrization, get_param
from vitviz_core.recipes import Recipe, get_recipe
from vitviz_core.scoring import (  # noqa: F401  (re-exported: optimize's public names)
    Normalize,
    _eval_mode,
    _is_loaded_model,
    _model_device,
    _unpack_model,
    check_features,
    make_normalize,
    score_images,
)

__all__ = [
    "OptimizationResult",
    "optimize_features",
    "score_images",
    "estimate_seconds",
    "make_normalize",
    "check_features",
    "cosine_lr",
    "auto_chunk",
    "truncated_forward",
    "PRECISIONS",
]

#: ``precision=`` values: ``"bf16"`` (a bf16 copy of the model), ``"autocast"`` (bf16
#: autocast, CUDA), ``"fp32"``; ``None`` picks bf16 on CUDA, fp32 elsewhere.
PRECISIONS = ("fp32", "bf16", "autocast")
#: at most this many image passes (features x copies x images) per chunk on the CPU, where
#: larger batches gain no speed and only cost memory
CPU_MAX_PASSES = 256


@dataclass
class OptimizationResult:
    """What :func:`optimize_features` returns (all tensors on the CPU, float32)."""

    images: Tensor  # (K * m, 3, H, W) final images in [0, 1]; m = images_per_feature
    features: list[int]  # the K features, in order
    history: Tensor  # (steps, K) objective per feature and step (mean over its copies)
    snapshots: dict[int, Tensor]  # step -> (K * m, 3, H, W) images after that many updates (0 = init)
    config: dict[str, Any]  # everything that determined the result (recipe, hook, seed, ...)
    seconds: float = 0.0  # wall time of the optimization (model loading excluded)
    labels: list[str] = field(default_factory=list)  # one label per image, e.g. "#12"
    scores: list[Any] | None = None  # QualityScores per feature (first image each) with scores=...

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
    precision: str | None = None,
    compile: bool | str = False,
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
        batch_features: features per optimizer run (default: as many as the free memory
            holds, from a one-image probe of the activation memory; on the CPU at most
            :data:`CPU_MAX_PASSES` image passes per run). Chunking does not change any result.
        images_per_feature: images per feature (m > 1 only makes sense with a diversity term).
        snapshot_steps: steps (0..steps) after which to keep a copy of the images.
        device: where to run; must be the model's device (default: the model's device).
        amp: legacy switch: ``True`` = ``precision="autocast"``, ``False`` = ``"fp32"``.
        precision: the model's arithmetic (:data:`PRECISIONS`): ``"bf16"`` runs a bf16 copy of
            the frozen model (made once per model), ``"autocast"`` bf16 autocast (CUDA),
            ``"fp32"``; default bf16 on CUDA, fp32 elsewhere. The image, Adam and the loss are
            float32 in every case.
        compile: ``True`` compiles a truncated forward (only what the hooks need, built with
            torch.fx; no exception-based early stop) with :func:`torch.compile`; a string picks
            the ``torch.compile`` backend (e.g. ``"eager"``). Hooks must be module outputs
            without reshaping (MLP, residual, block hooks).
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
    img_hw = (
        in_hw
        if image_size is None
        else (
            (int(image_size), int(image_size))
            if isinstance(image_size, int)
            else tuple(int(v) for v in image_size)
        )
    )
    if len(img_hw) != 2 or min(img_hw) <= 0:
        raise VitvizError(f"image_size must be a positive size, got {image_size}")

    dev = _model_device(net)
    want = torch.device(device) if device is not None else dev
    if want.type != dev.type or (want.index is not None and want != dev):
        raise VitvizError(
            f"the model is on {dev} but device={device!r}; move the model first (model.to(...))"
        )
    if precision is None:
        precision = (
            ("autocast" if amp else "fp32") if amp is not None else ("bf16" if dev.type == "cuda" else "fp32")
        )
    if precision not in PRECISIONS:
        raise VitvizError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "autocast" and dev.type != "cuda":
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
            raise HookError(
                f"hook {hook!r} holds attention probabilities (layout BHLL), which have no "
                "channels to maximize; pick a token hook (e.g. blocks.{i}.mlp.hook_post)"
            )
        feats = check_features(feats, specs[hook], hook)
    else:
        feats = [int(f) for f in feats]
        if not feats:
            raise VitvizError("no features to optimize")
    m = int(images_per_feature)
    if m < 1:
        raise VitvizError(f"images_per_feature must be >= 1 (got {images_per_feature})")
    if batch_features is not None and int(batch_features) < 1:
        raise VitvizError(f"batch_features must be >= 1 (got {batch_features})")
    snaps = sorted({int(s) for s in snapshot_steps})
    if snaps and (snaps[0] < 0 or snaps[-1] > rec.steps):
        raise VitvizError(f"snapshot steps must lie in 0..{rec.steps}, got {snaps}")

    total = objective / rec.n_augment if rec.extra_batch_factor else objective
    if rec.tv_weight:
        total = total - rec.tv_weight * total_variation(rec.tv_directions, rec.tv_on)

    images, histories = [], []
    snapshots: dict[int, list[Tensor]] = {s: [] for s in snaps}
    augment = EnsembleAugment(rec)
    run_net = _bf16_model(net) if precision == "bf16" else net
    in_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    passes = rec.n_augment * m  # image passes per feature and step
    bar = None
    start = time.perf_counter()
    try:
        with _eval_mode(run_net):
            # copy=False: the step stops at the (single) hook, so nothing can modify it in place
            cap = capture(run_net, hook_names, stop_early=True, detach=False, copy=len(hook_names) == 1)
            with cap:
                if batch_features is not None:
                    chunk = int(batch_features)
                elif len(feats) == 1:
                    chunk = 1
                else:
                    per_pass = _bytes_per_pass(cap, run_net, norm_fn, in_hw, dev, in_dtype)
                    chunk = auto_chunk(
                        len(feats),
                        passes,
                        per_pass,
                        _memory_budget(dev),
                        CPU_MAX_PASSES if dev.type == "cpu" else None,
                    )
                forward: Callable[[Tensor], tuple[dict, dict]]
                if compile:
                    with torch.no_grad():  # the hooks' specs at this input size
                        cap.forward(norm_fn(torch.full((1, 3, *in_hw), 0.5, device=dev)).to(in_dtype))
                    forward = _CompiledForward(run_net, hook_names, dict(cap.specs), compile)
                else:
                    forward = _EagerForward(cap)
            chunks = [feats[i : i + chunk] for i in range(0, len(feats), chunk)]
            bar = tqdm(
                total=rec.steps * len(chunks),
                disable=not progress,
                unit="step",
                leave=True,
                desc=f"{hook or objective.description} x{len(feats)}",
            )
            with contextlib.nullcontext() if compile else cap:
                for part in chunks:
                    img, hist, snap = _run_chunk(
                        forward,
                        norm_fn,
                        in_hw,
                        img_hw,
                        total,
                        part,
                        rec,
                        augment,
                        parametrization,
                        seed,
                        m,
                        dev,
                        precision,
                        snaps,
                        bar,
                    )
                    images.append(img)
                    histories.append(hist)
                    for s, t in snap.items():
                        snapshots[s].append(t)
    finally:
        if bar is not None:
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
        "amp": "bf16" if precision != "fp32" else None,
        "precision": precision,
        "compile": compile if isinstance(compile, str) else bool(compile),
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


class _EagerForward:
    """One step's forward through the capture hooks (stops after the hooked module)."""

    def __init__(self, cap: Any) -> None:
        self.cap = cap

    def __call__(self, x: Tensor) -> tuple[dict[str, Tensor], dict[str, Any]]:
        self.cap.forward(x)
        return dict(self.cap.activations), dict(self.cap.specs)


_COMPILED: "weakref.WeakKeyDictionary[nn.Module, dict[tuple, Callable]]" = weakref.WeakKeyDictionary()


class _CompiledForward:
    """``torch.compile`` of :func:`truncated_forward`; specs measured once at this input size."""

    def __init__(
        self, net: nn.Module, hooks: Sequence[str], specs: dict[str, Any], compile: bool | str
    ) -> None:
        key = (tuple(hooks), compile if isinstance(compile, str) else "inductor")
        per_net = _COMPILED.setdefault(net, {})
        if key not in per_net:  # compiled once per model, hooks and backend (later runs reuse it)
            kw = {"backend": compile} if isinstance(compile, str) else {}
            per_net[key] = torch.compile(truncated_forward(net, hooks), dynamic=False, **kw)
        self.fn = per_net[key]
        self.specs = specs

    def __call__(self, x: Tensor) -> tuple[dict[str, Tensor], dict[str, Any]]:
        return dict(self.fn(x)), self.specs


def truncated_forward(net: nn.Module, hooks: Sequence[str]) -> nn.Module:
    """An ``nn.Module`` (a torch.fx ``GraphModule`` sharing ``net``'s weights) mapping ``x`` to
    ``{hook: activation}`` that computes only what the hooks need: for a ViT, patch embed ->
    ``blocks[:L]`` -> block ``L`` up to the hooked op. No hooks, no exception: compilable.

    Raises VitvizError for hooks that are not a module's output as is (q/k/v, attention
    patterns, Swin's reshaped tokens) or a model torch.fx cannot trace."""
    from timm.models import create_feature_extractor

    from vitviz_core.hooks import capture

    targets = capture(net, list(hooks))._targets  # name -> Target (the probe is cached)
    nodes: dict[str, str] = {}
    for name, t in targets.items():
        if t.hook_type != "output" or t.transform or not t.module_path:
            raise VitvizError(
                f"compile=True needs hooks on a module's output as is; {name!r} is not (use compile=False)"
            )
        nodes[t.module_path] = name
    try:
        return create_feature_extractor(net, return_nodes=nodes)
    except Exception as exc:  # noqa: BLE001 - fx cannot trace every model
        raise VitvizError(
            f"compile=True: torch.fx cannot trace {type(net).__name__} ({exc}); use compile=False"
        ) from None


_BF16_COPIES: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, nn.Module]]" = weakref.WeakKeyDictionary()


def _fingerprint(net: nn.Module) -> tuple:
    """Identity and version of every parameter and buffer (changes when weights change)."""
    return tuple(
        (t.data_ptr(), t._version, t.dtype, str(t.device))
        for t in list(net.parameters()) + list(net.buffers())
    )


def _bf16_model(net: nn.Module) -> nn.Module:
    """A frozen bf16 copy of ``net``, made once per model (again after its weights change):
    casting once avoids autocast's re-cast of every weight at every step."""
    floats = [t for t in list(net.parameters()) + list(net.buffers()) if t.is_floating_point()]
    if floats and all(t.dtype == torch.bfloat16 for t in floats):
        return net  # already bf16: no copy
    fp = _fingerprint(net)
    hit = _BF16_COPIES.get(net)
    if hit is not None and hit[0] == fp:
        return hit[1]
    low = _copy.deepcopy(net).to(torch.bfloat16).requires_grad_(False)
    _BF16_COPIES[net] = (fp, low)
    return low


def auto_chunk(
    n_features: int,
    passes_per_feature: int,
    bytes_per_pass: float,
    budget: float,
    max_passes: int | None = None,
) -> int:
    """Features per chunk: as many as ``budget`` bytes hold at ``bytes_per_pass`` per image
    pass and ``passes_per_feature`` passes (copies x images) per feature, at most
    ``max_passes`` passes, at least 1, at most ``n_features``."""
    per_feature = max(1, int(passes_per_feature)) * max(float(bytes_per_pass), 1.0)
    k = int(budget // per_feature)
    if max_passes is not None:
        k = min(k, int(max_passes) // max(1, int(passes_per_feature)))
    return max(1, min(int(n_features), k))


def _memory_budget(dev: torch.device) -> float:
    """Bytes the activations of one chunk may use: 70 % of the free device memory (CUDA,
    counting the allocator's free cache) or half of the available host memory."""
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        free += torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev)
        return 0.7 * free
    try:
        with open("/proc/meminfo") as fh:
            info = {line.split(":")[0]: line.split()[1] for line in fh}
        avail = int(info["MemAvailable"]) * 1024
    except (OSError, KeyError, ValueError, IndexError):
        avail = (
            os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES") if hasattr(os, "sysconf") else 8 << 30
        )
    return 0.5 * avail


def _bytes_per_pass(
    cap: Any,
    net: nn.Module,
    normalize: Normalize,
    in_hw: tuple[int, int],
    dev: torch.device,
    in_dtype: torch.dtype,
) -> float:
    """Bytes one image pass keeps for the input-gradient backward, measured on a one-image
    probe (tensors saved by autograd, weights excluded), doubled for the step's transients."""
    weights = {t.untyped_storage().data_ptr() for t in list(net.parameters()) + list(net.buffers())}
    saved: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        st = t.untyped_storage()
        if st.data_ptr() not in weights:
            saved[st.data_ptr()] = st.nbytes()
        return t

    x = torch.full((1, 3, *in_hw), 0.5, device=dev, requires_grad=True)  # (1, 3, h, w); no global RNG draw
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        cap.forward(normalize(x).to(in_dtype))
    cap.activations = {}
    image = 3 * in_hw[0] * in_hw[1] * 4 * 6  # fp32 image, copies, augmentations, gradient
    return 2.0 * sum(saved.values()) + image


def _run_chunk(
    forward: Callable[[Tensor], tuple[dict, dict]],
    normalize: Normalize,
    in_hw: tuple[int, int],
    img_hw: tuple[int, int],
    objective: Objective,
    feats: list[int],
    rec: Recipe,
    augment: EnsembleAugment,
    parametrization: Parametrization,
    seed: int,
    m: int,
    dev: torch.device,
    precision: str,
    snaps: list[int],
    bar: Any,
) -> tuple[Tensor, Tensor, dict[int, Tensor]]:
    """One optimization run of ``len(feats)`` features: images (P, 3, H, W), history (steps, K).

    No host synchronisation inside the loop (the history stays on the device; ``.item()`` only
    when the progress bar shows the objective)."""
    k, n = len(feats), rec.n_augment
    p = k * m
    streams = CounterStreams(seed, feats, dev, rec.seed_mode)
    init = [parametrization.init(m, img_hw, streams.device(i, INIT_STEP), dev) for i in range(k)]
    param = torch.cat(init).requires_grad_(True)  # (P, ...) e.g. (P, 3, H, W)
    opt = torch.optim.Adam([param], lr=rec.lr, betas=rec.betas, eps=rec.eps)
    sample_feats = torch.tensor(feats).repeat_interleave(m * n).to(dev)  # (B,), once per chunk
    history: list[Tensor] = []
    snapshots: dict[int, Tensor] = {}
    show = not getattr(bar, "disable", True)
    in_dtype = torch.bfloat16 if precision == "bf16" else torch.float32

    def current() -> Tensor:
        with torch.no_grad():
            return parametrization.to_image(param).detach().float().cpu().clone()  # (P, 3, H, W)

    if 0 in snaps:
        snapshots[0] = current()
    autocast = (
        torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        if precision == "autocast"
        else contextlib.nullcontext()
    )
    t_max = rec.cosine_t_max
    for step in range(rec.steps):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, rec.lr, t_max) if rec.schedule == "cosine" else rec.lr
        image = parametrization.to_image(param)  # (P, 3, H, W) in [0, 1]
        batch = augment(image, streams, step, rec.steps, images_per_stream=m)  # (B, 3, H, W)
        x = batch
        if tuple(x.shape[-2:]) != in_hw:
            x = F.interpolate(x, size=in_hw, mode="bilinear", align_corners=False)
        x = normalize(x)  # (B, 3, h, w) float32
        if in_dtype != torch.float32:
            x = x.to(in_dtype)
        with autocast:
            acts, specs = forward(x)
        ctx = ObjectiveContext(
            activations=acts,
            specs=specs,
            images=image,
            augmented=batch,
            features=sample_feats,
            n_copies=n,
            images_per_group=m,
        )
        values = objective(ctx).float()  # (B,)
        per_image = values.view(p, n).mean(dim=1)  # (P,)
        loss = -per_image.sum()  # a sum: each feature's gradient is what it would be alone
        (grad,) = torch.autograd.grad(loss, [param])
        param.grad = grad
        opt.step()
        parametrization.post_step(param)
        history.append(per_image.detach().view(k, m).mean(dim=1))  # (K,) on the device
        if step + 1 in snaps:
            snapshots[step + 1] = current()
        bar.update(1)
        if show and ((step + 1) % 25 == 0 or step + 1 == rec.steps):
            bar.set_postfix(objective=f"{history[-1].mean().item():.3g}", refresh=False)
    return current(), torch.stack(history).float().cpu(), snapshots


def estimate_seconds(
    model: Any,
    hook: str,
    features: Sequence[int],
    *,
    steps: int | None = None,
    batch_features: int | None = None,
    **kwargs: Any,
) -> float:
    """Seconds :func:`optimize_features` will take, from one timed step on the real batch
    (the first chunk of ``batch_features`` features; with None, the chunk size automatic
    chunking picks for the first 256 features), times the steps and chunks."""
    feats = list(features)
    first = feats[:256] if batch_features is None else feats[: int(batch_features)]
    res = optimize_features(
        model, hook, first, steps=1, progress=False, batch_features=batch_features, **kwargs
    )
    chunk = int(res.config["batch_features"])
    total_steps = steps if steps is not None else get_recipe(kwargs.get("recipe", "paper")).steps
    return res.seconds / max(1, res.config["chunks"]) * total_steps * math.ceil(len(feats) / chunk)
