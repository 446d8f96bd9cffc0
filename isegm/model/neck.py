"""SimpleFPN (ViTDet-style) turning the fused ``[B, N, C]`` tokens into a 4-level pyramid.

With skip connections each branch reads ``cat([fusion-stack output, tapped backbone map])``.
A branch's first layer is linear in that input, so its image-only half (the tap's share plus
the bias) is computed once per image by ``precompute_skips``; per click only the click-dependent
half is multiplied. The sum is the same layer, evaluated in another order.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from . import channels_last as cl


class SimpleFPN(nn.Module):
    """Levels at strides 4, 8, 16, 32 of the token grid's 4x, 2x, 1x and 1/2x resolution.

    ``in_dim``: channels of the fusion-stack output; ``skip_dim``: channels of each tapped map
    concatenated after it (0 without skip connections).
    """

    def __init__(self, in_dim: int = 768, out_dims: Sequence[int] = (128, 256, 512, 1024),
                 skip_dim: int = 0) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.skip_dim = skip_dim
        d = in_dim + skip_dim
        c4, c32 = max(256, d // 2), max(1024, d * 2)
        self.down_4 = nn.Sequential(
            nn.ConvTranspose2d(d, c4, 2, stride=2), nn.GroupNorm(1, c4), nn.GELU(),
            nn.ConvTranspose2d(c4, c4 // 2, 2, stride=2), nn.GroupNorm(1, c4 // 2),
            nn.Conv2d(c4 // 2, out_dims[0], 1), nn.GroupNorm(1, out_dims[0]), nn.GELU())
        self.down_8 = nn.Sequential(
            nn.ConvTranspose2d(d, c4, 2, stride=2), nn.GroupNorm(1, c4),
            nn.Conv2d(c4, out_dims[1], 1), nn.GroupNorm(1, out_dims[1]), nn.GELU())
        self.down_16 = nn.Sequential(
            nn.Conv2d(d, out_dims[2], 1), nn.GroupNorm(1, out_dims[2]), nn.GELU())
        self.down_32 = nn.Sequential(
            nn.Conv2d(d, c32, 2, stride=2), nn.GroupNorm(1, c32),
            nn.Conv2d(c32, out_dims[3], 1), nn.GroupNorm(1, out_dims[3]), nn.GELU())

    @property
    def branches(self) -> Tuple[nn.Sequential, ...]:
        return self.down_4, self.down_8, self.down_16, self.down_32

    def _split(self, layer: nn.Module) -> Tuple[Tensor, Tensor]:
        """First-layer matrix rows for the fusion-stack input and for the skip input."""
        w = cl.conv_matrix(layer)
        k = w.shape[0] // (self.in_dim + self.skip_dim)   # rows per input channel (4 for 2x2 convs)
        return w[: self.in_dim * k], w[self.in_dim * k:]

    def precompute_skips(self, taps: Sequence[Tensor], grid: Tuple[int, int]) -> List[Tensor]:
        """Image-only share of each branch's first layer: ``tap_i @ W_skip + bias``, pre-shuffle.

        ``taps``: four ``[B, N, C]`` maps, for branches 4, 8, 16, 32 in that order.
        """
        if not self.skip_dim or len(taps) != 4:
            raise ValueError(f"skip connections need 4 tapped maps and skip_dim > 0 (got {len(taps)}, {self.skip_dim})")
        terms = []
        for branch, tap in zip(self.branches, taps):
            first = branch[0]
            rows = cl.conv_rows(first, tap.reshape(tap.shape[0], *grid, -1))
            terms.append(torch.addmm(cl.conv_bias(first), rows.flatten(0, 2), self._split(first)[1])
                         .view(*rows.shape[:3], -1))
        return terms

    def forward(self, x: Tensor, grid: Tuple[int, int],
                skip_terms: Optional[Sequence[Tensor]] = None) -> List[Tensor]:
        """``x`` [B, N, in_dim] -> four ``[B, C_i, h_i, w_i]`` maps (channels-last memory).

        ``skip_terms``: the output of ``precompute_skips`` (batch 1 or B), required with skips.
        """
        if self.skip_dim and skip_terms is None:
            raise ValueError("this FPN has skip connections: pass skip_terms from precompute_skips()")
        x = x.reshape(x.shape[0], *grid, -1)
        outs = []
        for i, branch in enumerate(self.branches):
            first = branch[0]
            if skip_terms is None:
                y = cl.conv(first, x)
            else:
                y = torch.matmul(cl.conv_rows(first, x), self._split(first)[0])
                y += skip_terms[i]   # in place: the product is a fresh tensor, and broadcasting a batch-1 term
                y = cl.conv_finish(first, y)
            outs.append(cl.to_nchw(cl.run(branch, y, start=1)))
        return outs
