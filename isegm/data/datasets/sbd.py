"""SBD evaluation split: every (image, instance id) pair of ``val.txt`` is one sample; and
``SBDDataset``, the training split as RITM's loader reads it (one sample per image).

Instance maps are MATLAB files (field ``GTinst``), read with ``scipy.io.loadmat``; scipy is an
optional dependency, imported only here. The pair list costs one read of every ``.mat`` file,
so it is cached next to the data as ``<split>_images_and_ids_list.pkl``, the original's file.
"""
from __future__ import annotations

import os
import pickle
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np

from ..sample import DSample, TrainingSample
from .base import DatasetError, ISDataset, PathLike, check_same_size, read_image
from .training import PointsSampler, TrainingDataset

Pair = Tuple[str, int]


def _loadmat() -> Callable:
    try:
        from scipy.io import loadmat
    except ImportError:
        raise ImportError("reading SBD needs scipy (its instance maps are .mat files): pip install scipy") from None
    return loadmat


def read_instance_map(path: Path) -> np.ndarray:
    """int32 H x W instance-id map: the first entry of the ``GTinst`` struct (0 = no instance)."""
    loadmat = _loadmat()
    from scipy.io.matlab import MatReadError
    try:
        instances = loadmat(str(path))["GTinst"][0][0][0]
    except (OSError, ValueError, KeyError, IndexError, TypeError, MatReadError) as err:
        raise DatasetError(f"cannot read the instance map (field GTinst) of {str(path)!r}: {err!r}") from None
    if instances.ndim != 2:
        raise DatasetError(f"instance map of {str(path)!r} has shape {instances.shape}, expected H x W")
    return instances.astype(np.int32)



def _layout(split: str, other: str) -> str:
    """The SBD folder, shown in errors (both datasets read the same tree, another split list)."""
    return (f"\nimg/\n    <name>.jpg       images\ninst/\n    <name>.mat       instance maps (MATLAB struct "
            f"GTinst, first field: H x W ids, 0 = none)\n{(split + '.txt').ljust(21)}image names of the split, one "
            f"per line ({other}.txt for split=\"{other}\")\n")

class _PairsUnpickler(pickle.Unpickler):
    """Unpickles built-in lists, tuples, strings and ints only: a cache file never runs code."""

    def find_class(self, module: str, name: str) -> None:
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a pair-list cache")


def _read_cache(path: Path, names: Sequence[str]) -> Optional[List[Pair]]:
    """The cached pairs, or None when the file is absent or does not fit ``names``."""
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as f:
            pairs = _PairsUnpickler(f).load()
    except Exception as err:  # any broken pickle: rebuild instead of failing
        warnings.warn(f"ignoring the unreadable cache {str(path)!r} ({err!r}); rebuilding it")
        return None
    if not isinstance(pairs, list) or not all(
            isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)
            and isinstance(pair[1], int) and not isinstance(pair[1], bool) for pair in pairs):
        warnings.warn(f"ignoring the cache {str(path)!r}: not a list of (image name, instance id) pairs; rebuilding it")
        return None
    if not _follows(pairs, names):
        warnings.warn(f"ignoring the cache {str(path)!r}: its images do not match the split list; rebuilding it")
        return None
    return pairs


def _follows(pairs: Sequence[Pair], names: Sequence[str]) -> bool:
    """Whether the pairs' image names run through ``names`` in order (images without instances
    are absent): a cache left from another list file would silently evaluate other images."""
    remaining = iter(names)
    current = None
    for name, _ in pairs:
        if name != current:
            if name not in remaining:  # consumes the iterator up to the match
                return False
            current = name
    return True


def _write_cache(path: Path, pairs: List[Pair]) -> None:
    """Write the cache atomically; a read-only dataset folder only costs the rebuild next time."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    except OSError as err:
        warnings.warn(f"cannot write the SBD pair-list cache {str(path)!r} ({err}); it is rebuilt on every run")
        return
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(pairs, f)
        os.replace(tmp, path)
    except OSError as err:
        os.unlink(tmp)
        warnings.warn(f"cannot write the SBD pair-list cache {str(path)!r} ({err}); it is rebuilt on every run")


class SBDEvaluationDataset(ISDataset):
    """SBD for evaluation: ``img/<name>.jpg``, ``inst/<name>.mat`` and the split list ``<split>.txt``.

    Samples are (image name, instance id) pairs in list order, ids ascending (the non-zero labels
    of the map); the GT is ``map == id``, with no ignore label and no size filter.
    """

    name = "SBD"
    config_key = "SBD_PATH"
    layout = _layout("val", "train")

    def __init__(self, root: PathLike, split: str = "val") -> None:
        super().__init__(root)
        if split not in ("train", "val"):
            raise ValueError(f"SBD split must be 'train' or 'val', got {split!r}")
        self.split = split
        list_path = self.root / f"{split}.txt"
        self.check_layout(self.root / "img", self.root / "inst", list_path)
        _loadmat()  # fail here, not at the first sample, when scipy is missing
        with open(list_path) as f:
            names = [line.strip() for line in f if line.strip()]
        cache = self.root / f"{split}_images_and_ids_list.pkl"
        pairs = _read_cache(cache, names)
        if pairs is None:
            pairs = [(name, int(i)) for name in names
                     for i in np.unique(read_instance_map(self.root / "inst" / f"{name}.mat")) if i != 0]
            _write_cache(cache, pairs)
        if not pairs:
            raise self.not_found(f"no instances in the images of {str(list_path)!r}")
        self._samples = pairs

    def _load(self, index: int) -> DSample:
        name, instance_id = self._samples[index]
        image_path, mask_path = self.root / "img" / f"{name}.jpg", self.root / "inst" / f"{name}.mat"
        image = read_image(image_path)
        instances = read_instance_map(mask_path)
        check_same_size(image, instances, image_path, mask_path)
        return DSample(image, instances, object_values=(instance_id,), sample_id=index,
                       image_path=str(image_path), mask_path=str(mask_path))


def remove_thin_objects(instances: np.ndarray, min_bbox_fill: float) -> np.ndarray:
    """Clear the objects that fill less than ``min_bbox_fill`` of their bounding box (RITM's
    ``buggy_mask_thresh``: SBD holds a few broken, scattered instance masks). Edits ``instances``."""
    if min_bbox_fill <= 0:
        return instances
    for obj_id in np.unique(instances):
        if obj_id == 0:
            continue
        rows, cols = np.nonzero(instances == obj_id)
        bbox_area = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        if rows.size / bbox_area < min_bbox_fill:
            instances[instances == obj_id] = 0
    return instances


class SBDDataset(TrainingDataset):
    """SBD for training, as RITM's ``SBDDataset``: one sample per image of ``<split>.txt``, every
    instance of the map an object (ids ascending), no ignored region. Objects that fill less than
    ``buggy_mask_thresh`` of their bounding box are removed (RITM's default 0.08; 0 keeps all).
    """

    name = "SBD"
    config_key = "SBD_PATH"
    layout = _layout("train", "val")
    # The evaluation datasets' layout check and its error, shown with this layout and key.
    check_layout = ISDataset.check_layout
    not_found = ISDataset.not_found

    def __init__(self, dataset_path: PathLike, points_sampler: PointsSampler, split: str = "train",
                 buggy_mask_thresh: float = 0.08, **kwargs: Any) -> None:
        """``kwargs``: ``TrainingDataset``'s (augmentation, min_object_area, keep_background_prob,
        epoch_len, seed)."""
        super().__init__(points_sampler, **kwargs)
        if split not in ("train", "val"):
            raise ValueError(f"SBD split must be 'train' or 'val', got {split!r}")
        self.root, self.split, self.buggy_mask_thresh = Path(dataset_path), split, buggy_mask_thresh
        list_path = self.root / f"{split}.txt"
        self.check_layout(self.root / "img", self.root / "inst", list_path)
        _loadmat()  # fail here, not at the first sample, when scipy is missing
        with open(list_path) as f:
            self.dataset_samples: List[str] = [line.strip() for line in f if line.strip()]
        if not self.dataset_samples:
            raise self.not_found(f"no image names in {str(list_path)!r}")

    def get_sample(self, index: int, rng: np.random.Generator) -> TrainingSample:
        """The ``index``-th image of the list and its instances (label map, one layer)."""
        name = self.dataset_samples[index]
        image_path, mask_path = self.root / "img" / f"{name}.jpg", self.root / "inst" / f"{name}.mat"
        image = read_image(image_path)
        instances = read_instance_map(mask_path)
        check_same_size(image, instances, image_path, mask_path)
        instances = remove_thin_objects(instances, self.buggy_mask_thresh)
        objects_ids = [int(i) for i in np.unique(instances) if i != 0]
        return TrainingSample(image, instances, objects_ids=objects_ids, sample_id=index)
