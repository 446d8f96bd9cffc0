"""``DSample``: one image of an evaluation dataset and the objects annotated in it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np


@dataclass(eq=False)
class DSample:
    """An image and its objects, as the RITM family's loaders return them.

    ``image`` is H x W x 3: uint8 RGB, or float32 in [0, 1] for WSESeg / SHSeg (the original
    loaders differ there and the protocol keeps it). ``instances_mask`` is an int32 H x W label
    map: object ``k`` is the pixels equal to ``object_values[k]``; pixels equal to
    ``ignore_value`` count neither as object nor as background. ``sample_id`` is the index in
    the dataset; the two paths name the files in reports and error messages.
    """

    image: np.ndarray
    instances_mask: np.ndarray
    object_values: Sequence[int] = (1,)
    ignore_value: Optional[int] = None
    sample_id: Optional[int] = None
    image_path: Optional[str] = None
    mask_path: Optional[str] = None

    @property
    def objects_ids(self) -> List[int]:
        """The ids ``gt_mask`` takes: ``0 .. n_objects-1``."""
        return list(range(len(self.object_values)))

    def gt_mask(self, object_id: int = 0) -> np.ndarray:
        """int32 H x W mask of one object: 1 object, 0 background, -1 ignore (C-contiguous)."""
        if not 0 <= object_id < len(self.object_values):
            raise IndexError(f"object id {object_id} out of range: the sample has {len(self.object_values)} object(s)")
        mask = (self.instances_mask == self.object_values[object_id]).astype(np.int32)
        if self.ignore_value is not None:
            mask[self.instances_mask == self.ignore_value] = -1
        return mask
