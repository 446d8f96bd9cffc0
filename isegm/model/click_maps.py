"""Clicks as every model family sees them: the RITM points layout and the click-disk maps.

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
# Squared distance of a polarity without any click (RITM's DistMaps fills in 1e6).
NO_CLICK = 1e6


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


def click_maps(points: Tensor, size: Tuple[int, int], radius: float = DISK_RADIUS) -> Tuple[Tensor, Tensor]:
    """RITM's ``DistMaps`` in disk mode: ``(disks, dist_sq)``, both ``[B, 2, H, W]`` float32,
    channel 0 positive, 1 negative.

    ``dist_sq`` is the squared distance to the nearest click of each polarity (``NO_CLICK`` for
    none); ``disks`` is ``dist_sq <= radius^2``. The per-axis offsets ``row - y`` are computed in
    the points' dtype and rounded once to float32, then squared and summed in float32: float64
    clicks (as the evaluation's Clicker makes them) round differently from float32 ones, so a
    family whose authors cast the points first passes ``points.float()``.
    """
    B, P, _ = points.shape
    H, W = size
    dtype = torch.promote_types(points.dtype, torch.float32)
    yx = points[..., :2].to(dtype)
    rows = torch.arange(H, dtype=torch.float32, device=points.device).to(dtype)
    cols = torch.arange(W, dtype=torch.float32, device=points.device).to(dtype)
    dy = (rows - yx[..., :1]).float()
    dx = (cols - yx[..., 1:]).float()
    # padding rows get NO_CLICK + 0 exactly, set on the small per-axis terms, not the full maps
    padding = is_padding(points)[..., None]
    dy2 = (dy * dy).masked_fill(padding, NO_CLICK)
    dx2 = (dx * dx).masked_fill(padding, 0.0)
    dist_sq = dy2.unsqueeze(-1) + dx2.unsqueeze(-2)                                # [B, 2N, H, W]
    dist_sq = dist_sq.view(B, 2, P // 2, H, W).amin(dim=2)
    return (dist_sq <= float(radius) ** 2).float(), dist_sq


def encode_clicks(points: Tensor, prev_mask: Tensor, radius: float = DISK_RADIUS) -> Tensor:
    """The click-map input of the RITM family ``[B, 3, H, W]``: ``[prev_mask, positive disks,
    negative disks]``, with the points cast to float32 first, as the family's models do."""
    disks = click_maps(points.float(), prev_mask.shape[-2:], radius)[0]
    return torch.cat([prev_mask.to(disks.dtype), disks], dim=1)
