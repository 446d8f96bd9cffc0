"""Click-based segmentation from Python, in Segment Anything's conventions.

::

    from isegm import Predictor

    predictor = Predictor("weights/skipclick_dinov2.pth")        # a model, a checkpoint file or an ONNX folder
    predictor.set_image(image)                            # H x W x 3 uint8 RGB, any size: encoded once
    mask, logits = predictor.predict(point_coords=[[x, y]], point_labels=[1])
    mask, logits = predictor.predict(point_coords=[[x, y], [x2, y2]], point_labels=[1, 0],
                                     mask_input=logits)   # the next click on the same object

Each ``predict`` gets all clicks of the object so far, in order, and the logits the previous
call returned: the model family's evaluation protocol then runs exactly as the evaluation does
(the previous mask feeds the next click), and only the per-click path runs after ``set_image``.
Masks are those of the evaluation path for the same clicks.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from collections import OrderedDict
from typing import Any, Callable, ContextManager, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from .inference.clicker import Click, Clicker
from .inference.metrics import PRED_THRESHOLD

ArrayLike = Union[np.ndarray, Sequence]
# Outputs whose engine state is remembered, so that passing back returned logits continues the
# object exactly (the family's full state, not only its mask); older ones fall back to the mask.
REMEMBERED_OUTPUTS = 8


class Predictor:
    """``set_image`` once per image, then ``predict`` after each click (module docstring).

    ``model``: a model (``torch.nn.Module`` of any family), a checkpoint file any family reads
    (``isegm.model.load_checkpoint``: ours, the authors' SkipClick and EMC-Click releases), or a
    folder written by ``skipclick-export`` or its loaded ``isegm.onnx.engine.OnnxModel`` (run by
    onnxruntime; torch is not imported). Predictors of several images share one model: pass the
    same module, or the same ``OnnxModel`` (its sessions load once).
    ``device``: cpu, cuda, cuda:N or mps (default: the model's device, else cuda when available).
    ``dtype``: fp32 (default), bf16 or fp16. ``size``: the network input (SkipClick: side of the
    square, a multiple of the patch size, default 448; EMC-Click: short side, default 384).
    ``flip``: the authors' flip test-time augmentation (twice the per-click work). ``zoom_in``: the
    RITM protocol's crop around the object after the first click. Both are off by default, as in
    SkipClick's official evaluation (zoom-in suppressed) and for speed. ``threshold``: a pixel is
    in the mask when its probability is above it (the evaluation's 0.49).
    """

    def __init__(self, model: Any, device: Optional[str] = None, dtype: Optional[str] = None, *,
                 size: Optional[int] = None, flip: bool = False, zoom_in: bool = False,
                 threshold: float = PRED_THRESHOLD) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold {threshold} must lie in (0, 1)")
        self.threshold = threshold
        self._context: Callable[[], ContextManager] = contextlib.nullcontext
        onnx_model = _is_onnx_model(model)
        if onnx_model or isinstance(model, (str, os.PathLike)) and os.path.isdir(model):
            if device not in (None, "cpu") or dtype not in (None, "fp32") or size is not None or flip or zoom_in:
                folder = model.folder if onnx_model else model
                raise ValueError(f"{os.fspath(folder)!r} is an ONNX export: it runs in fp32 on the CPU at the size it "
                                 "was exported with, without flip or zoom-in; drop device, dtype, size, flip, zoom_in "
                                 "(or pass the checkpoint instead)")
            from .onnx.engine import OnnxClickPredictor
            self._engine: Any = OnnxClickPredictor(model)
            self.description: str = self._engine.description
        else:
            from .inference.interactive import torch_engine
            self._engine, self._context, self.description = torch_engine(model, device, dtype, size, flip, zoom_in)
        self._size: Optional[Tuple[int, int]] = None
        self._new_object: Optional[Dict[str, Any]] = None
        self._remembered: "OrderedDict[bytes, Dict[str, Any]]" = OrderedDict()

    @property
    def is_image_set(self) -> bool:
        """Whether ``set_image`` was called (and not undone by ``reset_image``)."""
        return self._size is not None

    @property
    def original_size(self) -> Optional[Tuple[int, int]]:
        """(H, W) of the image set, or None."""
        return self._size

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Encode ``image`` (H x W x 3 uint8, ``image_format`` RGB or BGR as OpenCV reads it; any
        size) once: the following ``predict`` calls run only the per-click path."""
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format {image_format!r}: expected 'RGB' or 'BGR'")
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be H x W x 3 uint8, got shape {image.shape} and dtype {image.dtype} "
                             "(for a grayscale or RGBA image: convert it to RGB first)")
        if min(image.shape[:2]) < 2:
            raise ValueError(f"image of {image.shape[0]} x {image.shape[1]} px is too small to segment")
        if image_format == "BGR":
            image = image[..., ::-1]
        self.reset_image()
        with self._context():
            self._engine.set_input_image(np.ascontiguousarray(image))
            self._engine.precompute()
        self._size = image.shape[:2]
        self._new_object = self._engine.get_states()

    def reset_image(self) -> None:
        """Forget the image, its encoding and the remembered outputs."""
        self._size, self._new_object = None, None
        self._remembered.clear()

    def predict(self, point_coords: ArrayLike, point_labels: ArrayLike, mask_input: Optional[np.ndarray] = None,
                multimask_output: bool = False, return_logits: bool = False) -> Tuple[np.ndarray, np.ndarray]:
        """The mask of the object for its clicks so far.

        ``point_coords``: (N, 2) pixel coordinates (x, y) in the image given to ``set_image``, in
        click order; ``point_labels``: (N,) 1 for a click on the object, 0 for one on the
        background. ``mask_input``: the low-resolution logits an earlier call returned for this
        object (the model's previous mask; a (1, h, w) logits map from elsewhere is read as one
        where the family allows it). Returns the mask (H x W bool; with ``return_logits`` the
        logits H x W float32) and the low-resolution logits (1, h, w) float32 to pass back.
        ``multimask_output``: SAM's option; these models give one mask per click, so only False."""
        if self._size is None:
            raise RuntimeError("call set_image(image) before predict")
        if multimask_output:
            raise ValueError("multimask_output=True: these models give one mask per click; pass False")
        clicker = Clicker()
        for click in self._clicks(point_coords, point_labels):
            clicker.add_click(click)
        self._start(mask_input)
        with self._context():
            prob = self._engine.get_prediction(clicker)
            low_res = np.asarray(self._engine.get_mask_input(), dtype=np.float32)
        self._remember(low_res, self._engine.get_states())
        if return_logits:
            clipped = np.clip(prob, 1e-6, 1 - 1e-6).astype(np.float32)
            return np.log(clipped / (1 - clipped)), low_res
        return prob > self.threshold, low_res

    def _clicks(self, point_coords: ArrayLike, point_labels: ArrayLike) -> Sequence[Click]:
        """Validated (x, y) coordinates and 0 / 1 labels as clicks ``(y, x)``."""
        coords = np.asarray(point_coords, dtype=np.float64)
        labels = np.asarray(point_labels)
        if coords.ndim != 2 or coords.shape[1] != 2 or len(coords) == 0:
            raise ValueError(f"point_coords must be (N, 2) with N >= 1 (x, y) pairs, got shape {coords.shape}")
        if labels.shape != (len(coords),):
            raise ValueError(f"point_labels must be ({len(coords)},) to match point_coords, got shape {labels.shape}")
        if not np.isin(labels, (0, 1)).all():
            raise ValueError(f"point_labels must be 1 (object) or 0 (background), got {sorted(set(labels.tolist()))}")
        height, width = self._size
        outside = ~(np.isfinite(coords).all(axis=1) & (coords[:, 0] >= 0) & (coords[:, 0] <= width - 1)
                    & (coords[:, 1] >= 0) & (coords[:, 1] <= height - 1))
        if outside.any():
            index = int(np.argmax(outside))
            raise ValueError(f"point_coords[{index}] = {coords[index].tolist()} lies outside the {width} x {height} "
                             "image (x in [0, W-1], y in [0, H-1])")
        return [Click(is_positive=bool(label), coords=(float(y), float(x))) for (x, y), label in zip(coords, labels)]

    def _start(self, mask_input: Optional[np.ndarray]) -> None:
        """The object's state before this call: new, remembered from an output, or from a mask."""
        if mask_input is None:
            self._engine.set_states(self._new_object)
            return
        mask_input = np.asarray(mask_input, dtype=np.float32)
        remembered = self._remembered.get(_fingerprint(mask_input))
        if remembered is not None:
            self._engine.set_states(remembered)
        else:
            self._engine.set_states(self._new_object)
            self._engine.set_mask_input(mask_input)

    def _remember(self, low_res: np.ndarray, states: Dict[str, Any]) -> None:
        key = _fingerprint(low_res)
        self._remembered[key] = states
        self._remembered.move_to_end(key)
        while len(self._remembered) > REMEMBERED_OUTPUTS:
            self._remembered.popitem(last=False)


def _is_onnx_model(model: Any) -> bool:
    """Whether ``model`` is a loaded ONNX export (without importing onnxruntime: an ``OnnxModel``
    exists only once its module is imported)."""
    engine = sys.modules.get(f"{__package__}.onnx.engine")
    return engine is not None and isinstance(model, engine.OnnxModel)


def _fingerprint(logits: np.ndarray) -> bytes:
    """A digest of a logits map (its shape and bytes)."""
    array = np.ascontiguousarray(logits, dtype=np.float32)
    return hashlib.blake2b(repr(array.shape).encode() + array.tobytes(), digest_size=16).digest()
