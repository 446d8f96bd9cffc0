"""The evaluation loop of the RITM family: simulated clicks until the target IoU or the click
budget, for every instance of a dataset, with any predictor object that has
``set_input_image(image)`` and ``get_prediction(clicker) -> probability map (H, W)``.

``evaluate_dataset`` / ``evaluate_sample`` keep the family's signatures and results;
``run_dataset`` is the same loop with per-instance records, skipping of unreadable samples,
resuming from earlier records and a progress bar.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from time import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from ..data.datasets import DatasetError
from .clicker import Click, Clicker
from .metrics import get_iou

PRED_THRESHOLD = 0.49

# callback(image, gt_mask, probs, sample_id, click_index, clicks) after every prediction.
Callback = Callable[[np.ndarray, np.ndarray, np.ndarray, Optional[int], int, List[Click]], None]


def evaluate_sample(image: np.ndarray, gt_mask: np.ndarray, predictor: Any, max_iou_thr: float,
                    pred_thr: float = PRED_THRESHOLD, min_clicks: int = 1, max_clicks: int = 20,
                    sample_id: Optional[int] = None, callback: Optional[Callback] = None
                    ) -> Tuple[List[Click], np.ndarray, np.ndarray]:
    """Click on one instance until its IoU reaches ``max_iou_thr`` (after ``min_clicks``) or
    ``max_clicks`` clicks are made. Returns the clicks, the IoU after each click (float32) and
    the last probability map.

    Each click is chosen from the mask of the previous prediction (empty before the first); the
    mask is ``probs > pred_thr`` strictly, compared in float32 as the original does.
    """
    clicker = Clicker(gt_mask=gt_mask)
    pred_mask = np.zeros(gt_mask.shape, dtype=bool)
    threshold = np.float32(pred_thr)
    ious = []
    with torch.no_grad():
        predictor.set_input_image(image)
        for click_index in range(max_clicks):
            clicker.make_next_click(pred_mask)
            probs = predictor.get_prediction(clicker)
            pred_mask = probs > threshold
            if callback is not None:
                callback(image, gt_mask, probs, sample_id, click_index, clicker.clicks_list)
            iou = get_iou(gt_mask, pred_mask)
            ious.append(iou)
            if iou >= max_iou_thr and click_index + 1 >= min_clicks:
                break
    return clicker.clicks_list, np.array(ious, dtype=np.float32), probs


@dataclass
class InstanceResult:
    """One evaluated object: its sample and object id, the IoU after each click (float32), the
    clicks as ``(y, x, is_positive)`` and the seconds it took (loading its sample included)."""

    sample_index: int
    object_id: int
    ious: np.ndarray
    clicks: List[Tuple[int, int, bool]]
    seconds: float

    def to_dict(self) -> Dict[str, Any]:
        return {"sample_index": self.sample_index, "object_id": self.object_id, "ious": self.ious.tolist(),
                "clicks": [[int(y), int(x), bool(p)] for y, x, p in self.clicks], "seconds": self.seconds}

    @classmethod
    def from_dict(cls, record: Dict[str, Any]) -> "InstanceResult":
        return cls(record["sample_index"], record["object_id"], np.array(record["ious"], dtype=np.float32),
                   [tuple(c) for c in record["clicks"]], record["seconds"])


@dataclass
class DatasetResult:
    """The instances of one dataset run (loader order), the samples skipped as unreadable
    (index -> error message) and the elapsed seconds (earlier, resumed instances included)."""

    instances: List[InstanceResult] = field(default_factory=list)
    skipped: Dict[int, str] = field(default_factory=dict)
    elapsed: float = 0.0

    @property
    def all_ious(self) -> List[np.ndarray]:
        return [instance.ious for instance in self.instances]


def run_dataset(dataset: Any, predictor: Any, *, skip_bad: bool = False,
                done: Optional[Dict[Tuple[int, int], InstanceResult]] = None,
                on_instance: Optional[Callable[[InstanceResult], None]] = None,
                progress: bool = False, **kwargs: Any) -> DatasetResult:
    """Evaluate every object of every sample in loader order (``kwargs`` go to ``evaluate_sample``).

    ``done``: results of an interrupted run, keyed by ``(sample_index, object_id)``; those
    instances are taken as they are, so a resumed run ends with the numbers of an uninterrupted
    one (each predictor call depends only on its own instance). ``on_instance`` gets each
    new result as soon as it exists (to write it to disk). ``skip_bad``: a sample whose files
    cannot be read (``DatasetError``) is recorded in ``skipped`` instead of stopping the run.
    """
    done = done or {}
    result = DatasetResult()
    indices = range(len(dataset))
    if progress:
        from tqdm import tqdm
        indices = tqdm(indices, desc=getattr(dataset, "name", None) or type(dataset).__name__, unit="image",
                       leave=False)
    start = time()
    for index in indices:
        sample_start = time()
        try:
            sample = dataset.get_sample(index)
        except DatasetError as err:
            if not skip_bad:
                raise
            result.skipped[index] = str(err)
            continue
        for object_id in sample.objects_ids:
            if (index, object_id) in done:
                result.instances.append(done[index, object_id])
                continue
            clicks, ious, _ = evaluate_sample(sample.image, sample.gt_mask(object_id), predictor,
                                              sample_id=index, **kwargs)
            instance = InstanceResult(index, object_id, ious, [(*c.coords, c.is_positive) for c in clicks],
                                      time() - sample_start)
            sample_start = time()
            result.instances.append(instance)
            if on_instance is not None:
                on_instance(instance)
    result.elapsed = time() - start + sum(instance.seconds for instance in done.values())
    return result


def evaluate_dataset(dataset: Any, predictor: Any, **kwargs: Any) -> Tuple[List[np.ndarray], float]:
    """The family's entry point: one float32 IoU array per instance (loader order) and the
    elapsed seconds, image loading included. ``kwargs`` go to :func:`evaluate_sample`."""
    result = run_dataset(dataset, predictor, **kwargs)
    return result.all_ious, result.elapsed
