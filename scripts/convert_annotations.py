"""Build the COCO+LVIS training layout (``CocoLvisDataset``, config key ``LVIS_v1_PATH``) from the
official COCO 2017 panoptic and LVIS v1 annotation files, as the RITM family's conversion does::

    python scripts/convert_annotations.py --coco-root /data/coco --output /data/cocolvis --split train

Inputs (COCO 2017: https://cocodataset.org/#download, LVIS v1: https://www.lvisdataset.org/dataset)::

    <coco-root>/<split>2017/<id>.jpg                     images (train2017.zip, val2017.zip)
    <coco-root>/annotations/panoptic_<split>2017.json     panoptic_annotations_trainval2017.zip
    <coco-root>/annotations/panoptic_<split>2017/*.png    panoptic_<split>2017.zip inside that archive
    <coco-root>/annotations/lvis_v1_<split>.json          lvis_v1_<split>.json.zip (or --lvis-json)

Output: ``<output>/<split>/images/<id>.jpg`` (hard links, copies or symlinks of the COCO images),
``masks/<id>.pickle`` and ``hannotation.pickle`` (see ``isegm/data/datasets/coco_lvis.py``).

Per image present in both the panoptic file and the LVIS file (with at least one LVIS
annotation; images are matched by file stem, so LVIS val images taken from COCO train2017 are
not in the val split):

1. objects: the panoptic "thing" segments (crowd ones included, as in RITM; ``--drop-crowd``
   leaves them out) and the LVIS polygons, each kept when it has at least ``--min-object-area``
   pixels (80). A COCO object is dropped when an LVIS object matches it (box IoU > 0.7 and mask
   IoU > 0.7); an LVIS object is dropped when a later LVIS object of the image duplicates it
   (box IoU > 0.7 and mask IoU > 0.85). Images left with no object are skipped;
2. hierarchy: going from the largest object down, an object lies inside a larger one when 70%
   of its box and more than 80% of its pixels are inside it; it becomes the child of the deepest
   such descendant. Objects with neither parent nor children get ``None``;
3. stuff: each panoptic "stuff" segment minus all objects, kept above ``--min-stuff-area`` (500)
   pixels, appended after the ``num_instance_masks`` objects.

Every file is written to a temporary name and renamed, and each finished image is journaled in
``hannotation.pickle.partial``: an interrupted run resumes where it stopped (``--overwrite``
starts over); ``hannotation.pickle`` is written at the end.
"""
from __future__ import annotations

import argparse
import functools
import multiprocessing
import os
import pickle
import shutil
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, FrozenSet, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import cv2
import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from isegm.data.datasets.base import DatasetError  # noqa: E402
from isegm.data.datasets.coco import decode_segmentation, read_json  # noqa: E402
from isegm.data.datasets.coco_lvis import encode_masks, load_pickle  # noqa: E402
from isegm.utils.files import atomic_write  # noqa: E402

COCO_URL = "https://cocodataset.org/#download"
LVIS_URL = "https://www.lvisdataset.org/dataset"
# RITM's thresholds.
MATCH_BOX_IOU, COCO_LVIS_MASK_IOU, LVIS_LVIS_MASK_IOU = 0.7, 0.7, 0.85
INSIDE_BOX_FRACTION, INSIDE_MASK_FRACTION = 0.7, 0.8
PICKLE_PROTOCOL = 4   # readable by every Python 3 the original code runs on
IMAGE_MODES = ("hardlink", "copy", "symlink")

Box = Tuple[int, int, int, int]
Hierarchy = Dict[int, Optional[Dict[str, Any]]]


class ConversionError(Exception):
    """An input is missing or malformed; the message names the file and what to do."""


class Region(NamedTuple):
    """A boolean H x W mask with its box ``(row_min, row_max, col_min, col_max)`` (inclusive)
    and its area in pixels."""

    mask: np.ndarray
    box: Box
    area: int


def make_region(mask: np.ndarray) -> Region:
    """The region of a non-empty boolean mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return Region(mask, (int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])), int(np.count_nonzero(mask)))


def _overlap_1d(a0: int, a1: int, b0: int, b1: int) -> int:
    return max(0, min(a1, b1) - max(a0, b0) + 1)


def box_iou(a: Box, b: Box) -> float:
    """RITM's box IoU: the product of the row and the column interval IoUs (inclusive ends)."""
    rows = _overlap_1d(a[0], a[1], b[0], b[1]) / max(1e-6, max(a[1], b[1]) - min(a[0], b[0]) + 1)
    cols = _overlap_1d(a[2], a[3], b[2], b[3]) / max(1e-6, max(a[3], b[3]) - min(a[2], b[2]) + 1)
    return rows * cols


def intersection(a: Region, b: Region) -> int:
    """Pixels in both masks, counted inside the boxes' overlap (the same count, far fewer pixels)."""
    r0, r1, c0, c1 = max(a.box[0], b.box[0]), min(a.box[1], b.box[1]), max(a.box[2], b.box[2]), min(a.box[3], b.box[3])
    if r0 > r1 or c0 > c1:
        return 0
    return int(np.count_nonzero(a.mask[r0:r1 + 1, c0:c1 + 1] & b.mask[r0:r1 + 1, c0:c1 + 1]))


def mask_iou(a: Region, b: Region) -> float:
    inter = intersection(a, b)
    return inter / (a.area + b.area - inter)


def merge_objects(coco: Sequence[Region], lvis: Sequence[Region]) -> List[Region]:
    """COCO objects that no LVIS object matches, then LVIS objects that no later LVIS object duplicates."""
    kept = [c for c in coco if not any(box_iou(v.box, c.box) > MATCH_BOX_IOU and mask_iou(v, c) > COCO_LVIS_MASK_IOU
                                       for v in lvis)]
    kept += [v for i, v in enumerate(lvis)
             if not any(box_iou(v.box, w.box) > MATCH_BOX_IOU and mask_iou(v, w) > LVIS_LVIS_MASK_IOU
                        for w in lvis[i + 1:])]
    return kept


def masks_hierarchy(regions: Sequence[Region]) -> Hierarchy:
    """RITM's part hierarchy: ``{k: {"children", "parent", "node_level"}}``, or None for an object
    with neither parent nor children.

    Objects are visited largest first (equal areas: the later object first). Each object ``i``
    adopts every not yet placed smaller object ``j`` lying inside it (``contains``), attaching it
    to the deepest descendant of ``i`` (children searched in adoption order, skipping those
    smaller than ``j``) that contains it too.
    """
    def contains(i: int, j: int) -> bool:
        a, b = regions[i].box, regions[j].box
        box_inter = _overlap_1d(a[0], a[1], b[0], b[1]) * _overlap_1d(a[2], a[3], b[2], b[3])
        if box_inter / ((b[1] - b[0] + 1) * (b[3] - b[2] + 1)) < INSIDE_BOX_FRACTION:
            return False
        return intersection(regions[i], regions[j]) / regions[j].area > INSIDE_MASK_FRACTION

    children: Dict[int, List[int]] = defaultdict(list)

    def deepest_container(root: int, j: int) -> Optional[int]:
        for child in children[root]:
            if regions[child].area >= regions[j].area:
                found = deepest_container(child, j)
                if found is not None:
                    return found
        return root if contains(root, j) else None

    n = len(regions)
    order = sorted(range(n), key=lambda k: (regions[k].area, k), reverse=True)
    parents: List[Optional[int]] = [None] * n
    levels = [0] * n
    placed = [False] * n
    for rank, i in enumerate(order[:-1]):
        for j in order[rank + 1:]:
            if placed[j] or not contains(i, j):
                continue
            parent = deepest_container(i, j)
            children[parent].append(j)
            parents[j], levels[j], placed[j] = parent, levels[parent] + 1, True
    return {k: {"children": list(children[k]), "parent": parents[k], "node_level": levels[k]}
            if parents[k] is not None or children[k] else None for k in range(n)}


@dataclass(frozen=True)
class Settings:
    """What every image's conversion shares."""

    things: FrozenSet[int]
    images_dir: Path
    masks_dir: Path
    min_object_area: int = 80
    min_stuff_area: int = 500
    image_mode: str = "hardlink"
    drop_crowd: bool = False


@dataclass(frozen=True)
class ImageTask:
    """One image: its output id, COCO image and panoptic PNG, panoptic segments and LVIS annotations."""

    name: str
    image_path: Path
    panoptic_path: Path
    segments: Tuple[Dict[str, Any], ...]
    height: int
    width: int
    lvis_annotations: Tuple[Dict[str, Any], ...]


def read_panoptic(path: Path) -> np.ndarray:
    """int32 H x W segment ids of a COCO panoptic PNG (id = R + 256 G + 256^2 B)."""
    png = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if png is None:
        raise ConversionError(f"cannot read the panoptic PNG {str(path)!r} (missing or not an image); unzip "
                              f"panoptic_<split>2017.zip from {COCO_URL} into the annotations folder")
    if png.ndim != 3 or png.shape[2] != 3:
        raise ConversionError(f"panoptic PNG {str(path)!r} has shape {png.shape}; expected an RGB image")
    png = png.astype(np.int32)   # OpenCV reads BGR
    return png[:, :, 2] + 256 * png[:, :, 1] + 256 * 256 * png[:, :, 0]


def convert_image(task: ImageTask, settings: Settings) -> Tuple[str, Optional[Dict[str, Any]]]:
    """Write ``masks/<name>.pickle`` and the image of one task; return its ``hannotation`` entry
    (None when no object is left)."""
    ids = read_panoptic(task.panoptic_path)
    if ids.shape != (task.height, task.width):
        raise ConversionError(f"panoptic PNG {str(task.panoptic_path)!r} is {ids.shape[0]}x{ids.shape[1]} (HxW) but "
                              f"the LVIS file gives {task.height}x{task.width} for image {task.name}")
    coco, stuff = [], []
    for segment in task.segments:
        mask = ids == segment["id"]
        if segment["category_id"] not in settings.things:
            stuff.append(mask)
        elif not (settings.drop_crowd and segment.get("iscrowd", 0)) and mask.sum() >= settings.min_object_area:
            coco.append(make_region(mask))
    lvis = []
    for annotation in task.lvis_annotations:
        try:
            mask = decode_segmentation(annotation["segmentation"], task.height, task.width)
        except (ValueError, TypeError) as err:
            raise ConversionError(f"LVIS annotation {annotation.get('id', '?')!r} of image {task.name}: "
                                  f"{err}") from None
        if mask.sum() >= settings.min_object_area:
            lvis.append(make_region(mask))

    objects = merge_objects(coco, lvis)
    if not objects:
        return task.name, None
    hierarchy = masks_hierarchy(objects)
    masks = [region.mask for region in objects]
    covered = np.logical_or.reduce(masks)
    for mask in stuff:
        mask = mask & ~covered
        if mask.sum() > settings.min_stuff_area:
            masks.append(mask)

    atomic_write(settings.masks_dir / f"{task.name}.pickle", pickle.dumps(encode_masks(masks), PICKLE_PROTOCOL))
    place_image(task.image_path, settings.images_dir / f"{task.name}.jpg", settings.image_mode)
    return task.name, {"num_instance_masks": len(objects), "hierarchy": hierarchy}


def place_image(source: Path, target: Path, mode: str) -> None:
    """Hard-link (a copy across file systems), copy or symlink ``source`` to ``target``, unless it is there."""
    if target.exists():
        return
    if not source.is_file():
        raise ConversionError(f"COCO image {str(source)!r} is missing; unzip <split>2017.zip from {COCO_URL} "
                              "into the COCO root")
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        if mode == "symlink":
            os.symlink(source.resolve(), tmp)
        elif mode == "hardlink":
            try:
                os.link(source, tmp)
            except OSError:
                shutil.copyfile(source, tmp)
        else:
            shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def read_journal(path: Path) -> Dict[str, Optional[Dict[str, Any]]]:
    """The entries an interrupted run journaled; a record cut short by the interruption is dropped
    (and cut from the file, so that new records follow whole ones)."""
    entries: Dict[str, Optional[Dict[str, Any]]] = {}
    if not path.is_file():
        return entries
    with open(path, "r+b") as f:
        good = 0
        while True:
            try:
                name, entry = pickle.load(f)
            except Exception:  # EOF or a truncated record: everything before it stands
                break
            entries[name] = entry
            good = f.tell()
        f.truncate(good)
    return entries


def _require(path: Path, what: str, how: str) -> None:
    if not path.exists():
        raise ConversionError(f"missing {what} {str(path)!r}: {how}")


def _stem(file_name: str) -> str:
    return file_name.split("/")[-1].split(".")[0]


def _lvis_images(path: Path) -> Dict[str, Tuple[Dict[str, Any], List[Dict[str, Any]]]]:
    """LVIS image stem -> (image entry, its annotations in file order), images with annotations only."""
    try:
        data = read_json(path, "LVIS annotation file")
    except DatasetError as err:
        raise ConversionError(str(err)) from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise ConversionError(f"LVIS annotation file {str(path)!r} must be a JSON object with 'images' and "
                              f"'annotations' lists (download lvis_v1_*.json from {LVIS_URL})")
    by_image: Dict[Any, List[Dict[str, Any]]] = defaultdict(list)
    images = {}
    try:
        for annotation in data["annotations"]:
            # Only what the conversion reads travels to the worker processes.
            by_image[annotation["image_id"]].append({"id": annotation.get("id"),
                                                     "segmentation": annotation["segmentation"]})
        for image in data["images"]:
            if by_image[image["id"]]:
                url = image.get("coco_url") or image.get("file_name")
                if not url:
                    raise ConversionError(f"LVIS image {image['id']!r} in {str(path)!r} has neither coco_url nor "
                                          "file_name")
                images[_stem(url)] = ({"height": int(image["height"]), "width": int(image["width"])},
                                      by_image[image["id"]])
    except (KeyError, TypeError, ValueError) as err:
        raise ConversionError(f"LVIS annotation file {str(path)!r}: an entry lacks or mangles {err} (expected images "
                              "with id/coco_url/height/width and annotations with image_id/segmentation)") from None
    return images


def plan(coco_root: Path, split: str, lvis_json: Optional[Path] = None) -> Tuple[List[ImageTask], FrozenSet[int]]:
    """Check the inputs, read the annotation files and list one task per image in both (in the
    panoptic file's order), with the panoptic "thing" category ids."""
    images_dir = coco_root / f"{split}2017"
    panoptic_json = coco_root / "annotations" / f"panoptic_{split}2017.json"
    panoptic_dir = coco_root / "annotations" / f"panoptic_{split}2017"
    lvis_json = lvis_json or coco_root / "annotations" / f"lvis_v1_{split}.json"
    _require(images_dir, "COCO image folder", f"download {split}2017.zip from {COCO_URL} and unzip it into "
                                              f"{str(coco_root)!r}")
    _require(panoptic_json, "COCO panoptic annotation file", f"download panoptic_annotations_trainval2017.zip "
                                                             f"from {COCO_URL} and unzip it into {str(coco_root)!r}")
    _require(panoptic_dir, "COCO panoptic PNG folder", f"unzip annotations/panoptic_{split}2017.zip (inside "
                                                       f"panoptic_annotations_trainval2017.zip from {COCO_URL}) "
                                                       f"into {str(coco_root / 'annotations')!r}")
    _require(lvis_json, "LVIS v1 annotation file", f"download lvis_v1_{split}.json.zip from {LVIS_URL} and unzip "
                                                   "it there (or pass --lvis-json)")
    lvis = _lvis_images(lvis_json)
    try:
        panoptic = read_json(panoptic_json, "COCO panoptic annotation file")
        things = frozenset(c["id"] for c in panoptic["categories"] if c["isthing"] == 1)
        tasks = []
        for entry in panoptic["annotations"]:
            name = _stem(entry["file_name"])
            if name not in lvis:
                continue
            image, annotations = lvis[name]
            segments = tuple({"id": int(s["id"]), "category_id": s["category_id"], "iscrowd": s.get("iscrowd", 0)}
                             for s in entry["segments_info"])
            tasks.append(ImageTask(name, images_dir / entry["file_name"].replace(".png", ".jpg"),
                                   panoptic_dir / entry["file_name"], segments, image["height"], image["width"],
                                   tuple(annotations)))
    except DatasetError as err:
        raise ConversionError(str(err)) from None
    except (KeyError, TypeError, ValueError) as err:
        raise ConversionError(f"COCO panoptic annotation file {str(panoptic_json)!r}: an entry lacks or mangles {err} "
                              "(expected 'categories' with id/isthing and 'annotations' with file_name and "
                              "segments_info of id/category_id)") from None
    return tasks, things


def convert(coco_root: Path, output: Path, split: str = "train", lvis_json: Optional[Path] = None,
            min_object_area: int = 80, min_stuff_area: int = 500, image_mode: str = "hardlink",
            drop_crowd: bool = False, workers: int = 1, overwrite: bool = False) -> Dict[str, Dict[str, Any]]:
    """Convert one split into ``<output>/<split>/`` and return its ``hannotation`` dict.

    Images already converted (in ``hannotation.pickle`` or the journal of an interrupted run,
    with their files present) are skipped unless ``overwrite``. ``workers > 1`` converts images
    in that many processes.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if image_mode not in IMAGE_MODES:
        raise ValueError(f"image_mode must be one of {IMAGE_MODES}, got {image_mode!r}")
    tasks, things = plan(Path(coco_root), split, lvis_json)
    split_dir = Path(output) / split
    settings = Settings(things, split_dir / "images", split_dir / "masks", min_object_area, min_stuff_area,
                        image_mode, drop_crowd)
    settings.images_dir.mkdir(parents=True, exist_ok=True)
    settings.masks_dir.mkdir(parents=True, exist_ok=True)
    anno_path = split_dir / "hannotation.pickle"
    journal_path = anno_path.with_name(anno_path.name + ".partial")

    done: Dict[str, Optional[Dict[str, Any]]] = {}
    if overwrite:
        journal_path.unlink(missing_ok=True)
    else:
        if anno_path.is_file():
            previous = load_pickle(anno_path, "annotation file")
            if isinstance(previous, dict):
                done.update(previous)
        done.update(read_journal(journal_path))
        done = {name: entry for name, entry in done.items()
                if entry is None or ((settings.masks_dir / f"{name}.pickle").is_file()
                                     and (settings.images_dir / f"{name}.jpg").exists())}
    todo = [task for task in tasks if task.name not in done]

    with open(journal_path, "ab") as journal:
        for name, entry in _run(todo, settings, workers, initial=len(tasks) - len(todo), total=len(tasks)):
            pickle.dump((name, entry), journal, PICKLE_PROTOCOL)
            journal.flush()
            done[name] = entry
    annotation = {task.name: done[task.name] for task in tasks if done.get(task.name) is not None}
    atomic_write(anno_path, pickle.dumps(annotation, PICKLE_PROTOCOL))
    journal_path.unlink()
    return annotation


def _run(tasks: List[ImageTask], settings: Settings, workers: int, initial: int,
         total: int) -> Iterator[Tuple[str, Optional[Dict[str, Any]]]]:
    work = functools.partial(convert_image, settings=settings)
    progress = dict(total=total, initial=initial, unit="image", desc=f"COCO+LVIS {settings.masks_dir.parent.name}")
    if workers <= 1:
        yield from tqdm(map(work, tasks), **progress)
        return
    with multiprocessing.Pool(workers) as pool:
        yield from tqdm(pool.imap_unordered(work, tasks, chunksize=8), **progress)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description="Build the COCO+LVIS training layout (<output>/<split>/images, masks, hannotation.pickle; "
                    "config key LVIS_v1_PATH) from COCO 2017 panoptic and LVIS v1 annotations, as RITM does.",
        epilog=f"Downloads: COCO 2017 images and panoptic annotations from {COCO_URL}; LVIS v1 annotations from "
               f"{LVIS_URL}. An interrupted run resumes when started again with the same arguments.")
    parser.add_argument("--coco-root", type=Path, required=True,
                        help="COCO 2017 folder: <split>2017/*.jpg, annotations/panoptic_<split>2017.json and "
                             "annotations/panoptic_<split>2017/*.png")
    parser.add_argument("--lvis-json", type=Path, default=None,
                        help="LVIS v1 annotation file of the split "
                             "(default: <coco-root>/annotations/lvis_v1_<split>.json)")
    parser.add_argument("--output", type=Path, required=True, help="COCO+LVIS root to write (LVIS_v1_PATH)")
    parser.add_argument("--split", choices=("train", "val"), default="train", help="split to convert (default: train)")
    parser.add_argument("--min-object-area", type=int, default=80,
                        help="smallest object kept, in pixels (default: 80, RITM's)")
    parser.add_argument("--min-stuff-area", type=int, default=500,
                        help="stuff regions must exceed this many pixels once objects are removed (default: 500)")
    parser.add_argument("--images", choices=IMAGE_MODES, default="hardlink",
                        help="how images reach <output>/<split>/images (default: hardlink, a copy across file systems)")
    parser.add_argument("--drop-crowd", action="store_true",
                        help="leave out COCO crowd segments (RITM keeps them as objects)")
    parser.add_argument("--workers", type=int, default=1, help="processes converting images (default: 1)")
    parser.add_argument("--overwrite", action="store_true", help="convert every image again instead of resuming")
    args = parser.parse_args(argv)
    try:
        annotation = convert(args.coco_root, args.output, args.split, args.lvis_json, args.min_object_area,
                             args.min_stuff_area, args.images, args.drop_crowd, args.workers, args.overwrite)
    except (ConversionError, DatasetError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{len(annotation)} images in {args.output / args.split}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
