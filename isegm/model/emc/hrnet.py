"""HRNet + OCR base network of EMC-Click (the HRNet-W18-small-v2, W18 and W32 configs).

HRNet (Wang et al., "Deep High-Resolution Representation Learning for Visual Recognition", TPAMI
2020) keeps a 1/4-resolution branch through the whole network and adds 1/8, 1/16 and 1/32
branches stage by stage, exchanging information between all of them after every module. OCR
(Yuan et al., "Object-Contextual Representations for Semantic Segmentation", ECCV 2020) then
pools the features into one object-region vector guided by an auxiliary mask, and attends from
every pixel to it. The layout is RITM's (Sofiiuk et al. 2022, MIT licence), which EMC-Click
reuses; module and parameter names follow its state dict (``feature_extractor.*``), so the
authors' checkpoints load with ``strict=True``. Written from the papers and checked against outputs
of the authors' implementation; no upstream source is copied.

The click enters as an additive feature after the first stem conv (``maps_transform``, kept at the
model's top level as in the authors' state dict).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _resize(x: Tensor, size: Sequence[int]) -> Tensor:
    """Every HRNet / OCR resize: bilinear with ``align_corners=True``."""
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)


def _conv_bn(in_ch: int, out_ch: int, kernel: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    """Conv (no bias, BN follows) -> BN [-> ReLU], as ``Sequential`` keys ``0``, ``1``."""
    layers = [nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(out_ch)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ScaleLayer(nn.Module):
    """Multiplies by ``|scale * lr_mult|``: a learnable gain on the click features (init 0.05)."""

    def __init__(self, init_value: float = 0.05, lr_mult: float = 1.0) -> None:
        super().__init__()
        self.lr_mult = lr_mult
        self.scale = nn.Parameter(torch.full((1,), init_value / lr_mult))

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.abs(self.scale * self.lr_mult)


def maps_transform(in_channels: int = 1, use_leaky_relu: bool = True) -> nn.Sequential:
    """The click-map encoder whose output is added to the stem at 1/2 resolution:
    Conv1x1(in -> 16) -> LeakyReLU(0.2) (or ReLU) -> Conv3x3 stride 2 (16 -> 64) -> ScaleLayer."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, kernel_size=1),
        nn.LeakyReLU(negative_slope=0.2) if use_leaky_relu else nn.ReLU(inplace=True),
        nn.Conv2d(16, 64, kernel_size=3, stride=2, padding=1),
        ScaleLayer(init_value=0.05, lr_mult=1),
    )


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection (expansion 1)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(out + residual)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 conv-BN bottleneck with a residual connection (expansion 4)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(out + residual)


def _residual_layer(block: type, inplanes: int, planes: int, num_blocks: int) -> nn.Sequential:
    """``num_blocks`` blocks; the first one gets a 1x1 conv-BN shortcut when the width changes."""
    out = planes * block.expansion
    downsample = None
    if inplanes != out:
        downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, bias=False), nn.BatchNorm2d(out))
    layers = [block(inplanes, planes, downsample=downsample)]
    layers += [block(out, planes) for _ in range(1, num_blocks)]
    return nn.Sequential(*layers)


class HighResolutionModule(nn.Module):
    """One HRNet module: a residual stack per branch, then every output branch sums all branches,
    brought to its resolution (higher: 1x1 conv-BN + bilinear upsampling; lower: chains of
    stride-2 3x3 conv-BN), followed by ReLU."""

    def __init__(self, channels: Sequence[int], num_blocks: int) -> None:
        super().__init__()
        self.num_branches = len(channels)
        self.branches = nn.ModuleList(
            _residual_layer(BasicBlock, c, c, num_blocks) for c in channels)
        self.fuse_layers = nn.ModuleList()
        for i in range(self.num_branches):
            fuse = nn.ModuleList()
            for j in range(self.num_branches):
                if j > i:
                    fuse.append(_conv_bn(channels[j], channels[i], 1, relu=False))
                elif j == i:
                    fuse.append(None)
                else:
                    # i - j stride-2 convs; only the last changes the width and has no ReLU
                    steps = [_conv_bn(channels[j], channels[j], 3, 2) for _ in range(i - j - 1)]
                    steps.append(_conv_bn(channels[j], channels[i], 3, 2, relu=False))
                    fuse.append(nn.Sequential(*steps))
            self.fuse_layers.append(fuse)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: List[Tensor]) -> List[Tensor]:
        x = [branch(xi) for branch, xi in zip(self.branches, x)]
        out = []
        for i, fuse in enumerate(self.fuse_layers):
            # summed in branch order, the way the weights were trained
            y = x[0] if i == 0 else fuse[0](x[0])
            for j in range(1, self.num_branches):
                if j == i:
                    y = y + x[j]
                elif j > i:
                    y = y + _resize(fuse[j](x[j]), x[i].shape[-2:])
                else:
                    y = y + fuse[j](x[j])
            out.append(self.relu(y))
        return out


class SpatialGather(nn.Module):
    """OCR object-region pooling: per class, the softmax over all pixels of its aux logits
    weights the features. ``[B, C, h, w]`` features, ``[B, K, h, w]`` logits -> ``[B, C, K, 1]``."""

    def forward(self, feats: Tensor, probs: Tensor) -> Tensor:
        b, k = probs.shape[:2]
        probs = F.softmax(probs.view(b, k, -1), dim=2)
        feats = feats.view(b, feats.shape[1], -1).permute(0, 2, 1)
        return torch.matmul(probs, feats).permute(0, 2, 1).unsqueeze(3)


def _conv_bn_relu_nested(in_ch: int, out_ch: int) -> List[nn.Module]:
    """1x1 conv (no bias) and ``Sequential(BN, ReLU)``: OCR's layout (keys ``i``, ``i+1.0``)."""
    return [nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.Sequential(nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))]


class ObjectAttentionBlock(nn.Module):
    """Pixel-to-object-region attention (OCR, scale 1): queries from every pixel, keys and values
    from the pooled region vectors, scaled by ``key_channels^-0.5``."""

    def __init__(self, in_channels: int, key_channels: int) -> None:
        super().__init__()
        self.key_channels = key_channels
        self.f_pixel = nn.Sequential(*_conv_bn_relu_nested(in_channels, key_channels),
                                     *_conv_bn_relu_nested(key_channels, key_channels))
        self.f_object = nn.Sequential(*_conv_bn_relu_nested(in_channels, key_channels),
                                      *_conv_bn_relu_nested(key_channels, key_channels))
        self.f_down = nn.Sequential(*_conv_bn_relu_nested(in_channels, key_channels))
        self.f_up = nn.Sequential(*_conv_bn_relu_nested(key_channels, in_channels))

    def forward(self, x: Tensor, proxy: Tensor) -> Tensor:
        b, _, h, w = x.shape
        query = self.f_pixel(x).view(b, self.key_channels, -1).permute(0, 2, 1)
        key = self.f_object(proxy).view(b, self.key_channels, -1)
        value = self.f_down(proxy).view(b, self.key_channels, -1).permute(0, 2, 1)
        sim = F.softmax((self.key_channels ** -0.5) * torch.matmul(query, key), dim=-1)
        context = torch.matmul(sim, value).permute(0, 2, 1).contiguous()
        return self.f_up(context.view(b, self.key_channels, h, w))


class SpatialOCR(nn.Module):
    """``conv_bn_dropout(cat([object context, feats]))``; the Dropout2d(0.05) is inactive in eval."""

    def __init__(self, in_channels: int, key_channels: int, out_channels: int, dropout: float = 0.05) -> None:
        super().__init__()
        self.object_context_block = ObjectAttentionBlock(in_channels, key_channels)
        self.conv_bn_dropout = nn.Sequential(*_conv_bn_relu_nested(2 * in_channels, out_channels),
                                             nn.Dropout2d(dropout))

    def forward(self, feats: Tensor, proxy: Tensor) -> Tensor:
        context = self.object_context_block(feats, proxy)
        return self.conv_bn_dropout(torch.cat([context, feats], 1))


class HRNetOCR(nn.Module):
    """HRNet with an OCR head: EMC-Click's HRNet ``feature_extractor``.

    ``width``: channels of the 1/4 branch (18 or 32); branches have width x 1, 2, 4, 8.
    ``ocr_width``: OCR key channels; the OCR feature (the correction network's input) has
    ``2 * ocr_width`` channels. ``small``: HRNet-W18-small-v2 depth (2 blocks per branch, 3 and
    2 modules in stages 3 and 4) instead of 4 blocks and 4 and 3 modules.
    """

    def __init__(self, width: int, ocr_width: int, small: bool, num_classes: int = 1) -> None:
        super().__init__()
        num_blocks = 2 if small else 4
        self.conv1 = nn.Conv2d(3, 64, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = nn.Conv2d(64, 64, 3, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = _residual_layer(Bottleneck, 64, 64, num_blocks)

        previous = [64 * Bottleneck.expansion]
        for stage, num_modules in zip((2, 3, 4), (1, 3 if small else 4, 2 if small else 3)):
            channels = [width * 2 ** i for i in range(stage)]
            setattr(self, f"transition{stage - 1}", self._transition(previous, channels))
            setattr(self, f"stage{stage}", nn.Sequential(
                *(HighResolutionModule(channels, num_blocks) for _ in range(num_modules))))
            previous = channels

        total = sum(previous)
        self.conv3x3_ocr = nn.Sequential(nn.Conv2d(total, 2 * ocr_width, 3, 1, 1),
                                         nn.BatchNorm2d(2 * ocr_width), nn.ReLU(inplace=True))
        self.ocr_gather_head = SpatialGather()
        self.ocr_distri_head = SpatialOCR(2 * ocr_width, ocr_width, 2 * ocr_width)
        self.cls_head = nn.Conv2d(2 * ocr_width, num_classes, 1)
        self.aux_head = nn.Sequential(nn.Conv2d(total, total, 1), nn.BatchNorm2d(total), nn.ReLU(inplace=True),
                                      nn.Conv2d(total, num_classes, 1))

    @staticmethod
    def _transition(previous: Sequence[int], channels: Sequence[int]) -> nn.ModuleList:
        """Per new-stage branch: a 3x3 conv-BN-ReLU where the width changes (None: identity), and
        for the added branch a stride-2 3x3 conv-BN-ReLU on the last branch."""
        layers = nn.ModuleList()
        for i, c in enumerate(channels):
            if i < len(previous):
                layers.append(_conv_bn(previous[i], c, 3) if previous[i] != c else None)
            else:
                layers.append(nn.Sequential(_conv_bn(previous[-1], c, 3, 2)))
        return layers

    def hrnet_features(self, x: Tensor, additional_features: Optional[Tensor] = None) -> Tensor:
        """The 1/4-resolution aggregate ``cat(x0, up(x1), up(x2), up(x3))`` ``[B, 15 * width, h, w]``."""
        x = self.relu(self.bn1(self.conv1(x)))
        if additional_features is not None:
            x = x + additional_features
        x = self.layer1(self.relu(self.bn2(self.conv2(x))))
        branches = [x]
        for stage in (2, 3, 4):
            transition = getattr(self, f"transition{stage - 1}")
            inputs = []
            for i, layer in enumerate(transition):
                source = branches[min(i, len(branches) - 1)]
                inputs.append(source if layer is None else layer(source))
            branches = getattr(self, f"stage{stage}")(inputs)
        size = branches[0].shape[-2:]
        return torch.cat([branches[0]] + [_resize(b, size) for b in branches[1:]], 1)

    def forward(self, image: Tensor, additional_features: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """``image``: normalised ``[B, 3, H, W]``; ``additional_features``: ``[B, 64, H/2, W/2]``
        added after the first stem conv (the encoded click map), or None.

        Returns ``instances_lr`` (coarse logits), ``instances_aux`` (OCR's soft object regions,
        logits) and ``feature`` (the OCR output, ``2 * ocr_width`` channels), all at 1/4
        resolution.
        """
        feats = self.hrnet_features(image, additional_features)
        aux = self.aux_head(feats)
        feats = self.conv3x3_ocr(feats)
        feature = self.ocr_distri_head(feats, self.ocr_gather_head(feats, aux))
        return {"instances_lr": self.cls_head(feature), "instances_aux": aux, "feature": feature}
