"""WSESeg (winter-sports equipment, ten classes) and SHSeg (skiers): label-image masks read with PIL.

A folder holds ``mask_<name>.png`` label images and their ``<name>.jpg`` photos. Every distinct
mask value except the smallest (the background) is one instance, so one mask file gives as many
samples as it has objects. Unlike the other loaders, the original returns these images as
float32 in [0, 1], and the protocol keeps that.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..sample import DSample
from .base import DatasetError, ISDataset, PathLike, check_same_size, read_pil

WSESEG_CLASSES = (
    "flickr_bobsleighs", "flickr_curling_stone", "flickr_ski_helmets", "flickr_snow_kites", "yt_sports",
    "flickr_curling_brooms", "flickr_ski_goggles", "flickr_ski_misc", "flickr_slalom_obstacles", "flickr_snowboards",
)
# The one class whose frames sit deeper than <root>/<class>/.
_CLASS_FOLDERS = {"yt_sports": "yt_sports/skijump/annotated_frames/0"}


def read_label_mask(path: Path) -> np.ndarray:
    """int32 H x W label image (PIL's values; palette indices for palette PNGs)."""
    mask = read_pil(path, "mask")
    # The original's instance rule assumes one value per pixel; on colour masks it is undefined.
    if mask.ndim != 2:
        raise DatasetError(f"mask {str(path)!r} has shape {mask.shape}; expected a single-channel label image "
                           "(grey or palette PNG), not a colour one")
    if mask.dtype != bool and not np.issubdtype(mask.dtype, np.integer):
        raise DatasetError(f"mask {str(path)!r} holds {mask.dtype} values; expected integer labels")
    return mask.astype(np.int32)


def read_float_image(path: Path) -> np.ndarray:
    """float32 H x W x 3 in [0, 1]: the PIL read divided by 255, grey images stacked to 3 channels."""
    image = read_pil(path, "image")
    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise DatasetError(f"image {str(path)!r} is {image.dtype} with shape {image.shape}; "
                           "expected an 8-bit RGB or grey image")
    # Divide in float64 and cast afterwards, as the original does.
    image = image / 255.0
    if image.ndim == 2:
        image = np.stack([image, image, image], axis=2)
    return image.astype(np.float32)


class MaskFolderDataset(ISDataset):
    """Samples = (mask file, label value) pairs of one folder: masks ``mask_*.png`` sorted by
    path, labels ascending without the smallest; GT = ``mask == label``."""

    layout = """
mask_<name>.png   label masks: smallest value = background, every other value one object
<name>.jpg        photos
"""

    def __init__(self, root: PathLike, folder: Path) -> None:
        super().__init__(root)
        self.folder = folder
        self.check_layout(folder)
        masks = sorted(folder.glob("mask_*.png"))
        if not masks:
            raise self.not_found(f"no mask_*.png files in {str(folder)!r}")
        self._samples = [(path, int(value)) for path in masks for value in np.unique(read_label_mask(path))[1:]]

    @staticmethod
    def image_path(mask_path: Path) -> Path:
        """The photo of a mask: ``mask_<name>.png`` -> ``<name>.jpg`` in the same folder."""
        return mask_path.with_name(mask_path.name[len("mask_"):-len(".png")] + ".jpg")

    def _load(self, index: int) -> DSample:
        mask_path, value = self._samples[index]
        image_path = self.image_path(mask_path)
        mask = read_label_mask(mask_path)
        image = read_float_image(image_path)
        check_same_size(image, mask, image_path, mask_path)
        return DSample(image, mask, object_values=(value,), sample_id=index,
                       image_path=str(image_path), mask_path=str(mask_path))


class WSESegDataset(MaskFolderDataset):
    """One WSESeg class: ``<root>/<class>/`` (``yt_sports``: ``<root>/yt_sports/skijump/annotated_frames/0/``)."""

    config_key = "WSESEG_PATH"
    layout = """
<class>/                                   one folder per class, for the ten classes
    mask_<name>.png                        label masks: smallest value = background, every other value one object
    <name>.jpg                             photos
yt_sports/skijump/annotated_frames/0/      the yt_sports class, same files
"""

    def __init__(self, root: PathLike, class_name: str) -> None:
        if class_name not in WSESEG_CLASSES:
            raise ValueError(f"unknown WSESeg class {class_name!r}; known: {', '.join(WSESEG_CLASSES)}")
        self.class_name = class_name
        self.name = f"WSESeg_{class_name}"
        super().__init__(root, Path(root) / _CLASS_FOLDERS.get(class_name, class_name))


class SHSegDataset(MaskFolderDataset):
    """SHSeg (skiers from SkiTB): the WSESeg rules in one flat folder."""

    name = "SHSeg"
    config_key = "SHSEG_PATH"

    def __init__(self, root: PathLike) -> None:
        super().__init__(root, Path(root))
