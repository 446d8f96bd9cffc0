"""The image convention at the file boundary: H x W x 3 RGB, uint8 or float in [0, 1]."""
from __future__ import annotations

import numpy as np


def check_rgb(image: np.ndarray) -> np.ndarray:
    """``image`` as an array, or ``ValueError`` unless it is H x W x 3, uint8 or floating point."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be H x W x 3 (RGB), got shape {image.shape}")
    if image.dtype != np.uint8 and not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"image must be uint8 or float in [0, 1], got dtype {image.dtype}")
    return image


def to_uint8_rgb(image: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 from a uint8 or float [0, 1] RGB image (WSESeg / SHSeg load as float)."""
    image = check_rgb(image)
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    return np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
