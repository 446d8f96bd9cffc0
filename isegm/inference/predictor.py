"""From clicks to a probability map: the evaluation chain of the RITM family.

Per click, as the original ``BasePredictor`` with ``ZoomIn -> SigmoidForPred -> AddHorizontalFlip``
(RITM's ``isegm/inference/predictors``, which SimpleClick and SkipClick keep):

1. RGB in [0, 1] plus the previous probability map as a 4th channel; ZoomIn crops it (or takes
   the whole image) and resizes it to the network size (bilinear, ``align_corners=True``);
2. clicks are mapped to network pixels in float64; flip TTA adds the left-right flipped copy;
3. the network's logits of both copies are averaged (the flipped one flipped back), then sigmoid;
4. the map is resized back to the crop, pasted into zeros of the image size, and kept as the
   next click's previous-mask channel (probabilities, not a binarised mask).

Two kinds of network are driven: late-fusion models with ``encode_image`` / ``decode``
(SkipClick), whose image encoder runs once per network image (image and flipped copy in one
batch) and is reused while the crop is unchanged, and any callable
``net(cat([image, prev], 1) [B, 4, h, w], points [B, 2P, 3]) -> logits [B, 1, h, w]`` (or a dict
with ``'instances'``), the family's forward. ``RITMChain`` is this chain as a protocol of the
prediction engine (``isegm.inference.engine``); a model family with another protocol names its
own predictor in its registry record, and ``get_predictor`` builds it.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ..model.families import family_of
from .clicker import Click
from .engine import ClickPredictor, Outcome, PredictionProtocol, Step, points_from_clicks, stack_features
from .transforms import BBox, ZoomIn, add_flip, flip_clicks, merge_flip, resize

# Network input side per dataset for ``--eval-mode cvpr`` (WSESeg = every ``WSESeg_<class>``);
# other datasets get DEFAULT_CVPR_SIZE. SimpleClick / SkipClick use a fixed square, RITM the
# longest side of the crop.
CVPR_SIZES = {"DAVIS": 672, "HQSeg": 896, "WSESeg": 896, "SHSeg": 896}
DEFAULT_CVPR_SIZE = 448
RITM_CVPR_SIZES = {"DAVIS": 600, "HQSeg": 1024, "WSESeg": 1024, "SHSeg": 1024}
RITM_DEFAULT_CVPR_SIZE = 400
# "simpleclick" and "skipclick" share the protocol (the original's --eval-fvit only skips a
# positional-embedding interpolation outside the predictor).
MODEL_KINDS = ("skipclick", "simpleclick", "ritm")
# Probabilities are clamped to [eps, 1 - eps] before a logit, so that an empty map gives finite logits.
PROB_EPS = 1e-6

# A late-fusion model (encode_image / decode) or the family's forward net(x, points).
Network = Union[torch.nn.Module, Callable[[Tensor, Tensor], Union[Tensor, Dict[str, Tensor]]]]


def zoom_in_params(eval_mode: str = "cvpr", dataset_name: str = "", model_kind: str = "skipclick",
                   suppress: bool = False) -> Dict[str, Any]:
    """``ZoomIn`` keyword arguments of the original ``evaluate_model.py``.

    ``eval_mode``: ``cvpr`` (the per-dataset sizes above), ``fixedN`` (an N x N network input)
    or ``fixedH,W`` (not for RITM). ``suppress``: ``--suppress-zoom`` (SkipClick's official
    setting), the crop is then always the whole image.
    """
    if model_kind not in MODEL_KINDS:
        raise ValueError(f"unknown model_kind {model_kind!r}; known: {', '.join(MODEL_KINDS)}")
    ritm = model_kind == "ritm"
    if eval_mode == "cvpr":
        key = "WSESeg" if dataset_name.startswith("WSESeg") else dataset_name
        if ritm:
            # Longest side; the first click is not zoomed (skip_clicks=1).
            return dict(target_size=RITM_CVPR_SIZES.get(key, RITM_DEFAULT_CVPR_SIZE), skip_clicks=1,
                        suppress=suppress)
        size = CVPR_SIZES.get(key, DEFAULT_CVPR_SIZE)
        return dict(target_size=(size, size), skip_clicks=-1, suppress=suppress)
    if eval_mode.startswith("fixed"):
        sides = eval_mode[len("fixed"):].split(",")
        if len(sides) > (1 if ritm else 2) or not all(side.isdigit() for side in sides):
            raise ValueError(f"bad eval_mode {eval_mode!r} for {model_kind}: expected fixedN"
                             + ("" if ritm else " or fixedH,W"))
        height, width = int(sides[0]), int(sides[-1])
        return dict(target_size=(height, width), skip_clicks=-1, suppress=suppress)
    raise ValueError(f"unknown eval_mode {eval_mode!r}; expected cvpr, fixedN or fixedH,W")


@dataclass
class ChainImage:
    """The chain's per-image record: the image ``[1, 3, H, W]``, its zoom-in (the crop of the
    object being segmented), and the network image (with its flipped copy) of the crop ``key``
    with a late-fusion model's features of it."""

    image: Tensor
    zoom_in: Optional[ZoomIn]
    key: Optional[Tuple[Optional[BBox]]] = None
    net_image: Optional[Tensor] = None
    features: Any = None


@dataclass
class ChainStep:
    """One object's click: its crop, network image, previous mask and click lists (the
    flipped copy's second)."""

    roi: Optional[BBox]
    image: Tensor
    prev: Tensor
    clicks_lists: List[List[Click]]
    features: Any


class RITMChain(PredictionProtocol[ChainImage, Tensor]):
    """The RITM family's chain (module docstring); an object's state is its previous
    probability map ``[1, 1, H, W]``, the zoom-in's crop lives in the image's record."""

    def __init__(self, net: Network, zoom_in: Optional[ZoomIn] = None, with_flip: bool = True,
                 clicks_limit: Optional[int] = None, device: Union[str, torch.device] = "cpu") -> None:
        super().__init__(net, with_flip, clicks_limit, device)
        self.zoom_in = zoom_in
        self.late_fusion = hasattr(net, "encode_image") and hasattr(net, "decode")

    def open_image(self, image: Tensor) -> ChainImage:
        zoom_in = copy.deepcopy(self.zoom_in)
        if zoom_in is not None:
            zoom_in.reset(tuple(image.shape[-2:]))
        return ChainImage(image, zoom_in)

    def new_object(self, work: ChainImage) -> Tensor:
        return torch.zeros_like(work.image[:, :1])

    def precompute(self, work: ChainImage) -> None:
        """A late-fusion model's encoding of the crop the first click uses; the family's forward
        has nothing to precompute."""
        if self.late_fusion:
            self._network_image(work, work.zoom_in.update([]) if work.zoom_in is not None else None)

    def mask_input(self, work: ChainImage, state: Tensor) -> Tensor:
        """The previous probability map at the network size of the whole image, as logits."""
        size = self._whole_image_size(work)
        prob = state if tuple(state.shape[-2:]) == size else resize(state, size)
        return torch.logit(prob[0].float().clamp(PROB_EPS, 1 - PROB_EPS))

    def state_from_mask(self, work: ChainImage, logits: Tensor) -> Tensor:
        """Any logits map ``[1, h, w]`` becomes the previous probability map of the image's size
        (the mask channel the next click reads, as after a prediction)."""
        return torch.sigmoid(resize(logits[None].float(), tuple(work.image.shape[-2:])))

    def _whole_image_size(self, work: ChainImage) -> Tuple[int, int]:
        """(h, w) of the network input when the crop is the whole image."""
        height, width = work.image.shape[-2:]
        if work.zoom_in is None:
            return height, width
        return tuple(work.zoom_in.net_size((0, height - 1, 0, width - 1)))

    def snapshot(self, work: ChainImage, state: Tensor) -> Dict[str, Any]:
        """The previous probability map ``[1, 1, H, W]`` and the zoom-in crop."""
        return {"prev_prediction": state, "zoom_in": None if work.zoom_in is None else work.zoom_in.get_state()}

    def restore(self, work: ChainImage, states: Dict[str, Any]) -> Tensor:
        """``prev_prediction`` may also be any ``[1, 1, H, W]`` probability map, e.g. a saved mask
        to continue editing."""
        prev = states["prev_prediction"]
        if tuple(prev.shape) != (1, 1, *work.image.shape[-2:]):
            raise ValueError(f"prev_prediction of shape {tuple(prev.shape)} does not fit the image "
                             f"{tuple(work.image.shape[-2:])}")
        if work.zoom_in is not None and states.get("zoom_in") is not None:
            work.zoom_in.set_state(states["zoom_in"])
        return prev.to(self.device, torch.float32)

    def prepare(self, work: ChainImage, state: Tensor, clicks: List[Click]) -> Step:
        roi = work.zoom_in.update(clicks) if work.zoom_in is not None else None
        image = self._network_image(work, roi)
        prev = state
        if roi is not None:
            prev = work.zoom_in.transform(prev, roi)
            clicks = work.zoom_in.transform_clicks(clicks, roi)
        clicks_lists = [clicks]
        if self.with_flip:
            prev = add_flip(prev)
            clicks_lists.append(flip_clicks(clicks, image.shape[-1]))
        return Step(tuple(image.shape[-2:]), ChainStep(roi, image, prev, clicks_lists, work.features))

    def run(self, steps: Sequence[Step], stack: Callable[[Sequence[Any]], Any]) -> List[Tensor]:
        """Logits of each step (``[1 or 2, 1, h, w]``), one network call for all."""
        chain = [step.data for step in steps]
        points = points_from_clicks([c for item in chain for c in item.clicks_lists], self.clicks_limit)
        points = points.to(self.device)
        prev = stack_features([item.prev for item in chain])   # one instance: no copy
        if self.late_fusion:
            logits = self.net.decode(stack([item.features for item in chain]), points, prev)
        else:
            out = self.net(torch.cat([stack_features([item.image for item in chain]), prev], dim=1), points)
            logits = out["instances"] if isinstance(out, dict) else out
        return list(logits.split([len(item.clicks_lists) for item in chain]))

    def finish(self, work: ChainImage, state: Tensor, step: Step, output: Tensor) -> Outcome:
        """Network logits -> full-image probabilities; with a zoom-in whose first, unzoomed pass
        found a small object, the click is predicted once more inside its crop."""
        logits = output.float()   # under autocast the map and the prev channel stay float32
        image_size = step.data.image.shape[-2:]
        if logits.shape[-2:] != image_size:
            logits = resize(logits, image_size)
        if self.with_flip:
            logits = merge_flip(logits)
        prob = torch.sigmoid(logits)
        if work.zoom_in is None:
            return Outcome(prob, prob)
        prob = work.zoom_in.inv_transform(prob, step.data.roi)
        return Outcome(prob, prob, again=work.zoom_in.needs_recompute())

    def _network_image(self, work: ChainImage, roi: Optional[BBox]) -> Tensor:
        """RGB at network size (and its flipped copy); recomputed, and re-encoded by a late-fusion
        model, only when the crop changes."""
        if work.key != (roi,):
            image = work.image if roi is None else work.zoom_in.transform(work.image, roi)
            work.net_image = add_flip(image) if self.with_flip else image
            work.features = self.net.encode_image(work.net_image) if self.late_fusion else None
            work.key = (roi,)
        return work.net_image


class BasePredictor(ClickPredictor):
    """``set_input_image(image)`` once per image, then ``get_prediction(clicker)`` after each
    click of one instance: the RITM chain (module docstring) on the prediction engine.

    ``zoom_in``: None = the full image at full resolution. ``with_flip``: horizontal-flip TTA
    (on in the original evaluation). ``clicks_limit``: the network sees only the first N clicks.
    The network is used as given (put it in eval mode and on ``device`` first).
    """

    def __init__(self, net: Network, zoom_in: Optional[ZoomIn] = None, with_flip: bool = True,
                 clicks_limit: Optional[int] = None, device: Union[str, torch.device] = "cpu") -> None:
        super().__init__(RITMChain(net, zoom_in, with_flip, clicks_limit, device))

    @property
    def zoom_in(self) -> Optional[ZoomIn]:
        """The zoom-in of the current image (its settings before an image is set)."""
        return self._work.zoom_in if self._work is not None else self.protocol.zoom_in


def ritm_predictor(net: Network, eval_mode: str = "cvpr", dataset_name: str = "", model_kind: str = "skipclick",
                   suppress_zoom: bool = False, with_flip: bool = True, clicks_limit: Optional[int] = None,
                   device: Union[str, torch.device] = "cpu") -> BasePredictor:
    """``BasePredictor`` with the family's ZoomIn for ``eval_mode`` (``zoom_in_params``)."""
    zoom_in = ZoomIn(**zoom_in_params(eval_mode, dataset_name, model_kind, suppress_zoom))
    return BasePredictor(net, zoom_in=zoom_in, with_flip=with_flip, clicks_limit=clicks_limit, device=device)


def get_predictor(net: Network, eval_mode: str = "cvpr", dataset_name: str = "", model_kind: str = "skipclick",
                  suppress_zoom: bool = False, with_flip: bool = True, clicks_limit: Optional[int] = None,
                  device: Union[str, torch.device] = "cpu") -> ClickPredictor:
    """The predictor ``evaluate_model.py`` builds (mode NoBRS, flip TTA on): the one the model's
    family names in its registry record (``isegm.model.families``; EMC-Click's is its own
    protocol), ``ritm_predictor`` for a network of no registered family. SkipClick's official
    setting: ``eval_mode='cvpr', suppress_zoom=True``."""
    settings = dict(eval_mode=eval_mode, dataset_name=dataset_name, model_kind=model_kind,
                    suppress_zoom=suppress_zoom, with_flip=with_flip, clicks_limit=clicks_limit, device=device)
    family = family_of(net)
    if family is None:
        return ritm_predictor(net, **settings)
    return family.make_predictor(net, **settings)
