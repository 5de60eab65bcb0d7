"""Family knowledge behind the canonical hook names of :mod:`vitviz_core.hooks`.

For each supported timm family this module lists the readable, TransformerLens-style hook
names and says where each one lives: the ``named_modules()`` path, whether the hook reads
the module's output or its first input, and which reshaping turns the raw tensor into the
documented layout (q/k/v split out of a fused ``qkv`` Linear, Swin windows put back into
image order, ...). It also holds those reshaping functions.

Families (detected from the model class, with a generic fallback for ViT-like models):

==============  ====================================  =========================================
family          blocks                                notes
==============  ====================================  =========================================
vit             ``blocks.{i}``                        ViT, DeiT (distilled: 2 prefix tokens),
                                                      CLIP (norm_pre), DINOv2 (LayerScale, regs)
convit          ``blocks.{i}``                        CLS token joins at ``local_up_to_layer``
pit             ``stages.{s}.blocks.{j}``             ``transformers.{s}``; NCHW between stages
swin            ``stages.{s}.blocks.{j}``             ``layers.{s}``; NHWC, windowed attention
twins           ``stages.{s}.blocks.{j}``             ``blocks.{s}.{j}``; LSA/GSA attention
coat            ``stages.{s}.blocks.{j}``             ``serial_blocks{s+1}.{j}``; CLS per stage
efficientnet    ``stages.{s}.blocks.{j}``             ``blocks.{s}.{j}``
resnet          ``stages.{s}.blocks.{j}``             ``layer{s+1}.{j}``
convnext        ``stages.{s}.blocks.{j}``             same paths as timm
==============  ====================================  =========================================

Other hierarchical models with ``stages.{k}`` entries in timm's ``feature_info`` (families
levit, maxvit, efficientformer, mobilevit, ...) get ``stages.{k}``, ``stages.{k}.blocks.{j}``
and ``stages.{k}.blocks.{j}.mlp.hook_out``; their layouts are proven from the feature_info
channel counts, and a shape where that proof fails is a HookError, never a guess.

Nothing here runs a model; :mod:`vitviz_core.hooks` probes shapes and registers hooks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
import torch
from torch import nn

__all__ = ["Target", "build_targets", "detect_family", "apply_transform", "TRANSFORMS_NEED_CONTEXT"]


@dataclass(frozen=True)
class Target:
    """Where one canonical hook name lives inside a model (before shapes are known)."""

    name: str  # canonical name, e.g. "blocks.3.mlp.hook_post"
    module_path: str  # named_modules() path ("" is the model itself)
    hook_type: str = "output"  # "output": module output; "input": its first positional input;
    # "mask": the attn_mask argument of an attention module
    transform: tuple[str, ...] = ()  # reshaping steps applied to the raw tensor, see apply_transform
    layout: str | None = None  # layout after the transform; None -> inferred from the shape
    prefix: int | None = None  # number of prefix tokens; None -> inferred
    heads_path: str | None = None  # module whose .num_heads splits heads (q/k/v transforms)
    context_path: str | None = None  # module whose input shape the transform needs (Swin block)
    description: str = ""
    channels: int | None = None  # known channel count (timm feature_info): the layout must be
    # provable from it, else resolving is a HookError


# --------------------------------------------------------------------------------------------
# transforms
# --------------------------------------------------------------------------------------------

TRANSFORMS_NEED_CONTEXT = {"swin_unwindow"}


def _split_heads(t: torch.Tensor, parts: int, index: int, heads: int) -> torch.Tensor:
    """(B, L, parts*heads*d) fused projection -> (B, heads, L, d) for part ``index``."""
    B, L, F = t.shape
    d = F // (parts * heads)
    return t.reshape(B, L, parts, heads, d)[:, :, index].permute(0, 2, 1, 3)  # (B, heads, L, d)


def _swin_unwindow(
    t: torch.Tensor, hw: tuple[int, int], window: tuple[int, int], shift: tuple[int, int]
) -> torch.Tensor:
    """Swin windows (nW*B, N, F) -> tokens in image order (B, H*W, F).

    Undoes timm's cyclic shift, padding and ``window_partition`` (see ``SwinTransformerBlock._attn``).
    """
    H, W = hw
    wh, ww = window
    Hp, Wp = math.ceil(H / wh) * wh, math.ceil(W / ww) * ww
    nh, nw = Hp // wh, Wp // ww
    F = t.shape[-1]
    B = t.shape[0] // (nh * nw)
    x = t.reshape(B, nh, nw, wh, ww, F).permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, F)
    x = x[:, :H, :W]  # (B, H, W, F)
    if any(shift):
        x = torch.roll(x, shifts=tuple(shift), dims=(1, 2))
    return x.reshape(B, H * W, F)  # (B, L, F)


def apply_transform(
    target: Target, t: torch.Tensor, model: nn.Module, context: dict[str, tuple[int, ...]] | None = None
) -> torch.Tensor:
    """Apply a target's reshaping steps to the raw hooked tensor ``t``.

    ``context`` maps ``target.context_path`` to that module's input shape in this forward pass.
    """
    for step in target.transform:
        op, _, arg = step.partition(":")
        if op == "swin_unwindow":
            block = model.get_submodule(target.context_path or "")
            shape = (context or {}).get(target.context_path or "")
            if shape is None:
                raise RuntimeError(f"no input shape recorded for {target.context_path!r}")
            t = _swin_unwindow(t, (shape[1], shape[2]), tuple(block.window_size), tuple(block.shift_size))
        elif op in ("qkv", "qk", "kv", "heads"):
            heads = int(model.get_submodule(target.heads_path or "").num_heads)
            parts = {"qkv": 3, "qk": 2, "kv": 2, "heads": 1}[op]
            t = _split_heads(t, parts, int(arg or 0), heads)
        else:  # pragma: no cover - programming error
            raise ValueError(f"unknown transform step {step!r}")
    return t


# --------------------------------------------------------------------------------------------
# family detection
# --------------------------------------------------------------------------------------------


def _cls(m: nn.Module) -> str:
    return type(m).__name__


def _is_block_list(seq: object) -> bool:
    """A ModuleList/Sequential of transformer blocks (each with an ``mlp``)."""
    return (
        isinstance(seq, (nn.ModuleList, nn.Sequential))
        and len(seq) > 0
        and all(hasattr(b, "mlp") for b in seq)
    )


def detect_family(model: nn.Module) -> str:
    """The family name used for canonical hook names ("generic" when none fits)."""
    name = _cls(model)
    if name == "ConVit":
        return "convit"
    if name == "PoolingVisionTransformer":
        return "pit"
    if name == "SwinTransformer" and hasattr(model, "layers"):
        return "swin"
    if name == "Twins":
        return "twins"
    if name == "CoaT":
        return "coat"
    if name == "EfficientNet" and hasattr(model, "blocks"):
        return "efficientnet"
    if name == "ResNet" and hasattr(model, "layer1"):
        return "resnet"
    if name == "ConvNeXt" and hasattr(model, "stages"):
        return "convnext"
    if _is_block_list(getattr(model, "blocks", None)):
        return "vit"
    if _feature_stages(model):
        if name == "ByobNet":
            return "mobilevit" if any("MobileVit" in _cls(m) for m in model.modules()) else "byobnet"
        return _FEATURE_INFO_FAMILIES.get(name, "staged")
    return "generic"


#: classes whose stages come from timm's ``feature_info`` (any other class with ``stages.{k}``
#: entries there gets the family "staged")
_FEATURE_INFO_FAMILIES = {
    "Levit": "levit",
    "LevitDistilled": "levit",
    "MaxxVit": "maxvit",
    "EfficientFormer": "efficientformer",
    "EfficientFormerV2": "efficientformer",
}


def _feature_stages(model: nn.Module) -> list[tuple[str, int]]:
    """``[(module path, num_chs)]`` of the ``stages.{k}`` entries of timm's ``feature_info``."""
    info = getattr(model, "feature_info", None)
    out = []
    for entry in info if isinstance(info, (list, tuple)) else ():
        path = entry.get("module") if isinstance(entry, dict) else None
        chs = entry.get("num_chs") if isinstance(entry, dict) else None
        if (
            isinstance(path, str)
            and isinstance(chs, int)
            and path.split(".")[0] == "stages"
            and path.count(".") == 1
            and path.split(".")[1].isdigit()
            and _has_path(model, path)
        ):
            out.append((path, chs))
    return out


# --------------------------------------------------------------------------------------------
# name tables
# --------------------------------------------------------------------------------------------


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def _attn_module(block: nn.Module) -> tuple[str, nn.Module] | None:
    for attr in ("attn", "factoratt_crpe"):
        m = getattr(block, attr, None)
        if isinstance(m, nn.Module):
            return attr, m
    return None


def _attn_targets(name: str, bpath: str, block: nn.Module, prefix: int | None, swin: bool) -> list[Target]:
    """q/k/v/pattern/z/result for the attention module of one block (where they exist)."""
    found = _attn_module(block)
    if found is None:
        return []
    attr, attn = found
    ap = _join(bpath, attr)
    n = f"{name}.attn"
    kind = _cls(attn)
    win: tuple[str, ...] = ("swin_unwindow",) if swin else ()
    ctx = bpath if swin else None
    out: list[Target] = []

    def qkv_target(hook: str, path: str, transform: tuple[str, ...], desc: str) -> Target:
        return Target(f"{n}.{hook}", path, "output", win + transform, "BHLD", prefix, ap, ctx, desc)

    has = lambda a: isinstance(getattr(attn, a, None), nn.Module)  # noqa: E731
    if kind == "Attention" and all(has(a) for a in ("qkv", "q_norm", "k_norm")):
        # timm.layers.Attention (ViT, DeiT, CLIP, DINOv2, PiT): q/k after the optional qk-norm
        out += [
            Target(
                f"{n}.hook_q",
                _join(ap, "q_norm"),
                "output",
                (),
                "BHLD",
                prefix,
                ap,
                None,
                "queries (B, heads, L, d), after q-norm, before scaling",
            ),
            Target(
                f"{n}.hook_k",
                _join(ap, "k_norm"),
                "output",
                (),
                "BHLD",
                prefix,
                ap,
                None,
                "keys (B, heads, L, d), after k-norm",
            ),
            qkv_target("hook_v", _join(ap, "qkv"), ("qkv:2",), "values (B, heads, L, d)"),
        ]
    elif kind in ("MHSA", "WindowAttention", "FactorAttnConvRelPosEnc") and has("qkv"):
        out += [
            qkv_target(f"hook_{c}", _join(ap, "qkv"), (f"qkv:{i}",), f"{c} (B, heads, L, d)")
            for i, c in enumerate("qkv")
        ]
    elif kind == "GPSA" and has("qk") and has("v"):
        out += [
            qkv_target("hook_q", _join(ap, "qk"), ("qk:0",), "queries (B, heads, L, d)"),
            qkv_target("hook_k", _join(ap, "qk"), ("qk:1",), "keys (B, heads, L, d)"),
            qkv_target("hook_v", _join(ap, "v"), ("heads",), "values (B, heads, L, d)"),
        ]
    elif kind == "GlobalSubSampleAttn" and has("q") and has("kv"):
        out += [
            qkv_target("hook_q", _join(ap, "q"), ("heads",), "queries (B, heads, L, d)"),
            qkv_target(
                "hook_k", _join(ap, "kv"), ("kv:0",), "keys (B, heads, L', d) on the sub-sampled grid"
            ),
            qkv_target(
                "hook_v", _join(ap, "kv"), ("kv:1",), "values (B, heads, L', d) on the sub-sampled grid"
            ),
        ]
    # attention pattern: only where the full (non-windowed) softmax passes through attn_drop
    if kind in ("Attention", "MHSA", "GPSA", "GlobalSubSampleAttn") and has("attn_drop"):
        out.append(
            Target(
                f"{n}.hook_pattern",
                _join(ap, "attn_drop"),
                "output",
                (),
                "BHLL",
                prefix,
                ap,
                None,
                "attention probabilities (B, heads, L_query, L_key); needs unfused attention",
            )
        )
    if _takes_attn_mask(attn):
        out.append(
            Target(
                f"{n}.hook_mask",
                ap,
                "mask",
                (),
                "BHLL",
                prefix,
                ap,
                None,
                "attention mask (B, 1, L_query, L_key) entering the attention: boolean, True = "
                "may attend (all True when the model passes none); edit it to cut attention "
                "edges",
            )
        )
    if isinstance(getattr(attn, "proj", None), nn.Linear):
        out += [
            Target(
                f"{n}.hook_z",
                _join(ap, "proj"),
                "input",
                win,
                None,
                prefix,
                None,
                ctx,
                "attention-weighted values, heads concatenated (input of attn.proj)",
            ),
            Target(
                f"{n}.hook_result",
                _join(ap, "proj"),
                "output",
                win,
                None,
                prefix,
                None,
                ctx,
                "attention output projection (output of attn.proj)",
            ),
        ]
    return out


def _takes_attn_mask(attn: nn.Module) -> bool:
    """Whether the attention module's forward accepts an ``attn_mask`` (timm >= 1.0.15)."""
    import inspect

    try:
        return "attn_mask" in inspect.signature(attn.forward).parameters
    except (TypeError, ValueError):
        return False


def _mlp_targets(name: str, bpath: str, block: nn.Module, prefix: int | None) -> list[Target]:
    mlp = getattr(block, "mlp", None)
    if not isinstance(mlp, nn.Module):
        return []
    mp = _join(bpath, "mlp")
    n = f"{name}.mlp"
    out: list[Target] = []
    gated = hasattr(mlp, "fc1_g") or "glu" in _cls(mlp).lower()
    if isinstance(getattr(mlp, "fc1", None), nn.Module):
        out.append(
            Target(
                f"{n}.hook_pre",
                _join(mp, "fc1"),
                "output",
                (),
                None,
                prefix,
                description="FFN first linear layer output (before the activation)",
            )
        )
    if gated and isinstance(getattr(mlp, "fc2", None), nn.Module):
        out.append(
            Target(
                f"{n}.hook_post",
                _join(mp, "fc2"),
                "input",
                (),
                None,
                prefix,
                description="FFN hidden features after gating (input of fc2)",
            )
        )
    elif isinstance(getattr(mlp, "act", None), nn.Module):
        out.append(
            Target(
                f"{n}.hook_post",
                _join(mp, "act"),
                "output",
                (),
                None,
                prefix,
                description="FFN hidden features after the activation (paper default)",
            )
        )
    out.append(Target(f"{n}.hook_out", mp, "output", (), None, prefix, description="FFN output"))
    return out


def _transformer_block_targets(
    name: str, bpath: str, block: nn.Module, prefix: int | None, swin: bool = False
) -> list[Target]:
    t = [
        Target(name, bpath, "output", (), None, prefix, description="block output (= hook_resid_post)"),
        Target(
            f"{name}.hook_resid_pre",
            bpath,
            "input",
            (),
            None,
            prefix,
            description="residual stream entering the block",
        ),
    ]
    if isinstance(getattr(block, "norm2", None), nn.Module):
        t.append(
            Target(
                f"{name}.hook_resid_mid",
                _join(bpath, "norm2"),
                "input",
                (),
                None,
                prefix,
                description="residual stream after attention, before the FFN (input of norm2)",
            )
        )
    t.append(
        Target(
            f"{name}.hook_resid_post",
            bpath,
            "output",
            (),
            None,
            prefix,
            description="residual stream leaving the block",
        )
    )
    found = _attn_module(block)
    if isinstance(getattr(block, "ls1", None), nn.Module):
        t.append(
            Target(
                f"{name}.hook_attn_out",
                _join(bpath, "ls1"),
                "output",
                (),
                None,
                prefix,
                description="attention branch added to the residual (after LayerScale)",
            )
        )
    elif found is not None:
        win = ("swin_unwindow",) if swin else ()
        t.append(
            Target(
                f"{name}.hook_attn_out",
                _join(bpath, found[0]),
                "output",
                win,
                None,
                prefix,
                context_path=bpath if swin else None,
                description="attention branch added to the residual",
            )
        )
    if isinstance(getattr(block, "ls2", None), nn.Module):
        t.append(
            Target(
                f"{name}.hook_mlp_out",
                _join(bpath, "ls2"),
                "output",
                (),
                None,
                prefix,
                description="FFN branch added to the residual (after LayerScale)",
            )
        )
    elif isinstance(getattr(block, "mlp", None), nn.Module):
        t.append(
            Target(
                f"{name}.hook_mlp_out",
                _join(bpath, "mlp"),
                "output",
                (),
                None,
                prefix,
                description="FFN branch added to the residual",
            )
        )
    t += _attn_targets(name, bpath, block, prefix, swin)
    t += _mlp_targets(name, bpath, block, prefix)
    return t


def _model_level(
    model: nn.Module,
    embed: str | None,
    final: str | None,
    final_prefix: int | None = None,
    embed_desc: str = "patch embedding output",
) -> tuple[list[Target], list[Target]]:
    """hook_embed (first) and hook_final, hook_logits (last)."""
    first: list[Target] = []
    last: list[Target] = []
    if embed is not None and _has_path(model, embed):
        first.append(Target("hook_embed", embed, "output", (), None, 0, description=embed_desc))
    if final is not None and _has_path(model, final):
        last.append(
            Target(
                "hook_final",
                final,
                "output",
                (),
                None,
                final_prefix,
                description="final features before pooling / head",
            )
        )
    if int(getattr(model, "num_classes", 0) or 0) > 0:
        last.append(
            Target("hook_logits", "", "output", (), None, None, description="model output (class logits)")
        )
    return first, last


def _has_path(model: nn.Module, path: str) -> bool:
    try:
        model.get_submodule(path)
    except AttributeError:
        return False
    return True


def _vit_like(model: nn.Module, family: str) -> list[Target]:
    n_prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
    if family == "convit":  # the CLS token is concatenated before block local_up_to_layer
        local_up_to = int(getattr(model, "local_up_to_layer", 0) or 0)
        has_cls = getattr(model, "cls_token", None) is not None
        prefixes = [(1 if has_cls and i >= local_up_to else 0) for i in range(len(model.blocks))]
    else:
        prefixes = [n_prefix] * len(model.blocks)
    first, last = _model_level(model, "patch_embed", "norm", prefixes[-1] if prefixes else n_prefix)
    targets = list(first)
    for i, blk in enumerate(model.blocks):
        targets += _transformer_block_targets(f"blocks.{i}", f"blocks.{i}", blk, prefixes[i])
    return targets + last


def _stages(
    model: nn.Module, family: str
) -> list[tuple[str | None, list[tuple[str, nn.Module]], str | None]]:
    """Per stage: (stage module path or None, [(block path, block)], stage-output path)."""
    stages: list[tuple[str | None, list[tuple[str, nn.Module]], str | None]] = []
    if family == "pit":
        for s, st in enumerate(model.transformers):
            stages.append(
                (
                    f"transformers.{s}",
                    [(f"transformers.{s}.blocks.{j}", b) for j, b in enumerate(st.blocks)],
                    f"transformers.{s}",
                )
            )
    elif family == "swin":
        for s, st in enumerate(model.layers):
            stages.append(
                (
                    f"layers.{s}",
                    [(f"layers.{s}.blocks.{j}", b) for j, b in enumerate(st.blocks)],
                    f"layers.{s}",
                )
            )
    elif family == "twins":
        for s, blocks in enumerate(model.blocks):
            blks = [(f"blocks.{s}.{j}", b) for j, b in enumerate(blocks)]
            # the PEG (pos_block) runs after block 0, so a 1-block stage ends with it
            end = (
                f"pos_block.{s}"
                if len(blks) == 1 and s < len(model.pos_block)
                else (blks[-1][0] if blks else None)
            )
            stages.append((None, blks, end))
    elif family == "coat":
        for k in range(1, 5):
            blocks = getattr(model, f"serial_blocks{k}", None)
            if blocks is None:
                break
            blks = [(f"serial_blocks{k}.{j}", b) for j, b in enumerate(blocks)]
            stages.append((None, blks, blks[-1][0] if blks else None))
    elif family == "efficientnet":
        for s, st in enumerate(model.blocks):
            stages.append((f"blocks.{s}", [(f"blocks.{s}.{j}", b) for j, b in enumerate(st)], f"blocks.{s}"))
    elif family == "resnet":
        for s in range(4):
            layer = getattr(model, f"layer{s + 1}", None)
            if layer is None:
                break
            stages.append(
                (f"layer{s + 1}", [(f"layer{s + 1}.{j}", b) for j, b in enumerate(layer)], f"layer{s + 1}")
            )
    elif family == "convnext":
        for s, st in enumerate(model.stages):
            stages.append(
                (
                    f"stages.{s}",
                    [(f"stages.{s}.blocks.{j}", b) for j, b in enumerate(st.blocks)],
                    f"stages.{s}",
                )
            )
    return stages


_EMBED_FINAL: dict[str, tuple[str | None, str | None, str]] = {
    "pit": ("patch_embed", None, "patch embedding output (NCHW)"),
    "swin": ("patch_embed", "norm", "patch embedding output (NHWC)"),
    "twins": ("patch_embeds.0", "norm", "stage-0 patch embedding output"),
    "coat": ("patch_embed1", "norm4", "stage-0 patch embedding output (no CLS yet)"),
    "efficientnet": ("bn1", "bn2", "stem output (conv_stem + bn1 + act)"),
    "resnet": ("maxpool", "layer4", "stem output (after maxpool)"),
    "convnext": ("stem", None, "stem output"),
}


def _hierarchical(model: nn.Module, family: str) -> list[Target]:
    embed, final, desc = _EMBED_FINAL[family]
    if family == "resnet" and not isinstance(getattr(model, "maxpool", None), nn.Module):
        embed = "act1"
    cnn = family in ("efficientnet", "resnet", "convnext")
    if family == "pit":
        prefix: int | None = (
            int(model.cls_token.shape[1]) if getattr(model, "cls_token", None) is not None else 0
        )
    elif family == "coat":
        prefix = 1
    elif cnn:
        prefix = None
    else:
        prefix = 0
    first, last = _model_level(model, embed, final, prefix, desc)
    targets = list(first)
    for s, (_, blocks, end) in enumerate(_stages(model, family)):
        for j, (bpath, blk) in enumerate(blocks):
            name = f"stages.{s}.blocks.{j}"
            if cnn:
                targets.append(Target(name, bpath, "output", (), None, None, description="block output"))
            else:
                targets += _transformer_block_targets(name, bpath, blk, prefix, swin=family == "swin")
        if end is not None:
            # stage outputs: tokens (CoaT with its CLS, Twins), NHWC (Swin) or NCHW (PiT, CNNs)
            stage_prefix = prefix if family in ("coat", "twins", "swin") else None
            targets.append(
                Target(f"stages.{s}", end, "output", (), None, stage_prefix, description="stage output")
            )
    return targets + last


def _from_feature_info(model: nn.Module) -> list[Target]:
    """Stage (``stages.{k}``), block (``stages.{k}.blocks.{j}``) and FFN-output names for
    hierarchical models named from timm's ``feature_info`` (LeViT, MaxViT, EfficientFormer,
    MobileViT, ...). Each carries the stage's channel count, so its layout is proven from the
    shape (or resolving it is an error), never guessed."""
    first, last = _model_level(model, "stem", None, None, "stem output")
    targets = list(first)
    for path, chs in _feature_stages(model):
        stage = model.get_submodule(path)
        blocks = getattr(stage, "blocks", stage)
        sub = "blocks." if blocks is not stage else ""
        if isinstance(blocks, (nn.Sequential, nn.ModuleList)):
            for j, blk in enumerate(blocks):
                bpath, name = f"{path}.{sub}{j}", f"{path}.blocks.{j}"
                targets.append(
                    Target(name, bpath, "output", (), None, None, description="block output", channels=chs)
                )
                if isinstance(getattr(blk, "mlp", None), nn.Module):
                    targets.append(
                        Target(
                            f"{name}.mlp.hook_out",
                            f"{bpath}.mlp",
                            "output",
                            (),
                            None,
                            None,
                            description="FFN output",
                            channels=chs,
                        )
                    )
        targets.append(Target(path, path, "output", (), None, None, description="stage output", channels=chs))
    return targets + last


def build_targets(model: nn.Module) -> tuple[str, list[Target]]:
    """(family, canonical targets in forward order) for a timm model."""
    family = detect_family(model)
    if family in ("vit", "convit"):
        return family, _vit_like(model, family)
    if family in _EMBED_FINAL:
        return family, _hierarchical(model, family)
    if _feature_stages(model):
        return family, _from_feature_info(model)
    first, last = _model_level(model, None, None)
    return family, first + last
