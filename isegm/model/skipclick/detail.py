"""A full-detail refiner after the SegFormer head (not in the paper; off in every paper config).

A pretrained DINO backbone carries sub-patch shape in its tokens; a small ViT trained from
scratch for a few minutes does not, so its masks stay blobs on the patch grid. This module
gives the per-click path the pixels back, at stride 2:

    encode(image)                        once per image: two 3x3 convs -> [B, C, H/2, W/2]
    forward(logits, image_feats, maps)   per click: [head logits, image feats, click maps]
                                         -> three convs -> a correction added to the logits

The correction's last conv starts at zero, so an untrained refiner passes the head's logits
through unchanged.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CLICK_MAPS = 3   # previous mask, positive disks, negative disks (clicks.encode_clicks)


class DetailRefiner(nn.Module):
    """``channels``: width of the stride-2 image features and of the refining convs."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.image_convs = nn.Sequential(
            nn.Conv2d(3, channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU())
        self.refine = nn.Sequential(
            nn.Conv2d(1 + channels + CLICK_MAPS, channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(channels, 1, 1))
        nn.init.zeros_(self.refine[-1].weight)
        nn.init.zeros_(self.refine[-1].bias)

    def encode(self, image: Tensor) -> Tensor:
        """Stride-2 features ``[B, C, ceil(H/2), ceil(W/2)]`` of the normalised image."""
        return self.image_convs(image)

    def forward(self, logits: Tensor, image_feats: Tensor, click_maps: Tensor) -> Tensor:
        """Refined logits at the features' resolution.

        ``logits``: the head's ``[B, 1, h, w]``; ``image_feats``: ``encode``'s output (batch 1 or
        B); ``click_maps``: ``[B, 3, H, W]`` at the network input (``encode_clicks``).
        """
        size = image_feats.shape[-2:]
        if logits.shape[-2:] != size:   # the tiny model's head already is at stride 2
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=True)
        maps = F.interpolate(click_maps.to(logits.dtype), size=size, mode="area")
        feats = image_feats.expand(logits.shape[0], -1, -1, -1).to(logits.dtype)
        return logits + self.refine(torch.cat([logits, feats, maps], dim=1))
