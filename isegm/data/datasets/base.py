"""Base class of the evaluation datasets, their errors and the file readers they share.

Readers reproduce the original loaders' decoders (OpenCV for most images and masks, PIL for
WSESeg / SHSeg) and turn every silent failure into an error that names the file: OpenCV returns
None for a file it cannot decode, and decodes a truncated JPEG into a partly grey image without
a word, so JPEG files are checked for their end-of-image marker first (PIL refuses truncated
files itself).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import cv2
import numpy as np
from PIL import Image

from ..sample import DSample

PathLike = Union[str, "os.PathLike[str]"]


class DatasetError(ValueError):
    """A dataset file is unreadable or breaks the format; the message names the file.

    ``get_sample`` raises it for the files of that sample, so an evaluation loop can skip the
    sample (``--skip-bad``); loaders that read files to list their instances (SBD without its
    cache, WSESeg, SHSeg) raise it at construction.
    """


class DatasetNotFoundError(FileNotFoundError):
    """A dataset folder is missing or lacks the expected layout (raised at construction)."""


class ISDataset:
    """An evaluation dataset: ``len(dataset)`` instances, ``get_sample(i)`` loads the i-th.

    Subclasses set ``name`` (the name ``get_dataset`` knows), ``config_key`` (the config.yml
    key of the root folder) and ``layout`` (the folder tree below the root, shown in errors),
    fill ``self._samples`` in ``__init__`` and implement ``_load``.
    """

    name: str = ""
    config_key: str = ""
    layout: str = ""

    def __init__(self, root: PathLike) -> None:
        self.root = Path(root)
        self._samples: List[Any] = []

    def __len__(self) -> int:
        return len(self._samples)

    def get_sample(self, index: int) -> DSample:
        """The ``index``-th instance (0-based, in the original loader's order)."""
        if not 0 <= index < len(self._samples):
            raise IndexError(f"sample index {index} out of range for {self.name} ({len(self._samples)} samples)")
        return self._load(index)

    def _load(self, index: int) -> DSample:
        raise NotImplementedError

    def check_layout(self, *required: Path) -> None:
        """Raise ``DatasetNotFoundError`` (with the expected layout) unless every path exists."""
        if not self.root.is_dir():
            raise self.not_found(f"{str(self.root)!r} is not a folder")
        missing = [str(path) for path in required if not path.exists()]
        if missing:
            raise self.not_found("missing " + ", ".join(repr(path) for path in missing))

    def not_found(self, problem: str) -> DatasetNotFoundError:
        """The error for a folder that does not match ``layout``: the problem, the tree, the key."""
        tree = "\n".join([f"    {self.root}/"] + [f"        {line}" for line in self.layout.strip("\n").splitlines()])
        return DatasetNotFoundError(
            f"{self.name} dataset: {problem}.\nExpected layout:\n{tree}\n"
            f"Set {self.config_key} in config.yml (or the SKIPCLICK_{self.config_key} environment variable) "
            "to the dataset folder.")


class FirstSamples:
    """The first ``n`` samples of a dataset (``--limit``), under the dataset's name."""

    def __init__(self, dataset: Any, n: int) -> None:
        self.dataset, self.n, self.name = dataset, min(n, len(dataset)), getattr(dataset, "name", "")

    def __len__(self) -> int:
        return self.n

    def get_sample(self, index: int) -> DSample:
        if not 0 <= index < self.n:
            raise IndexError(f"sample index {index} out of range for the first {self.n} samples of {self.name}")
        return self.dataset.get_sample(index)


class FolderPairsDataset(ISDataset):
    """Images in one folder and one mask per image in another (GrabCut, Berkeley, DAVIS, COCO_MVal).

    Every file of the image folder is a sample, sorted by path (case-sensitive); its mask is the
    file of the mask folder whose stem is the image name up to its first dot. Subclasses set the
    folder names and turn the OpenCV (BGR) read of the mask into a label map in ``_instances``.
    """

    images_dir: str = ""
    masks_dir: str = ""
    ignore_value: Optional[int] = None

    def __init__(self, root: PathLike) -> None:
        super().__init__(root)
        images, masks = self.root / self.images_dir, self.root / self.masks_dir
        self.check_layout(images, masks)
        self._samples = sorted(images.glob("*.*"))
        if not self._samples:
            raise self.not_found(f"no image files in {str(images)!r}")
        self._masks: Dict[str, List[Path]] = {}
        for path in masks.glob("*.*"):
            self._masks.setdefault(path.stem, []).append(path)

    def mask_path(self, image_path: Path) -> Path:
        """The mask of an image: the mask whose stem is the image name before its first dot."""
        key = image_path.name.split(".")[0]
        candidates = sorted(self._masks.get(key, []))
        if len(candidates) != 1:
            found = f"found {', '.join(path.name for path in candidates)}" if candidates else "found none"
            raise DatasetError(f"image {str(image_path)!r} needs exactly one mask named {key!r}.<ext> in "
                               f"{str(self.root / self.masks_dir)!r}; {found}")
        return candidates[0]

    def _instances(self, mask_bgr: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _load(self, index: int) -> DSample:
        image_path = self._samples[index]
        mask_path = self.mask_path(image_path)
        image = read_image(image_path)
        mask = read_mask_bgr(mask_path)
        check_same_size(image, mask, image_path, mask_path)
        return DSample(image, self._instances(mask), ignore_value=self.ignore_value, sample_id=index,
                       image_path=str(image_path), mask_path=str(mask_path))


def jpeg_complete(data: bytes) -> bool:
    """Whether JPEG ``data`` holds its whole image: the header segments up to the first scan are
    intact and the end-of-image marker follows the scan data (inside scan data a 0xFF byte is
    always followed by 0x00 or a restart marker, so the marker cannot occur by chance; an EXIF
    thumbnail's own markers sit inside a header segment and are skipped). Scan data overwritten
    in place keeps this structure: JPEG has no checksum to tell it from an image."""
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return False   # a segment must start where the previous one ends
        marker = data[pos + 1]
        if marker == 0xFF:   # fill byte before a marker
            pos += 1
        elif marker == 0xDA:   # start of scan: entropy-coded data up to the end-of-image marker
            return data.find(b"\xff\xd9", pos) >= 0
        elif marker == 0x01 or 0xD0 <= marker <= 0xD7:   # markers without a length
            pos += 2
        else:
            pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    return False


def _imread(path: Path, what: str) -> np.ndarray:
    """``cv2.imread(path)`` (BGR, EXIF orientation applied) from the file's bytes, read once;
    ``DatasetError`` naming the file when it is missing, truncated or not an image."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise DatasetError(f"cannot read {what} {str(path)!r}: {err.strerror or err}") from None
    if data[:3] == b"\xff\xd8\xff" and not jpeg_complete(data):
        raise DatasetError(f"{what} {str(path)!r} is a truncated or damaged JPEG file (it ends before its "
                           "end-of-image marker); replace it with an intact copy")
    try:
        array = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR) if data else None
    except cv2.error as err:
        raise DatasetError(f"cannot read {what} {str(path)!r}: {err}") from None
    if array is None:
        raise DatasetError(f"cannot read {what} {str(path)!r} (empty, damaged or not an image file)")
    return array


def read_image(path: Path) -> np.ndarray:
    """uint8 H x W x 3 RGB: the OpenCV read converted from BGR, as the original loaders do."""
    return cv2.cvtColor(_imread(path, "image"), cv2.COLOR_BGR2RGB)


def read_mask_bgr(path: Path) -> np.ndarray:
    """uint8 H x W x 3: the OpenCV colour (BGR) read of a mask, the input of the mask rules."""
    return _imread(path, "mask")


def read_pil(path: Path, what: str) -> np.ndarray:
    """``np.array(Image.open(path))``: PIL's decoded array (palette indices for palette files)."""
    try:
        with Image.open(path) as image:
            return np.array(image)
    except (OSError, ValueError) as err:
        raise DatasetError(f"cannot read {what} {str(path)!r}: {err}") from None


def check_same_size(image: np.ndarray, mask: np.ndarray, image_path: Path, mask_path: Path) -> None:
    """Raise ``DatasetError`` unless image and mask have the same height and width."""
    if image.shape[:2] != mask.shape[:2]:
        raise DatasetError(f"image {str(image_path)!r} is {image.shape[0]}x{image.shape[1]} (HxW) but its mask "
                           f"{str(mask_path)!r} is {mask.shape[0]}x{mask.shape[1]}")
