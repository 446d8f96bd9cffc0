"""``TrainingSample``: objects in label layers, hierarchy, ignored regions and augmentation."""
from __future__ import annotations

import numpy as np
import pytest

from isegm.data.sample import ObjectNode, TrainingSample


def layers() -> np.ndarray:
    """Two layers: layer 0 holds objects 1 (rows 0-3) and 2 (rows 6-7) and an ignored region 9;
    layer 1 holds object 5 overlapping object 1, and a stray label 7 that no object claims."""
    masks = np.zeros((8, 8, 2), dtype=np.int32)
    masks[0:4, :, 0] = 1
    masks[6:8, :, 0] = 2
    masks[4, :, 0] = 9
    masks[2:5, 0:2, 1] = 5
    masks[7, 7, 1] = 7
    return masks


def test_objects_masks_areas_and_background():
    sample = TrainingSample(np.zeros((8, 8, 3), np.uint8), layers(), objects_ids=[(0, 1), (0, 2), (1, 5)],
                            ignore_ids=[(0, 9)])
    assert len(sample) == 3 and sample.root_objects == [0, 1, 2]
    assert [sample.objects[i].area for i in range(3)] == [32, 16, 6]
    mask = sample.get_object_mask(2)
    assert mask.dtype == np.int32 and (mask == 1).sum() == 4 and (mask[4] == -1).all()
    assert sample.layers[7, 7, 1] == 0   # the unclaimed label is cleared (in a copy)
    background = sample.get_background_mask()
    assert background.sum() == 8 and background[5].all()   # the ignored row 4 is not background


def test_plain_values_need_one_layer():
    with pytest.raises(ValueError, match="single mask layer"):
        TrainingSample(np.zeros((8, 8, 3), np.uint8), layers(), objects_ids=[1, 2])
    sample = TrainingSample(np.zeros((8, 8, 3), np.uint8), layers()[:, :, 0], objects_ids=[1, 2], ignore_ids=[9])
    assert sample.objects_ids == [0, 1] and (sample.get_object_mask(0) == -1).sum() == 8


def test_removing_a_parent_moves_children_up():
    objects = {0: ObjectNode(0, 1, children=[1]), 1: ObjectNode(1, 5, parent=0), 2: ObjectNode(0, 2)}
    sample = TrainingSample(np.zeros((8, 8, 3), np.uint8), layers(), objects=objects)
    assert sample.root_objects == [0, 2]
    sample.remove_small_objects(20)
    assert sample.objects_ids == [0] and sample.objects[0].area == 32
    sample = TrainingSample(np.zeros((8, 8, 3), np.uint8), layers(), objects=objects)
    sample._remove(0)
    assert sample.root_objects == [1, 2] and sample.objects[1].parent is None


def test_augment_starts_from_the_original_and_drops_vanished_objects():
    source = layers()
    sample = TrainingSample(np.arange(192, dtype=np.uint8).reshape(8, 8, 3), source, objects_ids=[(0, 1), (0, 2)])

    def top_half(image, masks, rng):
        return image[:4], masks[:4]

    sample.augment(top_half, np.random.default_rng(0))
    assert sample.image.shape == (4, 8, 3) and sample.objects_ids == [0] and sample.objects[0].area == 32
    sample.augment(lambda image, masks, rng: (image, masks), np.random.default_rng(0))
    assert sample.objects_ids == [0, 1] and sample.image.shape == (8, 8, 3)
    assert (source == layers()).all()   # the caller's masks are never changed
