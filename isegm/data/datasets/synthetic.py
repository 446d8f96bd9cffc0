"""Procedural winter-sports scenes: training and evaluation samples with no download.

``render_scene(seed, size)`` draws a slope scene (sky, mountains, snow texture and tracks, a
forest edge) with 1-4 athletes (skiers with skis and poles, snowboarders with a board, all with
helmet and goggles), slalom gates, trees and safety fences, under day, overcast or dusk light,
with cast shadows, fog, blur and sensor noise. The same seed and size give the same bytes (with
the same NumPy and OpenCV versions); scenes take about 10 ms at 224 x 224 and 30 ms at 448 x 448
on one CPU core.

Objects and targets
-------------------
Every drawn object is a ``SceneObject`` with a kind (``KINDS``). Layer 0 holds whole objects
(athletes, held gear, gates, trees, fences) and is a partition of the visible pixels; layer 1
holds the worn gear (helmet, goggles), whose parent is its athlete. An athlete's mask is the
person with what they wear; skis, poles and snowboards are objects of their own, as COCO
annotates them. Masks are *visible* masks: whatever
is drawn in front of an object (another athlete, a gate, a tree, a fence mesh) is removed from
it; ``Scene.amodal_mask`` gives the unoccluded shape.

``TARGET_KINDS`` (athletes, their equipment and gates) are the interactive-segmentation
targets of both datasets; trees and fences are scenery: occluders and distractors, background
in every target mask.

Conventions: images H x W x 3 uint8 RGB, label layers int32 H x W x 2, pixel positions
``(y, x)`` in the public API (the drawing code uses OpenCV ``(x, y)`` points internally).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..sample import Augmentation, DSample, ObjectNode, TrainingSample
from .base import ISDataset
from .training import PointsSampler, TrainingDataset

ATHLETE_KINDS = ("skier", "snowboarder")
# Worn gear is part of its athlete (a child in layer 1); held or ridden gear is an object of
# its own, as COCO annotates skis and snowboards apart from the person.
WORN_KINDS = ("helmet", "goggles")
HELD_KINDS = ("ski", "pole", "snowboard")
EQUIPMENT_KINDS = HELD_KINDS + WORN_KINDS
SCENERY_KINDS = ("flag", "tree", "fence")
KINDS = ATHLETE_KINDS + EQUIPMENT_KINDS + SCENERY_KINDS
TARGET_KINDS = ATHLETE_KINDS + EQUIPMENT_KINDS + ("flag",)
LIGHTS = ("day", "overcast", "dusk")
FRAMINGS = ("wide", "close")

# Scene i of a dataset with seed s is render_scene(s * SEED_STRIDE + i) for training and
# render_scene(EVAL_SEED_OFFSET + s * SEED_STRIDE + i) for evaluation: disjoint ranges for any
# seed below 10**6 and fewer than SEED_STRIDE scenes.
SEED_STRIDE = 1_000_003
EVAL_SEED_OFFSET = 1 << 40
# Evaluation targets smaller than this fraction of the image are skipped (100 px at 224 x 224).
MIN_AREA_FRACTION = 0.002

# A drawing of one shape: stroke(target, colour or label, OpenCV line type).
Stroke = Callable[[np.ndarray, Any, int], None]
Colour = Sequence[float]   # RGB, 0-255

_SHIFT = 4  # OpenCV sub-pixel bits: shapes keep fractional coordinates (smooth small limbs)


@dataclass
class SceneObject:
    """One object: its kind, its label ``value`` in layer ``layer``, its parent and children
    (indices into ``Scene.objects``) and its visible area in pixels."""

    kind: str
    layer: int
    value: int
    parent: Optional[int] = None
    children: List[int] = field(default_factory=list)
    area: int = 0


@dataclass
class Scene:
    """A rendered scene: ``image`` uint8 H x W x 3 RGB, ``layers`` int32 H x W x 2 (see the
    module docstring), ``objects`` and the ``light`` it was rendered under. ``strokes`` are the
    shapes of the objects as (object index + 1, stroke), in drawing order, for ``amodal_mask``."""

    image: np.ndarray
    layers: np.ndarray
    objects: List[SceneObject]
    seed: int
    light: str
    strokes: List[Tuple[int, Stroke]] = field(default_factory=list, repr=False)

    def mask(self, index: int) -> np.ndarray:
        """bool H x W: the visible pixels of object ``index``."""
        obj = self.objects[index]
        return self.layers[:, :, obj.layer] == obj.value

    def amodal_mask(self, index: int) -> np.ndarray:
        """bool H x W: object ``index`` (with its children) as drawn, before later objects hid
        parts of it."""
        owners = {index + 1} | {child + 1 for child in self.objects[index].children}
        mask = np.zeros(self.image.shape[:2], np.uint8)
        for owner, stroke in self.strokes:
            if owner in owners:
                stroke(mask, 1, cv2.LINE_8)
        return mask.astype(bool)

    def targets(self, kinds: Sequence[str] = TARGET_KINDS, min_area: int = 1) -> List[int]:
        """Indices of the objects of ``kinds`` with at least ``min_area`` visible pixels."""
        return [i for i, obj in enumerate(self.objects) if obj.kind in kinds and obj.area >= max(min_area, 1)]


# ----------------------------------------------------------------------------------------
# Drawing primitives: each returns a Stroke, drawn once in colour (anti-aliased) on the image
# and once with the object's label on the owner map, so image and masks share every shape.

def _fixed(points: Any) -> np.ndarray:
    return np.round(np.asarray(points, np.float64).reshape(-1, 2) * (1 << _SHIFT)).astype(np.int32)


def _line(p0: Any, p1: Any, thickness: float) -> Stroke:
    (a, b), width = _fixed([p0, p1]), max(1, int(round(thickness)))
    pa, pb = (int(a[0]), int(a[1])), (int(b[0]), int(b[1]))
    return lambda img, colour, line_type: cv2.line(img, pa, pb, colour, width, line_type, _SHIFT)


def _polyline(points: Any, thickness: float, closed: bool = False) -> Stroke:
    pts, width = [_fixed(points)], max(1, int(round(thickness)))
    return lambda img, colour, line_type: cv2.polylines(img, pts, closed, colour, width, line_type, _SHIFT)


def _polygon(points: Any) -> Stroke:
    pts = [_fixed(points)]
    return lambda img, colour, line_type: cv2.fillPoly(img, pts, colour, line_type, _SHIFT)


def _polygons(polygons: Sequence[Any]) -> Stroke:
    pts = [_fixed(p) for p in polygons]
    return lambda img, colour, line_type: cv2.fillPoly(img, pts, colour, line_type, _SHIFT)


def _circle(centre: Any, radius: float) -> Stroke:
    c, r = _fixed(centre)[0], max(1, int(round(radius * (1 << _SHIFT))))
    pc = (int(c[0]), int(c[1]))
    return lambda img, colour, line_type: cv2.circle(img, pc, r, colour, -1, line_type, _SHIFT)


def _hull(points: np.ndarray) -> Stroke:
    """The filled convex hull of 2-D points (the outline of a projected convex solid)."""
    hull = cv2.convexHull(np.asarray(points, np.float32).reshape(-1, 2)).reshape(-1, 2)
    return _polygon(hull)


class _Canvas:
    """The image being drawn, the owner map (object index + 1 of the top-most shape, 0 for the
    background) and the strokes of every object, for amodal masks."""

    def __init__(self, image: np.ndarray) -> None:
        self.image = image
        self.owner = np.zeros(image.shape[:2], np.int32)
        self.strokes: List[Tuple[int, Stroke]] = []

    def draw(self, owner: int, colour: Colour, stroke: Stroke) -> None:
        stroke(self.image, tuple(float(c) for c in colour), cv2.LINE_AA)
        if owner:   # owner 0: background scenery, never a mask
            stroke(self.owner, owner, cv2.LINE_8)
            self.strokes.append((owner, stroke))


# ----------------------------------------------------------------------------------------
# Noise and colours.

def _noise(rng: np.random.Generator, shape: Tuple[int, int], cells: float, octaves: int = 3,
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


def _noise1d(rng: np.random.Generator, length: int, cells: float, octaves: int = 3) -> np.ndarray:
    """float32 fractal noise along one axis (ridges, slope edges)."""
    return _noise(rng, (1, length), cells, octaves)[0]


JACKETS = ((205, 30, 40), (235, 95, 20), (245, 205, 25), (30, 115, 205), (25, 55, 140), (40, 150, 70),
           (125, 50, 165), (230, 60, 140), (22, 22, 28), (236, 236, 240), (135, 140, 145), (0, 150, 150),
           (250, 125, 165), (95, 175, 235), (170, 215, 40), (110, 70, 45))
PANTS = ((25, 25, 30), (45, 45, 55), (65, 65, 75), (25, 40, 85), (205, 205, 210), (125, 30, 30), (75, 85, 60),
         (230, 230, 235), (140, 140, 150))
HELMETS = ((242, 242, 242), (22, 22, 22), (205, 30, 30), (30, 80, 185), (245, 205, 30), (150, 150, 158),
           (250, 125, 30), (230, 80, 160))
LENSES = ((235, 145, 30), (205, 60, 165), (60, 125, 225), (235, 205, 60), (45, 45, 55), (150, 220, 245),
          (230, 80, 40))
SKIS = ((215, 30, 40), (250, 250, 250), (25, 25, 30), (30, 120, 215), (250, 200, 30), (40, 170, 90),
        (245, 100, 30), (160, 60, 200))
POLES = ((195, 195, 200), (30, 30, 30), (205, 40, 40), (40, 95, 205), (245, 205, 40), (60, 160, 70))
SKIN = ((242, 205, 175), (225, 175, 135), (175, 125, 95), (115, 80, 58))
GAITERS = ((25, 25, 30), (60, 60, 70), (180, 30, 40), (30, 70, 150), (220, 220, 225))
ROCK = np.array([85, 90, 105], np.float32)
GATES = ((215, 30, 35), (30, 70, 200))


def _pick(rng: np.random.Generator, palette: Sequence[Tuple[int, int, int]], jitter: float = 18) -> np.ndarray:
    return np.clip(np.asarray(palette[int(rng.integers(len(palette)))], np.float32)
                   + rng.uniform(-jitter, jitter, 3), 0, 255)


@dataclass
class _Light:
    """The scene's light: sky and snow colours, the tint of object colours, the sun (azimuth
    around the vertical axis, elevation, in radians; None when overcast) and shadow strength."""

    name: str
    sky_top: np.ndarray
    sky_horizon: np.ndarray
    snow_lit: np.ndarray
    snow_shade: np.ndarray
    tint: np.ndarray
    sun: Optional[Tuple[float, float]]
    shadow: float
    fog: float

    def colour(self, albedo: np.ndarray) -> np.ndarray:
        """An object colour under this light."""
        return np.clip(albedo * self.tint, 0, 255)

    def sun_direction(self) -> np.ndarray:
        """Unit vector towards the sun in the ground frame (x right, y up, z towards the camera)."""
        azimuth, elevation = self.sun if self.sun is not None else (0.0, math.pi / 2)
        return np.array([math.cos(elevation) * math.cos(azimuth), math.sin(elevation),
                         math.cos(elevation) * math.sin(azimuth)])


def _light(rng: np.random.Generator) -> _Light:
    name = LIGHTS[int(rng.choice(3, p=[0.45, 0.3, 0.25]))]

    def jitter(scale: float) -> np.ndarray:
        return rng.uniform(-scale, scale, 3).astype(np.float32)

    if name == "day":
        return _Light(name, np.array([35, 95, 195], np.float32) + jitter(20),
                      np.array([175, 210, 242], np.float32) + jitter(10),
                      np.array([250, 251, 253], np.float32) - abs(jitter(4)),
                      np.array([140, 170, 215], np.float32) + jitter(12),
                      np.ones(3, np.float32), (rng.uniform(-math.pi, 0), rng.uniform(0.4, 1.0)),
                      rng.uniform(0.4, 0.6), rng.uniform(0, 0.15))
    if name == "overcast":
        grey = rng.uniform(150, 200)
        return _Light(name, np.full(3, grey, np.float32) + jitter(6),
                      np.full(3, grey + 30, np.float32) + jitter(5),
                      np.array([232, 235, 238], np.float32) + jitter(5),
                      np.array([185, 192, 205], np.float32) + jitter(8),
                      np.array([0.86, 0.88, 0.92], np.float32), None,
                      rng.uniform(0.2, 0.35), rng.uniform(0.1, 0.6))
    return _Light(name, np.array([45, 45, 100], np.float32) + jitter(15),
                  np.array([250, 155, 95], np.float32) + jitter(15),
                  np.array([252, 215, 190], np.float32) + jitter(8),
                  np.array([115, 115, 170], np.float32) + jitter(12),
                  np.array([0.95, 0.76, 0.68], np.float32), (rng.uniform(-math.pi, 0), rng.uniform(0.12, 0.35)),
                  rng.uniform(0.35, 0.55), rng.uniform(0, 0.2))


# ----------------------------------------------------------------------------------------
# Athletes: a 3-D stick figure in the body frame (x forward, y up, z to the athlete's left, in
# units of the athlete's height), rolled into the turn, turned by a yaw, seen by an orthographic
# camera looking down by a pitch; parts drawn far to near.

class _View:
    """Body frame -> ground frame (roll, yaw) -> image (pitch, scale, offset)."""

    def __init__(self, foot: Tuple[float, float], height: float, yaw: float, pitch: float, roll: float) -> None:
        cr, sr, cy, sy = math.cos(roll), math.sin(roll), math.cos(yaw), math.sin(yaw)
        roll_m = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
        yaw_m = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        self.to_ground = yaw_m @ roll_m
        cp, sp = math.cos(pitch), math.sin(pitch)
        self.to_camera = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
        self.foot, self.height = np.asarray(foot, np.float64), height

    def ground(self, points: np.ndarray) -> np.ndarray:
        return np.asarray(points, np.float64).reshape(-1, 3) @ self.to_ground.T

    def project(self, ground: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Ground-frame points -> image points (N, 2) as (x, y) and depths (larger is nearer)."""
        cam = np.asarray(ground, np.float64).reshape(-1, 3) @ self.to_camera.T
        xy = np.stack([self.foot[0] + self.height * cam[:, 0], self.foot[1] - self.height * cam[:, 1]], 1)
        return xy, cam[:, 2]

    def shadow(self, ground: np.ndarray, sun: np.ndarray) -> np.ndarray:
        """Ground-frame points -> image points of their shadows on the snow (y = 0)."""
        ground = np.asarray(ground, np.float64).reshape(-1, 3)
        flat = ground - ground[:, 1:2] / max(sun[1], 0.15) * sun
        return self.project(flat)[0]


@dataclass
class _Plan:
    """An object ready to draw: its ground line (drawing order), its shapes as (owner, colour,
    stroke) and its shadow strokes."""

    ground_y: float
    shapes: List[Tuple[int, Colour, Stroke]]
    shadows: List[Stroke]


class _Builder:
    """Objects of one scene, planned in creation order (the random draws) and drawn far to near."""

    def __init__(self, rng: np.random.Generator, size: Tuple[int, int], light: _Light, horizon: float) -> None:
        self.rng, self.size, self.light, self.horizon = rng, size, light, horizon
        self.objects: List[SceneObject] = []
        self.plans: List[_Plan] = []

    def depth_scale(self, y: float) -> float:
        """Perspective: 0 at the horizon, 1 at the bottom edge of the image."""
        height = self.size[0]
        return max((y - self.horizon) / (height - self.horizon), 0.02)

    def new(self, kind: str, parent: Optional[int] = None) -> int:
        """A new object; returns its owner label (index + 1)."""
        index = len(self.objects)
        layer = 1 if kind in WORN_KINDS else 0
        parent = None if kind in HELD_KINDS else parent
        self.objects.append(SceneObject(kind, layer, index + 1, parent))
        if parent is not None:
            self.objects[parent].children.append(index)
        return index + 1

    # -- athletes --------------------------------------------------------------------------

    def athlete(self, foot: Tuple[float, float], height: float, kind: str) -> None:
        """A skier or snowboarder standing at ``foot`` (x, y), ``height`` pixels tall upright,
        in a random pose, direction and clothing; the equipment becomes its child objects."""
        rng, light = self.rng, self.light
        owner = self.new(kind)
        view = _View(foot, height, yaw=rng.uniform(-math.pi, math.pi), pitch=rng.uniform(0.08, 0.5),
                     roll=rng.uniform(-0.35, 0.35) * (rng.random() < 0.6))
        jacket = _pick(rng, JACKETS)
        pants = jacket * rng.uniform(0.75, 0.95) if rng.random() < 0.25 else _pick(rng, PANTS)
        gloves = _pick(rng, ((20, 20, 20), (60, 60, 65), tuple(jacket.astype(int))), 8)
        boots = _pick(rng, ((25, 25, 25), (230, 230, 235), (200, 40, 40), (40, 80, 170)), 10)
        body = self._skier(owner) if kind == "skier" else self._snowboarder(owner)
        parts: List[Tuple[float, int, Colour, Stroke]] = []   # (depth, owner, colour, stroke)
        shadows: List[Stroke] = []
        sun = light.sun_direction()
        toward_sun = np.array([sun[0], -sun[1]]) / np.hypot(sun[0], sun[1])   # in the image (y down)

        # Legs, boots, arms, gloves: thick lines (start, end, width, albedo, lit stripe), projected together.
        limbs = []
        for side in (0, 1):
            limbs += [(body["hip"][side], body["knee"][side], 0.085, pants, True),
                      (body["knee"][side], body["ankle"][side], 0.072, pants, True),
                      (body["ankle"][side], body["toe"][side], 0.06, boots, False),
                      (body["shoulder"][side], body["elbow"][side], 0.066, jacket, True),
                      (body["elbow"][side], body["hand"][side], 0.058, jacket, True),
                      (body["hand"][side], body["hand"][side] + [0.02, 0, 0], 0.05, gloves, False)]
        ends = view.ground(np.stack([point for limb in limbs for point in limb[:2]]))
        xy, depth = view.project(ends)
        shadow_xy = view.shadow(ends, sun)
        for k, (_, _, width, albedo, shade) in enumerate(limbs):
            (pa, pb), d, w = xy[2 * k:2 * k + 2], float(depth[2 * k:2 * k + 2].mean()), width * height
            parts.append((d, owner, light.colour(albedo), _line(pa, pb, w)))
            if shade and w >= 3:   # a lit stripe on the sun side: limbs read as round
                offset = toward_sun * 0.22 * w
                lit = light.colour(np.minimum(albedo * 1.18 + 22, 255))
                parts.append((d + 1e-4, owner, lit, _line(pa + offset, pb + offset, w * 0.4)))
            shadows.append(_line(shadow_xy[2 * k], shadow_xy[2 * k + 1], w))
        torso = view.ground(body["torso"])
        torso_xy, torso_depth = view.project(torso)
        parts.append((float(torso_depth.mean()), owner, light.colour(jacket), _hull(torso_xy)))
        shadows.append(_hull(view.shadow(torso, sun)))
        self._head(view, body, owner, parts, shadows, sun)
        parts += body["gear"](view, shadows, sun)
        parts.sort(key=lambda part: part[0])
        self.plans.append(_Plan(foot[1], [(who, colour, stroke) for _, who, colour, stroke in parts], shadows))

    def _skier(self, owner: int) -> Dict[str, Any]:
        """A skier's body (``_body``): knees and hips bent, poles planted or trailing, two skis."""
        rng, light = self.rng, self.light
        stance, bend, crouch = rng.uniform(0.05, 0.09), rng.uniform(0.04, 0.2), rng.uniform(0.0, 0.12)
        lean = rng.uniform(0.15, 0.7)
        ahead = rng.uniform(-0.05, 0.05)
        ankle = [np.array([ahead, 0.06, stance]), np.array([-ahead, 0.06, -stance])]
        knee = [a + np.array([bend, 0.25 - crouch * 0.4, 0.01 * (1 - 2 * i)]) for i, a in enumerate(ankle)]
        hip_c = np.array([-0.04 - bend * 0.4, 0.52 - crouch, 0.0])
        hip = [hip_c + [0, 0, 0.07], hip_c - [0, 0, 0.07]]
        up = np.array([math.sin(lean), math.cos(lean), 0.0])
        shoulder_c = hip_c + 0.3 * up
        shoulder = [shoulder_c + [0, 0, 0.12], shoulder_c - [0, 0, 0.12]]
        elbow, hand = [], []
        for i, s in enumerate(shoulder):
            side = 1 - 2 * i
            e = s + np.array([rng.uniform(0.0, 0.14), -rng.uniform(0.1, 0.16), side * rng.uniform(0.02, 0.08)])
            elbow.append(e)
            hand.append(e + np.array([rng.uniform(0.06, 0.14), rng.uniform(-0.05, 0.06), side * 0.02]))
        ski_colour = light.colour(_pick(rng, SKIS))
        pole_colour = light.colour(_pick(rng, POLES, 10))
        ski_length = rng.uniform(0.85, 1.0)
        skis = [self.new("ski", owner - 1) for _ in range(2)]
        poles = [self.new("pole", owner - 1) for _ in range(2)]
        pole_tips = []
        for i, h in enumerate(hand):
            tip = np.array([h[0] - rng.uniform(-0.15, 0.5), rng.uniform(0.0, 0.02) + 0.12 * (rng.random() < 0.2),
                            h[2] + (1 - 2 * i) * rng.uniform(0.0, 0.12)])
            pole_tips.append(tip)

        def gear(view: _View, shadows: list, sun: np.ndarray) -> list:
            out = []
            thickness = max(0.03 * view.height, 1.0)
            for i, a in enumerate(ankle):
                # A ski: tail, binding, front, tip curled up; in segments so each sorts by its depth.
                pts = np.array([[-0.42 * ski_length, 0.015, a[2]], [0.0, 0.015, a[2]],
                                [0.5 * ski_length, 0.015, a[2]], [0.57 * ski_length, 0.05, a[2]]])
                pts[:, 0] += a[0]
                ground = view.ground(pts)
                xy, depth = view.project(ground)
                for j in range(3):
                    out.append((float(depth[j:j + 2].mean()) - 0.05, skis[i], ski_colour,
                                _line(xy[j], xy[j + 1], thickness)))
                shadows.append(_polyline(view.shadow(ground, sun), thickness))
            for i, h in enumerate(hand):
                tip = pole_tips[i]
                top = h + (h - tip) / np.linalg.norm(h - tip) * 0.05
                basket = tip + (top - tip) / np.linalg.norm(top - tip) * 0.07
                ground = view.ground(np.stack([top, (top + tip) / 2, tip, basket]))
                xy, depth = view.project(ground)
                width = max(0.016 * view.height, 1.0)
                out.append((float(depth[:2].mean()), poles[i], pole_colour, _line(xy[0], xy[1], width)))
                out.append((float(depth[1:3].mean()), poles[i], pole_colour, _line(xy[1], xy[2], width)))
                out.append((float(depth[3]), poles[i], light.colour(np.array([30, 30, 30.0])),
                            _circle(xy[3], max(0.025 * view.height, 1.0))))
                shadows.append(_line(*view.shadow(ground[[0, 2]], sun), width))
            return out

        return self._body(ankle, knee, hip, shoulder, elbow, hand, hip_c, shoulder_c, up, gear,
                          face=np.array([1.0, -0.15, 0.0]))

    def _snowboarder(self, owner: int) -> Dict[str, Any]:
        """A snowboarder's body (``_body``): sideways on the board, arms out for balance."""
        rng, light = self.rng, self.light
        stance, crouch, lean = rng.uniform(0.12, 0.17), rng.uniform(0.0, 0.12), rng.uniform(-0.25, 0.35)
        toe = 1 if rng.random() < 0.5 else -1  # which side the body faces (the board's toe edge)
        ankle = [np.array([stance, 0.06, 0.0]), np.array([-stance, 0.06, 0.0])]
        knee = [a + np.array([-0.04 * np.sign(a[0]), 0.24 - crouch * 0.4, toe * rng.uniform(0.04, 0.1)])
                for a in ankle]
        hip_c = np.array([0.0, 0.52 - crouch, toe * 0.02])
        twist = rng.uniform(-0.6, 0.6)
        across = np.array([math.cos(twist), 0.0, math.sin(twist)])  # shoulders and hips run along the board
        hip = [hip_c + 0.07 * across, hip_c - 0.07 * across]
        up = np.array([0.0, math.cos(lean), toe * math.sin(lean)])
        shoulder_c = hip_c + 0.3 * up
        shoulder = [shoulder_c + 0.12 * across, shoulder_c - 0.12 * across]
        elbow, hand = [], []
        for i, s in enumerate(shoulder):
            side = 1 - 2 * i
            e = s + np.array([side * rng.uniform(0.05, 0.14), -rng.uniform(0.05, 0.15), toe * rng.uniform(0, 0.06)])
            elbow.append(e)
            hand.append(e + np.array([side * rng.uniform(0.05, 0.14), rng.uniform(-0.12, 0.08),
                                      toe * rng.uniform(0, 0.06)]))
        board_colour = light.colour(_pick(rng, SKIS))
        stripe_colour = light.colour(_pick(rng, SKIS))
        board = self.new("snowboard", owner - 1)
        length, width = rng.uniform(0.36, 0.42), rng.uniform(0.065, 0.08)

        def gear(view: _View, shadows: list, sun: np.ndarray) -> list:
            # A rounded rectangle (superellipse) under the feet, drawn before the body.
            t = np.linspace(0, 2 * math.pi, 28, endpoint=False)
            c, s = np.cos(t), np.sin(t)
            outline = np.stack([length * np.sign(c) * np.abs(c) ** 0.3, np.full_like(t, 0.02),
                                width * np.sign(s) * np.abs(s) ** 0.3], 1)
            ground = view.ground(outline)
            xy, _ = view.project(ground)
            stripe = outline * [0.55, 1, 0.35]
            out = [(-10.0, board, board_colour, _polygon(xy)),
                   (-9.9, board, stripe_colour, _polygon(view.project(view.ground(stripe))[0]))]
            edge = max(0.012 * view.height, 1.0)
            out.append((-9.8, board, light.colour(np.array([30, 30, 35.0])), _polyline(xy, edge, True)))
            shadows.append(_polygon(view.shadow(ground, sun)))
            return out

        face = np.array([0.6, -0.15, toe * 0.8])
        return self._body(ankle, knee, hip, shoulder, elbow, hand, hip_c, shoulder_c, up, gear,
                          face=face / np.linalg.norm(face))

    @staticmethod
    def _body(ankle: list, knee: list, hip: list, shoulder: list, elbow: list, hand: list, hip_c: np.ndarray,
              shoulder_c: np.ndarray, up: np.ndarray, gear: Callable, face: np.ndarray) -> Dict[str, Any]:
        """The body as ``athlete`` draws it: pairs of joints (``ankle``, ``toe``, ``knee``, ``hip``,
        ``shoulder``, ``elbow``, ``hand``), the torso's corners (a box, drawn as their hull), the head
        centre and face direction, and ``gear(view, shadows, sun)``, which returns the equipment's
        shapes as (depth, owner, colour, stroke) and adds their shadows."""
        side_h, side_s = (hip[0] - hip[1]) / 2, (shoulder[0] - shoulder[1]) / 2
        front = np.cross(side_s / np.linalg.norm(side_s), up)
        corners = [centre + sign * side * 1.1 + depth * front
                   for centre, side in ((hip_c, side_h), (shoulder_c, side_s))
                   for sign in (1, -1) for depth in (0.065, -0.065)]
        toe = [a + np.array([0.07, -0.035, 0.0]) for a in ankle]
        head = shoulder_c + 0.13 * (up * 0.8 + np.array([0.2, 0.2, 0.0]))
        return {"ankle": ankle, "knee": knee, "hip": hip, "shoulder": shoulder, "elbow": elbow, "hand": hand,
                "toe": toe, "torso": np.stack(corners + [shoulder_c + 0.05 * up]), "head": head, "face": face,
                "gear": gear}

    def _head(self, view: _View, body: Dict[str, Any], owner: int, parts: list, shadows: list,
              sun: np.ndarray) -> None:
        """Head (neck gaiter or skin), helmet cap over it, goggles band on the face side."""
        rng, light = self.rng, self.light
        radius = 0.068
        centre = view.ground(body["head"])[0]
        xy, depth = view.project(centre)
        d = float(depth[0]) + 0.3   # the head sits on top of the torso and arms around it
        r_px = radius * view.height
        skin = _pick(rng, SKIN if rng.random() < 0.6 else GAITERS, 8)
        helmet = self.new("helmet", owner - 1)
        goggles = self.new("goggles", owner - 1)
        neck = view.ground(body["head"] - np.array([0, 0.07, 0]))
        parts.append((d - 0.01, owner, light.colour(skin * 0.9), _line(view.project(neck)[0][0], xy[0], r_px)))
        parts.append((d, owner, light.colour(skin), _circle(xy[0], r_px)))
        shadows.append(_circle(view.shadow(centre, sun)[0], r_px))
        face = view.ground(body["face"])[0]
        face /= np.linalg.norm(face)
        up = np.array([0.0, 1.0, 0.0])
        left = np.cross(up, face)
        left /= np.linalg.norm(left) + 1e-9

        def sphere(scale: float, lats: Sequence[float], azimuths: np.ndarray) -> np.ndarray:
            """Points (lats, azimuths, 3) on the head sphere; azimuth 0 is the face direction."""
            lat, az = np.asarray(lats)[:, None, None], azimuths[None, :, None]
            around = np.cos(az) * face + np.sin(az) * left
            return centre + radius * scale * (np.cos(lat) * around + np.sin(lat) * up)

        # Helmet: the spherical cap above the brow (an orthographic projection of a convex cap is
        # the hull of its points), slightly larger than the head, lower at the back.
        cap = sphere(1.12, (-0.25, 0.3, 0.9, 1.5), np.linspace(0, 2 * math.pi, 14, endpoint=False))
        cap = np.concatenate([cap.reshape(-1, 3), [centre - face * radius * 0.9 - up * radius * 0.6]])
        parts.append((d + 0.001, helmet, light.colour(_pick(rng, HELMETS)), _hull(view.project(cap)[0])))
        # Goggles: a band on the front of the sphere, drawn when the face turns towards the camera.
        band = sphere(1.16, (0.38, -0.08), np.linspace(-1.1, 1.1, 9))
        frame = light.colour(_pick(rng, ((20, 20, 22), (240, 240, 240), (200, 40, 40)), 8))
        lens = light.colour(_pick(rng, LENSES, 15))
        if ((band[0, 4] - centre) @ view.to_camera.T)[2] > -0.02:
            outline = np.concatenate([view.project(band[0])[0], view.project(band[1, ::-1])[0]])
            parts.append((d + 0.002, goggles, frame, _polygon(outline)))
            parts.append((d + 0.003, goggles, frame, _polyline(outline, max(0.012 * view.height, 1.0), True)))
            inner = outline.mean(0) + (outline - outline.mean(0)) * 0.72
            parts.append((d + 0.004, goggles, lens, _polygon(inner)))
            shine = inner[:9] * 0.6 + inner.mean(0) * 0.4
            parts.append((d + 0.005, goggles, np.minimum(lens * 1.3 + 50, 255),
                          _polyline(shine[1:4], max(0.008 * view.height, 1.0))))

    # -- scenery ---------------------------------------------------------------------------

    def gate(self, base: Tuple[float, float], height: float) -> None:
        """A slalom gate: a pole (or two, giant-slalom style) with a flag panel; one object."""
        rng, light = self.rng, self.light
        owner = self.new("flag")
        colour = light.colour(_pick(rng, GATES, 12))
        x, y = base
        lean = rng.uniform(-0.12, 0.12)
        top = (x + lean * height, y - height)
        width = max(0.02 * height, 1.0)
        shapes: List[Tuple[int, Colour, Stroke]] = []
        shadows: List[Stroke] = []
        sun = light.sun_direction()
        shadow_dir = np.array([-sun[0], -sun[2] * 0.4]) / max(sun[1], 0.25) * height * 0.5
        poles = [(x, y), top]
        if rng.random() < 0.5:   # giant slalom: a second pole and a wide panel between them
            span = rng.uniform(0.35, 0.55) * height * rng.choice([-1, 1])
            second = ((x + span, y - rng.uniform(-0.05, 0.05) * height), (top[0] + span, top[1]))
            panel = [(top[0], top[1] + 0.04 * height), (second[1][0], second[1][1] + 0.04 * height),
                     (second[1][0], second[1][1] + 0.34 * height), (top[0], top[1] + 0.34 * height)]
            pole_list = [poles, list(second)]
        else:                   # slalom: a triangular flag near the top of one pole
            side = rng.choice([-1, 1]) * 0.35 * height
            panel = [(top[0], top[1] + 0.05 * height), (top[0] + side, top[1] + 0.15 * height),
                     (top[0], top[1] + 0.3 * height)]
            pole_list = [poles]
        for a, b in pole_list:
            shapes.append((owner, colour, _line(a, b, width)))
            shapes.append((owner, light.colour(np.array([245, 245, 245.0])),
                           _line(a, (a[0] * 0.85 + b[0] * 0.15, a[1] * 0.85 + b[1] * 0.15), width)))
            shadows.append(_line(a, (a[0] + shadow_dir[0], a[1] + shadow_dir[1]), width))
        shapes.append((owner, colour, _polygon(panel)))
        if rng.random() < 0.6:   # a white logo stripe across the panel
            p = np.asarray(panel)
            stripe = np.array([p[0] * 0.55 + p[-1] * 0.45, p[1] * 0.55 + p[-2] * 0.45]) if len(p) == 4 else \
                np.array([p[0] * 0.5 + p[2] * 0.5, p[1] * 0.7 + p[0] * 0.15 + p[2] * 0.15])
            shapes.append((owner, light.colour(np.array([240, 240, 240.0])),
                           _line(stripe[0], stripe[1], max(0.05 * height, 1.0))))
        self.plans.append(_Plan(y, shapes, shadows))

    def tree(self, base: Tuple[float, float], height: float) -> None:
        """A snowy conifer: trunk and stacked tiers with snow on their upper edges."""
        rng, light = self.rng, self.light
        owner = self.new("tree")
        x, y = base
        green = light.colour(np.array([28, 62, 42], np.float32) + rng.uniform(-10, 10, 3))
        snow = light.colour(light.snow_lit * rng.uniform(0.85, 0.95))
        shapes: List[Tuple[int, Colour, Stroke]] = [
            (owner, light.colour(np.array([70, 50, 35.0])), _line((x, y), (x, y - 0.3 * height), 0.05 * height))]
        tiers = int(rng.integers(4, 7))
        for i in range(tiers):
            bottom = y - 0.12 * height - i * 0.8 * height / tiers
            half = 0.28 * height * (1 - 0.7 * i / tiers) * rng.uniform(0.9, 1.1)
            tip = (x + rng.uniform(-0.02, 0.02) * height, bottom - 0.36 * height)
            tier = [(x - half, bottom), tip, (x + half, bottom), (x, bottom - 0.05 * height)]
            shapes.append((owner, green, _polygon(tier)))
            # Snow lying on the tier: a thin sliver along each upper edge, thicker at the bottom.
            for side in (-1, 1):
                corner = np.array([x + side * half, bottom])
                toward_tip = np.asarray(tip) - corner
                inward = np.array([-side * 0.06 * half, -0.01 * height])
                sliver = [corner, corner + toward_tip * 0.55, corner + toward_tip * 0.5 + inward * 0.4,
                          corner + inward + np.array([0.0, 0.02 * height])]
                shapes.append((owner, snow, _polygon(sliver)))
        shadows = [_polygon([(x - 0.3 * height, y), (x + 0.3 * height, y), (x, y + 0.1 * height)])]
        self.plans.append(_Plan(y, shapes, shadows))

    def fence(self, y: float, x0: float, x1: float, height: float) -> None:
        """A safety fence: posts, rails and a thin diagonal mesh (occludes through its holes)."""
        rng, light = self.rng, self.light
        owner = self.new("fence")
        colour = light.colour(_pick(rng, ((240, 110, 20), (220, 40, 40), (40, 90, 200)), 12))
        tilt = rng.uniform(-0.08, 0.08)

        def ground(x: float) -> float:
            return y + tilt * (x - x0)

        thin = max(0.02 * height, 1.0)
        shapes: List[Tuple[int, Colour, Stroke]] = []
        for fraction in (0.0, 0.5, 1.0):   # rails
            shapes.append((owner, colour, _line((x0, ground(x0) - fraction * height),
                                                (x1, ground(x1) - fraction * height), thin * (1 + (fraction == 1)))))
        run = 0.6 * height   # horizontal run of a mesh diagonal from the bottom rail to the top one
        for x in np.arange(x0, x1, 0.35 * height):
            for direction in (-1, 1):
                end = float(np.clip(x + direction * run, x0, x1))
                shapes.append((owner, colour, _line((x, ground(x)), (end, ground(end) - height * abs(end - x) / run),
                                                    thin)))
        post = light.colour(np.array([60, 60, 60.0]))
        for x in np.arange(x0, x1 + 1, 1.4 * height):
            shapes.append((owner, post, _line((x, ground(x) + 0.05 * height), (x, ground(x) - 1.05 * height),
                                              thin * 1.6)))
        self.plans.append(_Plan(y, shapes, []))


# ----------------------------------------------------------------------------------------
# Background: sky, mountains, slope.

def _background(rng: np.random.Generator, size: Tuple[int, int], light: _Light, horizon: float
                ) -> Tuple[np.ndarray, np.ndarray]:
    """float32 H x W x 3 background and the slope (bool H x W). Sky and mountains are computed
    only in the rows above the slope's top edge, the snow only in the rows below its highest point."""
    height, width = size
    rows = np.arange(height, dtype=np.float32)[:, None]
    tilt = rng.uniform(-0.25, 0.25) * height / width
    edge = (horizon + tilt * (np.arange(width) - width / 2)
            + _noise1d(rng, width, 3) * 0.04 * height).astype(np.float32)[None, :]
    slope = rows >= edge
    image = np.empty((height, width, 3), np.float32)
    top, bottom = (int(np.clip(v, 0, height)) for v in (math.floor(edge.min()), math.ceil(edge.max())))
    if bottom > 0:
        image[:bottom] = _sky_and_mountains(rng, rows[:bottom], edge, size, light)
    if top < height:
        snow = _snow(rng, rows[top:], edge, size, light, horizon)
        image[top:bottom] = np.where(slope[top:bottom, :, None], snow[:bottom - top], image[top:bottom])
        image[bottom:] = snow[bottom - top:]
    return image, slope


def _sky_and_mountains(rng: np.random.Generator, rows: np.ndarray, edge: np.ndarray, size: Tuple[int, int],
                       light: _Light) -> np.ndarray:
    """float32 (len(rows), W, 3): sky gradient with clouds, a far hazy range and a nearer one
    (rock with snow fields, shaded by the relief)."""
    height, width = size
    band = (len(rows), width)
    t = np.clip(rows / max(float(edge.min()), 1.0), 0, 1)[..., None] ** 0.8
    sky = light.sky_top * (1 - t) + light.sky_horizon * t
    clouds = np.clip(_noise(rng, band, 3, 4) * 1.6 - (0.2 if light.name == "overcast" else 0.9), 0, 1)[..., None]
    image = sky * (1 - clouds * 0.7) + light.sky_horizon * (1.05 * 0.7) * clouds
    for layer, (lift, haze) in enumerate(((rng.uniform(0.12, 0.35), 0.55), (rng.uniform(0.04, 0.16), 0.25))):
        if rng.random() < 0.2:
            continue
        ridge = edge - lift * height * (0.45 + 0.55 * (_noise1d(rng, width, 2 + 2 * layer, 4) * 0.9 + 0.6))
        first = int(np.clip(math.floor(ridge.min()), 0, len(rows)))   # only the rows the range reaches
        r = rows[first:]
        relief = _noise(rng, (len(r), width), 6, 4)
        light_side = np.clip(np.gradient(relief, axis=1) * (width * 0.05), -1, 1)[..., None]
        above = (edge - r) / np.maximum(edge - ridge, 1.0)   # 0 at the foot, 1 at the ridge
        snowy = (relief * 1.2 + above * 0.8 > 0.2)[..., None]
        # Snow and rock shaded by the relief (x0.85-1 and x0.7-1.3), then hazed towards the sky.
        snow, rock = light.snow_lit * (1 - haze), ROCK * (1 - haze)
        mountain = np.where(snowy, snow + light.sky_horizon * haze + snow * 0.15 * (light_side - 1),
                            rock + light.sky_horizon * haze + rock * 0.3 * light_side)
        image[first:] = np.where(((r >= ridge) & (r < edge))[..., None], mountain, image[first:])
    return image


def _snow(rng: np.random.Generator, rows: np.ndarray, edge: np.ndarray, size: Tuple[int, int], light: _Light,
          horizon: float) -> np.ndarray:
    """float32 (len(rows), W, 3): bump-shaded snow, corduroy lines converging to the horizon
    and ski tracks, for the given rows of the image."""
    height, width = size
    band = (len(rows), width)
    bumps = _noise(rng, band, rng.uniform(3, 8), 3)
    gy, gx = np.gradient(bumps)
    sun = light.sun_direction()
    lit = 0.8 + (gx * sun[0] - gy * sun[2]) * (rng.uniform(3, 7) * min(size) / 224)
    depth = np.clip((rows - horizon) / max(height - horizon, 1.0), 0.02, 1.0)
    lit += 0.12 * depth + _noise(rng, band, 60, 1) * 0.03
    if rng.random() < 0.5:
        vanish_x = width * rng.uniform(0.2, 0.8)
        period = rng.uniform(0.015, 0.03) * width
        cols = np.arange(width, dtype=np.float32)[None, :]
        lit -= 0.05 * ((np.sin((cols - vanish_x) / (period * depth) * (2 * math.pi)) > 0.6) & (depth > 0.08))
    tracks = np.zeros(band, np.uint8)
    first = float(rows[0, 0])
    for _ in range(int(rng.integers(1, 7))):
        ys = np.linspace(float(edge.mean()), height * 1.05, 24)
        d = np.clip((ys - horizon) / max(height - horizon, 1.0), 0.02, 1.0)
        x = rng.uniform(0, width) + np.sin(ys / height * rng.uniform(2, 9) + rng.uniform(0, 6)) \
            * rng.uniform(0, 0.2) * width * d
        gap = rng.uniform(0.01, 0.02) * width * d
        for side in (-1, 1):
            pts = _fixed(np.stack([x + side * gap, ys - first], 1))
            cv2.polylines(tracks, [pts], False, 255, max(1, int(0.006 * width)), cv2.LINE_AA, _SHIFT)
    lit -= tracks.astype(np.float32) * (0.18 / 255)
    lit = np.clip(lit, 0, 1)[..., None]
    return light.snow_shade + (light.snow_lit - light.snow_shade) * lit


def _forest(canvas: _Canvas, rng: np.random.Generator, size: Tuple[int, int], light: _Light, horizon: float,
            slope: np.ndarray) -> None:
    """A band of small conifers along the slope's top edge (background, in no mask)."""
    height, width = size
    if horizon < 2 or rng.random() < 0.35:
        return
    top = slope.argmax(0)
    polygons, snow = [], []
    for x in rng.uniform(-5, width + 5, int(width * rng.uniform(0.1, 0.3))):
        y = top[int(np.clip(x, 0, width - 1))] + rng.uniform(0, 0.03) * height
        h = rng.uniform(0.03, 0.08) * height
        polygons.append([(x - 0.25 * h, y), (x, y - h), (x + 0.25 * h, y)])
        snow.append([(x - 0.12 * h, y - 0.45 * h), (x, y - h * 0.9), (x + 0.05 * h, y - 0.5 * h)])
    canvas.draw(0, light.colour(np.array([30, 55, 40.0])) * 0.8 + light.sky_horizon * 0.2, _polygons(polygons))
    canvas.draw(0, light.colour(light.snow_lit * 0.8), _polygons(snow))


# ----------------------------------------------------------------------------------------

def render_scene(seed: int, size: Tuple[int, int] = (224, 224), framing: str = "wide") -> Scene:
    """Draw scene ``seed`` at ``size`` = (H, W); the same seed, size and framing give the same
    bytes. ``framing``: ``wide`` (1-4 athletes on the slope) or ``close`` (1-2 athletes near the
    camera, 0.6-0.95 of the image tall, as broadcast close-ups frame them)."""
    if framing not in FRAMINGS:
        raise ValueError(f"framing {framing!r}: expected one of {', '.join(FRAMINGS)}")
    height, width = size
    rng = np.random.default_rng(seed)
    light = _light(rng)
    horizon = height * (rng.uniform(0.12, 0.5) if rng.random() < 0.85 else rng.uniform(-0.3, -0.05))
    background, slope = _background(rng, size, light, horizon)
    builder = _Builder(rng, size, light, horizon)

    # Athletes: 1-4, sized by perspective; some placed next to another so that they overlap.
    close = framing == "close"
    count = int(rng.choice([1, 2], p=[0.6, 0.4])) if close else int(rng.choice([1, 2, 3, 4], p=[0.35, 0.35, 0.2, 0.1]))
    athletes: List[Tuple[float, float, float]] = []
    for i in range(count):
        if close:
            y = height * rng.uniform(0.88, 1.0)
            x = rng.uniform(0.25, 0.75) * width
            athletes.append((x, y, height * rng.uniform(0.6, 0.95)))
            builder.athlete((x, y), athletes[-1][2], "skier" if rng.random() < 0.6 else "snowboarder")
            continue
        if athletes and rng.random() < 0.4:
            ax, ay, ah = athletes[int(rng.integers(len(athletes)))]
            y = ay + rng.uniform(-0.15, 0.2) * ah
            x = ax + rng.uniform(-0.45, 0.45) * ah
        else:
            y = horizon + (height - horizon) * rng.uniform(0.55 if i == 0 else 0.3, 1.08)
            x = rng.uniform(0.1, 0.9) * width
        h = max(builder.depth_scale(y) * height * rng.uniform(0.45, 0.85), 0.14 * height)
        athletes.append((x, y, h))
        builder.athlete((x, y), h, "skier" if rng.random() < 0.6 else "snowboarder")

    # Gates, trees and a fence; some placed just in front of an athlete to occlude it.
    def near_athlete(spread: float) -> Tuple[float, float]:
        ax, ay, ah = athletes[int(rng.integers(len(athletes)))]
        return ax + rng.uniform(-spread, spread) * ah, ay + rng.uniform(0.02, 0.25) * ah

    for _ in range(int(rng.choice([0, 1, 2, 3], p=[0.35, 0.3, 0.2, 0.15]))):
        if rng.random() < 0.35:
            x, y = near_athlete(0.35)
        else:
            x, y = rng.uniform(0, width), horizon + (height - horizon) * rng.uniform(0.25, 1.0)
        builder.gate((x, y), builder.depth_scale(y) * height * rng.uniform(0.5, 0.75))
    for _ in range(int(rng.choice([0, 1, 2], p=[0.55, 0.33, 0.12]))):
        if rng.random() < 0.3:
            x, y = near_athlete(0.5)
        else:
            x = rng.choice([rng.uniform(-0.1, 0.2), rng.uniform(0.8, 1.1)]) * width
            y = horizon + (height - horizon) * rng.uniform(0.3, 1.1)
        builder.tree((x, y), builder.depth_scale(y) * height * rng.uniform(0.55, 1.1))
    if rng.random() < 0.2:
        y = near_athlete(0.0)[1] if rng.random() < 0.5 else horizon + (height - horizon) * rng.uniform(0.3, 0.9)
        x0 = rng.uniform(-0.1, 0.5) * width
        builder.fence(y, x0, x0 + rng.uniform(0.4, 1.0) * width, builder.depth_scale(y) * height * 0.3)

    # Shadows of every object on the snow (hard in sunlight, soft when overcast).
    shadow = np.zeros(size, np.uint8)
    for plan in builder.plans:
        for stroke in plan.shadows:
            stroke(shadow, 255, cv2.LINE_AA)
    soften = 0.6 if light.sun is not None else 0.02 * height
    shadow = cv2.GaussianBlur(shadow, (0, 0), soften) * slope
    darken = (light.shadow / 255 * (1 - light.snow_shade / np.maximum(light.snow_lit, 1))).astype(np.float32)
    shaded = np.flatnonzero(shadow.any(1))   # only the rows with a shadow
    if len(shaded):
        band = slice(shaded[0], shaded[-1] + 1)
        background[band] *= 1 - shadow[band, :, None] * darken

    canvas = _Canvas(np.clip(background, 0, 255).astype(np.uint8))
    _forest(canvas, rng, size, light, horizon, slope)
    for plan in sorted(builder.plans, key=lambda p: p.ground_y):   # far to near; stable for ties
        for owner, colour, stroke in plan.shapes:
            canvas.draw(owner, colour, stroke)

    image = _finish(canvas.image, rng, light, horizon, slope)
    layers = _layers(canvas.owner, builder.objects)
    counts = [np.bincount(layers[:, :, layer].ravel(), minlength=len(builder.objects) + 1) for layer in (0, 1)]
    for obj in builder.objects:
        obj.area = int(counts[obj.layer][obj.value])
    return Scene(image, layers, builder.objects, seed, light.name, canvas.strokes)


def _finish(image: np.ndarray, rng: np.random.Generator, light: _Light, horizon: float, slope: np.ndarray
            ) -> np.ndarray:
    """Global light and camera: cast shadows over the slope (athletes included), fog by depth,
    exposure, colour cast, contrast and vignette, blur and sensor noise. uint8 in, uint8 out."""
    height, width = image.shape[:2]
    out = image.astype(np.float32)
    if light.sun is not None and rng.random() < 0.3:   # shadows of trees or lifts out of frame
        # Noise stretched sideways: long bands across the slope, as low sun casts them.
        field_ = cv2.resize(_noise(rng, (height, max(width // 4, 2)), 3, 3), (width, height))
        mask = np.clip((field_ - rng.uniform(0.2, 0.6)) * 6, 0, 1) * slope
        shade = light.snow_shade / np.maximum(light.snow_lit, 1) * 0.9
        out *= 1 - mask[..., None] * ((1 - shade) * rng.uniform(0.5, 0.9))
    if light.fog > 0:   # only the rows where the fog is visible: it fades out towards the camera
        near = np.clip((np.arange(height, dtype=np.float32) - horizon) / max(height - horizon, 1.0), 0, 1)
        fog = (light.fog * (1 - near) ** 2)[:, None, None]
        last = int(np.count_nonzero(fog > 0.005))
        out[:last] = out[:last] * (1 - fog[:last]) + light.sky_horizon * fog[:last]
    # Exposure and colour cast, contrast around mid-grey and vignette in one multiply-add.
    contrast = rng.uniform(0.85, 1.15)
    gain = (rng.uniform(0.75, 1.1) * contrast * rng.uniform(0.93, 1.07, 3)).astype(np.float32)
    ys = ((np.arange(height, dtype=np.float32) / height - 0.5) ** 2)[:, None]
    xs = ((np.arange(width, dtype=np.float32) / width - 0.5) ** 2)[None, :]
    vignette = 1 - rng.uniform(0, 0.5) * (ys + xs)
    out = out * (vignette[..., None] * gain) + (128 * (1 - contrast)) * vignette[..., None]
    blur = rng.random()
    if blur < 0.45:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.3, 0.9))
    elif blur < 0.6:   # motion blur along a random direction (panning camera)
        length = int(rng.integers(3, 6))
        kernel = np.zeros((length, length), np.float32)
        kernel[length // 2] = 1
        rot = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), rng.uniform(0, 180), 1)
        kernel = cv2.warpAffine(kernel, rot, (length, length))
        out = cv2.filter2D(out, -1, kernel / max(float(kernel.sum()), 1e-6))
    # Sensor noise, uniform from random bytes (a tenth of the cost of normal draws), std 1-5.
    noise = np.frombuffer(rng.bytes(out.size), np.uint8).reshape(out.shape).astype(np.float32)
    out += (noise - 127.5) * (rng.uniform(1, 5) / 73.9)
    return np.clip(out, 0, 255).astype(np.uint8)


def _layers(owner: np.ndarray, objects: List[SceneObject]) -> np.ndarray:
    """int32 H x W x 2 from the owner map: layer 0 the top-level object of each pixel, layer 1
    the equipment piece (lookup tables indexed by owner label)."""
    whole = np.zeros(len(objects) + 1, np.int32)
    parts = np.zeros(len(objects) + 1, np.int32)
    for i, obj in enumerate(objects):
        root = i if obj.parent is None else obj.parent
        whole[i + 1] = objects[root].value
        if obj.layer == 1:
            parts[i + 1] = obj.value
    return np.stack([whole[owner], parts[owner]], axis=2)


# ----------------------------------------------------------------------------------------
# Datasets.

def _training_objects(scene: Scene, kinds: Sequence[str]) -> Dict[int, ObjectNode]:
    """Visible objects of ``kinds`` as ``ObjectNode``s keyed by scene index; a parent outside
    the selection is dropped (the child becomes a root)."""
    chosen = set(scene.targets(kinds))
    nodes = {}
    for i in sorted(chosen):
        obj = scene.objects[i]
        parent = obj.parent if obj.parent in chosen else None
        nodes[i] = ObjectNode(obj.layer, obj.value, parent, [c for c in obj.children if c in chosen])
    return nodes


class WinterSportsDataset(TrainingDataset):
    """Generated training scenes: scene ``i`` is ``render_scene(seed * SEED_STRIDE + i, size)``.

    Objects are the visible ``kinds`` (default ``TARGET_KINDS``) with their hierarchy: an
    athlete's equipment are its children, so the points sampler may pick the athlete or a part.
    The scene itself is fixed per index; ``rng`` only drives augmentation and clicks.
    """

    def __init__(self, points_sampler: PointsSampler, num_scenes: int = 10_000, size: Tuple[int, int] = (224, 224),
                 seed: int = 0, kinds: Sequence[str] = TARGET_KINDS, augmentation: Optional[Augmentation] = None,
                 min_object_area: int = 0, keep_background_prob: float = 0.0, epoch_len: int = -1,
                 framing: str = "wide") -> None:
        super().__init__(points_sampler, augmentation, min_object_area, keep_background_prob, epoch_len, seed)
        self.size, self.kinds, self.framing = tuple(size), tuple(kinds), framing
        self.dataset_samples = [seed * SEED_STRIDE + i for i in range(num_scenes)]

    def scene(self, index: int) -> Scene:
        return render_scene(self.dataset_samples[index], self.size, self.framing)

    def get_sample(self, index: int, rng: np.random.Generator) -> TrainingSample:
        scene = self.scene(index)
        return TrainingSample(scene.image, scene.layers, objects=_training_objects(scene, self.kinds), sample_id=index)


class WinterSportsEvalDataset(ISDataset):
    """Held-out generated scenes: scene ``i`` is ``render_scene(EVAL_SEED_OFFSET + seed *
    SEED_STRIDE + i, size)``, a seed range no ``WinterSportsDataset`` uses.

    One instance per sample, as the RITM evaluation datasets: every (scene, object) pair whose
    object is of ``kinds`` with at least ``min_area`` visible pixels (default
    ``MIN_AREA_FRACTION`` of the image), in scene order then object order (an athlete, then its
    skis, poles or board, helmet and goggles). ``get_sample(i).gt_mask(0)`` is the target; the
    scenes are rendered once here to list the instances.
    """

    name = "WinterSports"
    config_key = ""   # generated: no dataset folder to configure

    def __init__(self, num_scenes: int = 100, size: Tuple[int, int] = (224, 224), seed: int = 0,
                 min_area: Optional[int] = None, kinds: Sequence[str] = TARGET_KINDS, framing: str = "wide") -> None:
        # No root folder: ISDataset.__init__ (which records one) does not apply.
        self.size, self.kinds, self.framing = tuple(size), tuple(kinds), framing
        self.min_area = int(MIN_AREA_FRACTION * size[0] * size[1]) if min_area is None else min_area
        self.scene_seeds = [EVAL_SEED_OFFSET + seed * SEED_STRIDE + i for i in range(num_scenes)]
        self._samples: List[Tuple[int, int]] = []
        self._cached: Optional[Tuple[int, Scene]] = None
        for scene_index in range(num_scenes):
            scene = self.scene(scene_index)
            self._samples += [(scene_index, obj) for obj in scene.targets(self.kinds, self.min_area)]

    def scene(self, scene_index: int) -> Scene:
        """The scene, kept while its instances are read one after another."""
        if self._cached is None or self._cached[0] != scene_index:
            self._cached = (scene_index, render_scene(self.scene_seeds[scene_index], self.size, self.framing))
        return self._cached[1]

    def instance(self, index: int) -> Tuple[int, int]:
        """(scene index, object index in ``Scene.objects``) of sample ``index``."""
        return self._samples[index]

    def _load(self, index: int) -> DSample:
        scene_index, obj_index = self._samples[index]
        scene = self.scene(scene_index)
        obj = scene.objects[obj_index]
        return DSample(scene.image, np.ascontiguousarray(scene.layers[:, :, obj.layer]), object_values=(obj.value,),
                       sample_id=index)


__all__ = ["ATHLETE_KINDS", "EQUIPMENT_KINDS", "EVAL_SEED_OFFSET", "FRAMINGS", "HELD_KINDS", "KINDS", "LIGHTS",
           "MIN_AREA_FRACTION", "SCENERY_KINDS", "SEED_STRIDE", "TARGET_KINDS", "WORN_KINDS", "Scene", "SceneObject",
           "WinterSportsDataset", "WinterSportsEvalDataset", "render_scene"]
