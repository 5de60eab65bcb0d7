"""View propagation: carrying level-0 views to higher layers through attention.

Nguyen et al. (2022) follow what a token "sees" at layer l by mixing the level-0 views of
the tokens it attends to. We use attention rollout (Abnar & Zuidema 2020): per layer, the
attention map averaged over heads (or max/min), mixed with the identity for the residual
stream, rows renormalized::

    A_l = (1 - alpha) * mean_h(attn_l) + alpha * I,   A_l /= A_l.sum(-1)
    R_l = A_l @ R_{l-1},   R_0 = I

Row ``i`` of ``R_l`` says how much token ``i`` after block ``l`` aggregates from each input
token. Level-0 views exist for patch tokens only (prefix tokens such as CLS are learned
vectors, no image region), so propagating drops the prefix columns; their share is kept as
``prefix_share`` and the rest may be renormalized.

Everything here is a pure tensor function except :func:`capture_attention`, which runs a
model once with ``blocks.{i}.attn.hook_pattern`` hooks.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from vitviz_core.errors import HookError, VitvizError
from vitviz_core.models import as_loaded

__all__ = [
    "capture_attention",
    "fuse_heads",
    "rollout",
    "patch_rollout",
    "propagate_tokens",
    "propagate_views",
    "token_view_maps",
    "aggregation_maps",
    "mean_aggregation_distance",
]


def capture_attention(model: Any, x: Tensor, layers: Sequence[int] | None = None) -> list[Tensor]:
    """Attention maps ``[(B, heads, L, L)]`` of the given blocks (default: all), in order.

    Args:
        model: LoadedModel or timm ViT; ``x`` must already be in its input space.
    """
    from vitviz_core import hooks

    module = as_loaded(model).model
    n_blocks = len(getattr(module, "blocks", []))
    if n_blocks == 0:
        raise HookError(f"{type(module).__name__} has no `blocks`: attention capture needs a timm ViT")
    idx = list(range(n_blocks)) if layers is None else [_layer_index(int(i), n_blocks) for i in layers]
    names = [f"blocks.{i}.attn.hook_pattern" for i in idx]
    with torch.inference_mode(), hooks.capture(module, names) as cap:
        cap.forward(x)
        return [cap.activations[n] for n in names]


def _layer_index(i: int, n: int) -> int:
    if not -n <= i < n:
        raise HookError(f"layer {i} out of range: the model has {n} blocks (0..{n - 1})")
    return i % n


def fuse_heads(attn: Tensor, head_fusion: str = "mean") -> Tensor:
    """``(B, heads, L, L)`` -> ``(B, L, L)`` by ``"mean"``, ``"max"`` or ``"min"`` over heads."""
    if attn.dim() != 4:
        raise VitvizError(f"expected attention (B, heads, L, L), got shape {tuple(attn.shape)}")
    if head_fusion == "mean":
        return attn.mean(1)
    if head_fusion == "max":
        return attn.amax(1)
    if head_fusion == "min":
        return attn.amin(1)
    raise VitvizError(f"unknown head_fusion {head_fusion!r}: use 'mean', 'max' or 'min'")


def rollout(
    attentions: Sequence[Tensor],
    residual_weight: float = 0.5,
    head_fusion: str = "mean",
) -> list[Tensor]:
    """Cumulative attention rollout after every block.

    Args:
        attentions: per-block attention, each ``(B, heads, L, L)`` (rows sum to 1).
        residual_weight: ``alpha``, the identity's weight for the residual stream
            (0.5 = "attention + identity, renormalized").
    Returns:
        ``[R_1, ..., R_n]``, each ``(B, L, L)``; ``R_l[b, i, j]`` = share of input token j in
        token i after block l. Rows sum to 1.
    """
    if not attentions:
        raise VitvizError("rollout needs at least one attention map")
    if not 0.0 <= residual_weight <= 1.0:
        raise VitvizError(f"residual_weight must lie in [0, 1], got {residual_weight}")
    out: list[Tensor] = []
    r: Tensor | None = None
    for attn in attentions:
        a = fuse_heads(attn.float(), head_fusion)  # (B, L, L)
        eye = torch.eye(a.shape[-1], device=a.device, dtype=a.dtype)
        a = (1.0 - residual_weight) * a + residual_weight * eye
        a = a / a.sum(-1, keepdim=True).clamp_min(1e-12)
        r = a if r is None else a @ r  # (B, L, L)
        out.append(r)
    return out


def patch_rollout(r: Tensor, num_prefix_tokens: int = 1, renormalize: bool = True) -> tuple[Tensor, Tensor]:
    """Split a rollout ``(B, L, L)`` into patch-from-patch weights and the prefix share.

    Returns:
        ``(W (B, L, P), prefix_share (B, L))``: ``W[b, i, j]`` weight of input patch j in
        token i (rows renormalized to 1 over patches when ``renormalize``), and the share
        of token i that came from prefix tokens (CLS...).
    """
    npf = int(num_prefix_tokens)
    w = r[..., npf:]  # (B, L, P)
    prefix = r[..., :npf].sum(-1)  # (B, L)
    if renormalize:
        w = w / w.sum(-1, keepdim=True).clamp_min(1e-12)
    return w, prefix


def propagate_tokens(values: Tensor, weights: Tensor) -> Tensor:
    """Mix per-patch values with patch weights: ``out[b, i] = sum_j weights[b, i, j] values[b, j]``.

    Args:
        values: ``(B, P, *F)`` (views ``(B, P, 3, p, p)``, responses ``(B, P, C)``...).
        weights: ``(B, L, P)`` (from :func:`patch_rollout`) or ``(L, P)``.
    Returns:
        ``(B, L, *F)``.
    """
    if weights.dim() == 2:
        weights = weights.unsqueeze(0).expand(values.shape[0], -1, -1)
    b, p = values.shape[:2]
    if weights.shape[0] != b or weights.shape[-1] != p:
        raise VitvizError(
            f"weights {tuple(weights.shape)} do not match values {tuple(values.shape)} "
            "(need (B, L, P) with the same B and P)"
        )
    flat = values.reshape(b, p, -1).to(weights.dtype)  # (B, P, F)
    return (weights @ flat).reshape(b, weights.shape[1], *values.shape[2:])


def propagate_views(
    views: Tensor, rollouts: Sequence[Tensor], num_prefix_tokens: int = 1, renormalize: bool = True
) -> list[Tensor]:
    """Level-0 views carried to every layer: ``[(B, L, *F)]`` per rollout.

    With identity attention every rollout is the identity and patch tokens keep exactly
    their own view (prefix tokens get a zero view when ``renormalize`` is False).
    """
    return [propagate_tokens(views, patch_rollout(r, num_prefix_tokens, renormalize)[0]) for r in rollouts]


def token_view_maps(
    views: Tensor,
    rollouts: Sequence[Tensor],
    token: int,
    grid: tuple[int, int],
    num_prefix_tokens: int = 1,
    renormalize: bool = True,
) -> Tensor:
    """What one token aggregates, per layer, as an image: every patch's level-0 view placed
    at its own position and weighted by the token's rollout weight on it.

    Args:
        views: ``(B, P, 3, p, p)`` level-0 views of one neuron (:func:`level0_views`).
        token: token index in the full sequence (0 = CLS for a ViT with one prefix token;
            patch k is ``num_prefix_tokens + k``).
    Returns:
        ``(n_layers, B, 3, H, W)``.
    """
    from vitviz_core.neurons.level0 import stitch_patches

    maps = []
    for r in rollouts:
        w, _ = patch_rollout(r, num_prefix_tokens, renormalize)  # (B, L, P)
        if not -w.shape[1] <= token < w.shape[1]:
            raise HookError(f"token {token} out of range: the sequence has {w.shape[1]} tokens")
        wi = w[:, token]  # (B, P)
        # Scale by P so a uniform aggregation shows the views at their level-0 magnitude.
        weighted = views * (wi * wi.shape[-1]).view(*wi.shape, 1, 1, 1).to(views.dtype)  # (B, P, 3, p, p)
        maps.append(stitch_patches(weighted, grid))  # (B, 3, H, W)
    return torch.stack(maps)


def aggregation_maps(
    rollouts: Sequence[Tensor],
    token: int,
    grid: tuple[int, int],
    num_prefix_tokens: int = 1,
    renormalize: bool = True,
) -> Tensor:
    """Per-layer heat maps of one token's rollout weights over the patch grid: ``(n_layers, B, gh, gw)``."""
    out = []
    for r in rollouts:
        w, _ = patch_rollout(r, num_prefix_tokens, renormalize)  # (B, L, P)
        out.append(w[:, token].reshape(w.shape[0], *grid))
    return torch.stack(out)


def mean_aggregation_distance(
    rollouts: Sequence[Tensor], grid: tuple[int, int], num_prefix_tokens: int = 1
) -> Tensor:
    """Rollout-weighted mean distance (in patches) from each patch token to the patches it
    aggregates, averaged over patch tokens and images: ``(n_layers,)``. Grows with depth as
    tokens integrate more of the image (0 for identity attention)."""
    gh, gw = grid
    yy, xx = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    pos = torch.stack([yy.flatten(), xx.flatten()], -1).float()  # (P, 2)
    dist = torch.cdist(pos, pos)  # (P, P)
    out = []
    for r in rollouts:
        w, _ = patch_rollout(r, num_prefix_tokens, renormalize=True)  # (B, L, P)
        wp = w[:, num_prefix_tokens:]  # (B, P, P): patch tokens only
        out.append((wp * dist.to(wp.device)).sum(-1).mean())
    return torch.stack(out)
