"""Chapter compositions (studies) and the explorer, on a tiny random ViT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitviz_core.models import load_model
from vitviz_core.studies import depth_layers, hook_sweep, recipe_ablation


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    return load_model(
        "vit_tiny_patch16_224",
        weights="random",
        img_size=32,
        patch_size=8,
        depth=2,
        embed_dim=32,
        num_heads=2,
        num_classes=10,
    )


def test_depth_layers_spread_early_to_late() -> None:
    assert depth_layers(12, 4) == [1, 4, 7, 10]
    assert depth_layers(3, 4) == [0, 1, 2]
    assert depth_layers(24, 2) == [5, 17]


def test_recipe_ablation_grid(tiny) -> None:
    variants = {
        "plain": dict(n_augment=1, jitter=0, color_mode="none", noise_mode="none", tv_weight=0.0),
        "paper": {},
    }
    res = recipe_ablation(tiny, "blocks.1.mlp.hook_post", [0, 3], steps=3, n_augment=2, variants=variants)
    assert res.images.shape == (4, 3, 32, 32) and res.cols == 2
    assert res.rows == ["plain", "paper"] and len(res.labels) == 4
    assert [r["variant"] for r in res.table] == ["plain", "paper"]
    assert res.images.min() >= 0 and res.images.max() <= 1
    both = recipe_ablation(
        tiny, "blocks.1.mlp.hook_post", [1], steps=2, n_augment=2, variants={}, recipes=("paper", "released")
    )
    assert both.rows == ["paper", "released"] and both.images.shape[0] == 2
    # the two recipes start from different seeds streams and augmentations: different images
    assert not torch.allclose(both.images[0], both.images[1])


def test_hook_sweep_reports_clean_activation(tiny) -> None:
    hooks = ["blocks.0.mlp.hook_post", "blocks.1.attn.hook_v"]
    res = hook_sweep(tiny, hooks, [0, 1], steps=3, n_augment=2)
    assert res.rows == hooks and res.images.shape == (4, 3, 32, 32)
    assert all(np.isfinite(r["mean clean activation"]) for r in res.table)


def test_feature_panel_and_explorer(tiny, tmp_path: Path, monkeypatch) -> None:
    from vitviz_core.explorer import FeatureExplorer, exemplar_rows, feature_panel

    monkeypatch.setenv("VITVIZ_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    for i in range(6):
        d = tmp_path / "pool" / "n01440764"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(d / f"{i}.png")
    vis = torch.rand(2, 3, 32, 32)
    rows = exemplar_rows(tiny, "blocks.1.mlp.hook_post", [0, 1], vis, pool="pool", pool_root=tmp_path, k=3)
    assert len(rows) == 2 and len(rows[0]["exemplars"]) == 3
    assert rows[0]["maps"].shape == (3, 32, 32)
    fig = feature_panel(rows)
    assert len(fig.axes) == 2 * 4
    explorer = FeatureExplorer(
        {"tiny": tiny}, "pool", pool_root=tmp_path, steps=2, n_augment=1, k=2, default=("tiny", 1, 0)
    )
    box = explorer.widget()
    assert "interactive explorer" in repr(box)
    assert len(explorer.default_figure().axes) == 3
