"""Where clicks meet the image: the click/mask patch embedding and the fusion transformer.

The authors call the stack ``backbone_mix`` (an "EncoderStack"): click tokens are added to the
cached image tokens, a learned position table is added, and plain pre-norm blocks mix them.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import Block


class FusionStack(nn.Module):
    """``depth`` pre-norm blocks (no LayerScale, LayerNorm eps 1e-6) over ``[B, N, C]`` tokens.

    ``grid`` is the token grid of the training crop; other grids resize the table bicubically
    (no antialias, align_corners=False), as the authors do.
    """

    def __init__(self, embed_dim: int = 768, depth: int = 4, num_heads: int = 12,
                 mlp_ratio: float = 4.0, grid: Tuple[int, int] = (32, 32)) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, grid[0] * grid[1], embed_dim))
        self.grid = tuple(grid)
        self.blocks = nn.ModuleList([
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, norm_eps=1e-6, layer_scale=False)
            for _ in range(depth)])

    def pos_embed_for(self, grid: Tuple[int, int]) -> Tensor:
        """The position table ``[1, gh*gw, C]`` for a token grid."""
        if tuple(grid) == self.grid:
            return self.pos_embed
        table = self.pos_embed.reshape(1, *self.grid, -1).permute(0, 3, 1, 2)
        table = F.interpolate(table, size=grid, mode="bicubic", align_corners=False)
        return table.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], -1)

    def forward(self, image_tokens: Tensor, click_tokens: Tensor, pos_embed: Tensor) -> Tensor:
        """``(image_tokens + click_tokens) + pos_embed`` through the blocks; batch-1 inputs broadcast."""
        x = image_tokens + click_tokens + pos_embed
        for block in self.blocks:
            x = block(x)
        return x


def token_grid(size: Tuple[int, int], patch_size: int) -> Tuple[int, int]:
    """Token grid of an input; raises ``ValueError`` when a side is not a multiple of the patch."""
    H, W = size
    if H % patch_size or W % patch_size or H <= 0 or W <= 0:
        fix_h, fix_w = (max(patch_size, round(s / patch_size) * patch_size) for s in size)
        raise ValueError(f"input size {H}x{W} is not a multiple of the patch size {patch_size}; "
                         f"resize or pad it, e.g. to {fix_h}x{fix_w}")
    return H // patch_size, W // patch_size


__all__ = ["FusionStack", "token_grid"]
