"""Scores of the RITM evaluation protocol: IoU with ignore pixels, NoC, over-max counts, mIoU@k,
seconds per click, and the family's results table (text identical to the original's)."""
from __future__ import annotations

from datetime import timedelta
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .clicker import IGNORE_LABEL

# A pixel belongs to the predicted mask when its probability is above this (the family's evaluation,
# training's click simulation and the Python API alike).
PRED_THRESHOLD = 0.49

# The table's NoC columns; thresholds above the target IoU are not computed ("?").
TABLE_THRESHOLDS = (0.80, 0.85, 0.90, 0.95)


def get_iou(gt_mask: np.ndarray, pred_mask: np.ndarray, ignore_label: int = IGNORE_LABEL) -> float:
    """IoU of ``pred_mask`` (bool) with the object ``gt_mask == 1``; ignore pixels count in
    neither intersection nor union. An exact integer ratio (NaN for 0/0)."""
    valid = gt_mask != ignore_label
    obj = gt_mask == 1
    inter = np.count_nonzero(pred_mask & obj & valid)
    union = np.count_nonzero((pred_mask | obj) & valid)
    return inter / union if union else float("nan")


def noc_thresholds(target_iou: float) -> List[float]:
    """The IoU thresholds the table reports for a run with ``target_iou``: 0.8 in steps of 0.05
    up to min(0.95, target), computed as the original does (0.8500000000000001, ...)."""
    return np.arange(0.8, min(0.95, target_iou) + 0.001, 0.05).tolist()


def instance_noc(ious: np.ndarray, iou_thr: float, max_clicks: int = 20) -> int:
    """Clicks to reach ``iou_thr`` (1-based), or ``max_clicks`` if never reached. The comparison
    is made in the IoUs' dtype (float32), so an IoU of exactly float32(0.85) reaches 0.85."""
    ious = np.asarray(ious)
    reached = ious >= ious.dtype.type(iou_thr)
    return int(np.argmax(reached)) + 1 if reached.any() else max_clicks


def compute_noc_metric(all_ious: Sequence[np.ndarray], iou_thrs: Sequence[float], max_clicks: int = 20
                       ) -> Tuple[List[float], List[float], List[int]]:
    """Per threshold: mean NoC, its population std, and the number of instances whose NoC equals
    ``max_clicks`` (which includes those reaching the threshold exactly at the last click)."""
    noc_list, noc_std, over_max = [], [], []
    for thr in iou_thrs:
        scores = np.array([instance_noc(ious, thr, max_clicks) for ious in all_ious], dtype=np.int64)
        noc_list.append(float(scores.mean()))
        noc_std.append(float(scores.std()))
        over_max.append(int((scores == max_clicks).sum()))
    return noc_list, noc_std, over_max


def miou_at_k(all_ious: Sequence[np.ndarray]) -> np.ndarray:
    """Mean IoU after k clicks, for k up to the shortest IoU array (float32)."""
    k = min(len(ious) for ious in all_ious)
    return np.array([ious[:k] for ious in all_ious]).mean(axis=0)


def miou_curve(all_ious: Sequence[np.ndarray], n_clicks: int) -> np.ndarray:
    """Mean IoU after k = 1 .. ``n_clicks`` clicks over all instances, an instance that stopped
    early (at the target IoU) keeping its last IoU. Equals ``miou_at_k`` without early stop."""
    return np.array([np.pad(ious, (0, n_clicks - len(ious)), mode="edge") for ious in all_ious]).mean(axis=0)


def get_time_metrics(all_ious: Sequence[np.ndarray], elapsed_time: float) -> Tuple[float, float]:
    """Seconds per click (over the clicks actually made) and seconds per instance."""
    n_clicks = sum(map(len, all_ious))
    return elapsed_time / n_clicks, elapsed_time / len(all_ious)


def get_results_table(noc_list: Sequence[float], over_max_list: Sequence[int], brs_type: str, dataset_name: str,
                      mean_spc: float, elapsed_time: float, n_clicks: int = 20,
                      model_name: Optional[str] = None) -> Tuple[str, str]:
    """The family's results table: ``(header, row)``; NoC columns beyond ``len(noc_list)`` print ``?``."""
    over = f">={n_clicks}"
    header_cells = [f"{'BRS Type':^13}", f"{'Dataset':^30}"]
    header_cells += [f"{f'NoC@{round(t * 100)}%':^9}" for t in TABLE_THRESHOLDS]
    header_cells += [f"{f'{over}@{round(t * 100)}%':^9}" for t in TABLE_THRESHOLDS[1:]]
    header_cells += [f"{'SPC,s':^7}", f"{'Time':^9}"]
    table_header = "|" + "|".join(header_cells) + "|"
    rule = "-" * len(table_header)
    header = (f"Eval results for model: {model_name}\n" if model_name is not None else "")
    header += f"{rule}\n{table_header}\n{rule}"

    def cell(values: Sequence, i: int, fmt: str) -> str:
        return f"{values[i]:^9{fmt}}" if i < len(noc_list) else f"{'?':^9}"

    cells = [f"{brs_type:^13}", f"{dataset_name:^30}"]
    cells += [cell(noc_list, i, ".2f") for i in range(4)]
    cells += [cell(over_max_list, i, "") for i in range(1, 4)]
    cells += [f"{mean_spc:^7.3f}", f"{str(timedelta(seconds=int(elapsed_time))):^9}"]
    return header, "|" + "|".join(cells) + "|"


def results_row(all_ious: Sequence[np.ndarray], elapsed_time: float, brs_type: str, dataset_name: str,
                target_iou: float, n_clicks: int = 20, print_ious: bool = False,
                model_name: Optional[str] = None) -> Tuple[str, str]:
    """``(header, row)`` as ``evaluate_model.py`` prints and logs them for one dataset: the table
    row plus the mIoU@k list (``print_ious``), or else NoC / over-max at a target IoU that is not
    one of 0.80 / 0.85 / 0.90."""
    mean_spc, _ = get_time_metrics(all_ious, elapsed_time)
    noc_list, _, over_max_list = compute_noc_metric(all_ious, noc_thresholds(target_iou), n_clicks)
    header, row = get_results_table(noc_list, over_max_list, brs_type, dataset_name, mean_spc, elapsed_time,
                                    n_clicks, model_name=model_name)
    if print_ious:
        mious = miou_at_k(all_ious)
        row += "; " + " ".join(f"mIoU@{k}={mious[k - 1]:.2%};" for k in range(1, min(len(mious), 20) + 1))
    elif int(target_iou * 100) not in (80, 85, 90):
        (noc,), _, (over,) = compute_noc_metric(all_ious, [target_iou], n_clicks)
        row += f" NoC@{target_iou:.1%} = {noc:.2f}; >={n_clicks}@{target_iou:.1%} = {over}"
    return header, row
