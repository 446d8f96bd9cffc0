"""SegFormer all-MLP head (Xie et al. 2021) as used by SimpleClick and SkipClick.

Each pyramid level goes through a 1x1 conv + ReLU, is resized bilinearly to the finest level,
and the concatenation is mixed by a 1x1 ``fusion_conv`` + ReLU, then classified by ``conv_seg``.
A 1x1 conv commutes with a bilinear resize (both are linear, one over channels, one over
space), so each level's share of ``fusion_conv`` is applied at that level's own resolution and
resized afterwards: the same function, with 1/4 of the multiply-adds at the finest level.
The resize itself is separable: a product with a ``[W, w]`` matrix along the width, then one
with an ``[H, h]`` matrix along the height that accumulates straight into the sum, so no
full-resolution copy of a coarse level is ever made.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import channels_last as cl


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


def resize_matrix(size_in: int, size_out: int, like: Tensor) -> Tensor:
    """``[size_out, size_in]`` weights of a 1-D linear resize with ``align_corners=False``.

    Made by resizing the identity with ``F.interpolate``, so the weights are the ones torch's
    bilinear kernel uses along each axis.
    """
    eye = torch.eye(size_in, dtype=like.dtype, device=like.device)[None]
    # CUDA autocast runs interpolate in float32; the in-place sums need like's dtype
    return F.interpolate(eye, size=size_out, mode="linear", align_corners=False)[0].t().to(like.dtype)


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
        fusion = self.fusion_conv.conv
        w = fusion.weight.flatten(1)                                      # [width, levels*width]
        width = w.shape[0]
        shares = [F.linear(F.relu(cl.conv(level.conv, cl.from_nchw(x))), w[:, i * width:(i + 1) * width])
                  for i, (x, level) in enumerate(zip(inputs, self.convs))]   # each level's share
        B, H, W, _ = shares[0].shape
        total = shares[0] + fusion.bias.to(shares[0].dtype)   # under autocast the shares are bf16 / fp16
        for y in shares[1:]:
            y = torch.matmul(resize_matrix(y.shape[2], W, y), y)             # width: [B, h, W, width]
            rows = resize_matrix(y.shape[1], H, y).expand(B, -1, -1)
            total.view(B, H, W * width).baddbmm_(rows, y.reshape(B, y.shape[1], W * width))   # height, summed
        return cl.to_nchw(F.relu(total))

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        """Four pyramid maps -> logits ``[B, num_classes, h, w]`` (h = h0 * upsample factor)."""
        x = cl.from_nchw(self.fuse(inputs))
        if self.upsample != "x1":
            x = cl.run(self.up_conv1, x)
        if self.upsample == "x4":
            x = cl.run(self.up_conv2, x)
        x = cl.from_nchw(self.dropout(cl.to_nchw(x)))
        return cl.to_nchw(cl.conv(self.conv_seg, x))
