"""Readable hook points for every ViT family, and a context manager that captures them.

Hook names are TransformerLens style. Plain ViTs (ViT, DeiT, CLIP, DINOv2, ConViT) use
``blocks.{i}...``; hierarchical models (PiT, Swin, Twins, CoaT) and CNNs (EfficientNet,
ResNet, ConvNeXt) use ``stages.{s}.blocks.{j}...`` and ``stages.{s}``. Per transformer block::

    blocks.{i}                         block output (same as hook_resid_post)
    blocks.{i}.hook_resid_pre          residual stream entering the block
    blocks.{i}.hook_resid_mid          after the attention branch (input of norm2)
    blocks.{i}.hook_resid_post         residual stream leaving the block
    blocks.{i}.hook_attn_out           attention branch added to the residual (after LayerScale)
    blocks.{i}.hook_mlp_out            FFN branch added to the residual (after LayerScale)
    blocks.{i}.attn.hook_q|k|v         (B, heads, L, d)            where the module exposes them
    blocks.{i}.attn.hook_pattern       (B, heads, L, L) softmax    needs unfused attention
    blocks.{i}.attn.hook_mask          (B, 1, L, L) attention mask (True = may attend), to edit
    blocks.{i}.attn.hook_z             input of attn.proj (heads concatenated)
    blocks.{i}.attn.hook_result        output of attn.proj
    blocks.{i}.mlp.hook_pre            fc1 output
    blocks.{i}.mlp.hook_post           activation output (GELU; the paper's default)
    blocks.{i}.mlp.hook_out            FFN output

plus ``hook_embed`` (patch embedding / CNN stem), ``hook_final`` (final norm / last
features) and ``hook_logits`` (model output) at model level. Any ``named_modules()`` path
works too; its layout is inferred from one probe forward pass.

Every name resolves to a :class:`HookSpec` (layout, prefix tokens, channels, patch grid at
the model's default input size). :class:`capture` registers hooks only inside its ``with``
block and always removes them; :func:`to_patch_maps` turns any captured activation into
``(B, C, H, W)`` maps with the prefix (CLS, distillation, register) tokens dropped.

Hierarchical models without a table here (LeViT, MaxViT, EfficientFormer, MobileViT) get
``stages.{k}``, ``stages.{k}.blocks.{j}`` and ``...blocks.{j}.mlp.hook_out`` from timm's
``feature_info``, with layouts proven from its channel counts (else a :class:`HookError`).

``capture(..., edit={name: fn})`` edits activations in flight (TransformerLens
``run_with_hooks`` style); attention is run unfused only when an attention pattern is read.

Example::

    with capture(model, ["blocks.3.mlp.hook_post"]) as cap:
        cap.forward(x)                                  # stops after block 3's GELU
    act = cap.activations["blocks.3.mlp.hook_post"]     # (B, L, 4C)
    maps = to_patch_maps(act, cap.specs["blocks.3.mlp.hook_post"])   # (B, 4C, H, W)

    def cls_blind(mask, spec):                          # (B, 1, L, L) bool, True = may attend
        mask = mask.clone()
        mask[:, :, 0, 1:] = False                       # CLS no longer attends to the patches
        return mask

    with capture(model, [], edit={"blocks.0.attn.hook_mask": cls_blind}) as cap:
        logits = cap.forward(x)
"""

from __future__ import annotations

import difflib
import math
import re
import weakref
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from .errors import HookError
from .hook_names import Target, apply_transform, build_targets
from .models import _as_hw, as_loaded, default_input_size

__all__ = [
    "HookSpec",
    "resolve_hook",
    "list_hooks",
    "capture",
    "to_patch_maps",
    "default_input_size",
    "model_family",
    "LAYOUTS",
]

#: layouts a HookSpec can have ("NC": one vector per image, e.g. logits)
LAYOUTS = ("NLC", "NHWC", "NCHW", "BHLD", "BHLL", "NC")

_CHANNELS_LAST_FAMILIES = {"swin"}
_MAX_PREFIX_SEARCH = 16
#: images in the probe forward pass: 2, so that a tensor whose first dim is not the batch
#: (MobileViT folds the batch into its unfolded-patch dim; windowed attention into windows;
#: a module returning a parameter has dim 0 = 1) is told apart from a per-image tensor.
_PROBE_BATCH = 2


@dataclass(frozen=True)
class HookSpec:
    """Where a hook point lives and what the captured tensor looks like."""

    name: str  # canonical name, e.g. "blocks.3.mlp.hook_post", or a raw module path
    module_path: str  # timm named_modules() path the hook is attached to ("" = the model)
    layout: str  # "NLC", "NHWC", "NCHW", "BHLD", "BHLL" or "NC"
    num_prefix_tokens: int  # CLS/dist/register tokens at the front of L (0 for non-token layouts)
    channels: int  # C (features you can maximize); BHLD: heads*head_dim; BHLL: heads
    grid: tuple[int, int] | None  # spatial patch grid (H, W) at the model's default input size
    depth: int  # order of the hook in the forward pass (for early stop)
    hook_type: str = "output"  # "output": the module's output; "input": its first input
    shape: tuple[int, ...] = ()  # per-image shape (batch dim dropped) at the default input size
    description: str = ""


class _StopForward(Exception):
    """Raised inside a hook to end the forward pass early; swallowed by capture.forward."""


# --------------------------------------------------------------------------------------------
# per-model cache: canonical targets and probe results
# --------------------------------------------------------------------------------------------


@dataclass
class _Probe:
    input_size: tuple[int, int]
    shapes: dict[tuple[str, str], tuple[int, ...]]  # (path, "input"/"output") -> shape of first call
    order: dict[tuple[str, str], int]  # (path, "input"/"output") -> event index


@dataclass
class _ModelInfo:
    n_modules: int
    family: str
    targets: dict[str, Target]
    default_size: tuple[int, int]
    model_prefix: int | None
    probes: dict[tuple[int, int], _Probe] = field(default_factory=dict)
    specs: dict[tuple[tuple[int, int], str], HookSpec] = field(default_factory=dict)


_INFO: "weakref.WeakKeyDictionary[nn.Module, _ModelInfo]" = weakref.WeakKeyDictionary()
_PROBING: set[int] = set()  # ids of models whose probe forward is running (capture hooks stay quiet)


def _model_prefix(model: nn.Module, family: str) -> int | None:
    if family == "pit" and getattr(model, "cls_token", None) is not None:
        return int(model.cls_token.shape[1])
    n = getattr(model, "num_prefix_tokens", None)
    return int(n) if isinstance(n, int) else None


def _info(model: nn.Module) -> _ModelInfo:
    n_modules = sum(1 for _ in model.modules())
    info = _INFO.get(model)
    if info is None or info.n_modules != n_modules:
        family, targets = build_targets(model)
        info = _ModelInfo(
            n_modules,
            family,
            {t.name: t for t in targets},
            default_input_size(model),
            _model_prefix(model, family),
        )
        _INFO[model] = info
    return info


def model_family(model: nn.Module) -> str:
    """The family whose canonical names the model gets ("vit", "swin", ..., or "generic")."""
    return _info(model).family


def _first_tensor(obj: Any) -> Tensor | None:
    if isinstance(obj, Tensor):
        return obj
    if isinstance(obj, (tuple, list)):
        for o in obj:
            if isinstance(o, Tensor):
                return o
    return None


def _param_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    return torch.device("cpu"), torch.float32


class _FusedAttnOff:
    """Switch ``fused_attn`` off on every module that has it; restore on exit."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.saved: list[tuple[nn.Module, bool]] = []

    def __enter__(self) -> "_FusedAttnOff":
        for m in self.model.modules():
            val = getattr(m, "fused_attn", None)
            if isinstance(val, bool):
                self.saved.append((m, val))
                m.fused_attn = False
        return self

    def __exit__(self, *exc: object) -> None:
        for m, val in self.saved:
            m.fused_attn = val
        self.saved.clear()


def _run_probe(model: nn.Module, size: tuple[int, int]) -> _Probe:
    """One forward pass on zeros (batch ``_PROBE_BATCH``, eval mode, unfused attention)
    recording every module's first input/output shape and the order in which hooks fire."""
    shapes: dict[tuple[str, str], tuple[int, ...]] = {}
    order: dict[tuple[str, str], int] = {}
    handles = []

    def record(path: str, kind: str, t: Tensor | None) -> None:
        key = (path, kind)
        if key in order:
            return
        order[key] = len(order)
        if t is not None:
            shapes[key] = tuple(t.shape)

    def make_pre(path: str):
        def pre(module: nn.Module, args: tuple, kwargs: dict) -> None:
            record(path, "input", _first_tensor(args) if args else _first_tensor(list(kwargs.values())))

        return pre

    def make_post(path: str):
        def post(module: nn.Module, args: tuple, output: Any) -> None:
            record(path, "output", _first_tensor(output))

        return post

    modes = [(m, m.training) for m in model.modules()]
    device, dtype = _param_device_dtype(model)
    _PROBING.add(id(model))
    try:
        for path, mod in model.named_modules():
            handles.append(mod.register_forward_pre_hook(make_pre(path), with_kwargs=True))
            handles.append(mod.register_forward_hook(make_post(path)))
        model.eval()
        x = torch.zeros(_PROBE_BATCH, 3, size[0], size[1], device=device, dtype=dtype)  # (2, 3, H, W)
        with torch.no_grad(), _FusedAttnOff(model):
            model(x)
    except Exception as e:
        raise HookError(
            f"could not run a probe forward pass at input size {size}: "
            f"{type(e).__name__}: {e}; pass input_size=(H, W) that the model accepts"
        ) from e
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes:
            m.training = mode
        _PROBING.discard(id(model))
    return _Probe(size, shapes, order)


def _probe(model: nn.Module, info: _ModelInfo, size: tuple[int, int]) -> _Probe:
    if size not in info.probes:
        info.probes[size] = _run_probe(model, size)
    return info.probes[size]


# --------------------------------------------------------------------------------------------
# layout inference
# --------------------------------------------------------------------------------------------


def _ratio_ok(h: int, w: int, size: tuple[int, int], tol: float = 0.2) -> bool:
    return h > 0 and w > 0 and abs(math.log(h / w) - math.log(size[0] / size[1])) < tol


def _plausible_grid(h: int, w: int, size: tuple[int, int]) -> bool:
    return h <= size[0] and w <= size[1] and _ratio_ok(h, w, size)


def _grid_for(n: int, size: tuple[int, int]) -> tuple[int, int] | None:
    """Factor n tokens into an (h, w) grid with the input's aspect ratio, or None."""
    if n <= 0:
        return None
    if size[0] == size[1]:
        s = math.isqrt(n)
        return (s, s) if s * s == n else None
    target = math.log(size[0] / size[1])
    best = None
    for h in range(1, math.isqrt(n) + 1):
        if n % h:
            continue
        for hh, ww in ((h, n // h), (n // h, h)):
            err = abs(math.log(hh / ww) - target)
            if best is None or err < best[0]:
                best = (err, (hh, ww))
    return best[1] if best is not None and best[0] < 0.2 else None


def _tokens(
    L: int, hint: int | None, model_prefix: int | None, size: tuple[int, int]
) -> tuple[int, tuple[int, int] | None]:
    """(num_prefix_tokens, grid) for L tokens: the hint if it fits a grid, else a search."""
    if hint is not None and 0 <= hint <= L:
        g = _grid_for(L - hint, size)
        if g is not None:
            return hint, g
    cands = ([model_prefix] if model_prefix is not None else []) + list(range(_MAX_PREFIX_SEARCH + 1))
    for p in dict.fromkeys(cands):
        if L - p >= 2 or (L - p == 1 and p == model_prefix):
            g = _grid_for(L - p, size)
            if g is not None:
                return p, g
    return (hint if hint is not None and 0 <= hint <= L else 0), None


def _describe(
    shape: tuple[int, ...], layout: str | None, hint: int | None, info: _ModelInfo, size: tuple[int, int]
) -> tuple[str, int, int, tuple[int, int] | None] | None:
    """(layout, num_prefix_tokens, channels, grid) for an activation of ``shape``; None if unsupported."""
    nd = len(shape)
    if layout in ("BHLD", "BHLL") and nd == 4:
        p, g = _tokens(shape[2], hint, info.model_prefix, size)
        channels = shape[1] * shape[3] if layout == "BHLD" else shape[1]
        return layout, p, channels, g
    if layout == "NC" or nd == 2:
        return ("NC", 0, shape[-1], None) if nd == 2 else None
    if nd == 3:
        p, g = _tokens(shape[1], hint, info.model_prefix, size)
        return "NLC", p, shape[2], g
    if nd == 4:
        _, a, b, c = shape
        if layout not in ("NCHW", "NHWC"):
            p12, p23 = _plausible_grid(a, b, size), _plausible_grid(b, c, size)
            if info.family in _CHANNELS_LAST_FAMILIES and p12:
                layout = "NHWC"
            elif p23:
                layout = "NCHW"
            elif p12:
                layout = "NHWC"
            else:
                layout = "NCHW"
        return (layout, 0, c, (a, b)) if layout == "NHWC" else (layout, 0, a, (b, c))
    return None


# --------------------------------------------------------------------------------------------
# resolution
# --------------------------------------------------------------------------------------------


def _raw_paths(probe: _Probe) -> list[str]:
    return [p for (p, k) in probe.order if k == "output" and p and (p, "output") in probe.shapes]


def _raw_target(model: nn.Module, info: _ModelInfo, path: str, probe: _Probe) -> Target:
    """A target for a raw module path, with the prefix of its closest enclosing canonical target.

    4-dim outputs inside an attention module whose dim 1 equals its ``num_heads`` are taken as
    per-head tensors: BHLL for dropout/softmax outputs (attention maps), else BHLD.
    """
    module = model.get_submodule(path)
    layout: str | None = None
    shape = probe.shapes.get((path, "output"), ())
    if len(shape) == 4:
        parts = path.split(".")
        for i in range(len(parts), 0, -1):
            heads = getattr(model.get_submodule(".".join(parts[:i])), "num_heads", None)
            if isinstance(heads, int):
                if shape[1] == heads:
                    square = shape[2] == shape[3] and isinstance(module, (nn.Dropout, nn.Softmax))
                    layout = "BHLL" if square else "BHLD"
                break
    best: Target | None = None
    for t in info.targets.values():
        mp = t.module_path
        if (
            mp
            and t.prefix is not None
            and not t.transform
            and t.layout is None
            and (path == mp or path.startswith(mp + "."))
        ):
            if best is None or len(mp) > len(best.module_path):
                best = t
    return Target(
        path,
        path,
        "output",
        (),
        layout,
        best.prefix if best else None,
        description=f"raw module output ({type(module).__name__})",
    )


def _index_error(model: nn.Module, info: _ModelInfo, name: str, names: list[str]) -> HookError | None:
    """A 'valid range' error when ``name`` matches known names except for one index."""
    tmpl = re.sub(r"\d+", "#", name)
    same = [n for n in names if re.sub(r"\d+", "#", n) == tmpl]
    if not same:
        return None
    nums = [int(v) for v in re.findall(r"\d+", name)]
    parts = re.split(r"\d+", name)
    for pos, val in enumerate(nums):
        cands = [n for n in same if [int(v) for v in re.findall(r"\d+", n)][:pos] == nums[:pos]]
        valid = sorted({int(re.findall(r"\d+", n)[pos]) for n in cands})
        if valid and val not in valid:
            what = parts[pos].rstrip(".").split(".")[-1] or "index"
            owner = "".join(p + str(v) for p, v in zip(parts[:pos], nums[:pos])).rstrip(".")
            where = f"{owner} has" if owner else f"this {info.family} model has"
            return HookError(
                f"hook {name!r}: {what} index {val} is out of range; {where} {what} {valid[0]}..{valid[-1]}"
            )
    return None


def _target(model: nn.Module, info: _ModelInfo, name: str, probe: _Probe) -> Target:
    if not isinstance(name, str):
        raise HookError(f"hook names are strings, got {type(name).__name__}")
    t = info.targets.get(name)
    if t is not None:
        return t
    if name and (name, "output") in probe.shapes:
        return _raw_target(model, info, name, probe)
    if name and (name, "output") in probe.order:
        raise HookError(f"module {name!r} returns no tensor; hook one of its submodules instead")
    try:
        model.get_submodule(name) if name else None
        exists = bool(name)
    except AttributeError:
        exists = False
    if exists:
        raise HookError(
            f"module {name!r} does not run in a forward pass at input size {probe.input_size}; "
            f"pick another module (see list_hooks(model, include_raw=True))"
        )
    names = list(info.targets) + _raw_paths(probe)
    err = _index_error(model, info, name, names)
    if err is not None:
        raise err
    close = difflib.get_close_matches(name, names, n=6, cutoff=0.5)
    if close:
        hint = f"; closest: {', '.join(close)}"
    else:
        examples = [n for n in info.targets if n.endswith("mlp.hook_post")][:2] or list(info.targets)[:3]
        hint = f"; e.g. {', '.join(examples)}" if examples else "; use a named_modules() path"
    raise HookError(
        f"unknown hook {name!r} for this {info.family} model{hint} (list_hooks(model) shows all names)"
    )


def _spec(model: nn.Module, info: _ModelInfo, t: Target, probe: _Probe) -> HookSpec:
    key = (probe.input_size, t.name)
    if key in info.specs:
        return info.specs[key]
    kind = "input" if t.hook_type == "mask" else t.hook_type
    shape = probe.shapes.get((t.module_path, kind))
    if shape is not None and t.hook_type == "mask":  # tokens (B, L, C) -> mask (B, 1, L, L)
        shape = (shape[0], 1, shape[1], shape[1]) if len(shape) == 3 else None
    if shape is None:
        raise HookError(
            f"hook {t.name!r}: module {t.module_path!r} did not run in a forward pass at "
            f"input size {probe.input_size}"
        )
    if t.transform:
        ctx = {}
        if t.context_path is not None:
            ctx[t.context_path] = probe.shapes[(t.context_path, "input")]
        shape = tuple(apply_transform(t, torch.zeros(shape), model, ctx).shape)
    if not shape or shape[0] != _PROBE_BATCH:
        raise _batch_error(t.name, shape[0] if shape else None, _PROBE_BATCH, shape)
    if t.channels is not None:
        desc = _proven_layout(t, shape, probe.input_size)
    else:
        desc = _describe(shape, t.layout, t.prefix, info, probe.input_size)
    if desc is None:
        raise HookError(
            f"hook {t.name!r}: activation shape {shape} has no supported layout "
            f"(expected 2-4 dims); hook a different module"
        )
    layout, prefix, channels, grid = desc
    spec = HookSpec(
        name=t.name,
        module_path=t.module_path,
        layout=layout,
        num_prefix_tokens=prefix,
        channels=int(channels),
        grid=grid,
        depth=probe.order[(t.module_path, kind)],
        hook_type=t.hook_type,
        shape=tuple(shape[1:]),
        description=t.description,
    )
    info.specs[key] = spec
    return spec


def _proven_layout(
    t: Target, shape: tuple[int, ...], size: tuple[int, int]
) -> tuple[str, int, int, tuple[int, int] | None]:
    """(layout, prefix, channels, grid) of a hook whose channel count is known (timm
    ``feature_info``): the channel dim must be the only one that fits, else a HookError."""
    c = t.channels
    fits: list[tuple[str, int, int, tuple[int, int] | None]] = []
    if len(shape) == 4:
        _, a, b, d = shape
        if a == c and _plausible_grid(b, d, size):
            fits.append(("NCHW", 0, c, (b, d)))
        if d == c and _plausible_grid(a, b, size):
            fits.append(("NHWC", 0, c, (a, b)))
    elif len(shape) == 3 and shape[2] == c:
        grid = _grid_for(shape[1], size)
        if grid is not None:
            fits.append(("NLC", 0, c, grid))
    if len(fits) != 1:
        why = "both NCHW and NHWC fit" if fits else f"no dim holds its {c} channels on a patch grid"
        raise HookError(
            f"hook {t.name!r}: cannot infer the layout of its activation {tuple(shape)} safely "
            f"({why}); hook a module whose layout is unambiguous, or pass a raw module path"
        )
    return fits[0]


def _batch_error(name: str, first: int | None, batch: int, shape: tuple[int, ...]) -> HookError:
    what = "a scalar" if first is None else f"first dim {first}"
    return HookError(
        f"hook {name!r}: unknown layout: its activation {tuple(shape)} has {what} for a batch of {batch} "
        "images, so dim 0 is not the batch (it is folded into another dim, e.g. MobileViT's unfolded "
        "patches or windowed attention, or the tensor is not per image); vitviz cannot tell the images "
        "apart there: hook a module whose output is (batch, ...), e.g. the enclosing block"
    )


def _size(info: _ModelInfo, input_size: tuple[int, int] | int | None) -> tuple[int, int]:
    if input_size is None:
        return info.default_size
    hw = _as_hw(input_size)
    if hw is None:
        raise HookError(f"input_size must be (H, W) or an int, got {input_size!r}")
    return hw


def resolve_hook(model: nn.Module, name: str, *, input_size: tuple[int, int] | int | None = None) -> HookSpec:
    """The :class:`HookSpec` for a canonical name or a raw ``named_modules()`` path.

    Raises :class:`HookError` naming the closest valid names when ``name`` is unknown, and the
    valid range when a block/stage index is out of range. Shapes come from one cached probe
    forward pass on zeros at ``input_size`` (default: the model's default input size).
    """
    info = _info(model)
    probe = _probe(model, info, _size(info, input_size))
    return _spec(model, info, _target(model, info, name, probe), probe)


def list_hooks(
    model: nn.Module, include_raw: bool = False, *, input_size: tuple[int, int] | int | None = None
) -> list[HookSpec]:
    """All canonical hook points in forward order; with ``include_raw`` also every module
    output (2-4 dim tensors) not already covered by a canonical name."""
    info = _info(model)
    probe = _probe(model, info, _size(info, input_size))
    specs = []
    for t in info.targets.values():
        try:
            specs.append(_spec(model, info, t, probe))
        except HookError:  # e.g. a module that does not run at this input size
            continue
    specs.sort(key=lambda s: s.depth)
    if include_raw:
        raw = []
        for path in _raw_paths(probe):
            if path in info.targets:
                continue
            try:
                raw.append(_spec(model, info, _raw_target(model, info, path, probe), probe))
            except HookError:
                continue
        specs += sorted(raw, key=lambda s: s.depth)
    return specs


# --------------------------------------------------------------------------------------------
# capture
# --------------------------------------------------------------------------------------------

EditFn = Callable[[Tensor, HookSpec], "Tensor | None"]


def _needs_unfused(targets: "Mapping[str, Target]") -> bool:
    """Whether any of these hook points only exists with unfused attention (the softmax
    pattern, read through ``attn_drop``)."""
    return any(t.layout == "BHLL" and t.hook_type != "mask" for t in targets.values())


def _default_mask(tokens: Tensor | None) -> Tensor | None:
    """All-True boolean mask ``(B, 1, L, L)`` for tokens ``(B, L, C)``."""
    if tokens is None or tokens.ndim != 3:
        return None
    b, n = tokens.shape[:2]
    return torch.ones(b, 1, n, n, dtype=torch.bool, device=tokens.device)


def _trivial_mask(mask: Tensor) -> bool:
    """A mask that changes nothing (all True / all zero): passed on as ``None`` so that an
    identity edit leaves the forward pass bit-for-bit as it was."""
    return bool(mask.all()) if mask.dtype == torch.bool else not bool(mask.any())


class capture:  # noqa: N801 - used as a context manager, like torch.no_grad
    """Capture activations at named hook points during a forward pass, and edit them in flight.

    Hooks exist only inside the ``with`` block and are always removed, also on exceptions.

    Args:
        model: a timm model or a :class:`~vitviz_core.models.LoadedModel` (any ``nn.Module``
            works with raw module paths).
        names: canonical hook names or raw module paths to read (one string or a sequence;
            may be empty when ``edit`` is given).
        stop_early: end the forward pass as soon as every requested hook has fired
            (``forward`` then returns ``None``). Never stops on ``hook_logits``, never when
            only editing.
        detach: store detached copies; ``False`` keeps the autograd graph so gradients flow
            from the activations back to the input.
        unfused_attention: switch timm's ``fused_attn`` off on every module inside the block
            (restored on exit). ``None`` (default) decides from the hooks: on exactly when an
            attention pattern (``attn.hook_pattern``) is read or edited.
        edit: ``{hook name: fn}``, TransformerLens ``run_with_hooks`` style: ``fn(tensor, spec)``
            sees the activation in flight and returns its replacement (or ``None`` to keep
            it, e.g. after editing in place). ``blocks.{i}.attn.hook_mask`` edits the
            attention mask: ``fn`` gets a boolean ``(B, 1, L, L)`` mask (True = may attend;
            all True when the model passes none) and returns a boolean or additive float
            mask; a mask that changes nothing is passed on as none. Edits run before captures
            of the same hook, so ``activations`` show edited values. Hooks that reshape
            (q/k/v split out of ``qkv``, Swin windows) cannot be edited. An edit may change the
            batch size of the residual stream (e.g. branch variants off a shared prefix).
        copy: store a copy of each captured tensor (default). ``False`` stores the tensor the
            module produced (no clone: saves a full activation copy per forward); safe when the
            forward stops at the hook (``stop_early``), since no later op can modify it in place.

    After ``forward(x)``: ``activations[name]`` holds the tensor in the spec's layout, and
    ``specs[name]`` its :class:`HookSpec`, with ``grid``/``shape`` updated to ``x``'s size.
    """

    def __init__(
        self,
        model: Any,
        names: Sequence[str] | str = (),
        stop_early: bool = True,
        detach: bool = True,
        unfused_attention: bool | None = None,
        edit: Mapping[str, EditFn] | None = None,
        copy: bool = True,
    ) -> None:
        if not isinstance(model, nn.Module):
            model = as_loaded(model).model
        if isinstance(names, str):
            names = [names]
        self.names: list[str] = list(dict.fromkeys(names))
        self.edit: dict[str, EditFn] = dict(edit or {})
        if not self.names and not self.edit:
            raise HookError("capture needs at least one hook name (see list_hooks(model))")
        bad = [n for n, fn in self.edit.items() if not callable(fn)]
        if bad:
            raise HookError(f"edit functions must be callables fn(tensor, spec); not for {', '.join(bad)}")
        self.model = model
        self.stop_early = stop_early
        self.detach = detach
        self.copy = copy
        info = _info(model)
        probe = _probe(model, info, info.default_size)
        self._targets: dict[str, Target] = {n: _target(model, info, n, probe) for n in self.names}
        self.specs: dict[str, HookSpec] = {n: _spec(model, info, t, probe) for n, t in self._targets.items()}
        self._edit_targets: dict[str, Target] = {n: _target(model, info, n, probe) for n in self.edit}
        self._edit_specs: dict[str, HookSpec] = {
            n: _spec(model, info, t, probe) for n, t in self._edit_targets.items()
        }
        for n, t in self._edit_targets.items():
            if t.transform:
                raise HookError(
                    f"hook {n!r} is reshaped out of {t.module_path!r} ({', '.join(t.transform)}) "
                    "and cannot be edited; edit the module it comes from (a raw module path) "
                    "or the enclosing block"
                )
        if unfused_attention is None:
            unfused_attention = _needs_unfused({**self._targets, **self._edit_targets})
        self.unfused_attention = unfused_attention
        self._default_specs = dict(self.specs)
        self.activations: dict[str, Tensor] = {}
        self._handles: list[Any] = []
        self._fused: _FusedAttnOff | None = None
        self._context: dict[str, tuple[int, ...]] = {}
        self._fired: set[str] = set()
        self._active = False
        self._batch: int | None = None  # images in the running forward (checked at capture)

    # -- hook functions ---------------------------------------------------------------------
    def _store(self, path: str, names: list[str], t: Tensor | None) -> None:
        if id(self.model) in _PROBING or t is None:
            return
        for name in names:
            if name in self._fired:  # modules called twice (shared modules): keep the first call
                continue
            target = self._targets[name]
            v = apply_transform(target, t, self.model, self._context) if target.transform else t
            if self._batch is not None and not self.edit and (v.ndim == 0 or v.shape[0] != self._batch):
                raise _batch_error(name, int(v.shape[0]) if v.ndim else None, self._batch, tuple(v.shape))
            if self.detach:
                v = v.detach()
            if self.copy:
                v = v.clone()
            self.activations[name] = v
            self._fired.add(name)
        if self.stop_early and path and len(self._fired) == len(self.names):
            raise _StopForward

    def _make_hook(self, path: str, hook_type: str, names: list[str]):
        if hook_type == "mask":

            def pre_mask(module: nn.Module, args: tuple, kwargs: dict) -> None:
                mask = args[1] if len(args) > 1 else kwargs.get("attn_mask")
                if mask is None:
                    mask = _default_mask(_first_tensor(args) if args else kwargs.get("x"))
                self._store(path, names, mask)

            return pre_mask
        if hook_type == "input":

            def pre(module: nn.Module, args: tuple, kwargs: dict) -> None:
                self._store(
                    path, names, _first_tensor(args) if args else _first_tensor(list(kwargs.values()))
                )

            return pre

        def post(module: nn.Module, args: tuple, output: Any) -> None:
            self._store(path, names, _first_tensor(output))

        return post

    def _make_edit_hook(self, name: str):
        fn, spec, hook_type = self.edit[name], self._edit_specs[name], self._edit_targets[name].hook_type

        def call(t: Tensor) -> Tensor:
            new = fn(t, spec)
            if new is None:
                return t
            if not isinstance(new, Tensor):
                raise HookError(f"edit of {name!r} returned {type(new).__name__}, not a tensor or None")
            return new

        if hook_type == "mask":

            def pre_mask(module: nn.Module, args: tuple, kwargs: dict) -> Any:
                if id(self.model) in _PROBING:
                    return None
                given = args[1] if len(args) > 1 else kwargs.get("attn_mask")
                mask = (
                    given
                    if given is not None
                    else _default_mask(_first_tensor(args) if args else kwargs.get("x"))
                )
                if mask is None:
                    raise HookError(f"edit of {name!r}: no (B, L, C) tokens to build a mask for")
                new = call(mask)
                if given is None and _trivial_mask(new):
                    new = None
                if len(args) > 1:
                    return (args[0], new, *args[2:]), kwargs
                return args, {**kwargs, "attn_mask": new}

            return pre_mask
        if hook_type == "input":

            def pre(module: nn.Module, args: tuple, kwargs: dict) -> Any:
                if id(self.model) in _PROBING:
                    return None
                if args and isinstance(args[0], Tensor):
                    return (call(args[0]), *args[1:]), kwargs
                key = next((k for k, v in kwargs.items() if isinstance(v, Tensor)), None)
                if key is None:
                    raise HookError(f"edit of {name!r}: the module got no tensor input")
                return args, {**kwargs, key: call(kwargs[key])}

            return pre

        def post(module: nn.Module, args: tuple, output: Any) -> Any:
            if id(self.model) in _PROBING:
                return None
            if isinstance(output, Tensor):
                return call(output)
            if isinstance(output, tuple) and output and isinstance(output[0], Tensor):
                return (call(output[0]), *output[1:])
            raise HookError(f"edit of {name!r}: module output is {type(output).__name__}, not a tensor")

        return post

    def _make_context_hook(self, path: str):
        def pre(module: nn.Module, args: tuple, kwargs: dict) -> None:
            t = _first_tensor(args) if args else _first_tensor(list(kwargs.values()))
            if t is not None:
                self._context[path] = tuple(t.shape)

        return pre

    @staticmethod
    def _register(mod: nn.Module, hook_type: str, hook: Any) -> Any:
        if hook_type in ("input", "mask"):
            return mod.register_forward_pre_hook(hook, with_kwargs=True)
        return mod.register_forward_hook(hook)

    # -- context manager --------------------------------------------------------------------
    def __enter__(self) -> "capture":
        if self._active:
            raise HookError("this capture is already active; capture blocks cannot be nested")
        groups: dict[tuple[str, str], list[str]] = {}
        for name, t in self._targets.items():
            groups.setdefault((t.module_path, t.hook_type), []).append(name)
        contexts = {t.context_path for t in self._targets.values() if t.context_path is not None}
        try:
            for path in contexts:  # registered first, so they fire before hooks on the same module
                self._handles.append(
                    self.model.get_submodule(path).register_forward_pre_hook(
                        self._make_context_hook(path), with_kwargs=True
                    )
                )
            for name, t in self._edit_targets.items():  # before captures: they read edited values
                self._handles.append(
                    self._register(
                        self.model.get_submodule(t.module_path), t.hook_type, self._make_edit_hook(name)
                    )
                )
            for (path, hook_type), names in groups.items():
                self._handles.append(
                    self._register(
                        self.model.get_submodule(path), hook_type, self._make_hook(path, hook_type, names)
                    )
                )
            if self.unfused_attention:
                self._fused = _FusedAttnOff(self.model).__enter__()
        except BaseException:
            self._remove()
            raise
        self._active = True
        return self

    def _remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        if self._fused is not None:
            self._fused.__exit__(None, None, None)
            self._fused = None
        self._active = False

    def __exit__(self, *exc: object) -> bool:
        self._remove()
        return False

    # -- running ----------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor | None:
        """Run ``model(x)`` and fill :attr:`activations`; ``None`` when stopped early.

        Called outside a ``with`` block it opens one for this call only.
        """
        if not self._active:
            with self:
                return self.forward(x)
        self.activations = {}
        self._fired = set()
        self._context = {}
        self._batch = int(x.shape[0]) if isinstance(x, Tensor) and x.ndim > 0 else None
        try:
            out = self.model(x)
        except _StopForward:
            out = None
        finally:
            self._batch = None
        missing = [n for n in self.names if n not in self.activations]
        if missing:
            why = (
                " (attention patterns need unfused attention: leave capture's unfused_attention at None)"
                if any(n.endswith("hook_pattern") for n in missing)
                else ""
            )
            raise HookError(f"hooks did not fire in this forward pass: {', '.join(missing)}{why}")
        self._update_specs(tuple(x.shape[-2:]))
        return out

    __call__ = forward

    def _update_specs(self, size: tuple[int, int]) -> None:
        """Make ``specs`` describe the tensors just captured (grid and shape at x's size)."""
        for name, act in self.activations.items():
            spec = self._default_specs[name]
            shape = tuple(act.shape[1:])
            if shape == spec.shape:
                self.specs[name] = spec
                continue
            grid = spec.grid
            if spec.layout == "NCHW" and act.ndim == 4:
                grid = (act.shape[2], act.shape[3])
            elif spec.layout == "NHWC" and act.ndim == 4:
                grid = (act.shape[1], act.shape[2])
            elif spec.layout in ("NLC", "BHLD", "BHLL"):
                L = act.shape[1] if spec.layout == "NLC" else act.shape[2]
                grid = _grid_for(L - spec.num_prefix_tokens, size)
            self.specs[name] = replace(spec, grid=grid, shape=shape)


# --------------------------------------------------------------------------------------------
# patch maps
# --------------------------------------------------------------------------------------------


def to_patch_maps(act: Tensor, spec: HookSpec, grid: tuple[int, int] | None = None) -> Tensor:
    """Turn an activation in ``spec``'s layout into maps ``(B, C, H, W)``.

    Prefix tokens (CLS, distillation, registers) are dropped for token layouts; NHWC is
    permuted; NCHW is returned as is; for q/k/v (BHLD) the heads are merged into channels
    (channel = head * head_dim + j). ``grid`` overrides ``spec.grid`` (non-square inputs, other
    input sizes).
    """
    layout = spec.layout
    if layout == "NCHW":
        _check_ndim(act, 4, spec)
        return act
    if layout == "NHWC":
        _check_ndim(act, 4, spec)
        return act.permute(0, 3, 1, 2)  # (B, C, H, W)
    if layout in ("BHLL", "NC"):
        raise HookError(
            f"hook {spec.name!r} has layout {layout} ("
            + (
                "attention probabilities; index a query row, e.g. act[:, :, 0, prefix:], first"
                if layout == "BHLL"
                else "one vector per image"
            )
            + "), which has no patch maps"
        )
    if layout == "BHLD":
        _check_ndim(act, 4, spec)
        B, h, L, d = act.shape
        act = act.permute(0, 2, 1, 3).reshape(B, L, h * d)  # (B, L, heads*d)
    elif layout == "NLC":
        _check_ndim(act, 3, spec)
    else:
        raise HookError(f"hook {spec.name!r}: unknown layout {layout!r}")
    B, L, C = act.shape
    p = spec.num_prefix_tokens
    g = grid if grid is not None else spec.grid
    n = L - p
    if g is None or g[0] * g[1] != n:
        raise HookError(
            f"hook {spec.name!r}: {L} tokens - {p} prefix = {n} patches do not fill the grid "
            f"{g}; pass grid=(H, W) for this input size"
        )
    return act[:, p:].transpose(1, 2).reshape(B, C, g[0], g[1])  # (B, C, H, W)


def _check_ndim(act: Tensor, nd: int, spec: HookSpec) -> None:
    if act.ndim != nd:
        raise HookError(
            f"hook {spec.name!r} has layout {spec.layout} ({nd} dims) but the tensor has "
            f"shape {tuple(act.shape)}"
        )
