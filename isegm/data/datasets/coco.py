"""A COCO-format instance dataset for training or fine-tuning on one's own data, and the
decoder of COCO segmentations (polygons, uncompressed and compressed RLE) that the COCO+LVIS
converter shares.

Polygons are filled as RITM's LVIS reader fills them (each polygon's vertices rounded to
pixels, ``cv2.fillPoly``, polygons of one object united). RLE is decoded by
``isegm.utils.rle``, with no pycocotools.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from ...utils.rle import decode_rle
from ..sample import TrainingSample
from .base import DatasetError, DatasetNotFoundError, PathLike, read_image
from .coco_lvis import pack_masks
from .training import PointsSampler, TrainingDataset

Segmentation = Union[List[List[float]], Dict[str, Any]]


def read_json(path: Path, what: str) -> Any:
    """The parsed JSON file; ``DatasetNotFoundError`` / ``DatasetError`` name it otherwise."""
    if not path.is_file():
        raise DatasetNotFoundError(f"{what} {str(path)!r} not found")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise DatasetError(f"cannot read {what} {str(path)!r}: {err}") from None


def decode_segmentation(segmentation: Segmentation, height: int, width: int) -> np.ndarray:
    """bool H x W mask of a COCO ``segmentation``: a list of polygons ``[x0, y0, x1, y1, ...]``
    (x = column, y = row) or an RLE dict ``{"size": [H, W], "counts": list or string}``."""
    if isinstance(segmentation, dict):
        return decode_rle(segmentation, height, width)
    if not isinstance(segmentation, list):
        raise ValueError(f"segmentation must be a list of polygons or an RLE dict, got {type(segmentation).__name__}")
    mask = np.zeros((height, width), dtype=np.uint8)
    for polygon in segmentation:
        points = np.asarray(polygon, dtype=np.float64)
        if points.ndim != 1 or points.size % 2:
            raise ValueError("a polygon must be a flat list of x, y coordinates")
        cv2.fillPoly(mask, [np.round(points.reshape(-1, 2)).astype(np.int32)], 1)
    return mask.astype(bool)


class CocoDataset(TrainingDataset):
    """Instances of a COCO-format JSON (``images``, ``annotations`` with polygon or RLE
    ``segmentation``) over the images of ``images_dir`` (``file_name`` relative to it).

    Every non-crowd annotation is an object; overlapping objects go to separate label layers.
    ``iscrowd`` regions are ignored (neither object nor background, -1 in target masks).
    ``category_ids`` keeps only the annotations of those categories, crowds included (default
    all). Images with no object are left out; samples follow the JSON's image order.
    """

    def __init__(self, images_dir: PathLike, annotations_file: PathLike, points_sampler: PointsSampler,
                 category_ids: Optional[Sequence[int]] = None, **kwargs: Any) -> None:
        """``kwargs``: ``TrainingDataset``'s (augmentation, min_object_area, keep_background_prob,
        epoch_len, seed)."""
        super().__init__(points_sampler, **kwargs)
        self.images_dir, self.annotations_file = Path(images_dir), Path(annotations_file)
        if not self.images_dir.is_dir():
            raise DatasetNotFoundError(f"COCO images folder {str(self.images_dir)!r} not found")
        data = read_json(self.annotations_file, "COCO annotation file")
        where = f"COCO annotation file {str(self.annotations_file)!r}"
        if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
                or not isinstance(data.get("annotations"), list):
            raise DatasetError(f"{where} must be a JSON object with 'images' and 'annotations' lists")
        wanted = None if category_ids is None else set(category_ids)

        images: Dict[Any, Dict[str, Any]] = {}
        for position, image in enumerate(data["images"]):
            missing = [key for key in ("id", "file_name", "height", "width") if not isinstance(image, dict)
                       or key not in image]
            if missing:
                raise DatasetError(f"{where}: images[{position}] lacks {', '.join(missing)}")
            images[image["id"]] = image
        annotations: Dict[Any, List[Dict[str, Any]]] = defaultdict(list)
        for position, annotation in enumerate(data["annotations"]):
            missing = [key for key in ("image_id", "segmentation") if not isinstance(annotation, dict)
                       or key not in annotation]
            if missing:
                raise DatasetError(f"{where}: annotations[{position}] lacks {', '.join(missing)}")
            if annotation["image_id"] not in images:
                raise DatasetError(f"{where}: annotations[{position}] refers to image id {annotation['image_id']!r}, "
                                   "which 'images' does not list")
            if wanted is None or annotation.get("category_id") in wanted:
                annotations[annotation["image_id"]].append(annotation)

        self.dataset_samples: List[Tuple[Dict[str, Any], List[Dict[str, Any]]]] = [
            (image, annotations[image_id]) for image_id, image in images.items()
            if any(not a.get("iscrowd", 0) for a in annotations[image_id])]
        if not self.dataset_samples:
            raise DatasetNotFoundError(f"{where} has no image with a non-crowd annotation"
                                       + (f" of the categories {sorted(wanted)}" if wanted is not None else ""))

    def get_sample(self, index: int, rng: np.random.Generator) -> TrainingSample:
        """The ``index``-th image with its objects in label layers and its crowd regions ignored."""
        image_info, annotations = self.dataset_samples[index]
        image_path = self.images_dir / image_info["file_name"]
        image = read_image(image_path)
        height, width = int(image_info["height"]), int(image_info["width"])
        if image.shape[:2] != (height, width):
            raise DatasetError(f"image {str(image_path)!r} is {image.shape[0]}x{image.shape[1]} (HxW) but "
                               f"{str(self.annotations_file)!r} says {height}x{width}")
        objects, crowd = [], np.zeros((height, width), dtype=bool)
        for annotation in annotations:
            try:
                mask = decode_segmentation(annotation["segmentation"], height, width)
            except (ValueError, TypeError) as err:
                raise DatasetError(f"annotation {annotation.get('id', '?')!r} of image {image_info['file_name']!r} "
                                   f"in {str(self.annotations_file)!r}: {err}") from None
            if annotation.get("iscrowd", 0):
                crowd |= mask
            elif mask.any():   # a degenerate polygon leaves no object to click on
                objects.append(mask)
        # The crowd regions form one ignored label, in a layer of its own when it overlaps objects.
        masks = objects + ([crowd] if crowd.any() else [])
        if not masks:
            return TrainingSample(image, np.zeros((height, width), np.int32), objects_ids=[], sample_id=index)
        layers, mapping = pack_masks(masks)
        return TrainingSample(image, layers, objects_ids=mapping[:len(objects)], ignore_ids=mapping[len(objects):],
                              sample_id=index)
