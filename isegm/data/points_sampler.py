"""Training clicks: RITM's ``MultiPointSampler`` and EMC-Click's ``FirstPointSampler``, drawing
from a ``np.random.Generator``.

A sample's target is one root object, or with ``merge_objects_prob`` the union of several;
with ``use_hierarchy`` a part of it may be chosen instead, with some of its parts cut out. The
clicks come back in the RITM layout: float32 ``[2N, 3]`` rows ``(y, x, index)`` (row, column),
the positives first, each half padded with ``(-1, -1, -1)`` to ``N = max_num_points`` rows.
The index is RITM's: 0 for a click placed in the object's interior by ``first_click_center``,
100 for every other click (SkipClick never reads it; EMC-Click's base network reads only the
clicks of index 0).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import cv2
import numpy as np

from ..utils.masks import padded_distance
from .datasets.training import PointsSampler
from .sample import TrainingSample

FIRST_CLICK_INDEX = 0
CLICK_INDEX = 100
PADDING = (-1, -1, -1)

Point = Tuple[int, int, int]


@dataclass
class Region:
    """Where one kind of click may go: per click, mask ``k`` (bool H x W) is drawn with
    probability ``probs[k]`` and the click is a uniform pixel of it."""

    masks: List[np.ndarray]
    probs: List[float]

    @classmethod
    def of(cls, mask: np.ndarray) -> Region:
        return cls([mask], [1.0])


def click_count_probs(n: int, gamma: float) -> np.ndarray:
    """``P(k) ∝ gamma ** k`` for ``k = 0 .. n-1``: few clicks are the most likely."""
    probs = gamma ** np.arange(n, dtype=np.float64)
    return probs / probs.sum()


def interior_candidates(mask: np.ndarray, rng: np.random.Generator, k: float = 1.7,
                        full_prob: float = 0.0) -> np.ndarray:
    """``[M, 2]`` (y, x) pixels where a first click "at the centre" may go: those farther from
    the boundary than ``max distance / k`` (``k <= 0``: one pixel drawn with probability
    proportional to its distance); with probability ``full_prob`` the whole mask."""
    if full_prob > 0 and rng.random() < full_prob:
        return np.argwhere(mask)
    dist = padded_distance(mask)   # the image border counts as object boundary
    if dist.max() == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if k > 0:
        return np.argwhere(dist > dist.max() / k)
    probs = dist.ravel().astype(np.float64)
    pixel = rng.choice(probs.size, p=probs / probs.sum())
    return np.array([np.unravel_index(pixel, dist.shape)])


class MultiPointSampler(PointsSampler):
    """RITM's click sampler for training (``sample(sample, rng) -> (mask, points)``).

    The number of clicks per region follows ``P(k) ∝ prob_gamma ** k``: 1..N positives per
    target object, 0..N negatives. Positives come from the target mask, eroded
    ``positive_erode_iters`` times with probability ``positive_erode_prob`` (unless that leaves
    10 pixels or fewer). Each negative goes anywhere outside the target (``negative_bg_prob``),
    to other objects (``negative_other_prob``; anywhere outside when there is none) or to a
    band ``ceil(expand_ratio * sqrt(area))`` pixels wide around the target
    (``negative_border_prob``). Several target regions (merged objects) each get their first
    click, then the rest is drawn from all of them (only the first region's first click with
    ``only_one_first_click``).
    """

    def __init__(self, max_num_points: int, prob_gamma: float = 0.7, expand_ratio: float = 0.1,
                 positive_erode_prob: float = 0.9, positive_erode_iters: int = 3,
                 negative_bg_prob: float = 0.1, negative_other_prob: float = 0.4,
                 negative_border_prob: float = 0.5, merge_objects_prob: float = 0.0,
                 max_num_merged_objects: int = 2, use_hierarchy: bool = False,
                 first_click_center: bool = False, only_one_first_click: bool = False,
                 sfc_inner_k: float = 1.7, sfc_full_inner_prob: float = 0.0) -> None:
        if not math.isclose(negative_bg_prob + negative_other_prob + negative_border_prob, 1.0):
            raise ValueError("negative_bg_prob + negative_other_prob + negative_border_prob must be 1, got "
                             f"{negative_bg_prob} + {negative_other_prob} + {negative_border_prob}")
        self.max_num_points = max_num_points
        self.expand_ratio = expand_ratio
        self.positive_erode_prob = positive_erode_prob
        self.positive_erode_iters = positive_erode_iters
        self.negative_probs = [negative_bg_prob, negative_other_prob, negative_border_prob]
        self.merge_objects_prob = merge_objects_prob
        self.max_num_merged_objects = max_num_points if max_num_merged_objects == -1 else max_num_merged_objects
        self.use_hierarchy = use_hierarchy
        self.first_click_center = first_click_center
        self.only_one_first_click = only_one_first_click
        self.sfc_inner_k = sfc_inner_k
        self.sfc_full_inner_prob = sfc_full_inner_prob
        self._pos_count_probs = click_count_probs(max_num_points, prob_gamma)       # 1 .. N clicks
        self._neg_count_probs = click_count_probs(max_num_points + 1, prob_gamma)   # 0 .. N clicks

    def sample(self, sample: TrainingSample, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
        """The target mask (float32 H x W: 1 object, 0 background, -1 ignore) and the clicks
        (float32 ``[2N, 3]``, see the module docstring)."""
        if len(sample) == 0:
            background = sample.get_background_mask()
            positives = self._points_from_regions([], [], rng)
            negatives = self._points_from_regions([Region.of(background)], [True], rng)
            return np.zeros(background.shape, np.float32), np.array(positives + negatives, np.float32)

        gt_mask, positive_masks, required_negative_masks = self._select_target(sample, rng)
        positive_masks = [self._maybe_erode(m, rng) for m in positive_masks]
        required_negative_masks = [self._maybe_erode(m, rng) for m in required_negative_masks]

        negatives = self._negative_region(sample, gt_mask, len(positive_masks))
        positive_points = self._points_from_regions([Region.of(m) for m in positive_masks],
                                                    [False] * len(positive_masks), rng, self.first_click_center)
        # Hierarchy negatives (the parent around a part, the parts cut out) get at least one click each.
        negative_points = self._points_from_regions(
            [Region.of(m) for m in required_negative_masks] + [negatives],
            [False] * len(required_negative_masks) + [True], rng)
        return gt_mask.astype(np.float32), np.array(positive_points + negative_points, np.float32)

    def _select_target(self, sample: TrainingSample,
                       rng: np.random.Generator) -> Tuple[np.ndarray, List[np.ndarray], List[np.ndarray]]:
        """The target (int32 1/0/-1), one positive region per chosen object and the negative
        regions the hierarchy requires (bool masks)."""
        roots = sample.root_objects
        max_merged = min(len(roots), self.max_num_merged_objects)
        if max_merged > 1 and rng.random() < self.merge_objects_prob:
            chosen = rng.choice(roots, size=int(rng.integers(2, max_merged + 1)), replace=False).tolist()
        else:
            chosen = [roots[int(rng.integers(len(roots)))]]

        gt_mask, positives, negatives = None, [], []
        for obj_id in chosen:
            obj_gt, obj_positive, obj_negatives = self._object_target(sample, obj_id, rng)
            gt_mask = obj_gt if gt_mask is None else np.maximum(gt_mask, obj_gt)
            positives.append(obj_positive)
            negatives.extend(obj_negatives)
        return gt_mask, positives, negatives

    def _object_target(self, sample: TrainingSample, obj_id: int,
                       rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray, List[np.ndarray]]:
        """One object's target, positive region and required negative regions. With the
        hierarchy, a random descendant may replace it (each level: stay with probability 1/2),
        its tiny parts (< 10 % of its area) take no positive click, and up to 3 random parts
        are cut out of the target and become negative regions."""
        if not self.use_hierarchy:
            gt_mask = sample.get_object_mask(obj_id)
            return gt_mask, gt_mask == 1, []

        node = sample.objects[obj_id]
        while node.children and rng.random() >= 0.5:
            obj_id = node.children[int(rng.integers(len(node.children)))]
            node = sample.objects[obj_id]
        gt_mask = sample.get_object_mask(obj_id)
        object_pixels = gt_mask == 1
        positive = object_pixels.copy()
        negatives = []
        if node.parent is not None:
            negatives.append((sample.get_object_mask(node.parent) == 1) & ~object_pixels)
        for child in node.children:
            if sample.objects[child].area < 0.10 * node.area:
                positive &= sample.get_object_mask(child) != 1
        if node.children:
            num_cut = int(rng.integers(0, min(len(node.children), 3) + 1))
            for child in rng.choice(node.children, size=num_cut, replace=False).tolist():
                child_pixels = sample.get_object_mask(child) == 1
                positive &= ~child_pixels
                gt_mask[child_pixels] = 0
                negatives.append(child_pixels)
        return gt_mask, positive, negatives

    def _negative_region(self, sample: TrainingSample, gt_mask: np.ndarray, num_targets: int) -> Region:
        """Outside the target, other objects and the border band, each with its probability;
        ignored pixels are never negative."""
        target = gt_mask == 1
        outside = ~target & (gt_mask != -1)
        if len(sample) <= num_targets:   # no object is left out of the target
            other = outside
        else:
            other = outside & ~sample.get_background_mask()
        radius = int(np.ceil(self.expand_ratio * np.sqrt(target.sum())))
        border = cv2.dilate(target.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=radius).astype(bool)
        return Region([outside, other, border & outside], list(self.negative_probs))

    def _maybe_erode(self, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Keep positive clicks off the object's edge, unless erosion leaves too little of it."""
        if rng.random() > self.positive_erode_prob:
            return mask
        eroded = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8),
                           iterations=self.positive_erode_iters).astype(bool)
        return eroded if eroded.sum() > 10 else mask

    def _points_from_regions(self, regions: Sequence[Region], may_be_empty: Sequence[bool],
                             rng: np.random.Generator, first_click_center: bool = False) -> List[Point]:
        """``N`` rows: one region's clicks, or with several regions each one's first click and
        then clicks from all of them (each weighted equally); padded with ``(-1, -1, -1)``."""
        regions = list(regions)[:self.max_num_points]
        per_region = [self._points_in(region, self._num_clicks(empty_ok, rng), rng, first_click_center)
                      for region, empty_ok in zip(regions, may_be_empty)]
        per_region = [points for points in per_region if points]

        if len(per_region) == 1:
            points = per_region[0]
        elif len(per_region) > 1:
            if self.only_one_first_click:
                per_region = per_region[:1]
            points = [region_points[0] for region_points in per_region]
            union = Region([m for r in regions for m in r.masks],
                           [p / len(regions) for r in regions for p in r.probs])
            extra = self._points_in(union, self._num_clicks(True, rng), rng)
            room = self.max_num_points - len(points)
            if len(extra) > room:
                extra = [extra[i] for i in rng.choice(len(extra), size=room, replace=False)]
            points += extra
        else:
            points = []
        return points + [PADDING] * (self.max_num_points - len(points))

    def _num_clicks(self, may_be_empty: bool, rng: np.random.Generator) -> int:
        if may_be_empty:
            return int(rng.choice(self.max_num_points + 1, p=self._neg_count_probs))
        return 1 + int(rng.choice(self.max_num_points, p=self._pos_count_probs))

    def _points_in(self, region: Region, count: int, rng: np.random.Generator,
                   first_click_center: bool = False) -> List[Point]:
        """Up to ``count`` clicks in ``region``; a draw that falls on an empty mask gives none.
        With ``first_click_center`` the first click goes to the interior of the (single) mask."""
        pixels = [np.argwhere(mask) for mask in region.masks]
        points = []
        for j in range(count):
            if first_click_center and j == 0:
                candidates = interior_candidates(region.masks[0], rng, self.sfc_inner_k, self.sfc_full_inner_prob)
                index = FIRST_CLICK_INDEX
            else:
                candidates = pixels[int(rng.choice(len(pixels), p=region.probs))]
                index = CLICK_INDEX
            if len(candidates):
                y, x = candidates[int(rng.integers(len(candidates)))]
                points.append((int(y), int(x), index))
        return points


class FirstPointSampler(MultiPointSampler):
    """EMC-Click's sampler: only the first click of each target object (one, or one per merged
    object), index 0, in the object's interior (``first_click_center``); every other row is
    padding. The trainer adds the rest by simulation. Same arguments as ``MultiPointSampler``."""

    def __init__(self, max_num_points: int, **kwargs) -> None:
        super().__init__(max_num_points, first_click_center=True, **kwargs)

    def sample(self, sample: TrainingSample, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
        mask, points = super().sample(sample, rng)
        # the first clicks of the target regions lead the positive half, so no row moves
        points[points[:, 2] != FIRST_CLICK_INDEX] = PADDING
        return mask, points
