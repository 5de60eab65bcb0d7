"""Last-layer token mixing (paper Sec. 4, Table 1, Fig. 7) for timm ``VisionTransformer``.

Three probes of where a ViT's classification information lives, all run as interventions
on the model's own forward pass (:class:`~vitviz_core.hooks.capture` with ``edit=``: the
attention mask ``blocks.{i}.attn.hook_mask`` cuts attention edges, ``blocks.{i}.hook_resid_pre``
branches variants off a shared prefix), so nothing here re-implements timm's forward:

- **Isolating CLS** (join layer ``L``): in blocks ``[0, L)`` the CLS token attends only to
  itself and the other tokens only to each other (the mask cuts CLS <-> patch attention,
  which equals running the two streams alone); from block ``L`` on they mix. ``L = 0`` is
  the normal forward pass, ``L = depth`` means CLS never sees a patch. The paper's "CLS
  joins only at layer 11" of a 12-block ViT is ``L = 11``.
- **Classifier head on every patch token** after the final norm: per-patch logits, a
  per-position accuracy map (Fig. 7), its mean, the best position, and the head applied to
  the average patch token (what the paper's released code reports as "average"; for a linear
  head it equals averaging the per-patch logits).
- **Dropping patches** (extension) after block ``L``: blocks ``[0, L)`` run normally, then
  only CLS continues through blocks ``[L, depth)``; ``L = depth`` is the normal pass.

One forward pass computes all three: the isolated ("masked") rows share their prefix, and at
each join layer ``L`` a copy of them branches off and runs unmasked from there, so a full
sweep costs about ``1 + (depth + 1) / 2`` normal passes, not ``depth + 1``. A dropped-patch
variant rides along as one extra token that attends only to itself.

Headless backbones (DINOv2) need a head first: pass ``head=`` / ``token_head=`` (e.g. a
:class:`~vitviz_core.evaluate.probe.LinearProbe` fitted with ``features="cls"``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from vitviz_core.errors import HookError, VitvizError
from vitviz_core.evaluate.records import ResultRecord, jsonable
from vitviz_core.evaluate.stats import Estimate, accuracy_with_ci, bootstrap_ci

__all__ = [
    "check_vit",
    "default_head",
    "default_token_head",
    "cls_isolation_mask",
    "prefix_masked_logits",
    "isolated_cls_logits",
    "drop_patches_logits",
    "patch_head_logits",
    "token_mixing_batch",
    "TokenMixingResult",
    "token_mixing_experiment",
]

TokenHead = Callable[[Tensor], Tensor]
#: ``n_tokens -> (L, L)`` boolean attention mask (True = may attend)
MaskFn = Callable[[int], Tensor]
#: rows of one forward pass (images x variants) before the batch is split in micro-batches
MAX_ROWS = 256


def check_vit(model: Any) -> nn.Module:
    """The timm VisionTransformer of ``model`` (LoadedModel or module); a clear error for
    anything else."""
    from vitviz_core.models import as_loaded

    module = as_loaded(model).model
    needed = ("blocks", "norm", "forward_head")
    missing = [a for a in needed if not hasattr(module, a)]
    if missing:
        raise VitvizError(
            f"token mixing needs a timm VisionTransformer (with {', '.join(needed)}); "
            f"{type(module).__name__} lacks {', '.join(missing)}"
        )
    if getattr(module, "cls_token", None) is None:
        raise VitvizError(
            f"{type(module).__name__} has no CLS token: token-mixing experiments need a class-token ViT"
        )
    return module


def default_head(module: nn.Module) -> TokenHead:
    """``tokens (B, L, C) after blocks -> logits (B, K)``: the model's final norm + head."""

    def head(tokens: Tensor) -> Tensor:
        return module.forward_head(module.norm(tokens))

    return head


def default_token_head(module: nn.Module) -> TokenHead:
    """``normed tokens (B, N, C) -> logits (B, N, K)``: the head applied to every token."""
    if getattr(module, "num_classes", 1) == 0 or isinstance(module.head, nn.Identity):
        raise VitvizError(
            "this backbone has no classifier head: fit one with "
            "evaluate.probe.fit_linear_probe and pass token_head=probe.token_head"
        )

    def token_head(tokens: Tensor) -> Tensor:
        return module.head(module.fc_norm(tokens))

    return token_head


def cls_isolation_mask(n_tokens: int) -> Tensor:
    """``(L, L)`` boolean mask: CLS (token 0) and the other tokens cannot see each other."""
    mask = torch.zeros(n_tokens, n_tokens, dtype=torch.bool)
    mask[0, 0] = True
    mask[1:, 1:] = True
    return mask


def _check_layers(layers: Sequence[int] | None, depth: int, what: str) -> list[int]:
    if layers is None:
        return list(range(depth + 1))
    out = sorted({int(v) for v in layers})
    bad = [v for v in out if not 0 <= v <= depth]
    if bad:
        raise HookError(f"{what} {bad} out of range: this model has {depth} blocks, use 0..{depth}")
    return out


class _Branches:
    """Bookkeeping of one branching forward pass: which chunk of ``B`` rows is which variant,
    which extra (dropped-patch) tokens exist, and the edits that make it so."""

    def __init__(
        self, groups: Mapping[str, tuple[MaskFn, list[int]]], drops: list[int], depth: int, batch: int
    ) -> None:
        self.groups = {g: (fn, ls) for g, (fn, ls) in groups.items() if any(v > 0 for v in ls)}
        self.drops = [v for v in drops if v < depth]
        self.depth = depth
        self.batch = batch
        self.chunks: list[tuple[str, str | None, int | None]] = [("natural", None, None)]
        self.chunks += [("trunk", g, None) for g in self.groups]
        self.extra: list[int] = []  # drop layer of each extra token, in token order
        self.n_tokens = 0  # tokens of the unmodified sequence
        self._masks: dict[Any, Tensor | None] = {}

    def edits(self) -> dict[str, Callable]:
        out: dict[str, Callable] = {}
        branch_at = sorted(
            {v for _, ls in self.groups.values() for v in ls if 0 < v < self.depth}
            | set(self.drops)
            | ({0} if self.groups else set())
        )
        for layer in branch_at:
            out[f"blocks.{layer}.hook_resid_pre"] = self._make_branch(layer)
        if self.groups or self.drops:
            for i in range(self.depth):
                out[f"blocks.{i}.attn.hook_mask"] = self._mask
        return out

    def _make_branch(self, layer: int) -> Callable:
        def branch(x: Tensor, spec: Any) -> Tensor:  # x: (rows, L, C)
            if not self.n_tokens:
                self.n_tokens = x.shape[1]
            if layer == 0 and self.groups:  # the masked trunks start as copies of the input
                x = torch.cat([x] * len(self.chunks))  # (chunks * B, L, C)
            if layer in self.drops:  # CLS continues alone from here, as one extra token
                x = torch.cat([x, x[:, :1]], dim=1)  # (rows, L + 1, C)
                self.extra.append(layer)
            copies = []
            for i, (kind, g, _) in enumerate(list(self.chunks)):
                if kind != "trunk" or layer not in self.groups[g][1]:
                    continue
                if layer == max(self.groups[g][1]):  # the last join: the trunk itself joins
                    self.chunks[i] = ("joined", g, layer)
                else:
                    copies.append(x[i * self.batch : (i + 1) * self.batch])
                    self.chunks.append(("joined", g, layer))
            return torch.cat([x, *copies]) if copies else x  # (rows', L', C)

        return branch

    def _mask(self, mask: Tensor, spec: Any) -> Tensor:  # mask: (rows, 1, L', L') all True
        n = self.n_tokens or mask.shape[-1]
        key = (tuple(self.chunks), len(self.extra), n)
        if key not in self._masks:
            self._masks[key] = self._build(n, mask.device)
        built = self._masks[key]
        return mask if built is None else built

    def _build(self, n: int, device: torch.device) -> Tensor | None:
        trunks = [g for kind, g, _ in self.chunks if kind == "trunk"]
        if not trunks and not self.extra:
            return None
        total = n + len(self.extra)
        base = torch.ones(total, total, dtype=torch.bool, device=device)
        if self.extra:  # extra tokens see only themselves; nothing sees them
            base[:, n:] = False
            base[n:, :] = False
            idx = torch.arange(n, total, device=device)
            base[idx, idx] = True
        per_chunk = []
        for kind, g, _ in self.chunks:
            m = base
            if kind == "trunk":
                m = base.clone()
                m[:n, :n] &= self.groups[g][0](n).to(device)
            per_chunk.append(m)
        stacked = torch.stack(per_chunk)  # (chunks, L', L')
        return stacked.repeat_interleave(self.batch, dim=0)[:, None]  # (rows, 1, L', L')


def prefix_masked_logits(
    model: Any,
    x: Tensor,
    groups: Mapping[str, tuple[MaskFn, Sequence[int]]],
    drop_layers: Sequence[int] = (),
    head: TokenHead | None = None,
    patch_head: bool = False,
    token_head: TokenHead | None = None,
    max_rows: int = MAX_ROWS,
) -> dict[str, Any]:
    """Logits of attention-masked variants, all in one branching forward pass.

    Args:
        x: ``(B, 3, H, W)`` normalised model input.
        groups: ``{name: (mask_fn, layers)}``: variant ``(name, L)`` applies ``mask_fn(L_tokens)``
            (``(L, L)`` boolean, True = may attend) in blocks ``[0, L)`` and runs unmasked from
            block ``L`` on (``L = 0`` is the normal pass).
        drop_layers: ``L`` at which every token but CLS is dropped (``L = depth``: the normal pass).
        head: ``tokens (B, L, C) after the blocks -> logits (B, K)`` (default: norm + forward_head).
        patch_head: also return per-patch logits of the normal pass.
        token_head: ``final-normed tokens (B, N, C) -> (B, N, K)`` (default: fc_norm + head).
        max_rows: images x variants per forward pass (the batch is split to stay below).
    Returns:
        ``{"natural": (B, K), "groups": {name: {L: (B, K)}}, "drop": {L: (B, K)},
        "patch": (B, N, K) | None, "patch_pooled": (B, K) | None}``.
    """
    from vitviz_core.hooks import capture

    module = check_vit(model)
    depth = len(module.blocks)
    layers = {g: _check_layers(ls, depth, f"{g} layer") for g, (_, ls) in groups.items()}
    masks = {g: fn for g, (fn, _) in groups.items()}
    drops = _check_layers(drop_layers, depth, "drop layer")
    head = head or default_head(module)
    n_chunks = 1 + sum(1 for ls in layers.values() for v in ls if v > 0)
    step = max(1, max_rows // n_chunks)
    if x.shape[0] > step:
        parts = [
            prefix_masked_logits(
                module, x[i : i + step], groups, drop_layers, head, patch_head, token_head, max_rows
            )
            for i in range(0, x.shape[0], step)
        ]
        return _cat_outputs(parts)
    b = x.shape[0]
    br = _Branches({g: (masks[g], layers[g]) for g in groups}, drops, depth, b)
    last = f"blocks.{depth - 1}"
    with capture(module, [last], stop_early=True, edit=br.edits()) as cap:
        cap.forward(x)
    tokens = cap.activations[last]  # (rows, L + extras, C)
    n = br.n_tokens or tokens.shape[1]
    chunk = {(g, layer): tokens[i * b : (i + 1) * b, :n] for i, (_, g, layer) in enumerate(br.chunks)}
    natural = tokens[:b, :n]  # (B, L, C)
    out: dict[str, Any] = {
        "natural": head(natural),
        "groups": {},
        "drop": {},
        "patch": None,
        "patch_pooled": None,
    }
    for g, ls in layers.items():
        res = out["groups"][g] = {}
        for layer in ls:
            if layer == 0:
                res[0] = out["natural"]
            else:  # a trunk that never reached its last join ran masked to the end (L = depth)
                t = chunk.get((g, layer), chunk.get((g, None)))
                res[layer] = head(t)
    for layer in drops:
        if layer == depth:
            out["drop"][layer] = head(natural[:, :1])
        else:
            pos = n + br.extra.index(layer)
            out["drop"][layer] = head(tokens[:b, pos : pos + 1])  # CLS alone from block `layer`
    if patch_head:
        token_head = token_head or default_token_head(module)
        npre = int(getattr(module, "num_prefix_tokens", 1))
        patches = module.norm(natural)[:, npre:]  # (B, N, C)
        out["patch"] = token_head(patches)  # (B, N, K)
        out["patch_pooled"] = token_head(patches.mean(dim=1, keepdim=True))[:, 0]  # (B, K)
    return out


def _cat_outputs(parts: list[dict[str, Any]]) -> dict[str, Any]:
    def cat(vals: list[Any]) -> Any:
        if isinstance(vals[0], dict):
            return {k: cat([v[k] for v in vals]) for k in vals[0]}
        return None if vals[0] is None else torch.cat(vals)

    return {k: cat([p[k] for p in parts]) for k in parts[0]}


def token_mixing_batch(
    model: Any,
    x: Tensor,
    join_layers: Sequence[int] | None = None,
    drop_layers: Sequence[int] | None = (),
    patch_head: bool = False,
    head: TokenHead | None = None,
    token_head: TokenHead | None = None,
) -> dict[str, Any]:
    """All token-mixing logits of one batch (one branching forward pass).

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
    depth = len(check_vit(model).blocks)
    joins = _check_layers(join_layers, depth, "join layer")
    drops = _check_layers(drop_layers, depth, "drop layer")
    out = prefix_masked_logits(
        model, x, {"isolate": (cls_isolation_mask, joins)}, drops, head, patch_head, token_head
    )
    out["isolate"] = out.pop("groups")["isolate"]
    return out


def isolated_cls_logits(
    model: Any, x: Tensor, join_layers: Sequence[int] | None = None, head: TokenHead | None = None
) -> dict[int, Tensor]:
    """``{L: logits (B, K)}`` with CLS isolated from the patches in blocks ``[0, L)``."""
    return token_mixing_batch(model, x, join_layers, drop_layers=(), head=head)["isolate"]


def drop_patches_logits(
    model: Any, x: Tensor, drop_layers: Sequence[int] | None = None, head: TokenHead | None = None
) -> dict[int, Tensor]:
    """``{L: logits (B, K)}`` with every token but CLS dropped after block ``L - 1``."""
    return token_mixing_batch(model, x, join_layers=(), drop_layers=drop_layers, head=head)["drop"]


def patch_head_logits(model: Any, x: Tensor, token_head: TokenHead | None = None) -> Tensor:
    """Classifier head on every patch token after the final norm: ``(B, N, K)``."""
    return token_mixing_batch(
        model, x, join_layers=(), drop_layers=(), patch_head=True, token_head=token_head
    )["patch"]


# ----------------------------------------------------------------------------- dataset level


@dataclass
class TokenMixingResult:
    """Table 1 analogue for one model (fractions; ``Estimate.percent()`` for display)."""

    depth: int
    natural: dict[int, Estimate] = field(default_factory=dict)  # k -> estimate
    isolate: dict[int, dict[int, Estimate]] = field(default_factory=dict)  # L -> k -> estimate
    drop: dict[int, dict[int, Estimate]] = field(default_factory=dict)  # L -> k -> estimate
    patch_mean: dict[int, Estimate] = field(default_factory=dict)  # k -> mean of the map
    patch_pooled: dict[int, Estimate] = field(default_factory=dict)  # k -> head(mean patch)
    patch_best: dict[int, Estimate] = field(default_factory=dict)  # k -> at best_position
    best_position: tuple[int, int] | None = None  # (row, col) in the grid
    patch_map: dict[int, np.ndarray] = field(default_factory=dict)  # k -> (H, W) accuracy
    record: ResultRecord | None = None
    #: per-image top-k correctness for paired comparisons: "natural" / "isolate@L" / "drop@L"
    #: -> k -> (N,) bool (not part of ``to_dict``)
    correct: dict[str, dict[int, np.ndarray]] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return jsonable(
            {
                "depth": self.depth,
                "natural": self.natural,
                "isolate": self.isolate,
                "drop": self.drop,
                "patch_mean": self.patch_mean,
                "patch_pooled": self.patch_pooled,
                "patch_best": self.patch_best,
                "best_position": self.best_position,
                "patch_map": self.patch_map,
                "record": self.record.to_dict() if self.record else None,
            }
        )


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
    record = ResultRecord.start(
        "token_mixing",
        model,
        dataset,
        {
            "join_layers": joins,
            "drop_layers": drops,
            "patch_head": patch_head,
            "head": "model head" if head is None else repr(head),
            "batch_size": batch_size,
            "n_boot": n_boot,
            "seed": seed,
        },
    )
    ks = (1, 5)
    acc: dict[str, dict[Any, dict[int, list[Tensor]]]] = {
        "natural": {},
        "isolate": {},
        "drop": {},
        "pooled": {},
    }
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
    cat = {
        kind: {layer: {k: torch.cat(v).numpy() for k, v in d.items()} for layer, d in per.items()}
        for kind, per in acc.items()
    }
    res = TokenMixingResult(depth=depth)
    res.natural = {k: accuracy_with_ci(cat["natural"][0][k], **ci) for k in ks}
    res.isolate = {
        layer: {k: accuracy_with_ci(v, **ci) for k, v in d.items()}
        for layer, d in sorted(cat["isolate"].items())
    }
    res.drop = {
        layer: {k: accuracy_with_ci(v, **ci) for k, v in d.items()}
        for layer, d in sorted(cat["drop"].items())
    }
    res.correct = {"natural": cat["natural"][0]}
    res.correct.update(
        {f"{kind}@{layer}": d for kind in ("isolate", "drop") for layer, d in cat[kind].items()}
    )
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
