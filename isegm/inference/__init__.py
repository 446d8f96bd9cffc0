"""Evaluation: the click simulator, the predictor chain, the loop and its scores."""
from .baselines import GrabCutPredictor, RandomWalkerPredictor, get_baseline
from .clicker import Click, Clicker, ClickSampler
from .evaluation import (DatasetResult, InstanceResult, InstanceRun, baseline_clicker, evaluate_dataset,
                         evaluate_sample, merge_results, run_dataset, supports_batching)
from .engine import ClickPredictor, PredictionProtocol
from .metrics import compute_noc_metric, get_iou, get_results_table, miou_at_k, noc_thresholds, results_row
from .predictor import BasePredictor, RITMChain, get_predictor, ritm_predictor, zoom_in_params
from .rclicks import Clickability, RClicksSampler, evaluate_rclicks, load_clickability, robustness_metrics

__all__ = ["BasePredictor", "Click", "ClickPredictor", "ClickSampler", "Clickability", "Clicker", "DatasetResult",
           "GrabCutPredictor", "InstanceResult", "InstanceRun", "PredictionProtocol", "RClicksSampler", "RITMChain",
           "RandomWalkerPredictor", "baseline_clicker", "compute_noc_metric", "evaluate_dataset", "evaluate_rclicks",
           "evaluate_sample", "get_baseline", "get_iou", "get_predictor", "get_results_table", "load_clickability",
           "merge_results", "miou_at_k", "noc_thresholds", "results_row", "ritm_predictor", "robustness_metrics",
           "run_dataset", "supports_batching", "zoom_in_params"]
