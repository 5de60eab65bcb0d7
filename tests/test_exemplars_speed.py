"""Tests of the exemplar search's exactness under sharding, batching and loader settings
(vitviz_core.evaluate.exemplars): tiny random models and synthetic scores with ties."""

from __future__ import annotations

import os

import pytest
import timm
import torch
from torch import nn
from torch.utils.data import Subset, TensorDataset

from vitviz_core.errors import VitvizError
from vitviz_core.evaluate import exemplars as ex

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def tiny_vit(depth: int = 2, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    m = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=32,
        patch_size=8,
        depth=depth,
        embed_dim=32,
        num_heads=2,
        num_classes=10,
    )
    return m.eval().requires_grad_(False)


def stream(
    ids: torch.Tensor,
    scores: torch.Tensor,
    maps: torch.Tensor,
    k: int,
    batch: int,
    grid: tuple[int, int] = (2, 3),
) -> ex.TopKState:
    """A state fed ``scores[ids]`` (N, C) and ``maps[ids]`` (N, C, H, W) batch by batch."""
    st = ex.TopKState(k, scores.shape[1], grid)
    for i in range(0, len(ids), batch):
        b = ids[i : i + batch]
        st.update(scores[b], b, maps[b])
    return st


def brute_force(ids: torch.Tensor, scores: torch.Tensor, k: int) -> torch.Tensor:
    """(k, C) ids ranked by (score descending, id ascending), by Python sorting."""
    cols = []
    for c in range(scores.shape[1]):
        ranked = sorted(ids.tolist(), key=lambda i: (-float(scores[i, c]), i))
        cols.append(ranked[:k])
    return torch.tensor(cols).T


@pytest.mark.parametrize("batch", [1, 3, 7, 50])
def test_merged_topk_of_two_shards_equals_topk_of_the_whole(batch):
    g = torch.Generator().manual_seed(0)
    n, c, k = 40, 6, 5
    scores = torch.randint(0, 4, (n, c), generator=g).float()  # many ties: order by id decides
    scores[3, 2] = float("nan")  # NaN ranks last
    maps = torch.randn(n, c, 2, 3, generator=g)
    ids = torch.arange(n)
    whole = stream(ids, scores, maps, k, batch).result()
    perm = torch.randperm(n, generator=g)  # shards in arbitrary order, searched apart
    a = stream(perm[:17], scores, maps, k, batch)
    b = stream(perm[17:], scores, maps, k, batch)
    merged = a.merge(b).result()
    assert torch.equal(merged.indices, whole.indices)
    assert torch.equal(merged.values, whole.values)
    assert torch.equal(merged.maps, whole.maps)
    assert torch.equal(whole.indices, brute_force(ids, scores.nan_to_num(nan=float("-inf")), k))
    ch = torch.arange(c)[None]
    assert torch.equal(whole.maps, maps[whole.indices, ch].half())


def test_merge_with_a_shard_smaller_than_k_and_from_results():
    g = torch.Generator().manual_seed(1)
    scores, maps = torch.randn(12, 4, generator=g), torch.randn(12, 4, 2, 3, generator=g)
    ids = torch.arange(12)
    whole = stream(ids, scores, maps, 5, 4).result()
    small = stream(ids[:2], scores, maps, 5, 4)  # 2 images < k
    rest = stream(ids[2:], scores, maps, 5, 4)
    merged = (
        ex.TopKState.from_topk(small.result(), k=5).merge(ex.TopKState.from_topk(rest.result(), k=5)).result()
    )
    assert torch.equal(merged.indices, whole.indices) and torch.equal(merged.maps, whole.maps)
    only_small = ex.TopKState.from_topk(small.result(), k=5).result()
    assert only_small.values.shape == (2, 4)
    with pytest.raises(VitvizError):
        small.merge(ex.TopKState(3, 4, (2, 3)))
    with pytest.raises(VitvizError):
        small.merge(ex.TopKState(5, 4, None))


def test_find_exemplars_on_two_shards_merges_to_the_whole(tmp_path, monkeypatch):
    monkeypatch.setenv("VITVIZ_CACHE", str(tmp_path / "cache"))
    m = tiny_vit()
    x = torch.randn(21, 3, 32, 32)
    ds = TensorDataset(x, torch.zeros(21, dtype=torch.long), torch.arange(21))
    hooks = ["blocks.1.mlp.hook_post"]
    kw = dict(k=4, batch_size=5, cache=False, progress=False)
    whole = ex.find_exemplars(m, ds, hooks, **kw)
    parts = [ex.find_exemplars(m, Subset(ds, r), hooks, **kw) for r in (range(0, 8), range(8, 21))]
    for stat in ("mean", "max"):
        a, b = (ex.TopKState.from_topk(p.topk[hooks[0]][stat]) for p in parts)
        got, want = a.merge(b).result(), whole.topk[hooks[0]][stat]
        assert torch.equal(got.indices, want.indices)
        assert torch.allclose(got.values, want.values, atol=1e-5)
        assert torch.allclose(got.maps.float(), want.maps.float(), atol=2e-3)


def test_rank_keys_order_values_then_ids():
    v = torch.tensor([1.0, 1.0, -0.0, 0.0, -2.5, float("-inf"), float("-inf"), 3e38])
    i = torch.tensor([5, 2, 7, 1, 0, 4, -1, 9])
    order = ex.rank_keys(v, i).argsort(descending=True).tolist()
    assert [int(i[j]) for j in order] == [9, 2, 5, 1, 7, 0, 4, -1]


@pytest.mark.parametrize("batch", [2, 5, 40])
def test_sync_free_update_equals_sparse_update(batch):
    """The accelerator path (whole-table gathers, no nonzero/unique) gives the CPU path's
    result bit for bit, also through update_states with two statistics and a map picker."""
    g = torch.Generator().manual_seed(2)
    n, c, k = 37, 5, 4
    scores = {"mean": torch.randint(0, 3, (n, c), generator=g).float(), "max": torch.randn(n, c, generator=g)}
    maps = torch.randn(n, c, 2, 3, generator=g)
    out = {}
    for sync_free in (False, True):
        states = {s: ex.TopKState(k, c, (2, 3), sync_free=sync_free) for s in scores}
        for i in range(0, n, batch):
            ids = torch.arange(i, min(n, i + batch))
            xb = maps[ids]
            ex.update_states(
                states,
                {s: v[ids] for s, v in scores.items()},
                ids + 1000,
                lambda rows, ch, xb=xb: xb[rows, ch],
            )
        out[sync_free] = {s: st.result() for s, st in states.items()}
    for s in scores:
        a, b = out[False][s], out[True][s]
        assert torch.equal(a.indices, b.indices) and torch.equal(a.values, b.values)
        assert torch.equal(a.maps, b.maps)
        ch = torch.arange(c)[None]
        assert torch.equal(a.maps, maps[a.indices - 1000, ch].half())


def test_find_exemplars_identical_with_and_without_loader_workers(tmp_path, monkeypatch):
    """Images decoded by 2 worker processes give exactly the in-process result (CPU)."""
    from PIL import Image

    from vitviz_core.data import ImageFolderDataset

    monkeypatch.setenv("VITVIZ_CACHE", str(tmp_path / "cache"))
    g = torch.Generator().manual_seed(3)
    for c in ("n01440764", "n01443537"):
        (tmp_path / "img" / c).mkdir(parents=True)
        for i in range(7):
            arr = (torch.rand(40, 40, 3, generator=g) * 255).to(torch.uint8).numpy()
            Image.fromarray(arr).save(tmp_path / "img" / c / f"{i}.png")
    ds = ImageFolderDataset(tmp_path / "img", transform=_to_input)
    m = tiny_vit()
    hooks = ["blocks.0.mlp.hook_post", "blocks.1.hook_resid_post"]
    res = {
        w: ex.find_exemplars(m, ds, hooks, k=3, batch_size=4, cache=False, progress=False, num_workers=w)
        for w in (0, 2)
    }
    for h in hooks:
        for stat in ("mean", "max"):
            a, b = res[0].topk[h][stat], res[2].topk[h][stat]
            assert torch.equal(a.indices, b.indices) and torch.equal(a.values, b.values)
            assert torch.equal(a.maps, b.maps)
    assert res[0].files == res[2].files and len(res[0].files) == 14


def _to_input(img) -> torch.Tensor:
    """PIL image -> (3, 32, 32) input in [-1, 1] (module level: picklable for workers)."""
    import numpy as np

    x = torch.from_numpy(np.asarray(img.resize((32, 32)), dtype=np.float32)).permute(2, 0, 1)
    return x / 127.5 - 1.0


def test_map_pickers_agree_with_one_concatenated_tensor():
    """The accelerator picker (one concatenated copy), the CPU picker (per-hook segments,
    strided or transposed gathers) and plain indexing give the same maps."""
    g = torch.Generator().manual_seed(4)
    srcs = [torch.randn(6, 5, c, generator=g) for c in (3, 7, 4)]  # (B, P, C_i)
    whole = torch.cat(srcs, dim=2)  # (B, P, 14)
    for m in (0, 5, 80):  # few maps (strided gathers) and many (transposed copies)
        rows = torch.randint(0, 6, (m,), generator=g)
        ch = torch.randint(0, 14, (m,), generator=g)
        want = whole[rows, :, ch]  # (M, P)
        for sync_free in (False, True):
            assert torch.equal(ex._picker(srcs, sync_free)(rows, ch), want)
            assert torch.equal(
                ex._picker(srcs[:1], sync_free)(rows % 6, ch % 3), srcs[0][rows % 6, :, ch % 3]
            )


def test_activations_kept_without_copy_give_the_copied_result(tmp_path, monkeypatch):
    """A ViT's captured activations are used without a clone (nothing writes them in place
    after the hook); the result equals the copying path. Models with in-place modules copy."""
    monkeypatch.setenv("VITVIZ_CACHE", str(tmp_path / "cache"))
    m = tiny_vit()
    hooks = ["blocks.0.mlp.hook_post", "blocks.1.hook_resid_post"]
    assert ex._no_inplace_writes(m, hooks) and ex._no_inplace_writes(m, hooks[:1])
    resnet = timm.create_model("resnet18", pretrained=False, layers=[1, 1, 1, 1], num_classes=10)
    assert not ex._no_inplace_writes(resnet, ["layer1", "layer2"]) and ex._no_inplace_writes(
        resnet, ["layer1"]
    )
    ds = TensorDataset(torch.randn(13, 3, 32, 32), torch.zeros(13, dtype=torch.long), torch.arange(13))
    kw = dict(k=3, batch_size=4, cache=False, progress=False, num_workers=0)
    fast = ex.find_exemplars(m, ds, hooks, **kw)
    monkeypatch.setattr(ex, "_no_inplace_writes", lambda module, hooks: False)
    copied = ex.find_exemplars(m, ds, hooks, **kw)
    for h in hooks:
        for stat in ("mean", "max"):
            a, b = fast.topk[h][stat], copied.topk[h][stat]
            assert torch.equal(a.indices, b.indices) and torch.equal(a.values, b.values)
            assert torch.equal(a.maps, b.maps)
