"""Evaluation: the click simulator, the predictor chain, the loop and its scores."""
from .baselines import GrabCutPredictor, RandomWalkerPredictor, get_baseline
from .clicker import Click, Clicker, ClickSampler
from ..model.emc.predictor import EMCPredictor  # registers EMC-Click's predictor for get_predictor
from .evaluation import (DatasetResult, InstanceResult, InstanceRun, baseline_clicker, evaluate_dataset,
                         evaluate_sample, merge_results, run_dataset, supports_batching)
from .metrics import compute_noc_metric, get_iou, get_results_table, miou_at_k, noc_thresholds, results_row
from .predictor import BasePredictor, get_predictor, register_predictor, zoom_in_params
from .rclicks import Clickability, RClicksSampler, evaluate_rclicks, load_clickability, robustness_metrics

__all__ = ["BasePredictor", "Click", "ClickSampler", "Clickability", "Clicker", "DatasetResult", "EMCPredictor",
           "GrabCutPredictor", "InstanceResult", "InstanceRun", "RClicksSampler", "RandomWalkerPredictor",
           "baseline_clicker", "compute_noc_metric", "evaluate_dataset", "evaluate_rclicks", "evaluate_sample",
           "get_baseline", "get_iou", "get_predictor", "get_results_table", "load_clickability", "merge_results",
           "miou_at_k", "noc_thresholds", "register_predictor", "results_row", "robustness_metrics", "run_dataset",
           "supports_batching", "zoom_in_params"]
