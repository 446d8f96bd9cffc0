"""EMC-Click's evaluation protocol: the authors' ``ClickAttPredictor`` as their
``get_predictor('EMC-Click', ...)`` builds it (github.com/feiaxyt/EMC-Click), as a protocol of
the prediction engine (``isegm.inference.engine``); the family's registry record names it, so
that the evaluator and the app serve EMC-Click like any other model.

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
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ...inference.clicker import Click
from ...inference.engine import ClickPredictor, Outcome, PredictionProtocol, Step, points_from_clicks, stack_features
from ...inference.transforms import add_flip, flip_clicks, merge_flip, resize
from .model import EMCClick, EMCState

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


@dataclass
class EMCImage:
    """The protocol's per-image record: the image ``[1, 3, H, W]``, the network input (with its
    flipped copy) and its size."""

    image: Tensor
    net_image: Tensor
    net_size: Tuple[int, int]


@dataclass
class EMCStep:
    """One object's click: its state (None before the base network ran), network input, all
    clicks' points and, at the first click, the first click's points."""

    state: Optional[EMCState]
    net_image: Tensor
    points: Tensor
    first_points: Optional[Tensor]


class EMCProtocol(PredictionProtocol[EMCImage, Optional[EMCState]]):
    """EMC-Click's protocol (module docstring); an object's state is its ``EMCState``, None
    until its first click.

    ``short_side``: network input short side. ``with_flip``: flip TTA (on in the authors'
    evaluation). ``clicks_limit``: the correction network sees only the first N clicks (the
    authors' EMC-Click evaluation sets none).
    """

    def __init__(self, net: EMCClick, short_side: int = EMC_DEFAULT_SHORT_SIDE, with_flip: bool = True,
                 clicks_limit: Optional[int] = None, device: Union[str, torch.device] = "cpu") -> None:
        if short_side < SIDE_MULTIPLE:
            raise ValueError(f"short_side must be at least {SIDE_MULTIPLE}, got {short_side}")
        super().__init__(net, with_flip, clicks_limit, device)
        self.short_side = short_side

    def open_image(self, image: Tensor) -> EMCImage:
        size = emc_net_size(*image.shape[-2:], self.short_side)
        if min(size) < SIDE_MULTIPLE:
            raise ValueError(f"an image of {tuple(image.shape[-2:])} px becomes {size} at short side "
                             f"{self.short_side}: too thin for EMC-Click; pad or crop it")
        net_image = resize(image, size)
        return EMCImage(image, add_flip(net_image) if self.with_flip else net_image, size)

    def new_object(self, work: EMCImage) -> Optional[EMCState]:
        return None

    def mask_input(self, work: EMCImage, state: Optional[EMCState]) -> Tensor:
        """The refined 1/4-resolution logits fed back at the next click (of the unflipped copy);
        zeros before the first click. A mask from elsewhere cannot start an object: the base
        network needs the first click (``state_from_mask`` refuses it)."""
        if state is None:
            height, width = work.net_size
            return torch.zeros(1, height // SIDE_MULTIPLE, width // SIDE_MULTIPLE, device=self.device)
        return state.prev_logits_lr[0]

    def snapshot(self, work: EMCImage, state: Optional[EMCState]) -> Dict[str, Any]:
        """``{'emc_state': EMCState or None}`` (None before the first click). There is no
        previous-mask map in it (the authors' predictor never reads one): an object started from a
        saved mask reruns its saved clicks, the base network on the first of them."""
        return {"emc_state": None if state is None else dataclasses.replace(state)}

    def restore(self, work: EMCImage, states: Dict[str, Any]) -> Optional[EMCState]:
        """``{'emc_state': None}`` starts a new object."""
        state = states.get("emc_state")
        if state is None:
            return None
        if not isinstance(state, EMCState):
            raise TypeError(f"states['emc_state'] must be an EMCState or None, got {type(state).__name__}")
        if state.image.shape != work.net_image.shape:
            raise ValueError(f"states['emc_state'] is for a network input of {tuple(state.image.shape)}, this "
                             f"image's is {tuple(work.net_image.shape)}: a state of another image or predictor")
        return dataclasses.replace(state)

    def prepare(self, work: EMCImage, state: Optional[EMCState], clicks: List[Click]) -> Step:
        """Objects are grouped by network size and click rows, so that each sees the click padding
        it would see alone: the padded rows enter the template scores (a padded row's similarity
        is 0, not -inf), so batching changes no result beyond the rounding of batched
        convolutions."""
        points = self._points(work, clicks)
        first = self._points(work, clicks[:1]) if state is None else None
        return Step((work.net_size, points.shape[1]), EMCStep(state, work.net_image, points, first))

    def run(self, steps: Sequence[Step], stack: Callable[[Sequence[Any]], Any]) -> List[Tuple[EMCState, Tensor]]:
        """The base network once for the objects at their first click, then one correction step
        for all; per object its state with the refined 1/4-resolution logits fed back, and its
        logits."""
        items = [step.data for step in steps]
        states = [item.state for item in items]
        new = [i for i, item in enumerate(items) if item.state is None]
        if new:
            # the base network reads the first click alone: [B, 2, 3] points of equal shape
            base = self.net.encode_image(stack_features([items[i].net_image for i in new]),
                                         stack_features([items[i].first_points for i in new]))
            for i, part in zip(new, _split(base, len(new))):
                states[i] = part
        # images and base features are stacked again only when the objects in flight change
        image, feature, coarse = stack([(s.image, s.feature, s.coarse_logits_lr) for s in states])
        batch = EMCState(image, feature, coarse, stack_features([s.prev_logits_lr for s in states]))
        out = self.net.correct(batch, stack_features([item.points for item in items]))
        return [(dataclasses.replace(state, prev_logits_lr=lr), full) for state, lr, full
                in zip(states, out.logits_lr.chunk(len(items)), out.logits.chunk(len(items)))]

    def finish(self, work: EMCImage, state: Optional[EMCState], step: Step, output: Tuple[EMCState, Tensor]
               ) -> Outcome:
        """Network logits -> the object's probability map (``[1, 1, H, W]``)."""
        new_state, logits = output
        logits = logits.float()   # under autocast the map stays float32
        if self.with_flip:
            logits = merge_flip(logits)
        return Outcome(resize(torch.sigmoid(logits), tuple(work.image.shape[-2:])), new_state)

    def _points(self, work: EMCImage, clicks: List[Click]) -> Tensor:
        """The RITM points ``[B, 2N, 3]`` (float64) of ``clicks`` at network size, B = 2 with the
        flipped copy."""
        if not clicks:
            raise ValueError("EMC-Click predicts from clicks: add a click before get_prediction")
        (H, W), (h, w) = work.image.shape[-2:], work.net_size
        scaled = [c.copy(coords=(c.coords[0] * (h / H), c.coords[1] * (w / W))) for c in clicks]
        lists = [scaled, flip_clicks(scaled, w)] if self.with_flip else [scaled]
        return points_from_clicks(lists, self.clicks_limit).to(self.device)


class EMCPredictor(ClickPredictor):
    """``set_input_image(image)`` once per image, then ``get_prediction(clicker)`` after each
    click of one object: ``EMCProtocol`` on the prediction engine. The network is used as given
    (eval mode, on ``device``)."""

    def __init__(self, net: EMCClick, short_side: int = EMC_DEFAULT_SHORT_SIDE, with_flip: bool = True,
                 clicks_limit: Optional[int] = None, device: Union[str, torch.device] = "cpu") -> None:
        super().__init__(EMCProtocol(net, short_side, with_flip, clicks_limit, device))

    @property
    def short_side(self) -> int:
        return self.protocol.short_side

    @property
    def net_size(self) -> Tuple[int, int]:
        """(h, w) of the network input for the current image."""
        self._require_image("net_size")
        return self._work.net_size


def _split(state: EMCState, parts: int) -> List[EMCState]:
    """A batched state -> one state per object (equal batch shares, in order)."""
    fields = [getattr(state, f.name).chunk(parts) for f in dataclasses.fields(state)]
    return [EMCState(*values) for values in zip(*fields)]


def make_emc_predictor(net: EMCClick, eval_mode: str = "cvpr", dataset_name: str = "", model_kind: str = "skipclick",
                       suppress_zoom: bool = False, with_flip: bool = True, clicks_limit: Optional[int] = None,
                       device: Union[str, torch.device] = "cpu") -> EMCPredictor:
    """The family's predictor factory (its registry record names it): ``eval_mode`` ``cvpr``
    (short side 384, 576 for DAVIS) or ``fixedN``; ``suppress_zoom`` changes nothing (EMC-Click
    never crops); ``model_kind`` ``'ritm'`` (RITM's zoom-in protocol) is refused."""
    if model_kind == "ritm":
        raise ValueError("EMC-Click has its own protocol (whole image, short side resized, no zoom-in): "
                         "drop --eval-ritm")
    return EMCPredictor(net, emc_short_side(eval_mode, dataset_name), with_flip, clicks_limit, device)
