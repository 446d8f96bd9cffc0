"""``DSample``: one image of an evaluation dataset and the objects annotated in it;
``TrainingSample``: an image of a training dataset with its objects in label layers."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

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


# A mask transform for training: (image H x W x 3 uint8, label layers H x W x L int32, rng)
# -> (image, layers), the same geometric change applied to both (isegm.data.augmentation).
Augmentation = Callable[[np.ndarray, np.ndarray, np.random.Generator], Tuple[np.ndarray, np.ndarray]]


@dataclass
class ObjectNode:
    """One object of a training sample: its label (``layer``, ``value``) in the label layers, its
    parent and children in the part hierarchy (LVIS / COCO objects have none), and its area in
    pixels after the last augmentation."""

    layer: int
    value: int
    parent: Optional[int] = None
    children: List[int] = field(default_factory=list)
    area: int = 0


class TrainingSample:
    """An image and its objects, as the RITM family's training loaders build them.

    ``layers``: int32 label layers H x W x L (a 2-D map is one layer); an object is the pixels of
    one layer equal to its value, so overlapping objects (LVIS) live in different layers. Either
    ``objects`` (id -> ``ObjectNode``, hierarchies included) or ``objects_ids`` (a list of
    ``(layer, value)`` or, for one layer, plain values) names them. ``ignore_ids`` are regions
    that count neither as object nor as background (``(layer, value)`` or plain values).

    ``augment`` applies a transform to the original image and layers (never to an augmented
    copy), recomputes the areas and drops objects that vanished.
    """

    def __init__(self, image: np.ndarray, layers: np.ndarray, objects: Optional[Dict[int, ObjectNode]] = None,
                 objects_ids: Optional[Sequence[Any]] = None, ignore_ids: Optional[Sequence[Any]] = None,
                 sample_id: Optional[int] = None) -> None:
        if layers.ndim == 2:
            layers = layers[:, :, None]
        if image.shape[:2] != layers.shape[:2]:
            raise ValueError(f"sample {sample_id}: image {image.shape[:2]} and masks {layers.shape[:2]} differ in size")
        self.image, self.layers, self.sample_id = image, layers.astype(np.int32, copy=False), sample_id
        if objects is None:
            objects = {i: ObjectNode(*self._mapping(key)) for i, key in enumerate(objects_ids or [])}
        self.objects: Dict[int, ObjectNode] = copy.deepcopy(objects)
        self.ignored: List[Tuple[int, int]] = [self._mapping(key) for key in ignore_ids or []]
        self._original = (self.image, self.layers, copy.deepcopy(self.objects))
        self._compute_areas()

    def _mapping(self, key: Any) -> Tuple[int, int]:
        if isinstance(key, tuple):
            return int(key[0]), int(key[1])
        if self.layers.shape[2] != 1:
            raise ValueError(f"sample {self.sample_id}: plain object values need a single mask layer, got "
                             f"{self.layers.shape[2]}; give (layer, value) pairs")
        return 0, int(key)

    def augment(self, augmentation: Augmentation, rng: np.random.Generator) -> None:
        """Transform the original image and masks; objects left with no pixel are removed."""
        image, layers, objects = self._original
        self.image, self.layers = augmentation(image, layers.copy(), rng)
        self.objects = copy.deepcopy(objects)
        self._compute_areas()
        self.remove_small_objects(1)

    def remove_small_objects(self, min_area: int) -> None:
        """Drop objects under ``min_area`` pixels; their children move to their parent."""
        for obj_id in [i for i, node in self.objects.items() if node.area < min_area]:
            self._remove(obj_id)

    def get_object_mask(self, obj_id: int) -> np.ndarray:
        """int32 H x W: 1 object, 0 elsewhere, -1 in ignored regions."""
        node = self.objects[obj_id]
        mask = (self.layers[:, :, node.layer] == node.value).astype(np.int32)
        for layer, value in self.ignored:
            mask[self.layers[:, :, layer] == value] = -1
        return mask

    def get_background_mask(self) -> np.ndarray:
        """bool H x W: pixels of no object and no ignored region."""
        return self.layers.max(axis=2) == 0

    @property
    def objects_ids(self) -> List[int]:
        return list(self.objects)

    @property
    def root_objects(self) -> List[int]:
        """Objects without a parent (every object when there is no hierarchy)."""
        return [i for i, node in self.objects.items() if node.parent is None]

    def __len__(self) -> int:
        return len(self.objects)

    def _compute_areas(self) -> None:
        """Pixel area of every object; labels of no object (and not ignored) are cleared."""
        by_label = {(node.layer, node.value): i for i, node in self.objects.items()}
        ignored = set(self.ignored)
        for node in self.objects.values():
            node.area = 0
        for layer in range(self.layers.shape[2]):
            values, counts = np.unique(self.layers[:, :, layer], return_counts=True)
            for value, count in zip(values.tolist(), counts.tolist()):
                if value == 0 or (layer, value) in ignored:
                    continue
                if (layer, value) in by_label:
                    self.objects[by_label[layer, value]].area = count
                else:
                    if self.layers is self._original[1]:
                        self.layers = self.layers.copy()   # never edit the original masks
                    self.layers[:, :, layer][self.layers[:, :, layer] == value] = 0

    def _remove(self, obj_id: int) -> None:
        node = self.objects.pop(obj_id)
        for child in node.children:
            self.objects[child].parent = node.parent
        if node.parent is not None:
            parent = self.objects[node.parent]
            parent.children = [c for c in parent.children if c != obj_id] + node.children
