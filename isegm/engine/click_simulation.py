"""Iterative click simulation for training (RITM): after each no-grad prediction, one more
click goes into the largest error region, as a user would place it.

Unlike the evaluation's click simulator (``isegm.inference.clicker``), the training click is a
random pixel of the error region's inner half (distance above half the largest), which keeps
the clicks varied, and the distance transform is OpenCV's 5x5 approximation, as the family's
trainer has it.

Two rules choose the click's polarity: ``larger`` (RITM, SimpleClick, SkipClick) clicks into the
larger error; ``proportional`` (EMC-Click's trainer) draws it, positive with probability
``fn / (fn + fp)`` of the two largest error distances. Two layouts write the clicks:
``add_next_clicks`` by click number (RITM's trainer), ``add_next_clicks_per_polarity`` by the
count of each polarity (EMC-Click's trainer).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from ..data.points_sampler import click_count_probs
from ..inference.metrics import PRED_THRESHOLD
from ..utils.masks import padded_distance

POLARITIES = ("larger", "proportional")


def draw_num_clicks(rng: np.random.Generator, max_clicks: int, gamma: Optional[float] = None) -> int:
    """How many clicks to simulate before the trained prediction: uniform over ``0 .. max_clicks``
    (``gamma`` None, SkipClick's trainer), or ``P(k) ∝ gamma ** k`` (EMC-Click's, gamma 0.8)."""
    if gamma is None:
        return int(rng.integers(0, max_clicks + 1))
    return int(rng.choice(max_clicks + 1, p=click_count_probs(max_clicks + 1, gamma)))


def add_next_clicks(probs: Tensor, gt: Tensor, points: Tensor, click_index: int, rng: np.random.Generator,
                    threshold: float = PRED_THRESHOLD, polarity: str = "larger") -> Tensor:
    """``points`` ``[B, 2N, 3]`` with one more click per sample, placed from ``probs`` ``[B, 1, H, W]``
    against ``gt`` ``[B, 1, H, W]`` (``> 0.5`` is object).

    ``polarity`` ``larger``: the click is positive when the largest false-negative distance
    exceeds the largest false-positive one; ``proportional``: positive with probability
    ``fn / (fn + fp)`` of those distances. It is written with index ``click_index`` (1 .. N-1)
    into row ``N - click_index`` (positive) or ``2N - click_index`` (negative), the last free rows
    of each half, so clicks added in order never collide. A sample without errors gets no click.
    """
    num_points = points.shape[1] // 2
    if not 1 <= click_index < num_points:
        raise ValueError(f"click_index counts the added clicks from 1 and must stay below the {num_points} rows "
                         f"per polarity (num_max_points), got {click_index}; simulate fewer clicks or sample "
                         "with more points")

    def by_click(clicks: Tensor, positive: bool) -> Tuple[bool, int, int]:
        return positive, (num_points if positive else 2 * num_points) - click_index, click_index

    return _add_clicks(probs, gt, points, rng, threshold, polarity, by_click)


def add_next_clicks_per_polarity(probs: Tensor, gt: Tensor, points: Tensor, rng: np.random.Generator,
                                 threshold: float = PRED_THRESHOLD, polarity: str = "proportional") -> Tensor:
    """``add_next_clicks`` with EMC-Click's rows (``get_rough_next_points`` of the authors'
    ``isegm/engine/clickatt_trainer_batchconsistant.py``, github.com/feiaxyt/EMC-Click e660ad0):
    the k-th simulated click of a polarity gets index k and row ``N - k`` (positive) or ``2N - k``
    (negative). The simulated clicks already there are the rows of index 1 or more (the sampled
    first click has index 0). A polarity whose rows are full (N - 1 positive: row 0 holds the
    first click; N negative) gives way to the other; with both full the sample gets no click.
    """
    num_points = points.shape[1] // 2

    def per_polarity(clicks: Tensor, positive: bool) -> Optional[Tuple[bool, int, int]]:
        num_pos = int((clicks[:num_points, 2] >= 1).sum())
        num_neg = int((clicks[num_points:, 2] >= 1).sum())
        if num_pos >= num_points - 1 and num_neg >= num_points:
            return None
        positive = (positive or num_neg >= num_points) and num_pos < num_points - 1
        count = (num_pos if positive else num_neg) + 1
        return positive, (num_points if positive else 2 * num_points) - count, count

    return _add_clicks(probs, gt, points, rng, threshold, polarity, per_polarity)


RowRule = Callable[[Tensor, bool], Optional[Tuple[bool, int, int]]]


def _add_clicks(probs: Tensor, gt: Tensor, points: Tensor, rng: np.random.Generator, threshold: float,
                polarity: str, row_rule: RowRule) -> Tensor:
    """One click per sample by the ``polarity`` rule; ``row_rule(sample's clicks [2N, 3], positive)``
    gives the click's final polarity, row and index, or None for no click."""
    if polarity not in POLARITIES:
        raise ValueError(f"click polarity rule {polarity!r}: expected one of {', '.join(POLARITIES)}")
    probs_np = probs.detach().float().cpu().numpy()[:, 0]
    gt_np = gt.detach().cpu().numpy()[:, 0] > 0.5
    # The distance transforms release the GIL: the samples' error maps are found side by side; the
    # random draws stay in sample order, so the result does not depend on threads.
    with ThreadPoolExecutor(min(len(probs_np), os.cpu_count() or 1)) as pool:
        errors = list(pool.map(_error_distances, probs_np, gt_np, [threshold] * len(probs_np)))
    out = points.detach().cpu().clone()
    for b, (fn_dist, fp_dist) in enumerate(errors):
        fn_max, fp_max = fn_dist.max(), fp_dist.max()
        if polarity == "larger":
            positive = bool(fn_max > fp_max)
        elif fn_max + fp_max == 0:
            continue
        else:
            positive = bool(rng.random() < fn_max / (fn_max + fp_max))
        slot = row_rule(out[b], positive)
        if slot is None:
            continue
        positive, row, index = slot
        # the inner half of the chosen error, by the larger error's distance (empty: no click)
        candidates = np.argwhere((fn_dist if positive else fp_dist) > max(fn_max, fp_max) / 2.0)
        if len(candidates) == 0:
            continue
        y, x = candidates[rng.integers(len(candidates))]
        out[b, row] = torch.tensor([float(y), float(x), float(index)], dtype=out.dtype)
    return out.to(points.device)


def _error_distances(prob: np.ndarray, gt: np.ndarray, threshold: float) -> Tuple[np.ndarray, np.ndarray]:
    """Distance maps of the false-negative and the false-positive pixels to the region boundary."""
    fn_dist = padded_distance(np.logical_and(gt, prob < threshold), mask_size=5)
    fp_dist = padded_distance(np.logical_and(~gt, prob > threshold), mask_size=5)
    return fn_dist, fp_dist
