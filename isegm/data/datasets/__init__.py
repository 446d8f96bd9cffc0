"""Evaluation dataset loaders (one file per family) and ``get_dataset``, the factory by name.

Loaders reproduce the original RITM / SimpleClick / SkipClick loaders sample for sample: same
order, same ground truth (1 object, 0 background, -1 ignore), same image arrays (with the same
OpenCV / PIL decoders).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Type

from ...utils.config import DEFAULT_CONFIG
from ..scenes import ATHLETE_KINDS
from .base import DatasetError, DatasetNotFoundError, FirstSamples, FolderPairsDataset, ISDataset, PathLike
from .coco import CocoDataset, decode_segmentation
from .coco_lvis import CocoLvisDataset
from .davis import COCOMValDataset, DavisDataset
from .grabcut import BerkeleyDataset, GrabCutDataset
from .hqseg import HQSEG_VAL_SUBSETS, HQSegDataset
from .sbd import SBDDataset, SBDEvaluationDataset
from .winter import WinterSportsDataset, WinterSportsEvalDataset
from .wseseg import WSESEG_CLASSES, MaskFolderDataset, SHSegDataset, WSESegDataset

# Dataset name (as the original's --datasets takes it) -> loader and its extra arguments.
_LOADERS: Dict[str, Tuple[Type[ISDataset], Dict[str, Any]]] = {
    "GrabCut": (GrabCutDataset, {}),
    "Berkeley": (BerkeleyDataset, {}),
    "DAVIS": (DavisDataset, {}),
    "SBD": (SBDEvaluationDataset, {"split": "val"}),
    "COCO_MVal": (COCOMValDataset, {}),
    "HQSeg": (HQSegDataset, {}),
    **{f"WSESeg_{name}": (WSESegDataset, {"class_name": name}) for name in WSESEG_CLASSES},
    "SHSeg": (SHSegDataset, {}),
    "WinterSports": (WinterSportsEvalDataset, {}),   # generated: no folder
    # close-ups of skiers and snowboarders (the quickstart's evaluation)
    "WinterSportsCloseup": (WinterSportsEvalDataset, {"kinds": ATHLETE_KINDS, "framing": "close"}),
}
DATASET_NAMES = tuple(_LOADERS)
# Names the original's factory also knows, for which this package has no loader.
_NOT_PROVIDED = ("SBD_Train", "PascalVOC", "BraTS", "ssTEM", "OAIZIB", "HARD", "LVIS")


def get_dataset(name: str, config: Mapping[str, Any], config_file: Optional[PathLike] = None) -> ISDataset:
    """The dataset called ``name``, its root folder read from ``config`` (``load_config()``'s dict;
    the generated ``WinterSports`` set needs none).

    ``config_file`` only names the file in the error for a missing key (default: the repository's).
    """
    if name not in _LOADERS:
        hint = " (a dataset of the original code that this package has no loader for)" if name in _NOT_PROVIDED else ""
        raise ValueError(f"unknown dataset {name!r}{hint}; known: {', '.join(DATASET_NAMES)}")
    loader, kwargs = _LOADERS[name]
    if not loader.config_key:
        return loader(**kwargs)
    root = config.get(loader.config_key)
    if not root:
        file = Path(config_file) if config_file is not None else DEFAULT_CONFIG
        raise ValueError(f"dataset {name} needs the config key {loader.config_key} (its root folder), which is not "
                         f"set: add '{loader.config_key}: <folder>' to {str(file)!r} or set the "
                         f"environment variable SKIPCLICK_{loader.config_key}")
    return loader(root, **kwargs)


__all__ = ["DATASET_NAMES", "HQSEG_VAL_SUBSETS", "WSESEG_CLASSES", "BerkeleyDataset", "COCOMValDataset", "CocoDataset",
           "CocoLvisDataset", "SBDDataset", "decode_segmentation",
           "DatasetError", "DatasetNotFoundError", "DavisDataset", "FirstSamples", "FolderPairsDataset", "GrabCutDataset",
           "HQSegDataset", "ISDataset", "MaskFolderDataset", "SBDEvaluationDataset", "SHSegDataset",
           "WSESegDataset", "WinterSportsDataset", "WinterSportsEvalDataset", "get_dataset"]
