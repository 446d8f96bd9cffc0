"""The evaluation protocol against the goldens made by running the authors' evaluation code
(``shared/reference/eval``): click simulation, IoU, NoC, the loop with early stopping and
previous-map feedback, and the results-table text, driven by the reference synthetic predictor.
"""
from __future__ import annotations

import functools
from typing import Dict, List

import numpy as np
import pytest

from isegm.data.datasets import DavisDataset, GrabCutDataset
from isegm.inference.clicker import Click, Clicker
from isegm.inference.evaluation import evaluate_dataset, evaluate_sample, run_dataset
from isegm.inference.metrics import (compute_noc_metric, get_iou, instance_noc, miou_at_k, noc_thresholds,
                                     results_row)

from conftest import SHARED, eval_golden as golden, sha16, synthetic_predictor

DATASETS = {"GrabCut": (GrabCutDataset, "GrabCut", 50), "DAVIS": (DavisDataset, "DAVIS", 40)}


class SyntheticPredictor:
    """The reference synthetic model behind the family's predictor interface. The 'image' it is
    given is the instance's GT (see ``GTAsImage``), as the reference run gave it the GT."""

    def set_input_image(self, image: np.ndarray) -> None:
        self.gt, self.prev = image, None

    def get_prediction(self, clicker: Clicker) -> np.ndarray:
        clicks = [(*c.coords, c.is_positive) for c in clicker.get_clicks()]
        self.prev = synthetic_predictor().predict(self.gt, clicks, self.prev)
        return self.prev


class BatchedSyntheticPredictor(SyntheticPredictor):
    """The same model behind the batched interface (``run_dataset(batch_size=...)``)."""

    def spawn(self) -> "BatchedSyntheticPredictor":
        return BatchedSyntheticPredictor()

    @staticmethod
    def get_predictions(predictors, clickers) -> List[np.ndarray]:
        return [p.get_prediction(c) for p, c in zip(predictors, clickers)]


class GTAsImage:
    """The first ``n`` samples of a dataset, each sample's image replaced by its GT."""

    def __init__(self, dataset, n: int) -> None:
        self.dataset, self.n = dataset, n

    def __len__(self) -> int:
        return self.n

    def get_sample(self, index: int):
        sample = self.dataset.get_sample(index)
        (object_id,) = sample.objects_ids
        sample.image = sample.gt_mask(object_id)
        return sample


def dataset(name: str) -> GTAsImage:
    cls, folder, n = DATASETS[name]
    root = SHARED / "datasets" / folder
    if not root.is_dir():
        pytest.skip(f"dataset {root} is absent (set SKIPCLICK_SHARED to the shared/ folder)")
    return GTAsImage(cls(root), n)


@functools.lru_cache(maxsize=None)
def run(name: str, target_iou: float):
    """The loop over a golden dataset: IoU arrays, and per instance the clicks and per-click maps'
    (hash, foreground count) pairs."""
    records: List[List] = []

    def callback(image, gt, probs, sample_id, click_index, clicks):
        if click_index == 0:
            records.append([])
        records[-1].append((sha16(probs), int((probs > np.float32(0.49)).sum()), clicks[-1]))

    all_ious, _ = evaluate_dataset(dataset(name), SyntheticPredictor(), max_iou_thr=target_iou, callback=callback)
    return all_ious, records


@pytest.mark.parametrize("name", DATASETS)
def test_clicks_ious_and_maps_equal_the_golden_without_early_stop(name):
    instances = golden("protocol_golden.json")["datasets"][name]["instances"]
    all_ious, records = run(name, 1.01)
    assert len(all_ious) == len(instances)
    for instance, ious, record in zip(instances, all_ious, records):
        where = f"{name} {instance['file']}"
        assert [[*c.coords, int(c.is_positive)] for *_, c in record] == instance["clicks"], where
        assert ious.dtype == np.float32
        np.testing.assert_array_equal(ious, np.array(instance["ious"], dtype=np.float32), err_msg=where)
        assert [h for h, _, _ in record] == [c["prob_sha16"] for c in instance["per_click"]], where
        assert [n for _, n, _ in record] == [c["n_pred_fg"] for c in instance["per_click"]], where


@pytest.mark.parametrize("name", DATASETS)
def test_early_stopped_run_and_noc_equal_the_golden(name):
    data = golden("protocol_golden.json")["datasets"][name]
    all_ious, _ = run(name, 0.95)
    assert [len(ious) for ious in all_ious] == [i["n_clicks_early_stop"] for i in data["instances"]]
    thresholds = noc_thresholds(0.95)
    assert thresholds == golden("protocol_golden.json")["settings"]["noc_iou_thrs_exact"]
    noc, std, over_max = compute_noc_metric(all_ious, thresholds, max_clicks=20)
    keys = ["0.80", "0.85", "0.90", "0.95"]
    summary = data["summary"]
    assert noc == [summary["noc"][k] for k in keys]
    assert std == [summary["noc_std"][k] for k in keys]
    assert over_max == [summary["over_max"][k] for k in keys]
    for k, thr in zip(keys, thresholds):
        assert [instance_noc(ious, thr) for ious in all_ious] == [i["noc"][k] for i in data["instances"]]


@pytest.mark.parametrize("name", DATASETS)
def test_batched_loop_equals_the_golden(name):
    """Eight instances in flight, finishing at different clicks: each one's clicks, IoUs and maps
    are still the golden's (the early-stopped prefix of the full run)."""
    instances = golden("protocol_golden.json")["datasets"][name]["instances"]
    records: Dict[int, List] = {}

    def callback(image, gt, probs, sample_id, click_index, clicks):
        records.setdefault(sample_id, []).append((sha16(probs), clicks[-1]))

    result = run_dataset(dataset(name), BatchedSyntheticPredictor(), max_iou_thr=0.95, callback=callback,
                         batch_size=8)
    assert len({len(r.ious) for r in result.instances}) > 3
    for index, (instance, r) in enumerate(zip(instances, result.instances)):
        n = instance["n_clicks_early_stop"]
        where = f"{name} {instance['file']}"
        assert r.sample_index == index and len(r.ious) == n, where
        np.testing.assert_array_equal(r.ious, np.array(instance["ious"][:n], dtype=np.float32), err_msg=where)
        assert [[*c.coords, int(c.is_positive)] for _, c in records[index]] == instance["clicks"][:n], where
        assert [h for h, _ in records[index]] == [c["prob_sha16"] for c in instance["per_click"][:n]], where


@pytest.mark.parametrize("name", DATASETS)
def test_miou_at_k_equals_the_golden(name):
    all_ious, _ = run(name, 1.01)
    expected = golden("protocol_golden.json")["datasets"][name]["summary"]["miou_at_k"]
    np.testing.assert_array_equal(miou_at_k(all_ious), np.array(expected, dtype=np.float32))


@pytest.mark.parametrize("mode,target", [("default", 0.95), ("print_ious", 1.01)])
def test_results_table_text_equals_the_golden(mode, target):
    protocol = golden("protocol_golden.json")
    elapsed = protocol["settings"]["fake_elapsed_seconds_for_tables"]
    lines = []
    for name in DATASETS:
        header, row = results_row(run(name, target)[0], elapsed[name], "NoBRS", name, target, n_clicks=20,
                                  print_ious=mode == "print_ious", model_name="synthetic_predictor")
        lines += ([header] if not lines else []) + [row]
    assert "\n".join(lines) + "\n" == protocol["results_tables"][mode]["stdout"]


EDGE_CASES = ["border_padding", "border_padding_corner", "dt_tie_rowmajor", "fn_fp_tie_goes_negative",
              "dt_tie_two_blobs", "ignore_label", "not_clicked_map", "perfect_prediction"]


@pytest.mark.parametrize("case", EDGE_CASES)
def test_clicker_edge_cases(case):
    spec = golden("edge_cases_golden.json")["cases"][case]
    gt = np.array(spec["gt"], dtype=np.int32)
    clicker = Clicker(gt_mask=gt)
    for step in spec["steps"]:
        pred = np.array(step["pred"], dtype=bool)
        click = clicker.make_next_click(pred)
        assert [*click.coords, int(click.is_positive)] == step["click"], case
        assert get_iou(gt, pred) == step["iou_of_pred"], case


def test_get_iou_cases():
    for spec in golden("edge_cases_golden.json")["cases"]["get_iou"]:
        with np.errstate(invalid="ignore"):
            iou = get_iou(np.array(spec["gt"]), np.array(spec["pred"], dtype=bool))
        if spec["iou"] is None:
            assert np.isnan(iou)
        else:
            assert iou == spec["iou"]


def test_compute_noc_metric_case():
    spec = golden("edge_cases_golden.json")["cases"]["compute_noc_metric"]
    arrays = [np.array(a, dtype=np.float32) for a in spec["iou_arrays_float32"]]
    noc, std, over_max = compute_noc_metric(arrays, spec["iou_thrs"], spec["max_clicks"])
    assert noc == spec["noc"]
    assert std == spec["noc_std"]
    assert over_max == spec["over_max"]
    for array, expected in zip(arrays, spec["per_array_noc"]):
        assert [instance_noc(array, t, spec["max_clicks"]) for t in spec["iou_thrs"]] == expected


def test_clicked_pixels_are_never_chosen_again_while_errors_remain():
    gt = np.zeros((9, 9), dtype=np.int32)
    gt[2:7, 2:7] = 1
    clicker = Clicker(gt_mask=gt)
    empty = np.zeros_like(gt, dtype=bool)
    coords = [clicker.make_next_click(empty).coords for _ in range(5)]
    assert len(set(coords)) == 5
    assert [c.indx for c in clicker.get_clicks()] == list(range(5))
    assert [c.coords for c in clicker.get_clicks(clicks_limit=2)] == coords[:2]


def test_clicker_rejects_bad_shapes():
    clicker = Clicker(gt_mask=np.zeros((4, 5), dtype=np.int32))
    with pytest.raises(ValueError, match=r"\(4, 5\)"):
        clicker.make_next_click(np.zeros((5, 4), dtype=bool))
    with pytest.raises(ValueError, match="2-D"):
        Clicker(gt_mask=np.zeros((2, 4, 5)))
    with pytest.raises(RuntimeError, match="add_click"):
        Clicker().make_next_click(np.zeros((4, 5), dtype=bool))


def test_evaluate_sample_stops_at_the_target_but_not_before_min_clicks():
    gt = np.zeros((12, 12), dtype=np.int32)
    gt[3:9, 3:9] = 1

    class Perfect:
        def set_input_image(self, image):
            pass

        def get_prediction(self, clicker):
            return (gt == 1).astype(np.float32)

    clicks, ious, _ = evaluate_sample(gt, gt, Perfect(), max_iou_thr=0.9)
    assert len(clicks) == 1 and ious.tolist() == [1.0]
    clicks, ious, _ = evaluate_sample(gt, gt, Perfect(), max_iou_thr=0.9, min_clicks=3)
    assert len(ious) == 3
    assert isinstance(clicks[0], Click)
