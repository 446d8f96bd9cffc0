"""One prediction engine for every model family: from clicks to probability maps.

The engine owns what every family needs around its network: the per-object state and its undo
snapshots, predictors that share a network (``spawn``), several objects in one network call
(``get_predictions``: objects grouped by network input, their image features stacked, the stack
kept while the same objects are in flight), and a second pass for the objects whose first one
asks for it. A family supplies a ``PredictionProtocol``: what a new image and a new object are,
and per click ``prepare`` (one object's network input), ``run`` (one network call for a group)
and ``finish`` (the network output -> the object's probability map and next state).

A predictor is used as the family's evaluation tools expect::

    predictor.set_input_image(image)            # H x W x 3 RGB
    prob = predictor.get_prediction(clicker)    # after each click; H x W float32 in [0, 1]
    states = predictor.get_states()             # undo / switch objects: set_states(states)
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Dict, Generic, Hashable, List, Optional, Sequence, Tuple, TypeVar, Union

import numpy as np
import torch
from torch import Tensor

from ..utils.images import check_rgb
from .clicker import Click, Clicker, points_array

Work = TypeVar("Work")     # a family's per-image record
State = TypeVar("State")   # a family's per-object state


def image_tensor(image: np.ndarray, device: Union[str, torch.device] = "cpu") -> Tensor:
    """H x W x 3 RGB (uint8, or float in [0, 1]) -> ``[1, 3, H, W]`` float32 in [0, 1] on ``device``
    (uint8 / 255, as the family's ``ToTensor``)."""
    image = check_rgb(image)
    if image.dtype == np.uint8:
        tensor = torch.from_numpy(image).permute(2, 0, 1).float().div(255)
    else:
        tensor = torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1)
    return tensor[None].contiguous().to(device)


def points_from_clicks(clicks_lists: Sequence[Sequence[Click]], clicks_limit: Optional[int] = None) -> Tensor:
    """``isegm.inference.clicker.points_array`` as a float64 tensor ``[B, 2P, 3]``."""
    return torch.from_numpy(points_array(clicks_lists, clicks_limit))


def stack_features(features: Sequence[Any]) -> Any:
    """Image features of several images as one batch: tensors are concatenated, tuples field by
    field, other types stack themselves with a ``cat`` class method (SkipClick's
    ``ImageFeatures.cat``)."""
    if len(features) == 1:
        return features[0]
    if isinstance(features[0], Tensor):
        return torch.cat(list(features))
    if isinstance(features[0], tuple):
        return tuple(stack_features(field) for field in zip(*features))
    if not callable(getattr(type(features[0]), "cat", None)):
        raise TypeError(f"{type(features[0]).__name__} has no cat(features) class method: features of several "
                        "images cannot be batched; evaluate with batch size 1")
    return type(features[0]).cat(features)


class FeatureStack:
    """The image features of the objects in flight as one batch, stacked again only when the
    set of objects changed (stacking copies every image's features). Shared by a predictor and
    its spawns."""

    def __init__(self) -> None:
        self._members: Tuple[Any, ...] = ()
        self._stacked: Any = None

    def __call__(self, features: Sequence[Any]) -> Any:
        if len(features) == 1:
            return features[0]
        if len(features) != len(self._members) or not all(map(_same, features, self._members)):
            self._members, self._stacked = tuple(features), stack_features(features)
        return self._stacked


def _same(a: Any, b: Any) -> bool:
    """The same features: the same object, or tuples of the same objects."""
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(x is y for x, y in zip(a, b))
    return a is b


@dataclass
class Step:
    """One object's network input for one click (``data``, the family's). Steps of equal
    ``group`` run in one network call."""

    group: Hashable
    data: Any


@dataclass
class Outcome:
    """What one object's click gave: ``prob`` ``[1, 1, H, W]`` at the image size, the object's
    ``state`` after the click, and ``again``: predict this click once more, from the state before
    it (the zoom-in's second pass on a small object)."""

    prob: Tensor
    state: Any
    again: bool = False


class PredictionProtocol(ABC, Generic[Work, State]):
    """A model family's evaluation protocol, as the engine drives it.

    ``net``: the network; ``device``: where images go; ``with_flip``, ``clicks_limit``: the
    settings every predictor of a batch shares.
    """

    def __init__(self, net: Any, with_flip: bool, clicks_limit: Optional[int],
                 device: Union[str, torch.device]) -> None:
        self.net = net
        self.with_flip = with_flip
        self.clicks_limit = clicks_limit
        self.device = torch.device(device)

    @abstractmethod
    def open_image(self, image: Tensor) -> Work:
        """The per-image record of ``image`` ``[1, 3, H, W]`` (network input, cached features)."""

    @abstractmethod
    def new_object(self, work: Work) -> State:
        """The state of a new object of the image."""

    def precompute(self, work: Work) -> None:
        """Run the once-per-image work now, so that the first click costs only the per-click
        path (the annotation app calls it when an image is opened). Nothing by default."""

    def mask_input(self, work: Work, state: State) -> Tensor:
        """The object's current mask as logits ``[1, h, w]`` at the network's resolution: what the
        Python API returns beside the mask, for SAM's ``mask_input``."""
        raise NotImplementedError(f"{type(self).__name__} does not expose an object's mask as logits")

    def state_from_mask(self, work: Work, logits: Tensor) -> State:
        """The state of an object whose previous mask is ``logits`` ``[1, h, w]`` from elsewhere (a
        saved mask, another tool). A family whose state is more than a mask refuses it."""
        raise ValueError(f"{type(self).__name__} continues an object only from its own state: pass back as "
                         "mask_input the logits that predict returned for this image, or start without it")

    @abstractmethod
    def snapshot(self, work: Work, state: State) -> Dict[str, Any]:
        """The object's state as ``get_states`` returns it (a snapshot: never changed later)."""

    @abstractmethod
    def restore(self, work: Work, states: Dict[str, Any]) -> State:
        """The state of a ``snapshot`` of this image (validated)."""

    @abstractmethod
    def prepare(self, work: Work, state: State, clicks: List[Click]) -> Step:
        """One object's network input for all its clicks so far."""

    @abstractmethod
    def run(self, steps: Sequence[Step], stack: Callable[[Sequence[Any]], Any]) -> List[Any]:
        """One network call for steps of one group; one output per step. ``stack(features)``
        batches the steps' features (cached while the same objects are in flight)."""

    @abstractmethod
    def finish(self, work: Work, state: State, step: Step, output: Any) -> Outcome:
        """One step's network output -> the object's probability map and next state."""


class ClickPredictor:
    """The evaluation tools' predictor over a family's ``PredictionProtocol`` (module docstring)."""

    def __init__(self, protocol: PredictionProtocol, stack: Optional[FeatureStack] = None) -> None:
        self.protocol = protocol
        self._stack = stack if stack is not None else FeatureStack()
        self.original_image: Optional[Tensor] = None
        self._work: Any = None
        self._state: Any = None

    @property
    def net(self) -> Any:
        return self.protocol.net

    @property
    def with_flip(self) -> bool:
        return self.protocol.with_flip

    @property
    def clicks_limit(self) -> Optional[int]:
        return self.protocol.clicks_limit

    @property
    def state(self) -> Any:
        """The family's state of the object being segmented (``get_states`` snapshots it)."""
        return self._state

    def set_input_image(self, image: np.ndarray) -> None:
        """A new image: H x W x 3 RGB, uint8 or float in [0, 1]. Starts a new object."""
        self.original_image = image_tensor(image, self.protocol.device)
        self._work = self.protocol.open_image(self.original_image)
        self._state = self.protocol.new_object(self._work)

    def _require_image(self, call: str) -> None:
        if self._work is None:
            raise RuntimeError(f"call set_input_image(image) before {call}")

    def precompute(self) -> None:
        """Do the once-per-image work now (see ``PredictionProtocol.precompute``)."""
        self._require_image("precompute")
        with torch.no_grad():
            self.protocol.precompute(self._work)

    def get_states(self) -> Dict[str, Any]:
        """The state of the object being segmented. The image and its encoding are not part of
        it, so ``set_states`` undoes clicks or switches between the objects of one image without
        re-encoding; it is a snapshot (later clicks replace the state, never change it)."""
        self._require_image("get_states")
        return self.protocol.snapshot(self._work, self._state)

    def set_states(self, states: Dict[str, Any]) -> None:
        """Restore a state of ``get_states`` of this image."""
        self._require_image("set_states")
        self._state = self.protocol.restore(self._work, states)

    def get_mask_input(self) -> np.ndarray:
        """The object's current mask as logits ``(1, h, w)`` float32 at the network's resolution
        (``PredictionProtocol.mask_input``)."""
        self._require_image("get_mask_input")
        with torch.no_grad():
            return self.protocol.mask_input(self._work, self._state).float().cpu().numpy()

    def set_mask_input(self, logits: np.ndarray) -> None:
        """Continue the object from a mask given as logits ``(1, h, w)`` or ``(h, w)``
        (``PredictionProtocol.state_from_mask``)."""
        self._require_image("set_mask_input")
        logits = torch.as_tensor(np.asarray(logits, dtype=np.float32), device=self.protocol.device)
        if logits.dim() == 2:
            logits = logits[None]
        if logits.dim() != 3 or logits.shape[0] != 1:
            raise ValueError(f"mask_input must be (1, h, w) or (h, w) logits, got shape {tuple(logits.shape)}")
        with torch.no_grad():
            self._state = self.protocol.state_from_mask(self._work, logits)

    def spawn(self) -> "ClickPredictor":
        """A predictor with this one's network and settings and a state of its own: one per
        object when several are evaluated at once (``get_predictions``)."""
        twin = object.__new__(type(self))
        ClickPredictor.__init__(twin, self.protocol, self._stack)
        return twin

    def get_prediction(self, clicker: Clicker) -> np.ndarray:
        """Probability map (H x W float32) for all clicks of ``clicker`` so far."""
        return self.get_predictions([self], [clicker])[0]

    @staticmethod
    def get_predictions(predictors: Sequence["ClickPredictor"], clickers: Sequence[Clicker]) -> List[np.ndarray]:
        """``get_prediction`` of several predictors (``spawn``-ed from one, each with its own image
        and clicker), with one network call per group of steps."""
        protocol = predictors[0].protocol
        for predictor in predictors:
            predictor._require_image("get_prediction")
            if predictor.protocol is not protocol:
                raise ValueError("predictors evaluated together must share network and settings (use spawn)")
        clicks = [clicker.get_clicks() for clicker in clickers]
        with torch.no_grad():
            outcomes = _predict(predictors, clicks)
            again = [i for i, outcome in enumerate(outcomes) if outcome.again]
            if again:
                for i, outcome in zip(again, _predict([predictors[i] for i in again], [clicks[i] for i in again])):
                    outcomes[i] = outcome
        maps = []
        for predictor, outcome in zip(predictors, outcomes):
            predictor._state = outcome.state
            maps.append(outcome.prob[0, 0].cpu().numpy().copy())
        return maps


def _predict(predictors: Sequence[ClickPredictor], clicks: Sequence[List[Click]]) -> List[Outcome]:
    """One pass: every predictor's step prepared, run by groups, finished."""
    protocol, stack = predictors[0].protocol, predictors[0]._stack
    steps = [protocol.prepare(p._work, p._state, c) for p, c in zip(predictors, clicks)]
    groups: Dict[Hashable, List[int]] = {}
    for i, step in enumerate(steps):
        groups.setdefault(step.group, []).append(i)
    outcomes: List[Optional[Outcome]] = [None] * len(steps)
    for members in groups.values():
        outputs = protocol.run([steps[i] for i in members], stack)
        for i, output in zip(members, outputs):
            outcomes[i] = protocol.finish(predictors[i]._work, predictors[i]._state, steps[i], output)
    return outcomes
