"""GrabCut and Berkeley: one object per image, masks with a 128 "unknown" band that is ignored."""
from __future__ import annotations

import numpy as np

from .base import FolderPairsDataset


class GrabCutDataset(FolderPairsDataset):
    """GrabCut (50 images): ``data_GT/`` images, ``boundary_GT/`` masks (255 / 0 / 128 band).

    Mask rule of the original: channel 0 of the OpenCV read; 128 -> -1 (ignore), > 128 -> 1,
    every other value kept, so only 1 is object (raw 0 and 2..127 are background).
    """

    name = "GrabCut"
    config_key = "GRABCUT_PATH"
    images_dir = "data_GT"
    masks_dir = "boundary_GT"
    ignore_value = -1
    layout = """
data_GT/
    <name>.jpg (or .bmp, .JPG, ...)   images, one object each
boundary_GT/
    <name>.bmp                        masks: 255 object, 0 background, 128 ignored band
"""

    def _instances(self, mask_bgr: np.ndarray) -> np.ndarray:
        mask = mask_bgr[:, :, 0].astype(np.int32)
        mask[mask == 128] = -1
        mask[mask > 128] = 1
        return mask


class BerkeleyDataset(GrabCutDataset):
    """Berkeley: the GrabCut rules with ``images/`` and ``masks/``."""

    name = "Berkeley"
    config_key = "BERKELEY_PATH"
    images_dir = "images"
    masks_dir = "masks"
    layout = """
images/
    <name>.jpg (or another image format)   images, one object each
masks/
    <name>.png (or .bmp, ...)              masks: 255 object, 0 background, 128 ignored
"""
