"""SegFormer all-MLP head (Xie et al. 2021) as used by SimpleClick and SkipClick.

Each pyramid level goes through a 1x1 conv + ReLU (the per-level MLP), is resized bilinearly
to the finest level, and the concatenation is mixed by a 1x1 ``fusion_conv`` + ReLU, then
classified by ``conv_seg``. ``upsample`` x2 / x4 adds learned 2x up-convs before ``conv_seg``.

This is the readable form; the model runs the same layers through ``fast_decoder.FastHead``.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ConvReLU(nn.Module):
    """1x1 conv with bias, then ReLU (mmcv ``ConvModule`` without a norm; same parameter names)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.conv(x))


def _up_conv(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(channels, channels // 2, 2, stride=2), nn.GroupNorm(1, channels // 2),
                         nn.Conv2d(channels // 2, channels // 2, 1), nn.GroupNorm(1, channels // 2), nn.GELU())


UPSAMPLE_FACTORS = {"x1": 1, "x2": 2, "x4": 4}


class SegFormerHead(nn.Module):
    """``upsample`` x2 / x4 widens the head 2x / 4x and adds 1 / 2 learned 2x up-convs before
    ``conv_seg``; x1 (the authors' default) leaves ``up_conv1/2`` unused but in the state dict."""

    def __init__(self, in_channels: Sequence[int] = (128, 256, 512, 1024), channels: int = 256,
                 num_classes: int = 1, upsample: str = "x1", dropout_ratio: float = 0.1) -> None:
        super().__init__()
        if upsample not in UPSAMPLE_FACTORS:
            raise ValueError(f"head upsample must be one of {sorted(UPSAMPLE_FACTORS)}, got {upsample!r}")
        self.upsample = upsample
        width = channels * UPSAMPLE_FACTORS[upsample]
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        self.dropout = nn.Dropout2d(dropout_ratio)
        self.convs = nn.ModuleList([ConvReLU(c, width) for c in in_channels])
        self.fusion_conv = ConvReLU(width * len(in_channels), width)
        self.up_conv1 = _up_conv(width)
        self.up_conv2 = _up_conv(width // 2)

    def fuse(self, inputs: Sequence[Tensor]) -> Tensor:
        """``fusion_conv`` output (after its ReLU), ``[B, width, h0, w0]`` at the finest level."""
        size = inputs[0].shape[-2:]
        levels = [F.interpolate(mlp(x), size=size, mode="bilinear", align_corners=False)
                  for mlp, x in zip(self.convs, inputs)]
        return self.fusion_conv(torch.cat(levels, 1))

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        """Four pyramid maps -> logits ``[B, num_classes, h, w]`` (h = h0 * upsample factor)."""
        x = self.fuse(inputs)
        if self.upsample != "x1":
            x = self.up_conv1(x)
        if self.upsample == "x4":
            x = self.up_conv2(x)
        return self.conv_seg(self.dropout(x))
