"""Model-free predictors, so the evaluation loop gives meaningful numbers without any weights:
click-seeded GrabCut (OpenCV) and random walker (scikit-image, an optional dependency).

Both follow the predictor interface of :class:`~isegm.inference.predictor.BasePredictor`:
``set_input_image(image)`` once per instance, then ``get_prediction(clicker)`` after each click,
returning an (H, W) float32 probability map at full resolution. Clicks are ``(y, x)`` pixel
indices. Each click is a hard seed: a filled disk of ``seed_radius`` full-resolution pixels
(the models' click-disk radius by default), also stamped onto the returned map so that a clicked
pixel always gets the label its click asks for, whatever the working resolution.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Type

import cv2
import numpy as np

from ..model.click_maps import DISK_RADIUS
from ..utils.images import to_uint8_rgb
from .clicker import Click, Clicker

# OpenCV's GrabCut models each of foreground and background with a GMM of this many components.
GMM_COMPONENTS = 5


def _working_size(shape: Tuple[int, int], max_side: Optional[int]) -> Tuple[int, int]:
    """(h, w) with the longest side at most ``max_side`` (None: the full size), aspect kept."""
    height, width = shape
    if max_side is None or max(height, width) <= max_side:
        return height, width
    scale = max_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _working_image(image: np.ndarray, max_side: Optional[int]) -> Tuple[np.ndarray, Tuple[int, int]]:
    """The uint8 RGB image at the working size (``_working_size``; area-averaged) and its full (H, W)."""
    image = to_uint8_rgb(image)
    full_size = image.shape[:2]
    height, width = _working_size(full_size, max_side)
    if (height, width) != full_size:
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    return image, full_size


def _scale_clicks(clicks: Sequence[Click], full: Tuple[int, int], work: Tuple[int, int]) -> List[Click]:
    """Clicks mapped from pixel indices of ``full`` to the nearest pixel of ``work`` (pixel centres align)."""
    if full == work:
        return list(clicks)
    scaled = []
    for click in clicks:
        y, x = (min(max(round((c + 0.5) * w / f - 0.5), 0), w - 1) for c, w, f in zip(click.coords, work, full))
        scaled.append(click.copy(coords=(y, x)))
    return scaled


def _stamp_disks(target: np.ndarray, clicks: Sequence[Click], radius: float, positive_value: Any,
                 negative_value: Any) -> None:
    """Fill the pixels within ``radius`` (inclusive) of each click with its sign's value, in click
    order (a later click overrides an earlier one where their disks overlap)."""
    height, width = target.shape[:2]
    reach = int(np.floor(radius))
    for click in clicks:
        y, x = (int(round(c)) for c in click.coords)
        y0, y1 = max(y - reach, 0), min(y + reach + 1, height)
        x0, x1 = max(x - reach, 0), min(x + reach + 1, width)
        rows = np.arange(y0, y1)[:, None]
        cols = np.arange(x0, x1)[None, :]
        inside = (rows - y) ** 2 + (cols - x) ** 2 <= radius * radius
        target[y0:y1, x0:x1][inside] = positive_value if click.is_positive else negative_value


class _WorkingSizePredictor:
    """Shared by the baselines: they work on a downscaled copy of the image (``_image``)."""

    _image: Optional[np.ndarray] = None
    _full_size: Tuple[int, int] = (0, 0)

    def get_states(self) -> Dict[str, Any]:
        """The state of the object being segmented (the family's ``get_states``; none here)."""
        return {}

    def set_states(self, states: Dict[str, Any]) -> None:
        """Restore a ``get_states`` of this image (undo, or another object of the image)."""

    def _working_clicks(self, clicker: Clicker) -> Tuple[List[Click], List[Click], float]:
        """The clicks at full size, the same at the working size, and the working / full scale."""
        if self._image is None:
            raise RuntimeError("call set_input_image(image) before get_prediction")
        full_clicks = clicker.get_clicks()
        clicks = _scale_clicks(full_clicks, self._full_size, self._image.shape[:2])
        return full_clicks, clicks, self._image.shape[0] / self._full_size[0]


class GrabCutPredictor(_WorkingSizePredictor):
    """Click-seeded GrabCut (``cv2.grabCut`` with ``GC_INIT_WITH_MASK``), deterministic.

    The GrabCut mask of each call, at the working resolution (longest side ``max_side``; 400 is
    RITM's network size and GrabCut's cost grows faster than the pixel count):

    * first call: everything probable background, and probable foreground within
      ``prior_radius`` x (shorter image side) of the positive clicks, which gives the object GMM
      the colours around the click;
    * later calls refine the last result: a click corrects one kind of error, so the other side
      of the last result stays. After a positive click the last object is definite foreground
      and the rest probable background; after a negative one the last background is definite
      background and the last object probable foreground. The prior disk of the new click
      (probable foreground or background) overrides the probable labels within it. Without
      this, one click re-estimates the colour models from scratch and a negative click can
      flood the background with the object's label;
    * always: definite foreground / background disks of ``seed_radius`` (full-resolution
      pixels) at positive / negative clicks.

    The image border is not made definite background: objects often touch it (DAVIS), and the
    background GMM is seeded from the whole rest of the image anyway. GrabCut then runs
    ``iterations`` rounds of GMM re-estimation and graph cut. Its colour model also picks up
    same-coloured regions anywhere in the image, so only the foreground components (8-connected)
    that contain a positive click are kept: every click claims the object region it lies in.
    The map is 1.0 on the object and 0.0 elsewhere (nearest-neighbour upsampled).

    OpenCV initialises the GMMs with k-means from random centres; the RNG is re-seeded before
    every call, so a run is reproducible. Call ``set_input_image`` for each instance: it also
    forgets the last result.
    """

    def __init__(self, seed_radius: float = DISK_RADIUS, prior_radius: float = 0.1, iterations: int = 5,
                 max_side: Optional[int] = 400) -> None:
        self.seed_radius = seed_radius
        self.prior_radius = prior_radius
        self.iterations = iterations
        self.max_side = max_side
        self._prev_object: Optional[np.ndarray] = None

    def set_input_image(self, image: np.ndarray) -> None:
        """A new image: H x W x 3 RGB, uint8 or float in [0, 1]. Forgets the previous result."""
        self._image, self._full_size = _working_image(image, self.max_side)
        self._prev_object = None

    def get_states(self) -> Dict[str, Any]:
        """The last result, which the next click refines (replaced per call, never changed in place)."""
        return {"prev_object": self._prev_object}

    def set_states(self, states: Dict[str, Any]) -> None:
        """Restore a ``get_states`` of this image (undo, or another object of the image)."""
        self._prev_object = states["prev_object"]

    def get_prediction(self, clicker: Clicker) -> np.ndarray:
        """(H, W) float32 map: 1.0 where GrabCut labels the object, 0.0 elsewhere."""
        full_clicks, clicks, scale = self._working_clicks(clicker)
        work_size = self._image.shape[:2]

        mask = np.full(work_size, cv2.GC_PR_BGD, dtype=np.uint8)
        new_clicks = clicks
        if self._prev_object is not None:
            # The new click corrects one kind of error, so the other side of the last result stays.
            new_clicks = clicks[-1:]
            if new_clicks[0].is_positive:
                mask[self._prev_object] = cv2.GC_FGD
            else:
                mask[:] = cv2.GC_BGD
                mask[self._prev_object] = cv2.GC_PR_FGD
        prior = np.zeros(work_size, dtype=np.uint8)   # 1: positive prior disk, 2: negative
        _stamp_disks(prior, new_clicks, self.prior_radius * min(work_size), 1, 2)
        undecided = (mask == cv2.GC_PR_BGD) | (mask == cv2.GC_PR_FGD)
        mask[undecided & (prior == 1)] = cv2.GC_PR_FGD
        mask[undecided & (prior == 2)] = cv2.GC_PR_BGD
        _stamp_disks(mask, clicks, self.seed_radius * scale, cv2.GC_FGD, cv2.GC_BGD)

        is_object = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
        # GrabCut needs samples for every GMM component on both sides; with fewer (a tiny image
        # nearly covered by seeds) the seeded mask is the answer.
        if GMM_COMPONENTS <= np.count_nonzero(is_object) <= is_object.size - GMM_COMPONENTS:
            cv2.setRNGSeed(0)
            bgd_model = np.zeros((1, 65), np.float64)
            fgd_model = np.zeros((1, 65), np.float64)
            cv2.grabCut(self._image, mask, None, bgd_model, fgd_model, self.iterations, cv2.GC_INIT_WITH_MASK)
            is_object = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
        is_object = self._clicked_components(is_object, clicks)
        self._prev_object = is_object

        probs = is_object.astype(np.float32)
        if work_size != self._full_size:
            probs = cv2.resize(probs, self._full_size[::-1], interpolation=cv2.INTER_NEAREST)
        _stamp_disks(probs, full_clicks, self.seed_radius, 1.0, 0.0)
        return probs

    @staticmethod
    def _clicked_components(is_object: np.ndarray, clicks: Sequence[Click]) -> np.ndarray:
        """The 8-connected components of ``is_object`` that hold a positive click."""
        _, components = cv2.connectedComponents(is_object.astype(np.uint8), connectivity=8)
        keep = {components[int(c.coords[0]), int(c.coords[1])] for c in clicks if c.is_positive} - {0}
        return np.isin(components, list(keep))


class RandomWalkerPredictor(_WorkingSizePredictor):
    """Click-seeded random walker (Grady 2006, ``skimage.segmentation.random_walker``).

    Seeds at the working resolution (longest side ``max_side``; the walker solves a sparse linear
    system per call, far too slow at full size): label 1 on disks of ``seed_radius`` at positive
    clicks, label 2 on those at negative clicks (in click order, a later click overriding an
    earlier one), 0 elsewhere. The walker needs a background seed from the first click on, and
    the user gives none until a negative click, so the image border is background seed too (the
    usual boundary prior), except border pixels within ``border_clearance`` x (longest side) of a
    positive click: an object that touches the border gets a positive click near it and frees
    that stretch. The border seeds stay after the first negative click: dropping them would hand
    every background region far from that click back to the walk's other seeds. If every border
    pixel is cleared and there is no negative click, the whole image is the object (the walker's
    answer with one label).

    Edge weights are Grady's: ``exp(-beta * d^2 / max d^2)``, d^2 the squared RGB difference of
    two neighbours and the maximum taken over the (working) image, with his ``beta = 90``.
    scikit-image scales by the image's standard deviation instead, which with its default
    ``beta = 130`` gives edges several times weaker (and an object behind them leaks to the
    border seeds); ``beta`` is converted per image to scikit-image's parameter.

    The map is the probability that a walker from a pixel reaches a positive seed first
    (``return_full_prob``), bilinearly upsampled. The result depends only on the image and the
    clicks (no state between calls). ``mode``: scikit-image's solver ('bf', a sparse direct solve,
    is the fastest at these sizes). Needs scikit-image (``pip install scikit-image``).
    """

    def __init__(self, seed_radius: float = DISK_RADIUS, border_clearance: float = 0.1, beta: float = 90.0,
                 max_side: Optional[int] = 256, mode: str = "bf") -> None:
        try:
            from skimage.segmentation import random_walker
        except ImportError as err:
            raise ImportError("RandomWalkerPredictor needs scikit-image: pip install scikit-image "
                              "(or the package's 'baselines' extra)") from err
        self._random_walker: Callable[..., np.ndarray] = random_walker
        self.seed_radius = seed_radius
        self.border_clearance = border_clearance
        self.beta = beta
        self.max_side = max_side
        self.mode = mode
        self._skimage_beta = beta

    def set_input_image(self, image: np.ndarray) -> None:
        """A new image: H x W x 3 RGB, uint8 or float in [0, 1]."""
        image, self._full_size = _working_image(image, self.max_side)
        self._image = image.astype(np.float64) / 255
        self._skimage_beta = self._grady_beta(self._image)

    def get_prediction(self, clicker: Clicker) -> np.ndarray:
        """(H, W) float32 map: the probability that each pixel belongs to the positive clicks' label."""
        full_clicks, clicks, scale = self._working_clicks(clicker)
        work_size = self._image.shape[:2]

        seeds = np.zeros(work_size, dtype=np.int32)
        seeds[self._border_seeds(work_size, clicks)] = 2
        _stamp_disks(seeds, clicks, self.seed_radius * scale, 1, 2)
        if not (seeds == 2).any():
            probs = np.ones(work_size, dtype=np.float32)
        elif not (seeds == 0).any():
            probs = (seeds == 1).astype(np.float32)
        else:
            full_prob = self._random_walker(self._image, seeds, beta=self._skimage_beta, mode=self.mode,
                                            return_full_prob=True, channel_axis=-1)
            probs = np.clip(full_prob[0], 0, 1).astype(np.float32)

        if work_size != self._full_size:
            probs = cv2.resize(probs, self._full_size[::-1], interpolation=cv2.INTER_LINEAR)
        _stamp_disks(probs, full_clicks, self.seed_radius, 1.0, 0.0)
        return probs

    def _grady_beta(self, image: np.ndarray) -> float:
        """scikit-image's ``beta`` that makes its weights ``exp(-self.beta * d^2 / max d^2)`` on
        ``image`` (it uses ``exp(-beta * d^2 / (10 * std * sqrt(channels)))``)."""
        max_d2 = max(float((np.diff(image, axis=axis) ** 2).sum(axis=-1).max(initial=0.0)) for axis in (0, 1))
        if max_d2 == 0.0:   # a flat image: every weight is 1 whatever beta is
            return self.beta
        return self.beta * 10 * float(image.std()) * np.sqrt(image.shape[-1]) / max_d2

    def _border_seeds(self, size: Tuple[int, int], clicks: Sequence[Click]) -> np.ndarray:
        """(h, w) bool: the border pixels farther than the clearance from every positive click."""
        border = np.zeros(size, dtype=bool)
        border[[0, -1], :] = border[:, [0, -1]] = True
        clearance = self.border_clearance * max(size)
        rows, cols = np.nonzero(border)
        for click in clicks:
            if click.is_positive:
                y, x = click.coords
                near = (rows - y) ** 2 + (cols - x) ** 2 <= clearance * clearance
                border[rows[near], cols[near]] = False
        return border


BASELINES: Dict[str, Type[Any]] = {"grabcut": GrabCutPredictor, "random_walker": RandomWalkerPredictor}


def get_baseline(name: str, **kwargs: Any) -> Any:
    """A model-free predictor by name (``BASELINES``); ``kwargs`` go to its constructor."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
    return BASELINES[name](**kwargs)
