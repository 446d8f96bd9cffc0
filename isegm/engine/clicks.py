"""Iterative click simulation for training (RITM): after each no-grad prediction, one more
click goes into the largest error region, as a user would place it.

Unlike the evaluation's click simulator (``isegm.inference.clicker``), the training click is a
random pixel of the error region's inner half (distance above half the largest), which keeps
the clicks varied, and the distance transform is OpenCV's 5x5 approximation, as the family's
trainer has it.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Tuple

import numpy as np
import torch
from torch import Tensor

from ..utils.masks import padded_distance

PRED_THRESHOLD = 0.49


def add_next_clicks(probs: Tensor, gt: Tensor, points: Tensor, click_index: int, rng: np.random.Generator,
                    threshold: float = PRED_THRESHOLD) -> Tensor:
    """``points`` ``[B, 2N, 3]`` with one more click per sample, placed from ``probs`` ``[B, 1, H, W]``
    against ``gt`` ``[B, 1, H, W]`` (``> 0.5`` is object).

    The click is positive when the largest false-negative distance exceeds the largest
    false-positive one. It is written with index ``click_index`` (>= 1) into row
    ``N - click_index`` (positive) or ``2N - click_index`` (negative), the last free rows of
    each half, so clicks added in order never collide. A sample without errors gets no click.
    """
    if click_index < 1:
        raise ValueError(f"click_index counts the added clicks from 1, got {click_index}")
    probs_np = probs.detach().float().cpu().numpy()[:, 0]
    gt_np = gt.detach().cpu().numpy()[:, 0] > 0.5
    # The distance transforms release the GIL: the samples' error regions are found side by
    # side; the random draws stay in sample order, so the result does not depend on threads.
    with ThreadPoolExecutor(min(len(probs_np), os.cpu_count() or 1)) as pool:
        regions = list(pool.map(_error_region, probs_np, gt_np, [threshold] * len(probs_np)))
    num_points = points.shape[1] // 2
    out = points.detach().cpu().clone()
    for b, (positive, candidates) in enumerate(regions):
        if len(candidates) == 0:
            continue
        y, x = candidates[rng.integers(len(candidates))]
        row = num_points - click_index if positive else 2 * num_points - click_index
        out[b, row] = torch.tensor([float(y), float(x), float(click_index)], dtype=out.dtype)
    return out.to(points.device)


def _error_region(prob: np.ndarray, gt: np.ndarray, threshold: float) -> Tuple[bool, np.ndarray]:
    """Whether the next click is positive, and its candidate pixels ``[M, 2]`` (y, x): the inner
    half (by distance) of the larger error region."""
    fn_dist = padded_distance(np.logical_and(gt, prob < threshold), mask_size=5)
    fp_dist = padded_distance(np.logical_and(~gt, prob > threshold), mask_size=5)
    fn_max, fp_max = fn_dist.max(), fp_dist.max()
    positive = bool(fn_max > fp_max)
    dist = fn_dist if positive else fp_dist
    return positive, np.argwhere(dist > max(fn_max, fp_max) / 2.0)
