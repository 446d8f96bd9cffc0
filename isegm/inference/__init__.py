"""Evaluation: the click simulator, the predictor chain, the loop and its scores.

The names below load their module on first use, so that the torch-free parts (the clicker, the
metrics) import without torch: an ONNX deployment uses them with onnxruntime alone.
"""
from importlib import import_module
from typing import Any

_MODULES = {
    "baselines": ["GrabCutPredictor", "RandomWalkerPredictor", "get_baseline"],
    "clicker": ["Click", "Clicker", "ClickSampler"],
    "evaluation": ["DatasetResult", "InstanceResult", "InstanceRun", "baseline_clicker", "evaluate_dataset",
                   "evaluate_sample", "merge_results", "run_dataset", "supports_batching"],
    "engine": ["ClickPredictor", "PredictionProtocol"],
    "metrics": ["compute_noc_metric", "get_iou", "get_results_table", "miou_at_k", "noc_thresholds", "results_row"],
    "predictor": ["BasePredictor", "RITMChain", "get_predictor", "ritm_predictor", "zoom_in_params"],
    "rclicks": ["Clickability", "RClicksSampler", "evaluate_rclicks", "load_clickability", "robustness_metrics"],
}
_HOME = {name: module for module, names in _MODULES.items() for name in names}

__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_HOME[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(__all__))
