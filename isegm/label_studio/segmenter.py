"""The model as the Label Studio backend runs it: one ``isegm.Predictor`` per task image, with the
image encoded once (a bounded LRU), and the object's previous output fed to its next click.

Label Studio sends all keypoints of the object with each new one; the backend is otherwise
stateless. The segmenter keeps, per image, the low-resolution logits returned for each click
sequence, so that a request for clicks 1..n passes back the output of clicks 1..n-1 and runs only
the per-click path, exactly as ``Predictor.predict`` is driven one click at a time (and as the
evaluation protocol feeds the previous mask). When that output is gone (another object, a
restart, an evicted image) the clicks are replayed in order, so the mask is the same either way.
"""
from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from ..inference.baselines import get_baseline
from ..inference.clicker import Click, Clicker
from ..inference.metrics import PRED_THRESHOLD
from ..predictor import REMEMBERED_OUTPUTS, Predictor

# A click sequence as a cache key: (x, y, positive) per click, in order.
ClickKey = Tuple[Tuple[float, float, bool], ...]


class BaselinePredictor:
    """A model-free predictor of ``isegm.inference.baselines`` behind ``Predictor``'s
    ``set_image`` / ``predict``: the mask is computed from the clicks alone (these baselines take
    no previous mask), so ``mask_input`` is accepted and not used."""

    def __init__(self, name: str = "grabcut") -> None:
        self._baseline = get_baseline(name)
        self._initial: Dict[str, Any] = {}
        self.description = f"model-free {name} baseline (no checkpoint given)"

    def set_image(self, image: np.ndarray) -> None:
        """Prepare ``image`` (H x W x 3 uint8 RGB)."""
        self._baseline.set_input_image(image)
        self._initial = self._baseline.get_states()

    def predict(self, point_coords: np.ndarray, point_labels: np.ndarray,
                mask_input: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
        """The mask (H x W bool) for clicks (x, y) with labels 1 / 0, and its probabilities (1, H, W)."""
        clicker = Clicker()
        for (x, y), label in zip(np.asarray(point_coords, dtype=np.float64), point_labels):
            clicker.add_click(Click(is_positive=bool(label), coords=(float(y), float(x))))
        self._baseline.set_states(self._initial)
        prob = np.asarray(self._baseline.get_prediction(clicker), dtype=np.float32)
        return prob > PRED_THRESHOLD, prob[None]


@dataclass
class _Image:
    """One task image: its predictor with the image set, and the outputs of recent click sequences."""

    predictor: Any = None
    size: Tuple[int, int] = (0, 0)
    outputs: "OrderedDict[ClickKey, np.ndarray]" = field(default_factory=OrderedDict)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Outcome:
    """A mask and how it was made: ``encoded`` (the image was encoded for this request),
    ``clicks_run`` (per-click passes: 1 when the previous output was cached), times in ms."""

    mask: np.ndarray
    encoded: bool
    clicks_run: int
    encode_ms: float
    clicks_ms: float


class Segmenter:
    """Masks of task images for clicks, with the per-image work cached (module docstring).

    ``make_predictor``: a fresh predictor (``isegm.Predictor`` or ``BaselinePredictor``);
    ``capacity``: images whose encodings are kept. ``encodings`` counts images encoded so far.
    """

    def __init__(self, make_predictor: Callable[[], Any], description: str, capacity: int = 8,
                 model_free: bool = False) -> None:
        if capacity < 1:
            raise ValueError(f"--cache {capacity}: keep at least 1 image")
        self.make_predictor = make_predictor
        self.description = description
        self.capacity = capacity
        self.model_free = model_free
        self.encodings = 0
        self._images: "OrderedDict[str, _Image]" = OrderedDict()
        self._lock = threading.Lock()

    def cached(self) -> int:
        """How many images are encoded and kept."""
        with self._lock:
            return sum(entry.predictor is not None for entry in self._images.values())

    def segment(self, key: str, load: Callable[[], np.ndarray],
                clicks: Callable[[int, int], Tuple[np.ndarray, np.ndarray]]) -> Outcome:
        """The mask of image ``key`` (``load()`` gives it, H x W x 3 uint8 RGB, when not cached) for
        the clicks ``clicks(height, width)`` returns: (N, 2) pixel coordinates (x, y) and (N,)
        labels (1 object, 0 background), in click order."""
        with self._lock:
            entry = self._images.get(key)
            if entry is None:
                entry = self._images[key] = _Image()
                while len(self._images) > self.capacity:
                    self._images.popitem(last=False)
            else:
                self._images.move_to_end(key)
        with entry.lock:
            encode_ms, encoded = 0.0, entry.predictor is None
            if encoded:
                try:
                    image = load()
                    start = time.perf_counter()
                    predictor = self.make_predictor()
                    predictor.set_image(image)
                    encode_ms = (time.perf_counter() - start) * 1000
                except Exception:
                    with self._lock:
                        if self._images.get(key) is entry:
                            del self._images[key]
                    raise
                entry.predictor, entry.size = predictor, image.shape[:2]
                with self._lock:
                    self.encodings += 1
            coords, labels = clicks(*entry.size)
            return self._run(entry, coords, labels, encoded, encode_ms)

    @staticmethod
    def _run(entry: _Image, coords: np.ndarray, labels: np.ndarray, encoded: bool, encode_ms: float) -> Outcome:
        keys = [tuple((float(x), float(y), bool(label)) for (x, y), label in zip(coords[:n], labels[:n]))
                for n in range(1, len(coords) + 1)]
        done = next((n for n in range(len(keys) - 1, 0, -1) if keys[n - 1] in entry.outputs), 0)
        previous = entry.outputs[keys[done - 1]] if done else None
        start = time.perf_counter()
        for n in range(done + 1, len(keys) + 1):
            mask, previous = entry.predictor.predict(coords[:n], labels[:n], mask_input=previous)
            entry.outputs[keys[n - 1]] = previous
            entry.outputs.move_to_end(keys[n - 1])
            # No more than the predictor remembers: a kept output always continues its object exactly.
            while len(entry.outputs) > REMEMBERED_OUTPUTS:
                entry.outputs.popitem(last=False)
        return Outcome(mask, encoded, len(keys) - done, encode_ms, (time.perf_counter() - start) * 1000)


def load_segmenter(checkpoint: Optional[str], device: Optional[str] = None, dtype: str = "fp32",
                   size: Optional[int] = None, flip: bool = False, baseline: str = "grabcut",
                   capacity: int = 8) -> Segmenter:
    """The model choices of the annotation app: a checkpoint any family reads (SkipClick, ours or
    the authors'; the authors' EMC-Click files), a folder written by ``skipclick-export`` (ONNX),
    or without a checkpoint the model-free ``baseline``. The checkpoint or the export's sessions
    are loaded once; each cached image gets its own ``Predictor`` over the same model."""
    if checkpoint is None:
        probe = BaselinePredictor(baseline)   # fails now on an unknown name or a missing optional dependency
        return Segmenter(lambda: BaselinePredictor(baseline), probe.description, capacity, model_free=True)
    if os.path.isdir(checkpoint):
        if (device not in (None, "cpu")) or (size, dtype, flip) != (None, "fp32", False):
            raise ValueError(f"{checkpoint!r} is an ONNX export: it runs in fp32 on the CPU at the size it was "
                             "exported with, without flip; drop --device, --size, --dtype and --flip "
                             "(or pass the checkpoint file)")
        from ..onnx.engine import OnnxModel
        onnx_model = OnnxModel(checkpoint)
        first = Predictor(onnx_model)
        return Segmenter(lambda: Predictor(onnx_model), first.description, capacity)
    if not os.path.isfile(checkpoint):
        raise FileNotFoundError(f"--checkpoint {checkpoint!r} does not exist; give a checkpoint file or an "
                                "ONNX export folder (or none for the model-free baseline)")
    from ..model import load_checkpoint
    from ..utils.device import select_device
    model = load_checkpoint(checkpoint, device=select_device(device))
    first = Predictor(model, device, dtype, size=size, flip=flip)
    return Segmenter(lambda: Predictor(model, device, dtype, size=size, flip=flip),
                     f"{first.description} ({os.path.basename(checkpoint)})", capacity)
