"""SegFormer base network of EMC-Click: a Mix Transformer (MiT) encoder that takes the first click
as a side input, and the all-MLP decoder (Xie et al., "SegFormer: Simple and Efficient Design for
Semantic Segmentation with Transformers", NeurIPS 2021).

Written from the paper and checked against outputs of the authors' EMC-Click; no SegFormer source
code is used.
Module and parameter names follow EMC-Click's ``feature_extractor`` subtree (``backbone.*``,
``decode_head.*``), so the authors' state dicts load with ``strict=True`` once the
``feature_extractor.`` prefix is stripped (``feature_extractor_state``).

EMC-Click's change to MiT: the first-click disk is embedded like the image (7x7 stride-4
overlapping patches + LayerNorm) and added to the stage-1 output before stage 2. The decoder's c1
is taken before that addition, so it carries no click information.

Training regularisation as the authors' (MiT's ``drop_path_rate=0.1``, the decoder's
``dropout_ratio=0.1``): stochastic depth rising linearly from 0 over the encoder's blocks, and
Dropout2d on the fused decoder feature. Both are identities in eval mode.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# MiT LayerNorm epsilons: 1e-6 in the transformer blocks and the per-stage output norms, torch's
# default 1e-5 in the patch embeddings and the spatial-reduction norm.
BLOCK_NORM_EPS = 1e-6
EMBED_NORM_EPS = 1e-5

# Training regularisation of the released configs (MiT's stochastic depth, the decoder's Dropout2d).
DROP_PATH_RATE = 0.1
DECODER_DROPOUT = 0.1

# The two EMC-Click releases. The decoder width is 256 for B0 and 512 (not SegFormer's 768) for B3.
SEGFORMER_CONFIGS: Dict[str, Dict] = {
    "b0": dict(embed_dims=(32, 64, 160, 256), depths=(2, 2, 2, 2), decoder_dim=256),
    "b3": dict(embed_dims=(64, 128, 320, 512), depths=(3, 4, 18, 3), decoder_dim=512),
}


def tokens_to_map(x: Tensor, h: int, w: int) -> Tensor:
    """Tokens ``[B, h*w, C]`` (row-major) as a map ``[B, C, h, w]`` (a strided view, no copy)."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)


class OverlapPatchEmbed(nn.Module):
    """Overlapping patch merging: a conv whose kernel exceeds its stride, then LayerNorm."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int, stride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride, padding=patch_size // 2)
        self.norm = nn.LayerNorm(embed_dim, eps=EMBED_NORM_EPS)

    def forward(self, x: Tensor) -> Tuple[Tensor, int, int]:
        """``[B, C_in, H, W]`` -> tokens ``[B, h*w, C]`` and the grid ``h, w``."""
        x = self.proj(x)
        h, w = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


class EfficientSelfAttention(nn.Module):
    """Multi-head self-attention whose keys and values come from a grid shrunk ``sr_ratio`` times
    per side (kernel = stride = ``sr_ratio`` conv, then LayerNorm); scale head_dim^-0.5."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
            self.norm = nn.LayerNorm(dim, eps=EMBED_NORM_EPS)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        b, n, c = x.shape
        head_dim = c // self.num_heads
        q = self.q(x).reshape(b, n, self.num_heads, head_dim).transpose(1, 2)
        if self.sr_ratio > 1:
            x = self.norm(self.sr(tokens_to_map(x, h, w)).flatten(2).transpose(1, 2))
        k, v = self.kv(x).reshape(b, -1, 2, self.num_heads, head_dim).permute(2, 0, 3, 1, 4)
        # Explicit matmul-softmax-matmul in this order, as the authors' code computes it: the fused
        # kernel rounds differently.
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class DWConv(nn.Module):
    """Depthwise 3x3 conv on tokens: the Mix-FFN's source of positional information."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        return self.dwconv(tokens_to_map(x, h, w)).flatten(2).transpose(1, 2)


class MixFFN(nn.Module):
    """fc1 -> depthwise 3x3 -> GELU (exact erf) -> fc2."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.dwconv = DWConv(hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        return self.fc2(F.gelu(self.dwconv(self.fc1(x), h, w)))


def drop_path(x: Tensor, prob: float, training: bool) -> Tensor:
    """Stochastic depth: in training, drop a residual branch ``x`` ``[B, ...]`` per sample with
    probability ``prob`` and scale the kept ones by ``1 / (1 - prob)``; the identity otherwise."""
    if not training or prob == 0.0:
        return x
    keep = 1.0 - prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask / keep


class Block(nn.Module):
    """Pre-norm transformer block: efficient self-attention, then Mix-FFN, each residual (each
    branch dropped per sample with probability ``drop_path`` in training)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int, sr_ratio: int, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=BLOCK_NORM_EPS)
        self.attn = EfficientSelfAttention(dim, num_heads, sr_ratio)
        self.norm2 = nn.LayerNorm(dim, eps=BLOCK_NORM_EPS)
        self.mlp = MixFFN(dim, dim * mlp_ratio)
        self.drop_path = drop_path

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        x = x + drop_path(self.attn(self.norm1(x), h, w), self.drop_path, self.training)
        return x + drop_path(self.mlp(self.norm2(x), h, w), self.drop_path, self.training)


class MixVisionTransformer(nn.Module):
    """MiT encoder with EMC-Click's click side input. Stages downsample 4, 8, 16, 32 times.

    Attributes are registered in the authors' state-dict order: ``patch_embed1..4``,
    ``patch_embed_side1``, ``norm_add``, then ``block{i}`` / ``norm{i}`` per stage.
    ``norm_add`` is unused: the authors build it for an early-fusion option these configs do not
    enable; it exists so their checkpoints load strictly.
    """

    def __init__(self, embed_dims: Sequence[int], depths: Sequence[int],
                 num_heads: Sequence[int] = (1, 2, 5, 8), mlp_ratios: Sequence[int] = (4, 4, 4, 4),
                 sr_ratios: Sequence[int] = (8, 4, 2, 1), in_chans: int = 3, side_chans: int = 1,
                 drop_path_rate: float = DROP_PATH_RATE) -> None:
        super().__init__()
        self.num_stages = len(depths)
        for i in range(self.num_stages):
            # stage 1 embeds 7x7 patches at stride 4; later stages merge 3x3 at stride 2
            patch, stride, dim_in = (7, 4, in_chans) if i == 0 else (3, 2, embed_dims[i - 1])
            setattr(self, f"patch_embed{i + 1}", OverlapPatchEmbed(dim_in, embed_dims[i], patch, stride))
        self.patch_embed_side1 = OverlapPatchEmbed(side_chans, embed_dims[0], 7, 4)
        self.norm_add = nn.LayerNorm(embed_dims[0], eps=BLOCK_NORM_EPS)
        num_blocks = sum(depths)
        rates = [drop_path_rate * i / max(num_blocks - 1, 1) for i in range(num_blocks)]   # rising over all blocks
        for i in range(self.num_stages):
            first = sum(depths[:i])
            setattr(self, f"block{i + 1}", nn.ModuleList(
                Block(embed_dims[i], num_heads[i], mlp_ratios[i], sr_ratios[i], rates[first + j])
                for j in range(depths[i])))
            setattr(self, f"norm{i + 1}", nn.LayerNorm(embed_dims[i], eps=BLOCK_NORM_EPS))

    def embed_side(self, side: Tensor) -> Tensor:
        """The click embedding added to c1, ``[B, C1, H/4, W/4]``."""
        tokens, h, w = self.patch_embed_side1(side)
        return tokens_to_map(tokens, h, w)

    def forward(self, x: Tensor, side: Tensor) -> List[Tensor]:
        """Image ``[B, 3, H, W]`` and click map ``[B, side_chans, H, W]`` -> ``[c1, c2, c3, c4]``,
        ``c_i`` of shape ``[B, C_i, H / 2^(i+1), W / 2^(i+1)]`` (sizes rounded up per stride)."""
        features = []
        for i in range(1, self.num_stages + 1):
            tokens, h, w = getattr(self, f"patch_embed{i}")(x)
            for block in getattr(self, f"block{i}"):
                tokens = block(tokens, h, w)
            # contiguous NCHW, as SegFormer hands stages on (the next conv rounds differently per layout)
            x = tokens_to_map(getattr(self, f"norm{i}")(tokens), h, w).contiguous()
            features.append(x)
            if i == 1:
                # c1 is kept clean; only the input of stage 2 carries the click
                x = x + self.embed_side(side)
        return features


class TokenMLP(nn.Module):
    """Per-stage linear layer of the decoder, applied to the tokens of a ``[B, C, h, w]`` map."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        return tokens_to_map(self.proj(x.flatten(2).transpose(1, 2)), h, w)


class ConvBNReLU(nn.Module):
    """1x1 conv without bias (BN follows) -> BatchNorm -> ReLU; names ``conv``, ``bn`` as mmcv."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_dim, out_dim, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


class SegFormerHead(nn.Module):
    """All-MLP decoder: unify widths, resize to c1's grid, concatenate ``[c4, c3, c2, c1]``,
    fuse, Dropout2d (training only), predict. Returns ``(logits [B, classes, h1, w1], feature
    [B, decoder_dim, h1, w1])``."""

    def __init__(self, in_dims: Sequence[int], decoder_dim: int, num_classes: int = 1,
                 dropout: float = DECODER_DROPOUT) -> None:
        super().__init__()
        self.num_stages = len(in_dims)
        for i in reversed(range(self.num_stages)):  # registered c4 first, as the authors do
            setattr(self, f"linear_c{i + 1}", TokenMLP(in_dims[i], decoder_dim))
        self.linear_fuse = ConvBNReLU(self.num_stages * decoder_dim, decoder_dim)
        self.linear_pred = nn.Conv2d(decoder_dim, num_classes, 1)
        self.dropout = dropout

    def forward(self, features: Sequence[Tensor]) -> Tuple[Tensor, Tensor]:
        size = features[0].shape[-2:]
        maps = []
        for i in reversed(range(self.num_stages)):
            x = getattr(self, f"linear_c{i + 1}")(features[i])
            # SegFormer resizes with align_corners=False (the rest of EMC-Click uses True)
            maps.append(F.interpolate(x, size=size, mode="bilinear", align_corners=False) if i else x)
        feature = self.linear_fuse(torch.cat(maps, dim=1))
        if self.training and self.dropout > 0:
            feature = F.dropout2d(feature, self.dropout)
        return self.linear_pred(feature), feature


class SegFormerFeatureExtractor(nn.Module):
    """EMC-Click's SegFormer base network (``feature_extractor``): MiT + all-MLP decoder.

    It runs once per interaction, on the first click. Both outputs are at 1/4 resolution
    (``h, w = ceil(H / 4), ceil(W / 4)``; exactly H/4, W/4 for the predictor's multiple-of-4 sizes).
    """

    def __init__(self, embed_dims: Sequence[int], depths: Sequence[int], decoder_dim: int,
                 num_heads: Sequence[int] = (1, 2, 5, 8), mlp_ratios: Sequence[int] = (4, 4, 4, 4),
                 sr_ratios: Sequence[int] = (8, 4, 2, 1), side_chans: int = 1, num_classes: int = 1) -> None:
        super().__init__()
        self.backbone = MixVisionTransformer(embed_dims, depths, num_heads, mlp_ratios, sr_ratios,
                                             side_chans=side_chans)
        self.decode_head = SegFormerHead(embed_dims, decoder_dim, num_classes)

    def forward(self, image: Tensor, click_disk: Tensor) -> Dict[str, Tensor]:
        """Coarse logits and the feature the correction network reuses on every click.

        Args:
            image: ``[B, 3, H, W]``, already normalised: ``(rgb / 255 - mean) / std`` with the
                ImageNet mean and std.
            click_disk: ``[B, 1, H, W]`` float 0/1, the positive disk (radius 5, full resolution)
                of the first click only; later clicks, negative disks and the previous mask never
                reach the base network.

        Returns:
            ``instances_lr``: ``[B, 1, h, w]`` coarse logits (``linear_pred``).
            ``feature``: ``[B, decoder_dim, h, w]``, the fused decoder map after BN and ReLU (and
            Dropout2d in training).
            The assembled model's ``instances`` and ``instances_aux`` are both the bilinear
            (``align_corners=True``) upsampling of ``instances_lr`` to ``H x W``; the base
            network has no separate auxiliary output.
        """
        logits, feature = self.decode_head(self.backbone(image, click_disk))
        return {"instances_lr": logits, "feature": feature}


def segformer_b0(**kwargs) -> SegFormerFeatureExtractor:
    """MiT-B0 + 256-wide decoder (EMC-Click ``segb0``)."""
    return SegFormerFeatureExtractor(**{**SEGFORMER_CONFIGS["b0"], **kwargs})


def segformer_b3(**kwargs) -> SegFormerFeatureExtractor:
    """MiT-B3 + 512-wide decoder (EMC-Click ``segb3``)."""
    return SegFormerFeatureExtractor(**{**SEGFORMER_CONFIGS["b3"], **kwargs})


def feature_extractor_state(state_dict: Mapping[str, Tensor],
                            prefix: str = "feature_extractor.") -> Dict[str, Tensor]:
    """The base-network entries of a whole-model EMC-Click state dict, prefix stripped."""
    return {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}
