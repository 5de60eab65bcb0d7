"""Tests of vitviz_core.studies_eval on tiny random timm models and synthetic data with
known answers (no real weights or data)."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import timm
import torch
from loaded import loaded
from matplotlib.figure import Figure
from torch import nn
from torch.utils.data import Dataset, TensorDataset
from torchvision import transforms as T

from vitviz_core import studies_eval as se
from vitviz_core.errors import VitvizError
from vitviz_core.evaluate.stats import Estimate
from vitviz_core.evaluate.token_mixing import token_mixing_batch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def tiny_vit(depth: int = 3, seed: int = 0, num_classes: int = 10) -> nn.Module:
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


class Indexed(Dataset):
    """``(x, label, index)`` items from tensors (``tensors`` makes it fingerprintable)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.tensors = (x, y)

    def __len__(self) -> int:
        return self.tensors[0].shape[0]

    def __getitem__(self, i: int):
        return self.tensors[0][i], int(self.tensors[1][i]), i


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VITVIZ_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def images(n: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- cache


def test_cached_computes_once_and_keys_on_settings_and_weights(cache):
    calls = []

    def compute():
        calls.append(1)
        return {"value": len(calls)}

    model = tiny_vit(depth=1)
    data = TensorDataset(torch.zeros(2, 3), torch.zeros(2))
    a = se.cached("t", compute, models=[model], data=data, settings={"k": 1})
    b = se.cached("t", compute, models=[model], data=data, settings={"k": 1})
    assert a == b == {"value": 1} and len(calls) == 1
    se.cached("t", compute, models=[model], data=data, settings={"k": 2})
    assert len(calls) == 2
    other = tiny_vit(depth=1, seed=1)  # same architecture, other weights
    se.cached("t", compute, models=[other], data=data, settings={"k": 1})
    assert len(calls) == 3
    se.cached("t", compute, models=[model], data=data, settings={"k": 1}, enabled=False)
    assert len(calls) == 4


def test_cached_recomputes_a_corrupt_file(cache):
    se.cached("c", lambda: 1, settings={"a": 1})
    (f,) = list((cache / "studies").glob("c-*.npz"))
    f.write_bytes(b"not a pickle")
    assert se.cached("c", lambda: 2, settings={"a": 1}) == 2


def test_cached_refuses_unfingerprintable_data(cache):
    class Opaque(Dataset):
        def __len__(self):
            return 1

    with pytest.raises(VitvizError, match="fingerprint"):
        se.cached("x", lambda: 1, data=Opaque())


# ----------------------------------------------------------------------------- token mixing


def test_one_way_cuts_match_known_cases():
    m = tiny_vit(depth=3)
    x = torch.randn(4, 3, 32, 32)
    out = se.one_way_logits(m, x, {"cls_blind": [0, 2, 3], "patches_blind": [0, 3]})
    natural = m(x)
    torch.testing.assert_close(out["cls_blind"][0], natural)
    torch.testing.assert_close(out["patches_blind"][0], natural)
    # CLS blind in every block = CLS processed alone = the paper's isolation at L = depth
    iso = token_mixing_batch(m, x, [3], [])["isolate"][3]
    torch.testing.assert_close(out["cls_blind"][3], iso, atol=1e-5, rtol=1e-5)
    # ... so its logits are the same for every image; the patches-blind CLS still reads the image
    assert torch.allclose(out["cls_blind"][3][0], out["cls_blind"][3][1], atol=1e-5)
    assert not torch.allclose(out["patches_blind"][3][0], out["patches_blind"][3][1], atol=1e-3)
    assert not torch.allclose(out["cls_blind"][2], natural, atol=1e-4)
    with pytest.raises(VitvizError, match="out of range"):
        se.one_way_logits(m, x, {"cls_blind": [4]})
    with pytest.raises(VitvizError, match="one-way"):
        se.one_way_logits(m, x, {"sideways": [1]})


def test_token_mixing_runs_share_one_pass_for_equal_data(cache):
    lm = loaded(tiny_vit(depth=2))
    x, y = images(6), torch.randint(0, 10, (6,))
    data = Indexed(lm.normalize(x), y)
    t1, s1 = se.token_mixing_runs(lm, data, data, batch_size=4, n_boot=50)
    assert t1 is s1 and sorted(t1.isolate) == [0, 1, 2] and t1.patch_map
    other = Indexed(lm.normalize(images(4, seed=1)), y[:4])
    t2, s2 = se.token_mixing_runs(lm, data, other, batch_size=4, n_boot=50)
    assert sorted(t2.isolate) == [0, 1] and sorted(s2.isolate) == [0, 1, 2] and not s2.patch_map
    frame = se.table1_frame(t2, label="toy")
    assert list(frame["paper ViT-B/16 top-1 %"]) == ["84.20", "78.61", "75.75", "80.16"]
    sweep = se.sweep_frame(s2)
    assert list(sweep["L"]) == [0, 1, 2]
    assert sweep.iloc[2, -2] == "82.98"  # the paper's CLS-join value at L = 2
    assert sweep.iloc[2, -1] == "0.16"  # the paper's patch-drop value at L = 2
    ow = se.one_way_run(lm, other, {"cls_blind": [1], "patches_blind": [1]}, batch_size=4, n_boot=50)
    assert set(ow) == {"cls_blind", "patches_blind"} and isinstance(ow["cls_blind"][1][1], Estimate)
    assert "both directions cut (paper)" in se.one_way_frame(s2, ow).columns
    assert isinstance(se.sweep_figure(s2, one_way=ow), Figure)


# ----------------------------------------------------------------------------- activation maps


def test_spatial_spread_extremes():
    uniform = torch.ones(2, 3, 4, 4)
    spike = torch.zeros(2, 3, 4, 4)
    spike[:, :, 1, 2] = 5.0
    torch.testing.assert_close(se.spatial_spread(uniform), torch.ones(2))
    torch.testing.assert_close(se.spatial_spread(spike), torch.zeros(2), atol=1e-6, rtol=0)


def test_top_feature_maps_selective_picks_the_image_specific_channel():
    m = tiny_vit(depth=2)
    x = torch.randn(5, 3, 32, 32)
    feats, scores, maps = se.top_feature_maps(m, x, "blocks.1.mlp.hook_post", n=2)
    assert feats.shape == scores.shape == (5, 2) and maps.shape == (5, 2, 4, 4)
    raw, _, _ = se.top_feature_maps(m, x, "blocks.1.mlp.hook_post", n=1, selective=False)
    with pytest.raises(VitvizError):
        se.top_feature_maps(m, x[:1], "blocks.1.mlp.hook_post", n=1)
    dm = se.depth_maps(m, x, [0, 1], n_boot=50)
    assert set(dm.spread) == {0, 1} and dm.maps[1].shape == (5, 4, 4)
    fig = se.saliency_figure(
        list(torch.rand(5, 3, 32, 32)),
        torch.stack([dm.maps[0], dm.maps[1]], 1),
        [["a", "b"]] * 5,
        row_labels=["block 0", "block 1"],
    )
    assert isinstance(fig, Figure) and isinstance(se.spread_figure(dm), Figure)


# ----------------------------------------------------------------------------- foreground


def test_saliency_boxes_and_fallback(tmp_path):
    m = np.zeros((10, 12), np.uint8)
    m[2:5, 3:9] = 255
    faint = np.zeros((10, 12), np.uint8)
    faint[7, 1] = 40  # nothing above 0.5: the fallback keeps pixels >= half the max
    boxes, n_fb = se.saliency_boxes([m, faint], [(tmp_path / "a.JPEG", 0), (tmp_path / "b.JPEG", 1)])
    (a,) = boxes["a"]
    assert (a.xmin, a.ymin, a.xmax, a.ymax) == (3, 2, 8, 4) and a.wnid == "n01440764"
    (b,) = boxes["b"]
    assert (b.xmin, b.ymin, b.xmax, b.ymax) == (1, 7, 1, 7) and n_fb == 1


def test_maps_in_view_follows_the_crop():
    m = np.zeros((40, 40), np.uint8)
    m[:, 20:] = 255  # right half is foreground
    out = se.maps_in_view([m], T.Compose([T.Resize(20), T.CenterCrop(20), T.ToTensor()]))
    assert out.shape == (1, 20, 20)
    assert out[0, :, :9].max() < 0.05 and out[0, :, 11:].min() > 0.95


def test_foreground_maps_batches_and_caches(cache):
    calls = []

    def fg(x):
        calls.append(x.shape[0])
        return x[:, :1].clone()  # "foreground" = red channel

    x = images(5)
    data = Indexed(x, torch.zeros(5, dtype=torch.long))
    maps = se.foreground_maps(data, fg, batch_size=2)
    assert calls == [2, 2, 1] and len(maps) == 5 and maps[0].dtype == np.uint8
    np.testing.assert_allclose(maps[3] / 255.0, x[3, 0].numpy(), atol=1 / 255 + 1e-6)
    se.foreground_maps(data, fg, batch_size=2)
    assert calls == [2, 2, 1]  # from the cache


def test_background_features_known_answers(cache):
    lm = loaded(tiny_vit(depth=2))
    x = lm.normalize(images(6))
    data = Indexed(x, torch.zeros(6, dtype=torch.long))
    hook = "blocks.1.mlp.hook_post"
    all_fg = se.background_features(lm, data, torch.ones(6, 32, 32), hook, n_boot=50)
    no_fg = se.background_features(lm, data, torch.zeros(6, 32, 32), hook, n_boot=50)
    assert all_fg.bg_area == 0.0 and no_fg.bg_area == 1.0
    ok = np.isfinite(all_fg.bg_fraction)
    assert ok.any()
    np.testing.assert_allclose(all_fg.bg_fraction[ok], 0.0, atol=1e-9)
    np.testing.assert_allclose(no_fg.bg_fraction[ok], 1.0, atol=1e-9)
    half = torch.zeros(6, 32, 32)
    half[:, :, 16:] = 1
    bf = se.background_features(lm, data, half, hook, n_boot=50, top=3)
    assert bf.bg_area == pytest.approx(0.5)
    shares = bf.bg_fraction[bf.ranked]
    assert (np.diff(shares) <= 1e-12).all() and len(bf.top_ci) == 3
    assert (bf.mass[bf.ranked] >= bf.min_mass).all()
    assert len(bf.exemplars(bf.ranked[0], k=3)) == 3
    pixels = Indexed(images(6), torch.zeros(6, dtype=torch.long))
    fig = se.background_feature_figure(bf, lm, pixels, half, bf.ranked[:2], k=3)
    assert isinstance(fig, Figure)
    assert isinstance(se.background_histogram({"toy": bf}), Figure)


# ----------------------------------------------------------------------------- masking, frequency


class Brightness(nn.Module):
    """Predicts class 1 when the mean pixel (in [0, 1]) exceeds 0.25, else class 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = (x * 0.5 + 0.5).mean(dim=(1, 2, 3))
        logits = torch.full((x.shape[0], 10), -10.0)
        logits[:, 0] = 0.25 - m
        logits[:, 1] = m - 0.25
        return logits


def test_frequency_run_appends_unfiltered_and_pairs(cache):
    lm = loaded(Brightness())
    x = images(8)
    y = torch.ones(8, dtype=torch.long)  # bright images: class 1
    data = Indexed(x, y)
    st = se.frequency_run(lm, data, low=(1, 4), high=(2,), gaussian=(1, 4), batch_size=4, n_boot=50)
    assert st.results["gaussian"].cutoffs == [1.0, 4.0, math.inf]
    assert list(se.frequency_frame(st, st, "gaussian", n_boot=50).iloc[:, 0]) == [
        "1",
        "4",
        "none (unfiltered)",
    ]
    assert isinstance(se.frequency_figure([st], "gaussian"), Figure)
    low, high = st.results["low"], st.results["high"]
    assert low.cutoffs[-1] == math.inf and len(low.top1["low"]) == 3
    assert low.top1["low"][-1] == low.natural_top1
    assert high.cutoffs == [2.0] and len(high.top1["high"]) == 1  # unfiltered = cut-off 0, not inf
    # a low-pass keeps the mean colour, which is all this model looks at
    assert [e.value for e in low.top1["low"]] == [1.0, 1.0, 1.0]
    frame = se.frequency_frame(st, st, "low", n_boot=50)
    assert list(frame["difference (points)"]) == ["+0.0 [+0.0, +0.0]"] * 3
    assert list(se.frequency_frame(st, st, "high", n_boot=50).iloc[:, 0]) == ["2", "none (unfiltered)"]
    assert isinstance(se.frequency_figure([st], "high"), Figure)
    d = se.difference_ci(np.ones(10), np.zeros(10), n_boot=50)
    assert d.value == d.low == d.high == 1.0


def test_frames_put_the_paper_beside_ours():
    from vitviz_core.evaluate.masking import MaskingResult

    e = Estimate(0.5, 0.4, 0.6, 10, "bootstrap")
    r = MaskingResult(
        model="toy",
        top1={c: e for c in ("full", "foreground", "background")},
        top5={c: e for c in ("full", "foreground", "background")},
        normalized_top5={"foreground": e, "background": e},
    )
    t2 = se.table2_frame({"toy": r})
    assert list(t2.columns) == [
        "%",
        "toy (ours)",
        "ViT-B/32 (paper)",
        "ViT-B/16 (paper)",
        "ResNet-50 (paper)",
        "MobileNetV2 (paper)",
    ]
    assert list(t2["ViT-B/16 (paper)"])[-2:] == ["95.64", "31.59"]
    # the full-image column of the released logs (top-1, top-5) and the MobileNetV2 row
    assert list(t2["ViT-B/16 (paper)"])[:2] == ["92.37", "99.22"]
    assert list(t2["MobileNetV2 (paper)"])[-1] == "15.94"
    assert t2["toy (ours)"].iloc[-1] == "50.0 [40.0, 60.0]"
    fills = se.fills_frame({"black": {"toy": r}, "dataset_mean": {"toy": r}})
    assert list(fills["fill"]) == ["black", "dataset_mean"]
    html = se.styled(t2).to_html()
    assert "padding" in html


def test_paper_numbers_reproduce_the_printed_tables():
    """Known answers: the normalised Table 2 derived from the released logs equals the numbers
    the paper prints, and the released sweeps agree with Table 1 where they overlap."""
    from vitviz_core.studies_eval import paper_numbers as pn

    assert pn.PAPER_TABLE2["ViT-B/32"] == (93.91, 28.10)
    assert pn.PAPER_TABLE2["ViT-B/16"] == (95.64, 31.59)
    assert pn.PAPER_TABLE2["ResNet-50"] == (89.69, 18.69)
    assert pn.PAPER_TABLE2["MobileNetV2"][1] == 15.94
    t1 = pn.PAPER_TABLE1
    assert pn.PAPER_DROP_SWEEP[12] == pn.PAPER_CLS_SWEEP[0] == t1["natural"][0]  # both = the normal pass
    assert pn.PAPER_CLS_SWEEP[11] == t1["isolate"][0]
    assert (pn.PAPER_DROP_SWEEP[10], pn.PAPER_DROP_SWEEP[11]) == (36.85, 71.24)
    drops = [pn.PAPER_DROP_SWEEP[v] for v in range(6, 13)]
    assert drops == sorted(drops)  # more blocks with the patches never hurt in the logs


# ----------------------------------------------------------------------------- misc


def test_prefer_channels_last_only_touches_cnns():
    cnn = nn.Sequential(*[nn.Conv2d(3, 3, 3, padding=1) for _ in range(5)])
    se.prefer_channels_last(cnn)
    assert cnn[0].weight.is_contiguous(memory_format=torch.channels_last)
    vit = tiny_vit(depth=1)
    se.prefer_channels_last(vit)
    assert vit.patch_embed.proj.weight.is_contiguous()


def test_short_source():
    lm = loaded(tiny_vit(depth=1))
    lm.weights_source = "file: /some/where/vit.safetensors"
    assert se.short_source(lm) == "file vit.safetensors"


def test_explorers_render_default_figures():
    lm = loaded(tiny_vit(depth=2))
    pixels = Indexed(images(3), torch.tensor([1, 2, -1]))
    tm = se.TokenMixingExplorer(lm, pixels, default=(0, 1))
    assert isinstance(tm.default_figure(), Figure)
    assert isinstance(tm.render(2, 2), Figure)  # unlabelled image
    fg = torch.zeros(3, 32, 32)
    fg[:, 8:24, 8:24] = 1
    mx = se.MaskingExplorer(
        {"a": lm, "b": loaded(Brightness())}, pixels, fg, default=(1, "dataset_mean", 4.0)
    )
    assert isinstance(mx.default_figure(), Figure)


class Threshold(nn.Module):
    """Class 1 when the mean pixel (in [0, 1]) exceeds ``t``, else class 0."""

    def __init__(self, t: float):
        super().__init__()
        self.t = t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = (x * 0.5 + 0.5).mean(dim=(1, 2, 3))
        logits = torch.full((x.shape[0], 10), -10.0)
        logits[:, 0], logits[:, 1] = self.t - m, m - self.t
        return logits


def test_masking_run_known_answers_and_paired_difference(tmp_path, monkeypatch, cache):
    from PIL import Image

    from vitviz_core.data import Box

    folder = tmp_path / "data" / "toyset" / "n01443537"  # ImageNet class 1
    folder.mkdir(parents=True)
    img = np.full((32, 32, 3), int(0.3 * 255), np.uint8)
    img[6:26, 6:26] = 255  # a bright 20 x 20 object on a dim background
    for i in range(4):
        Image.fromarray(img).save(folder / f"im{i}.png")
    monkeypatch.setenv("VITVIZ_DATA", str(tmp_path / "data"))
    boxes = {f"im{i}": [Box("n01443537", 6, 6, 25, 25)] for i in range(4)}
    strict, lenient = loaded(Threshold(0.25), name="strict"), loaded(Threshold(0.1), name="lenient")
    st = se.masking_run([strict, lenient], boxes, data_name="toyset", batch_size=3, n_boot=50)
    r = st.results["strict"]
    # full mean 0.58 and object alone 0.39 exceed 0.25; background alone (0.18) does not
    assert (r.top1["full"].value, r.top1["foreground"].value, r.top1["background"].value) == (1.0, 1.0, 0.0)
    assert r.foreground_fraction == pytest.approx(400 / 1024)
    assert st.results["lenient"].top1["background"].value == 1.0
    d = st.difference("strict", "lenient", "background", k=1, n_boot=50)
    assert d.value == d.low == d.high == -1.0
    with pytest.raises(VitvizError):
        se.masking_run([strict], boxes, data_name="toyset", fill="plaid")


def test_mixing_comparison_known_answer():
    """natural all correct, 4 of 10 wrong once the last block cannot read the patches:
    the last block adds 0.4; the paper's log gives 84.20 - 71.24 = 12.96 points."""
    from vitviz_core.evaluate.token_mixing import TokenMixingResult

    nat = np.ones(10, bool)
    drop = np.array([1] * 6 + [0] * 4, bool)
    e = lambda a: Estimate(float(a.mean()), float(a.mean()), float(a.mean()), a.size, "bootstrap")  # noqa: E731
    res = TokenMixingResult(
        depth=12,
        natural={1: e(nat)},
        drop={11: {1: e(drop)}},
        isolate={11: {1: e(np.zeros(10))}},
        correct={"natural": {1: nat}, "drop@11": {1: drop}},
    )
    lo, hi = Estimate(0.02, 0.01, 0.03, 10, "b"), Estimate(0.7, 0.6, 0.8, 10, "b")
    cmp = se.mixing_comparison(res, {"cls_blind": {11: {1: hi}}, "patches_blind": {11: {1: lo}}}, n_boot=200)
    assert cmp.layer == 11 and cmp.last_gain.value == pytest.approx(0.4)
    assert cmp.last_gain.low > 0 and cmp.globalization_holds
    assert cmp.paper_last_gain == pytest.approx(84.20 - 71.24)
    assert cmp.paper_isolate == 78.61 and cmp.patches_need_cls is True
    swapped = se.mixing_comparison(
        res, {"cls_blind": {11: {1: lo}}, "patches_blind": {11: {1: hi}}}, n_boot=200
    )
    assert swapped.patches_need_cls is False
    assert cmp.isolation_cause == "patches" and swapped.isolation_cause == "cls"
    same = se.mixing_comparison(res, {"cls_blind": {11: {1: lo}}, "patches_blind": {11: {1: lo}}}, n_boot=200)
    assert same.isolation_cause == "unresolved"
    assert se.mixing_comparison(res).patches_need_cls is None
    assert se.mixing_comparison(res).isolation_cause is None
    res.correct = {}
    with pytest.raises(VitvizError):
        se.mixing_comparison(res)


def test_class_span_known_answer():
    """Feature 0: all five exemplars of class 3 (1 class, every pair the same); feature 1:
    five classes (no pair the same); pool of 4 classes x 2 images: chance = 4*2 / (8*7)."""
    from vitviz_core.studies_eval.concept_span import chance_same_pair, class_span

    assert chance_same_pair([0, 0, 1, 1, 2, 2, 3, 3]) == pytest.approx(8 / 56)
    labels = np.array([[3, 3, 3, 3, 3], [0, 1, 2, 3, 4]])
    span = class_span(
        labels, [0, 0, 1, 1, 2, 2, 3, 3], groups={0: "a", 1: "a", 2: "b", 3: "b", 4: "c"}, n_boot=100
    )
    assert list(span.distinct) == [1, 5] and list(span.same_pair) == [1.0, 0.0]
    assert list(span.distinct_groups) == [1, 3]
    assert span.summary["distinct"].value == 3.0 and span.summary["same_pair"].value == 0.5
    assert span.ratio_to_chance.value == pytest.approx(0.5 / (8 / 56))
    # 2 of the 10 pairs of [1, 1, 2, 2, 5] share a class
    assert class_span(np.array([[1, 1, 2, 2, 5]]), [0, 1], n_boot=10).same_pair[0] == pytest.approx(0.2)
    with pytest.raises(VitvizError):
        class_span(np.array([1, 2]), [0, 1])
    with pytest.raises(VitvizError):
        class_span(labels, [0, 1], groups={0: "a"})


def test_class_span_run_on_a_tiny_vit(tmp_path, cache):
    """End to end on a random tiny ViT over a labelled toy folder: one row of k labels per
    feature, labels taken from the folder, chance from its class counts (2 x 3 images)."""
    from PIL import Image

    from vitviz_core.data import ImageFolderDataset
    from vitviz_core.studies_eval.concept_span import class_span_run

    root = tmp_path / "toy"
    for c, wnid in enumerate(("n01440764", "n01443537")):
        (root / wnid).mkdir(parents=True)
        for i in range(3):
            arr = np.full((40, 40, 3), 40 + 150 * c, np.uint8)
            arr[i, i] = 7
            Image.fromarray(arr).save(root / wnid / f"{wnid}_{i}.png")
    lm = loaded(tiny_vit(depth=2))
    data = ImageFolderDataset(root, transform=lm.eval_transform())
    span = class_span_run(lm, "blocks.1.mlp.hook_post", data, k=3, batch_size=4, n_boot=50)
    assert span.labels.shape == (128, 3) and set(np.unique(span.labels)) <= {0, 1}
    assert span.chance == pytest.approx(2 * 3 * 2 / (6 * 5))
    assert ((span.distinct >= 1) & (span.distinct <= 2)).all()
