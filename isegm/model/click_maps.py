"""Clicks as the network sees them: the RITM points layout and the click-disk maps.

Points are ``[B, 2N, 3]`` float rows ``(y, x, click_index)`` in pixels of the network input,
y = row and x = column. Rows ``0..N-1`` are positive clicks, rows ``N..2N-1`` negative ones;
unused rows are padding ``(-1, -1, -1)``. The click index is kept for the family's tools and
never read by the model.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

# The authors' models encode each click as a filled disk of this radius (``norm_radius``).
DISK_RADIUS = 5


def is_padding(points: Tensor) -> Tensor:
    """``[B, 2N]`` bool: rows that are padding. As in RITM, a row is padding when max(y, x) < 0."""
    return points[..., :2].amax(dim=-1) < 0


def validate_points(points: Tensor, size: Tuple[int, int]) -> None:
    """Raise ``ValueError`` naming the offending click unless ``points`` fits an image of ``size``."""
    if points.dim() != 3 or points.shape[-1] != 3 or points.shape[1] % 2:
        raise ValueError(f"points must be [B, 2N, 3] (y, x, index; positives first), got {tuple(points.shape)}")
    yx = points[..., :2]
    if not torch.isfinite(yx).all():
        raise ValueError(f"points contain NaN or inf: {points.tolist()}")
    H, W = size
    # The evaluation protocol maps pixel indices as th * y / H and mirrors x as tw - x - 1, so
    # real clicks fill the open range (-1, H) x (-1, W), not only [0, H-1] x [0, W-1].
    outside = ~is_padding(points) & ((yx[..., 0] <= -1) | (yx[..., 1] <= -1) | (yx[..., 0] >= H) | (yx[..., 1] >= W))
    if outside.any():
        b, i = (int(v) for v in outside.nonzero()[0])
        y, x = (float(v) for v in yx[b, i])
        raise ValueError(f"click (y={y:g}, x={x:g}) at points[{b}, {i}] lies outside the {H}x{W} image; "
                         "coordinates are (row, col) in pixels of the network input, padding is (-1, -1, -1)")


def click_disks(points: Tensor, size: Tuple[int, int], radius: float = DISK_RADIUS) -> Tensor:
    """``[B, 2, H, W]`` float 0/1 maps: pixels within ``radius`` (inclusive) of a positive / negative click.

    Distances are squared in float32 from integer pixel indices exactly as RITM's ``DistMaps``
    does in disk mode, so the maps are bit-identical to the authors'.
    """
    B, P, _ = points.shape
    H, W = size
    y = points[..., 0].float()[..., None]
    x = points[..., 1].float()[..., None]
    rows = torch.arange(H, dtype=torch.float32, device=points.device)
    cols = torch.arange(W, dtype=torch.float32, device=points.device)
    dist2 = ((rows - y) ** 2)[..., :, None] + ((cols - x) ** 2)[..., None, :]   # [B, 2N, H, W]
    inside = (dist2 <= radius * radius) & ~is_padding(points)[..., None, None]
    return inside.view(B, 2, P // 2, H, W).any(dim=2).float()


def encode_clicks(points: Tensor, prev_mask: Tensor, radius: float = DISK_RADIUS) -> Tensor:
    """The click-map input ``[B, 3, H, W]``: ``[prev_mask, positive disks, negative disks]``."""
    disks = click_disks(points, prev_mask.shape[-2:], radius)
    return torch.cat([prev_mask.to(disks.dtype), disks], dim=1)
