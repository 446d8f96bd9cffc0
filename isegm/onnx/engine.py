"""Run an exported model (``skipclick-export``) on onnxruntime alone: numpy and onnxruntime, no torch.

A folder holds ``encoder.onnx`` (image -> image features, once per image), ``decoder.onnx``
(features + clicks + previous mask -> logits, per click; the number of clicks is dynamic) and
``meta.json`` (family, variant, network size, the graphs' input and output names, versions).

``OnnxClickPredictor`` is one image / object's predictor with the evaluation tools' interface
(``isegm.inference.engine.ClickPredictor``) and computes what the torch chain
``get_predictor(model, eval_mode=f"fixed{size}", suppress_zoom=True, with_flip=False)`` computes:

1. the RGB image in [0, 1] and the previous probability map are resized to the network size
   (bilinear, ``align_corners=True``);
2. clicks ``(y, x)`` become network pixels ``h * y / H``, ``w * x / W`` in float64, laid out as the
   RITM points ``[1, 2P, 3]`` (positives, then negatives, each padded with ``-1`` rows to P);
3. the decoder's logits go through the sigmoid and are resized back to the image; that map is the
   object's state and the next click's previous mask.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import onnxruntime as ort

from .. import __version__
from ..inference.clicker import Click, Clicker
from ..utils.images import check_rgb

FORMAT = "skipclick-onnx/1"
ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
META_FILE = "meta.json"
# Families whose export this engine runs (their decoders take the previous mask as an input).
FAMILIES = ("SkipClick",)
PADDING = (-1.0, -1.0, -1.0)
# Probabilities are clamped to [eps, 1 - eps] before a logit (as the torch chain's mask_input).
PROB_EPS = 1e-6

PathLike = Union[str, "os.PathLike[str]"]


def read_meta(folder: PathLike) -> Dict[str, Any]:
    """``meta.json`` of an export folder, checked: the files exist, the format is this version's,
    the family is one this engine runs."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no ONNX export folder at {str(folder)!r}: write one with "
                                "skipclick-export --checkpoint PATH --out DIR")
    missing = [name for name in (META_FILE, ENCODER_FILE, DECODER_FILE) if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{str(folder)!r} lacks {', '.join(missing)}: it is not a complete skipclick-export "
                                "folder; export it again")
    try:
        meta = json.loads((folder / META_FILE).read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{str(folder / META_FILE)!r} cannot be read as JSON ({err}); export the folder again") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise ValueError(f"{str(folder / META_FILE)!r} has format {found!r}; this skipclick ({__version__}) reads "
                         f"{FORMAT!r}: export the model again with this version")
    if meta.get("family") not in FAMILIES:
        raise ValueError(f"{str(folder)!r} holds an export of family {meta.get('family')!r}; this engine runs "
                         f"{', '.join(FAMILIES)}")
    return meta


def resize_bilinear(x: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Bilinear resize with ``align_corners=True`` (torch's ``F.interpolate`` rule) of ``[..., h, w]``
    float32 maps to ``size`` = (H, W), as two matrix products."""
    h, w = x.shape[-2:]
    if (h, w) == tuple(size):
        return x.astype(np.float32, copy=True)
    rows, cols = _resize_matrix(h, size[0]), _resize_matrix(w, size[1])
    return np.matmul(np.matmul(rows, x), cols.T).astype(np.float32)


def _resize_matrix(size_in: int, size_out: int) -> np.ndarray:
    """``[size_out, size_in]`` weights of a 1-D linear resize with ``align_corners=True``."""
    matrix = np.zeros((size_out, size_in), dtype=np.float32)
    scale = (size_in - 1) / (size_out - 1) if size_out > 1 else 0.0
    src = np.arange(size_out, dtype=np.float32) * np.float32(scale)
    low = np.minimum(np.floor(src).astype(np.int64), size_in - 1)
    high = np.minimum(low + 1, size_in - 1)
    frac = src - low
    np.add.at(matrix, (np.arange(size_out), low), 1 - frac)
    np.add.at(matrix, (np.arange(size_out), high), frac)
    return matrix


def sigmoid(x: np.ndarray) -> np.ndarray:
    """float32 logistic function, without overflow warnings for large negative logits."""
    return (0.5 * (1.0 + np.tanh(0.5 * x.astype(np.float32)))).astype(np.float32)


def points_array(clicks: Sequence[Click], scale: Tuple[float, float]) -> np.ndarray:
    """The RITM points ``[1, 2P, 3]`` float32 of ``clicks`` with coordinates multiplied by ``scale``
    = (h / H, w / W): rows ``(y, x, click index)``, the positive clicks padded with ``-1`` rows to
    P, then the negative ones; P is the larger count of one sign, at least 1 (as
    ``isegm.inference.engine.points_from_clicks``)."""
    rows = {True: [], False: []}
    for click in clicks:
        y, x = click.coords
        # the network's pixels in float64, as the torch chain maps them (h * y / H)
        rows[click.is_positive].append((scale[0] * y, scale[1] * x, click.indx))
    num = max(1, len(rows[True]), len(rows[False]))
    padded = [row for sign in (True, False) for row in rows[sign] + [PADDING] * (num - len(rows[sign]))]
    return np.asarray(padded, dtype=np.float64)[None].astype(np.float32)


class OnnxModel:
    """The onnxruntime sessions of an export folder and its ``meta`` (``meta.json``).

    ``threads``: onnxruntime's intra-op threads (None: its default, one per core).
    ``providers``: onnxruntime execution providers (None: the CPU).
    """

    def __init__(self, folder: PathLike, threads: Optional[int] = None,
                 providers: Optional[Sequence[str]] = None) -> None:
        self.folder = Path(folder)
        self.meta = read_meta(self.folder)
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        providers = list(providers) if providers is not None else ["CPUExecutionProvider"]
        self.encoder = ort.InferenceSession(str(self.folder / ENCODER_FILE), options, providers=providers)
        self.decoder = ort.InferenceSession(str(self.folder / DECODER_FILE), options, providers=providers)
        self._decoder_inputs = [i.name for i in self.decoder.get_inputs()]
        self._encoder_outputs = [o.name for o in self.encoder.get_outputs()]

    @property
    def family(self) -> str:
        return self.meta["family"]

    @property
    def variant(self) -> str:
        return self.meta["variant"]

    @property
    def size(self) -> Tuple[int, int]:
        """(h, w) of the network input."""
        return tuple(self.meta["size"])

    def encode(self, image: np.ndarray) -> Dict[str, np.ndarray]:
        """Image features (by output name) of ``image`` ``[1, 3, h, w]`` float32 in [0, 1]."""
        return dict(zip(self._encoder_outputs, self.encoder.run(None, {"image": image})))

    def decode(self, features: Dict[str, np.ndarray], points: np.ndarray, prev_mask: np.ndarray) -> np.ndarray:
        """Logits ``[1, 1, h, w]`` for ``points`` ``[1, 2P, 3]`` float32 and ``prev_mask``
        ``[1, 1, h, w]`` (a probability map)."""
        feed = {**features, "points": points, "prev_mask": prev_mask}
        return self.decoder.run(["logits"], {name: feed[name] for name in self._decoder_inputs})[0]


class OnnxClickPredictor:
    """One image / object's predictor over an export (module docstring), with the evaluation
    tools' interface: ``set_input_image``, ``precompute``, ``get_prediction(clicker)``,
    ``get_states`` / ``set_states``, ``get_mask_input`` / ``set_mask_input``.

    ``model``: an ``OnnxModel`` or an export folder.
    """

    def __init__(self, model: Union[OnnxModel, PathLike]) -> None:
        self.model = model if isinstance(model, OnnxModel) else OnnxModel(model)
        h, w = self.model.size
        self.description = f"{self.model.family} {self.model.variant} on onnxruntime ({h}x{w})"
        self._image: Optional[np.ndarray] = None       # [1, 3, H, W] float32 in [0, 1]
        self._net_image: Optional[np.ndarray] = None   # [1, 3, h, w]
        self._features: Optional[Dict[str, np.ndarray]] = None
        self._prev: Optional[np.ndarray] = None        # [1, 1, H, W] previous probability map

    def set_input_image(self, image: np.ndarray) -> None:
        """A new image: H x W x 3 RGB, uint8 or float in [0, 1]. Starts a new object."""
        image = check_rgb(image)
        image = image.astype(np.float32) / 255 if image.dtype == np.uint8 else image.astype(np.float32)
        self._image = np.ascontiguousarray(image.transpose(2, 0, 1)[None])
        self._net_image = np.ascontiguousarray(resize_bilinear(self._image, self.model.size))
        self._features = None
        self._prev = np.zeros((1, 1, *image.shape[:2]), dtype=np.float32)

    def _require_image(self, call: str) -> None:
        if self._image is None:
            raise RuntimeError(f"call set_input_image(image) before {call}")

    def precompute(self) -> None:
        """Run the encoder now (once per image), so that each click runs only the decoder."""
        self._require_image("precompute")
        if self._features is None:
            self._features = self.model.encode(self._net_image)

    def get_prediction(self, clicker: Clicker) -> np.ndarray:
        """Probability map (H x W float32) for all clicks of ``clicker`` so far."""
        self.precompute()
        (H, W), (h, w) = self._image.shape[-2:], self.model.size
        points = points_array(clicker.get_clicks(), (h / H, w / W))
        logits = self.model.decode(self._features, points, resize_bilinear(self._prev, (h, w)))
        self._prev = resize_bilinear(sigmoid(logits), (H, W))
        return self._prev[0, 0].copy()

    def get_states(self) -> Dict[str, Any]:
        """The object's state, a snapshot: ``{'prev_prediction': [1, 1, H, W] float32}``."""
        self._require_image("get_states")
        return {"prev_prediction": self._prev.copy()}

    def set_states(self, states: Dict[str, Any]) -> None:
        """Restore a ``get_states`` of this image (or any ``[1, 1, H, W]`` probability map)."""
        self._require_image("set_states")
        prev = np.asarray(states["prev_prediction"], dtype=np.float32)
        if prev.shape != (1, 1, *self._image.shape[-2:]):
            raise ValueError(f"prev_prediction of shape {prev.shape} does not fit the image "
                             f"{tuple(self._image.shape[-2:])}")
        self._prev = prev.copy()

    def get_mask_input(self) -> np.ndarray:
        """The object's current mask as logits ``(1, h, w)`` float32 at the network's resolution."""
        self._require_image("get_mask_input")
        prob = np.clip(resize_bilinear(self._prev, self.model.size)[0], PROB_EPS, 1 - PROB_EPS)
        return np.log(prob / (1 - prob)).astype(np.float32)

    def set_mask_input(self, logits: np.ndarray) -> None:
        """Continue the object from a mask given as logits ``(1, h, w)`` or ``(h, w)``: their
        sigmoid, resized to the image, is the next click's previous mask."""
        self._require_image("set_mask_input")
        logits = np.asarray(logits, dtype=np.float32)
        if logits.ndim == 2:
            logits = logits[None]
        if logits.ndim != 3 or logits.shape[0] != 1:
            raise ValueError(f"mask_input must be (1, h, w) or (h, w) logits, got shape {logits.shape}")
        self._prev = sigmoid(resize_bilinear(logits[None], tuple(self._image.shape[-2:])))


__all__ = ["FORMAT", "OnnxClickPredictor", "OnnxModel", "points_array", "read_meta", "resize_bilinear"]
