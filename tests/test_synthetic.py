"""Procedural winter-sports scenes: deterministic per seed, well-formed layers and objects,
occluded pixels removed from the occluded object's mask, both datasets usable by the training
loader and the evaluation loop."""
from __future__ import annotations

from typing import Tuple

import numpy as np
import pytest

from isegm.data.datasets.base import FirstSamples
from isegm.data.datasets.training import PointsSampler
from isegm.data.datasets.winter import WinterSportsDataset, WinterSportsEvalDataset
from isegm.data.sample import TrainingSample
from isegm.data.scenes import ATHLETE_KINDS, KINDS, TARGET_KINDS, WORN_KINDS, Scene, render_scene
from isegm.inference.baselines import get_baseline
from isegm.inference.evaluation import run_dataset


class FirstRootSampler(PointsSampler):
    """The first root object as the target, one positive click on its first pixel."""

    def sample(self, sample: TrainingSample, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
        mask = sample.get_object_mask(sample.root_objects[0]).astype(np.float32)
        points = np.full((2, 3), -1, np.float32)
        points[0] = (*np.argwhere(mask > 0)[0], 0)
        return mask, points


def test_same_seed_same_bytes_different_seeds_differ():
    a, b, c = render_scene(7), render_scene(7), render_scene(8)
    assert a.image.tobytes() == b.image.tobytes() and a.layers.tobytes() == b.layers.tobytes()
    assert a.objects == b.objects and a.light == b.light
    assert not np.array_equal(a.image, c.image)


@pytest.mark.parametrize("size", [(224, 224), (160, 256)])
def test_shapes_dtypes_and_objects(size):
    for seed in range(3):
        scene = render_scene(seed, size)
        assert scene.image.shape == (*size, 3) and scene.image.dtype == np.uint8
        assert scene.layers.shape == (*size, 2) and scene.layers.dtype == np.int32
        assert any(obj.kind in ATHLETE_KINDS for obj in scene.objects)
        for i, obj in enumerate(scene.objects):
            assert obj.kind in KINDS
            assert obj.area == scene.mask(i).sum()
            # Worn gear lives in layer 1 under its athlete, whose layer-0 mask contains it; held
            # gear (skis, poles, boards) is a layer-0 object of its own.
            assert (obj.layer == 1) == (obj.kind in WORN_KINDS) and (obj.parent is not None) == (obj.layer == 1)
            if obj.layer == 1:
                assert scene.objects[obj.parent].kind in ATHLETE_KINDS and i in scene.objects[obj.parent].children
                assert not (scene.mask(i) & ~scene.mask(obj.parent)).any()
            assert not (scene.mask(i) & ~scene.amodal_mask(i)).any()   # visible within the drawn shape


def _occluded_athlete() -> Tuple[Scene, int, np.ndarray]:
    """The first scene (by seed) with an athlete of whom another object hides at least 50 px."""
    for seed in range(100):
        scene = render_scene(seed)
        for i in scene.targets(ATHLETE_KINDS):
            hidden = scene.amodal_mask(i) & ~scene.mask(i)
            if hidden.sum() >= 50:
                return scene, i, hidden
    raise AssertionError("no occluded athlete in 100 scenes")


def test_occluded_pixels_leave_the_athlete_mask():
    scene, athlete, hidden = _occluded_athlete()
    whole = scene.layers[:, :, 0]
    value = scene.objects[athlete].value
    assert (whole[hidden] != 0).all() and (whole[hidden] != value).all()   # another object is there
    occluders = set(np.unique(whole[hidden]).tolist())
    for i, obj in enumerate(scene.objects):
        if obj.layer == 0 and obj.value in occluders:
            assert not (scene.mask(i) & scene.mask(athlete)).any()
            for part in scene.objects[athlete].children:   # the athlete's equipment is hidden too
                assert not (scene.mask(i) & scene.mask(part)).any()


def test_training_dataset_yields_samples_with_hierarchy():
    dataset = WinterSportsDataset(FirstRootSampler(), num_scenes=3, seed=1)
    assert len(dataset) == 3
    sample = dataset.get_sample(0, np.random.default_rng(0))
    assert isinstance(sample, TrainingSample) and len(sample) > 0
    scene = dataset.scene(0)
    for obj_id, node in sample.objects.items():
        assert scene.objects[obj_id].kind in TARGET_KINDS and node.area > 0
        assert sample.get_object_mask(obj_id).sum() == node.area
        if node.parent is not None:
            assert scene.objects[node.parent].kind in ATHLETE_KINDS and obj_id in sample.objects[node.parent].children
    item = dataset[0]
    assert item["images"].shape == (3, 224, 224) and item["instances"].shape == (1, 224, 224)
    assert item["instances"].max() == 1
    # Equipment only: every object becomes a root.
    skis = WinterSportsDataset(FirstRootSampler(), num_scenes=1, seed=1, kinds=("ski",))
    skis = skis.get_sample(0, np.random.default_rng(0))
    assert all(scene.objects[i].kind == "ski" and node.parent is None for i, node in skis.objects.items())


def test_eval_dataset_targets_are_held_out_and_above_min_area():
    dataset = WinterSportsEvalDataset(num_scenes=3)
    assert dataset.name == "WinterSports" and len(dataset) > 3
    assert not set(dataset.scene_seeds) & set(WinterSportsDataset(FirstRootSampler(), num_scenes=3).dataset_samples)
    for index in range(len(dataset)):
        sample = dataset.get_sample(index)
        gt = sample.gt_mask(0)
        assert sample.image.shape == (224, 224, 3) and sample.image.dtype == np.uint8
        assert set(np.unique(gt).tolist()) == {0, 1} and gt.sum() >= dataset.min_area == 100
        scene_index, obj = dataset.instance(index)
        assert np.array_equal(gt.astype(bool), dataset.scene(scene_index).mask(obj))
    with pytest.raises(IndexError):
        dataset.get_sample(len(dataset))


def test_eval_dataset_runs_through_the_evaluation_loop():
    dataset = FirstSamples(WinterSportsEvalDataset(num_scenes=1), 2)
    result = run_dataset(dataset, get_baseline("grabcut"), max_iou_thr=0.9, min_clicks=3, max_clicks=3)
    assert [(r.sample_index, r.object_id) for r in result.instances] == [(0, 0), (1, 0)]
    for instance in result.instances:
        assert len(instance.ious) == 3 and ((instance.ious >= 0) & (instance.ious <= 1)).all()


def test_close_framing_gives_large_athletes_and_rejects_unknown_framings():
    for seed in range(5):
        scene = render_scene(seed, (224, 224), framing="close")
        athletes = scene.targets(ATHLETE_KINDS)
        assert 1 <= len(athletes) <= 2
        rows = np.flatnonzero(np.logical_or.reduce([scene.amodal_mask(i) for i in athletes]).any(1))
        assert rows[-1] - rows[0] > 0.4 * 224
    with pytest.raises(ValueError, match="framing"):
        render_scene(0, (64, 64), framing="aerial")
