"""skipclick: click-based interactive segmentation with late-fusion models.

``from isegm import Predictor`` is the Python API (``isegm.predictor``); it loads on first use,
so that ``import isegm`` stays cheap and an ONNX deployment never imports torch.
"""
from typing import Any

__version__ = "0.1.0"
__all__ = ["Predictor", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Predictor":
        from .predictor import Predictor
        return Predictor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
