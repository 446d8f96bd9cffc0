"""The ImageNet mean / std normalisation every model family applies to its RGB input."""
from __future__ import annotations

import torch
from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageNormalize(nn.Module):
    """RGB ``[B, 3, H, W]`` in [0, 1] -> ImageNet-normalised float32. The statistics are
    non-persistent buffers: they follow the model's device and stay out of its state dict."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: Tensor) -> Tensor:
        return (image.float() - self.mean) / self.std
