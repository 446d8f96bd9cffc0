"""Evaluation: the click simulator, the predictor chain, the loop and its scores."""
from .clicker import Click, Clicker
from .evaluation import DatasetResult, InstanceResult, evaluate_dataset, evaluate_sample, run_dataset
from .metrics import compute_noc_metric, get_iou, get_results_table, miou_at_k, noc_thresholds, results_row
from .predictor import BasePredictor, get_predictor, zoom_in_params

__all__ = ["BasePredictor", "Click", "Clicker", "DatasetResult", "InstanceResult", "compute_noc_metric",
           "evaluate_dataset", "evaluate_sample", "get_iou", "get_predictor", "get_results_table", "miou_at_k",
           "noc_thresholds", "results_row", "run_dataset", "zoom_in_params"]
