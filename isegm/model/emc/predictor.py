"""EMC-Click's evaluation protocol: the authors' ``ClickAttPredictor`` as their
``get_predictor('EMC-Click', ...)`` builds it (``shared/reference/emc/README.md``, "Predictor /
evaluation path"), registered for ``get_predictor`` so that the evaluator and the app serve
EMC-Click like any other model.

Per click:

1. the RGB image in [0, 1] is resized so that its short side is 384 (576 for DAVIS), each side
   ``int(round(side * scale)) // 4 * 4``, bilinear with ``align_corners=True``; there is no
   zoom-in crop;
2. clicks are mapped to network pixels as ``y * (h / H)`` in float64 (the ratio first:
   ``h * y / H`` rounds differently); flip TTA adds the left-right flipped image and clicks
   (``x'' = w - x' - 1``) as batch item 2;
3. on the first click of an object the base network runs (it reads only the first click), then
   the correction network on every click; each batch item, the flipped one too, feeds back its own
   refined 1/4-resolution logits (``EMCState.prev_logits_lr``);
4. the logits are averaged with the flipped copy's (flipped back), passed through the sigmoid and
   resized to the image (bilinear, ``align_corners=True``); the evaluation thresholds the map
   (0.49 by default).

Unlike SkipClick's image encoder, EMC-Click's base network depends on the first click, so nothing
can be computed when an image is opened: ``precompute`` does nothing, and the first click of
every object costs the base network plus a correction step.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from .model import EMCClick, EMCState
from ...inference.clicker import Click, Clicker
from ...inference.predictor import image_tensor, points_from_clicks, register_predictor, stack_features
from ...inference.transforms import add_flip, flip_clicks, merge_flip, resize

# Network-input short side per dataset for ``--eval-mode cvpr`` (the authors' ``emc-click`` mode);
# other datasets get EMC_DEFAULT_SHORT_SIDE.
EMC_CVPR_SHORT_SIDES = {"DAVIS": 576}
EMC_DEFAULT_SHORT_SIDE = 384
# The network input's sides are multiples of this (the correction network's PixelUnshuffle).
SIDE_MULTIPLE = 4


def emc_short_side(eval_mode: str = "cvpr", dataset_name: str = "") -> int:
    """The network input's short side: ``cvpr`` gives the authors' per-dataset size, ``fixedN``
    gives N."""
    if eval_mode == "cvpr":
        return EMC_CVPR_SHORT_SIDES.get(dataset_name, EMC_DEFAULT_SHORT_SIDE)
    side = eval_mode[len("fixed"):]
    if eval_mode.startswith("fixed") and side.isdigit() and int(side) >= SIDE_MULTIPLE:
        return int(side)
    raise ValueError(f"eval_mode {eval_mode!r} does not apply to EMC-Click, which keeps the aspect ratio: use cvpr "
                     f"(short side {EMC_DEFAULT_SHORT_SIDE}, {EMC_CVPR_SHORT_SIDES['DAVIS']} for DAVIS) or fixedN "
                     "(short side N, at least 4)")


def emc_net_size(height: int, width: int, short_side: int) -> Tuple[int, int]:
    """(h, w) of the network input for an image of ``height`` x ``width``: the short side scaled
    to ``short_side``, each side rounded (half to even, as Python's ``round``), then down to a
    multiple of 4."""
    scale = short_side / min(height, width)
    return (int(round(height * scale)) // SIDE_MULTIPLE * SIDE_MULTIPLE,
            int(round(width * scale)) // SIDE_MULTIPLE * SIDE_MULTIPLE)


class EMCPredictor:
    """``set_input_image(image)`` once per image, then ``get_prediction(clicker)`` after each
    click of one object (see the module docstring for the chain).

    ``short_side``: network input short side. ``with_flip``: flip TTA (on in the authors'
    evaluation). ``clicks_limit``: the correction network sees only the first N clicks (the
    authors' EMC-Click evaluation sets none). The network is used as given (eval mode, on
    ``device``).
    """

    def __init__(self, net: EMCClick, short_side: int = EMC_DEFAULT_SHORT_SIDE, with_flip: bool = True,
                 clicks_limit: Optional[int] = None, device: Union[str, torch.device] = "cpu") -> None:
        if short_side < SIDE_MULTIPLE:
            raise ValueError(f"short_side must be at least {SIDE_MULTIPLE}, got {short_side}")
        self.net = net
        self.short_side = short_side
        self.with_flip = with_flip
        self.clicks_limit = clicks_limit
        self.device = torch.device(device)
        self.original_image: Optional[Tensor] = None
        self.state: Optional[EMCState] = None   # None until the object's first click
        self._net_image: Optional[Tensor] = None
        # Shared by spawned predictors: the stacked images and base features of the last batch,
        # reused while the same objects are in flight (only the fed-back logits change per click).
        self._stacked: List[Any] = [(), None]

    @property
    def net_size(self) -> Tuple[int, int]:
        """(h, w) of the network input for the current image."""
        return tuple(self._network_image().shape[-2:])

    def set_input_image(self, image: np.ndarray) -> None:
        """A new image: H x W x 3 RGB, uint8 or float in [0, 1]. Starts a new object."""
        self.original_image = image_tensor(image, self.device)
        size = emc_net_size(*self.original_image.shape[-2:], self.short_side)
        if min(size) < SIDE_MULTIPLE:
            raise ValueError(f"an image of {tuple(self.original_image.shape[-2:])} px becomes {size} at short side "
                             f"{self.short_side}: too thin for EMC-Click; pad or crop it")
        net_image = resize(self.original_image, size)
        self._net_image = add_flip(net_image) if self.with_flip else net_image
        self.state = None

    def precompute(self) -> None:
        """Nothing to do: the base network reads the first click, so it runs on that click."""
        self._network_image()

    def get_states(self) -> Dict[str, Any]:
        """The object's state: ``{'emc_state': EMCState or None}`` (None before the first click).
        A snapshot: later clicks replace the predictor's state, never change it in place, so
        ``set_states`` of it undoes clicks or switches objects without rerunning anything. There
        is no previous-mask map in it (the authors' predictor never reads one): an object started
        from a saved mask reruns its saved clicks, the base network on the first of them."""
        return {"emc_state": None if self.state is None else dataclasses.replace(self.state)}

    def set_states(self, states: Dict[str, Any]) -> None:
        """Restore a state of ``get_states`` of this image (``{'emc_state': None}`` starts a new
        object)."""
        state = states.get("emc_state")
        if state is not None:
            if not isinstance(state, EMCState):
                raise TypeError(f"states['emc_state'] must be an EMCState or None, got {type(state).__name__}")
            if state.image.shape != self._network_image().shape:
                raise ValueError(f"states['emc_state'] is for a network input of {tuple(state.image.shape)}, this "
                                 f"image's is {tuple(self._net_image.shape)}: a state of another image or predictor")
            state = dataclasses.replace(state)
        self.state = state

    def spawn(self) -> "EMCPredictor":
        """A predictor with this one's network and settings and a state of its own: one per
        object when several are evaluated at once (``get_predictions``)."""
        twin = EMCPredictor(self.net, self.short_side, self.with_flip, self.clicks_limit, self.device)
        twin._stacked = self._stacked
        return twin

    def get_prediction(self, clicker: Clicker) -> np.ndarray:
        """Probability map (H x W float32) for all clicks of ``clicker`` so far."""
        return self.get_predictions([self], [clicker])[0]

    @staticmethod
    def get_predictions(predictors: Sequence["EMCPredictor"], clickers: Sequence[Clicker]) -> List[np.ndarray]:
        """``get_prediction`` of several predictors (``spawn``-ed from one, each with its own
        image and clicker): one base-network call per network-input size for the objects at their
        first click, then one correction call per (size, click rows) group.

        Objects are grouped so that each sees the click padding it would see alone: the padded
        rows enter the template scores (a padded row's similarity is 0, not -inf), so batching
        changes no result beyond the rounding of batched convolutions."""
        first = predictors[0]
        for predictor in predictors:
            predictor._network_image()
            if (predictor.net, predictor.with_flip, predictor.clicks_limit) != \
                    (first.net, first.with_flip, first.clicks_limit):
                raise ValueError("predictors evaluated together must share network and settings (use spawn)")
        clicks = [clicker.get_clicks() for clicker in clickers]
        points = [predictor._points(c) for predictor, c in zip(predictors, clicks)]
        logits: List[Optional[Tensor]] = [None] * len(predictors)
        with torch.no_grad():
            new = [i for i, predictor in enumerate(predictors) if predictor.state is None]
            for members in _groups(new, lambda i: predictors[i].net_size).values():
                images = stack_features([predictors[i]._net_image for i in members])
                # the base network reads the first click alone: [B, 2, 3] points of equal shape
                first_clicks = stack_features([predictors[i]._points(clicks[i][:1]) for i in members])
                state = first.net.encode(images, first_clicks)
                for i, part in zip(members, _split(state, len(members))):
                    predictors[i].state = part
            for members in _groups(range(len(predictors)), lambda i: (predictors[i].net_size, points[i].shape[1])
                                   ).values():
                state = first._stacked_state([predictors[i] for i in members])
                out = first.net.correct(state, stack_features([points[i] for i in members]))
                for i, lr, full in zip(members, out.logits_lr.chunk(len(members)), out.logits.chunk(len(members))):
                    predictors[i].state = dataclasses.replace(predictors[i].state, prev_logits_lr=lr)
                    logits[i] = full
        return [predictor._finish(part) for predictor, part in zip(predictors, logits)]

    def _network_image(self) -> Tensor:
        if self._net_image is None:
            raise RuntimeError("call set_input_image(image) first")
        return self._net_image

    def _points(self, clicks: List[Click]) -> Tensor:
        """The RITM points ``[B, 2N, 3]`` (float64) of ``clicks`` at network size, B = 2 with the
        flipped copy."""
        if not clicks:
            raise ValueError("EMC-Click predicts from clicks: add a click before get_prediction")
        (H, W), (h, w) = self.original_image.shape[-2:], self.net_size
        scaled = [c.copy(coords=(c.coords[0] * (h / H), c.coords[1] * (w / W))) for c in clicks]
        lists = [scaled, flip_clicks(scaled, w)] if self.with_flip else [scaled]
        return points_from_clicks(lists, self.clicks_limit).to(self.device)

    def _stacked_state(self, predictors: Sequence["EMCPredictor"]) -> EMCState:
        """The predictors' states as one batch; images and base features are stacked again only
        when the set of objects in flight changed."""
        states = [p.state for p in predictors]
        prev = stack_features([s.prev_logits_lr for s in states])
        if len(states) == 1:
            return dataclasses.replace(states[0], prev_logits_lr=prev)
        last, stacked = self._stacked
        if len(last) != len(states) or any(a is not b.feature for a, b in zip(last, states)):
            stacked = [stack_features([getattr(s, name) for s in states])
                       for name in ("image", "feature", "coarse_logits_lr")]
            self._stacked[:] = [[s.feature for s in states], stacked]
        return EMCState(*stacked, prev_logits_lr=prev)

    def _finish(self, logits: Tensor) -> np.ndarray:
        """Network logits ``[B, 1, h, w]`` of one object -> its probability map (H x W float32)."""
        logits = logits.float()   # under autocast the map stays float32
        if self.with_flip:
            logits = merge_flip(logits)
        prob = resize(torch.sigmoid(logits), tuple(self.original_image.shape[-2:]))
        return prob[0, 0].cpu().numpy().copy()


def _groups(indices: Sequence[int], key: Any) -> Dict[Any, List[int]]:
    groups: Dict[Any, List[int]] = {}
    for i in indices:
        groups.setdefault(key(i), []).append(i)
    return groups


def _split(state: EMCState, parts: int) -> List[EMCState]:
    """A batched state -> one state per object (equal batch shares, in order)."""
    fields = [getattr(state, f.name).chunk(parts) for f in dataclasses.fields(state)]
    return [EMCState(*values) for values in zip(*fields)]


def make_emc_predictor(net: EMCClick, eval_mode: str = "cvpr", dataset_name: str = "", model_kind: str = "skipclick",
                       suppress_zoom: bool = False, with_flip: bool = True, clicks_limit: Optional[int] = None,
                       device: Union[str, torch.device] = "cpu") -> EMCPredictor:
    """``get_predictor``'s factory for EMC-Click: ``eval_mode`` ``cvpr`` (short side 384, 576 for
    DAVIS) or ``fixedN``; ``suppress_zoom`` changes nothing (EMC-Click never crops);
    ``model_kind`` ``'ritm'`` (RITM's zoom-in protocol) is refused."""
    if model_kind == "ritm":
        raise ValueError("EMC-Click has its own protocol (whole image, short side resized, no zoom-in): "
                         "drop --eval-ritm")
    return EMCPredictor(net, emc_short_side(eval_mode, dataset_name), with_flip, clicks_limit, device)


register_predictor(EMCClick, make_emc_predictor)
