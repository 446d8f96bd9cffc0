"""Smooth random textures of the scenes: fractal noise in two dimensions and along one axis."""
from __future__ import annotations

from typing import Tuple

import cv2
import numpy as np


def fractal_noise(rng: np.random.Generator, shape: Tuple[int, int], cells: float, octaves: int = 3,
                  persistence: float = 0.5) -> np.ndarray:
    """float32 fractal noise of ``shape`` (about zero mean, unit scale): random grids of
    ``cells * 2**o`` cells along the longer side, upsampled and summed (vectorised).

    The octaves are summed at about 4 pixels per finest cell and resized once: smooth noise
    costs little at any image size.
    """
    height, width = shape
    longest = max(height, width)
    scale = min(1.0, 4 * cells * 2 ** (octaves - 1) / longest)
    work_h, work_w = max(1, round(height * scale)), max(1, round(width * scale))
    out = np.zeros((work_h, work_w), np.float32)
    amplitude, total = 1.0, 0.0
    for octave in range(octaves):
        n = cells * 2 ** octave
        grid = rng.standard_normal((max(2, round(n * height / longest)), max(2, round(n * width / longest))),
                                   dtype=np.float32)
        out += amplitude * cv2.resize(grid, (work_w, work_h), interpolation=cv2.INTER_CUBIC)
        total += amplitude
        amplitude *= persistence
    out /= total
    if (work_h, work_w) != (height, width):
        out = cv2.resize(out, (width, height), interpolation=cv2.INTER_LINEAR)
    return out


def fractal_noise1d(rng: np.random.Generator, length: int, cells: float, octaves: int = 3) -> np.ndarray:
    """float32 fractal noise along one axis (ridges, slope edges)."""
    return fractal_noise(rng, (1, length), cells, octaves)[0]
