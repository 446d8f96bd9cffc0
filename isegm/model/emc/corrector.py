"""EMC-Click's mask-correction network (the authors' ``AttRefineAfterLayer``, state-dict prefix
``refiner.``), run on every click.

Everything runs at 1/4 of the network input (h x w = H/4 x W/4)::

    low-level stream   PixelUnshuffle(4)(cat[rgb, pos/neg disks, sigmoid(prev logits)]) -> 2 XConv
    base stream        refine_fusion(cached base feature)  (Conv1x1 + BN + ReLU)
    F = fusion1(cat[base, low-level])
    templates          top-K pixels per polarity by cosine similarity to the clicks, weighted by
                       the distance to them (``select_templates``)
    correlation        <q(template), k(pixel)> maps, K per polarity -> shared corr_conv -> corr_fusion
    attention          every pixel of F attends to the 2K template features (4 heads)
    head               all_fusion(cat[F + attention, correlation]) -> 2 XConv -> Conv3x3 -> logits

The previous mask is the previous click's refined 1/4-resolution logits (the base network's
coarse logits on the first click), kept by the caller. Written from the paper (Du et al., CVPR
2023) and checked against outputs of the authors' implementation; no upstream source is copied.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..click_maps import NO_CLICK

# PixelUnshuffle factor: the correction network works at the base feature's 1/4 resolution.
STRIDE = 4


def resize_ac(x: Tensor, size: Tuple[int, int]) -> Tensor:
    """Bilinear resize with ``align_corners=True``, as EMC-Click does everywhere outside SegFormer."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class XConv(nn.Module):
    """The authors' ``XConvBnRelu2``: depthwise 3x3 (bias) -> BN -> depthwise 3x3 (bias) ->
    pointwise 1x1 (bias) -> BN -> ReLU, with no activation between the two depthwise convs."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.conv3x3_1 = nn.Conv2d(in_dim, in_dim, 3, 1, 1, groups=in_dim)
        self.norm1 = nn.BatchNorm2d(in_dim)
        self.conv3x3_2 = nn.Conv2d(in_dim, in_dim, 3, 1, 1, groups=in_dim)
        self.conv1x1 = nn.Conv2d(in_dim, out_dim, 1)
        self.norm2 = nn.BatchNorm2d(out_dim)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv3x3_2(self.norm1(self.conv3x3_1(x)))
        return F.relu(self.norm2(self.conv1x1(x)))


class ConvNormReLU(nn.Module):
    """Conv1x1 with bias -> BN -> ReLU (names ``conv``, ``norm``): the base-feature projection."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_dim, out_dim, 1)
        self.norm = nn.BatchNorm2d(out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.norm(self.conv(x)))


@dataclass
class TemplateSelection:
    """The click-guided template choice of one correction step (all at 1/4 resolution).

    ``points_lr``: ``[B, 2N, 3]`` int64 clicks quantised to h x w (``round(p / 4)``, half to
    even, clamped to ``h-1`` / ``w-1``). ``dist``: ``[B, 2, h*w]`` normalised distance to the
    nearest positive / negative click. ``similarity``: ``[B, 2N, h*w]`` cosine similarity of each
    click's feature to every pixel (padding rows 0). ``pos_similarity`` / ``neg_similarity``:
    ``[B, h*w]`` max over each polarity. ``pos_scores`` / ``neg_scores``: ``[B, h*w]``.
    ``pos_indices`` / ``neg_indices``: ``[B, K]`` flat pixel indices ``y*w + x`` in ``torch.topk``
    order (descending score), with ``pos_values`` / ``neg_values`` their scores.
    """

    points_lr: Tensor
    dist: Tensor
    similarity: Tensor
    pos_similarity: Tensor
    neg_similarity: Tensor
    pos_scores: Tensor
    neg_scores: Tensor
    pos_indices: Tensor
    neg_indices: Tensor
    pos_values: Tensor
    neg_values: Tensor


def quantize_points(points: Tensor, size_lr: Tuple[int, int]) -> Tensor:
    """Clicks ``[B, 2N, 3]`` in network pixels -> int64 pixels of the 1/4 grid ``size_lr``.

    As the authors: rounded in the points' own dtype (float64 from the evaluation's Clicker) with
    ``torch.round`` (half to even), clamped from above only; padding ``-1`` becomes ``-0 -> 0``
    while its click index stays ``-1``.
    """
    h, w = size_lr
    points = points.clone()
    points[:, :, :2] = torch.round(points[:, :, :2] * (1.0 / STRIDE))
    points[:, :, 0].clamp_(max=h - 1)
    points[:, :, 1].clamp_(max=w - 1)
    return points.long()


def normalized_click_distance(dist_sq: Tensor, size_lr: Tuple[int, int]) -> Tensor:
    """``[B, 2, H, W]`` squared click distances -> ``[B, 2, h*w]`` distances divided by the image
    diagonal, point-sampled to the 1/4 grid (bilinear, ``align_corners=True``).

    A polarity without clicks (``1e6`` everywhere) counts as 1 px away, so its score factor is
    ~1 everywhere.
    """
    H, W = dist_sq.shape[-2:]
    dist_sq = torch.where(dist_sq == NO_CLICK, torch.ones_like(dist_sq), dist_sq)
    diagonal = torch.sqrt(torch.tensor(float(H * H + W * W), dtype=dist_sq.dtype, device=dist_sq.device))
    dist = resize_ac(torch.sqrt(dist_sq) / diagonal, size_lr)
    return dist.reshape(dist.shape[0], 2, -1)


def _gather_rows(x: Tensor, indices: Tensor) -> Tensor:
    """``x`` ``[B, M, C]``, ``indices`` ``[B, K]`` -> ``[B, K, C]``."""
    return torch.gather(x, 1, indices.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def select_templates(feature: Tensor, points: Tensor, dist_sq: Tensor, k: int) -> TemplateSelection:
    """Choose the K positive and K negative template pixels of ``feature`` ``[B, C, h, w]``.

    ``points``: ``[B, 2N, 3]`` clicks (y, x, index) in network pixels; ``dist_sq``: their
    ``[B, 2, H, W]`` squared distance maps. Scores (no NMS, no exclusion, the two sets are
    independent)::

        pos = (max_sim_pos + (1 - max_sim_neg)) * (1 - dist_pos)
        neg = (max_sim_neg + (1 - max_sim_pos)) * (1 - dist_neg)

    A polarity without clicks has max similarity exactly 0 (padding rows are zeroed, not
    excluded). The templates are ``torch.topk(scores, k)`` on float32 ``[B, h*w]``: the order of
    (near-)equal scores is the kernel's, and it is the channel order of the correlation maps.
    """
    B, C, h, w = feature.shape
    points_lr = quantize_points(points, (h, w))
    dist = normalized_click_distance(dist_sq, (h, w))
    num = points.shape[1] // 2
    feat = feature.permute(0, 2, 3, 1).reshape(B, h * w, C)
    index = (points_lr[:, :, 0] * w + points_lr[:, :, 1]).clamp(min=0)
    click_feat = F.normalize(_gather_rows(feat, index), dim=-1)
    similarity = torch.einsum("bnc,bmc->bnm", click_feat, F.normalize(feat, dim=-1))
    similarity = similarity.masked_fill((points_lr[:, :, 2] < 0).unsqueeze(-1), 0.0)
    pos_sim = similarity[:, :num].max(dim=1)[0]
    neg_sim = similarity[:, num:].max(dim=1)[0]
    pos_scores = (pos_sim + (1 - neg_sim)) * (1 - dist[:, 0])
    neg_scores = (neg_sim + (1 - pos_sim)) * (1 - dist[:, 1])
    pos_values, pos_indices = torch.topk(pos_scores, k, dim=-1)
    neg_values, neg_indices = torch.topk(neg_scores, k, dim=-1)
    return TemplateSelection(points_lr, dist, similarity, pos_sim, neg_sim, pos_scores, neg_scores,
                             pos_indices, neg_indices, pos_values, neg_values)


@dataclass
class CorrectionOutput:
    """``logits_lr``: refined logits ``[B, 1, h, w]`` (the next click's previous mask);
    ``logits``: the same upsampled to ``[B, 1, H, W]``; ``selection``: the templates used."""

    logits_lr: Tensor
    logits: Tensor
    selection: TemplateSelection


class CorrectionNetwork(nn.Module):
    """EMC-Click's efficient mask-correction network (``AttRefineAfterLayer``, ``xconv2`` layers).

    ``feature_channels``: channels of the cached base feature (96 / 128 / 256 for HRNet-18s /
    18 / 32, 256 / 512 for SegFormer-B0 / B3). ``mid_dims``: width of the network and number K
    of templates per polarity (the released configs tie ``corr_channel`` to it).

    Submodules are registered in the authors' state-dict order. ``corr_conv_pos`` and
    ``corr_conv_neg`` are the same module as ``corr_conv`` (one set of weights, listed under
    three names in the state dict, as in the authors' checkpoints).
    """

    def __init__(self, feature_channels: int, mid_dims: int = 64, num_heads: int = 4) -> None:
        super().__init__()
        self.num_templates = mid_dims
        image_channels = 6 * STRIDE * STRIDE   # rgb + 2 click disks + previous mask, unshuffled
        self.feature_convq = nn.Conv2d(mid_dims, mid_dims, 1)
        self.feature_convk = nn.Conv2d(mid_dims, mid_dims, 1)
        self.corr_conv = XConv(mid_dims, mid_dims)
        self.corr_conv_pos = self.corr_conv
        self.corr_conv_neg = self.corr_conv
        self.corr_fusion = XConv(2 * mid_dims, mid_dims)
        self.image_conv1 = nn.Sequential(nn.PixelUnshuffle(STRIDE), XConv(image_channels, mid_dims))
        self.image_conv2 = XConv(mid_dims, mid_dims)
        self.refine_fusion = ConvNormReLU(feature_channels, mid_dims)
        self.cross_attention = nn.MultiheadAttention(mid_dims, num_heads)
        self.fusion1 = nn.Sequential(XConv(2 * mid_dims, mid_dims), XConv(mid_dims, mid_dims))
        self.all_fusion = XConv(2 * mid_dims, mid_dims)
        self.refine_fusion1 = XConv(mid_dims, mid_dims)
        self.refine_fusion2 = XConv(mid_dims, mid_dims)
        self.refine_pred = nn.Conv2d(mid_dims, 1, 3, 1, 1)

    def _correlation(self, q: Tensor, k: Tensor, indices: Tensor) -> Tensor:
        """``[B, K, h, w]``: channel j is <q at template j, k at each pixel>, templates as 1x1 kernels."""
        B, C, h, w = k.shape
        kernels = _gather_rows(q.flatten(2).transpose(1, 2), indices)            # [B, K, C]
        corr = F.conv2d(k.reshape(1, B * C, h, w), kernels.reshape(-1, C, 1, 1), groups=B)
        return corr.view(B, -1, h, w)

    def forward(self, image: Tensor, click_map: Tensor, dist_sq: Tensor, feature: Tensor, prev_logits_lr: Tensor,
                points: Tensor, templates: Optional[Tuple[Tensor, Tensor]] = None) -> CorrectionOutput:
        """One correction step.

        Args:
            image: normalised RGB ``[B, 3, H, W]`` (H, W multiples of 4).
            click_map: ``[B, 2, H, W]`` positive / negative click disks of all clicks.
            dist_sq: ``[B, 2, H, W]`` squared distance to the nearest click of each polarity
                (``1e6`` for a polarity without clicks).
            feature: the base network's feature ``[B, C, H/4, W/4]``.
            prev_logits_lr: previous-mask logits ``[B, 1, h', w']`` (any size, resized to H x W).
            points: ``[B, 2N, 3]`` clicks (y, x, index) in network pixels, positives first.
            templates: optional ``(pos_indices, neg_indices)`` ``[B, K]`` forced in place of the
                selected ones (to replay another platform's tie order); scores are still computed.
        """
        H, W = image.shape[-2:]
        prev_mask = torch.sigmoid(resize_ac(prev_logits_lr, (H, W)))
        image_feature = self.image_conv2(self.image_conv1(torch.cat([image, click_map, prev_mask], 1)))
        # the base feature comes first; for sides that are multiples of 4 both streams are H/4 x W/4
        fused = self.fusion1(torch.cat([self.refine_fusion(feature), image_feature], 1))
        B, C, h, w = fused.shape

        with torch.no_grad():
            selection = select_templates(fused.detach(), points, dist_sq, self.num_templates)
        pos_idx, neg_idx = templates if templates is not None else (selection.pos_indices, selection.neg_indices)

        q, k = self.feature_convq(fused), self.feature_convk(fused)
        pos_corr = self.corr_conv(self._correlation(q, k, pos_idx))
        neg_corr = self.corr_conv(self._correlation(q, k, neg_idx))
        corr = self.corr_fusion(torch.cat([pos_corr, neg_corr], 1))

        pixels = fused.flatten(2).permute(2, 0, 1)                                  # [h*w, B, C]
        memory = _gather_rows(fused.flatten(2).transpose(1, 2), torch.cat([pos_idx, neg_idx], 1)).transpose(0, 1)
        # the default need_weights=True path, the one the authors' call takes
        attended = self.cross_attention(pixels, memory, memory)[0]
        fused = fused + attended.permute(1, 2, 0).reshape(B, C, h, w)

        x = self.refine_fusion2(self.refine_fusion1(self.all_fusion(torch.cat([fused, corr], 1))))
        logits_lr = self.refine_pred(x)
        return CorrectionOutput(logits_lr, resize_ac(logits_lr, (H, W)), selection)
