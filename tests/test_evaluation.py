"""The evaluation loop's own behaviour: per-instance records, skipping unreadable samples and
resuming an interrupted run with identical numbers."""
from __future__ import annotations

from typing import List

import numpy as np
import pytest

from isegm.data import DatasetError, DSample
from isegm.inference.evaluation import InstanceResult, evaluate_dataset, run_dataset


class Squares:
    """Samples with two square objects each (labels 1 and 2); sample ``bad`` fails to load."""

    name = "Squares"

    def __init__(self, n: int = 4, bad: int = -1) -> None:
        self.n, self.bad = n, bad

    def __len__(self) -> int:
        return self.n

    def get_sample(self, index: int) -> DSample:
        if index == self.bad:
            raise DatasetError(f"cannot read image '/data/{index}.jpg'")
        labels = np.zeros((40, 40), dtype=np.int32)
        labels[4 + index:20, 4:20] = 1
        labels[24:36, 20 + index:36] = 2
        image = np.full((40, 40, 3), index, dtype=np.uint8)
        return DSample(image, labels, object_values=(1, 2), sample_id=index)


class RowsPredictor:
    """Each click reveals another quarter of the object's rows: IoU grows click by click."""

    def __init__(self) -> None:
        self.calls = 0

    def set_input_image(self, image: np.ndarray) -> None:
        self.index = int(image[0, 0, 0])

    def get_prediction(self, clicker) -> np.ndarray:
        self.calls += 1
        gt = clicker.gt_mask
        rows = np.flatnonzero(gt.any(axis=1))
        shown = rows[: int(np.ceil(len(rows) * min(1.0, len(clicker) / 4)))]
        probs = np.zeros(gt.shape, dtype=np.float32)
        probs[shown] = gt[shown]
        return probs


def test_records_every_instance_in_loader_order():
    seen: List[InstanceResult] = []
    result = run_dataset(Squares(), RowsPredictor(), max_iou_thr=0.95, on_instance=seen.append)
    assert [(r.sample_index, r.object_id) for r in result.instances] == [(i, o) for i in range(4) for o in (0, 1)]
    assert seen == result.instances
    for r in result.instances:
        assert r.ious.dtype == np.float32 and len(r.ious) == len(r.clicks) == 4 and r.ious[-1] == 1.0
        assert r.clicks[0][2] is True
    all_ious, elapsed = evaluate_dataset(Squares(), RowsPredictor(), max_iou_thr=0.95)
    assert [a.tolist() for a in all_ious] == [r.ious.tolist() for r in result.instances] and elapsed > 0


def test_bad_sample_stops_the_run_unless_skipped():
    with pytest.raises(DatasetError, match="/data/2.jpg"):
        run_dataset(Squares(bad=2), RowsPredictor(), max_iou_thr=0.95)
    result = run_dataset(Squares(bad=2), RowsPredictor(), max_iou_thr=0.95, skip_bad=True)
    assert list(result.skipped) == [2] and "/data/2.jpg" in result.skipped[2]
    assert sorted({r.sample_index for r in result.instances}) == [0, 1, 3]


def test_resume_gives_the_uninterrupted_numbers_and_only_runs_what_is_left():
    full = run_dataset(Squares(), RowsPredictor(), max_iou_thr=1.01)
    records = [InstanceResult.from_dict(r.to_dict()) for r in full.instances[:3]]   # through a JSON round trip
    predictor = RowsPredictor()
    resumed = run_dataset(Squares(), predictor, max_iou_thr=1.01,
                          done={(r.sample_index, r.object_id): r for r in records})
    assert [r.ious.tolist() for r in resumed.instances] == [r.ious.tolist() for r in full.instances]
    assert [r.clicks for r in resumed.instances] == [r.clicks for r in full.instances]
    assert predictor.calls == 20 * (len(full.instances) - 3)
    assert resumed.elapsed >= sum(r.seconds for r in records)
