"""The app's output under ``--out``, and loading it back for editing.

* ``masks/<image file name>/object_001.png``: one 8-bit PNG per object at the image's full
  resolution (255 = object, 0 = background);
* ``annotations.json``: one COCO-format file for the folder: ``images``, ``annotations`` with a
  compressed RLE ``segmentation`` (pycocotools' format), ``area``, ``bbox`` (x, y, w, h),
  ``category_id``, and two extra keys, ``clicks`` (``{"x", "y", "positive"}`` in full-image
  pixels, in click order) and ``mask_file``; ``categories``.

Every file is written to a temporary file beside it and renamed over it, so a crash never leaves
a half-written file. Every path is resolved and must lie under ``--out``. An existing
``annotations.json`` is read at start and saving one image keeps every other image's entries
(and any other top-level keys) as they are; a file that cannot be read stops the app rather
than being overwritten. Without a JSON entry, an image's existing mask PNGs are loaded.

Each image's stored annotation has a ``version`` (a digest of its JSON entry, "" before its
first save). An editor loads it with the annotation and saves with it: a save whose version is
no longer the stored one (someone else saved the image in between) is refused
(``StaleAnnotation``) instead of overwriting their work.
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..data.datasets.coco import decode_segmentation
from ..utils.files import atomic_write
from ..utils.rle import encode_rle

JSON_NAME = "annotations.json"
MASKS_DIR = "masks"
DEFAULT_CATEGORY = "object"
_MASK_FILE = re.compile(r"object_(\d{3,})\.png")


class StoreError(RuntimeError):
    """Output that cannot be read, written, or would leave ``--out``."""


class StaleAnnotation(StoreError):
    """A save based on a version of an image's annotation that is no longer the stored one."""


@dataclass
class SavedObject:
    """One object as stored: full-size bool ``mask`` (H, W), its category and its clicks
    (``{"x", "y", "positive"}`` in full-image pixels)."""

    mask: np.ndarray
    category: str = DEFAULT_CATEGORY
    clicks: List[Dict[str, Any]] = field(default_factory=list)


def mask_box(mask: np.ndarray) -> List[int]:
    """COCO ``bbox`` [x, y, width, height] of a bool mask ([0, 0, 0, 0] when empty)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return [0, 0, 0, 0]
    return [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]


class AnnotationStore:
    """Reads and writes the annotations of one image folder under ``out_dir`` (thread-safe)."""

    def __init__(self, out_dir: Path) -> None:
        self.root = Path(out_dir).resolve()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(f"cannot create the output folder {str(self.root)!r}: {err}") from None
        self.json_path = self.root / JSON_NAME
        self._lock = threading.Lock()
        self._doc: Dict[str, Any] = {}            # other top-level keys, kept as read
        self._images: Dict[str, Dict[str, Any]] = {}        # file_name -> COCO image record
        self._annotations: Dict[str, List[Dict[str, Any]]] = {}   # file_name -> its annotations
        self._categories: Dict[str, int] = {}     # name -> id
        if self.json_path.exists():
            self._read()

    def safe_path(self, *parts: str) -> Path:
        """``out_dir / parts``, or ``StoreError`` if it resolves outside ``out_dir``."""
        path = self.root.joinpath(*parts).resolve()
        if path != self.root and self.root not in path.parents:
            raise StoreError(f"refusing to write {str(path)!r}: it lies outside the output folder {str(self.root)!r}")
        return path

    def image_folder(self, name: str) -> Path:
        """``masks/<name>`` for an image file name (one path component, not ``.`` or ``..``)."""
        if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
            raise StoreError(f"refusing image name {name!r}: it is a path, not a file name")
        return self.safe_path(MASKS_DIR, name)

    def saved(self, name: str) -> bool:
        """Whether image ``name`` has an entry in the JSON (saved, possibly with no objects)."""
        with self._lock:
            return name in self._images

    def version(self, name: str) -> str:
        """The version of image ``name``'s stored annotation: "" before its first save."""
        with self._lock:
            return self._version(name)

    def load(self, name: str, height: int, width: int) -> Tuple[List[SavedObject], str]:
        """The stored objects of image ``name`` (H x W), from the JSON or else from its mask PNGs,
        and the version they have."""
        with self._lock:
            record = self._images.get(name)
            annotations = list(self._annotations.get(name, ()))
            names = {cid: cname for cname, cid in self._categories.items()}
            version = self._version(name)
        if record is None:
            return self._load_pngs(name, height, width), version
        if (record.get("height"), record.get("width")) != (height, width):
            raise StoreError(f"{str(self.json_path)!r} records {name!r} as {record.get('height')}x{record.get('width')} "
                             f"(HxW) but the image is {height}x{width}: it changed since it was annotated; fix the entry "
                             "or move the file away")
        objects = []
        for annotation in annotations:
            try:
                mask = decode_segmentation(annotation["segmentation"], height, width)
            except (KeyError, TypeError, ValueError) as err:
                raise StoreError(f"{str(self.json_path)!r}: annotation {annotation.get('id')!r} of {name!r} has a bad "
                                 f"segmentation ({err}); fix or remove it") from None
            clicks = self._clicks(annotation, name, height, width)
            objects.append(SavedObject(mask, names.get(annotation.get("category_id"), DEFAULT_CATEGORY), clicks))
        return objects, version

    def _clicks(self, annotation: Dict[str, Any], name: str, height: int, width: int) -> List[Dict[str, Any]]:
        """The ``clicks`` of a stored annotation (none when absent: a file of another tool)."""
        clicks = annotation.get("clicks", [])
        for click in clicks if isinstance(clicks, list) else [clicks]:
            ok = (isinstance(click, dict) and isinstance(click.get("positive"), bool)
                  and all(isinstance(click.get(k), (int, float)) and not isinstance(click.get(k), bool)
                          for k in ("x", "y")))
            if not ok or not (0 <= click["x"] < width and 0 <= click["y"] < height):
                raise StoreError(f"{str(self.json_path)!r}: annotation {annotation.get('id')!r} of {name!r} has a bad "
                                 f"click {click!r} (expected {{'x', 'y', 'positive'}} inside the {width}x{height} "
                                 "image); fix or remove its 'clicks'")
        return [{"x": float(c["x"]), "y": float(c["y"]), "positive": c["positive"]} for c in clicks]

    def categories(self) -> List[str]:
        """Category names of the JSON, in id order."""
        with self._lock:
            return sorted(self._categories, key=self._categories.get)

    def save(self, name: str, height: int, width: int, objects: Sequence[SavedObject],
             version: Optional[str] = None) -> Tuple[List[Path], str]:
        """Write image ``name``'s objects (replacing its earlier ones): the PNGs, then the JSON.
        ``version``: the stored version the objects were edited from (None: overwrite whatever
        is stored); ``StaleAnnotation`` when the image was saved since. Returns the written files
        and the new version."""
        folder = self.image_folder(name)
        for obj in objects:
            if obj.mask.shape != (height, width):
                raise StoreError(f"a mask of {name!r} is {obj.mask.shape} but the image is {(height, width)}")
        with self._lock:
            if version is not None and version != self._version(name):
                raise StaleAnnotation(f"image {name!r} was saved again after version {version or 'none'} was loaded "
                                      f"(stored version: {self._version(name) or 'none'}); nothing was written")
            written = []
            for index, obj in enumerate(objects, 1):
                path = self.safe_path(folder, f"object_{index:03d}.png")
                ok, png = cv2.imencode(".png", obj.mask.astype(np.uint8) * 255)
                if not ok:
                    raise StoreError(f"cannot encode the mask {str(path)!r} as PNG")
                atomic_write(path, png.tobytes())
                written.append(path)
            if folder.is_dir():
                for stale in folder.iterdir():
                    match = _MASK_FILE.fullmatch(stale.name)
                    if match and int(match.group(1)) > len(objects):
                        stale.unlink()
            self._set_image(name, height, width, objects, written)
            atomic_write(self.json_path, json.dumps(self._coco(), separators=(",", ":")).encode("utf-8"))
            written.append(self.json_path)
            return written, self._version(name)

    # --- internals (called with the lock held, or from __init__) ---

    def _version(self, name: str) -> str:
        record = self._images.get(name)
        if record is None:
            return ""
        entry = json.dumps([record, self._annotations.get(name, [])], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(entry.encode("utf-8")).hexdigest()[:16]

    def _read(self) -> None:
        fix = "fix it, or move it away to start afresh (the app never overwrites a file it cannot read)"
        try:
            with open(self.json_path, encoding="utf-8") as f:
                doc = json.load(f)
        except (OSError, ValueError) as err:
            raise StoreError(f"cannot read the existing annotations {str(self.json_path)!r}: {err}; {fix}") from None
        try:
            if not isinstance(doc, dict):
                raise ValueError("the top level is not an object")
            ids = {}
            for image in doc.get("images", []):
                ids[image["id"]] = image["file_name"]
                self._images[image["file_name"]] = dict(image)
                self._annotations[image["file_name"]] = []
            for category in doc.get("categories", []):
                self._categories[str(category["name"])] = category["id"]
            for annotation in doc.get("annotations", []):
                self._annotations[ids[annotation["image_id"]]].append(annotation)
        except (KeyError, TypeError, ValueError) as err:
            raise StoreError(f"{str(self.json_path)!r} is not a COCO annotation file as this app writes it "
                             f"(missing or bad {err}); {fix}") from None
        self._doc = {k: v for k, v in doc.items() if k not in ("images", "annotations", "categories")}

    def _load_pngs(self, name: str, height: int, width: int) -> List[SavedObject]:
        folder = self.image_folder(name)
        if not folder.is_dir():
            return []
        objects = []
        for path in sorted(p for p in folder.iterdir() if _MASK_FILE.fullmatch(p.name)):
            mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            if mask is None or mask.shape != (height, width):
                raise StoreError(f"existing mask {str(path)!r} is unreadable or not {height}x{width} (HxW) like its "
                                 "image; fix or move it away")
            objects.append(SavedObject(mask > 127))
        return objects

    def _set_image(self, name: str, height: int, width: int, objects: Sequence[SavedObject],
                   files: Sequence[Path]) -> None:
        record = self._images.setdefault(name, {"id": 1 + max((r["id"] for r in self._images.values()), default=0),
                                                "file_name": name})
        record.update(width=width, height=height)
        next_id = 1 + max((a["id"] for anns in self._annotations.values() for a in anns
                           if isinstance(a.get("id"), int)), default=0)
        annotations = []
        for index, (obj, path) in enumerate(zip(objects, files)):
            if obj.category not in self._categories:
                self._categories[obj.category] = 1 + max(self._categories.values(), default=0)
            annotations.append({
                "id": next_id + index, "image_id": record["id"], "category_id": self._categories[obj.category],
                "segmentation": encode_rle(obj.mask), "area": int(obj.mask.sum()), "bbox": mask_box(obj.mask),
                "iscrowd": 0, "clicks": list(obj.clicks), "mask_file": path.relative_to(self.root).as_posix()})
        self._annotations[name] = annotations

    def _coco(self) -> Dict[str, Any]:
        images = sorted(self._images.values(), key=lambda r: r["id"])
        annotations = sorted((a for anns in self._annotations.values() for a in anns), key=lambda a: a.get("id", 0))
        categories = [{"id": cid, "name": cname} for cname, cid in sorted(self._categories.items(), key=lambda c: c[1])]
        return {**self._doc, "images": images, "annotations": annotations, "categories": categories}
