"""What a scene holds: its object kinds, its objects and their masks."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .drawing import Stroke

ATHLETE_KINDS = ("skier", "snowboarder")
# Worn gear is part of its athlete (a child in layer 1); held or ridden gear is an object of
# its own, as COCO annotates skis and snowboards apart from the person.
WORN_KINDS = ("helmet", "goggles")
HELD_KINDS = ("ski", "pole", "snowboard")
EQUIPMENT_KINDS = HELD_KINDS + WORN_KINDS
SCENERY_KINDS = ("flag", "tree", "fence")
KINDS = ATHLETE_KINDS + EQUIPMENT_KINDS + SCENERY_KINDS
TARGET_KINDS = ATHLETE_KINDS + EQUIPMENT_KINDS + ("flag",)


@dataclass
class SceneObject:
    """One object: its kind, its label ``value`` in layer ``layer``, its parent and children
    (indices into ``Scene.objects``) and its visible area in pixels."""

    kind: str
    layer: int
    value: int
    parent: Optional[int] = None
    children: List[int] = field(default_factory=list)
    area: int = 0


@dataclass
class Scene:
    """A rendered scene: ``image`` uint8 H x W x 3 RGB, ``layers`` int32 H x W x 2 (see the
    ``isegm.data.scenes`` docstring), ``objects`` and the ``light`` it was rendered under. ``strokes`` are the
    shapes of the objects as (object index + 1, stroke), in drawing order, for ``amodal_mask``."""

    image: np.ndarray
    layers: np.ndarray
    objects: List[SceneObject]
    seed: int
    light: str
    strokes: List[Tuple[int, Stroke]] = field(default_factory=list, repr=False)

    def mask(self, index: int) -> np.ndarray:
        """bool H x W: the visible pixels of object ``index``."""
        obj = self.objects[index]
        return self.layers[:, :, obj.layer] == obj.value

    def amodal_mask(self, index: int) -> np.ndarray:
        """bool H x W: object ``index`` (with its children) as drawn, before later objects hid
        parts of it."""
        owners = {index + 1} | {child + 1 for child in self.objects[index].children}
        mask = np.zeros(self.image.shape[:2], np.uint8)
        for owner, stroke in self.strokes:
            if owner in owners:
                stroke(mask, 1, cv2.LINE_8)
        return mask.astype(bool)

    def targets(self, kinds: Sequence[str] = TARGET_KINDS, min_area: int = 1) -> List[int]:
        """Indices of the objects of ``kinds`` with at least ``min_area`` visible pixels."""
        return [i for i, obj in enumerate(self.objects) if obj.kind in kinds and obj.area >= max(min_area, 1)]
