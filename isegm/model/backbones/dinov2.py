"""DINOv2 ViT (Oquab et al. 2023) with optional register tokens (Darcet et al. 2024).

Parameter names equal those of the official release files (``dinov2_vitb14_reg4_pretrain.pth``
...), so they load with ``strict=True``.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import Rope
from .base import DinoViT


class DinoV2(DinoViT):
    """DINOv2 ViT: absolute position table for a 518 px (37x37) grid, LayerNorm eps 1e-6."""

    def __init__(self, patch_size: int = 14, embed_dim: int = 768, depth: int = 12,
                 num_heads: int = 12, mlp_ratio: float = 4.0, num_register_tokens: int = 4,
                 img_size: int = 518, ffn_layer: str = "mlp") -> None:
        super().__init__(patch_size, embed_dim, depth, num_heads, mlp_ratio,
                         num_register_tokens, norm_eps=1e-6, ffn_layer=ffn_layer)
        num_patches = (img_size // patch_size) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + num_patches, embed_dim))
        self.register_tokens = (nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim))
                                if num_register_tokens else None)
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))  # used in pre-training only

    def interpolate_pos_encoding(self, grid: Tuple[int, int]) -> Tensor:
        """Position table ``[1, 1 + gh*gw, C]`` (cls row first) for a ``grid = (gh, gw)`` input.

        As DINOv2 does: the patch part is resized in float32 with antialiased bicubic to an
        explicit size; the table is used as is only for its own square grid.
        """
        pos = self.pos_embed.float()
        side = int(math.sqrt(pos.shape[1] - 1))
        if grid == (side, side):
            return pos
        patch = pos[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        patch = F.interpolate(patch, size=grid, mode="bicubic", antialias=True)
        return torch.cat([pos[:, :1], patch.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], -1)], dim=1)

    def prepare_tokens(self, x: Tensor) -> Tuple[Tensor, Optional[Rope]]:
        grid = self.grid_size(x)
        tokens = self.patch_embed(x)
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1)
        tokens = tokens + self.interpolate_pos_encoding(grid).to(tokens.dtype)
        if self.register_tokens is not None:
            # registers join after the position embedding, so they carry none
            registers = self.register_tokens.expand(x.shape[0], -1, -1)
            tokens = torch.cat([tokens[:, :1], registers, tokens[:, 1:]], dim=1)
        return tokens, None


# Sizes of the official release; ViT-g uses a SwiGLU feed-forward.
DINOV2_SIZES = {
    "vits14": dict(embed_dim=384, depth=12, num_heads=6),
    "vitb14": dict(embed_dim=768, depth=12, num_heads=12),
    "vitl14": dict(embed_dim=1024, depth=24, num_heads=16),
    "vitg14": dict(embed_dim=1536, depth=40, num_heads=24, ffn_layer="swiglu"),
}
