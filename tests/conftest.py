"""Shared fixtures: tiny random timm models from the one registry in ``tests/tiny_models.py``."""

from __future__ import annotations

import pytest
import torch

from tiny_models import make


@pytest.fixture(scope="module")
def tiny_vit() -> torch.nn.Module:
    """The registry's tiny ViT (32 px, patch 8, depth 2, width 32, 10 classes), seed 0."""
    return make("vit")
