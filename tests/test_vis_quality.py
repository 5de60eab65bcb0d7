"""Image parametrizations (pixel, fourier, maco), recipes built from them, and the quality
scores of feature visualizations, on tiny random timm models and synthetic images."""

from __future__ import annotations

import hashlib

import pytest
import timm
import torch

from vitviz_core.optimize import optimize_features

NORM = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
HOOK = "blocks.1.mlp.hook_post"


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_vit() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, img_size=32, patch_size=8,
                             depth=2, embed_dim=32, num_heads=2).eval()


# Computed with the code before image parametrizations existed (commit f554d7e), CPU, 1 thread:
# the pixel parametrization must leave the paper's and the released recipe bit-exact.
STORED_SHA256 = {
    "paper": "9cc652486a6af8fe1b24a4b015bdedb2ab3d2e7b2a959898a9167886eda763f4",
    "released": "a5f59ffef77712371cc3adae8ea304b1a0e1ba57c339e7eadeb910b42d04aac2",
}


@pytest.mark.parametrize("recipe", ["paper", "released"])
def test_pixel_recipes_bit_exact_against_stored_hash(recipe: str) -> None:
    res = optimize_features(tiny_vit(), HOOK, [0, 3], recipe=recipe, steps=6, n_augment=2, normalize=NORM,
                            input_size=32, seed=0, progress=False)
    assert hashlib.sha256(res.images.numpy().tobytes()).hexdigest() == STORED_SHA256[recipe]
