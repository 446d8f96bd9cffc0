"""Training augmentation of the SkipClick model files, in numpy / OpenCV.

Every transform is an ``Augmentation``: ``(image uint8 H x W x 3, layers int32 H x W x L, rng)
-> (image, layers)``. Geometric transforms move the image and the label layers together (masks
by nearest neighbour, so labels stay labels); colour transforms touch the image only. The
semantics, random draws included, are those of RITM's ``UniformRandomResize`` and of the
albumentations transforms the model files use, with every draw taken from ``rng``.
"""
from __future__ import annotations

from typing import Sequence, Tuple, Union

import cv2
import numpy as np

from .sample import Augmentation

Arrays = Tuple[np.ndarray, np.ndarray]
Limit = Union[float, Tuple[float, float]]


def _symmetric(limit: Limit) -> Tuple[float, float]:
    """albumentations' ``to_tuple``: a number ``a`` means the range ``(-a, a)``."""
    if isinstance(limit, (int, float)):
        return -abs(limit), abs(limit)
    low, high = limit
    return float(low), float(high)


def _lut(image: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Map a uint8 image through a float table of its 256 levels, clipped then truncated to
    uint8 as albumentations does."""
    return cv2.LUT(image, np.clip(values, 0, 255).astype(np.uint8))


def resize_nearest(masks: np.ndarray, height: int, width: int) -> np.ndarray:
    """OpenCV's ``INTER_NEAREST`` for any number of layers and any dtype (``cv2.resize`` takes
    at most 512 channels): output pixel ``i`` reads input ``floor(i * in / out)``."""
    def source(out: int, size: int) -> np.ndarray:
        step = 1.0 / (out / size)   # OpenCV's own arithmetic, so that ties fall the same way
        return np.minimum(np.floor(np.arange(out) * step).astype(np.intp), size - 1)

    return masks[source(height, masks.shape[0])[:, None], source(width, masks.shape[1])[None, :]]


class Compose:
    """The transforms in order, each fed the previous one's output."""

    def __init__(self, transforms: Sequence[Augmentation]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: np.ndarray, masks: np.ndarray, rng: np.random.Generator) -> Arrays:
        for transform in self.transforms:
            image, masks = transform(image, masks, rng)
        return image, masks


class UniformRandomResize:
    """Scale both sides by one factor drawn uniformly from ``scale_range`` (new size rounded);
    the image bilinearly, the masks by nearest neighbour (RITM's transform)."""

    def __init__(self, scale_range: Tuple[float, float] = (0.75, 1.40)) -> None:
        self.scale_range = scale_range

    def __call__(self, image: np.ndarray, masks: np.ndarray, rng: np.random.Generator) -> Arrays:
        scale = rng.uniform(*self.scale_range)
        height, width = int(round(image.shape[0] * scale)), int(round(image.shape[1] * scale))
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
        return image, resize_nearest(masks, height, width)


class HorizontalFlip:
    """Mirror left-right with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, image: np.ndarray, masks: np.ndarray, rng: np.random.Generator) -> Arrays:
        if rng.random() >= self.p:
            return image, masks
        # Contiguous copies: OpenCV refuses the negative strides of a flipped view.
        return np.ascontiguousarray(image[:, ::-1]), np.ascontiguousarray(masks[:, ::-1])


class PadIfNeeded:
    """Pad with zeros (image and masks) up to ``min_height`` x ``min_width``, centred: the
    smaller half of the padding goes on top / left, as albumentations' ``PadIfNeeded`` with
    ``border_mode=cv2.BORDER_CONSTANT``."""

    def __init__(self, min_height: int, min_width: int) -> None:
        self.min_height, self.min_width = min_height, min_width

    def __call__(self, image: np.ndarray, masks: np.ndarray, rng: np.random.Generator) -> Arrays:
        pad_h = max(self.min_height - image.shape[0], 0)
        pad_w = max(self.min_width - image.shape[1], 0)
        if pad_h == 0 and pad_w == 0:
            return image, masks
        pad = ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0))
        return np.pad(image, pad), np.pad(masks, pad)


class RandomCrop:
    """A ``height`` x ``width`` window at a random place: top ``int((H - height + 1) * u)``, left
    ``int((W - width + 1) * v)`` with ``u, v`` uniform in [0, 1): every offset 0 ... H - height
    equally likely, the last one included (albumentations' ``RandomCrop`` since 1.1, its
    ``get_random_crop_coords``; SkipClick's authors use 1.4). ``last_offset=False``: the formula of
    albumentations before 1.1, ``int((H - height) * u)``, which never draws the last offset
    (EMC-Click's authors pin 0.5.1)."""

    def __init__(self, height: int, width: int, last_offset: bool = True) -> None:
        self.height, self.width = height, width
        self.last_offset = last_offset

    def __call__(self, image: np.ndarray, masks: np.ndarray, rng: np.random.Generator) -> Arrays:
        H, W = image.shape[:2]
        if H < self.height or W < self.width:
            raise ValueError(f"crop {self.height}x{self.width} is larger than the {H}x{W} image; pad it first")
        extra = 1 if self.last_offset else 0
        top = int((H - self.height + extra) * rng.random())
        left = int((W - self.width + extra) * rng.random())
        window = (slice(top, top + self.height), slice(left, left + self.width))
        # Copies, so that the sample never holds a view into the dataset's original arrays.
        return image[window].copy(), masks[window].copy()


class RandomBrightnessContrast:
    """With probability ``p``: ``pixel * alpha + beta * 255`` with ``alpha = 1 + uniform(contrast_limit)``
    and ``beta = uniform(brightness_limit)`` (albumentations' uint8 look-up table); with
    ``brightness_by_max=False`` the shift is ``alpha * beta * mean(image)`` instead."""

    def __init__(self, brightness_limit: Limit = (-0.25, 0.25), contrast_limit: Limit = (-0.15, 0.4),
                 brightness_by_max: bool = True, p: float = 0.75) -> None:
        self.brightness_limit = _symmetric(brightness_limit)
        self.contrast_limit = _symmetric(contrast_limit)
        self.brightness_by_max = brightness_by_max
        self.p = p

    def __call__(self, image: np.ndarray, masks: np.ndarray, rng: np.random.Generator) -> Arrays:
        if rng.random() >= self.p:
            return image, masks
        alpha = 1.0 + rng.uniform(*self.contrast_limit)
        beta = rng.uniform(*self.brightness_limit)
        shift = beta * 255 if self.brightness_by_max else alpha * beta * float(np.mean(image))
        return _lut(image, np.arange(256, dtype=np.float32) * alpha + shift), masks


class RGBShift:
    """With probability ``p``: add to each of R, G, B its own offset, uniform in its limit
    (a number ``a`` means ``(-a, a)``), clipped to [0, 255] (albumentations' ``RGBShift``)."""

    def __init__(self, r_shift_limit: Limit = 10, g_shift_limit: Limit = 10, b_shift_limit: Limit = 10,
                 p: float = 0.75) -> None:
        self.limits = [_symmetric(r_shift_limit), _symmetric(g_shift_limit), _symmetric(b_shift_limit)]
        self.p = p

    def __call__(self, image: np.ndarray, masks: np.ndarray, rng: np.random.Generator) -> Arrays:
        if rng.random() >= self.p:
            return image, masks
        shifted = np.empty_like(image)
        for channel, limit in enumerate(self.limits):
            levels = np.arange(256, dtype=np.float32) + rng.uniform(*limit)
            shifted[..., channel] = _lut(np.ascontiguousarray(image[..., channel]), levels)
        return shifted, masks


def training_augmentation(crop_size: Tuple[int, int] = (448, 448),
                          scale_range: Tuple[float, float] = (0.75, 1.40), crop_last_offset: bool = True) -> Compose:
    """SkipClick's training pipeline: rescale by a factor in ``scale_range``, flip, pad and crop
    to ``crop_size`` (H, W), then colour jitter. The result is always ``crop_size``.
    ``crop_last_offset``: ``RandomCrop``'s ``last_offset``."""
    height, width = crop_size
    return Compose([
        UniformRandomResize(scale_range),
        HorizontalFlip(),
        PadIfNeeded(height, width),
        RandomCrop(height, width, crop_last_offset),
        RandomBrightnessContrast(brightness_limit=(-0.25, 0.25), contrast_limit=(-0.15, 0.4), p=0.75),
        RGBShift(r_shift_limit=10, g_shift_limit=10, b_shift_limit=10, p=0.75),
    ])


def validation_augmentation(crop_size: Tuple[int, int], crop_last_offset: bool = True) -> Compose:
    """Pad and randomly crop to ``crop_size`` (H, W), nothing else."""
    height, width = crop_size
    return Compose([PadIfNeeded(height, width), RandomCrop(height, width, crop_last_offset)])
