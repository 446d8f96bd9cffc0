"""SimpleFPN (ViTDet-style) turning the fused ``[B, N, C]`` tokens into a 4-level pyramid.

Per click, each branch recomputes only what depends on the clicks. ``precompute`` runs once
per image and caches, per branch:

* with skip connections, the image-only half of the first layer: the branch reads
  ``cat([fusion-stack output, tapped backbone map])``, and a linear layer of a concatenation is
  the sum of its two halves, so the tap's half (plus the bias) is computed once;
* every ``2x2 ConvT -> GroupNorm(1) -> 1x1 conv`` run folded into one product
  (``norm_fold.FoldedNorm``), with its image-only statistics terms.

The sums are the same layers, evaluated in another order.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from . import channels_last as cl
from .norm_fold import FoldedNorm, foldable


@dataclass
class BranchCache:
    """Click-independent state of one FPN branch (see ``SimpleFPN.precompute``)."""

    skip: Optional[Tensor] = None                            # [B', h, w, cols] first layer's tap half
    folds: Dict[int, FoldedNorm] = field(default_factory=dict)   # first layer index -> folded run

    @classmethod
    def cat(cls, caches: Sequence["BranchCache"]) -> "BranchCache":
        """The caches of one branch for several images, as one batch in order."""
        skip = None if caches[0].skip is None else torch.cat([c.skip for c in caches])
        return cls(skip, {i: FoldedNorm.cat([c.folds[i] for c in caches]) for i in caches[0].folds})


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
        return self.down_4, self.down_8, self.down_16, self.down_32

    def _split(self, layer: nn.Module) -> Tuple[Tensor, Tensor]:
        """First-layer matrix rows for the fusion-stack input and for the skip input."""
        w = cl.conv_matrix(layer)
        k = w.shape[0] // (self.in_dim + self.skip_dim)   # rows per input channel (4 for 2x2 convs)
        return w[: self.in_dim * k], w[self.in_dim * k:]

    def precompute(self, taps: Optional[Sequence[Tensor]], grid: Tuple[int, int]) -> List[BranchCache]:
        """Each branch's click-independent state, once per image.

        ``taps``: with skip connections, four ``[B, N, C]`` maps for branches 4, 8, 16, 32 in
        that order (None without). Weight-derived terms are rebuilt here too, so a cache always
        matches the current weights (also while training).
        """
        if self.skip_dim and (taps is None or len(taps) != 4):
            raise ValueError(f"this FPN has skip connections: it needs 4 tapped maps, got "
                             f"{None if taps is None else len(taps)}")
        caches = []
        for b, branch in enumerate(self.branches):
            cache = BranchCache()
            if self.skip_dim:
                first = branch[0]
                rows = cl.conv_rows(first, taps[b].reshape(taps[b].shape[0], *grid, -1))
                cache.skip = (torch.addmm(cl.conv_bias(first), rows.flatten(0, 2), self._split(first)[1])
                              .view(*rows.shape[:3], -1))
            i = 0
            while i < len(branch):
                if not foldable(branch, i):
                    i += 1
                    continue
                head = i == 0 and cache.skip is not None   # z carries only the fusion-stack channels
                cache.folds[i] = FoldedNorm.build(*branch[i:i + 3], in_rows=slice(0, self.in_dim) if head
                                                  else slice(None), offset=cache.skip if head else None)
                if head:
                    cache.skip = None                      # now inside the fold's offset
                i += 3
            caches.append(cache)
        return caches

    def forward(self, x: Tensor, grid: Tuple[int, int],
                cache: Optional[Sequence[BranchCache]] = None) -> List[Tensor]:
        """``x`` [B, N, in_dim] -> four ``[B, C_i, h_i, w_i]`` maps (channels-last memory).

        ``cache``: the output of ``precompute`` (batch 1 or B); required with skip connections,
        computed here otherwise.
        """
        if cache is None:
            if self.skip_dim:
                raise ValueError("this FPN has skip connections: pass the cache from precompute(taps, grid)")
            cache = self.precompute(None, grid)
        x = x.reshape(x.shape[0], *grid, -1)
        return [cl.to_nchw(self._branch(branch, x, c)) for branch, c in zip(self.branches, cache)]

    def _branch(self, branch: nn.Sequential, x: Tensor, cache: BranchCache) -> Tensor:
        i, y = 0, x
        if cache.skip is not None:
            first = branch[0]
            y = torch.matmul(cl.conv_rows(first, x), self._split(first)[0])
            y += cache.skip   # in place: the product is a fresh tensor, and broadcasting a batch-1 term
            y, i = cl.conv_finish(first, y), 1
        while i < len(branch):
            if i in cache.folds:
                y, i = cache.folds[i](y), i + 3
            else:
                y, i = cl.apply(branch[i], y), i + 1
        return y
