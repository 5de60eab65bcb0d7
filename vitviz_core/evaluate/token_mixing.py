"""Last-layer token mixing (paper Sec. 4, Table 1, Fig. 7) for timm ``VisionTransformer``.

Three probes of where a ViT's classification information lives, all run block by block
(``patch_embed -> _pos_embed -> patch_drop -> norm_pre -> blocks -> norm -> forward_head``)
without patching timm:

- **Isolating CLS** (join layer ``L``): in blocks ``[0, L)`` the CLS token runs alone
  (attending only to itself) and the other tokens run alone without it; from block ``L``
  on they run together. ``L = 0`` is the normal forward pass (bit-for-bit),
  ``L = depth`` means CLS never sees a patch. The paper's "CLS joins only at layer 11" of
  a 12-block ViT is ``L = 11``.
- **Classifier head on every patch token** after the final norm: per-patch logits, a
  per-position accuracy map (Fig. 7), its mean, the best position, and the head applied to
  the average patch token (what the paper's released code reports as "average"; for a linear
  head it equals averaging the per-patch logits).
- **Dropping patches** (extension) after block ``L``: blocks ``[0, L)`` run normally, then
  only CLS continues through blocks ``[L, depth)``; ``L = depth`` is the normal pass.

One dataset pass computes all three. The patch stream of "isolating CLS" does not depend on
``L``, so a full sweep costs about ``1 + (depth + 1) / 2`` normal forward passes, not
``depth + 1``.

Headless backbones (DINOv2) need a head first: pass ``head=`` / ``token_head=`` (e.g. a
:class:`~vitviz_core.evaluate.probe.LinearProbe` fitted with ``features="cls"``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from vitviz_core.errors import HookError, VitvizError
from vitviz_core.evaluate.records import ResultRecord, jsonable
from vitviz_core.evaluate.stats import Estimate, accuracy_with_ci, bootstrap_ci

__all__ = ["check_vit", "embed_tokens", "default_head", "default_token_head",
           "isolated_cls_logits", "drop_patches_logits", "patch_head_logits",
           "token_mixing_batch", "TokenMixingResult", "token_mixing_experiment"]

TokenHead = Callable[[Tensor], Tensor]


def check_vit(model: Any) -> nn.Module:
    """The timm VisionTransformer inside ``model``; a clear error for anything else."""
    module = getattr(model, "model", model)
    needed = ("patch_embed", "_pos_embed", "blocks", "norm", "forward_head")
    missing = [a for a in needed if not hasattr(module, a)]
    if missing:
        raise VitvizError(f"token mixing needs a timm VisionTransformer (with {', '.join(needed)}); "
                          f"{type(module).__name__} lacks {', '.join(missing)}")
    if getattr(module, "cls_token", None) is None:
        raise VitvizError(f"{type(module).__name__} has no CLS token: token-mixing experiments "
                          "need a class-token ViT")
    return module


def embed_tokens(module: nn.Module, x: Tensor) -> Tensor:
    """Tokens entering block 0: ``(B, 3, H, W)`` model input -> ``(B, L, C)``, CLS at index 0."""
    t = module.patch_embed(x)
    t = module._pos_embed(t)
    t = module.patch_drop(t)
    return module.norm_pre(t)  # (B, L, C)


def default_head(module: nn.Module) -> TokenHead:
    """``tokens (B, L, C) after blocks -> logits (B, K)``: the model's final norm + head."""
    def head(tokens: Tensor) -> Tensor:
        return module.forward_head(module.norm(tokens))
    return head


def default_token_head(module: nn.Module) -> TokenHead:
    """``normed tokens (B, N, C) -> logits (B, N, K)``: the head applied to every token."""
    if getattr(module, "num_classes", 1) == 0 or isinstance(module.head, nn.Identity):
        raise VitvizError("this backbone has no classifier head: fit one with "
                          "evaluate.probe.fit_linear_probe and pass token_head=probe.token_head")

    def token_head(tokens: Tensor) -> Tensor:
        return module.head(module.fc_norm(tokens))
    return token_head


def _check_layers(layers: Sequence[int] | None, depth: int, what: str) -> list[int]:
    if layers is None:
        return list(range(depth + 1))
    out = sorted({int(v) for v in layers})
    bad = [v for v in out if not 0 <= v <= depth]
    if bad:
        raise HookError(f"{what} {bad} out of range: this model has {depth} blocks, use 0..{depth}")
    return out


def token_mixing_batch(
    model: Any,
    x: Tensor,
    join_layers: Sequence[int] | None = None,
    drop_layers: Sequence[int] | None = (),
    patch_head: bool = False,
    head: TokenHead | None = None,
    token_head: TokenHead | None = None,
) -> dict[str, Any]:
    """All token-mixing logits of one batch.

    Args:
        x: ``(B, 3, H, W)`` normalised model input.
        join_layers: CLS join layers ``L`` to evaluate (None = ``0..depth``; ``()`` = none).
        drop_layers: layers after which patches are dropped (None = ``0..depth``).
        patch_head: also return per-patch logits of the normal pass.
        head: ``tokens (B, L, C) after the blocks -> logits (B, K)`` (default: norm + forward_head).
        token_head: ``final-normed tokens (B, N, C) -> (B, N, K)`` (default: fc_norm + head).
    Returns:
        ``{"natural": (B, K), "isolate": {L: (B, K)}, "drop": {L: (B, K)},
        "patch": (B, N, K) | None, "patch_pooled": (B, K) | None}``.
    """
    module = check_vit(model)
    depth = len(module.blocks)
    joins = _check_layers(join_layers, depth, "join layer")
    drops = _check_layers(drop_layers, depth, "drop layer")
    head = head or default_head(module)
    blocks = list(module.blocks)
    npre = int(getattr(module, "num_prefix_tokens", 1))
    out: dict[str, Any] = {"isolate": {}, "drop": {}, "patch": None, "patch_pooled": None}

    t = embed_tokens(module, x)      # (B, L, C)
    cls, rest = t[:, :1], t[:, 1:]   # (B, 1, C), (B, L-1, C): the two isolated streams
    z = t                            # the normal stream
    iso_max = max((v for v in joins if v > 0), default=0)
    for layer in range(depth + 1):
        if layer in drops:
            c = z[:, :1]                          # (B, 1, C): only CLS continues
            for blk in blocks[layer:]:
                c = blk(c)
            out["drop"][layer] = head(c)
        if layer in joins and layer > 0:
            j = torch.cat([cls, rest], dim=1)     # (B, L, C): CLS joins at block `layer`
            for blk in blocks[layer:]:
                j = blk(j)
            out["isolate"][layer] = head(j)
        if layer < depth:
            z = blocks[layer](z)
            if layer < iso_max:
                cls = blocks[layer](cls)
                rest = blocks[layer](rest)
    out["natural"] = head(z)
    if 0 in joins:
        out["isolate"][0] = out["natural"]        # joined from block 0 = the normal pass
    final = z
    if patch_head:
        token_head = token_head or default_token_head(module)
        patches = module.norm(final)[:, npre:]  # (B, N, C)
        out["patch"] = token_head(patches)  # (B, N, K)
        out["patch_pooled"] = token_head(patches.mean(dim=1, keepdim=True))[:, 0]  # (B, K)
    return out


def isolated_cls_logits(model: Any, x: Tensor, join_layers: Sequence[int] | None = None,
                        head: TokenHead | None = None) -> dict[int, Tensor]:
    """``{L: logits (B, K)}`` with CLS isolated from the patches in blocks ``[0, L)``."""
    return token_mixing_batch(model, x, join_layers, drop_layers=(), head=head)["isolate"]


def drop_patches_logits(model: Any, x: Tensor, drop_layers: Sequence[int] | None = None,
                        head: TokenHead | None = None) -> dict[int, Tensor]:
    """``{L: logits (B, K)}`` with every token but CLS dropped after block ``L - 1``."""
    return token_mixing_batch(model, x, join_layers=(), drop_layers=drop_layers, head=head)["drop"]


def patch_head_logits(model: Any, x: Tensor, token_head: TokenHead | None = None) -> Tensor:
    """Classifier head on every patch token after the final norm: ``(B, N, K)``."""
    return token_mixing_batch(model, x, join_layers=(), drop_layers=(), patch_head=True,
                              token_head=token_head)["patch"]


# ----------------------------------------------------------------------------- dataset level


@dataclass
class TokenMixingResult:
    """Table 1 analogue for one model (fractions; ``Estimate.percent()`` for display)."""

    depth: int
    natural: dict[int, Estimate] = field(default_factory=dict)                # k -> estimate
    isolate: dict[int, dict[int, Estimate]] = field(default_factory=dict)     # L -> k -> estimate
    drop: dict[int, dict[int, Estimate]] = field(default_factory=dict)        # L -> k -> estimate
    patch_mean: dict[int, Estimate] = field(default_factory=dict)             # k -> mean of the map
    patch_pooled: dict[int, Estimate] = field(default_factory=dict)           # k -> head(mean patch)
    patch_best: dict[int, Estimate] = field(default_factory=dict)             # k -> at best_position
    best_position: tuple[int, int] | None = None                              # (row, col) in the grid
    patch_map: dict[int, np.ndarray] = field(default_factory=dict)            # k -> (H, W) accuracy
    record: ResultRecord | None = None
    #: per-image top-k correctness for paired comparisons: "natural" / "isolate@L" / "drop@L"
    #: -> k -> (N,) bool (not part of ``to_dict``)
    correct: dict[str, dict[int, np.ndarray]] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return jsonable({
            "depth": self.depth, "natural": self.natural, "isolate": self.isolate, "drop": self.drop,
            "patch_mean": self.patch_mean, "patch_pooled": self.patch_pooled,
            "patch_best": self.patch_best,
            "best_position": self.best_position, "patch_map": self.patch_map,
            "record": self.record.to_dict() if self.record else None})


def _grid(module: nn.Module, n: int) -> tuple[int, int]:
    g = getattr(getattr(module, "patch_embed", None), "grid_size", None)
    if g is not None and int(g[0]) * int(g[1]) == n:
        return int(g[0]), int(g[1])
    s = int(round(math.sqrt(n)))
    return (s, n // s) if s * (n // s) == n else (1, n)


def token_mixing_experiment(
    model: Any,
    dataset: Any = None,
    join_layers: Sequence[int] | None = None,
    drop_layers: Sequence[int] | None = None,
    patch_head: bool = True,
    head: TokenHead | None = None,
    token_head: TokenHead | None = None,
    data_name: str = "imagenet-val-1300",
    data_root: str | Path | None = None,
    max_images: int | None = None,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    progress: bool = True,
) -> TokenMixingResult:
    """Isolating-CLS sweep, patch-dropping sweep and per-patch head accuracy in one pass.

    ``dataset`` yields ``(x, label, index)`` with ``x`` the *normalised* model input; by
    default ``data_name`` through the model's ``eval_transform``. "Best patch" is the grid
    position with the highest top-1 over the dataset, chosen on the same images it is
    reported on (an optimistic selection, as in the paper).
    """
    from tqdm.auto import tqdm

    from vitviz_core.evaluate.common import make_loader, model_dataset, model_device, unpack_batch
    from vitviz_core.evaluate.stats import topk_correct

    module = check_vit(model)
    depth = len(module.blocks)
    joins = _check_layers(join_layers, depth, "join layer")
    drops = _check_layers(drop_layers, depth, "drop layer")
    if dataset is None:
        dataset = model_dataset(model, data_name, data_root, max_images)
    dev = torch.device(device) if device is not None else model_device(model)
    record = ResultRecord.start("token_mixing", model, dataset, {
        "join_layers": joins, "drop_layers": drops, "patch_head": patch_head,
        "head": "model head" if head is None else repr(head), "batch_size": batch_size,
        "n_boot": n_boot, "seed": seed})
    ks = (1, 5)
    acc: dict[str, dict[Any, dict[int, list[Tensor]]]] = {"natural": {}, "isolate": {}, "drop": {},
                                                          "pooled": {}}
    patch_hits: dict[int, list[Tensor]] = {1: [], 5: []}
    offset = 0
    loader = make_loader(dataset, batch_size)
    with torch.inference_mode():
        for batch in tqdm(loader, desc="token mixing", disable=not progress, leave=False):
            x, y, _, _ = unpack_batch(batch, offset)
            offset += x.shape[0]
            out = token_mixing_batch(module, x.to(dev), joins, drops, patch_head, head, token_head)
            for k, c in topk_correct(out["natural"].float(), y, ks).items():
                acc["natural"].setdefault(0, {}).setdefault(k, []).append(c.cpu())
            for kind in ("isolate", "drop"):
                for layer, logits in out[kind].items():
                    for k, c in topk_correct(logits.float(), y, ks).items():
                        acc[kind].setdefault(layer, {}).setdefault(k, []).append(c.cpu())
            if patch_head:
                for k, c in topk_correct(out["patch"].float(), y, ks).items():  # (B, N)
                    patch_hits[k].append(c.cpu())
                for k, c in topk_correct(out["patch_pooled"].float(), y, ks).items():
                    acc["pooled"].setdefault(0, {}).setdefault(k, []).append(c.cpu())
    if offset == 0:
        from vitviz_core.errors import DataError

        raise DataError("the dataset is empty: nothing to evaluate")
    ci = dict(n_boot=n_boot, seed=seed)
    cat = {kind: {layer: {k: torch.cat(v).numpy() for k, v in d.items()} for layer, d in per.items()}
           for kind, per in acc.items()}
    res = TokenMixingResult(depth=depth)
    res.natural = {k: accuracy_with_ci(cat["natural"][0][k], **ci) for k in ks}
    res.isolate = {layer: {k: accuracy_with_ci(v, **ci) for k, v in d.items()}
                   for layer, d in sorted(cat["isolate"].items())}
    res.drop = {layer: {k: accuracy_with_ci(v, **ci) for k, v in d.items()}
                for layer, d in sorted(cat["drop"].items())}
    res.correct = {"natural": cat["natural"][0]}
    res.correct.update({f"{kind}@{layer}": d for kind in ("isolate", "drop") for layer, d in cat[kind].items()})
    if patch_head:
        hits = {k: torch.cat(v).numpy().astype(np.float64) for k, v in patch_hits.items()}  # (N_img, N)
        n_tok = hits[1].shape[1]
        grid = _grid(module, n_tok)
        res.patch_mean = {k: bootstrap_ci(h.mean(axis=1), **ci) for k, h in hits.items()}
        res.patch_pooled = {k: accuracy_with_ci(cat["pooled"][0][k], **ci) for k in ks}
        per_pos = hits[1].mean(axis=0)  # (N,)
        best = int(per_pos.argmax())
        res.best_position = (best // grid[1], best % grid[1])
        res.patch_best = {k: accuracy_with_ci(h[:, best], **ci) for k, h in hits.items()}
        res.patch_map = {k: h.mean(axis=0).reshape(grid) for k, h in hits.items()}
    res.record = record.finish()
    return res
