"""The evaluation loop's own behaviour: per-instance records, skipping unreadable samples,
resuming an interrupted run with identical numbers, batches of instances and shards."""
from __future__ import annotations

import json
from typing import List, Optional

import numpy as np
import pytest

from isegm.data import DatasetError, DSample
from isegm.inference.evaluation import InstanceResult, evaluate_dataset, merge_results, run_dataset


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


class BatchRowsPredictor(RowsPredictor):
    """``RowsPredictor`` with the batched interface; sample ``i`` needs ``2 + i % 3`` clicks, so
    instances finish at different steps. ``batches`` records each step's batch size."""

    def __init__(self, batches: Optional[List[int]] = None) -> None:
        super().__init__()
        self.batches = [] if batches is None else batches

    def spawn(self) -> "BatchRowsPredictor":
        return BatchRowsPredictor(self.batches)

    def get_prediction(self, clicker) -> np.ndarray:
        gt = clicker.gt_mask
        rows = np.flatnonzero(gt.any(axis=1))
        shown = rows[: int(np.ceil(len(rows) * min(1.0, len(clicker) / (2 + self.index % 3))))]
        probs = np.zeros(gt.shape, dtype=np.float32)
        probs[shown] = gt[shown]
        return probs

    @staticmethod
    def get_predictions(predictors, clickers) -> List[np.ndarray]:
        predictors[0].batches.append(len(predictors))
        return [p.get_prediction(c) for p, c in zip(predictors, clickers)]


def summary(result):
    return [(r.sample_index, r.object_id, r.ious.tolist(), r.clicks) for r in result.instances]


@pytest.mark.parametrize("batch_size", [2, 3, 16])
def test_batched_loop_gives_the_one_by_one_results(batch_size):
    dataset = Squares(n=7)
    expected = run_dataset(dataset, BatchRowsPredictor(), max_iou_thr=0.99)
    assert {len(r.ious) for r in expected.instances} == {2, 3, 4}
    batches: List[int] = []
    seen: List[InstanceResult] = []
    result = run_dataset(dataset, BatchRowsPredictor(batches), max_iou_thr=0.99, batch_size=batch_size,
                         on_instance=seen.append)
    assert summary(result) == summary(expected)
    assert sorted(summary(result)) == sorted((r.sample_index, r.object_id, r.ious.tolist(), r.clicks) for r in seen)
    assert max(batches) == min(batch_size, 14) and sum(batches) == sum(len(r.ious) for r in expected.instances)
    assert result.elapsed >= sum(r.seconds for r in result.instances) * 0.99


def test_batched_loop_skips_bad_samples_and_resumes():
    with pytest.raises(DatasetError, match="/data/2.jpg"):
        run_dataset(Squares(bad=2), BatchRowsPredictor(), max_iou_thr=0.99, batch_size=3)
    expected = run_dataset(Squares(n=6, bad=2), BatchRowsPredictor(), max_iou_thr=0.99, skip_bad=True)
    result = run_dataset(Squares(n=6, bad=2), BatchRowsPredictor(), max_iou_thr=0.99, skip_bad=True, batch_size=4)
    assert summary(result) == summary(expected) and list(result.skipped) == [2]
    done = {(r.sample_index, r.object_id): r for r in expected.instances[1:6:2]}
    batches: List[int] = []
    resumed = run_dataset(Squares(n=6, bad=2), BatchRowsPredictor(batches), max_iou_thr=0.99, skip_bad=True,
                          batch_size=4, done=done)
    assert summary(resumed) == summary(expected)
    assert sum(batches) == sum(len(r.ious) for r in expected.instances) - sum(len(r.ious) for r in done.values())


def test_batching_needs_a_batched_predictor():
    with pytest.raises(ValueError, match="RowsPredictor cannot evaluate instances in batches"):
        run_dataset(Squares(), RowsPredictor(), max_iou_thr=0.99, batch_size=2)


def test_shards_merge_into_the_whole_run():
    dataset = Squares(n=7, bad=4)
    whole = run_dataset(dataset, BatchRowsPredictor(), max_iou_thr=0.99, skip_bad=True)
    shards = [run_dataset(dataset, BatchRowsPredictor(), max_iou_thr=0.99, skip_bad=True, shard=(rank, 3),
                          batch_size=2) for rank in range(3)]
    assert [sorted({r.sample_index for r in s.instances} | set(s.skipped)) for s in shards] == [[0, 3, 6], [1, 4], [2, 5]]
    merged = merge_results(shards)
    assert summary(merged) == summary(whole) and merged.skipped == whole.skipped
    assert merged.elapsed == max(s.elapsed for s in shards)
    # Resuming a shard from every shard's records: its own instances, its own earlier seconds.
    done = {(r.sample_index, r.object_id): InstanceResult(r.sample_index, r.object_id, r.ious, r.clicks, 100.0)
            for r in whole.instances}
    resumed = run_dataset(dataset, BatchRowsPredictor(), max_iou_thr=0.99, skip_bad=True, shard=(1, 3), done=done)
    assert summary(resumed) == summary(shards[1]) and 200 <= resumed.elapsed < 250
    with pytest.raises(ValueError, match="rank"):
        run_dataset(dataset, BatchRowsPredictor(), max_iou_thr=0.99, shard=(3, 3))


def test_record_files_carry_their_settings_and_refuse_others(tmp_path):
    """Each shard file starts with the run's settings; reading skips that line; a run with other
    settings is refused naming the file and each difference, and a file without settings too."""
    from isegm.inference.report import InstanceLog, RecordsMismatch
    settings = {"target_iou": 0.95, "dataset": "Squares", "dataset_size": 4}
    logs = [InstanceLog(tmp_path / "run.jsonl", shard=(rank, 2), settings=settings) for rank in range(2)]
    expected = run_dataset(Squares(), RowsPredictor(), max_iou_thr=0.9).instances
    for log in logs:
        log.start(keep=False)
    for instance in expected:
        logs[instance.sample_index % 2].append(instance)
    assert all(p.read_text().splitlines()[0] == f'{{"settings": {json.dumps(settings)}}}' for p in logs[0].files())
    resumed = InstanceLog(tmp_path / "run.jsonl", settings=dict(settings))
    done = resumed.start(keep=True)
    assert [done[i.sample_index, i.object_id].ious.tolist() for i in expected] == [i.ious.tolist() for i in expected]
    assert len(done) == len(expected)
    other = InstanceLog(tmp_path / "run.jsonl", settings={**settings, "target_iou": 0.99, "dataset_size": 5})
    with pytest.raises(RecordsMismatch, match=r"run\.jsonl' was made with other settings "
                                              r"\(target_iou 0\.95 -> 0\.99; dataset_size 4 -> 5\)"):
        other.check()
    (tmp_path / "run.jsonl").write_text('{"sample_index": 0, "object_id": 1, "ious": [0.5], "clicks": [], '
                                        '"seconds": 0.1}\n')
    with pytest.raises(RecordsMismatch, match="without the settings"):
        resumed.check()
