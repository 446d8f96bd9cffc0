"""HQSeg-44K validation split (1537 images): four high-quality sub-sets, one object per image."""
from __future__ import annotations

import numpy as np

from ..sample import DSample
from .base import ISDataset, PathLike, check_same_size, read_image, read_mask_bgr

# (images, masks) folders of the validation sub-sets, in the original's order.
HQSEG_VAL_SUBSETS = (
    ("DIS5K/DIS-VD/im", "DIS5K/DIS-VD/gt"),
    ("thin_object_detection/ThinObject5K/images_test", "thin_object_detection/ThinObject5K/masks_test"),
    ("thin_object_detection/COIFT/images", "thin_object_detection/COIFT/masks"),
    ("thin_object_detection/HRSOD/images", "thin_object_detection/HRSOD/masks_max255"),
)


class HQSegDataset(ISDataset):
    """HQSeg-44K ``val``: the sub-sets in order, each ``*.jpg`` sorted by path with mask ``<stem>.png``.

    Mask rule of the original: max over the three channels of the OpenCV read, > 0 -> 1.
    """

    name = "HQSeg"
    config_key = "HQSEG_PATH"
    layout = """
DIS5K/DIS-VD/
    im/<name>.jpg, gt/<name>.png
thin_object_detection/
    ThinObject5K/images_test/<name>.jpg, ThinObject5K/masks_test/<name>.png
    COIFT/images/<name>.jpg, COIFT/masks/<name>.png
    HRSOD/images/<name>.jpg, HRSOD/masks_max255/<name>.png
(masks: every non-black pixel is the object)
"""

    def __init__(self, root: PathLike) -> None:
        super().__init__(root)
        # All four sub-sets are required: a missing one would silently change the benchmark.
        self.check_layout(*(self.root / folder for subset in HQSEG_VAL_SUBSETS for folder in subset))
        for images, masks in HQSEG_VAL_SUBSETS:
            self._samples += [(path, self.root / masks / f"{path.stem}.png")
                              for path in sorted((self.root / images).glob("*.jpg"))]
        if not self._samples:
            raise self.not_found("no *.jpg images in the sub-set folders")

    def _load(self, index: int) -> DSample:
        image_path, mask_path = self._samples[index]
        image = read_image(image_path)
        mask = read_mask_bgr(mask_path)
        check_same_size(image, mask, image_path, mask_path)
        instances = np.max(mask.astype(np.int32), axis=2)
        instances[instances > 0] = 1
        return DSample(image, instances, sample_id=index, image_path=str(image_path), mask_path=str(mask_path))
