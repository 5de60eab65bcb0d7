"""Most-activating dataset images (exemplars) and patch activation maps.

:func:`find_exemplars` scores every channel of several hook points in **one streaming pass**
over a dataset. Per feature and per statistic (``"mean"`` or ``"max"`` over patch
positions) it keeps the top-k images, their scores and their patch activation maps. Memory
is bounded by ``k x channels x grid`` per hook and statistic whatever the dataset size: each
batch is merged into the running top-k with :func:`torch.topk`, and only the entries that
enter the top-k are copied. The forward pass stops after the deepest requested hook.

Order is exact and deterministic: entries rank by score (descending), ties by dataset index
(ascending), through one int64 key per entry (:func:`rank_keys`). So the top-k does not depend
on batch size or on how the data were split: shards searched apart and combined with
:meth:`TopKState.merge` give the top-k of the whole (shards must hold disjoint indices).

Results are cached in ``config.cache_dir()/exemplars/<key>.npz`` (:mod:`vitviz_core.cache`:
JSON + arrays, never pickle), keyed by the model (name, architecture, weights source and a
hash of every parameter), the data (file list with sizes and mtimes, or tensor bytes, plus
the transform), the hook names, ``k``, the statistics and the source code of this module and
of the hooks, so a second call with the same inputs returns at once.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from vitviz_core.errors import DataError, HookError, VitvizError
from vitviz_core.evaluate.records import ResultRecord, dataset_fingerprint, model_info, weights_fingerprint

__all__ = [
    "FeatureTopK",
    "ExemplarResult",
    "TopKState",
    "update_states",
    "score_maps",
    "find_exemplars",
    "exemplar_cache_key",
    "activation_maps",
    "rank_keys",
    "default_num_workers",
    "STATISTICS",
]

STATISTICS = ("mean", "max")
_CACHE_VERSION = 2  # 2: .npz + JSON (vitviz_core.cache) instead of torch.save


def score_maps(maps: Tensor, stat: str) -> Tensor:
    """Per-image, per-channel score of patch maps ``(B, C, H, W)`` -> ``(B, C)``."""
    if stat == "mean":
        return maps.float().mean(dim=(2, 3))
    if stat == "max":
        return maps.float().amax(dim=(2, 3))
    raise VitvizError(f"unknown statistic {stat!r}: use one of {STATISTICS}")


def rank_keys(values: Tensor, ids: Tensor) -> Tensor:
    """int64 keys that order entries by (value descending, id ascending): a larger key ranks
    higher, and distinct ids never tie, so ``topk`` on the keys is exact and deterministic.

    ``values`` float (NaN must already be mapped to -inf); ``ids`` int64 in ``[-1, 2**32 - 2]``
    broadcastable to ``values`` (-1 = empty slot, ranks below every real entry)."""
    v = values.float() + 0.0  # -0.0 -> +0.0 (so both zeros share one key)
    bits = v.view(torch.int32)
    bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)  # monotone float -> int32
    low = torch.where(ids >= 0, 0xFFFFFFFE - ids, torch.zeros_like(ids))  # smaller id -> larger
    return (bits.long() << 32) + low


@dataclass
class FeatureTopK:
    """Top-k images of every channel of one hook under one statistic."""

    values: Tensor  # (k, C) float32, descending per channel
    indices: Tensor  # (k, C) int64 dataset indices
    maps: Tensor | None  # (k, C, H, W) patch maps of those images (float16), or None

    def to_dict(self) -> dict[str, Any]:
        return {"values": self.values, "indices": self.indices, "maps": self.maps}


class TopKState:
    """Running top-k of per-channel scores (and maps) merged batch by batch.

    ``update(scores (B, C), ids (B,), maps)`` with ``maps`` a ``(B, C, H, W)`` tensor, a function
    ``(rows (M,), channels (M,)) -> (M, H, W)``, or None. Only entries that enter the top-k are
    written, so late batches (few new entries) cost almost nothing. Maps are held in float32
    while streaming (no conversion per batch) and returned as ``map_dtype``.
    """

    def __init__(
        self,
        k: int,
        channels: int,
        grid: tuple[int, int] | None,
        device: torch.device | str = "cpu",
        map_dtype: torch.dtype = torch.float16,
        sync_free: bool | None = None,
    ):
        if k < 1:
            raise VitvizError(f"k must be >= 1, got {k}")
        # Sparse updates (only changed entries, found with nonzero) are cheapest on the CPU,
        # where a data-dependent shape costs nothing; on an accelerator every nonzero is a
        # host sync, so the whole (k, C) table is rebuilt with gathers instead. Same result.
        self.sync_free = torch.device(device).type != "cpu" if sync_free is None else sync_free
        self.k = k
        self.channels = channels
        self.values = torch.full((k, channels), float("-inf"), device=device)  # (k, C)
        self.indices = torch.full((k, channels), -1, dtype=torch.long, device=device)  # (k, C)
        self.grid = grid
        self.map_dtype = map_dtype
        # (k * C, H * W): row slot * C + channel, written with index_copy_, never read unwritten
        self.maps = (
            torch.empty((k * channels, grid[0] * grid[1]), dtype=torch.float32, device=device)
            if grid is not None
            else None
        )
        self.seen = 0

    def select(self, scores: Tensor, ids: Tensor) -> tuple[Tensor, Tensor, Tensor] | None:
        """Merge a batch's scores; returns ``(slot, row, channel)`` of the new entries (each
        ``(M,)``) whose maps must be written, or None when nothing entered the top-k."""
        scores = scores.float().nan_to_num(nan=float("-inf"))  # (B, C)
        b, c = scores.shape
        k = self.k
        ids = ids.to(self.indices.device)
        first = self.seen == 0
        self.seen += b
        if first and b >= k:  # empty state: the batch's own top-k fills every slot
            row = rank_keys(scores, ids[:, None]).topk(k, dim=0).indices  # (k, C)
            self.values.copy_(scores.gather(0, row))
            self.indices.copy_(ids[row])
            slot = torch.arange(k, device=row.device)[:, None].expand(k, c).reshape(-1)
            ch = torch.arange(c, device=row.device)[None, :].expand(k, c).reshape(-1)
            return slot, row.reshape(-1), ch
        # Only channels where some image reaches the current k-th best score can change
        # (a plain float compare; exact rank keys only for those channels).
        active = (scores >= self.values.amin(dim=0)[None, :]).any(dim=0)  # (C,)
        cols = active.nonzero().squeeze(1)  # (A,)
        if cols.numel() == 0:
            return None
        cat = torch.cat(
            [
                rank_keys(self.values[:, cols], self.indices[:, cols]),
                rank_keys(scores[:, cols], ids[:, None]),
            ],
            dim=0,
        )  # (k + B, A)
        top = cat.topk(k, dim=0).indices  # (k, A)
        sel = torch.zeros(cat.shape, dtype=torch.bool, device=cat.device)
        sel.scatter_(0, top, True)
        evicted, chosen = ~sel[:k], sel[k:]  # (k, A), (B, A)
        # Pair the j-th evicted slot with the j-th chosen row of each channel (no sorting):
        # table[rank, channel] = slot.
        ev_slot, ev_col = evicted.nonzero(as_tuple=True)
        ev_rank = (evicted.cumsum(0) - 1)[ev_slot, ev_col]
        table = torch.empty((k, cols.numel()), dtype=torch.long, device=cat.device)
        table[ev_rank, ev_col] = ev_slot
        row, col = chosen.nonzero(as_tuple=True)  # (M,), (M,)
        rank = (chosen.cumsum(0) - 1)[row, col]
        slot = table[rank, col]
        ch = cols[col]
        self.values[slot, ch] = scores[row, ch]
        self.indices[slot, ch] = ids[row]
        return slot, row, ch

    def select_all(self, scores: Tensor, ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Sync-free merge of a batch: rebuilds the ``(k, C)`` table with one ``topk`` and
        gathers. Returns ``(from_batch (k, C) bool, row (k, C), old_slot (k, C))``: slot ``j``
        of channel ``c`` now holds batch row ``row[j, c]`` if ``from_batch[j, c]``, else
        what slot ``old_slot[j, c]`` held before (see :meth:`write_all_maps`)."""
        scores = scores.float().nan_to_num(nan=float("-inf"))  # (B, C)
        b, c = scores.shape
        k = self.k
        ids = ids.to(self.indices.device)
        self.seen += b
        keys = torch.cat(
            [rank_keys(self.values, self.indices), rank_keys(scores, ids[:, None])]
        )  # (k + B, C)
        top = keys.topk(k, dim=0).indices  # (k, C)
        self.values = torch.cat([self.values, scores]).gather(0, top)
        self.indices = torch.cat([self.indices, ids[:, None].expand(b, c)]).gather(0, top)
        from_batch = top >= k
        return from_batch, (top - k).clamp_(min=0), top.clamp(max=k - 1)

    def write_all_maps(self, from_batch: Tensor, old_slot: Tensor, picked: Tensor) -> None:
        """Rebuild the maps after :meth:`select_all`; ``picked`` ``(k, C, ...)`` holds the
        batch maps of ``(row[j, c], c)`` (ignored where not ``from_batch``)."""
        if self.maps is None:
            return
        k, c = self.k, self.channels
        hw = self.maps.shape[1]
        old = self.maps.view(k, c, hw).gather(0, old_slot[:, :, None].expand(k, c, hw))  # (k, C, HW)
        new = torch.where(from_batch[:, :, None], picked.reshape(k, c, hw).to(self.maps.dtype), old)
        self.maps = new.reshape(k * c, hw)

    def write_maps(self, slot: Tensor, ch: Tensor, picked: Tensor) -> None:
        """Store maps ``(M, H, W)`` or ``(M, H*W)`` at ``(slot, ch)``."""
        if self.maps is not None:
            self.maps.index_copy_(
                0,
                slot * self.channels + ch,
                picked.reshape(picked.shape[0], self.maps.shape[1]).to(self.maps.dtype),
            )

    def update(
        self, scores: Tensor, ids: Tensor, maps: Tensor | Callable[[Tensor, Tensor], Tensor] | None = None
    ) -> None:
        """Merge a batch: ``scores (B, C)``, dataset ``ids (B,)`` and optionally its maps."""
        if self.sync_free:
            from_batch, row, old_slot = self.select_all(scores, ids)
            if self.maps is not None and maps is not None:
                ch = torch.arange(self.channels, device=row.device).expand_as(row)  # (k, C)
                picked = maps(row.reshape(-1), ch.reshape(-1)) if callable(maps) else maps[row, ch]
                self.write_all_maps(from_batch, old_slot, picked)
            return
        sel = self.select(scores, ids)
        if sel is None or self.maps is None or maps is None or sel[0].numel() == 0:
            return
        slot, row, ch = sel
        self.write_maps(slot, ch, maps(row, ch) if callable(maps) else maps[row, ch])

    def merge(self, other: "TopKState") -> "TopKState":
        """Fold another state (a shard searched apart, disjoint dataset indices) into this one,
        in place; returns ``self``. Exact: the result equals one search over both shards."""
        if not isinstance(other, TopKState):
            raise VitvizError(f"can only merge a TopKState, got {type(other).__name__}")
        if (other.k, other.channels) != (self.k, self.channels):
            raise VitvizError(
                f"cannot merge top-{other.k} of {other.channels} channels into "
                f"top-{self.k} of {self.channels} channels"
            )
        if (self.maps is None) != (other.maps is None) or (
            self.maps is not None and tuple(self.grid) != tuple(other.grid)
        ):
            raise VitvizError(f"cannot merge states with maps on grid {other.grid} and {self.grid}")
        dev = self.values.device
        k, c = self.k, self.channels
        values = torch.cat([self.values, other.values.to(dev)])  # (2k, C)
        indices = torch.cat([self.indices, other.indices.to(dev)])  # (2k, C)
        top = rank_keys(values, indices).topk(k, dim=0).indices  # (k, C)
        self.values = values.gather(0, top)
        self.indices = indices.gather(0, top)
        if self.maps is not None:
            hw = self.maps.shape[1]
            maps = torch.cat([self.maps.view(k, c, hw), other.maps.to(dev).view(k, c, hw)])  # (2k, C, HW)
            self.maps = maps.gather(0, top[:, :, None].expand(k, c, hw)).reshape(k * c, hw)
        self.seen += other.seen
        return self

    @classmethod
    def from_topk(
        cls, t: FeatureTopK, k: int | None = None, device: torch.device | str = "cpu"
    ) -> "TopKState":
        """A state holding a finished :class:`FeatureTopK` (e.g. one shard's
        ``ExemplarResult.topk[hook][stat]``), ready to :meth:`merge`."""
        n, c = t.values.shape
        k = n if k is None else k
        if n > k:
            raise VitvizError(f"this top-k holds {n} rows, more than k={k}")
        grid = tuple(t.maps.shape[2:]) if t.maps is not None else None
        st = cls(k, c, grid, device=device, map_dtype=t.maps.dtype if t.maps is not None else torch.float16)
        st.values[:n] = t.values.to(device)
        st.indices[:n] = t.indices.to(device)
        if st.maps is not None:
            st.maps[: n * c] = t.maps.to(device).reshape(n * c, -1).float()
        st.seen = n
        return st

    def result(self) -> FeatureTopK:
        order = rank_keys(self.values, self.indices).argsort(dim=0, descending=True)  # (k, C)
        n = min(self.k, self.seen)
        order = order[:n]
        values = self.values.gather(0, order)
        indices = self.indices.gather(0, order)
        maps = None
        if self.maps is not None:
            c = order.shape[1]
            ch = torch.arange(c, device=order.device)[None, :]  # (1, C)
            rows = (order * c + ch).reshape(-1)  # (n * C,)
            maps = self.maps.index_select(0, rows).reshape(n, c, *self.grid).to(self.map_dtype)
        return FeatureTopK(
            values=values.cpu(), indices=indices.cpu(), maps=maps.cpu() if maps is not None else None
        )


def update_states(
    states: dict[str, TopKState],
    scores: dict[str, Tensor],
    ids: Tensor,
    pick: Callable[[Tensor, Tensor], Tensor] | None,
) -> None:
    """Merge one batch into several statistics of one hook, picking each needed map once
    (patch-mean and patch-max often select the same image for a channel)."""
    if any(st.sync_free for st in states.values()):  # no unique / nonzero: no host syncs
        for s, st in states.items():
            st.update(scores[s], ids, pick)
        return
    sels = {s: st.select(scores[s], ids) for s, st in states.items()}
    need = [(s, v) for s, v in sels.items() if v is not None and states[s].maps is not None]
    if not need or pick is None:
        return
    c = states[need[0][0]].channels
    keys = torch.cat([row * c + ch for _, (_, row, ch) in need])  # (sum M,)
    if keys.numel() == 0:  # channels reached a tie but no image won it
        return
    uniq, inverse = torch.unique(keys, return_inverse=True)
    picked = pick(uniq // c, uniq % c)
    picked = picked.reshape(picked.shape[0], -1)  # (U, H*W)
    offset = 0
    for s, (slot, _, ch) in need:
        m = slot.numel()
        states[s].write_maps(slot, ch, picked.index_select(0, inverse[offset : offset + m]))
        offset += m


@dataclass
class ExemplarResult:
    """Top-k images per feature for several hooks and statistics."""

    hooks: list[str]
    stats: list[str]
    k: int
    topk: dict[str, dict[str, FeatureTopK]]  # hook -> stat -> FeatureTopK
    grids: dict[str, tuple[int, int] | None]
    files: list[str] = field(default_factory=list)  # dataset index -> file path ("" if unknown)
    labels: list[int] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)
    cache_path: str | None = None
    from_cache: bool = False

    def top(self, hook: str, feature: int, stat: str = "mean") -> list[tuple[int, float]]:
        """``[(dataset index, score), ...]`` best first for one feature."""
        t = self._get(hook, stat)
        if not 0 <= feature < t.values.shape[1]:
            raise HookError(f"feature {feature} out of range: {hook} has {t.values.shape[1]} channels")
        return [(int(i), float(v)) for i, v in zip(t.indices[:, feature], t.values[:, feature])]

    def maps(self, hook: str, feature: int, stat: str = "mean") -> Tensor:
        """Patch activation maps ``(k, H, W)`` of the top-k images of one feature."""
        t = self._get(hook, stat)
        if t.maps is None:
            raise VitvizError("maps were not kept: call find_exemplars(..., keep_maps=True)")
        if not 0 <= feature < t.values.shape[1]:
            raise HookError(f"feature {feature} out of range: {hook} has {t.values.shape[1]} channels")
        return t.maps[:, feature].float()

    def images(self, hook: str, feature: int, stat: str = "mean") -> list:
        """The top-k images of one feature as PIL images (needs a file-backed dataset)."""
        from vitviz_core.data import load_image

        out = []
        for i, _ in self.top(hook, feature, stat):
            if not self.files or not self.files[i]:
                raise DataError("this result has no file list (dataset without `samples`)")
            out.append(load_image(self.files[i]))
        return out

    def _get(self, hook: str, stat: str) -> FeatureTopK:
        if hook not in self.topk:
            raise HookError(f"hook {hook!r} not in this result (has {', '.join(self.hooks)})")
        if stat not in self.topk[hook]:
            raise VitvizError(f"statistic {stat!r} not in this result (has {', '.join(self.stats)})")
        return self.topk[hook][stat]

    def _payload(self) -> dict[str, Any]:
        return {
            "version": _CACHE_VERSION,
            "hooks": self.hooks,
            "stats": self.stats,
            "k": self.k,
            "topk": {h: {s: t.to_dict() for s, t in d.items()} for h, d in self.topk.items()},
            "grids": {h: list(g) if g else None for h, g in self.grids.items()},
            "files": self.files,
            "labels": self.labels,
            "record": json.dumps(self.record),
        }

    @classmethod
    def _from_payload(cls, p: dict[str, Any], path: str) -> "ExemplarResult":
        return cls(
            hooks=list(p["hooks"]),
            stats=list(p["stats"]),
            k=int(p["k"]),
            topk={h: {s: FeatureTopK(**t) for s, t in d.items()} for h, d in p["topk"].items()},
            grids={h: tuple(g) if g else None for h, g in p["grids"].items()},
            files=list(p["files"]),
            labels=list(p["labels"]),
            record=json.loads(p["record"]),
            cache_path=path,
            from_cache=True,
        )


def exemplar_cache_key(
    model: Any, dataset: Any, hooks: Sequence[str], k: int, stats: Sequence[str], keep_maps: bool
) -> str:
    """Hex key of a search: model + weights hash + data fingerprint + hooks + k + stats.

    Raises ValueError when the dataset cannot be fingerprinted."""
    from vitviz_core.cache import code_version
    from vitviz_core.models import as_loaded

    spec = {
        "v": _CACHE_VERSION,
        "code": code_version(("vitviz_core.evaluate.exemplars", "vitviz_core.hooks")),
        "model": model_info(model),
        "weights": weights_fingerprint(as_loaded(model).model),
        "data": dataset_fingerprint(dataset),
        "hooks": list(hooks),
        "k": int(k),
        "stats": list(stats),
        "maps": bool(keep_maps),
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]


def _files_and_labels(dataset: Any) -> tuple[list[str], list[int]]:
    samples = getattr(dataset, "samples", None)
    if samples is None:
        return [], []
    files = [str(s[0]) if isinstance(s, (tuple, list)) else str(s) for s in samples]
    labels = [int(s[1]) if isinstance(s, (tuple, list)) and len(s) > 1 else -1 for s in samples]
    return files, labels


def _scores_and_tokens(
    act: Tensor, spec: Any, stats: Sequence[str]
) -> tuple[dict[str, Tensor], Tensor, tuple[int, int]]:
    """Scores ``{stat: (B, C)}``, the activation as ``(B, P, C)`` (P = H*W patch positions,
    a view where possible) to pick maps from, and the grid ``(H, W)``.

    Token layouts (NLC) are reduced along the token axis without building ``(B, C, H, W)``
    maps; only the picked maps are gathered."""
    from vitviz_core.hooks import to_patch_maps

    g = spec.grid
    if (
        spec.layout == "NLC"
        and act.dim() == 3
        and g is not None
        and act.shape[1] - spec.num_prefix_tokens == g[0] * g[1]
    ):
        tok = act[:, spec.num_prefix_tokens :]  # (B, N, C) view, in the forward's dtype
        scores = {}
        for s in stats:
            if s == "mean" and tok.dtype == torch.float32:
                # a batched GEMV with 1/N weights is faster than mean over axis 1 on the CPU
                w = tok.new_full((tok.shape[0], 1, tok.shape[1]), 1.0 / tok.shape[1])  # (B, 1, N)
                scores[s] = torch.bmm(w, tok)[:, 0]  # (B, C)
            elif s == "mean":  # low precision (autocast): accumulate in fp32, no fp32 copy
                scores[s] = tok.sum(dim=1, dtype=torch.float32) / tok.shape[1]  # (B, C)
            else:
                scores[s] = tok.amax(dim=1).float()  # (B, C), exact in any dtype
        return scores, tok, (int(g[0]), int(g[1]))
    maps = to_patch_maps(act, spec)  # (B, C, H, W)
    return (
        {s: score_maps(maps, s) for s in stats},
        maps.flatten(2).transpose(1, 2),
        (int(maps.shape[2]), int(maps.shape[3])),
    )


def _picker(sources: list[Tensor], sync_free: bool) -> Callable[[Tensor, Tensor], Tensor]:
    """``pick(rows (M,), ch (M,)) -> (M, P)`` maps from activations ``[(B, P, C_i), ...]``
    seen as one ``(B, P, sum C_i)`` tensor.

    Sync-free (accelerators): the sources are concatenated once per batch (a cheap device
    copy). CPU: no copy; the requested channels are sorted and each hook's segment is
    gathered from its own tensor (data-dependent sizes cost nothing there)."""
    if sync_free:
        cat = torch.cat(sources, dim=2) if len(sources) > 1 else sources[0]  # (B, P, sum C)
        return lambda rows, ch: cat[rows, :, ch]
    if len(sources) == 1:
        return lambda rows, ch: _gather_maps(sources[0], rows, ch)
    ends = torch.tensor([t.shape[2] for t in sources]).cumsum(0)  # (n,)

    def pick(rows: Tensor, ch: Tensor) -> Tensor:
        order = ch.argsort()
        ch_s, rows_s = ch[order], rows[order]
        cuts = [0] + torch.searchsorted(ch_s, ends.to(ch.device)).tolist()
        out = sources[0].new_empty((ch.shape[0], sources[0].shape[1]))  # (M, P)
        for i, src in enumerate(sources):
            a, b = cuts[i], cuts[i + 1]
            if b > a:
                off = int(ends[i]) - src.shape[2]
                out[order[a:b]] = _gather_maps(src, rows_s[a:b], ch_s[a:b] - off)
        return out

    return pick


def _gather_maps(src: Tensor, rows: Tensor, ch: Tensor) -> Tensor:
    """``src[rows, :, ch]`` ``(M, P)`` from ``src (B, P, C)``. Each map is P reads a row
    apart; when many are wanted (early batches fill the whole top-k) one transposed copy
    ``(B, C, P)`` makes every map a contiguous row and is cheaper."""
    b, _, c = src.shape
    if rows.shape[0] * 4 > b * c:
        return src.transpose(1, 2).contiguous()[rows, ch]  # (M, P)
    return src[rows, :, ch]  # (M, P)


def _no_inplace_writes(module: torch.nn.Module, hooks: Sequence[str]) -> bool:
    """True when the captured activations can be kept without a copy: one hook (the forward
    stops right after it) or a timm VisionTransformer (its forward writes no tensor in place)
    without in-place modules (``inplace=True`` activations, LayerScale, dropout)."""
    if len(hooks) == 1:
        return True
    if any(getattr(m, "inplace", False) is True for m in module.modules()):
        return False
    try:
        from timm.models.vision_transformer import VisionTransformer
    except ImportError:  # pragma: no cover - timm is a dependency
        return False
    return isinstance(module, VisionTransformer)


def default_num_workers() -> int:
    """DataLoader workers for decoding: one fewer than the CPUs this process may use (the
    main process runs the model), at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(0, min(8, cpus - 1))


def find_exemplars(
    model: Any,
    dataset: Any = None,
    hooks: Sequence[str] = ("blocks.11.mlp.hook_post",),
    k: int = 9,
    stats: Sequence[str] = STATISTICS,
    batch_size: int | None = None,
    keep_maps: bool = True,
    cache: bool = True,
    device: str | torch.device | None = None,
    data_name: str = "imagenet-sample-1000",
    data_root: str | Path | None = None,
    max_images: int | None = None,
    num_workers: int | None = None,
    progress: bool = True,
    amp: bool | None = None,
) -> ExemplarResult:
    """Top-k most-activating images of every channel of ``hooks``, in one pass.

    Args:
        model: LoadedModel or nn.Module.
        dataset: items ``(x, label, index)`` with ``x`` the normalised model input; default
            ``data_name`` (the diverse pool ``imagenet-sample-1000``) through the model's
            ``eval_transform``.
        hooks: hook names (canonical or raw module paths) resolved by ``vitviz_core.hooks``.
        k: images kept per feature; ``stats``: ``"mean"`` and/or ``"max"`` over patches.
        batch_size: images per forward pass (default 32 on the CPU, 256 on an accelerator).
        keep_maps: also keep the ``(H, W)`` patch activation map of every kept image.
        cache: read/write ``cache_dir()/exemplars/<key>.npz``.
        num_workers: DataLoader worker processes decoding images beside the model (default
            :func:`default_num_workers`; 0 decodes in this process).
        amp: bf16 autocast for the forward (default: on for CUDA, off elsewhere; the CPU
            result is then bit-identical whatever the workers and batch size).
    """
    from tqdm.auto import tqdm

    from vitviz_core import config
    from vitviz_core.evaluate.common import make_loader, model_dataset, model_device, unpack_batch
    from vitviz_core.hooks import capture, resolve_hook
    from vitviz_core.models import as_loaded

    hooks = list(dict.fromkeys(hooks))
    stats = list(dict.fromkeys(stats))
    if not hooks:
        raise HookError("find_exemplars needs at least one hook name")
    for s in stats:
        if s not in STATISTICS:
            raise VitvizError(f"unknown statistic {s!r}: use one of {STATISTICS}")
    module = as_loaded(model).model
    specs = {h: resolve_hook(module, h) for h in hooks}
    if dataset is None:
        dataset = model_dataset(model, data_name, data_root, max_images)
    if len(dataset) == 0:
        raise DataError("the dataset is empty: nothing to search")

    from vitviz_core import cache as result_cache

    path: Path | None = None
    if cache:
        try:
            key = exemplar_cache_key(model, dataset, hooks, k, stats, keep_maps)
            path = config.cache_dir() / "exemplars" / f"{key}.npz"
        except ValueError:
            path = None  # dataset cannot be fingerprinted: no caching
        if path is not None and path.is_file():
            try:
                return ExemplarResult._from_payload(result_cache.read(path), str(path))
            except Exception:  # noqa: BLE001 - a corrupt cache entry is recomputed
                pass

    dev = torch.device(device) if device is not None else model_device(model)
    accel = dev.type != "cpu"
    if batch_size is None:
        batch_size = 256 if accel else 32
    if num_workers is None:
        num_workers = default_num_workers() if len(dataset) > batch_size else 0
    use_amp = (dev.type == "cuda") if amp is None else bool(amp)
    record = ResultRecord.start(
        "find_exemplars",
        model,
        dataset,
        {
            "hooks": hooks,
            "k": k,
            "stats": stats,
            "keep_maps": keep_maps,
            "batch_size": batch_size,
            "amp": use_amp,
        },
    )
    # Hooks with the same patch grid share one state per statistic over their concatenated
    # channels: a few large top-k merges per batch instead of hooks x statistics small ones.
    groups: dict[tuple[int, int], list[str]] = {}
    channels: dict[str, int] = {}
    states: dict[tuple[int, int], dict[str, TopKState]] = {}
    grids: dict[str, tuple[int, int] | None] = {}
    offset = 0
    loader = make_loader(
        dataset, batch_size=batch_size, num_workers=num_workers, pin_memory=dev.type == "cuda"
    )
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp)
    with (
        torch.inference_mode(),
        autocast,
        capture(module, hooks, stop_early=True, copy=not _no_inplace_writes(module, hooks)) as cap,
    ):
        for batch in tqdm(loader, desc="exemplars", disable=not progress, leave=False):
            x, _, ids, _ = unpack_batch(batch, offset)
            offset += x.shape[0]
            ids = ids.to(dev, non_blocking=True)  # (B,)
            cap.forward(x.to(dev, non_blocking=True))
            per = {
                h: _scores_and_tokens(cap.activations[h], cap.specs.get(h, specs[h]), stats) for h in hooks
            }
            if not states:
                for h in hooks:
                    grids[h] = per[h][2]
                    channels[h] = per[h][1].shape[2]
                    groups.setdefault(grids[h], []).append(h)
                states = {
                    g: {
                        s: TopKState(k, sum(channels[h] for h in hs), g if keep_maps else None, device=dev)
                        for s in stats
                    }
                    for g, hs in groups.items()
                }
            for g, hs in groups.items():
                scores = {
                    s: torch.cat([per[h][0][s] for h in hs], dim=1) if len(hs) > 1 else per[hs[0]][0][s]
                    for s in stats
                }  # (B, sum C)
                pick = _picker([per[h][1] for h in hs], accel) if keep_maps else None
                update_states(states[g], scores, ids, pick)
    topk: dict[str, dict[str, FeatureTopK]] = {h: {} for h in hooks}
    for g, hs in groups.items():
        for s, st in states[g].items():
            r = st.result()
            c0 = 0
            for h in hs:
                sl = slice(c0, c0 + channels[h])
                c0 += channels[h]
                topk[h][s] = FeatureTopK(
                    values=r.values[:, sl].clone(),
                    indices=r.indices[:, sl].clone(),
                    maps=r.maps[:, sl].clone() if r.maps is not None else None,
                )
    files, labels = _files_and_labels(dataset)
    record.finish()
    res = ExemplarResult(
        hooks=hooks,
        stats=stats,
        k=k,
        topk=topk,
        grids=grids,
        files=files,
        labels=labels,
        record=record.to_dict(),
        cache_path=str(path) if path is not None else None,
    )
    if path is not None:
        result_cache.write(path, res._payload())
    return res


def activation_maps(
    model: Any,
    x: Tensor,
    hook: str,
    feature: int,
    size: tuple[int, int] | None | str = "input",
    mode: str = "bilinear",
) -> Tensor:
    """Patch activation map of one feature: ``x (B, 3, H, W)`` -> ``(B, h, w)``.

    Args:
        x: normalised model input.
        size: ``"input"`` upsamples to the input's ``(H, W)``; a tuple to that size; ``None``
            keeps the patch grid.
    """
    from vitviz_core.models import as_loaded
    from vitviz_core.hooks import capture, to_patch_maps

    module = as_loaded(model).model
    with torch.inference_mode(), capture(module, [hook], stop_early=True) as cap:
        cap.forward(x)
        spec = cap.specs[hook]
        maps = to_patch_maps(cap.activations[hook], spec)  # (B, C, h, w)
    if not 0 <= feature < maps.shape[1]:
        raise HookError(
            f"feature {feature} out of range: {hook} has {maps.shape[1]} channels (0..{maps.shape[1] - 1})"
        )
    m = maps[:, feature : feature + 1].float()  # (B, 1, h, w)
    if size == "input":
        size = tuple(x.shape[-2:])
    if size is not None:
        m = (
            F.interpolate(m, size=size, mode=mode, align_corners=False)
            if mode != "nearest"
            else F.interpolate(m, size=size, mode="nearest")
        )
    return m[:, 0]
