"""COCO run-length encoding of masks, with no pycocotools (its format, byte for byte).

Runs go column by column (Fortran order), the first one over background (0 when the first pixel
is object). The compressed string is pycocotools' ``rleToString`` / ``rleFrString`` format:
5 bits per character (offset 48), 0x20 continues a number, 0x10 in its last character makes it
negative, and from the fourth run on each number is a difference to the run two before.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np


def mask_runs(mask: np.ndarray) -> List[int]:
    """The uncompressed COCO run lengths of an (H, W) mask (nonzero = object)."""
    flat = np.asarray(mask).astype(bool).ravel(order="F")
    if flat.size == 0:
        return []
    bounds = np.concatenate([[0], np.flatnonzero(flat[1:] != flat[:-1]) + 1, [flat.size]])
    runs = np.diff(bounds).tolist()
    return [0] + runs if flat[0] else runs


def rle_string(runs: Sequence[int]) -> str:
    """Run lengths as pycocotools' compressed string (``rleToString``)."""
    chars: List[str] = []
    for i, run in enumerate(runs):
        value = int(run) - (int(runs[i - 2]) if i > 2 else 0)
        more = True
        while more:
            char = value & 0x1F
            value >>= 5
            more = value != -1 if char & 0x10 else value != 0
            chars.append(chr((char | 0x20 if more else char) + 48))
    return "".join(chars)


def rle_counts(counts: Union[str, bytes]) -> List[int]:
    """The run lengths of a compressed COCO RLE string (pycocotools' ``rleFrString`` format)."""
    text = counts.decode("ascii") if isinstance(counts, bytes) else counts
    runs: List[int] = []
    position = 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            char = ord(text[position]) - 48
            value |= (char & 0x1F) << shift
            more = bool(char & 0x20)
            shift += 5
            position += 1
            if not more and char & 0x10:
                value |= -1 << shift
            if more and position >= len(text):
                raise ValueError("compressed RLE string ends inside a number")
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def encode_rle(mask: np.ndarray) -> Dict[str, Any]:
    """A COCO compressed RLE ``{"size": [H, W], "counts": str}`` of an (H, W) mask, as
    ``pycocotools.mask.encode`` writes it (counts decoded to text, as in COCO JSON files)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask to encode must be (H, W), got shape {mask.shape}")
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": rle_string(mask_runs(mask))}


def decode_rle(rle: Dict[str, Any], height: Optional[int] = None, width: Optional[int] = None) -> np.ndarray:
    """bool (H, W) mask of a COCO RLE ``{"size": [H, W], "counts": list or compressed string}``;
    ``height`` / ``width``, when given, must equal its size (the image it belongs to)."""
    size, counts = rle.get("size"), rle.get("counts")
    if size is None or counts is None:
        raise ValueError("an RLE segmentation needs 'size' and 'counts'")
    size = [int(v) for v in size]
    if height is not None and size != [height, width]:
        raise ValueError(f"RLE size {size} differs from the image's {[height, width]} (H, W)")
    height, width = size
    runs = rle_counts(counts) if isinstance(counts, (str, bytes)) else [int(v) for v in counts]
    if any(run < 0 for run in runs) or sum(runs) > height * width:
        raise ValueError(f"RLE runs do not fit a {height}x{width} image")
    values = np.zeros(len(runs), dtype=bool)
    values[1::2] = True   # runs alternate background, object, ...
    flat = np.repeat(values, runs)
    flat = np.concatenate([flat, np.zeros(height * width - flat.size, dtype=bool)])
    return np.ascontiguousarray(flat.reshape((width, height)).T)
