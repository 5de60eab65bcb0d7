"""Robustness to patch shuffling and occlusion, ViT vs. CNN (Nguyen et al. 2022, Sec. 6).

All image edits happen in pixel space ``[0, 1]`` and are deterministic: each image's random
choices come from a generator seeded by ``(seed, dataset index)``, so a ViT and a CNN see
exactly the same shuffled or occluded image, whatever the batch size.

- :func:`shuffle_patches`: split the image into ``g x g`` equal tiles and permute them
  (``g = 1`` is the identity; ``g = 14`` at 224 px permutes exactly the ViT-B/16 patches).
- :func:`occlusion_mask` + :func:`occlude`: hide a ratio of the cells of a patch grid,
  chosen at random or by saliency (most / least salient first), filled with black, the
  image's mean colour (``"image_mean"``), gray, or any fill of :mod:`vitviz_core.evaluate.fill`.
- :func:`robustness_sweep`: run every variant through several models in one pass over the
  data and keep per-image correctness (the variant-evaluation core,
  :func:`vitviz_core.evaluate.common.evaluate_variants_many`); :func:`summarize_sweep` turns it into top-1/top-5
  curves with bootstrap 95 % intervals.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from vitviz_core.errors import VitvizError
from vitviz_core.evaluate.common import SweepResult, evaluate_variants_many
from vitviz_core.evaluate.fill import FILLS, Fill, fill_image, fill_name
from vitviz_core.models import as_loaded

__all__ = [
    "image_generator",
    "shuffle_patches",
    "occlusion_mask",
    "occlude",
    "foreground_saliency",
    "cls_attention_saliency",
    "SweepResult",
    "robustness_sweep",
    "summarize_sweep",
]

#: Named occlusion fills (see :mod:`vitviz_core.evaluate.fill`; a number or RGB triple also works).
FILL_VALUES = FILLS


def image_generator(seed: int, index: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A generator private to one image: the same ``(seed, index)`` always draws the same numbers."""
    g = torch.Generator(device=device)
    g.manual_seed((int(seed) * 1_000_003 + int(index)) % (2**63 - 1))
    return g


def _indices(b: int, indices: Tensor | Sequence[int] | None) -> list[int]:
    if indices is None:
        return list(range(b))
    idx = [int(i) for i in (indices.tolist() if isinstance(indices, Tensor) else indices)]
    if len(idx) != b:
        raise VitvizError(f"got {len(idx)} image indices for a batch of {b}")
    return idx


def shuffle_patches(
    x: Tensor,
    grid: int | tuple[int, int],
    seed: int = 0,
    indices: Tensor | Sequence[int] | None = None,
    return_permutation: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Permute ``g x g`` tiles of each image (seeded per image).

    Args:
        x: ``(B, C, H, W)``; H and W must be multiples of the grid.
        grid: ``g`` (square) or ``(gh, gw)`` tiles.
        indices: dataset index of each image (default ``0..B-1``), for per-image seeds.
    Returns:
        The shuffled images ``(B, C, H, W)`` (and the permutations ``(B, gh*gw)``: output tile
        k holds input tile ``perm[k]``).
    """
    from vitviz_core.neurons.level0 import extract_patches, stitch_patches

    gh, gw = (grid, grid) if isinstance(grid, int) else tuple(grid)
    b, c, h, w = x.shape
    if gh < 1 or gw < 1:
        raise VitvizError(f"shuffle grid must be >= 1, got {gh}x{gw}")
    if h % gh or w % gw:
        raise VitvizError(
            f"a {h}x{w} image cannot be split into {gh}x{gw} equal tiles: "
            f"use a grid that divides the size (e.g. 1, 2, 4, 7, 8, 14, 16 for 224)"
        )
    th, tw = h // gh, w // gw
    perms = torch.stack(
        [torch.randperm(gh * gw, generator=image_generator(seed, i)) for i in _indices(b, indices)]
    )  # (B, T)
    if th == tw:
        tiles = extract_patches(x, th)  # (B, T, C, th, tw)
    else:
        tiles = x.reshape(b, c, gh, th, gw, tw).permute(0, 2, 4, 1, 3, 5).reshape(b, gh * gw, c, th, tw)
    shuffled = torch.gather(tiles, 1, perms.to(x.device).view(b, -1, 1, 1, 1).expand_as(tiles))
    if th == tw:
        out = stitch_patches(shuffled, (gh, gw))  # (B, C, H, W)
    else:
        out = shuffled.reshape(b, gh, gw, c, th, tw).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)
    return (out, perms) if return_permutation else out


def occlusion_mask(
    batch_size: int,
    grid: tuple[int, int],
    ratio: float,
    mode: str = "random",
    saliency: Tensor | None = None,
    seed: int = 0,
    indices: Tensor | Sequence[int] | None = None,
) -> Tensor:
    """Which grid cells to hide: ``(B, gh, gw)`` bool, exactly ``round(ratio * gh * gw)`` per image.

    Args:
        mode: ``"random"`` (seeded per image), ``"most"`` (most salient first) or
            ``"least"`` (least salient first; both need ``saliency (B, gh, gw)``).
    """
    gh, gw = grid
    n = gh * gw
    if not 0.0 <= ratio <= 1.0:
        raise VitvizError(f"occlusion ratio must lie in [0, 1], got {ratio}")
    k = int(round(ratio * n))
    mask = torch.zeros(batch_size, n, dtype=torch.bool)
    if k == 0:
        return mask.view(batch_size, gh, gw)
    if mode == "random":
        for row, i in enumerate(_indices(batch_size, indices)):
            mask[row, torch.randperm(n, generator=image_generator(seed, i))[:k]] = True
    elif mode in ("most", "least"):
        if saliency is None:
            raise VitvizError(f"occlusion mode {mode!r} needs a saliency map (B, gh, gw)")
        s = saliency.detach().float().cpu().reshape(batch_size, -1)
        if s.shape[1] != n:
            raise VitvizError(f"saliency has {s.shape[1]} cells, the occlusion grid {gh}x{gw} has {n}")
        order = s.argsort(dim=1, descending=(mode == "most"), stable=True)  # (B, n)
        mask.scatter_(1, order[:, :k], True)
    else:
        raise VitvizError(f"unknown occlusion mode {mode!r}: use 'random', 'most' or 'least'")
    return mask.view(batch_size, gh, gw)


def occlude(x: Tensor, mask: Tensor, fill: Fill = "black") -> Tensor:
    """Fill the masked grid cells of pixel images.

    Args:
        x: ``(B, C, H, W)`` in [0, 1].
        mask: ``(B, gh, gw)`` bool (True = hide); cells are mapped to pixels by nearest
            neighbour, so the grid need not divide the image exactly.
        fill: ``"black"``, ``"image_mean"`` (each image's mean colour), ``"dataset_mean"``,
            ``"gray"``, ``"blur"``, a number or RGB (:mod:`vitviz_core.evaluate.fill`).
    """
    b, c, h, w = x.shape
    if mask.dim() != 3 or mask.shape[0] != b:
        raise VitvizError(f"mask must be (B, gh, gw) with B={b}, got {tuple(mask.shape)}")
    m = F.interpolate(mask[:, None].float().to(x.device), size=(h, w), mode="nearest") > 0.5  # (B, 1, H, W)
    return torch.where(m, fill_image(x, fill), x)


def foreground_saliency(
    foreground_model: Callable[[Tensor], Tensor], x01: Tensor, grid: tuple[int, int]
) -> Tensor:
    """Foreground probability averaged over each grid cell: ``(B, gh, gw)``.

    Args:
        foreground_model: ``x01 (B, 3, H, W) -> (B, 1, H, W)`` in [0, 1]
            (:func:`vitviz_core.models.load_foreground_model`).
    """
    with torch.inference_mode():
        fg = foreground_model(x01)  # (B, 1, H, W)
    return F.adaptive_avg_pool2d(fg.float(), grid)[:, 0]


def cls_attention_saliency(
    model: Any, x: Tensor, layer: int = -1, use_rollout: bool = False, residual_weight: float = 0.5
) -> Tensor:
    """The ViT's own saliency: CLS-token attention to each patch, averaged over heads,
    at one block (or the rollout through all blocks): ``(B, gh, gw)``.

    ``x`` must already be in the model's input space.
    """
    from vitviz_core.neurons.propagation import capture_attention, rollout

    module = as_loaded(model).model
    npf = int(getattr(module, "num_prefix_tokens", 1))
    if npf < 1:
        raise VitvizError("CLS-attention saliency needs a ViT with a CLS token (num_prefix_tokens >= 1)")
    if use_rollout:
        r = rollout(capture_attention(module, x), residual_weight=residual_weight)[-1]  # (B, L, L)
    else:
        r = capture_attention(module, x, [layer])[0].float().mean(1)  # (B, L, L)
    row = r[:, 0, npf:]  # (B, P)
    p = row.shape[-1]
    grid = tuple(getattr(getattr(module, "patch_embed", None), "grid_size", ()) or ())
    if len(grid) != 2 or grid[0] * grid[1] != p:
        side = int(round(p**0.5))
        if side * side != p:
            raise VitvizError(f"cannot infer the patch grid of {p} tokens; pass a square image")
        grid = (side, side)
    return row.reshape(row.shape[0], *grid)


# --------------------------------------------------------------------------------------
# Sweeps
# --------------------------------------------------------------------------------------


def robustness_sweep(
    models: Mapping[str, Any],
    loader: Iterable,
    shuffle_grids: Sequence[int] = (1, 2, 4, 8, 14),
    occlusion_ratios: Sequence[float] = (0.25, 0.5, 0.75),
    occlusion_modes: Sequence[str] = ("random", "most", "least"),
    occlusion_grid: tuple[int, int] = (14, 14),
    saliency_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    fills: Sequence[str | float | Sequence[float]] = ("black",),
    occlusions: Sequence[tuple[str, float, str | float | Sequence[float]]] | None = None,
    seed: int = 0,
    ks: Sequence[int] = (1, 5),
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> SweepResult:
    """Top-k correctness of several models on clean, shuffled and occluded images.

    Args:
        models: ``{name: LoadedModel}`` (each model's ``normalize`` is applied to the pixel
            images) or bare modules that take pixel images.
        loader: yields ``(x01 (B, 3, H, W), labels, indices)`` in pixel space (e.g. a
            LoadedModel's ``pixel_transform``); all models see the same pixels.
        saliency_fn: ``(x01, indices) -> (B, gh, gw)`` on ``occlusion_grid``; needed for the
            "most"/"least" modes (e.g. :func:`foreground_saliency` or
            :func:`cls_attention_saliency`). Computed once per batch, shared by all models.
        fills: occlusion fills (see :func:`occlude`); the sweep is modes x ratios x fills.
        occlusions: explicit ``[(mode, ratio, fill), ...]`` instead of that product.
    Returns:
        A :class:`SweepResult`; variants are named ``clean``, ``shuffle-g{g}``,
        ``occlude-{mode}-{ratio}-{fill}``.
    """
    if occlusions is None:
        occlusions = [(m, float(r), f) for m in occlusion_modes for r in occlusion_ratios for f in fills]
    occlusions = list(occlusions)
    needs_saliency = any(m in ("most", "least") for m, _, _ in occlusions)
    if needs_saliency and saliency_fn is None:
        raise VitvizError("occlusion modes 'most'/'least' need saliency_fn (e.g. foreground_saliency)")
    for _, _, f in occlusions:
        fill_image(torch.zeros(1, 3, 4, 4), f)  # validate every fill before the first batch

    def variants(x: Tensor, y: Tensor, idx: Tensor, *rest: Tensor) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {"clean": x}
        for g in shuffle_grids:
            if g == 1:
                continue  # identity (tested): reuse the clean forward
            out[f"shuffle-g{g}"] = shuffle_patches(x, g, seed=seed, indices=idx)
        sal = saliency_fn(x, idx) if needs_saliency else None  # (B, gh, gw)
        masks: dict[tuple[str, float], Tensor] = {}
        for mode, r, f in occlusions:
            if (mode, r) not in masks:
                masks[mode, r] = occlusion_mask(
                    x.shape[0], occlusion_grid, r, mode, sal, seed=seed, indices=idx
                )
            out[f"occlude-{mode}-{r:g}-{fill_name(f)}"] = occlude(x, masks[mode, r], f)
        return out

    res = evaluate_variants_many(
        models, loader, variants, ks=ks, device=device, progress=progress, desc="robustness"
    )
    if 1 in shuffle_grids:
        res.variants.insert(1, "shuffle-g1")
        for corr in res.by_model.values():
            corr.correct["shuffle-g1"] = corr.correct["clean"]
            corr.predicted["shuffle-g1"] = corr.predicted["clean"]
    return res


def summarize_sweep(result: SweepResult, k: int = 1, n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """Rows ``{model, variant, kind, param, mode, fill, acc, low, high, n}``: top-k accuracy with a
    percentile-bootstrap 95 % interval over images, per model and variant."""
    from vitviz_core.evaluate.stats import accuracy_with_ci

    rows = []
    for model, per_variant in result.correct.items():
        for v in result.variants:
            est = accuracy_with_ci(per_variant[v][k], n_boot=n_boot, seed=seed)
            kind, mode, param = "clean", "", 0.0
            fill = ""
            if v.startswith("shuffle-g"):
                kind, param = "shuffle", float(v[len("shuffle-g") :])
            elif v.startswith("occlude-"):
                _, mode, r, fill = v.split("-", 3)
                kind, param = "occlude", float(r)
            rows.append(
                {
                    "model": model,
                    "variant": v,
                    "kind": kind,
                    "mode": mode,
                    "fill": fill,
                    "param": param,
                    "k": k,
                    "acc": est.value,
                    "low": est.low,
                    "high": est.high,
                    "n": est.n,
                }
            )
    return rows
