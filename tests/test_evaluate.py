"""Tests of vitviz_core.evaluate and vitviz_core.plot.evaluation on tiny random models and
synthetic data with known answers."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from loaded import loaded as as_test_loaded
from PIL import Image
from torch import nn
from torch.utils.data import TensorDataset

from vitviz_core.errors import DataError, HookError, VitvizError
from vitviz_core.evaluate import exemplars as ex
from vitviz_core.evaluate import frequency as fq
from vitviz_core.evaluate import masking as mk
from vitviz_core.evaluate import probe as pr
from vitviz_core.evaluate import stats as st
from vitviz_core.evaluate import token_mixing as tm
from vitviz_core.hooks import capture

os.environ.setdefault("HF_HUB_OFFLINE", "1")

WNID0, WNID1 = "n01440764", "n01443537"  # ImageNet classes 0 and 1


# ----------------------------------------------------------------------------- fixtures


def tiny_vit(depth: int = 2, seed: int = 0, num_classes: int = 10) -> nn.Module:
    torch.manual_seed(seed)
    m = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=32,
        patch_size=8,
        depth=depth,
        embed_dim=32,
        num_heads=2,
        num_classes=num_classes,
    )
    return m.eval().requires_grad_(False)


class Brightness(nn.Module):
    """Predicts class 1 when the mean pixel (in [0, 1]) exceeds 0.25, else class 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = (x * 0.5 + 0.5).mean(dim=(1, 2, 3))  # undo loaded().normalize
        logits = torch.full((x.shape[0], 10), -10.0)
        logits[:, 0] = 0.25 - m
        logits[:, 1] = m - 0.25
        return logits


@pytest.fixture()
def toy_folder(tmp_path: Path) -> Path:
    """4 bright images of class 1 and 4 dark images of class 0, 40x40 PNG."""
    root = tmp_path / "data" / "toy"
    for wnid, value in ((WNID0, 25), (WNID1, 205)):
        (root / wnid).mkdir(parents=True)
        for i in range(4):
            arr = np.full((40, 40, 3), value, np.uint8)
            arr[i, i] = 128  # make every file distinct
            Image.fromarray(arr).save(root / wnid / f"img_{wnid}_{i}.png")
    return root


def write_csv(path: Path, folder: Path, box: str) -> Path:
    rows = ["ImageId,PredictionString"]
    for f in sorted(folder.rglob("*.png")):
        rows.append(f"{f.stem},{f.parent.name} {box}")
    path.write_text("\n".join(rows) + "\n")
    return path


# ----------------------------------------------------------------------------- stats


def test_bootstrap_ci_contains_estimate_and_narrows_with_n():
    rng = np.random.default_rng(1)
    small = rng.random(50) < 0.7
    large = rng.random(5000) < 0.7
    a = st.accuracy_with_ci(small)
    b = st.accuracy_with_ci(large)
    for e, x in ((a, small), (b, large)):
        assert e.low <= e.value <= e.high
        assert e.value == pytest.approx(x.mean())
    assert (b.high - b.low) < 0.3 * (a.high - a.low)  # ~ 1/sqrt(100) narrower
    assert st.accuracy_with_ci(small) == a  # fixed seed -> same interval


def test_wilson_ci_known_values():
    e = st.wilson_ci(8, 10)
    assert e.value == 0.8
    assert e.low == pytest.approx(0.4902, abs=1e-3) and e.high == pytest.approx(0.9433, abs=1e-3)
    assert st.wilson_ci(0, 20).low == 0.0
    narrow = st.wilson_ci(800, 1000)
    assert narrow.high - narrow.low < e.high - e.low
    with pytest.raises(VitvizError):
        st.wilson_ci(3, 2)


def test_ratio_with_ci_is_paired():
    num = np.array([1, 0, 1, 0] * 25, float)
    den = np.array([1, 1, 1, 0] * 25, float)
    e = st.ratio_with_ci(num, den)
    assert e.value == pytest.approx(50 / 75)
    assert e.low <= e.value <= e.high
    same = st.ratio_with_ci(den, den)  # paired resampling: exactly 1 in every resample
    assert same.low == same.high == 1.0


def test_topk_correct():
    logits = torch.tensor([[0.0, 3, 2, 1, -1, -2], [5, 4, 3, 2, 1, 0]])
    labels = torch.tensor([2, 5])
    hits = st.topk_correct(logits, labels, (1, 5))
    assert hits[1].tolist() == [False, False]
    assert hits[5].tolist() == [True, False]
    per_tok = st.topk_correct(logits[:, None].repeat(1, 3, 1), labels, (1,))
    assert per_tok[1].shape == (2, 3)


# ----------------------------------------------------------------------------- frequency


def test_filters_that_pass_everything_change_nothing():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 20)
    r = fq.max_radius(16, 20)
    assert torch.allclose(fq.low_pass(x, r), x, atol=1e-5)
    assert torch.allclose(fq.low_pass(x, math.inf), x, atol=1e-5)
    assert torch.allclose(fq.high_pass(x, 0, keep_dc=True), x, atol=1e-5)
    assert torch.allclose(fq.high_pass(x, -1, keep_dc=False), x, atol=1e-5)


def test_low_pass_at_zero_leaves_only_the_mean_and_complements_high_pass():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 16)
    mean = x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    assert torch.allclose(fq.low_pass(x, 0), mean, atol=1e-6)
    for c in (0, 1.5, 3, 7):
        assert torch.allclose(fq.low_pass(x, c) + fq.high_pass(x, c, keep_dc=False), x, atol=1e-5)


def test_filters_cut_a_known_frequency():
    w = torch.arange(32, dtype=torch.float32)
    wave = torch.cos(2 * math.pi * 5 * w / 32).expand(1, 1, 32, 32)  # 5 cycles along x
    x = 0.5 + 0.25 * wave
    assert torch.allclose(fq.low_pass(x, 4.9), torch.full_like(x, 0.5), atol=1e-5)
    assert torch.allclose(fq.low_pass(x, 5.0), x, atol=1e-5)
    assert torch.allclose(fq.high_pass(x, 4.9), x, atol=1e-5)
    assert torch.allclose(fq.high_pass(x, 5.0), torch.full_like(x, 0.5), atol=1e-5)


def test_frequency_sweep_on_a_mean_colour_classifier(toy_folder):
    res = fq.frequency_sweep(
        as_test_loaded(Brightness()),
        cutoffs=(0, 2, math.inf),
        kinds=("low", "high"),
        data_name="toy",
        data_root=toy_folder.parent,
        batch_size=3,
        progress=False,
    )
    # low-pass keeps the mean colour, and so does high_pass(keep_dc=True): nothing changes
    assert res.natural_top1.value == 1.0
    assert [e.value for e in res.top1["low"]] == [1.0, 1.0, 1.0]
    assert [e.value for e in res.top1["high"]] == [1.0, 1.0, 1.0]
    assert res.record.model["name"] == "toy" and res.record.data["n_images"] == 8
    assert res.to_dict()["cutoffs"][-1] == "inf"


# ----------------------------------------------------------------------------- token mixing


def test_isolating_cls_at_zero_is_the_normal_forward_exactly():
    m = tiny_vit(depth=3)
    x = torch.randn(4, 3, 32, 32)
    with torch.inference_mode():
        ref = m(x)
        iso = tm.isolated_cls_logits(m, x)
    assert sorted(iso) == [0, 1, 2, 3]
    assert torch.equal(iso[0], ref)
    assert not torch.allclose(iso[1], ref, atol=1e-4)


def test_isolating_cls_at_depth_never_sees_patches():
    m = tiny_vit(depth=3)
    x = torch.randn(2, 3, 32, 32)
    x2 = x.clone()
    x2[:, :, 8:24, 8:24] = torch.randn(2, 3, 16, 16)  # different patches
    with torch.inference_mode():
        a = tm.isolated_cls_logits(m, x, [2, 3])
        b = tm.isolated_cls_logits(m, x2, [2, 3])
        cls_alone = m.cls_token + m.pos_embed[:, :1]
        for blk in m.blocks:
            cls_alone = blk(cls_alone)
        alone = m.forward_head(m.norm(cls_alone))  # (1, K)
    assert torch.allclose(a[3], b[3], atol=1e-6)  # patches never reach CLS
    assert torch.allclose(a[3], alone.expand_as(a[3]), atol=1e-5)
    assert not torch.allclose(a[2], b[2], atol=1e-4)  # joined for the last block


def _reference_token_mixing(m: nn.Module, x: torch.Tensor, join: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The pre-rewrite implementation: CLS and the patches run as separate streams through
    blocks [0, join), then together; and CLS alone from block ``join``. Tokens entering
    block 0 come from a capture (no private timm API)."""
    with capture(m, ["blocks.0.hook_resid_pre"]) as cap:
        cap.forward(x)
    t = cap.activations["blocks.0.hook_resid_pre"]  # (B, L, C)
    cls, rest = t[:, :1], t[:, 1:]
    for blk in list(m.blocks)[:join]:
        cls, rest = blk(cls), blk(rest)
    z = torch.cat([cls, rest], dim=1)
    for blk in list(m.blocks)[join:]:
        z = blk(z)
    c = t
    for blk in list(m.blocks)[:join]:
        c = blk(c)
    c = c[:, :1]
    for blk in list(m.blocks)[join:]:
        c = blk(c)
    return m.forward_head(m.norm(z)), m.forward_head(m.norm(c))


def test_isolation_and_drop_by_attention_mask_equal_separate_streams():
    m = tiny_vit(depth=3)
    x = torch.randn(4, 3, 32, 32)
    with torch.inference_mode():
        out = tm.token_mixing_batch(m, x, join_layers=None, drop_layers=None)
        for join in range(4):
            iso, drop = _reference_token_mixing(m, x, join)
            assert torch.allclose(out["isolate"][join], iso, atol=1e-5), join
            assert torch.allclose(out["drop"][join], drop, atol=1e-5), join
        # micro-batches (fewer rows per pass) give the same numbers
        small = tm.prefix_masked_logits(m, x, {"iso": (tm.cls_isolation_mask, [0, 1, 3])}, [1], max_rows=3)
    assert torch.allclose(small["groups"]["iso"][1], out["isolate"][1], atol=1e-6)
    assert torch.allclose(small["drop"][1], out["drop"][1], atol=1e-6)


def test_dropping_patches_and_patch_head():
    m = tiny_vit(depth=2)
    x = torch.randn(3, 3, 32, 32)
    with torch.inference_mode():
        out = tm.token_mixing_batch(m, x, join_layers=None, drop_layers=None, patch_head=True)
        ref = m(x)
        feats = m.forward_features(x)  # (B, 1+N, C), final-normed
    assert torch.equal(out["drop"][2], ref)  # drop after the last block = normal
    assert torch.allclose(out["drop"][0], out["isolate"][2], atol=1e-6)  # CLS alone throughout
    assert out["patch"].shape == (3, 16, 10)
    assert torch.allclose(out["patch"], m.head(feats[:, 1:]), atol=1e-6)
    # head on the average patch token = average of the per-patch logits (linear head)
    assert torch.allclose(out["patch_pooled"], out["patch"].mean(1), atol=1e-5)


def test_token_mixing_errors():
    m = tiny_vit(depth=2)
    with pytest.raises(HookError):
        tm.isolated_cls_logits(m, torch.randn(1, 3, 32, 32), [3])
    with pytest.raises(VitvizError):
        tm.isolated_cls_logits(nn.Conv2d(3, 3, 1), torch.randn(1, 3, 32, 32))


def test_token_mixing_experiment_records_a_table():
    m = tiny_vit(depth=2)
    x = torch.randn(10, 3, 32, 32)
    with torch.inference_mode():
        labels = m(x).argmax(-1)  # the model is right on every image by construction
    ds = TensorDataset(x, labels, torch.arange(10))
    res = tm.token_mixing_experiment(m, ds, batch_size=4, n_boot=200, progress=False)
    assert res.natural[1].value == 1.0 and res.isolate[0][1].value == 1.0
    assert res.drop[2][1].value == 1.0
    assert sorted(res.isolate) == [0, 1, 2] and sorted(res.drop) == [0, 1, 2]
    assert res.patch_map[1].shape == (4, 4)
    r, c = res.best_position
    assert res.patch_best[1].value == pytest.approx(res.patch_map[1][r, c])
    assert res.patch_map[1].max() == pytest.approx(res.patch_best[1].value)
    assert res.patch_mean[1].value == pytest.approx(res.patch_map[1].mean())
    d = res.to_dict()
    assert d["record"]["settings"]["join_layers"] == [0, 1, 2]


# ----------------------------------------------------------------------------- masking


def test_full_image_box_background_only_is_pure_fill(toy_folder, tmp_path):
    loaded = as_test_loaded(Brightness())
    csv = write_csv(tmp_path / "LOC_val_solution.csv", toy_folder, "0 0 39 39")
    ds = mk.BoxMaskDataset(toy_folder, csv, loaded.pixel_transform())
    x, label, idx, mask = ds[0]
    assert mask.shape == (32, 32) and bool(mask.all())
    xb = x[None]
    for fill in ("black", "dataset_mean", (0.2, 0.4, 0.6)):
        bg_only = mk.apply_mask(xb, ~mask[None], fill)
        assert torch.equal(bg_only, mk.fill_image(xb, fill))
        assert torch.equal(mk.apply_mask(xb, mask[None], fill), xb)
    blur = mk.apply_mask(xb, ~mask[None], "blur", blur_sigma=2.0)
    assert torch.equal(blur, mk.fill_image(xb, "blur", 2.0))


def test_box_masks_follow_the_crop(toy_folder, tmp_path):
    loaded = as_test_loaded(Brightness())
    csv = write_csv(tmp_path / "LOC_val_solution.csv", toy_folder, "0 0 19 39")  # left half
    ds = mk.BoxMaskDataset(toy_folder, csv, loaded.pixel_transform())
    mask = ds[3][3]
    assert mask[:, :15].all() and not mask[:, 17:].any()


def test_masking_experiment_known_answer(toy_folder, tmp_path):
    loaded = as_test_loaded(Brightness())
    csv = write_csv(tmp_path / "LOC_val_solution.csv", toy_folder, "0 0 39 39")
    res = mk.masking_experiment(
        [loaded],
        masks="boxes",
        boxes=csv,
        data_name="toy",
        data_root=toy_folder.parent,
        batch_size=3,
        n_boot=200,
        progress=False,
    )
    r = res["toy"]
    assert r.top1["full"].value == 1.0 and r.top1["foreground"].value == 1.0
    assert r.top1["background"].value == 0.5  # all black: every image looks dark (class 0)
    assert r.normalized_top5["foreground"].value == 1.0
    assert r.foreground_fraction == 1.0 and r.empty_masks == 0
    assert r.record.settings["fill"] == "black"
    # a callable mask source gives the same answer
    res2 = mk.masking_experiment(
        loaded,
        masks=lambda x: torch.ones(x.shape[0], *x.shape[-2:], dtype=torch.bool),
        data_name="toy",
        data_root=toy_folder.parent,
        n_boot=200,
        progress=False,
    )
    assert res2["toy"].top1["background"].value == 0.5


def test_masking_with_a_foreground_model(toy_folder):
    class CentreBlob:  # a stand-in saliency model: a blob in the image centre
        def __call__(self, x01):
            p = torch.zeros(x01.shape[0], 1, *x01.shape[-2:])
            p[:, :, 12:20, 10:22] = 0.9
            return p

    loaded = as_test_loaded(Brightness())
    res = mk.masking_experiment(
        loaded,
        masks="foreground",
        foreground_model=CentreBlob(),
        mode="box",
        data_name="toy",
        data_root=toy_folder.parent,
        n_boot=100,
        progress=False,
    )
    r = res["toy"]
    assert r.foreground_fraction == pytest.approx(8 * 12 / (32 * 32))
    assert r.top1["foreground"].value == 0.5  # a small bright box on black looks dark
    assert r.top1["background"].value == 1.0  # most of the image is still there
    assert r.record.settings["masks"]["mode"] == "box"


def test_bad_box_files_raise_data_error(toy_folder, tmp_path):
    tf = as_test_loaded(Brightness()).pixel_transform()
    bad = tmp_path / "bad.csv"
    bad.write_text("ImageId,PredictionString\nimg_x,n01440764 1 2 3\n")
    with pytest.raises(DataError, match="bad.csv"):
        mk.BoxMaskDataset(toy_folder, bad, tf)
    with pytest.raises(DataError, match="not found"):
        mk.BoxMaskDataset(toy_folder, tmp_path / "nope.csv", tf)
    partial = tmp_path / "partial.csv"
    partial.write_text("ImageId,PredictionString\nimg_n01440764_0,n01440764 0 0 5 5\n")
    with pytest.raises(DataError, match="no box annotation"):
        mk.BoxMaskDataset(toy_folder, partial, tf)
    assert len(mk.BoxMaskDataset(toy_folder, partial, tf, missing="skip")) == 1
    xml_dir = tmp_path / "xml"
    xml_dir.mkdir()
    (xml_dir / "img_n01440764_0.xml").write_text("<annotation><size><width>40</width></size>")
    with pytest.raises(DataError, match="img_n01440764_0.xml"):
        mk.BoxMaskDataset(toy_folder, xml_dir, tf, missing="skip")


def test_xml_boxes_are_rescaled_to_the_image_on_disk(toy_folder, tmp_path):
    xml_dir = tmp_path / "xml"
    xml_dir.mkdir()
    for f in toy_folder.rglob("*.png"):  # annotated at 80x80, stored at 40x40: box = left half
        (xml_dir / f"{f.stem}.xml").write_text(
            "<annotation><size><width>80</width><height>80</height></size><object><name>"
            f"{f.parent.name}</name><bndbox><xmin>0</xmin><ymin>0</ymin><xmax>39</xmax>"
            "<ymax>79</ymax></bndbox></object></annotation>"
        )
    ds = mk.BoxMaskDataset(toy_folder, xml_dir, as_test_loaded(Brightness()).pixel_transform())
    mask = ds[0][3]
    assert mask[:, :15].all() and not mask[:, 17:].any()


def test_mask_bbox_and_saliency_threshold():
    m = torch.zeros(2, 8, 8, dtype=torch.bool)
    m[0, 2, 3] = m[0, 5, 6] = True
    box = mk.mask_bbox(m)
    assert box[0, 2:6, 3:7].all() and box[0].sum() == 16
    assert not box[1].any()  # empty stays empty
    prob = torch.zeros(1, 1, 4, 4)
    prob[0, 0, 1, 1] = 0.9
    assert mk.saliency_to_mask(prob, 0.5, "threshold").sum() == 1
    with pytest.raises(VitvizError):
        mk.fill_image(torch.zeros(1, 3, 4, 4), "purple")


# ----------------------------------------------------------------------------- exemplars


def brightness_vit() -> nn.Module:
    """Patch-embedding channel 0 = mean pixel value of the patch."""
    m = tiny_vit(depth=2)
    with torch.no_grad():
        m.patch_embed.proj.weight[0] = 1.0 / (3 * 8 * 8)
        m.patch_embed.proj.bias[0] = 0.0
    return m


def test_topk_finds_planted_images(tmp_path, monkeypatch):
    monkeypatch.setenv("VITVIZ_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    x = torch.rand(20, 3, 32, 32) * 0.5
    x[7] = 0.9  # brightest image overall -> top by patch-mean
    x[13, :, 8:16, 16:24] = 3.0  # one very bright patch (row 1, col 2) -> top by patch-max
    ds = TensorDataset(x, torch.zeros(20, dtype=torch.long), torch.arange(20))
    res = ex.find_exemplars(brightness_vit(), ds, ["hook_embed"], k=3, batch_size=6, progress=False)
    assert res.top("hook_embed", 0, "mean")[0][0] == 7
    assert res.top("hook_embed", 0, "max")[0][0] == 13
    assert res.top("hook_embed", 0, "max")[0][1] == pytest.approx(3.0, abs=1e-4)
    amap = res.maps("hook_embed", 0, "max")[0]  # (4, 4)
    assert divmod(int(amap.argmax()), 4) == (1, 2)
    with pytest.raises(HookError):
        res.top("hook_embed", 999)


def test_streaming_topk_equals_brute_force(tmp_path, monkeypatch):
    from vitviz_core.hooks import capture, to_patch_maps

    monkeypatch.setenv("VITVIZ_CACHE", str(tmp_path / "cache"))
    m = tiny_vit(depth=2)
    x = torch.randn(23, 3, 32, 32)
    ds = TensorDataset(x, torch.zeros(23, dtype=torch.long), torch.arange(100, 123))
    hooks = ["blocks.1.mlp.hook_post", "blocks.0.hook_resid_post"]
    res = ex.find_exemplars(m, ds, hooks, k=5, batch_size=4, cache=False, progress=False)
    with torch.inference_mode(), capture(m, hooks) as cap:
        cap.forward(x)
        for h in hooks:
            maps = to_patch_maps(cap.activations[h], cap.specs[h])  # (23, C, 4, 4)
            for stat in ("mean", "max"):
                v, i = ex.score_maps(maps, stat).topk(5, dim=0)  # (5, C)
                got = res.topk[h][stat]
                assert torch.allclose(got.values, v, atol=1e-5)
                assert torch.equal(got.indices, i + 100)
                ch = torch.arange(maps.shape[1])[None]
                assert torch.allclose(got.maps.float(), maps[i, ch], atol=2e-3)


def test_topk_state_with_fewer_images_than_k():
    s = ex.TopKState(k=5, channels=2, grid=None)
    s.update(torch.tensor([[1.0, 2.0], [3.0, 0.0]]), torch.tensor([10, 11]))
    r = s.result()
    assert r.values.shape == (2, 2)
    assert r.indices[:, 0].tolist() == [11, 10] and r.indices[:, 1].tolist() == [10, 11]


def test_exemplar_cache_hit_does_not_run_the_model(tmp_path, monkeypatch):
    monkeypatch.setenv("VITVIZ_CACHE", str(tmp_path / "cache"))
    m = tiny_vit(depth=2)
    ds = TensorDataset(torch.randn(9, 3, 32, 32), torch.zeros(9, dtype=torch.long), torch.arange(9))
    hooks = ["blocks.1.mlp.hook_post"]
    first = ex.find_exemplars(m, ds, hooks, k=3, batch_size=4, progress=False)
    assert not first.from_cache and Path(first.cache_path).is_file()

    def boom(module, args):
        raise AssertionError("the model ran on a cache hit")

    handle = m.register_forward_pre_hook(boom)
    try:
        second = ex.find_exemplars(m, ds, hooks, k=3, batch_size=4, progress=False)
        assert second.from_cache
        for stat in ("mean", "max"):
            a, b = first.topk[hooks[0]][stat], second.topk[hooks[0]][stat]
            assert torch.equal(a.values, b.values) and torch.equal(a.indices, b.indices)
            assert torch.equal(a.maps, b.maps)
        with pytest.raises(AssertionError, match="cache hit"):  # another k is another key
            ex.find_exemplars(m, ds, hooks, k=2, batch_size=4, progress=False)
        with torch.no_grad():
            m.head.bias += 1.0  # other weights are another key too
        with pytest.raises(AssertionError, match="cache hit"):
            ex.find_exemplars(m, ds, hooks, k=3, batch_size=4, progress=False)
    finally:
        handle.remove()


def test_activation_maps_shapes_and_values():
    m = brightness_vit()
    x = torch.zeros(2, 3, 32, 32)
    x[1, :, :8, :8] = 1.0
    coarse = ex.activation_maps(m, x, "hook_embed", 0, size=None)
    assert coarse.shape == (2, 4, 4)
    assert coarse[1, 0, 0] == pytest.approx(1.0, abs=1e-5) and coarse[1, 3, 3] == pytest.approx(0.0, abs=1e-5)
    assert ex.activation_maps(m, x, "hook_embed", 0).shape == (2, 32, 32)
    with pytest.raises(HookError):
        ex.activation_maps(m, x, "hook_embed", 32)


# ----------------------------------------------------------------------------- probe


def test_linear_probe_fits_separable_features_and_heads_tokens():
    torch.manual_seed(0)
    centres = torch.randn(5, 16) * 3
    labels = torch.arange(5).repeat(8)
    feats = centres[labels] + 0.1 * torch.randn(40, 16)
    probe = pr.fit_linear_probe(feats, labels, num_classes=5, epochs=30, lr=0.1)
    assert (probe(feats).argmax(-1) == labels).all()
    assert probe.token_head(feats.view(8, 5, 16)).shape == (8, 5, 5)
    soft = pr.fit_linear_probe(
        feats, torch.nn.functional.one_hot(labels, 5).float() * 10, num_classes=5, epochs=30, lr=0.1
    )
    assert (soft(feats).argmax(-1) == labels).mean(dtype=torch.float) > 0.95


def test_probe_head_plugs_into_token_mixing():
    m = tiny_vit(depth=2, num_classes=0)  # headless backbone
    x = torch.randn(6, 3, 32, 32)
    ds = TensorDataset(x, torch.arange(6) % 3, torch.arange(6))
    feats, labels, _ = pr.extract_features(m, ds, "cls", progress=False)
    assert feats.shape == (6, 32) and labels.tolist() == [0, 1, 2, 0, 1, 2]
    probe = pr.fit_linear_probe(feats, labels, num_classes=3, epochs=50)
    with pytest.raises(VitvizError):
        tm.patch_head_logits(m, x)  # no head
    res = tm.token_mixing_experiment(
        m, ds, head=probe.head_for(m), token_head=probe.token_head, n_boot=100, progress=False
    )
    assert res.natural[1].value == pytest.approx((probe(feats).argmax(-1) == labels).float().mean().item())


# ----------------------------------------------------------------------------- plots


def test_plot_helpers_return_figures(toy_folder, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from vitviz_core.plot import evaluation as plot_eval
    from vitviz_core.data import ImageFolderDataset

    monkeypatch.setenv("VITVIZ_CACHE", str(tmp_path / "cache"))
    loaded = as_test_loaded(tiny_vit(depth=1))
    res = ex.find_exemplars(
        loaded,
        ImageFolderDataset(toy_folder, transform=loaded.eval_transform()),
        ["blocks.0.mlp.hook_post"],
        k=4,
        progress=False,
    )
    assert len(res.images("blocks.0.mlp.hook_post", 3)) == 4

    e = st.Estimate(0.5, 0.4, 0.6, 100, "bootstrap")
    figs = [
        plot_eval.overlay_activation(torch.rand(3, 32, 32), torch.rand(4, 4), title="x"),
        plot_eval.patch_accuracy_heatmap(np.random.rand(4, 4)),
        plot_eval.accuracy_curves({"a": ([1, 2, 4], [e, e, e])}, logx=True),
    ]
    fr = fq.FrequencyResult(
        cutoffs=[1, 2, math.inf], kinds=["low"], top1={"low": [e, e, e]}, top5={"low": [e, e, e]}
    )
    figs.append(plot_eval.frequency_curves({"m": fr}))
    mr = mk.MaskingResult(
        model="m", top5={c: e for c in mk.CONDITIONS}, normalized_top5={"foreground": e, "background": e}
    )
    figs.append(plot_eval.masking_bars({"m": mr, "n": mr}, "normalized_top5"))
    tr = tm.TokenMixingResult(depth=2, natural={1: e}, isolate={0: {1: e}, 1: {1: e}}, drop={0: {1: e}})
    figs.append(plot_eval.join_layer_curves(tr))
    figs.append(
        plot_eval.exemplar_grid(res, "blocks.0.mlp.hook_post", 3, "max", transform=loaded.pixel_transform())
    )
    assert all(isinstance(f, Figure) for f in figs)


# ----------------------------------------------------------------------------- real models


def _shared_or_skip() -> None:
    from vitviz_core import config

    root = config.data_root()
    if root is None or not (root / "imagenet-val-1300").is_dir() or not config.weights_paths():
        pytest.skip("needs ../shared (imagenet-val-1300 and the ViT-Ti/16 weights)")


@pytest.mark.slow
@pytest.mark.shared
def test_real_vit_token_mixing_matches_plain_accuracy():
    _shared_or_skip()
    from vitviz_core.evaluate.common import (
        evaluate_variants,
        make_loader,
        pixel_dataset,
    )
    from vitviz_core.models import load_model

    lm = load_model("vit-ti16")
    res = tm.token_mixing_experiment(
        lm, join_layers=[0, 12], drop_layers=[12], max_images=32, n_boot=200, progress=False
    )
    plain = evaluate_variants(
        lm, make_loader(pixel_dataset(lm, max_images=32)), lambda x, *_: {"x": x}, progress=False
    )
    assert res.natural[1].value == pytest.approx(plain.accuracy("x", 1), abs=1 / 32)
    assert res.drop[12][1].value == res.natural[1].value
    assert res.isolate[12][1].value < 0.1  # CLS that never sees a patch knows nothing
    assert res.natural[1].value > 0.5
