"""The FPN's and head's layers as matrix products on channels-last maps ``[B, h, w, C]``.

Tokens come out of the transformers as ``[B, h*w, C]``; keeping maps channels-last lets every
1x1 conv, 2x2/stride-2 conv and 2x2/stride-2 transposed conv run as one GEMM over the existing
memory (no NCHW round trips), and lets a layer's weight be split by input channel without a
copy, which is what caches the image-only half of a layer fed ``cat([clicks, image])``.
The modules keep their ``nn.Conv2d`` / ``nn.ConvTranspose2d`` / ``nn.GroupNorm`` parameters, so
state dicts are those of the NCHW originals.
"""
from __future__ import annotations

from typing import Optional

import torch.nn.functional as F
from torch import Tensor, nn


def _kind(layer: nn.Module) -> str:
    if isinstance(layer, nn.ConvTranspose2d) and layer.kernel_size == layer.stride == (2, 2):
        return "up2"
    if isinstance(layer, nn.Conv2d) and layer.kernel_size == (1, 1) and layer.stride == (1, 1):
        return "conv1"
    if isinstance(layer, nn.Conv2d) and layer.kernel_size == layer.stride == (2, 2):
        return "down2"
    raise TypeError(f"no channels-last form for {layer}")


def conv_rows(layer: nn.Module, x: Tensor) -> Tensor:
    """Rearrange ``x`` [B,h,w,C] so that ``layer`` is one product with ``conv_matrix(layer)``."""
    if _kind(layer) != "down2":
        return x
    B, h, w, C = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2]  # stride-2 conv floors odd sizes
    x = x.reshape(B, h // 2, 2, w // 2, 2, C).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(B, h // 2, w // 2, C * 4)  # (c, kh, kw) order, as in the weight


def conv_matrix(layer: nn.Module) -> Tensor:
    """The layer's weight as a ``[rows_in, cols_out]`` matrix; input channels lead the rows."""
    w = layer.weight
    if _kind(layer) == "up2":
        return w.reshape(w.shape[0], -1)          # [Cin, Cout*2*2]
    return w.reshape(w.shape[0], -1).t()          # [Cin*k*k, Cout]


def conv_bias(layer: nn.Module) -> Optional[Tensor]:
    """The bias laid out like the columns of ``conv_matrix``."""
    if layer.bias is None:
        return None
    return layer.bias.repeat_interleave(4) if _kind(layer) == "up2" else layer.bias


def shuffle_up2(y: Tensor, channels: int) -> Tensor:
    """``[B, h, w, channels*4]`` with columns ``(c, kh, kw)`` -> ``[B, 2h, 2w, channels]``."""
    B, h, w, _ = y.shape
    return y.reshape(B, h, w, channels, 2, 2).permute(0, 1, 4, 2, 5, 3).reshape(B, 2 * h, 2 * w, channels)


def conv_finish(layer: nn.Module, y: Tensor) -> Tensor:
    """Turn the product's columns back into a channels-last map (pixel shuffle for ``up2``)."""
    return shuffle_up2(y, layer.weight.shape[1]) if _kind(layer) == "up2" else y


def conv(layer: nn.Module, x: Tensor) -> Tensor:
    """``layer(x)`` for a channels-last ``x``."""
    return conv_finish(layer, F.linear(conv_rows(layer, x), conv_matrix(layer).t(), conv_bias(layer)))


def group_norm(layer: nn.GroupNorm, x: Tensor) -> Tensor:
    """``layer(x)`` for a channels-last ``x`` (torch's kernel has a channels-last path)."""
    return from_nchw(F.group_norm(to_nchw(x), layer.num_groups, layer.weight, layer.bias, layer.eps))


def apply(layer: nn.Module, x: Tensor) -> Tensor:
    """``layer(x)`` for a conv, GroupNorm, GELU or ReLU and a channels-last map."""
    if isinstance(layer, nn.GroupNorm):
        return group_norm(layer, x)
    if isinstance(layer, (nn.GELU, nn.ReLU)):
        return layer(x)
    return conv(layer, x)


def run(layers: nn.Sequential, x: Tensor, start: int = 0) -> Tensor:
    """Apply ``layers[start:]`` to a channels-last map."""
    for layer in list(layers)[start:]:
        x = apply(layer, x)
    return x


def to_nchw(x: Tensor) -> Tensor:
    """``[B,h,w,C]`` -> ``[B,C,h,w]`` view (channels-last memory), the layout the family exposes."""
    return x.permute(0, 3, 1, 2)


def from_nchw(x: Tensor) -> Tensor:
    """``[B,C,h,w]`` -> ``[B,h,w,C]`` (a view when the memory is channels-last)."""
    return x.permute(0, 2, 3, 1)


__all__ = ["apply", "conv", "conv_bias", "conv_finish", "conv_matrix", "conv_rows", "from_nchw",
           "group_norm", "run", "shuffle_up2", "to_nchw"]
