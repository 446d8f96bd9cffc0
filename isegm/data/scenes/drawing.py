"""Drawing primitives of the scenes. Each shape is a ``Stroke``, drawn once in colour
(anti-aliased) on the image and once with its object's label on the owner map, so that image
and masks share every shape. Coordinates are OpenCV ``(x, y)`` points with sub-pixel precision.
"""
from __future__ import annotations

from typing import Any, Callable, List, Sequence, Tuple

import cv2
import numpy as np

# A drawing of one shape: stroke(target, colour or label, OpenCV line type).
Stroke = Callable[[np.ndarray, Any, int], None]
Colour = Sequence[float]   # RGB, 0-255

SHIFT = 4  # OpenCV sub-pixel bits: shapes keep fractional coordinates (smooth small limbs)


def fixed(points: Any) -> np.ndarray:
    """(x, y) points as int32 OpenCV fixed-point coordinates (``SHIFT`` fractional bits)."""
    return np.round(np.asarray(points, np.float64).reshape(-1, 2) * (1 << SHIFT)).astype(np.int32)


def line(p0: Any, p1: Any, thickness: float) -> Stroke:
    """A straight line from ``p0`` to ``p1`` (x, y), ``thickness`` pixels wide."""
    (a, b), width = fixed([p0, p1]), max(1, int(round(thickness)))
    pa, pb = (int(a[0]), int(a[1])), (int(b[0]), int(b[1]))
    return lambda img, colour, line_type: cv2.line(img, pa, pb, colour, width, line_type, SHIFT)


def polyline(points: Any, thickness: float, closed: bool = False) -> Stroke:
    """A polyline through ``points`` (x, y), closed into a loop when ``closed``."""
    pts, width = [fixed(points)], max(1, int(round(thickness)))
    return lambda img, colour, line_type: cv2.polylines(img, pts, closed, colour, width, line_type, SHIFT)


def polygon(points: Any) -> Stroke:
    """A filled polygon."""
    pts = [fixed(points)]
    return lambda img, colour, line_type: cv2.fillPoly(img, pts, colour, line_type, SHIFT)


def polygons(shapes: Sequence[Any]) -> Stroke:
    """Several filled polygons in one stroke."""
    pts = [fixed(p) for p in shapes]
    return lambda img, colour, line_type: cv2.fillPoly(img, pts, colour, line_type, SHIFT)


def circle(centre: Any, radius: float) -> Stroke:
    """A filled disc."""
    c, r = fixed(centre)[0], max(1, int(round(radius * (1 << SHIFT))))
    pc = (int(c[0]), int(c[1]))
    return lambda img, colour, line_type: cv2.circle(img, pc, r, colour, -1, line_type, SHIFT)


def hull(points: np.ndarray) -> Stroke:
    """The filled convex hull of 2-D points (the outline of a projected convex solid)."""
    corners = cv2.convexHull(np.asarray(points, np.float32).reshape(-1, 2)).reshape(-1, 2)
    return polygon(corners)


class Canvas:
    """The image being drawn, the owner map (object index + 1 of the top-most shape, 0 for the
    background) and the strokes of every object, for amodal masks."""

    def __init__(self, image: np.ndarray) -> None:
        self.image = image
        self.owner = np.zeros(image.shape[:2], np.int32)
        self.strokes: List[Tuple[int, Stroke]] = []

    def draw(self, owner: int, colour: Colour, stroke: Stroke) -> None:
        """Draw ``stroke`` in ``colour`` on the image and, unless ``owner`` is 0, with label
        ``owner`` on the owner map."""
        stroke(self.image, tuple(float(c) for c in colour), cv2.LINE_AA)
        if owner:   # owner 0: background scenery, never a mask
            stroke(self.owner, owner, cv2.LINE_8)
            self.strokes.append((owner, stroke))
