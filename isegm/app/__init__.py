"""Interactive annotation in the browser, backed by a click-based model (``python -m isegm.app``).

``AnnotationApp`` serves a folder of images to any number of browser sessions, ``AppServer``
puts it on HTTP; ``Backend`` adapts a model family's predictor (``model_backend`` for any model
``get_predictor`` knows: SkipClick, EMC-Click; ``baseline_backend`` for the model-free baselines).
"""
from .backend import Backend, baseline_backend, load_backend, model_backend
from .server import AnnotationApp, AppServer
from .store import AnnotationStore

__all__ = ["AnnotationApp", "AnnotationStore", "AppServer", "Backend", "baseline_backend", "load_backend",
           "model_backend"]
