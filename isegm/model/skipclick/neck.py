"""SimpleFPN (ViTDet, as in SimpleClick) turning the fusion-stack tokens into a 4-level pyramid.

The token grid (stride 14 or 16) is one plain map; four parallel branches bring it to 4x, 2x,
1x and 1/2x its resolution (the pyramid's strides 4, 8, 16, 32) with transposed convs, a 1x1
conv and a stride-2 conv, each followed by GroupNorm. SkipClick's skip connections feed each
branch ``cat([fusion-stack output, tapped backbone map])``, one tap per level (blocks 2, 5, 8,
11 for strides 4, 8, 16, 32), so the click-free image features reach the head directly.

This is the readable form; the model runs the same layers through ``fast_decoder.FastFPN``.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn


def tokens_to_map(tokens: Tensor, grid: Tuple[int, int]) -> Tensor:
    """``[B, h*w, C]`` tokens -> ``[B, C, h, w]`` map."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *grid)


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
        # the family's widths (SimpleClick's SimpleFPN); 256 / 256 / 1024 for the paper's out_dims
        c4, c8, c32 = max(out_dims[0] * 2, d // 2), max(out_dims[1], d // 2), max(out_dims[3], d * 2)
        self.down_4 = nn.Sequential(
            nn.ConvTranspose2d(d, c4, 2, stride=2), nn.GroupNorm(1, c4), nn.GELU(),
            nn.ConvTranspose2d(c4, c4 // 2, 2, stride=2), nn.GroupNorm(1, c4 // 2),
            nn.Conv2d(c4 // 2, out_dims[0], 1), nn.GroupNorm(1, out_dims[0]), nn.GELU())
        self.down_8 = nn.Sequential(
            nn.ConvTranspose2d(d, c8, 2, stride=2), nn.GroupNorm(1, c8),
            nn.Conv2d(c8, out_dims[1], 1), nn.GroupNorm(1, out_dims[1]), nn.GELU())
        self.down_16 = nn.Sequential(
            nn.Conv2d(d, out_dims[2], 1), nn.GroupNorm(1, out_dims[2]), nn.GELU())
        self.down_32 = nn.Sequential(
            nn.Conv2d(d, c32, 2, stride=2), nn.GroupNorm(1, c32),
            nn.Conv2d(c32, out_dims[3], 1), nn.GroupNorm(1, out_dims[3]), nn.GELU())

    @property
    def branches(self) -> Tuple[nn.Sequential, ...]:
        """The four branches, finest level first."""
        return self.down_4, self.down_8, self.down_16, self.down_32

    def check_taps(self, taps: Optional[Sequence[Tensor]]) -> None:
        """Raise unless ``taps`` fits this FPN: four maps with skip connections."""
        if self.skip_dim and (taps is None or len(taps) != 4):
            raise ValueError(f"this FPN has skip connections: it needs 4 tapped maps, got "
                             f"{None if taps is None else len(taps)}")

    def forward(self, x: Tensor, grid: Tuple[int, int],
                taps: Optional[Sequence[Tensor]] = None) -> List[Tensor]:
        """``x`` [B, N, in_dim] fusion-stack tokens -> four ``[B, C_i, h_i, w_i]`` maps.

        ``taps``: with skip connections, the tapped maps ``[B or 1, N, skip_dim]`` for the levels
        at strides 4, 8, 16, 32 in that order (batch 1 serves every click set).
        """
        self.check_taps(taps)
        x = tokens_to_map(x, grid)
        if not self.skip_dim:
            return [self.down_4(x), self.down_8(x), self.down_16(x), self.down_32(x)]
        t4, t8, t16, t32 = (tokens_to_map(t, grid).expand(x.shape[0], -1, -1, -1) for t in taps)
        return [self.down_4(torch.cat([x, t4], 1)), self.down_8(torch.cat([x, t8], 1)),
                self.down_16(torch.cat([x, t16], 1)), self.down_32(torch.cat([x, t32], 1))]
