"""Pictures of predictions: the mask blended over the image with the clicks drawn on it."""
from __future__ import annotations

from typing import Sequence, Tuple

import cv2
import numpy as np

from .images import to_uint8_rgb

POSITIVE_COLOR = (0, 200, 0)
NEGATIVE_COLOR = (220, 0, 0)
MASK_COLOR = (255, 140, 0)


def draw_prediction(image: np.ndarray, probs: np.ndarray, clicks: Sequence[Tuple[float, float, bool]],
                    threshold: float, alpha: float = 0.5, radius: int = 0) -> np.ndarray:
    """RGB uint8: ``image`` with the mask ``probs > threshold`` blended in and its outline drawn,
    then the clicks (y, x, is_positive) as green / red dots, beside the probability map in grey."""
    image = to_uint8_rgb(image)
    mask = probs > np.float32(threshold)
    out = image.copy()
    out[mask] = ((1 - alpha) * out[mask] + alpha * np.array(MASK_COLOR)).astype(np.uint8)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, MASK_COLOR, 1)
    radius = radius or max(3, round(0.008 * max(image.shape[:2])))
    for y, x, positive in clicks:
        center = (int(round(x)), int(round(y)))
        cv2.circle(out, center, radius, POSITIVE_COLOR if positive else NEGATIVE_COLOR, -1, cv2.LINE_AA)
        cv2.circle(out, center, radius, (255, 255, 255), 1, cv2.LINE_AA)
    prob_map = np.repeat((np.clip(probs, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=2)
    return np.hstack([out, prob_map])
