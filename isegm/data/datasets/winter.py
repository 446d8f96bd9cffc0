"""Generated winter-sports datasets (scenes of ``isegm.data.scenes``): training and evaluation
samples with no download. ``WinterSportsDataset`` trains on the scenes' objects with their
hierarchy; ``WinterSportsEvalDataset`` holds out a disjoint seed range, one instance per sample.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..sample import Augmentation, DSample, ObjectNode, TrainingSample
from ..scenes import TARGET_KINDS, Scene, render_scene
from .base import ISDataset
from .training import PointsSampler, TrainingDataset

# Scene i of a dataset with seed s is render_scene(s * SEED_STRIDE + i) for training and
# render_scene(EVAL_SEED_OFFSET + s * SEED_STRIDE + i) for evaluation: disjoint ranges for any
# seed below 10**6 and fewer than SEED_STRIDE scenes.
SEED_STRIDE = 1_000_003
EVAL_SEED_OFFSET = 1 << 40
# Evaluation targets smaller than this fraction of the image are skipped (100 px at 224 x 224).
MIN_AREA_FRACTION = 0.002


def _training_objects(scene: Scene, kinds: Sequence[str]) -> Dict[int, ObjectNode]:
    """Visible objects of ``kinds`` as ``ObjectNode``s keyed by scene index; a parent outside
    the selection is dropped (the child becomes a root)."""
    chosen = set(scene.targets(kinds))
    nodes = {}
    for i in sorted(chosen):
        obj = scene.objects[i]
        parent = obj.parent if obj.parent in chosen else None
        nodes[i] = ObjectNode(obj.layer, obj.value, parent, [c for c in obj.children if c in chosen])
    return nodes


class WinterSportsDataset(TrainingDataset):
    """Generated training scenes: scene ``i`` is ``render_scene(seed * SEED_STRIDE + i, size)``.

    Objects are the visible ``kinds`` (default ``TARGET_KINDS``) with their hierarchy: an
    athlete's equipment are its children, so the points sampler may pick the athlete or a part.
    The scene itself is fixed per index; ``rng`` only drives augmentation and clicks.
    """

    def __init__(self, points_sampler: PointsSampler, num_scenes: int = 10_000, size: Tuple[int, int] = (224, 224),
                 seed: int = 0, kinds: Sequence[str] = TARGET_KINDS, augmentation: Optional[Augmentation] = None,
                 min_object_area: int = 0, keep_background_prob: float = 0.0, epoch_len: int = -1,
                 framing: str = "wide") -> None:
        super().__init__(points_sampler, augmentation, min_object_area, keep_background_prob, epoch_len, seed)
        self.size, self.kinds, self.framing = tuple(size), tuple(kinds), framing
        self.dataset_samples = [seed * SEED_STRIDE + i for i in range(num_scenes)]

    def scene(self, index: int) -> Scene:
        """Scene ``index`` of the dataset."""
        return render_scene(self.dataset_samples[index], self.size, self.framing)

    def get_sample(self, index: int, rng: np.random.Generator) -> TrainingSample:
        scene = self.scene(index)
        return TrainingSample(scene.image, scene.layers, objects=_training_objects(scene, self.kinds), sample_id=index)


class WinterSportsEvalDataset(ISDataset):
    """Held-out generated scenes: scene ``i`` is ``render_scene(EVAL_SEED_OFFSET + seed *
    SEED_STRIDE + i, size)``, a seed range no ``WinterSportsDataset`` uses.

    One instance per sample, as the RITM evaluation datasets: every (scene, object) pair whose
    object is of ``kinds`` with at least ``min_area`` visible pixels (default
    ``MIN_AREA_FRACTION`` of the image), in scene order then object order (an athlete, then its
    skis, poles or board, helmet and goggles). ``get_sample(i).gt_mask(0)`` is the target; the
    scenes are rendered once here to list the instances.
    """

    name = "WinterSports"
    config_key = ""   # generated: no dataset folder to configure

    def __init__(self, num_scenes: int = 100, size: Tuple[int, int] = (224, 224), seed: int = 0,
                 min_area: Optional[int] = None, kinds: Sequence[str] = TARGET_KINDS, framing: str = "wide") -> None:
        # No root folder: ISDataset.__init__ (which records one) does not apply.
        self.size, self.kinds, self.framing = tuple(size), tuple(kinds), framing
        self.min_area = int(MIN_AREA_FRACTION * size[0] * size[1]) if min_area is None else min_area
        self.scene_seeds = [EVAL_SEED_OFFSET + seed * SEED_STRIDE + i for i in range(num_scenes)]
        self._samples: List[Tuple[int, int]] = []
        self._cached: Optional[Tuple[int, Scene]] = None
        for scene_index in range(num_scenes):
            scene = self.scene(scene_index)
            self._samples += [(scene_index, obj) for obj in scene.targets(self.kinds, self.min_area)]

    def scene(self, scene_index: int) -> Scene:
        """The scene, kept while its instances are read one after another."""
        if self._cached is None or self._cached[0] != scene_index:
            self._cached = (scene_index, render_scene(self.scene_seeds[scene_index], self.size, self.framing))
        return self._cached[1]

    def instance(self, index: int) -> Tuple[int, int]:
        """(scene index, object index in ``Scene.objects``) of sample ``index``."""
        return self._samples[index]

    def _load(self, index: int) -> DSample:
        scene_index, obj_index = self._samples[index]
        scene = self.scene(scene_index)
        obj = scene.objects[obj_index]
        return DSample(scene.image, np.ascontiguousarray(scene.layers[:, :, obj.layer]), object_values=(obj.value,),
                       sample_id=index)

