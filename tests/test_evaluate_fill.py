"""Fills (vitviz_core.evaluate.fill): one meaning per name, known answers for each."""

from __future__ import annotations

import pytest
import torch

from vitviz_core.errors import VitvizError
from vitviz_core.evaluate import fill as fl


@pytest.fixture()
def x() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(2, 3, 8, 8)  # (B, 3, H, W)


def test_black_and_gray(x):
    assert torch.equal(fl.fill_image(x, "black"), torch.zeros_like(x))
    assert torch.equal(fl.fill_image(x, "gray"), torch.full_like(x, 0.5))


def test_dataset_mean_is_the_imagenet_mean_for_every_image(x):
    out = fl.fill_image(x, "dataset_mean")
    want = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1).expand_as(x)
    torch.testing.assert_close(out, want)


def test_image_mean_is_each_images_own_mean(x):
    x = x.clone()
    x[1] = 0.0
    x[1, 0] = 1.0  # image 1: pure red
    out = fl.fill_image(x, "image_mean")
    assert out.shape == x.shape
    torch.testing.assert_close(out[0], x[0].mean((1, 2), keepdim=True).expand(3, 8, 8))
    assert torch.equal(out[1, 0], torch.ones(8, 8)) and torch.equal(out[1, 1:], torch.zeros(2, 8, 8))


def test_blur_keeps_a_constant_image_and_smooths_an_impulse():
    const = torch.full((1, 3, 16, 16), 0.3)
    torch.testing.assert_close(fl.fill_image(const, "blur", blur_sigma=2.0), const)
    imp = torch.zeros(1, 3, 17, 17)
    imp[..., 8, 8] = 1.0
    b = fl.fill_image(imp, "blur", blur_sigma=2.0)
    assert b[..., 8, 8].max() < 0.2 and b[..., 8, 9].min() > 0  # spread out
    assert b.sum().item() == pytest.approx(3.0, abs=1e-4)  # mass kept


def test_numbers_and_rgb_triples(x):
    assert torch.equal(fl.fill_image(x, 0.25), torch.full_like(x, 0.25))
    out = fl.fill_image(x, (0.1, 0.2, 0.3))
    for c, v in enumerate((0.1, 0.2, 0.3)):
        assert torch.allclose(out[:, c], torch.full((2, 8, 8), v))
    with pytest.raises(VitvizError, match="1 or 3 values"):
        fl.fill_image(x, (0.1, 0.2))


def test_mean_is_refused_naming_both_alternatives(x):
    with pytest.raises(VitvizError) as err:
        fl.fill_image(x, "mean")
    msg = str(err.value)
    assert "dataset_mean" in msg and "image_mean" in msg and "\n" not in msg
    with pytest.raises(VitvizError, match="dataset_mean"):
        fl.check_fill("mean")
    with pytest.raises(VitvizError, match="unknown fill"):
        fl.check_fill("purple")


def test_apply_fill_and_names(x):
    hide = torch.zeros(2, 8, 8, dtype=torch.bool)
    hide[:, :4] = True
    out = fl.apply_fill(x, hide, "black")
    assert (out[:, :, :4] == 0).all() and torch.equal(out[:, :, 4:], x[:, :, 4:])
    assert [fl.fill_name(f) for f in ("image_mean", 0.5, (0.1, 0.2, 0.3))] == [
        "image_mean",
        "0.5",
        "0.1_0.2_0.3",
    ]


def test_masking_and_occlusion_use_the_same_fills(x):
    from vitviz_core.evaluate.masking import apply_mask
    from vitviz_core.neurons.robustness import occlude

    keep = torch.zeros(2, 8, 8, dtype=torch.bool)  # hide everything
    cells = torch.ones(2, 2, 2, dtype=torch.bool)
    for f in ("black", "gray", "dataset_mean", "image_mean", (0.1, 0.2, 0.3)):
        want = fl.fill_image(x, f)
        assert torch.equal(apply_mask(x, keep, f), want)
        assert torch.equal(occlude(x, cells, f), want)
    for bad in ("mean",):
        with pytest.raises(VitvizError):
            apply_mask(x, keep, bad)
        with pytest.raises(VitvizError):
            occlude(x, cells, bad)
