"""Training datasets: every sample is augmented, one object (or a merge of several) is chosen
as the target and clicks are sampled on it, as in the RITM family's ``ISDataset``.

All randomness of a sample comes from ``np.random.default_rng([seed, epoch, index])``: the
same run gives the same batches whatever the number of loader workers, and a resumed run
continues with the batches an uninterrupted one would have seen.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import cv2
import numpy as np
import torch

from ..sample import Augmentation, TrainingSample


class PointsSampler:
    """What a training dataset needs from a click sampler (``isegm.data.points_sampler``)."""

    def sample(self, sample: TrainingSample, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
        """The target mask (float32 H x W: 1 object, 0 background, -1 ignore) and the clicks,
        float32 ``[2N, 3]`` rows ``(y, x, index)``: positives then negatives, ``-1`` padded."""
        raise NotImplementedError


@dataclass(frozen=True)
class TargetFilter:
    """EMC-Click's target rules (``ISDataset.__getitem__`` and ``remove_small_regions`` of
    ``isegm/data/base.py``, github.com/feiaxyt/EMC-Click at e660ad0). After augmentation, the
    removal of small objects and the click sampling:

    - a sample left with no object is redrawn (a new image) before clicks are sampled;
    - the target's 4-connected components under ``min_component_area`` pixels are erased (the
      mask becomes 1 object / 0 elsewhere: ignored pixels count as background, as theirs);
    - a target of at most ``min_area`` pixels or at least ``max_fraction`` of the crop is
      rejected and a new image drawn.

    The clicks are sampled before the components are erased, as theirs, so a first click can lie
    on an erased fragment. They redraw without limit; ``max_draws`` bounds the draws per sample
    so that a dataset with no admissible target fails instead of hanging.
    """

    min_component_area: int = 900
    min_area: int = 1000
    max_fraction: float = 0.85
    max_draws: int = 1000

    def filter_mask(self, mask: np.ndarray) -> Optional[np.ndarray]:
        """The target mask (H x W, ``> 0.5`` is object) without its small components, float32 1 / 0,
        or None when the remaining target is rejected."""
        target = (mask > 0.5).astype(np.uint8)
        _, labels, stats, _ = cv2.connectedComponentsWithStats(target, connectivity=4)
        small = np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] < self.min_component_area) + 1
        target[np.isin(labels, small)] = 0
        area = int(target.sum())
        if area <= self.min_area or area >= self.max_fraction * target.size:
            return None
        return target.astype(np.float32)


class TrainingDataset(torch.utils.data.Dataset):
    """Subclasses fill ``self.dataset_samples`` (one entry per image) and implement
    ``get_sample(index, rng) -> TrainingSample``.

    ``epoch_len > 0``: an epoch is that many samples, each drawn uniformly from the images (the
    papers' 30,000); otherwise one pass over the images. ``keep_background_prob``: an
    augmentation that leaves no object is redrawn unless this chance keeps it (the sample then
    teaches an empty mask). ``min_object_area``: smaller objects are never targets.
    ``target_filter``: EMC-Click's target rules (``TargetFilter``), None for RITM's (none).
    """

    def __init__(self, points_sampler: PointsSampler, augmentation: Optional[Augmentation] = None,
                 min_object_area: int = 0, keep_background_prob: float = 0.0, epoch_len: int = -1,
                 seed: int = 0, target_filter: Optional[TargetFilter] = None) -> None:
        self.points_sampler = points_sampler
        self.target_filter = target_filter
        self.augmentation = augmentation
        self.min_object_area = min_object_area
        self.keep_background_prob = keep_background_prob
        self.epoch_len = epoch_len
        self.seed = seed
        self.epoch = 0
        self.dataset_samples: List[Any] = []

    def set_epoch(self, epoch: int) -> None:
        """Which epoch's random draws ``__getitem__`` makes (the trainer sets it each epoch)."""
        self.epoch = epoch

    def get_sample(self, index: int, rng: np.random.Generator) -> TrainingSample:
        raise NotImplementedError

    def __len__(self) -> int:
        return self.epoch_len if self.epoch_len > 0 else len(self.dataset_samples)

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        """``images`` float32 ``[3, H, W]`` in [0, 1], ``points`` float32 ``[2N, 3]`` and
        ``instances`` float32 ``[1, H, W]`` (1 object, 0 background, -1 ignore)."""
        if not self.dataset_samples:
            raise ValueError(f"{type(self).__name__} has no samples: check its annotation files")
        rng = np.random.default_rng([self.seed, self.epoch, index])
        if self.epoch_len > 0:
            index = int(rng.integers(len(self.dataset_samples)))
        if self.target_filter is None:
            sample = self._prepare(index, rng)
            mask, points = self.points_sampler.sample(sample, rng)
        else:
            sample, mask, points = self._draw_filtered(index, rng, self.target_filter)
        image = torch.from_numpy(np.ascontiguousarray(sample.image)).permute(2, 0, 1).float().div(255)
        return {"images": image, "points": torch.from_numpy(np.asarray(points, dtype=np.float32)),
                "instances": torch.from_numpy(np.asarray(mask, dtype=np.float32))[None]}

    def _prepare(self, index: int, rng: np.random.Generator) -> TrainingSample:
        """Image ``index`` augmented, its objects under ``min_object_area`` removed."""
        sample = self.get_sample(index, rng)
        self._augment(sample, rng)
        sample.remove_small_objects(self.min_object_area)
        return sample

    def _draw_filtered(self, index: int, rng: np.random.Generator,
                       rules: TargetFilter) -> Tuple[TrainingSample, np.ndarray, np.ndarray]:
        """The prepared sample, its filtered target and clicks: a sample left without objects or
        with a rejected target is replaced by a new image drawn uniformly (see ``TargetFilter``)."""
        for _ in range(rules.max_draws):
            sample = self._prepare(index, rng)
            if len(sample) > 0:
                mask, points = self.points_sampler.sample(sample, rng)
                target = rules.filter_mask(mask)
                if target is not None:
                    return sample, target, points
            index = int(rng.integers(len(self.dataset_samples)))
        raise ValueError(f"{type(self).__name__}: no admissible target in {rules.max_draws} draws under {rules}; "
                         "check the dataset's objects against the crop size, or relax the recipe's target_filter")

    def _augment(self, sample: TrainingSample, rng: np.random.Generator) -> None:
        """Augment until an object survives, or the background-only draw is kept."""
        if self.augmentation is None:
            return
        if len(sample) == 0:   # nothing to wait for: an image without objects
            sample.augment(self.augmentation, rng)
            return
        while True:
            sample.augment(self.augmentation, rng)
            if len(sample) > 0 or self.keep_background_prob < 0 or rng.random() < self.keep_background_prob:
                return
