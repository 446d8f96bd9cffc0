"""What the annotation app needs from a model, and the per-image cache of its once-per-image work.

The app talks to a model only through a *predictor* of the evaluation chain
(``isegm.inference.predictor``): ``set_input_image(image)`` once per image, then
``get_prediction(clicker)`` per click, ``get_states()`` / ``set_states(states)`` to undo and to
switch between objects of one image, and optionally ``precompute()`` to do the once-per-image
work before the first click. A ``Backend`` is a factory of such predictors plus how to run
them; any model family with a predictor of this interface is served without app changes
(``Backend(name, make_predictor)``).

The image cache keeps, per image, one predictor with that image set: for SkipClick the result
of ``encode_image``, so that a click runs only ``decode`` (EMC-Click's base network reads the
first click, so it has nothing to keep before it). It is a bounded LRU shared by all
sessions; the per-object state (previous mask) lives in the sessions and is swapped in for each
click, under the image's lock.
"""
from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Dict, List, Optional, Protocol, Sequence, Tuple

import cv2
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..inference.baselines import get_baseline
from ..inference.clicker import Click, Clicker
from ..inference.interactive import describe, interactive_predictor
from ..model.families import family_of
from ..utils.device import precision, select_dtype

# Longest side of the image the model and the page work on; masks are upsampled to full size.
DEFAULT_MAX_SIDE = 1024
# JPEG quality of the working image sent to the page.
JPEG_QUALITY = 90
# Largest image (pixels) the app decodes: 8K frames (7680 x 4320, 33 MP) and more. Checked from
# the file's header, so a small file that declares a huge image is refused before any decoding.
DEFAULT_MAX_PIXELS = 40_000_000
# Above this PIL refuses to read even the header (its decompression-bomb guard).
PIXELS_PIL_READS = 2 * Image.MAX_IMAGE_PIXELS


class Predictor(Protocol):
    """The predictor interface of the evaluation chain that the app drives."""

    def set_input_image(self, image: np.ndarray) -> None: ...

    def get_prediction(self, clicker: Clicker) -> np.ndarray: ...

    def get_states(self) -> Dict[str, Any]: ...

    def set_states(self, states: Dict[str, Any]) -> None: ...


@dataclass
class Backend:
    """A model family as the app serves it.

    ``make_predictor``: a fresh predictor (one per cached image). ``precision``: a context
    manager entered around the per-image and per-click work (autocast for bf16). ``notice``: a
    line the page shows in its banner (model-free mode, slow precision).
    """

    name: str
    make_predictor: Callable[[], Predictor]
    model_free: bool = False
    precision: Callable[[], ContextManager] = contextlib.nullcontext
    notice: str = ""

    def predict(self, image: "PreparedImage", clicks: Sequence[Click], state: Dict[str, Any]
                ) -> Tuple[np.ndarray, Dict[str, Any]]:
        """The probability map of ``image`` (working size, float32) for ``clicks`` (full-image
        coordinates) starting from the object's ``state``, and the state after it."""
        clicker = Clicker()
        for click in clicks:
            clicker.add_click(click.copy(coords=image.to_work(*click.coords)))
        with image.lock, self.precision():
            image.predictor.set_states(state)
            prob = image.predictor.get_prediction(clicker)
            return np.asarray(prob, dtype=np.float32), image.predictor.get_states()


def model_backend(model: torch.nn.Module, device: torch.device, size: Optional[int] = None, dtype: str = "fp32",
                  flip: bool = False, name: Optional[str] = None) -> Backend:
    """A model served through its interactive predictor (``interactive_predictor``: the family's
    evaluation chain on the whole working image), flip TTA only with ``flip`` (it doubles the
    per-click work). ``size``: see ``interactive_predictor``."""
    context, notice = precision(device, select_dtype(dtype))

    def make_predictor() -> Predictor:
        return interactive_predictor(model, size, flip, device=device)

    make_predictor()   # fail now on a size or model the family's predictor refuses
    family = family_of(model)
    label = name or (family.name if family is not None else type(model).__name__)
    return Backend(describe(label, size, dtype, flip, device), make_predictor, precision=context, notice=notice)


def onnx_backend(folder: str) -> Backend:
    """A folder written by ``skipclick-export``, run by onnxruntime on the CPU."""
    from ..onnx.engine import OnnxClickPredictor, OnnxModel
    model = OnnxModel(folder)
    make_predictor = functools.partial(OnnxClickPredictor, model)
    return Backend(make_predictor().description, make_predictor)


def baseline_backend(name: str = "grabcut") -> Backend:
    """A model-free predictor of ``isegm.inference.baselines`` (no checkpoint needed)."""
    get_baseline(name)   # fail now on an unknown name or a missing optional dependency
    return Backend(f"model-free {name} baseline", lambda: get_baseline(name), model_free=True,
                   notice=f"No checkpoint given: masks come from the model-free {name} baseline, not a model. "
                          "Restart with --checkpoint PATH to annotate with a model (SkipClick or EMC-Click).")


class ImageError(ValueError):
    """An image of the folder that cannot be decoded, or is too large to."""


def header_size(path: Path) -> Optional[Tuple[int, int]]:
    """(width, height) from the image file's header, without decoding its pixels; None when it
    declares more than ``PIXELS_PIL_READS``; ``ImageError`` when it is no image PIL knows."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                return image.size
    except Image.DecompressionBombError:
        return None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"{str(path)!r} is not a readable image ({type(err).__name__}: {err})") from None


def check_pixels(path: Path, max_pixels: int) -> None:
    """``ImageError`` when the header of ``path`` declares more than ``max_pixels`` pixels."""
    size = header_size(path)
    if size is None or size[0] * size[1] > max_pixels:
        what = (f"{size[0]}x{size[1]} px ({size[0] * size[1] / 1e6:.0f} MP)" if size is not None else
                f"larger than {PIXELS_PIL_READS / 1e6:.0f} MP")
        raise ImageError(f"{str(path)!r} is {what}, more than --max-pixels {max_pixels}: downscale it, or raise "
                         "--max-pixels if the machine has the memory to decode it")


def scan_images(folder: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Tuple[List[str], List[Tuple[str, str]]]:
    """The image files directly in ``folder`` (sorted names) and the skipped entries with the
    reason (not an image, or larger than ``max_pixels``). Only headers are read here (fast for
    large folders); a file whose header is fine but whose pixels are not fails when it is opened."""
    names, skipped = [], []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if not path.is_file():
            skipped.append((path.name, "not a file (sub-folders are not scanned)"))
            continue
        try:
            check_pixels(path, max_pixels)
            with Image.open(path) as image:
                image.verify()
            names.append(path.name)
        except ImageError as err:
            skipped.append((path.name, str(err)))
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            skipped.append((path.name, f"not a readable image ({type(err).__name__}: {err})"))
    return names, skipped


def working_size(height: int, width: int, max_side: int) -> Tuple[int, int]:
    """(h, w) with the longest side at most ``max_side``, aspect kept."""
    scale = min(1.0, max_side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def read_rgb(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """uint8 H x W x 3 RGB (EXIF orientation applied, alpha dropped, 16 bit reduced to 8); the
    size is checked from the header first (``check_pixels``)."""
    check_pixels(path, max_pixels)
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ImageError(f"cannot decode image {str(path)!r}: the file is damaged or not an image "
                         "OpenCV reads; convert it to PNG or JPEG")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


@dataclass
class PreparedImage:
    """One image's once-per-image work: its working copy (and JPEG for the page) and a
    predictor with it set. ``lock`` serialises the predictor's use (one click at a time)."""

    name: str
    full_size: Tuple[int, int] = (0, 0)
    work_size: Tuple[int, int] = (0, 0)
    jpeg: bytes = b""
    predictor: Any = None
    initial_state: Dict[str, Any] = field(default_factory=dict)
    encode_ms: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def to_work(self, y: float, x: float) -> Tuple[float, float]:
        """Full-image pixel (y, x) -> the working image's pixel (pixel centres align)."""
        (height, width), (h, w) = self.full_size, self.work_size
        return (min(max((y + 0.5) * h / height - 0.5, 0.0), h - 1.0),
                min(max((x + 0.5) * w / width - 0.5, 0.0), w - 1.0))


class ImageCache:
    """LRU of ``PreparedImage`` (at most ``capacity``), shared by all sessions; an image is
    prepared once even when several sessions open it at the same time. Images of more than
    ``max_pixels`` are refused before decoding."""

    def __init__(self, folder: Path, backend: Backend, capacity: int = 8, max_side: int = DEFAULT_MAX_SIDE,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        if capacity < 1:
            raise ValueError(f"cache capacity must be at least 1, got {capacity}")
        self.folder = folder
        self.backend = backend
        self.capacity = capacity
        self.max_side = max_side
        self.max_pixels = max_pixels
        self.prepared = 0   # images prepared so far (an evicted image that returns counts again)
        self._entries: "OrderedDict[str, PreparedImage]" = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: str) -> PreparedImage:
        """The prepared image ``name`` (a file name of the folder), prepared now if needed."""
        with self._lock:
            entry = self._entries.get(name)
            if entry is None:
                entry = self._entries[name] = PreparedImage(name)
                while len(self._entries) > self.capacity:
                    self._entries.popitem(last=False)
            else:
                self._entries.move_to_end(name)
        with entry.lock:
            if entry.predictor is None:
                try:
                    self._prepare(entry)
                except Exception:
                    with self._lock:
                        if self._entries.get(name) is entry:
                            del self._entries[name]
                    raise
        return entry

    def cached(self) -> List[str]:
        """Names in the cache, least recently used first."""
        with self._lock:
            return list(self._entries)

    def _prepare(self, entry: PreparedImage) -> None:
        image = read_rgb(self.folder / entry.name, self.max_pixels)
        entry.full_size = image.shape[:2]
        entry.work_size = working_size(*entry.full_size, self.max_side)
        if entry.work_size != entry.full_size:
            image = cv2.resize(image, entry.work_size[::-1], interpolation=cv2.INTER_AREA)
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise ImageError(f"cannot encode {entry.name!r} for the page")
        entry.jpeg = jpeg.tobytes()
        predictor = self.backend.make_predictor()
        start = time.perf_counter()
        with self.backend.precision():
            predictor.set_input_image(image)
            precompute = getattr(predictor, "precompute", None)
            if precompute is not None:
                precompute()
        entry.encode_ms = (time.perf_counter() - start) * 1000
        entry.initial_state = predictor.get_states()
        entry.predictor = predictor
        self.prepared += 1


def mask_state(entry: PreparedImage, mask: np.ndarray) -> Dict[str, Any]:
    """The initial state of ``entry`` with a saved full-size ``mask`` as the previous mask, so
    that the model refines it (predictors whose state has a ``prev_prediction`` map, as the
    family's does); other predictors start from their initial state."""
    state = dict(entry.initial_state)
    prev = state.get("prev_prediction")
    if isinstance(prev, (torch.Tensor, np.ndarray)):
        work = cv2.resize(mask.astype(np.float32), entry.work_size[::-1], interpolation=cv2.INTER_AREA)[None, None]
        if isinstance(prev, torch.Tensor):   # the PyTorch chain's state; an ONNX export's is numpy
            work = torch.from_numpy(work).to(prev.device, prev.dtype)
        state["prev_prediction"] = work
    return state


def load_backend(checkpoint: Optional[str], device: torch.device, size: Optional[int] = None, dtype: str = "fp32",
                 flip: bool = False, baseline: str = "grabcut") -> Backend:
    """The backend of the command line: any checkpoint ``isegm.model.load_checkpoint`` reads
    (SkipClick: ours, the authors' release or a backbone file; the authors' EMC-Click files), or
    without one the model-free ``baseline``; a folder is an ONNX export (``onnx_backend``)."""
    if checkpoint is None:
        return baseline_backend(baseline)
    if os.path.isdir(checkpoint):
        if (size, dtype, flip) != (None, "fp32", False):
            raise ValueError(f"{checkpoint!r} is an ONNX export: it runs in fp32 at the size it was exported with, "
                             "without flip; drop --size, --dtype and --flip (or pass the checkpoint file)")
        return onnx_backend(checkpoint)
    from ..model import load_checkpoint
    model = load_checkpoint(checkpoint, device=device)
    return model_backend(model, device, size, dtype, flip, name=f"{family_of(model).name} {Path(checkpoint).name}")
