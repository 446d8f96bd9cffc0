"""Run an exported model (``skipclick-export``) on onnxruntime alone: numpy and onnxruntime, no torch.

A folder holds ``encoder.onnx`` (image -> image features, once per image), ``decoder.onnx``
(features + clicks + previous mask -> logits, per click; the number of clicks is dynamic) and
``meta.json`` (family, variant, network size, the graphs' input and output names, versions).

``OnnxClickPredictor`` is one image / object's predictor with the evaluation tools' interface
(``isegm.inference.engine.ClickPredictor``) and computes what the torch chain
``get_predictor(model, eval_mode=f"fixed{size}", suppress_zoom=True, with_flip=False)`` computes.
SkipClick (``SkipClickChain``, the RITM chain without zoom-in or flip):

1. the RGB image in [0, 1] and the previous probability map are resized to the network size
   (bilinear, ``align_corners=True``);
2. clicks ``(y, x)`` become network pixels ``h * y / H``, ``w * x / W`` in float64, laid out as the
   RITM points ``[1, 2P, 3]`` (positives, then negatives, each padded with ``-1`` rows to P);
3. the decoder's logits go through the sigmoid and are resized back to the image; that map is the
   object's state and the next click's previous mask.

EMC-Click (``EMCChain``, the authors' ``ClickAttPredictor`` without flip): the image's short side
is resized to ``short_side`` (sides rounded, then down to multiples of 4), clicks are mapped as
``y * (h / H)``; the encoder (base network) runs at an object's first click, with that click; the
decoder (correction network) at every click, fed back its own 1/4-resolution logits.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import onnxruntime as ort

from .. import __version__
from ..inference.clicker import Click, Clicker, points_array
from ..utils.images import check_rgb

FORMAT = "skipclick-onnx/1"
ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
META_FILE = "meta.json"
FAMILIES = ("SkipClick", "EMCClick")
# EMC-Click's network input sides are multiples of this (as isegm.model.emc.predictor).
SIDE_MULTIPLE = 4
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


def network_points(clicks: Sequence[Click], to_network: Callable[[float, float], Tuple[float, float]]) -> np.ndarray:
    """The points layout ``[1, 2P, 3]`` float64 (``points_array``) of ``clicks`` with their
    coordinates mapped by ``to_network(y, x)``."""
    return points_array([[c.copy(coords=to_network(*c.coords)) for c in clicks]])


class OnnxModel:
    """The onnxruntime sessions of an export folder and its ``meta`` (``meta.json``).

    ``threads``: onnxruntime's intra-op threads (None: its default, one per core).
    ``providers``: onnxruntime execution providers (None: the CPU). ``spin``: idle threads
    spin-wait for the next run (onnxruntime's default, the lowest latency); turn it off when
    other compute (PyTorch) shares the cores, which spinning threads would starve.
    """

    def __init__(self, folder: PathLike, threads: Optional[int] = None,
                 providers: Optional[Sequence[str]] = None, spin: bool = True) -> None:
        self.folder = Path(folder)
        self.meta = read_meta(self.folder)
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        if not spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = list(providers) if providers is not None else ["CPUExecutionProvider"]
        self.encoder = ort.InferenceSession(str(self.folder / ENCODER_FILE), options, providers=providers)
        self.decoder = ort.InferenceSession(str(self.folder / DECODER_FILE), options, providers=providers)

    @property
    def family(self) -> str:
        return self.meta["family"]

    @property
    def variant(self) -> str:
        return self.meta["variant"]

    @property
    def size(self) -> Optional[Tuple[int, int]]:
        """(h, w) of the network input (SkipClick); None where the graphs take any size (EMC-Click)."""
        return tuple(self.meta["size"]) if self.meta.get("size") else None

    def encode(self, **inputs: np.ndarray) -> Dict[str, np.ndarray]:
        """The encoder's outputs by name (SkipClick: ``image`` ``[1, 3, h, w]`` float32 in [0, 1]
        -> the image features)."""
        return _run(self.encoder, inputs)

    def decode(self, **inputs: np.ndarray) -> Dict[str, np.ndarray]:
        """The decoder's outputs by name; of ``inputs`` only the graph's are fed (SkipClick: the
        encoder's features, ``points`` ``[1, 2P, 3]`` float32, ``prev_mask`` ``[1, 1, h, w]``
        probabilities -> ``logits`` ``[1, 1, h, w]``)."""
        return _run(self.decoder, inputs)


def _run(session: "ort.InferenceSession", inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    feed = {i.name: inputs[i.name] for i in session.get_inputs()}
    return dict(zip((o.name for o in session.get_outputs()), session.run(None, feed)))


class SkipClickChain:
    """SkipClick's chain over an export (module docstring): an object's state is its previous
    probability map at the image size."""

    def __init__(self, model: OnnxModel) -> None:
        self.model = model
        h, w = model.size
        self.description = f"{model.family} {model.variant} on onnxruntime ({h}x{w})"
        self._features: Optional[Dict[str, np.ndarray]] = None

    def open_image(self, image: np.ndarray) -> np.ndarray:
        """A new image ``[1, 3, H, W]``; the state of a new object."""
        self._image = image
        self._net_image = np.ascontiguousarray(resize_bilinear(image, self.model.size))
        self._features = None
        return np.zeros((1, 1, *image.shape[-2:]), dtype=np.float32)

    def precompute(self) -> None:
        if self._features is None:
            self._features = self.model.encode(image=self._net_image)

    def predict(self, prev: np.ndarray, clicks: Sequence[Click]) -> Tuple[np.ndarray, np.ndarray]:
        """The probability map ``[1, 1, H, W]`` for ``clicks``; it is also the next state."""
        self.precompute()
        (H, W), (h, w) = self._image.shape[-2:], self.model.size
        points = network_points(clicks, lambda y, x: (h * y / H, w * x / W)).astype(np.float32)
        logits = self.model.decode(**self._features, points=points, prev_mask=resize_bilinear(prev, (h, w)))["logits"]
        prob = resize_bilinear(sigmoid(logits), (H, W))
        return prob, prob

    def snapshot(self, prev: np.ndarray) -> Dict[str, Any]:
        return {"prev_prediction": prev.copy()}

    def restore(self, states: Dict[str, Any]) -> np.ndarray:
        """``prev_prediction`` may be any ``[1, 1, H, W]`` probability map (a saved mask)."""
        prev = np.asarray(states["prev_prediction"], dtype=np.float32)
        if prev.shape != (1, 1, *self._image.shape[-2:]):
            raise ValueError(f"prev_prediction of shape {prev.shape} does not fit the image "
                             f"{tuple(self._image.shape[-2:])}")
        return prev.copy()

    def mask_input(self, prev: np.ndarray) -> np.ndarray:
        """The previous probability map at the network size, as logits ``(1, h, w)``."""
        prob = np.clip(resize_bilinear(prev, self.model.size)[0], PROB_EPS, 1 - PROB_EPS)
        return np.log(prob / (1 - prob)).astype(np.float32)

    def state_from_mask(self, logits: np.ndarray) -> np.ndarray:
        """Logits ``(1, h, w)`` -> their sigmoid at the image size, the next click's previous mask."""
        return sigmoid(resize_bilinear(logits[None], tuple(self._image.shape[-2:])))


class EMCChain:
    """EMC-Click's chain over an export (module docstring): an object's state is None before its
    first click, then ``{'normalized', 'feature', 'coarse_logits', 'prev_logits'}`` (the base
    network's outputs and the 1/4-resolution logits the next click reads)."""

    def __init__(self, model: OnnxModel) -> None:
        self.model = model
        self.short_side = int(model.meta["short_side"])
        self.description = f"{model.family} {model.variant} on onnxruntime (short side {self.short_side})"

    def open_image(self, image: np.ndarray) -> None:
        H, W = image.shape[-2:]
        scale = self.short_side / min(H, W)
        # Python's round (half to even), then down to a multiple of 4, as the torch protocol
        self._net_size = tuple(int(round(side * scale)) // SIDE_MULTIPLE * SIDE_MULTIPLE for side in (H, W))
        if min(self._net_size) < SIDE_MULTIPLE:
            raise ValueError(f"an image of {H}x{W} px becomes {self._net_size} at short side {self.short_side}: too "
                             "thin for EMC-Click; pad or crop it")
        self._image = image
        self._net_image = np.ascontiguousarray(resize_bilinear(image, self._net_size))
        return None

    def precompute(self) -> None:
        """Nothing: the base network reads the object's first click."""

    def predict(self, state: Optional[Dict[str, np.ndarray]], clicks: Sequence[Click]
                ) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
        if not clicks:
            raise ValueError("EMC-Click predicts from clicks: add a click before get_prediction")
        (H, W), (h, w) = self._image.shape[-2:], self._net_size

        def to_network(y: float, x: float) -> Tuple[float, float]:
            return y * (h / H), x * (w / W)

        if state is None:
            base = self.model.encode(image=self._net_image, points=network_points(clicks[:1], to_network))
            state = {**base, "prev_logits": base["coarse_logits"]}
        out = self.model.decode(**state, points=network_points(clicks, to_network))
        return resize_bilinear(sigmoid(out["logits"]), (H, W)), {**state, "prev_logits": out["logits_lr"]}

    def snapshot(self, state: Optional[Dict[str, np.ndarray]]) -> Dict[str, Any]:
        return {"emc_state": None if state is None else dict(state)}

    def restore(self, states: Dict[str, Any]) -> Optional[Dict[str, np.ndarray]]:
        """``{'emc_state': None}`` starts a new object."""
        state = states.get("emc_state")
        if state is None:
            return None
        if not isinstance(state, dict) or state["normalized"].shape[-2:] != self._net_size:
            raise ValueError("states['emc_state'] is not a state of this image (get_states of this predictor)")
        return dict(state)

    def mask_input(self, state: Optional[Dict[str, np.ndarray]]) -> np.ndarray:
        """The 1/4-resolution logits the next click reads ``(1, h/4, w/4)``; zeros before the first click."""
        if state is None:
            h, w = self._net_size
            return np.zeros((1, h // SIDE_MULTIPLE, w // SIDE_MULTIPLE), dtype=np.float32)
        return state["prev_logits"][0].copy()

    def state_from_mask(self, logits: np.ndarray) -> None:
        raise ValueError("EMC-Click continues an object only from its own state: pass back as mask_input the logits "
                         "that predict returned for this image, or start without it")


CHAINS = {"SkipClick": SkipClickChain, "EMCClick": EMCChain}


class OnnxClickPredictor:
    """One image / object's predictor over an export (module docstring), with the evaluation
    tools' interface: ``set_input_image``, ``precompute``, ``get_prediction(clicker)``,
    ``get_states`` / ``set_states``, ``get_mask_input`` / ``set_mask_input``.

    ``model``: an ``OnnxModel`` or an export folder.
    """

    def __init__(self, model: Union[OnnxModel, PathLike]) -> None:
        self.model = model if isinstance(model, OnnxModel) else OnnxModel(model)
        self._chain = CHAINS[self.model.family](self.model)
        self.description: str = self._chain.description
        self._image: Optional[np.ndarray] = None   # [1, 3, H, W] float32 in [0, 1]
        self._state: Any = None

    def set_input_image(self, image: np.ndarray) -> None:
        """A new image: H x W x 3 RGB, uint8 or float in [0, 1]. Starts a new object."""
        image = check_rgb(image)
        image = image.astype(np.float32) / 255 if image.dtype == np.uint8 else image.astype(np.float32)
        self._image = np.ascontiguousarray(image.transpose(2, 0, 1)[None])
        self._state = self._chain.open_image(self._image)

    def _require_image(self, call: str) -> None:
        if self._image is None:
            raise RuntimeError(f"call set_input_image(image) before {call}")

    def precompute(self) -> None:
        """Run the once-per-image work now (SkipClick's encoder), so that a click runs only the decoder."""
        self._require_image("precompute")
        self._chain.precompute()

    def get_prediction(self, clicker: Clicker) -> np.ndarray:
        """Probability map (H x W float32) for all clicks of ``clicker`` so far."""
        self._require_image("get_prediction")
        prob, self._state = self._chain.predict(self._state, clicker.get_clicks())
        return prob[0, 0].copy()

    def get_states(self) -> Dict[str, Any]:
        """The object's state, a snapshot (SkipClick: ``{'prev_prediction': [1, 1, H, W]}``,
        EMC-Click: ``{'emc_state': ...}``); the image's encoding is not part of it."""
        self._require_image("get_states")
        return self._chain.snapshot(self._state)

    def set_states(self, states: Dict[str, Any]) -> None:
        """Restore a ``get_states`` of this image."""
        self._require_image("set_states")
        self._state = self._chain.restore(states)

    def get_mask_input(self) -> np.ndarray:
        """The object's current mask as logits ``(1, h, w)`` float32 at the network's resolution."""
        self._require_image("get_mask_input")
        return self._chain.mask_input(self._state)

    def set_mask_input(self, logits: np.ndarray) -> None:
        """Continue the object from a mask given as logits ``(1, h, w)`` or ``(h, w)`` (SkipClick:
        their sigmoid, resized to the image, is the next click's previous mask; EMC-Click refuses)."""
        self._require_image("set_mask_input")
        logits = np.asarray(logits, dtype=np.float32)
        if logits.ndim == 2:
            logits = logits[None]
        if logits.ndim != 3 or logits.shape[0] != 1:
            raise ValueError(f"mask_input must be (1, h, w) or (h, w) logits, got shape {logits.shape}")
        self._state = self._chain.state_from_mask(logits)


__all__ = ["CHAINS", "FORMAT", "EMCChain", "OnnxClickPredictor", "OnnxModel", "SkipClickChain", "network_points",
           "read_meta", "resize_bilinear"]
