"""Mask geometry shared by the click simulators (evaluation and training)."""
from __future__ import annotations

import cv2
import numpy as np


def padded_distance(mask: np.ndarray, mask_size: int = cv2.DIST_MASK_PRECISE) -> np.ndarray:
    """L2 distance of every ``True`` pixel to the nearest ``False`` one, the outside of the image
    counting as ``False`` (float32, same shape as ``mask``). Exact by default; ``mask_size=5``
    is OpenCV's faster approximation, which the family's training clicks use."""
    padded = np.pad(mask, ((1, 1), (1, 1)), "constant").astype(np.uint8)
    return cv2.distanceTransform(padded, cv2.DIST_L2, mask_size)[1:-1, 1:-1]
