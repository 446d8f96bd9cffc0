"""From clicks to a probability map: the evaluation chain of the RITM family.

Per click, as the original ``BasePredictor`` with ``ZoomIn -> SigmoidForPred -> AddHorizontalFlip``
(``shared/reference/eval/README.md``, "Predictor-side chain"):

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
with ``'instances'``), the family's forward. A model family with another protocol registers a
factory of its own predictor for ``get_predictor`` (``register_predictor``; EMC-Click does).
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from ..utils.images import check_rgb
from .clicker import Click, Clicker
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

PADDING = (-1, -1, -1)

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


def points_from_clicks(clicks_lists: Sequence[Sequence[Click]], clicks_limit: Optional[int] = None) -> Tensor:
    """The RITM points layout ``[B, 2P, 3]`` (float64) of one click list per batch item.

    Rows are ``(y, x, click index)``: the positive clicks padded with ``(-1, -1, -1)`` to P, then
    the negative clicks padded the same. P = the largest count of one sign in any full list,
    capped by ``clicks_limit``, at least 1; ``clicks_limit`` keeps the first clicks of each list.
    """
    counts = [n for clicks in clicks_lists for n in (sum(c.is_positive for c in clicks),
                                                     sum(not c.is_positive for c in clicks))]
    num_points = max(counts)
    if clicks_limit is not None:
        num_points = min(clicks_limit, num_points)
    num_points = max(1, num_points)
    rows = []
    for clicks in clicks_lists:
        clicks = clicks[:clicks_limit]
        pos = [c.coords_and_indx for c in clicks if c.is_positive]
        neg = [c.coords_and_indx for c in clicks if not c.is_positive]
        rows.append(pos + [PADDING] * (num_points - len(pos)) + neg + [PADDING] * (num_points - len(neg)))
    return torch.tensor(rows, dtype=torch.float64)


def stack_features(features: Sequence[Any]) -> Any:
    """Image features of several images as one batch: tensors are concatenated, other types
    stack themselves with a ``cat`` class method (SkipClick's ``ImageFeatures.cat``)."""
    if len(features) == 1:
        return features[0]
    if isinstance(features[0], Tensor):
        return torch.cat(list(features))
    if not callable(getattr(type(features[0]), "cat", None)):
        raise TypeError(f"{type(features[0]).__name__} has no cat(features) class method: features of several "
                        "images cannot be batched; evaluate with batch size 1")
    return type(features[0]).cat(features)


def image_tensor(image: np.ndarray, device: Union[str, torch.device] = "cpu") -> Tensor:
    """H x W x 3 RGB (uint8, or float in [0, 1]) -> ``[1, 3, H, W]`` float32 in [0, 1] on ``device``
    (uint8 / 255, as the family's ``ToTensor``)."""
    image = check_rgb(image)
    if image.dtype == np.uint8:
        tensor = torch.from_numpy(image).permute(2, 0, 1).float().div(255)
    else:
        tensor = torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1)
    return tensor[None].contiguous().to(device)


class BasePredictor:
    """``set_input_image(image)`` once per image, then ``get_prediction(clicker)`` after each
    click of one instance (see the module docstring for the chain).

    ``zoom_in``: None = the full image at full resolution. ``with_flip``: horizontal-flip TTA
    (on in the original evaluation). ``clicks_limit``: the network sees only the first N clicks.
    The network is used as given (put it in eval mode and on ``device`` first).
    """

    def __init__(self, net: Network, zoom_in: Optional[ZoomIn] = None, with_flip: bool = True,
                 clicks_limit: Optional[int] = None, device: Union[str, torch.device] = "cpu") -> None:
        self.net = net
        self.late_fusion = hasattr(net, "encode_image") and hasattr(net, "decode")
        self.zoom_in = zoom_in
        self.with_flip = with_flip
        self.clicks_limit = clicks_limit
        self.device = torch.device(device)
        self.original_image: Optional[Tensor] = None
        self.prev_prediction: Optional[Tensor] = None
        self._image_key: Optional[Tuple[Optional[BBox]]] = None   # the crop _net_image was made for
        self._net_image: Optional[Tensor] = None
        self._features: Any = None
        # Shared by spawned predictors: the stacked features of the last batch, reused while the
        # same instances are in flight (stacking copies every image's features).
        self._stacked: List[Any] = [(), None]

    def set_input_image(self, image: np.ndarray) -> None:
        """A new image: H x W x 3 RGB, uint8 or float in [0, 1]. Resets the previous prediction."""
        self.original_image = image_tensor(image, self.device)
        self.prev_prediction = torch.zeros_like(self.original_image[:, :1])
        if self.zoom_in is not None:
            self.zoom_in.reset(tuple(self.original_image.shape[-2:]))
        self._image_key = self._net_image = self._features = None

    def precompute(self) -> None:
        """Run the once-per-image work now (a late-fusion model's encoding of the crop the first
        click uses), so that the first click costs only the per-click path; the annotation app
        calls it when an image is opened. The family's forward has nothing to precompute."""
        if self.original_image is None:
            raise RuntimeError("call set_input_image(image) before precompute")
        if self.late_fusion:
            with torch.no_grad():
                self._network_image(self.zoom_in.update([]) if self.zoom_in is not None else None)

    def get_states(self) -> Dict[str, Any]:
        """The state of the object being segmented (the family's ``get_states``): the previous
        probability map ``[1, 1, H, W]`` and the zoom-in crop. The image and its encoding are
        not part of it, so ``set_states`` undoes clicks or switches between the objects of one
        image without re-encoding. The values are replaced on each click, never changed in
        place, so the returned state stays a snapshot."""
        return {"prev_prediction": self.prev_prediction,
                "zoom_in": None if self.zoom_in is None else self.zoom_in.get_state()}

    def set_states(self, states: Dict[str, Any]) -> None:
        """Restore a state of ``get_states`` (of this image). ``prev_prediction`` may also be
        any ``[1, 1, H, W]`` probability map, e.g. a saved mask to continue editing."""
        prev = states["prev_prediction"]
        if self.original_image is None or tuple(prev.shape) != (1, 1, *self.original_image.shape[-2:]):
            raise ValueError(f"prev_prediction of shape {tuple(prev.shape)} does not fit the image "
                             f"{None if self.original_image is None else tuple(self.original_image.shape[-2:])}")
        self.prev_prediction = prev.to(self.device, torch.float32)
        if self.zoom_in is not None and states.get("zoom_in") is not None:
            self.zoom_in.set_state(states["zoom_in"])

    def spawn(self) -> "BasePredictor":
        """A predictor with this one's network and settings and a state of its own: one per
        instance when several are evaluated at once (``get_predictions``)."""
        twin = BasePredictor(self.net, copy.deepcopy(self.zoom_in), self.with_flip, self.clicks_limit, self.device)
        twin._stacked = self._stacked
        return twin

    def get_prediction(self, clicker: Clicker) -> np.ndarray:
        """Probability map (H x W float32) for all clicks of ``clicker`` so far."""
        return self.get_predictions([self], [clicker])[0]

    @staticmethod
    def get_predictions(predictors: Sequence["BasePredictor"], clickers: Sequence[Clicker]) -> List[np.ndarray]:
        """``get_prediction`` of several predictors (``spawn``-ed from one, each with its own image
        and clicker) in one network call per network-input size: features of different images
        are stacked (``ImageFeatures.cat``), so one ``decode`` serves every instance's click."""
        for predictor in predictors:
            if predictor.original_image is None:
                raise RuntimeError("call set_input_image(image) before get_prediction")
            if (predictor.net, predictor.with_flip, predictor.clicks_limit) != \
                    (predictors[0].net, predictors[0].with_flip, predictors[0].clicks_limit):
                raise ValueError("predictors evaluated together must share network and settings (use spawn)")
        clicks = [clicker.get_clicks() for clicker in clickers]
        with torch.no_grad():
            probs = BasePredictor._predict(predictors, clicks)
            again = [i for i, p in enumerate(predictors) if p.zoom_in is not None and p.zoom_in.needs_recompute()]
            if again:
                for i, prob in zip(again, BasePredictor._predict([predictors[i] for i in again],
                                                                 [clicks[i] for i in again])):
                    probs[i] = prob
        maps = []
        for predictor, prob in zip(predictors, probs):
            predictor.prev_prediction = prob
            maps.append(prob[0, 0].cpu().numpy().copy())
        return maps

    @staticmethod
    def _predict(predictors: Sequence["BasePredictor"], clicks: Sequence[List[Click]]) -> List[Tensor]:
        """Full-image probabilities ``[1, 1, H, W]`` of each predictor for its clicks."""
        steps = [predictor._prepare(c) for predictor, c in zip(predictors, clicks)]
        groups: Dict[Tuple[int, int], List[int]] = {}
        for i, (_, image, _, _) in enumerate(steps):
            groups.setdefault(tuple(image.shape[-2:]), []).append(i)
        probs: List[Optional[Tensor]] = [None] * len(steps)
        for members in groups.values():
            logits = predictors[members[0]]._run_network([predictors[i] for i in members], [steps[i] for i in members])
            for i, part in zip(members, logits.split([steps[i][1].shape[0] for i in members])):
                probs[i] = predictors[i]._finish(steps[i][0], part)
        return probs

    def _prepare(self, clicks: List[Click]) -> Tuple[Optional[BBox], Tensor, Tensor, List[List[Click]]]:
        """The crop, the network image (and flipped copy), previous mask and click lists of a step."""
        roi = self.zoom_in.update(clicks) if self.zoom_in is not None else None
        image = self._network_image(roi)
        prev = self.prev_prediction
        if roi is not None:
            prev = self.zoom_in.transform(prev, roi)
            clicks = self.zoom_in.transform_clicks(clicks, roi)
        clicks_lists = [clicks]
        if self.with_flip:
            prev = add_flip(prev)
            clicks_lists.append(flip_clicks(clicks, image.shape[-1]))
        return roi, image, prev, clicks_lists

    def _run_network(self, predictors: Sequence["BasePredictor"], steps: Sequence[Tuple]) -> Tensor:
        """Logits ``[sum B_i, 1, h, w]`` of prepared steps whose network images share one size."""
        points = points_from_clicks([c for step in steps for c in step[3]], self.clicks_limit).to(self.device)
        prev = stack_features([step[2] for step in steps])   # one instance: no copy
        if self.late_fusion:
            return self.net.decode(self._stacked_features(predictors), points, prev)
        out = self.net(torch.cat([stack_features([step[1] for step in steps]), prev], dim=1), points)
        return out["instances"] if isinstance(out, dict) else out

    def _stacked_features(self, predictors: Sequence["BasePredictor"]) -> Any:
        """The predictors' image features as one batch, stacked again only when the set of
        instances in flight changed."""
        features = [p._features for p in predictors]
        if len(features) == 1:
            return features[0]
        last, stacked = self._stacked
        if len(last) != len(features) or any(a is not b for a, b in zip(last, features)):
            stacked = stack_features(features)
            self._stacked[:] = [features, stacked]
        return stacked

    def _finish(self, roi: Optional[BBox], logits: Tensor) -> Tensor:
        """Network logits of one step -> full-image probabilities ``[1, 1, H, W]``."""
        logits = logits.float()   # under autocast the map and the prev channel stay float32
        image_size = self._net_image.shape[-2:]
        if logits.shape[-2:] != image_size:
            logits = resize(logits, image_size)
        if self.with_flip:
            logits = merge_flip(logits)
        prob = torch.sigmoid(logits)
        return self.zoom_in.inv_transform(prob, roi) if self.zoom_in is not None else prob

    def _network_image(self, roi: Optional[BBox]) -> Tensor:
        """RGB at network size (and its flipped copy); recomputed, and re-encoded by a late-fusion
        model, only when the crop changes."""
        if self._image_key != (roi,):
            image = self.original_image if roi is None else self.zoom_in.transform(self.original_image, roi)
            self._net_image = add_flip(image) if self.with_flip else image
            self._features = self.net.encode_image(self._net_image) if self.late_fusion else None
            self._image_key = (roi,)
        return self._net_image


# factory(net, eval_mode=, dataset_name=, model_kind=, suppress_zoom=, with_flip=, clicks_limit=, device=)
# -> a predictor (set_input_image, get_prediction, get_states / set_states, optionally precompute and
# spawn / get_predictions): the evaluation protocol of a model family.
PredictorFactory = Callable[..., Any]
_FACTORIES: Dict[type, PredictorFactory] = {}


def register_predictor(model_class: type, factory: PredictorFactory) -> None:
    """Make ``get_predictor`` build ``factory(net, **settings)`` for instances of ``model_class``
    (and its subclasses): a model family whose protocol is not the RITM chain of
    ``BasePredictor`` plugs in here, and the evaluator and the app serve it unchanged."""
    _FACTORIES[model_class] = factory


def get_predictor(net: Network, eval_mode: str = "cvpr", dataset_name: str = "", model_kind: str = "skipclick",
                  suppress_zoom: bool = False, with_flip: bool = True, clicks_limit: Optional[int] = None,
                  device: Union[str, torch.device] = "cpu") -> Any:
    """The predictor ``evaluate_model.py`` builds (mode NoBRS, flip TTA on): the factory
    registered for ``net``'s class (``register_predictor``; EMC-Click's is
    ``isegm.model.emc.predictor``), otherwise ``BasePredictor`` with the family's ZoomIn.
    SkipClick's official setting: ``eval_mode='cvpr', suppress_zoom=True``."""
    settings = dict(eval_mode=eval_mode, dataset_name=dataset_name, model_kind=model_kind,
                    suppress_zoom=suppress_zoom, with_flip=with_flip, clicks_limit=clicks_limit, device=device)
    factory = next((_FACTORIES[cls] for cls in type(net).__mro__ if cls in _FACTORIES), None)
    if factory is not None:
        return factory(net, **settings)
    zoom_in = ZoomIn(**zoom_in_params(eval_mode, dataset_name, model_kind, suppress_zoom))
    return BasePredictor(net, zoom_in=zoom_in, with_flip=with_flip, clicks_limit=clicks_limit, device=device)
