"""DAVIS and COCO_MVal: one object per image; every non-black mask colour is the object."""
from __future__ import annotations

import numpy as np

from .base import FolderPairsDataset


class DavisDataset(FolderPairsDataset):
    """DAVIS (345 frames): ``img/`` images, ``gt/`` masks.

    Mask rule of the original: max over the three channels of the OpenCV read, > 0 -> 1. All
    instance colours of the palette PNGs, and the VOC void colour, merge into one object; there
    is no ignore label.
    """

    name = "DAVIS"
    config_key = "DAVIS_PATH"
    images_dir = "img"
    masks_dir = "gt"
    layout = """
img/
    <name>.jpg   images, one object each
gt/
    <name>.png   masks: every non-black pixel is the object
"""

    def _instances(self, mask_bgr: np.ndarray) -> np.ndarray:
        mask = np.max(mask_bgr.astype(np.int32), axis=2)
        mask[mask > 0] = 1
        return mask


class COCOMValDataset(DavisDataset):
    """COCO_MVal: the DAVIS format and rules."""

    name = "COCO_MVal"
    config_key = "COCO_MVAL_PATH"
