"""Per-user annotation state: for each image a session works on, its objects, their clicks and
undo history. Sessions never share state; what they share (the image cache, the store) is
read-only for them or locked.

Clicks are kept in full-image pixels ``(y, x)``; the model sees them mapped to the working
image (``PreparedImage.to_work``). Each click stores the predictor state after it and the
probability map (working size), so undo needs no recomputation.
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

from ..inference.clicker import Click
from ..inference.evaluation import PRED_THRESHOLD
from ..utils.rle import encode_rle
from .backend import Backend, PreparedImage, mask_state
from .store import SavedObject


class NotFound(KeyError):
    """An unknown session or object id."""


def click_dicts(clicks: Sequence[Click]) -> List[Dict[str, Any]]:
    """Clicks as the API and the JSON file write them: ``{"x", "y", "positive"}`` (full-image pixels)."""
    return [{"x": c.coords[1], "y": c.coords[0], "positive": c.is_positive} for c in clicks]


@dataclass
class Step:
    """The result of one click: the predictor's state after it and the probability map
    (working size; float16 halves the memory of a long undo history)."""

    state: Dict[str, Any]
    prob: np.ndarray


@dataclass
class AnnotatedObject:
    """One object of an image: its clicks, and the results of the clicks made since the image was opened.

    A loaded object starts from its saved mask (``loaded_mask``, full size) and saved clicks;
    undo goes back to that start, not beyond. ``start_state`` is the predictor state before the
    first new click (with the saved mask as the previous mask where the predictor takes one).
    ``mask`` is the current bool mask at the working size (``refresh`` keeps it in step).
    """

    id: int
    category: str
    start_state: Dict[str, Any]
    work_size: Tuple[int, int]
    clicks: List[Click] = field(default_factory=list)
    steps: List[Step] = field(default_factory=list)
    loaded_mask: Optional[np.ndarray] = None
    mask: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.refresh()

    def refresh(self) -> None:
        """Recompute ``mask`` after a change of ``steps`` or ``loaded_mask``."""
        if self.steps:
            self.mask = self.steps[-1].prob > PRED_THRESHOLD
        elif self.loaded_mask is not None:
            resized = cv2.resize(self.loaded_mask.astype(np.uint8), self.work_size[::-1], interpolation=cv2.INTER_AREA)
            self.mask = resized > 0
        else:
            self.mask = np.zeros(self.work_size, dtype=bool)

    def full_mask(self, full_size: Tuple[int, int]) -> Optional[np.ndarray]:
        """bool mask at the image's full size (the probabilities upsampled, then thresholded), or
        None when the object has no mask."""
        if self.steps:
            prob = self.steps[-1].prob.astype(np.float32)
            if prob.shape != full_size:
                prob = cv2.resize(prob, full_size[::-1], interpolation=cv2.INTER_LINEAR)
            return prob > PRED_THRESHOLD
        return self.loaded_mask


class ImageWork:
    """One session's annotation of one image."""

    def __init__(self, entry: PreparedImage, saved: Sequence[SavedObject], default_category: str) -> None:
        self.name = entry.name
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
        state = obj.steps[-1].state if obj.steps else obj.start_state
        start = time.perf_counter()
        prob, state = backend.predict(entry, clicks, state)
        model_ms = (time.perf_counter() - start) * 1000
        obj.clicks = clicks
        obj.steps.append(Step(state, prob.astype(np.float16)))
        obj.refresh()
        self.dirty = True
        return model_ms

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
        obj.clicks, obj.steps, obj.loaded_mask = [], [], None
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
        return {"objects": objects, "current": self.current, "dirty": self.dirty}


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
    """The live sessions, at most ``capacity``; beyond it the least recently used one is dropped
    (with its unsaved changes: size it above the number of annotators)."""

    def __init__(self, capacity: int = 64) -> None:
        self.capacity = capacity
        self._sessions: "OrderedDict[str, Session]" = OrderedDict()
        self._lock = threading.Lock()

    def create(self) -> Session:
        session = Session(secrets.token_urlsafe(16))
        with self._lock:
            self._sessions[session.id] = session
            while len(self._sessions) > self.capacity:
                self._sessions.popitem(last=False)
        return session

    def get(self, session_id: Any) -> Session:
        with self._lock:
            session = self._sessions.get(session_id) if isinstance(session_id, str) else None
            if session is None:
                raise NotFound(f"unknown session {session_id!r} (the server restarted or dropped it); reload the page")
            self._sessions.move_to_end(session_id)
            return session
