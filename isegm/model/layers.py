"""Transformer building blocks shared by the DINO backbones and the click-fusion stack.

Parameter names follow the official DINOv2/DINOv3 releases (``attn.qkv``, ``ls1.gamma``,
``mlp.fc1`` ...), so their weight files load with ``strict=True``.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# (sin, cos), each [num_patch_tokens, head_dim]; applied to the patch tokens only.
Rope = Tuple[Tensor, Tensor]


class LinearKMaskedBias(nn.Linear):
    """qkv projection whose key bias is multiplied by a stored 0/1 mask (DINOv3).

    The mask is a state-dict buffer (``bias_mask``) so the official files load strictly.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        mask = torch.ones(out_features)
        mask[out_features // 3: 2 * out_features // 3] = 0.0
        self.register_buffer("bias_mask", mask)

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias * self.bias_mask
        return F.linear(x, self.weight, bias)


def rope_rotate_half(x: Tensor) -> Tensor:
    """``[a, b] -> [-b, a]`` over the two halves of the last axis."""
    a, b = x.chunk(2, dim=-1)
    return torch.cat([-b, a], dim=-1)


def apply_rope(x: Tensor, rope: Rope) -> Tensor:
    """Rotate the trailing ``len(sin)`` tokens of ``x`` [B, heads, N, D]; leading tokens stay.

    Computed in the dtype of the rope tables (float32), as DINOv3 does.
    """
    sin, cos = rope
    prefix = x.shape[-2] - sin.shape[-2]
    dtype = x.dtype
    x = x.to(sin.dtype)
    patches = x[:, :, prefix:]
    patches = patches * cos + rope_rotate_half(patches) * sin
    return torch.cat([x[:, :, :prefix], patches], dim=-2).to(dtype)


class Attention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention`` (scale head_dim^-0.5)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True,
                 qkv_layer: Callable[..., nn.Linear] = nn.Linear) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = qkv_layer(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, rope: Optional[Rope] = None) -> Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    """fc1 -> exact (erf) GELU -> fc2."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwiGLU(nn.Module):
    """SwiGLU feed-forward of DINOv2 ViT-g: ``w3(silu(a) * b)`` with ``[a, b] = w12(x)``.

    The hidden width is 2/3 of ``hidden_dim`` rounded up to a multiple of 8, as in DINOv2.
    """

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        hidden = (int(hidden_dim * 2 / 3) + 7) // 8 * 8
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(a) * b)


FFN_LAYERS = {"mlp": Mlp, "swiglu": SwiGLU}


class LayerScale(nn.Module):
    """Per-channel residual scale ``gamma`` (DINOv2/v3)."""

    def __init__(self, dim: int, init_value: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init_value))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block: ``x + ls1(attn(norm1(x)))``, then ``x + ls2(mlp(norm2(x)))``.

    ``layer_scale=False`` gives the plain block of the click-fusion stack (no LayerScale).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 norm_eps: float = 1e-6, layer_scale: bool = True, ffn_layer: str = "mlp",
                 qkv_layer: Callable[..., nn.Linear] = nn.Linear) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, qkv_layer=qkv_layer)
        self.ls1 = LayerScale(dim) if layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = FFN_LAYERS[ffn_layer](dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim) if layer_scale else nn.Identity()

    def forward(self, x: Tensor, rope: Optional[Rope] = None) -> Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), rope))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection ``[B, C, H, W] -> [B, (H/p)*(W/p), dim]`` (row-major)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)
