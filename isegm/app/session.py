"""Per-user annotation state: for each image a session works on, its objects, their clicks and
undo history. Sessions never share state; what they share (the image cache, the store) is
read-only for them or locked.

Clicks are kept in full-image pixels ``(y, x)``; the model sees them mapped to the working
image (``PreparedImage.to_work``). Each click stores the predictor state after it and the
probability map (working size), so undo needs no recomputation. Both are kept compactly
(``Step``) and only the last ``undo_steps`` clicks of an image can be undone: the older ones are
folded into their object's starting point, so a long session's memory stays bounded.
"""
from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from ..inference.clicker import Click
from ..inference.evaluation import PRED_THRESHOLD
from ..utils.rle import encode_rle
from .backend import Backend, PreparedImage, mask_state
from .store import SavedObject


DEFAULT_UNDO_STEPS = 50


class NotFound(KeyError):
    """An unknown session or object id."""


class SessionLimit(RuntimeError):
    """Every session slot holds unsaved work (or is busy): a new session would lose some."""


def click_dicts(clicks: Sequence[Click]) -> List[Dict[str, Any]]:
    """Clicks as the API and the JSON file write them: ``{"x", "y", "positive"}`` (full-image pixels)."""
    return [{"x": c.coords[1], "y": c.coords[0], "positive": c.is_positive} for c in clicks]


def _half(array: np.ndarray) -> np.ndarray:
    """``array`` in float16, through torch: the same rounding as numpy's ``astype``, about 15x
    faster (numpy converts element by element; 0.15 vs 2.3 ms for a 1024 x 768 map), on every click."""
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(torch.float16).numpy()


def _compact(value: Any, prob: np.ndarray, small_prob: np.ndarray) -> Any:
    """A floating map of a predictor state in float16 (half the memory): ``small_prob``, the
    float16 copy of the prediction ``prob``, when the map holds the same values (SkipClick's
    previous map is its prediction: then nothing is converted or copied)."""
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        if value.device.type == "cpu" and value.numel() == prob.size and np.array_equal(
                value.detach().numpy().ravel(), prob.ravel()):
            return torch.from_numpy(small_prob).view(value.shape)
        return value.detach().to(torch.float16)
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        if value.size == prob.size and np.array_equal(value.ravel(), prob.ravel()):
            return small_prob.reshape(value.shape)
        return _half(value)
    return value


def _expand(value: Any, dtype: Any) -> Any:
    if isinstance(value, np.ndarray) and value.dtype == np.float16:
        return value.astype(dtype)
    if isinstance(value, torch.Tensor) and value.dtype == torch.float16:
        return value.to(dtype)
    return value


class Step:
    """The result of one click, kept compactly: the mask (working size, thresholded from the
    exact probabilities, one bit a pixel), the probability map in float16 (to upsample the mask to
    the full size), and the predictor's state after it with the floating maps it holds directly in
    float16 too (shared with the probability map when equal). ``state()`` gives the state back at
    its original precision. The model always continues from that restored state, also right after
    the click, so undoing to a step and clicking again gives exactly the result clicking gave
    before."""

    def __init__(self, state: Dict[str, Any], prob: np.ndarray, seq: int = 0) -> None:
        self.prob = _half(prob)
        # float16 moves probabilities by up to 1.2e-4 near the threshold: the mask is taken before
        self._mask_bits = np.packbits(np.asarray(prob) > PRED_THRESHOLD)
        self.seq = seq   # the image's click counter: the oldest steps are folded first
        self._dtypes = {k: v.dtype for k, v in state.items() if isinstance(v, (np.ndarray, torch.Tensor))}
        self._state = {k: _compact(v, prob, self.prob) for k, v in state.items()}

    def state(self) -> Dict[str, Any]:
        return {k: _expand(v, self._dtypes.get(k)) for k, v in self._state.items()}

    @property
    def mask(self) -> np.ndarray:
        """The click's mask at the working size (bool)."""
        return np.unpackbits(self._mask_bits, count=self.prob.size).reshape(self.prob.shape).astype(bool)


@dataclass
class AnnotatedObject:
    """One object of an image: its clicks, and the results of the clicks made since the image was opened.

    A loaded object starts from its saved mask (``loaded_mask``, full size) and saved clicks;
    undo goes back to that start, not beyond. ``start_state`` is the predictor state before the
    first new click (with the saved mask as the previous mask where the predictor takes one).
    ``floor`` is the result of the clicks that can no longer be undone (folded ``steps``).
    ``mask`` is the current bool mask at the working size (``refresh`` keeps it in step).
    """

    id: int
    category: str
    start_state: Dict[str, Any]
    work_size: Tuple[int, int]
    clicks: List[Click] = field(default_factory=list)
    steps: List[Step] = field(default_factory=list)
    loaded_mask: Optional[np.ndarray] = None
    floor: Optional[Step] = None
    mask: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.refresh()

    def last(self) -> Optional[Step]:
        """The step the object shows: its last click's, else the folded one's."""
        return self.steps[-1] if self.steps else self.floor

    def state(self) -> Dict[str, Any]:
        """The predictor state the next click starts from."""
        last = self.last()
        return last.state() if last is not None else self.start_state

    def refresh(self) -> None:
        """Recompute ``mask`` after a change of ``steps``, ``floor`` or ``loaded_mask``."""
        last = self.last()
        if last is not None:
            self.mask = last.mask
        elif self.loaded_mask is not None:
            resized = cv2.resize(self.loaded_mask.astype(np.uint8), self.work_size[::-1], interpolation=cv2.INTER_AREA)
            self.mask = resized > 0
        else:
            self.mask = np.zeros(self.work_size, dtype=bool)

    def full_mask(self, full_size: Tuple[int, int]) -> Optional[np.ndarray]:
        """bool mask at the image's full size (the probabilities upsampled, then thresholded), or
        None when the object has no mask."""
        last = self.last()
        if last is None:
            return self.loaded_mask
        if last.prob.shape == tuple(full_size):
            return last.mask
        prob = cv2.resize(last.prob.astype(np.float32), full_size[::-1], interpolation=cv2.INTER_LINEAR)
        return prob > PRED_THRESHOLD


class ImageWork:
    """One session's annotation of one image. ``version``: the stored annotation's version it
    started from (``AnnotationStore.version``), which saving checks; ``undo_steps``: how many of
    the image's last clicks (over all its objects) can be undone."""

    def __init__(self, entry: PreparedImage, saved: Sequence[SavedObject], default_category: str,
                 version: str = "", undo_steps: int = DEFAULT_UNDO_STEPS) -> None:
        if undo_steps < 0:
            raise ValueError(f"undo_steps must be 0 or more, got {undo_steps}")
        self.name = entry.name
        self.version = version
        self.undo_steps = undo_steps
        self._clicks_made = 0
        self.full_size = entry.full_size
        self.work_size = entry.work_size
        self._initial_state = entry.initial_state
        self.default_category = default_category
        self.objects: List[AnnotatedObject] = []
        self.current: Optional[int] = None
        self.dirty = False
        self._next_id = 1
        for obj in saved:
            clicks = [Click(c["positive"], (c["y"], c["x"]), i) for i, c in enumerate(obj.clicks)]
            self._add(obj.category, mask_state(entry, obj.mask), mask=obj.mask, clicks=clicks)
        self.current = self._add(default_category).id

    def _add(self, category: str, start_state: Optional[Dict[str, Any]] = None, mask: Optional[np.ndarray] = None,
             clicks: Sequence[Click] = ()) -> AnnotatedObject:
        obj = AnnotatedObject(self._next_id, category, start_state or self._initial_state, self.work_size,
                              list(clicks), loaded_mask=mask)
        self._next_id += 1
        self.objects.append(obj)
        return obj

    def object(self, object_id: Optional[int] = None) -> AnnotatedObject:
        """The object ``object_id`` (default: the current one)."""
        wanted = self.current if object_id is None else object_id
        for obj in self.objects:
            if obj.id == wanted:
                return obj
        raise NotFound(f"image {self.name!r} has no object {wanted!r}")

    def click(self, entry: PreparedImage, backend: Backend, y: float, x: float, positive: bool) -> float:
        """Add a click (full-image pixels) to the current object; returns the model's milliseconds."""
        obj = self.object()
        clicks = obj.clicks + [Click(positive, (y, x), len(obj.clicks))]
        start = time.perf_counter()
        prob, state = backend.predict(entry, clicks, obj.state())
        model_ms = (time.perf_counter() - start) * 1000
        obj.clicks = clicks
        self._clicks_made += 1
        obj.steps.append(Step(state, prob, self._clicks_made))
        self._fold()
        obj.refresh()
        self.dirty = True
        return model_ms

    def _fold(self) -> None:
        """Keep at most ``undo_steps`` undoable clicks: the oldest become their object's floor."""
        while sum(len(o.steps) for o in self.objects) > self.undo_steps:
            oldest = min((o for o in self.objects if o.steps), key=lambda o: o.steps[0].seq)
            oldest.floor = oldest.steps.pop(0)

    def undo(self) -> bool:
        """Remove the current object's last click made since the image was opened; False if there is none."""
        obj = self.object()
        if not obj.steps:
            return False
        obj.steps.pop()
        obj.clicks.pop()
        obj.refresh()
        self.dirty = True
        return True

    def reset(self) -> None:
        """Clear the current object: no clicks, no mask (a loaded mask included)."""
        obj = self.object()
        if obj.clicks or obj.loaded_mask is not None:
            self.dirty = True
        obj.clicks, obj.steps, obj.loaded_mask, obj.floor = [], [], None, None
        obj.start_state = self._initial_state
        obj.refresh()

    def finish(self) -> None:
        """Finish the current object and start a new one (nothing happens while it is empty)."""
        if self.object().mask.any():
            self.current = self._add(self.default_category).id

    def select(self, object_id: int) -> None:
        self.current = self.object(object_id).id

    def delete(self, object_id: int) -> None:
        """Delete an object; deleting the current one makes the last remaining (or a new) one current."""
        self.objects.remove(self.object(object_id))
        self.dirty = True
        if self.current == object_id:
            self.current = self.objects[-1].id if self.objects else self._add(self.default_category).id

    def set_category(self, object_id: int, category: str) -> None:
        self.object(object_id).category = category
        self.dirty = True

    def to_save(self) -> List[SavedObject]:
        """The objects with a mask, full size, in list order."""
        saved = []
        for obj in self.objects:
            mask = obj.full_mask(self.full_size)
            if mask is not None and mask.any():
                saved.append(SavedObject(mask, obj.category, click_dicts(obj.clicks)))
        return saved

    def to_json(self, masks: Optional[Sequence[int]] = None) -> Dict[str, Any]:
        """The page's view: every object with its clicks, area and, for the ids in ``masks``
        (default all), its working-size mask as a COCO compressed RLE."""
        objects = []
        for obj in self.objects:
            item = {"id": obj.id, "category": obj.category, "area": int(np.count_nonzero(obj.mask)),
                    "clicks": click_dicts(obj.clicks),
                    "undoable": len(obj.steps)}
            if masks is None or obj.id in masks:
                item["mask"] = encode_rle(obj.mask)
            objects.append(item)
        return {"objects": objects, "current": self.current, "dirty": self.dirty, "version": self.version}


class Session:
    """One user's (one browser tab's) state: an ``ImageWork`` per image with unsaved changes,
    and the image being worked on. ``lock`` serialises the session's requests."""

    def __init__(self, session_id: str) -> None:
        self.id = session_id
        self.lock = threading.Lock()
        self.works: Dict[str, ImageWork] = {}
        self.image: Optional[str] = None

    def unsaved(self) -> List[str]:
        return [name for name, work in self.works.items() if work.dirty]


class Sessions:
    """The live sessions, at most ``capacity``. A new session beyond it replaces the least
    recently used one that is idle (no request running) and has no unsaved work; when every
    session has unsaved work, ``create`` raises ``SessionLimit`` and none is lost."""

    def __init__(self, capacity: int = 64) -> None:
        if capacity < 1:
            raise ValueError(f"the session limit must be at least 1, got {capacity}")
        self.capacity = capacity
        self._sessions: "OrderedDict[str, Session]" = OrderedDict()
        self._lock = threading.Lock()

    def create(self) -> Session:
        session = Session(secrets.token_urlsafe(16))
        with self._lock:
            if len(self._sessions) >= self.capacity:
                del self._sessions[self._evictable()]
            self._sessions[session.id] = session
        return session

    def _evictable(self) -> str:
        """The least recently used session that is idle and has nothing unsaved (lock held)."""
        for session_id, session in self._sessions.items():
            if not session.lock.acquire(blocking=False):
                continue   # a request of it is running
            try:
                if not session.unsaved():
                    return session_id
            finally:
                session.lock.release()
        raise SessionLimit(f"all {self.capacity} sessions have unsaved work or are busy, and the app never drops "
                           "unsaved work: save in an open page (or close a page after saving), or restart the app "
                           "with a larger --max-sessions")

    def get(self, session_id: Any) -> Session:
        with self._lock:
            session = self._sessions.get(session_id) if isinstance(session_id, str) else None
            if session is None:
                raise NotFound(f"unknown session {session_id!r} (the server restarted or dropped it); reload the page")
            self._sessions.move_to_end(session_id)
            return session
