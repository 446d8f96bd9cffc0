"""The RITM click simulator: each new click goes to the centre of the largest error region.

The rules are those of the original evaluation (RITM's ``isegm/inference/clicker.py``,
github.com/SamsungLabs/ritm_interactive_segmentation, kept by SkipClick), and the tests check
them against the original's clicks; every one of them changes NoC on real images:

* object = ``gt == 1``, ignore = ``gt == -1`` (never a click candidate), anything else background;
* false-negative / false-positive masks get a 1-pixel zero border before an exact Euclidean
  distance transform, so an error pixel on the image border is at distance 1;
* distances at pixels clicked before (either sign) are zeroed;
* positive iff ``max(FN dist) > max(FP dist)`` strictly (a tie, even 0 == 0, is negative);
* the click is the first pixel in row-major order holding the chosen maximum.

Coordinates are ``(y, x)`` = (row, col) pixel indices.

Other click strategies keep the sign rule and choose only the location: a ``ClickSampler``
(``Clicker(..., sampler=...)``; e.g. the RClicks protocol of ``isegm.inference.rclicks``) gets the
error mask of the chosen sign and returns a pixel, or None for the rule above. Without a sampler
the clicker is the baseline strategy, unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import List, Optional, Protocol, Sequence, Tuple

import numpy as np

from ..utils.masks import padded_distance

IGNORE_LABEL = -1
# A padding row of the points layout (``points_array``).
PADDING = (-1, -1, -1)


@dataclass(frozen=True)
class Click:
    """One click: ``coords = (y, x)``; ``indx`` is its 0-based position in the click order."""

    is_positive: bool
    coords: Tuple[float, float]
    indx: Optional[int] = None

    @property
    def coords_and_indx(self) -> Tuple[float, float, Optional[int]]:
        return (*self.coords, self.indx)

    def copy(self, **kwargs) -> "Click":
        """A copy with some fields replaced (e.g. ``coords`` mapped to another resolution)."""
        return replace(self, **kwargs)


class ClickSampler(Protocol):
    """Chooses where the next click goes once its sign is decided.

    ``error_mask`` (H x W, bool): the false negatives for a positive click, the false positives
    for a negative one (ignore pixels excluded); ``not_clicked`` (H x W, bool): False at every
    pixel clicked so far; ``click_index``: 0-based index of the click being made. Returns the
    ``(y, x)`` pixel, or None to use the baseline location (the distance-transform maximum).
    """

    def __call__(self, error_mask: np.ndarray, not_clicked: np.ndarray, click_index: int
                 ) -> Optional[Tuple[int, int]]: ...


class Clicker:
    """Simulated user for one instance (``gt_mask``: 1 object, -1 ignore, other values background),
    or a plain click list when ``gt_mask`` is None (clicks then come from ``add_click``).
    ``sampler``: where the clicks go once their sign is decided (None: the baseline strategy)."""

    def __init__(self, gt_mask: Optional[np.ndarray] = None, init_clicks: Optional[Sequence[Click]] = None,
                 ignore_label: int = IGNORE_LABEL, click_indx_offset: int = 0,
                 sampler: Optional[ClickSampler] = None) -> None:
        self.click_indx_offset = click_indx_offset
        self.sampler = sampler
        if gt_mask is not None:
            gt_mask = np.asarray(gt_mask)
            if gt_mask.ndim != 2:
                raise ValueError(f"gt_mask must be a 2-D (H, W) array, got shape {gt_mask.shape}")
            self.gt_mask = gt_mask == 1
            self.not_ignore_mask = gt_mask != ignore_label
        else:
            self.gt_mask = None
        self.reset_clicks()
        for click in init_clicks or ():
            self.add_click(click)

    def make_next_click(self, pred_mask: np.ndarray) -> Click:
        """Add (and return) the click that fixes the largest error of ``pred_mask`` (H x W, bool)."""
        if self.gt_mask is None:
            raise RuntimeError("this Clicker has no gt_mask to simulate clicks from; use add_click")
        pred_mask = np.asarray(pred_mask)
        if pred_mask.shape != self.gt_mask.shape:
            raise ValueError(f"pred_mask has shape {pred_mask.shape}, the instance {self.gt_mask.shape}")
        click = self._next_click(pred_mask.astype(bool))
        self.add_click(click)
        return click

    def _next_click(self, pred_mask: np.ndarray) -> Click:
        fn_mask = self.gt_mask & ~pred_mask & self.not_ignore_mask
        fp_mask = ~self.gt_mask & pred_mask & self.not_ignore_mask
        fn_dist = padded_distance(fn_mask) * self.not_clicked_map
        fp_dist = padded_distance(fp_mask) * self.not_clicked_map
        fn_max, fp_max = fn_dist.max(), fp_dist.max()
        is_positive = bool(fn_max > fp_max)
        if self.sampler is not None:
            coords = self.sampler(fn_mask if is_positive else fp_mask, self.not_clicked_map, len(self.clicks_list))
            if coords is not None:
                return Click(is_positive=is_positive, coords=(int(coords[0]), int(coords[1])))
        dist, best = (fn_dist, fn_max) if is_positive else (fp_dist, fp_max)
        # argmax of the equality mask = first pixel in row-major order.
        y, x = np.unravel_index(np.argmax(dist == best), dist.shape)
        return Click(is_positive=is_positive, coords=(int(y), int(x)))

    def add_click(self, click: Click) -> None:
        """Append ``click`` (its index is set to its position) and mark its pixel as clicked."""
        click = click.copy(indx=self.click_indx_offset + len(self.clicks_list))
        if click.is_positive:
            self.num_pos_clicks += 1
        else:
            self.num_neg_clicks += 1
        self.clicks_list.append(click)
        if self.gt_mask is not None:
            y, x = click.coords
            self.not_clicked_map[int(y), int(x)] = False

    def get_clicks(self, clicks_limit: Optional[int] = None) -> List[Click]:
        """The clicks so far in order (the first ``clicks_limit`` of them when given)."""
        return self.clicks_list[:clicks_limit]

    def reset_clicks(self) -> None:
        if self.gt_mask is not None:
            self.not_clicked_map = np.ones_like(self.gt_mask, dtype=bool)
        self.num_pos_clicks = 0
        self.num_neg_clicks = 0
        self.clicks_list: List[Click] = []

    def __len__(self) -> int:
        return len(self.clicks_list)


def points_array(clicks_lists: Sequence[Sequence[Click]], clicks_limit: Optional[int] = None) -> np.ndarray:
    """The RITM points layout ``[B, 2P, 3]`` (float64) of one click list per batch item.

    Rows are ``(y, x, click index)``: the positive clicks padded with ``(-1, -1, -1)`` to P, then
    the negative clicks padded the same. P = the largest count of one sign in any full list,
    capped by ``clicks_limit``, at least 1; ``clicks_limit`` keeps the first clicks of each list.
    """
    counts = [n for clicks in clicks_lists for n in (sum(c.is_positive for c in clicks),
                                                     sum(not c.is_positive for c in clicks))]
    num_points = max(counts)
    if clicks_limit is not None:
        num_points = min(clicks_limit, num_points)
    num_points = max(1, num_points)
    rows = []
    for clicks in clicks_lists:
        clicks = clicks[:clicks_limit]
        pos = [c.coords_and_indx for c in clicks if c.is_positive]
        neg = [c.coords_and_indx for c in clicks if not c.is_positive]
        rows.append(pos + [PADDING] * (num_points - len(pos)) + neg + [PADDING] * (num_points - len(neg)))
    return np.array(rows, dtype=np.float64)
