"""Predictor-side transforms of the RITM family: ZoomIn (crop and resize to the network size)
and horizontal-flip test-time augmentation.

The rules are those of the original evaluation (RITM's ``isegm/inference/transforms/zoom_in.py``
and ``flip.py``, github.com/SamsungLabs/ritm_interactive_segmentation, kept by SkipClick), and the
tests check the whole chain against the original's outputs. Boxes are
``(rmin, rmax, cmin, cmax)`` with inclusive pixel indices; clicks are ``(y, x)`` = (row, col).
Every resize is bilinear with ``align_corners=True``, as in the original.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .clicker import Click

BBox = Tuple[int, int, int, int]
# An int is the longest side of the resized crop (aspect ratio kept), a pair a fixed (H, W).
TargetSize = Union[int, Tuple[int, int]]


def resize(x: Tensor, size: Tuple[int, int]) -> Tensor:
    """Bilinear resize (``align_corners=True``) of ``[B, C, h, w]`` to ``size`` = (H, W)."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def bbox_from_mask(mask: np.ndarray) -> BBox:
    """Tightest box around the ``True`` pixels of a non-empty (H, W) mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def expand_bbox(bbox: BBox, ratio: float, min_size: float) -> BBox:
    """``bbox`` grown about its centre by ``ratio`` per side, each side at least ``min_size``;
    ends rounded with Python's ``round`` (half to even). May extend outside the image."""
    rmin, rmax, cmin, cmax = bbox
    rcenter, ccenter = 0.5 * (rmin + rmax), 0.5 * (cmin + cmax)
    height = max(ratio * (rmax - rmin + 1), min_size)
    width = max(ratio * (cmax - cmin + 1), min_size)
    return (int(round(rcenter - 0.5 * height)), int(round(rcenter + 0.5 * height)),
            int(round(ccenter - 0.5 * width)), int(round(ccenter + 0.5 * width)))


def clamp_bbox(bbox: BBox, height: int, width: int) -> BBox:
    """``bbox`` clipped to an image of ``height`` x ``width``."""
    rmin, rmax, cmin, cmax = bbox
    return max(0, rmin), min(height - 1, rmax), max(0, cmin), min(width - 1, cmax)


def bbox_iou(a: BBox, b: BBox) -> float:
    """IoU of two inclusive pixel boxes, as the product of the row and column segment IoUs."""
    def segment_iou(s: Sequence[int], t: Sequence[int]) -> float:
        inter = max(0, min(s[1], t[1]) - max(s[0], t[0]) + 1)
        union = max(1e-6, max(s[1], t[1]) - min(s[0], t[0]) + 1)
        return inter / union

    return segment_iou(a[:2], b[:2]) * segment_iou(a[2:], b[2:])


def get_object_roi(mask: np.ndarray, clicks: Sequence[Click], expansion_ratio: float, min_crop_size: float) -> BBox:
    """The zoom-in crop: box of ``mask`` (H, W bool) plus every positive click pixel, expanded
    and clamped to the image."""
    mask = mask.copy()
    for click in clicks:
        if click.is_positive:
            mask[int(click.coords[0]), int(click.coords[1])] = True
    bbox = expand_bbox(bbox_from_mask(mask), expansion_ratio, min_crop_size)
    return clamp_bbox(bbox, *mask.shape)


def clicks_inside(roi: BBox, clicks: Sequence[Click]) -> bool:
    """Whether every positive click lies in ``roi``; as in the original, the last row and
    column of the box count as outside."""
    rmin, rmax, cmin, cmax = roi
    return all(rmin <= c.coords[0] < rmax and cmin <= c.coords[1] < cmax for c in clicks if c.is_positive)


class ZoomIn:
    """Decides, per click, which part of the image the network sees and at what size.

    ``target_size``: network input size, a fixed ``(H, W)`` or an int = longest side of the crop.
    ``skip_clicks``: the first ``skip_clicks`` clicks use the full image at full resolution;
    ``-1`` means every click is zoomed, the full image (resized to the target) serving as the
    crop until a previous mask exists. ``suppress``: never crop to the object (SkipClick's
    official setting), so with ``skip_clicks=-1`` the crop is always the full image.

    The crop is the box of the previous mask ``prob > prob_thresh`` plus the positive clicks,
    grown by ``expansion_ratio`` (sides at least ``min_crop_size``). It is replaced only when
    there is none, a positive click lies outside it, or its IoU with the new box is below
    ``recompute_thresh_iou``. Outside the crop the returned probability is 0.

    One deliberate difference from the original: when a crop exists but a later click is not
    zoomed (fewer than ``skip_clicks`` clicks after an undo, or an empty previous mask with
    ``skip_clicks >= 0``), that click's full-resolution map is returned as is; the original
    squeezed it into the stale crop.
    """

    def __init__(self, target_size: TargetSize = 400, skip_clicks: int = 1, expansion_ratio: float = 1.4,
                 min_crop_size: int = 200, recompute_thresh_iou: float = 0.5, prob_thresh: float = 0.5,
                 suppress: bool = False) -> None:
        self.target_size = tuple(target_size) if isinstance(target_size, (tuple, list)) else int(target_size)
        self.skip_clicks = skip_clicks
        self.expansion_ratio = expansion_ratio
        self.min_crop_size = min_crop_size
        self.recompute_thresh_iou = recompute_thresh_iou
        self.prob_thresh = prob_thresh
        self.suppress = suppress
        self.reset((0, 0))

    def reset(self, image_size: Tuple[int, int]) -> None:
        """Forget the crop and the previous mask; a new image of ``image_size`` = (H, W)."""
        self.image_size = tuple(image_size)
        self.object_roi: Optional[BBox] = None
        self._prev_mask: Optional[np.ndarray] = None

    def get_state(self) -> Tuple[Optional[BBox], Optional[np.ndarray]]:
        """The crop and the previous mask it is computed from (``set_state`` restores them)."""
        return self.object_roi, self._prev_mask

    def set_state(self, state: Tuple[Optional[BBox], Optional[np.ndarray]]) -> None:
        """Restore a ``get_state`` of the same image (undo, or another object of the image)."""
        self.object_roi, self._prev_mask = state

    def update(self, clicks: Sequence[Click]) -> Optional[BBox]:
        """The crop for this call given all clicks so far, or None for the full image at full
        resolution (no zoom)."""
        if len(clicks) <= self.skip_clicks:
            return None
        current = None
        if not self.suppress and self._prev_mask is not None and self._prev_mask.any():
            current = get_object_roi(self._prev_mask, clicks, self.expansion_ratio, self.min_crop_size)
        if current is None:
            if self.skip_clicks >= 0:
                return None
            current = (0, self.image_size[0] - 1, 0, self.image_size[1] - 1)
        if (self.object_roi is None or not clicks_inside(self.object_roi, clicks)
                or bbox_iou(current, self.object_roi) < self.recompute_thresh_iou):
            self.object_roi = current
        return self.object_roi

    def net_size(self, roi: BBox) -> Tuple[int, int]:
        """(H, W) the crop ``roi`` is resized to."""
        if isinstance(self.target_size, tuple):
            return self.target_size
        height, width = roi[1] - roi[0] + 1, roi[3] - roi[2] + 1
        scale = self.target_size / max(height, width)
        return int(round(height * scale)), int(round(width * scale))

    def transform(self, image: Tensor, roi: BBox) -> Tensor:
        """``[B, C, H, W]`` full image -> the crop ``roi`` resized to ``net_size(roi)``."""
        rmin, rmax, cmin, cmax = roi
        return resize(image[:, :, rmin:rmax + 1, cmin:cmax + 1], self.net_size(roi))

    def transform_clicks(self, clicks: Sequence[Click], roi: BBox) -> List[Click]:
        """Clicks in pixels of the network input: ``y' = h * (y - rmin) / crop_height`` in
        float64 (the original's mapping, not the align_corners geometry of the resize)."""
        rmin, rmax, cmin, cmax = roi
        height, width = self.net_size(roi)
        return [c.copy(coords=(height * (c.coords[0] - rmin) / (rmax - rmin + 1),
                               width * (c.coords[1] - cmin) / (cmax - cmin + 1))) for c in clicks]

    def inv_transform(self, prob: Tensor, roi: Optional[BBox]) -> Tensor:
        """Network-size probabilities ``[1, 1, h, w]`` -> the full image ``[1, 1, H, W]``, zero
        outside the crop. Also keeps the mask the next crop is computed from."""
        if roi is not None:
            rmin, rmax, cmin, cmax = roi
            full = prob.new_zeros(1, 1, *self.image_size)
            full[:, :, rmin:rmax + 1, cmin:cmax + 1] = resize(prob, (rmax - rmin + 1, cmax - cmin + 1))
            prob = full
        if not self.suppress:   # the next crop is computed from it; a suppressed zoom never crops
            self._prev_mask = (prob[0, 0] > self.prob_thresh).cpu().numpy()
        return prob

    def needs_recompute(self) -> bool:
        """After an unzoomed first prediction (``skip_clicks == 0``): whether the object is small
        enough that the click should be predicted again, zoomed in on it."""
        if self.suppress or self.object_roi is not None or self.skip_clicks > 0 or not self._prev_mask.any():
            return False
        possible = get_object_roi(self._prev_mask, [], self.expansion_ratio, self.min_crop_size)
        full = (0, self.image_size[0] - 1, 0, self.image_size[1] - 1)
        return bbox_iou(possible, full) < 0.5


def flip_clicks(clicks: Sequence[Click], width: int) -> List[Click]:
    """Clicks of the left-right flipped image of ``width`` columns: ``x'' = width - x - 1``."""
    return [c.copy(coords=(c.coords[0], width - c.coords[1] - 1)) for c in clicks]


def add_flip(x: Tensor) -> Tensor:
    """``[B, ...]`` -> ``[2B, ...]``: the batch followed by its left-right flipped copy."""
    return torch.cat([x, x.flip(-1)], dim=0)


def merge_flip(logits: Tensor) -> Tensor:
    """``[2B, 1, h, w]`` logits of ``add_flip`` input -> ``[B, 1, h, w]``: the mean of each map and
    its flipped-back twin (logit averaging, before the sigmoid, as in the original)."""
    half = logits.shape[0] // 2
    return 0.5 * (logits[:half] + logits[half:].flip(-1))
