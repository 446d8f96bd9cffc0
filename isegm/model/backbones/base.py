"""What the DINOv2 and DINOv3 ViTs have in common: prefix tokens, blocks, final norm, taps."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

from torch import Tensor, nn

from ..layers import Block, PatchEmbed, Rope


class DinoViT(nn.Module):
    """Plain ViT with a cls token and ``num_register_tokens`` extra prefix tokens.

    Token order is ``[cls, registers..., patches...]``. Subclasses decide how positions enter
    (``prepare_tokens``): an absolute table (DINOv2) or RoPE (DINOv3).
    """

    def __init__(self, patch_size: int, embed_dim: int, depth: int, num_heads: int,
                 mlp_ratio: float, num_register_tokens: int, norm_eps: float,
                 ffn_layer: str = "mlp", qkv_layer=nn.Linear) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.num_register_tokens = num_register_tokens
        self.num_prefix_tokens = 1 + num_register_tokens
        self.patch_embed = PatchEmbed(patch_size, 3, embed_dim)
        self.blocks = nn.ModuleList([
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, norm_eps=norm_eps,
                  layer_scale=True, ffn_layer=ffn_layer, qkv_layer=qkv_layer)
            for _ in range(depth)
        ])
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)

    @property
    def stochastic_in_training(self) -> bool:
        """Whether a forward in train mode draws random numbers, so that it differs from the
        eval-mode forward of the same input (DINOv3's RoPE coordinate rescaling). False here:
        these blocks have no dropout, so train and eval mode give the same tokens."""
        return False

    def prepare_tokens(self, x: Tensor) -> Tuple[Tensor, Optional[Rope]]:
        """``[B,3,H,W]`` normalised image -> tokens ``[B, prefix + N, C]`` and rope tables."""
        raise NotImplementedError

    def grid_size(self, x: Tensor) -> Tuple[int, int]:
        """Patch grid ``(H/p, W/p)`` of an input image."""
        return x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size

    def get_intermediate_layers(self, x: Tensor, blocks: Sequence[int], norm: bool) -> List[Tensor]:
        """Patch tokens ``[B, N, C]`` after each block in ``blocks`` (0-based), prefix tokens dropped.

        ``norm`` applies the final LayerNorm to each tap. Blocks after the last tap are not run:
        they cannot change the taps.
        """
        wanted = sorted(set(blocks))
        if not wanted or wanted[0] < 0 or wanted[-1] >= len(self.blocks):
            raise ValueError(f"tap blocks {list(blocks)} must lie in 0..{len(self.blocks) - 1}")
        x, rope = self.prepare_tokens(x)
        taps = {}
        for i, block in enumerate(self.blocks[: wanted[-1] + 1]):
            x = block(x, rope)
            if i in wanted:
                taps[i] = self.norm(x) if norm else x
        return [taps[i][:, self.num_prefix_tokens:] for i in blocks]

    def forward(self, x: Tensor) -> Tensor:
        """All tokens after the last block and the final norm, ``[B, prefix + N, C]``."""
        x, rope = self.prepare_tokens(x)
        for block in self.blocks:
            x = block(x, rope)
        return self.norm(x)

