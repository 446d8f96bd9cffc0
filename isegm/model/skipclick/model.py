"""SkipClick (Schön et al. 2025): a frozen DINO encoder run once per image, a small per-click path.

::

    encode_image(image)                      once per image
      normalise -> backbone taps (blocks 2, 5, 8, 11) -> fuse (Linear 4C -> C) -> image tokens
      + fusion-stack position table, + each FPN branch's click-independent terms
    decode(features, points, prev_mask)      per click
      click disks + prev mask -> patch embed -> + image tokens -> fusion stack
      -> SimpleFPN (skip halves cached) -> SegFormer head [-> DetailRefiner, tiny model only]
      -> bilinear upsample (align_corners=True)

``model(torch.cat([image, prev_mask], 1), points)['instances']`` is the family's full forward
and equals ``decode(encode_image(image), points, prev_mask)``. ``neck`` and ``head`` hold the
plain layers (``neck.py``, ``head.py``); the per-click path runs them as ``fast_neck`` and
``fast_head`` (``fast_decoder.py``), the same function evaluated faster.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..backbones import BACKBONES, DinoViT, build_backbone
from ..click_maps import DISK_RADIUS, encode_clicks, validate_points
from ..layers import PatchEmbed
from ..normalize import ImageNormalize
from .detail import DetailRefiner
from .fast_decoder import BranchCache, FastFPN, FastHead
from .fusion import FusionStack, token_grid
from .head import SegFormerHead
from .neck import SimpleFPN


@dataclass
class SkipClickConfig:
    """Everything that fixes the architecture; stored in checkpoints as plain JSON.

    ``tap_blocks``: backbone blocks (0-based) whose outputs are used. Several taps are fused by a
    Linear(len * C -> C) into the image tokens ("+ Intermediate Features"); a single tap is used
    as is. The authors' Baseline and "+ Frozen Backbone" models declare block 11 but their code
    feeds block 2 to the fusion stack (see ``BLOCK2_QUIRK``); their released weights were trained
    that way, so those variants set ``tap_blocks=(2,)``.
    ``tap_norm``: apply the backbone's final LayerNorm to the taps (the authors: DINOv2 no,
    DINOv3 yes). ``skip_connections`` needs 4 taps, one per FPN level (strides 4, 8, 16, 32).
    ``train_size``: crop the fusion-stack position table was trained for (its grid is
    ``train_size / patch``).
    ``detail_channels``: width of a ``DetailRefiner`` after the head (0, every paper config:
    none); for backbones trained from scratch, whose tokens carry little sub-patch shape.
    """

    backbone: str = "dinov2_vitb14_reg"
    tap_blocks: Tuple[int, ...] = (2, 5, 8, 11)
    tap_norm: bool = False
    skip_connections: bool = True
    freeze_backbone: bool = True
    fusion_depth: int = 4
    fusion_heads: int = 12
    fusion_mlp_ratio: float = 4.0
    train_size: Tuple[int, int] = (448, 448)
    fpn_dims: Tuple[int, ...] = (128, 256, 512, 1024)
    head_channels: int = 256
    head_upsample: str = "x1"
    disk_radius: float = DISK_RADIUS
    detail_channels: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):   # JSON round trips give lists
            if isinstance(getattr(self, f.name), list):
                setattr(self, f.name, tuple(getattr(self, f.name)))
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; known: {', '.join(sorted(BACKBONES))}")
        if self.skip_connections and len(self.tap_blocks) != 4:
            raise ValueError(f"skip_connections needs 4 tap_blocks (one per FPN level), got {self.tap_blocks}")

    def to_dict(self) -> Dict:
        return asdict(self)


BLOCK2_QUIRK = (
    "The authors' Baseline / +Frozen Backbone configs set use_intermediate=[11], but their extractor "
    "always returns blocks [2, 5, 8, 11] and the model takes the first: the fusion stack sees block 2. "
    "Their released weights were trained so; tap_blocks=(2,) reproduces it, tap_blocks=(11,) is the "
    "declared intent.")


@dataclass
class ImageFeatures:
    """Everything image-only, computed once per image by ``SkipClick.encode_image``.

    ``taps``: the tapped backbone maps ``[B, N, C]`` (prefix tokens dropped).
    ``tokens``: image tokens entering the fusion stack ``[B, N, C]``.
    ``pos_embed``: the fusion stack's position table for this grid ``[1, N, C]``.
    ``neck``: each FPN branch's click-independent state (``FastFPN.precompute``).
    ``grid``: token grid (gh, gw); ``image_size``: (H, W) of the network input.
    ``detail``: the ``DetailRefiner``'s stride-2 image features (None without one).
    """

    taps: List[Tensor]
    tokens: Tensor
    pos_embed: Tensor
    neck: List[BranchCache]
    grid: Tuple[int, int]
    image_size: Tuple[int, int]
    detail: Optional[Tensor] = None

    @property
    def batch_size(self) -> int:
        return self.tokens.shape[0]

    @classmethod
    def cat(cls, features: Sequence["ImageFeatures"]) -> "ImageFeatures":
        """Features of several images of one size (same model) as one batch, in order: one
        ``decode`` then serves the click sets of all of them (batched evaluation)."""
        first = features[0]
        if len(features) == 1:
            return first
        for f in features[1:]:
            if (f.grid, f.image_size) != (first.grid, first.image_size):
                raise ValueError(f"cannot batch features of {first.image_size} and {f.image_size} images")
        return cls([torch.cat(level) for level in zip(*(f.taps for f in features))],
                   torch.cat([f.tokens for f in features]), first.pos_embed,
                   [BranchCache.cat(branch) for branch in zip(*(f.neck for f in features))],
                   first.grid, first.image_size,
                   None if first.detail is None else torch.cat([f.detail for f in features]))


class FeatureExtractor(nn.Module):
    """Holds the backbone under its family name (``feature_extractor.dinov2.*`` keys, as the
    authors' checkpoints have) and returns its tapped maps."""

    def __init__(self, backbone: str, tap_blocks: Sequence[int], tap_norm: bool) -> None:
        super().__init__()
        self.family = backbone.split("_")[0]
        self.add_module(self.family, build_backbone(backbone))
        self.tap_blocks = tuple(tap_blocks)
        self.tap_norm = tap_norm

    @property
    def vit(self) -> DinoViT:
        return getattr(self, self.family)

    def forward(self, x: Tensor) -> List[Tensor]:
        return self.vit.get_intermediate_layers(x, self.tap_blocks, norm=self.tap_norm)


class SkipClick(nn.Module):
    """The SkipClick family (all paper rows are configurations of this one module)."""

    def __init__(self, config: Optional[SkipClickConfig] = None) -> None:
        super().__init__()
        self.config = config = config or SkipClickConfig()
        self.feature_extractor = FeatureExtractor(config.backbone, config.tap_blocks, config.tap_norm)
        vit = self.feature_extractor.vit
        self.patch_size, dim = vit.patch_size, vit.embed_dim
        self.patch_embed_coords = PatchEmbed(self.patch_size, 3, dim)
        self.backbone_mix = FusionStack(dim, config.fusion_depth, config.fusion_heads, config.fusion_mlp_ratio,
                                        token_grid(config.train_size, self.patch_size))
        self.neck = SimpleFPN(dim, config.fpn_dims, skip_dim=dim if config.skip_connections else 0)
        self.head = SegFormerHead(config.fpn_dims, config.head_channels, upsample=config.head_upsample)
        self.fast_neck, self.fast_head = FastFPN(self.neck), FastHead(self.head)   # no parameters of their own
        self.fuse = nn.Linear(dim * len(config.tap_blocks), dim) if len(config.tap_blocks) > 1 else None
        self.detail = DetailRefiner(config.detail_channels) if config.detail_channels else None
        self.normalize = ImageNormalize()
        if config.freeze_backbone:
            self.feature_extractor.requires_grad_(False)

    @property
    def stochastic_encoding(self) -> bool:
        """Whether ``encode_image`` in train mode differs from eval mode: its backbone draws random
        numbers in training (DINOv3's RoPE rescaling; nothing else image-only does)."""
        return self.feature_extractor.vit.stochastic_in_training

    def encode_image(self, image: Tensor, points: Optional[Tensor] = None) -> ImageFeatures:
        """Run everything image-only: ``image`` float ``[B, 3, H, W]`` in [0, 1], H and W multiples
        of the patch size (14 for DINOv2, 16 for DINOv3). ``points`` is not read: the families'
        common signature (``isegm.model.families``)."""
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"image must be [B, 3, H, W], got {tuple(image.shape)}")
        if not image.is_floating_point():
            raise ValueError(f"image must be float in [0, 1], got dtype {image.dtype}; divide uint8 images by 255")
        if not torch.isfinite(image).all():
            raise ValueError("image contains NaN or inf values")
        grid = token_grid(image.shape[-2:], self.patch_size)
        normalized = self.normalize(image)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze_backbone):
            taps = self.feature_extractor(normalized)
        tokens = self.fuse(torch.cat(taps, dim=-1)) if self.fuse is not None else taps[0]
        neck = self.fast_neck.precompute(taps if self.config.skip_connections else None, grid)
        detail = self.detail.encode(normalized) if self.detail is not None else None
        return ImageFeatures(taps, tokens, self.backbone_mix.pos_embed_for(grid), neck, grid,
                             tuple(image.shape[-2:]), detail)

    def decode(self, features: ImageFeatures, points: Tensor, prev_mask: Optional[Tensor] = None) -> Tensor:
        """Per-click path: logits ``[B, 1, H, W]`` at the input resolution (before any sigmoid).

        ``points``: ``[B, 2N, 3]`` (y, x, index) rows, positives first, ``-1`` padding.
        ``prev_mask``: ``[B, 1, H, W]`` previous mask or probability (zeros when None).
        ``features`` of batch 1 serve B different click sets on the same image.
        """
        H, W = features.image_size
        B = points.shape[0]
        if prev_mask is None:
            prev_mask = features.tokens.new_zeros(B, 1, H, W)
        if prev_mask.shape[0] != B or tuple(prev_mask.shape[1:]) != (1, H, W):
            raise ValueError(f"prev_mask must be [{B}, 1, {H}, {W}] to match points and image, got {tuple(prev_mask.shape)}")
        if features.batch_size not in (1, B):
            raise ValueError(f"features of batch {features.batch_size} cannot serve {B} click sets")
        if not torch.isfinite(prev_mask).all():
            raise ValueError("prev_mask contains NaN or inf values")
        validate_points(points, (H, W))
        click_maps = encode_clicks(points, prev_mask, self.config.disk_radius)
        x = self.backbone_mix(features.tokens, self.patch_embed_coords(click_maps), features.pos_embed)
        logits = self.fast_head(self.fast_neck(x, features.grid, features.neck))
        if self.detail is not None:
            logits = self.detail(logits, features.detail, click_maps)
        return F.interpolate(logits, size=(H, W), mode="bilinear", align_corners=True)

    def forward(self, x: Tensor, points: Tensor) -> Dict[str, Optional[Tensor]]:
        """The family's signature: ``x`` = ``cat([image, prev_mask], 1)`` ``[B, 4, H, W]``."""
        if x.dim() != 4 or x.shape[1] != 4:
            raise ValueError(f"input must be [B, 4, H, W] (RGB in [0, 1] + previous mask), got {tuple(x.shape)}")
        logits = self.decode(self.encode_image(x[:, :3]), points, x[:, 3:])
        return {"instances": logits, "instances_aux": None}
