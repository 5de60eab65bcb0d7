"""The variant-evaluation core (vitviz_core.evaluate.common): per-image results first,
aggregates as views. Each check recomputes the result the straightforward way (the loops
masking and robustness had before they shared the core) on tiny random models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from loaded import loaded as make_loaded
from vitviz_core.evaluate import common
from vitviz_core.models import as_loaded
from vitviz_core.evaluate.stats import accuracy_with_ci, ratio_with_ci, topk_correct


@pytest.fixture(scope="module")
def batches() -> list:
    torch.manual_seed(1)
    x = torch.rand(6, 3, 32, 32)
    y = torch.randint(0, 10, (6,))
    return [(x[:4], y[:4], torch.arange(4)), (x[4:], y[4:], torch.arange(4, 6))]


def _variants(x, y, idx, *rest):
    return {"clean": x, "dark": x * 0.3, "flip": x.flip(-1)}


def _reference(forward, batches, variant):
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    with torch.inference_mode():
        logits = forward(_variants(x, y, None)[variant]).float()  # (N, K)
    return {k: v.numpy() for k, v in topk_correct(logits, y, (1, 5)).items()}, logits.argmax(-1).numpy()


def test_per_image_results_match_a_direct_forward(tiny_vit, batches):
    cnn = torch.nn.Sequential(
        torch.nn.Conv2d(3, 10, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    ).eval()
    loaded = make_loaded(tiny_vit)
    res = common.evaluate_variants_many({"vit": loaded, "cnn": cnn}, batches, _variants, progress=False)
    assert res.variants == ["clean", "dark", "flip"] and set(res.by_model) == {"vit", "cnn"}
    assert res.labels.tolist() == torch.cat([b[1] for b in batches]).tolist()
    assert res.indices.tolist() == list(range(6)) and set(res.seconds) == {"vit", "cnn", "variants"}
    for name, forward in (("vit", lambda v: tiny_vit(loaded.normalize(v))), ("cnn", cnn)):
        corr = res.by_model[name]
        for v in res.variants:
            hits, pred = _reference(forward, batches, v)
            np.testing.assert_array_equal(corr.correct[v][1], hits[1])
            np.testing.assert_array_equal(corr.correct[v][5], hits[5])
            np.testing.assert_array_equal(corr.predicted[v], pred)
            np.testing.assert_array_equal(corr.predicted[v] == corr.labels, corr.correct[v][1])
            # aggregates are views of the per-image record
            assert corr.accuracy(v, 5) == float(hits[5].mean())
            assert corr.estimate(v, 1, n_boot=100) == accuracy_with_ci(hits[1], n_boot=100)
        assert corr.relative("dark", "clean", 5, n_boot=100) == ratio_with_ci(
            corr.correct["dark"][5], corr.correct["clean"][5], n_boot=100
        )
    assert res.correct["cnn"] is res.by_model["cnn"].correct


def test_single_model_wrapper_is_the_same_core(tiny_vit, batches):
    many = common.evaluate_variants_many({"m": tiny_vit}, batches, _variants, progress=False).by_model["m"]
    one = common.evaluate_variants(tiny_vit, batches, _variants, progress=False)
    assert isinstance(one, common.Correctness) and one.variants == many.variants
    for v in one.variants:
        np.testing.assert_array_equal(one.correct[v][1], many.correct[v][1])
        np.testing.assert_array_equal(one.predicted[v], many.predicted[v])


def test_masking_experiment_equals_the_direct_computation(tiny_vit, toy_pixels):
    from vitviz_core.evaluate import masking as mk

    loaded, data = toy_pixels(tiny_vit)

    def center(x):  # (B, 3, H, W) -> (B, H, W)
        m = torch.zeros(x.shape[0], *x.shape[-2:], dtype=torch.bool)
        m[:, 8:24, 8:24] = True
        return m

    for fill in ("black", "blur", "dataset_mean"):
        r = mk.masking_one(loaded, data, center, fill, batch_size=3, n_boot=200, progress=False)
        x = torch.stack([data[i][0] for i in range(len(data))])
        y = torch.tensor([data[i][1] for i in range(len(data))])
        keep = center(x)
        with torch.inference_mode():
            logits = {
                c: tiny_vit(loaded.normalize(v))
                for c, v in (
                    ("full", x),
                    ("foreground", mk.apply_mask(x, keep, fill)),
                    ("background", mk.apply_mask(x, ~keep, fill)),
                )
            }
        hits = {c: {k: t.numpy() for k, t in topk_correct(lg, y, (1, 5)).items()} for c, lg in logits.items()}
        for c in mk.CONDITIONS:
            assert r.top1[c] == accuracy_with_ci(hits[c][1], n_boot=200)
            assert r.top5[c] == accuracy_with_ci(hits[c][5], n_boot=200)
            np.testing.assert_array_equal(r.correctness.correct[c][5], hits[c][5])
        assert r.normalized_top5["background"] == ratio_with_ci(
            hits["background"][5], hits["full"][5], n_boot=200
        )
        assert r.foreground_fraction == pytest.approx(0.25)


def test_robustness_sweep_equals_the_direct_computation(tiny_vit, batches):
    from vitviz_core.neurons import robustness as rb

    res = rb.robustness_sweep(
        {"vit": tiny_vit},
        batches,
        shuffle_grids=(1, 2),
        occlusions=[("random", 0.5, "black"), ("random", 0.5, "image_mean")],
        occlusion_grid=(4, 4),
        seed=3,
        progress=False,
    )
    assert res.variants == [
        "clean",
        "shuffle-g1",
        "shuffle-g2",
        "occlude-random-0.5-black",
        "occlude-random-0.5-image_mean",
    ]
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    idx = torch.arange(6)
    mask = rb.occlusion_mask(6, (4, 4), 0.5, "random", seed=3, indices=idx)
    direct = {
        "clean": x,
        "shuffle-g2": rb.shuffle_patches(x, 2, seed=3, indices=idx),
        "occlude-random-0.5-black": rb.occlude(x, mask, "black"),
        "occlude-random-0.5-image_mean": rb.occlude(x, mask, "image_mean"),
    }
    norm = as_loaded(tiny_vit).normalize  # a bare timm module is fed timm's normalisation
    with torch.inference_mode():
        for v, xv in direct.items():
            hits = topk_correct(tiny_vit(norm(xv)), y, (1, 5))
            np.testing.assert_array_equal(res.correct["vit"][v][1], hits[1].numpy())
            np.testing.assert_array_equal(res.correct["vit"][v][5], hits[5].numpy())
    np.testing.assert_array_equal(res.correct["vit"]["shuffle-g1"][1], res.correct["vit"]["clean"][1])


@pytest.fixture()
def toy_pixels(tmp_path):
    """A factory: ``(LoadedModel, pixel dataset of 7 images)``."""
    from PIL import Image

    from vitviz_core.data import ImageFolderDataset

    rng = np.random.default_rng(0)
    for c in range(2):
        d = tmp_path / "toy" / f"n0000000{c}"
        d.mkdir(parents=True)
        for i in range(3 + c):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(d / f"im{c}_{i}.png")

    def make(model):
        loaded = make_loaded(model)
        return loaded, ImageFolderDataset(tmp_path / "toy", transform=loaded.pixel_transform())

    return make
