"""Test doubles shared by the evaluation test modules (tests/ is on sys.path under pytest)."""

from __future__ import annotations

import torch
from torch import nn
from torchvision import transforms as T


class FakeLoaded:
    """Just enough of models.LoadedModel for the experiments and the chapter studies."""

    def __init__(self, model: nn.Module, size: int = 32, name: str = "toy"):
        self.model = model
        self.name = name
        self.arch = "toy"
        self.weights_source = "random init (test)"
        self.pretrained = False
        self.data_config = {"input_size": (3, size, size)}
        self.num_classes = 10
        self.size = size

    @property
    def input_size(self) -> tuple[int, int]:
        return (self.size, self.size)

    def pixel_transform(self):
        return T.Compose([T.Resize(self.size), T.CenterCrop(self.size), T.ToTensor()])

    def eval_transform(self):
        return T.Compose([self.pixel_transform(), T.Normalize([0.5] * 3, [0.5] * 3)])

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - 0.5) / 0.5
