"""DINOv3 ViT-B/16 (Siméoni et al. 2025): RoPE positions, 4 storage tokens, masked key bias.

Parameter and buffer names equal those of ``dinov3_vitb16_pretrain_lvd1689m-*.pth``, so the
official file loads with ``strict=True``.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from ..layers import LinearKMaskedBias, Rope
from .base import DinoViT


class RopePositionEmbedding(nn.Module):
    """Axial RoPE tables with "separate" coordinate normalisation.

    Patch (i, j) of a gh x gw grid sits at ``((i + .5) / gh * 2 - 1, (j + .5) / gw * 2 - 1)``;
    angles ``2 pi coord / period`` are laid out ``[rows..., cols...]`` and tiled to head_dim.
    In training mode coordinates are rescaled by a log-uniform factor in
    ``[1/rescale_coords, rescale_coords]``, as DINOv3 does.
    """

    def __init__(self, head_dim: int, base: float = 100.0, rescale_coords: Optional[float] = 2.0) -> None:
        super().__init__()
        n = head_dim // 4
        self.rescale_coords = rescale_coords
        self.register_buffer("periods", base ** (2 * torch.arange(n, dtype=torch.float32) / (head_dim // 2)))

    def forward(self, grid: Tuple[int, int]) -> Rope:
        gh, gw = grid
        dev = self.periods.device
        rows = torch.arange(0.5, gh, dtype=torch.float32, device=dev) / gh
        cols = torch.arange(0.5, gw, dtype=torch.float32, device=dev) / gw
        coords = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).flatten(0, 1)
        coords = 2.0 * coords - 1.0
        if self.training and self.rescale_coords is not None:
            log_r = math.log(self.rescale_coords)
            coords = coords * torch.empty(1, device=dev).uniform_(-log_r, log_r).exp()
        angles = 2 * math.pi * coords[:, :, None] / self.periods.float()[None, None, :]
        angles = angles.flatten(1, 2).tile(2)
        return torch.sin(angles), torch.cos(angles)


class DinoV3(DinoViT):
    """DINOv3 ViT: no absolute positions, LayerNorm eps 1e-5, qkv with a masked key bias."""

    def __init__(self, patch_size: int = 16, embed_dim: int = 768, depth: int = 12,
                 num_heads: int = 12, mlp_ratio: float = 4.0, num_register_tokens: int = 4) -> None:
        super().__init__(patch_size, embed_dim, depth, num_heads, mlp_ratio, num_register_tokens,
                         norm_eps=1e-5, qkv_layer=LinearKMaskedBias)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.storage_tokens = nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))
        self.rope_embed = RopePositionEmbedding(embed_dim // num_heads)

    @property
    def stochastic_in_training(self) -> bool:
        """True while the RoPE coordinates are rescaled at random in train mode."""
        return self.rope_embed.rescale_coords is not None

    def prepare_tokens(self, x: Tensor) -> Tuple[Tensor, Optional[Rope]]:
        grid = self.grid_size(x)
        tokens = self.patch_embed(x)
        B = x.shape[0]
        # "+ 0 * mask_token" as in DINOv3, so that a NaN/inf mask token shows up as it does there
        cls = self.cls_token + 0 * self.mask_token
        tokens = torch.cat([cls.expand(B, -1, -1), self.storage_tokens.expand(B, -1, -1), tokens], dim=1)
        return tokens, self.rope_embed(grid)
