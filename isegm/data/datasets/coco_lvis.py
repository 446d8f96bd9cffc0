"""COCO+LVIS, the RITM family's training set: LVIS v1 and COCO panoptic objects merged per image.

``scripts/convert_annotations.py`` builds it from the official annotation files; the RITM
authors' prebuilt archive has the same layout. Per split folder (``train/`` or ``val/``):

- ``images/<id>.jpg``: the COCO images, ``<id>`` the file stem (``000000391895``);
- ``masks/<id>.pickle``: ``(encoded_layers, objs_mapping)``. ``encoded_layers`` is a list of
  PNG-encoded uint8 label layers (``cv2.imencode`` arrays); ``objs_mapping[k] = (layer, value)``
  places object ``k`` in them. Objects ``0 .. num_instance_masks-1`` are things (COCO and LVIS
  instances); the rest are COCO stuff regions;
- ``hannotation.pickle``: ``{<id>: {"num_instance_masks": n, "hierarchy": {k: node}}}`` where a
  node is None (an object with neither parent nor children) or
  ``{"children": [k, ...], "parent": k or None, "node_level": depth}``; only things appear in it.

Pickles are read with an unpickler that builds plain containers and numpy arrays only, so a
downloaded archive cannot run code.
"""
from __future__ import annotations

import importlib
import json
import pickle
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..sample import ObjectNode, TrainingSample
from .base import DatasetError, ISDataset, PathLike, check_same_size, read_image
from .training import PointsSampler, TrainingDataset

Mapping = Tuple[int, int]

# What a COCO+LVIS pickle may build: numpy arrays (pickled by numpy 1 or 2, any protocol) and
# the codec protocol 2 uses for bytes. Anything else is refused.
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
}


class _ArraysUnpickler(pickle.Unpickler):
    """Unpickles built-in containers and numpy arrays only."""

    def find_class(self, module: str, name: str) -> Any:
        # numpy 2 renamed numpy.core to numpy._core; accept either spelling and import whichever exists.
        canonical = module.replace("numpy.core.", "numpy._core.", 1) if module.startswith("numpy.core.") else module
        if (canonical, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a dataset pickle")
        try:
            return getattr(importlib.import_module(canonical), name)
        except ImportError:   # numpy 1 reading a numpy 2 pickle
            return getattr(importlib.import_module(canonical.replace("numpy._core.", "numpy.core.", 1)), name)


def load_pickle(path: Path, what: str) -> Any:
    """Unpickle a dataset file (containers and numpy arrays only); ``DatasetError`` names it otherwise."""
    try:
        with open(path, "rb") as f:
            return _ArraysUnpickler(f).load()
    except FileNotFoundError:
        raise DatasetError(f"{what} {str(path)!r} is missing") from None
    except Exception as err:  # any broken or foreign pickle
        raise DatasetError(f"cannot read {what} {str(path)!r}: {err!r}") from None


def pack_masks(masks: Sequence[np.ndarray]) -> Tuple[np.ndarray, List[Mapping]]:
    """Place boolean H x W masks in as few uint8 label layers as RITM's ``encode_masks`` does.

    Masks go largest first (equal areas: the later mask first); each takes the first layer that
    has no pixel under it and fewer than 255 objects, with the next free value, else opens a new
    layer. Returns the layers H x W x L uint8 and ``mapping[k] = (layer, value)`` of mask ``k``.
    """
    if not masks:
        raise ValueError("pack_masks needs at least one mask")
    layers = [np.zeros(masks[0].shape, dtype=np.uint8)]
    counts = [0]
    mapping: List[Mapping] = [(0, 0)] * len(masks)
    for k in sorted(range(len(masks)), key=lambda i: (int(masks[i].sum()), i), reverse=True):
        mask = masks[k]
        for layer_index, layer in enumerate(layers):
            if counts[layer_index] < 255 and not layer[mask].any():
                break
        else:
            layers.append(np.zeros_like(layers[0]))
            counts.append(0)
            layer_index = len(layers) - 1
        counts[layer_index] += 1
        layers[layer_index][mask] = counts[layer_index]
        mapping[k] = (layer_index, counts[layer_index])
    return np.stack(layers, axis=2), mapping


def encode_masks(masks: Sequence[np.ndarray]) -> Tuple[List[np.ndarray], List[Mapping]]:
    """The content of a ``masks/<id>.pickle``: PNG-encoded layers (``cv2.imencode`` uint8 arrays,
    what the original reader passes to ``cv2.imdecode``) and the objects mapping."""
    layers, mapping = pack_masks(masks)
    encoded = []
    for index in range(layers.shape[2]):
        ok, png = cv2.imencode(".png", np.ascontiguousarray(layers[:, :, index]))
        if not ok:
            raise ValueError("OpenCV could not PNG-encode a mask layer")
        encoded.append(png)
    return encoded, mapping


def decode_layers(encoded_layers: Sequence[Any], path: Path) -> np.ndarray:
    """int32 H x W x L label layers from the PNG-encoded ones of ``path`` (named in errors)."""
    layers = []
    for index, encoded in enumerate(encoded_layers):
        try:
            layer = cv2.imdecode(np.asarray(encoded, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        except (cv2.error, ValueError, TypeError) as err:
            raise DatasetError(f"cannot decode mask layer {index} of {str(path)!r}: {err}") from None
        if layer is None or layer.ndim != 2:
            raise DatasetError(f"mask layer {index} of {str(path)!r} is not a single-channel PNG image")
        if layers and layer.shape != layers[0].shape:
            raise DatasetError(f"mask layers of {str(path)!r} differ in size: {layers[0].shape} and {layer.shape}")
        layers.append(layer)
    if not layers:
        raise DatasetError(f"{str(path)!r} holds no mask layer")
    return np.stack(layers, axis=2).astype(np.int32)


class CocoLvisDataset(TrainingDataset):
    """COCO+LVIS for training, as RITM's ``CocoLvisDataset``: one sample per image, sorted by id.

    Things keep their part hierarchy (``ObjectNode.parent`` / ``children``). With probability
    ``stuff_prob`` (drawn from the sample's ``rng``, only when ``stuff_prob > 0``) the stuff
    regions join as root objects; otherwise their pixels are cleared. SkipClick trains with
    ``stuff_prob=0.30``. ``allow_list_name``: a JSON list of image ids in the split folder; only
    those images are used. ``anno_file``: the annotation pickle in the split folder.
    """

    name = "COCO+LVIS"
    config_key = "LVIS_v1_PATH"
    layout = """
train/                      the split (val/ for split="val")
    images/<id>.jpg         images
    masks/<id>.pickle       (PNG-encoded label layers, [(layer, value) per object])
    hannotation.pickle      {<id>: {"num_instance_masks": n, "hierarchy": {...}}}
(build it with scripts/convert_annotations.py from the COCO 2017 and LVIS v1 files)
"""
    # The evaluation datasets' layout check and its error, shown with this layout and key.
    check_layout = ISDataset.check_layout
    not_found = ISDataset.not_found

    def __init__(self, dataset_path: PathLike, points_sampler: PointsSampler, split: str = "train",
                 stuff_prob: float = 0.0, allow_list_name: Optional[str] = None,
                 anno_file: str = "hannotation.pickle", **kwargs: Any) -> None:
        """``kwargs``: ``TrainingDataset``'s (augmentation, min_object_area, keep_background_prob,
        epoch_len, seed)."""
        super().__init__(points_sampler, **kwargs)
        if split not in ("train", "val"):
            raise ValueError(f"COCO+LVIS split must be 'train' or 'val', got {split!r}")
        if not 0.0 <= stuff_prob <= 1.0:
            raise ValueError(f"stuff_prob must be in [0, 1], got {stuff_prob}")
        self.root = Path(dataset_path)
        self.split, self.stuff_prob = split, stuff_prob
        split_path = self.root / split
        self._images_path, self._masks_path = split_path / "images", split_path / "masks"
        anno_path = split_path / anno_file
        self.check_layout(split_path, self._images_path, self._masks_path, anno_path)

        annotation = load_pickle(anno_path, "annotation file")
        if not isinstance(annotation, dict):
            raise DatasetError(f"annotation file {str(anno_path)!r} holds a {type(annotation).__name__}; expected a "
                               "dict {image id: {'num_instance_masks': n, 'hierarchy': {...}}}")
        samples = sorted(annotation.items())
        if allow_list_name is not None:
            allow_path = split_path / allow_list_name
            self.check_layout(allow_path)
            try:
                with open(allow_path) as f:
                    allowed = set(json.load(f))
            except (OSError, ValueError, TypeError) as err:
                raise DatasetError(f"cannot read the allow list {str(allow_path)!r} (a JSON list of image ids): "
                                   f"{err}") from None
            samples = [sample for sample in samples if sample[0] in allowed]
        if not samples:
            where = f" after the allow list {allow_list_name!r}" if allow_list_name is not None else ""
            raise self.not_found(f"no images in {str(anno_path)!r}{where}")
        self.dataset_samples: List[Tuple[str, Dict[str, Any]]] = samples

    def get_sample(self, index: int, rng: np.random.Generator) -> TrainingSample:
        """The ``index``-th image (sorted by id) with its things, and its stuff with probability ``stuff_prob``."""
        image_id, info = self.dataset_samples[index]
        image_path = self._images_path / f"{image_id}.jpg"
        masks_path = self._masks_path / f"{image_id}.pickle"
        image = read_image(image_path)
        packed = load_pickle(masks_path, "mask file")
        if not (isinstance(packed, (tuple, list)) and len(packed) == 2):
            raise DatasetError(f"mask file {str(masks_path)!r} must hold (encoded layers, objects mapping)")
        encoded_layers, mapping = packed
        layers = decode_layers(encoded_layers, masks_path)
        check_same_size(image, layers, image_path, masks_path)
        try:
            mapping = [(int(layer), int(value)) for layer, value in mapping]
            num_things, hierarchy = int(info["num_instance_masks"]), info["hierarchy"]
            objects = {}
            for obj_id, node in hierarchy.items():
                node = node or {"children": [], "parent": None}
                objects[int(obj_id)] = ObjectNode(*mapping[obj_id], parent=node["parent"],
                                                  children=list(node["children"]))
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as err:
            raise DatasetError(f"entry {image_id!r} of the annotation file does not fit {str(masks_path)!r}: "
                               f"{err!r}") from None

        if self.stuff_prob > 0 and rng.random() < self.stuff_prob:
            for obj_id in range(num_things, len(mapping)):
                objects[obj_id] = ObjectNode(*mapping[obj_id])
        else:
            for layer, value in mapping[num_things:]:
                layers[:, :, layer][layers[:, :, layer] == value] = 0
        return TrainingSample(image, layers, objects=objects, sample_id=index)
