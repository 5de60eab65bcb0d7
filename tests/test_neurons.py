"""Known-answer tests of vitviz_core.neurons on tiny random timm ViTs and synthetic tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vitviz_core.errors import HookError, VitvizError
from vitviz_core.neurons import clustering, level0, propagation, robustness


# ---------------------------------------------------------------- level 0


def test_extract_stitch_roundtrip():
    x = torch.randn(2, 3, 24, 16)
    p = level0.extract_patches(x, 8)
    assert p.shape == (2, 6, 3, 8, 8)
    assert torch.equal(p[0, 1], x[0, :, 0:8, 8:16])  # row-major token order
    assert torch.equal(level0.stitch_patches(p, (3, 2)), x)
    with pytest.raises(VitvizError):
        level0.extract_patches(torch.randn(1, 3, 20, 16), 8)


def test_level0_views_sum_to_conv_minus_bias(tiny_vit):
    w, b, p = level0.patch_embedding(tiny_vit)
    assert w.shape == (32, 3, 8, 8) and p == 8
    x = torch.randn(2, 3, 32, 32)
    conv = F.conv2d(x, w, b, stride=p).flatten(2).transpose(1, 2)  # (B, P, C)
    for c in (0, 7, 31):
        views = level0.level0_views(x, w, c)  # (B, P, 3, p, p)
        assert views.shape == (2, 16, 3, 8, 8)
        torch.testing.assert_close(views.sum((-3, -2, -1)), conv[..., c] - b[c], atol=1e-5, rtol=1e-5)
    # per input channel: the view's channel sum is that channel's conv contribution
    views = level0.level0_views(x, w, 3)
    per_ch = F.conv2d(x[:, :1], w[3:4, :1], stride=p).flatten(1)  # (B, P)
    torch.testing.assert_close(views[:, :, 0].sum((-2, -1)), per_ch, atol=1e-5, rtol=1e-5)
    many = level0.level0_views(x[0], w, [3, 5])  # single image -> (P, K, 3, p, p)
    assert many.shape == (16, 2, 3, 8, 8)
    torch.testing.assert_close(many[:, 0], views[0])
    resp = level0.neuron_responses(x, w, b)
    torch.testing.assert_close(resp, conv)
    m = level0.level0_view_map(x[0], w, 3)
    assert m.shape == (3, 32, 32)
    torch.testing.assert_close(m, level0.stitch_patches(views[0], (4, 4)))
    with pytest.raises(HookError):
        level0.level0_views(x, w, 32)


def test_patch_embedding_rejects_non_vit():
    with pytest.raises(HookError):
        level0.patch_embedding(torch.nn.Linear(3, 3))


def test_filter_stats_known_filters():
    p = 8
    yy, xx = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    flat = torch.ones(3, p, p)  # luminance DC
    colour = torch.stack([torch.ones(p, p), -torch.ones(p, p), torch.zeros(p, p)])  # red - green
    edge = (xx >= p // 2).float().sub(0.5).expand(3, p, p)  # vertical step edge
    texture = ((xx + yy) % 2).float().sub(0.5).expand(3, p, p)  # checkerboard (Nyquist)
    w = torch.stack([flat, colour, edge, texture])
    st = level0.filter_stats(w)
    assert st.labels == ["flat", "colour", "edge", "texture"]
    assert st.colour_fraction[0] == pytest.approx(0.0, abs=1e-9)
    assert st.colour_fraction[1] == pytest.approx(1.0)
    assert st.dc_fraction[0] == pytest.approx(1.0)
    assert st.mean_frequency[3] == pytest.approx(np.sqrt(0.5), rel=1e-6)  # (0.5, 0.5) cycles/px
    assert st.coherence[2] == pytest.approx(1.0)  # one orientation
    assert st.orientation[2] == pytest.approx(0.0, abs=1e-9)  # gradient along x
    assert st.counts() == {"colour": 1, "flat": 1, "edge": 1, "texture": 1}
    # pixel-space view: equal weights divided by unequal std become a colour filter
    assert level0.classify_filters(flat[None], std=[0.1, 1.0, 1.0]) == ["colour"]


def test_descriptor_correlations_find_the_colour_neuron():
    torch.manual_seed(0)
    x = torch.rand(4, 3, 32, 32)
    x[:2, 0] = 1.0  # very red images
    d = level0.patch_descriptors(x, 8)
    assert set(d) == {"colourfulness", "edges", "texture", "brightness"}
    assert d["edges"].shape == (4, 16)
    resp = torch.stack([d["colourfulness"], torch.rand(4, 16)], -1)  # (B, P, 2)
    corr = level0.descriptor_correlations(resp, d)
    assert corr["colourfulness"][0] == pytest.approx(1.0)
    assert abs(corr["colourfulness"][1]) < 0.4


def test_linear_probe_separable_vs_noise():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(5, 8)) * 5
    ytr, yte = np.repeat(np.arange(5), 20), np.repeat(np.arange(5), 10)
    xtr = centers[ytr] + rng.normal(size=(100, 8))
    xte = centers[yte] + rng.normal(size=(50, 8))
    good = level0.linear_probe(xtr, ytr, xte, yte, feature="good", n_boot=200)
    assert good.top1.value == 1.0 and good.top5.value == 1.0 and good.n_test == 50
    bad = level0.linear_probe(rng.normal(size=(100, 8)), ytr, rng.normal(size=(50, 8)), yte, n_boot=200)
    assert bad.top1.value < 0.5 and bad.top1.low <= bad.top1.value <= bad.top1.high
    # a test class never seen in training can never be right
    unseen = level0.linear_probe(xtr, ytr, xte[:5], np.full(5, 9), n_boot=50)
    assert unseen.top1.value == 0.0


def test_pooled_token_features_on_tiny_vit(tiny_vit):
    x = torch.randn(6, 3, 32, 32)
    batches = [(x[:3], torch.arange(3)), (x[3:], torch.arange(3, 6))]
    feats, labels = level0.pooled_token_features(
        tiny_vit, batches, ["hook_embed", "blocks.1.hook_resid_post"], progress=False
    )
    assert feats["hook_embed"].shape == (6, 32) and labels.tolist() == list(range(6))
    w, b, p = level0.patch_embedding(tiny_vit)
    expect = level0.neuron_responses(x, w, b).mean(1)  # (B, C): mean over patches
    np.testing.assert_allclose(feats["hook_embed"], expect.numpy(), atol=1e-5)


# ---------------------------------------------------------------- propagation


def test_rollout_identity_attention_leaves_views_unchanged():
    b, heads, npf, p = 2, 3, 1, 16
    eye = torch.eye(npf + p).expand(b, heads, -1, -1)
    rs = propagation.rollout([eye, eye, eye])
    for r in rs:
        torch.testing.assert_close(r, torch.eye(npf + p).expand(b, -1, -1))
    views = torch.randn(b, p, 3, 4, 4)
    for out in propagation.propagate_views(views, rs, npf):
        torch.testing.assert_close(out[:, npf:], views)
    maps = propagation.token_view_maps(views, rs, token=npf + 5, grid=(4, 4), num_prefix_tokens=npf)
    assert maps.shape == (3, b, 3, 16, 16)
    expect = torch.zeros(b, p, 3, 4, 4)
    expect[:, 5] = views[:, 5] * p
    torch.testing.assert_close(maps[0], level0.stitch_patches(expect, (4, 4)))
    assert propagation.mean_aggregation_distance(rs, (4, 4), npf).abs().max() < 1e-6


def test_rollout_rows_sum_to_one_and_uniform_attention_mixes():
    torch.manual_seed(0)
    attn = torch.rand(2, 2, 5, 5).softmax(-1)
    rs = propagation.rollout([attn, attn])
    for r in rs:
        torch.testing.assert_close(r.sum(-1), torch.ones(2, 5))
    # manual rollout of the first two layers
    a = 0.5 * attn.mean(1) + 0.5 * torch.eye(5)
    torch.testing.assert_close(rs[1], a @ a)
    # uniform attention without residual: every token becomes the mean of all patch views
    uni = torch.full((1, 1, 5, 5), 0.2)
    r = propagation.rollout([uni], residual_weight=0.0)
    views = torch.randn(1, 4, 3, 2, 2)
    out = propagation.propagate_views(views, r, num_prefix_tokens=1)[0]
    torch.testing.assert_close(out, views.mean(1, keepdim=True).expand(1, 5, 3, 2, 2))
    w, prefix = propagation.patch_rollout(r[0], 1, renormalize=False)
    torch.testing.assert_close(prefix, torch.full((1, 5), 0.2))
    with pytest.raises(VitvizError):
        propagation.rollout([uni], residual_weight=1.5)


def test_capture_attention_on_tiny_vit(tiny_vit):
    x = torch.randn(2, 3, 32, 32)
    att = propagation.capture_attention(tiny_vit, x)
    assert len(att) == 2 and att[0].shape == (2, 2, 17, 17)
    torch.testing.assert_close(att[0].sum(-1), torch.ones(2, 2, 17))
    with pytest.raises(HookError):
        propagation.capture_attention(tiny_vit, x, [5])
    sal = robustness.cls_attention_saliency(tiny_vit, x)
    assert sal.shape == (2, 4, 4)
    torch.testing.assert_close(sal, att[-1].mean(1)[:, 0, 1:].reshape(2, 4, 4))


# ---------------------------------------------------------------- clustering


def test_purity_known_answers():
    true = np.array([0] * 50 + [1] * 50)
    assert clustering.purity(true, true) == 1.0
    assert clustering.purity(1 - true, true) == 1.0  # label names do not matter
    assert clustering.purity(np.zeros(100, int), true) == 0.5  # one blob = majority share
    rng = np.random.default_rng(0)
    big = rng.integers(0, 2, 20000)
    assert clustering.purity(rng.integers(0, 2, 20000), big) == pytest.approx(0.5, abs=0.02)
    noisy = np.array([0, 0, -1, 1, 1, -1])
    t = np.array([0, 0, 0, 1, 1, 1])
    assert clustering.purity(noisy, t, noise="singleton") == 1.0
    assert clustering.purity(noisy, t, noise="exclude") == 1.0
    assert clustering.purity(noisy, t, noise="cluster") == pytest.approx(5 / 6)


def test_mask_to_patch_labels():
    m = torch.zeros(32, 32)
    m[:16, :16] = 1
    lab = clustering.mask_to_patch_labels(m, (4, 4))
    assert lab.shape == (16,) and lab.sum() == 4 and lab[0] and lab[1] and lab[4] and not lab[2]
    m2 = torch.zeros(2, 1, 30, 30)
    m2[1] = 1
    lab2 = clustering.mask_to_patch_labels(m2, (3, 3))
    assert lab2.shape == (2, 9) and lab2[1].all() and not lab2[0].any()


def test_clustering_recovers_separated_tokens_and_scores():
    rng = np.random.default_rng(0)
    t = np.array([0] * 30 + [1] * 34)
    tokens = rng.normal(size=(64, 16)) * 0.1
    tokens[t == 1, 0] += 5.0
    tokens[t == 0, 1] += 5.0
    for method in ("kmeans", "dbscan"):
        pred = clustering.cluster_tokens(tokens, method=method)
        s = clustering.score_clustering(tokens, t, pred, layer="L", method=method)
        assert s.purity == 1.0 and s.ari == pytest.approx(1.0) and s.silhouette_mask > 0.8
    tok = {"a": torch.tensor(tokens)[None].float(), "b": torch.randn(1, 64, 16)}
    scores = clustering.layer_cluster_scores(tok, torch.tensor(t)[None].bool(), methods=("kmeans",))
    rows = {r["layer"]: r for r in clustering.summarize_scores(scores, n_boot=50)}
    assert rows["a"]["purity"] == 1.0 and rows["b"]["purity"] < 0.8
    assert rows["a"]["baseline"] == pytest.approx(34 / 64)
    # single-class images are skipped (purity would be trivially 1)
    assert clustering.layer_cluster_scores(tok, torch.ones(1, 64, dtype=torch.bool)) == []
    emb = clustering.embed_2d(tokens, "pca")
    assert emb.shape == (64, 2)


def test_capture_patch_tokens_on_tiny_vit(tiny_vit):
    names = clustering.layer_hook_names(tiny_vit)
    assert names == ["hook_embed", "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    tok = clustering.capture_patch_tokens(tiny_vit, torch.randn(2, 3, 32, 32), names)
    assert all(v.shape == (2, 16, 32) for v in tok.values())


# ---------------------------------------------------------------- robustness


def test_shuffle_grid_one_is_identity_and_tiles_are_permuted():
    torch.manual_seed(0)
    x = torch.rand(3, 3, 32, 32)
    assert torch.equal(robustness.shuffle_patches(x, 1), x)
    for g in (2, 4, (2, 4)):
        y, perm = robustness.shuffle_patches(x, g, seed=1, return_permutation=True)
        assert not torch.equal(y, x)
        # same pixel multiset per image and channel
        assert torch.equal(y.flatten(2).sort(-1).values, x.flatten(2).sort(-1).values)
        # each output tile is an input tile, as the permutation says
        gh, gw = (g, g) if isinstance(g, int) else g
        th, tw = 32 // gh, 32 // gw
        for b in range(3):
            for k in range(gh * gw):
                src = int(perm[b, k])
                out = y[b, :, (k // gw) * th : (k // gw + 1) * th, (k % gw) * tw : (k % gw + 1) * tw]
                inp = x[b, :, (src // gw) * th : (src // gw + 1) * th, (src % gw) * tw : (src % gw + 1) * tw]
                assert torch.equal(out, inp)
    # seeded per image index, independent of batching
    full = robustness.shuffle_patches(x, 4, seed=3, indices=[10, 11, 12])
    part = robustness.shuffle_patches(x[1:], 4, seed=3, indices=[11, 12])
    assert torch.equal(full[1:], part)
    with pytest.raises(VitvizError):
        robustness.shuffle_patches(x, 3)


def test_occlusion_extremes_and_modes():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32)
    m0 = robustness.occlusion_mask(2, (4, 4), 0.0)
    assert torch.equal(robustness.occlude(x, m0, "black"), x)
    m1 = robustness.occlusion_mask(2, (4, 4), 1.0)
    assert torch.equal(robustness.occlude(x, m1, "black"), torch.zeros_like(x))
    full_mean = robustness.occlude(x, m1, "image_mean")
    torch.testing.assert_close(full_mean, x.mean((2, 3), keepdim=True).expand_as(x))
    assert torch.equal(robustness.occlude(x, m1, (0.1, 0.2, 0.3))[:, 1], torch.full((2, 32, 32), 0.2))
    half = robustness.occlusion_mask(2, (4, 4), 0.5, seed=0)
    assert half.sum((1, 2)).tolist() == [8, 8]
    y = robustness.occlude(x, half, "black")
    cell = F.interpolate(half[:, None].float(), size=(32, 32), mode="nearest").bool().expand_as(x)
    assert torch.equal(y[~cell], x[~cell]) and (y[cell] == 0).all()
    sal = torch.arange(16.0).view(1, 4, 4).expand(2, 4, 4)
    most = robustness.occlusion_mask(2, (4, 4), 0.25, "most", sal)
    least = robustness.occlusion_mask(2, (4, 4), 0.25, "least", sal)
    assert most.flatten(1)[0].nonzero().flatten().tolist() == [12, 13, 14, 15]
    assert least.flatten(1)[0].nonzero().flatten().tolist() == [0, 1, 2, 3]
    with pytest.raises(VitvizError):
        robustness.occlusion_mask(2, (4, 4), 0.5, "most")
    with pytest.raises(VitvizError):
        robustness.occlude(x, half, "purple")


def test_robustness_sweep_on_tiny_models(tiny_vit):
    x = torch.rand(4, 3, 32, 32)
    from vitviz_core.models import as_loaded

    # labels the clean model gets right by construction (a bare timm module is normalised by
    # its timm data config, as models.as_loaded says)
    y = tiny_vit(as_loaded(tiny_vit).normalize(x)).argmax(-1)
    loader = [(x[:2], y[:2], torch.arange(2)), (x[2:], y[2:], torch.arange(2, 4))]
    cnn = torch.nn.Sequential(
        torch.nn.Conv2d(3, 10, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    ).eval()
    res = robustness.robustness_sweep(
        {"vit": tiny_vit, "cnn": cnn},
        loader,
        shuffle_grids=(1, 4),
        occlusion_ratios=(0.0, 1.0),
        occlusion_modes=("random", "most"),
        occlusion_grid=(4, 4),
        saliency_fn=lambda x01, idx: robustness.cls_attention_saliency(tiny_vit, x01),
        progress=False,
    )
    assert res.variants[:3] == ["clean", "shuffle-g1", "shuffle-g4"]
    assert res.correct["vit"]["clean"][1].all()
    for m in ("vit", "cnn"):
        assert np.array_equal(res.correct[m]["occlude-random-0-black"][1], res.correct[m]["clean"][1])
        assert np.array_equal(res.correct[m]["shuffle-g1"][1], res.correct[m]["clean"][1])
    rows = robustness.summarize_sweep(res, n_boot=50)
    clean = [r for r in rows if r["model"] == "vit" and r["variant"] == "clean"][0]
    assert clean["acc"] == 1.0 and clean["n"] == 4
    assert {r["kind"] for r in rows} == {"clean", "shuffle", "occlude"}
    occ = [r for r in rows if r["variant"] == "occlude-most-1-black"]
    assert occ and occ[0]["mode"] == "most" and occ[0]["param"] == 1.0 and occ[0]["fill"] == "black"
    # an explicit occlusion list with a colour fill
    res2 = robustness.robustness_sweep(
        {"vit": tiny_vit},
        loader,
        shuffle_grids=(),
        occlusions=[("random", 0.5, (0.1, 0.2, 0.3))],
        occlusion_grid=(4, 4),
        progress=False,
    )
    assert res2.variants == ["clean", "occlude-random-0.5-0.1_0.2_0.3"]


# ---------------------------------------------------------------- figures


def test_plot_helpers_return_figures():
    from matplotlib.figure import Figure

    from vitviz_core.plot import neurons as pn

    torch.manual_seed(0)
    img = torch.rand(3, 16, 16)
    w = torch.randn(6, 3, 4, 4)
    st = level0.filter_stats(w)
    views = torch.stack([level0.level0_view_map(img, w, c) for c in (0, 1)])
    rng = np.random.default_rng(0)
    probe = level0.linear_probe(
        rng.normal(size=(20, 3)),
        np.arange(20) % 2,
        rng.normal(size=(10, 3)),
        np.arange(10) % 2,
        feature="f",
        n_boot=20,
    )
    pur_rows = [
        {
            "layer": f"blocks.{i}.hook_resid_post",
            "method": "kmeans",
            "purity": 0.7,
            "purity_low": 0.6,
            "purity_high": 0.8,
            "baseline": 0.6,
        }
        for i in range(3)
    ]
    rob_rows = [
        {
            "model": "vit",
            "variant": "clean",
            "kind": "clean",
            "mode": "",
            "param": 0.0,
            "acc": 0.8,
            "low": 0.7,
            "high": 0.9,
        },
        {
            "model": "vit",
            "variant": "shuffle-g2",
            "kind": "shuffle",
            "mode": "",
            "param": 2.0,
            "acc": 0.6,
            "low": 0.5,
            "high": 0.7,
        },
        {
            "model": "vit",
            "variant": "occlude-most-0.5-black",
            "kind": "occlude",
            "mode": "most",
            "fill": "black",
            "param": 0.5,
            "acc": 0.3,
            "low": 0.2,
            "high": 0.4,
        },
    ]
    figs = [
        pn.level0_views_figure(img, views, [0, 1], labels=st.labels[:2]),
        pn.filters_figure(w, st.labels),
        pn.filter_stats_figure(st),
        pn.probe_figure([probe, probe]),
        pn.probe_figure([probe, probe], ["a", "b"], extra=[("cnn stem", probe)]),
        pn.propagation_figure(img, torch.randn(2, 3, 16, 16), ["b0", "b1"], heat=torch.rand(2, 4, 4)),
        pn.purity_figure(pur_rows),
        pn.embeddings_figure([rng.normal(size=(8, 2))] * 2, np.arange(8) % 2, ["a", "b"]),
        pn.robustness_figure(rob_rows),
    ]
    assert all(isinstance(f, Figure) and f.axes for f in figs)
    rgb = pn.signed_to_rgb(torch.tensor([[[-2.0, 0.0, 2.0]]]).expand(3, 1, 3))
    np.testing.assert_allclose(rgb[0, :, 0], [0.0, 0.5, 1.0])


# ---------------------------------------------------------------- real weights (slow)


@pytest.mark.slow
@pytest.mark.shared
def test_real_vit_ti16_level0_and_rollout():
    from vitviz_core import data as vdata
    from vitviz_core import models as vmodels
    from vitviz_core.errors import DataError, WeightsUnavailableError

    try:
        vit = vmodels.load_model("vit-ti16")
        ds = vdata.ImageFolderDataset(
            vdata.find_dataset("imagenet-val-1300"), transform=vit.eval_transform(), max_images=2
        )
    except (WeightsUnavailableError, DataError) as exc:
        pytest.skip(f"shared weights/data not available: {exc}")
    if not vit.pretrained:
        pytest.skip("vit-ti16 weights not found")
    x = torch.stack([ds[0][0], ds[1][0]])  # (2, 3, 224, 224), normalized
    w, b, p = level0.patch_embedding(vit)
    assert w.shape == (192, 3, 16, 16)
    conv = level0.neuron_responses(x, w, b)  # (2, 196, 192)
    views = level0.level0_views(x, w, [0, 100])  # (2, 196, 2, 3, 16, 16)
    torch.testing.assert_close(
        views.sum((-3, -2, -1)), conv[..., [0, 100]] - b[[0, 100]], atol=1e-3, rtol=1e-4
    )
    tok = clustering.capture_patch_tokens(vit, x, ["hook_embed"])["hook_embed"]
    torch.testing.assert_close(tok, conv, atol=1e-4, rtol=1e-4)
    rs = propagation.rollout(propagation.capture_attention(vit, x))
    assert len(rs) == 12
    torch.testing.assert_close(rs[-1].sum(-1), torch.ones(2, 197))
    d = propagation.mean_aggregation_distance(rs, (14, 14))
    assert (d[1:] >= d[:-1] - 1e-4).all()  # tokens reach further with depth
    st = level0.filter_stats(w, std=vit.data_config["std"])
    assert sum(st.counts().values()) == 192


def test_salient_components_and_object_pair_purity_known_answer():
    """Two separate 2x3 object regions on a 4x8 grid; tokens of region A point one way, of
    region B another: k-means on the two regions is pure (1.0) against chance 0.5."""
    from vitviz_core.neurons import clustering as cl

    obj = torch.zeros(4, 8, dtype=torch.bool)
    obj[1:3, 0:3] = True  # region A, 6 patches
    obj[1:3, 5:8] = True  # region B, 6 patches
    obj[0, 4] = True  # a single patch: below min_patches
    comp = cl.salient_components(obj.flatten(), (4, 8), min_patches=2)
    assert sorted(set(comp.tolist())) == [-1, 0, 1]
    assert (comp == 0).sum() == 6 and (comp == 1).sum() == 6 and comp[4] == -1
    tok = torch.zeros(1, 32, 3)
    tok[0, :, 2] = 1.0
    tok[0, torch.as_tensor(comp == 0), 0] = 5.0
    tok[0, torch.as_tensor(comp == 1), 1] = 5.0
    scores = cl.object_pair_scores({"l": tok}, obj.flatten()[None], (4, 8), min_patches=2)
    assert len(scores) == 1 and scores[0].purity == 1.0 and scores[0].baseline == 0.5
    # one region only: the image is skipped
    one = torch.zeros(1, 32, dtype=torch.bool)
    one[0, :6] = True
    assert cl.object_pair_scores({"l": tok}, one, (4, 8), min_patches=2) == []
    with pytest.raises(VitvizError):
        cl.salient_components(obj.flatten(), (5, 5))
