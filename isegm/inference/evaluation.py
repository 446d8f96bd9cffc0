"""The evaluation loop of the RITM family: simulated clicks until the target IoU or the click
budget, for every instance of a dataset, with any predictor object that has
``set_input_image(image)`` and ``get_prediction(clicker) -> probability map (H, W)``.

``evaluate_dataset`` / ``evaluate_sample`` keep the family's signatures and results;
``run_dataset`` is the same loop with per-instance records, skipping of unreadable samples,
resuming from earlier records, a progress bar, several instances in flight at once (one
batched network call per click) and shards of the dataset for parallel processes. Its
``clicker_factory`` chooses the simulated user (the baseline clicker by default; the RClicks
protocol's clickers come from ``isegm.inference.rclicks``).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from time import time
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..data.datasets import DatasetError
from .clicker import Click, Clicker
from .metrics import PRED_THRESHOLD, get_iou

# callback(image, gt_mask, probs, sample_id, click_index, clicks) after every prediction.
Callback = Callable[[np.ndarray, np.ndarray, np.ndarray, Optional[int], int, List[Click]], None]
# clicker_factory(image, gt_mask, sample_index, object_id) -> the simulated user of one instance.
ClickerFactory = Callable[[np.ndarray, np.ndarray, int, int], Clicker]


def baseline_clicker(image: np.ndarray, gt_mask: np.ndarray, sample_index: int, object_id: int) -> Clicker:
    """The protocol's clicker (centre of the largest error), the default ``ClickerFactory``."""
    return Clicker(gt_mask=gt_mask)


class InstanceRun:
    """One instance being clicked on: its clicker, the mask of the last prediction and the IoU
    after each click. ``click()`` makes the next simulated click; ``update(probs)`` scores the
    prediction for it and says whether the instance is finished (see ``evaluate_sample``).
    ``clicker``: the simulated user over ``gt_mask`` (default: the baseline ``Clicker``)."""

    def __init__(self, image: np.ndarray, gt_mask: np.ndarray, max_iou_thr: float,
                 pred_thr: float = PRED_THRESHOLD, min_clicks: int = 1, max_clicks: int = 20,
                 sample_id: Optional[int] = None, callback: Optional[Callback] = None,
                 clicker: Optional[Clicker] = None) -> None:
        self.image, self.gt_mask, self.sample_id, self.callback = image, gt_mask, sample_id, callback
        self.max_iou_thr, self.min_clicks, self.max_clicks = max_iou_thr, min_clicks, max_clicks
        self.threshold = np.float32(pred_thr)
        self.clicker = Clicker(gt_mask=gt_mask) if clicker is None else clicker
        self.pred_mask = np.zeros(gt_mask.shape, dtype=bool)
        self.ious: List[float] = []
        self.probs: Optional[np.ndarray] = None
        self.finished = max_clicks <= 0

    def click(self) -> Clicker:
        """Add the click that fixes the largest error of the last prediction (empty at first)."""
        self.clicker.make_next_click(self.pred_mask)
        return self.clicker

    def update(self, probs: np.ndarray) -> bool:
        """Score the probability map predicted after the newest click; True once finished."""
        self.probs = probs
        self.pred_mask = probs > self.threshold
        click_index = len(self.ious)
        if self.callback is not None:
            self.callback(self.image, self.gt_mask, probs, self.sample_id, click_index, self.clicker.clicks_list)
        iou = get_iou(self.gt_mask, self.pred_mask)
        self.ious.append(iou)
        self.finished = (click_index + 1 >= self.max_clicks
                         or (iou >= self.max_iou_thr and click_index + 1 >= self.min_clicks))
        return self.finished


def evaluate_sample(image: np.ndarray, gt_mask: np.ndarray, predictor: Any, max_iou_thr: float,
                    pred_thr: float = PRED_THRESHOLD, min_clicks: int = 1, max_clicks: int = 20,
                    sample_id: Optional[int] = None, callback: Optional[Callback] = None,
                    clicker: Optional[Clicker] = None) -> Tuple[List[Click], np.ndarray, np.ndarray]:
    """Click on one instance until its IoU reaches ``max_iou_thr`` (after ``min_clicks``) or
    ``max_clicks`` clicks are made. Returns the clicks, the IoU after each click (float32) and
    the last probability map.

    Each click is chosen from the mask of the previous prediction (empty before the first); the
    mask is ``probs > pred_thr`` strictly, compared in float32 as the original does. ``clicker``
    makes the clicks (default: the baseline ``Clicker`` over ``gt_mask``).
    """
    run = InstanceRun(image, gt_mask, max_iou_thr, pred_thr, min_clicks, max_clicks, sample_id, callback, clicker)
    with torch.no_grad():
        predictor.set_input_image(image)
        while not run.finished:
            run.update(predictor.get_prediction(run.click()))
    return run.clicker.clicks_list, np.array(run.ious, dtype=np.float32), run.probs


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


def supports_batching(predictor: Any) -> bool:
    """Whether ``predictor`` can evaluate several instances at once: it has ``spawn()`` (a copy
    with a state of its own) and ``get_predictions(predictors, clickers)`` (one batched step)."""
    return callable(getattr(predictor, "spawn", None)) and callable(getattr(predictor, "get_predictions", None))


def run_dataset(dataset: Any, predictor: Any, *, skip_bad: bool = False,
                done: Optional[Dict[Tuple[int, int], InstanceResult]] = None,
                on_instance: Optional[Callable[[InstanceResult], None]] = None,
                progress: bool = False, batch_size: int = 1, shard: Tuple[int, int] = (0, 1),
                clicker_factory: ClickerFactory = baseline_clicker, **kwargs: Any) -> DatasetResult:
    """Evaluate every object of every sample; ``kwargs`` go to :class:`InstanceRun` (as to
    ``evaluate_sample``). Instances come back in loader order, whatever the batching.

    ``done``: results of an interrupted run, keyed by ``(sample_index, object_id)``; those
    instances are taken as they are, so a resumed run ends with the numbers of an uninterrupted
    one (each predictor call depends only on its own instance). ``on_instance`` gets each
    new result as soon as it exists (to write it to disk). ``skip_bad``: a sample whose files
    cannot be read (``DatasetError``) is recorded in ``skipped`` instead of stopping the run.

    ``batch_size``: instances clicked on at once, each with its own image, clicker and state,
    one network call per click for all of them (``supports_batching`` predictors); a finished
    instance's place goes to the next one. ``shard = (rank, world_size)``: only the samples
    with ``index % world_size == rank`` (one process or GPU each; see ``merge_results``).
    ``clicker_factory(image, gt_mask, sample_index, object_id)`` makes each instance's simulated
    user; it must depend on nothing else, so that batching, shards and resuming keep the numbers.
    """
    rank, world_size = shard
    if not 0 <= rank < world_size:
        raise ValueError(f"shard {shard}: expected (rank, world_size) with 0 <= rank < world_size")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if batch_size > 1 and not supports_batching(predictor):
        raise ValueError(f"{type(predictor).__name__} cannot evaluate instances in batches (it has no spawn / "
                         "get_predictions); use batch_size=1")
    done = done or {}
    result = DatasetResult()
    indices = range(rank, len(dataset), world_size)
    if progress:
        from tqdm import tqdm
        indices = tqdm(indices, desc=getattr(dataset, "name", None) or type(dataset).__name__, unit="image",
                       leave=False)
    start = time()
    order: List[Tuple[int, int]] = []
    jobs = _instances(dataset, indices, order, result.skipped, skip_bad, done)
    if batch_size == 1:
        finished = _run_one_by_one(jobs, predictor, clicker_factory, kwargs, on_instance)
    else:
        finished = _run_batched(jobs, predictor, batch_size, clicker_factory, kwargs, on_instance)
    result.instances = [done[key] if key in done else finished[key] for key in order]
    result.elapsed = time() - start + sum(done[key].seconds for key in order if key in done)
    return result


# A job: (sample index, object id, sample, seconds spent loading the sample).
Job = Tuple[int, int, Any, float]


def _instances(dataset: Any, indices: Iterable[int], order: List[Tuple[int, int]], skipped: Dict[int, str],
               skip_bad: bool, done: Dict[Tuple[int, int], InstanceResult]) -> Iterator[Job]:
    """The instances still to evaluate, in loader order, loading each sample when first needed.

    Every instance's key is appended to ``order``, those in ``done`` too; unreadable samples go
    into ``skipped`` (or raise without ``skip_bad``).
    """
    for index in indices:
        load_start = time()
        try:
            sample = dataset.get_sample(index)
        except DatasetError as err:
            if not skip_bad:
                raise
            skipped[index] = str(err)
            continue
        seconds = time() - load_start
        for object_id in sample.objects_ids:
            order.append((index, object_id))
            if (index, object_id) not in done:
                yield index, object_id, sample, seconds
                seconds = 0.0


def _result(job: Job, clicks: List[Click], ious: np.ndarray, seconds: float) -> InstanceResult:
    return InstanceResult(job[0], job[1], ious, [(*c.coords, c.is_positive) for c in clicks], seconds)


def _run_one_by_one(jobs: Iterator[Job], predictor: Any, clicker_factory: ClickerFactory, kwargs: Dict[str, Any],
                    on_instance: Optional[Callable[[InstanceResult], None]]) -> Dict[Tuple[int, int], InstanceResult]:
    finished = {}
    for job in jobs:
        index, object_id, sample, load_seconds = job
        start = time()
        gt_mask = sample.gt_mask(object_id)
        clicker = clicker_factory(sample.image, gt_mask, index, object_id)
        clicks, ious, _ = evaluate_sample(sample.image, gt_mask, predictor, sample_id=index, clicker=clicker,
                                          **kwargs)
        instance = _result(job, clicks, ious, load_seconds + time() - start)
        finished[index, object_id] = instance
        if on_instance is not None:
            on_instance(instance)
    return finished


@dataclass
class _Slot:
    """One instance in flight: its job, its run, the predictor holding its image, and its
    seconds so far (its sample's loading plus its share of every step it took part in)."""

    job: Job
    run: InstanceRun
    predictor: Any
    seconds: float


def _run_batched(jobs: Iterator[Job], predictor: Any, batch_size: int, clicker_factory: ClickerFactory,
                 kwargs: Dict[str, Any], on_instance: Optional[Callable[[InstanceResult], None]]
                 ) -> Dict[Tuple[int, int], InstanceResult]:
    """Up to ``batch_size`` instances in flight; each step clicks on all of them and predicts
    with one ``get_predictions`` call."""
    finished = {}
    free = [predictor.spawn() for _ in range(batch_size)]
    active: List[_Slot] = []
    # The click simulator's distance transforms release the GIL: the instances' clicks run side by side.
    with torch.no_grad(), ThreadPoolExecutor(min(batch_size, os.cpu_count() or 1)) as pool:
        while True:
            while len(active) < batch_size:
                job = next(jobs, None)
                if job is None:
                    break
                index, object_id, sample, load_seconds = job
                own = free.pop()
                gt_mask = sample.gt_mask(object_id)
                run = InstanceRun(sample.image, gt_mask, sample_id=index,
                                  clicker=clicker_factory(sample.image, gt_mask, index, object_id), **kwargs)
                load_start = time()
                own.set_input_image(sample.image)
                active.append(_Slot(job, run, own, load_seconds + time() - load_start))
            if not active:
                return finished
            step_start = time()
            clickers = list(pool.map(InstanceRun.click, [slot.run for slot in active]))
            probs = predictor.get_predictions([slot.predictor for slot in active], clickers)
            share = (time() - step_start) / len(active)
            still = []
            for slot, prob in zip(active, probs):
                slot.seconds += share
                if not slot.run.update(prob):
                    still.append(slot)
                    continue
                free.append(slot.predictor)
                instance = _result(slot.job, slot.run.clicker.clicks_list, np.array(slot.run.ious, dtype=np.float32),
                                   slot.seconds)
                finished[instance.sample_index, instance.object_id] = instance
                if on_instance is not None:
                    on_instance(instance)
            active = still


def merge_results(shards: Sequence[DatasetResult]) -> DatasetResult:
    """The results of one dataset's shards (``run_dataset(shard=...)``, one per process) as one,
    instances in loader order. The shards ran side by side: the run took the slowest one's time."""
    instances = sorted((i for shard in shards for i in shard.instances), key=lambda i: i.sample_index)
    skipped = dict(sorted((k, v) for shard in shards for k, v in shard.skipped.items()))
    return DatasetResult(instances, skipped, max((shard.elapsed for shard in shards), default=0.0))


def evaluate_dataset(dataset: Any, predictor: Any, **kwargs: Any) -> Tuple[List[np.ndarray], float]:
    """The family's entry point: one float32 IoU array per instance (loader order) and the
    elapsed seconds, image loading included. ``kwargs`` go to :func:`evaluate_sample`."""
    result = run_dataset(dataset, predictor, **kwargs)
    return result.all_ious, result.elapsed
