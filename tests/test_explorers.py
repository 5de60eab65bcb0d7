"""Kernel-level tests of the chapters' explorers: set each control, press Render, read the output.

Each explorer's ``widget()`` exposes its widgets as ``box.controls``; the tests set their
values as a reader would, click the Render button and decode the PNG the explorer put into
its ``Output`` widget. Tiny random timm ViTs and generated images (no shared data).
The live version of this (Voilà + headless Chromium) is tests/test_widgets_live.py.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from loaded import loaded
from PIL import Image
from torch import nn
from torch.utils.data import Dataset

from vitviz_core.models import load_model

pytest.importorskip("ipywidgets")


def _tiny(depth: int):
    torch.manual_seed(depth)
    return load_model(
        "vit_tiny_patch16_224",
        weights="random",
        img_size=32,
        patch_size=8,
        depth=depth,
        embed_dim=32,
        num_heads=2,
        num_classes=10,
    )


@pytest.fixture(scope="module")
def models():
    torch.set_num_threads(1)
    return {"two": _tiny(2), "three": _tiny(3)}


@pytest.fixture()
def pool(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("VITVIZ_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    d = tmp_path / "pool" / "n01440764"
    d.mkdir(parents=True)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return tmp_path


def shown_png(out) -> np.ndarray:
    """The one figure in an Output widget, decoded; fails on anything else (e.g. an error)."""
    outputs = out.outputs
    assert len(outputs) == 1, f"expected one figure output, got {outputs}"
    o = outputs[0]
    assert o["output_type"] == "display_data", f"not a figure: {o.get('text', o)}"
    img = np.asarray(Image.open(io.BytesIO(base64.b64decode(o["data"]["image/png"]))).convert("RGB"))
    assert img.shape[0] > 100 and img.shape[1] > 100 and img.std() > 1.0, "blank figure"
    return img


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.array_equal(a, b)


@pytest.fixture()
def counted(monkeypatch):
    """Count optimize_features calls, and record the widget state seen while one runs."""
    import vitviz_core.optimize as opt

    real = opt.optimize_features
    seen: dict = {"calls": 0, "during": []}

    def wrapped(*args, **kwargs):
        seen["calls"] += 1
        c = seen.get("controls")
        if c is not None:
            seen["during"].append((c["status"].value, c["button"].disabled, c["model"].disabled))
        return real(*args, **kwargs)

    monkeypatch.setattr(opt, "optimize_features", wrapped)
    return seen


def test_feature_explorer_controls_change_the_figure_and_cache_it(models, pool, counted) -> None:
    from vitviz_core.explorer import FeatureExplorer

    ex = FeatureExplorer(models, "pool", pool_root=pool, steps=2, n_augment=1, k=2, default=("two", 0, 0))
    box = ex.widget()
    c = box.controls
    counted["controls"] = c
    assert c["output"].outputs == ()
    c["button"].click()
    first = shown_png(c["output"])
    assert counted["calls"] == 1
    # while optimizing: a status line says so and the controls are disabled; afterwards enabled
    status, button_off, model_off = counted["during"][0]
    assert status.startswith("optimizing two blocks.0.mlp.hook_post #0") and button_off and model_off
    assert not c["button"].disabled and not c["model"].disabled
    assert c["status"].value.startswith("done in") and c["progress"].value == c["progress"].max
    assert c["status"].value.endswith(": two blocks.0.mlp.hook_post #0")

    # model: the layer slider follows the new model's depth
    c["model"].value = "three"
    assert c["layer"].max == 2
    c["layer"].value = 2
    c["feature"].value = 5
    c["button"].click()
    second = shown_png(c["output"])
    assert counted["calls"] == 2 and not same(first, second)
    assert counted["during"][1][0].startswith("optimizing three blocks.2.mlp.hook_post #5")

    # each control alone changes the figure
    c["layer"].value = 1
    c["button"].click()
    third = shown_png(c["output"])
    assert counted["calls"] == 3 and not same(second, third)
    c["feature"].value = 7
    c["button"].click()
    fourth = shown_png(c["output"])
    assert counted["calls"] == 4 and not same(third, fourth)

    # back to the first selection: served from the cache, same figure, no new optimization
    c["model"].value, c["layer"].value, c["feature"].value = "two", 0, 0
    assert ex.is_cached("two", 0, 0)
    c["button"].click()
    again = shown_png(c["output"])
    assert counted["calls"] == 4 and same(first, again)
    assert c["status"].value.endswith(": two blocks.0.mlp.hook_post #0 (cached)")
    ex.render("three", 2, 5)  # the static path shares the cache
    assert counted["calls"] == 4


def test_feature_explorer_cache_is_bounded(models, pool, counted) -> None:
    from vitviz_core.explorer import FeatureExplorer

    ex = FeatureExplorer(models, "pool", pool_root=pool, steps=1, n_augment=1, k=1, max_cached=1)
    ex.render("two", 1, 0)
    ex.render("two", 1, 1)
    assert ex.is_cached("two", 1, 1) and not ex.is_cached("two", 1, 0)
    ex.render("two", 1, 0)
    assert counted["calls"] == 3


def test_feature_explorer_shows_an_error_instead_of_losing_it(models, pool, monkeypatch) -> None:
    import vitviz_core.optimize as opt
    from vitviz_core.explorer import FeatureExplorer

    def broken(*args, **kwargs):
        raise RuntimeError("optimizer exploded")

    monkeypatch.setattr(opt, "optimize_features", broken)
    ex = FeatureExplorer(models, "pool", pool_root=pool, steps=1, n_augment=1, k=1)
    c = ex.widget().controls
    c["button"].click()
    (o,) = c["output"].outputs
    assert o["output_type"] == "stream" and o["name"] == "stderr"
    assert "RuntimeError: optimizer exploded" in o["text"] and "Traceback" in o["text"]
    assert c["status"].value == "failed: RuntimeError: optimizer exploded"
    assert not c["button"].disabled and not ex.is_cached(*ex.default)


# ----------------------------------------------------------------------------- studies_eval explorers


def _vit(depth: int = 2) -> nn.Module:
    torch.manual_seed(0)
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


class Indexed(Dataset):
    """``(x01, label, index)`` items, like the chapters' pixel views."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int):
        return self.x[i], int(self.y[i]), i


def _pixels(n: int = 3) -> Indexed:
    x = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))  # (N, 3, H, W)
    return Indexed(x, torch.tensor([1, 2, 3])[:n])


def test_token_mixing_explorer_controls() -> None:
    from vitviz_core import studies_eval as se

    ex = se.TokenMixingExplorer(loaded(_vit(2)), _pixels(), default=(0, 1))
    c = ex.widget().controls
    assert c["layer"].max == 2 and c["image"].max == 2
    c["button"].click()
    first = shown_png(c["output"])
    assert c["status"].value.startswith("done in")
    c["layer"].value = 2
    c["button"].click()
    second = shown_png(c["output"])
    assert not same(first, second)
    c["image"].value = 2
    c["button"].click()
    assert not same(second, shown_png(c["output"]))


def test_masking_explorer_controls() -> None:
    from vitviz_core import studies_eval as se

    fg = torch.zeros(3, 32, 32)  # (N, H, W) foreground probability
    fg[:, 8:24, 8:24] = 1
    ex = se.MaskingExplorer(
        {"a": loaded(_vit(1)), "b": loaded(_vit(2))}, _pixels(), fg, default=(0, "black", 16.0)
    )
    c = ex.widget().controls
    c["button"].click()
    figs = [shown_png(c["output"])]
    for name, value in (("fill", "dataset_mean"), ("cutoff", 2.0), ("image", 1)):
        c[name].value = value
        c["button"].click()
        figs.append(shown_png(c["output"]))
        assert not same(figs[-2], figs[-1]), f"changing {name} left the figure unchanged"
    assert c["status"].value.startswith("done in")
