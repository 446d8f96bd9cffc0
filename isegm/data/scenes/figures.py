"""The objects of a scene: athletes (skiers and snowboarders with their equipment), slalom
gates, trees and safety fences, planned in creation order and drawn far to near."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .drawing import Colour, Stroke, circle, hull, line, polygon, polyline
from .lighting import Light
from .scene import HELD_KINDS, WORN_KINDS, SceneObject

# Albedo palettes (RGB) of clothing, gear and gates; ``_pick`` takes one entry, jittered.
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
GATES = ((215, 30, 35), (30, 70, 200))


def _pick(rng: np.random.Generator, palette: Sequence[Tuple[int, int, int]], jitter: float = 18) -> np.ndarray:
    return np.clip(np.asarray(palette[int(rng.integers(len(palette)))], np.float32)
                   + rng.uniform(-jitter, jitter, 3), 0, 255)


# Athletes: a 3-D stick figure in the body frame (x forward, y up, z to the athlete's left, in
# units of the athlete's height), rolled into the turn, turned by a yaw, seen by an orthographic
# camera looking down by a pitch; parts drawn far to near.

class View:
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
        """Body-frame points -> ground-frame points (N, 3): rolled, then turned by the yaw."""
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
class Plan:
    """An object ready to draw: its ground line (drawing order), its shapes as (owner, colour,
    stroke) and its shadow strokes."""

    ground_y: float
    shapes: List[Tuple[int, Colour, Stroke]]
    shadows: List[Stroke]


class Builder:
    """Objects of one scene, planned in creation order (the random draws) and drawn far to near."""

    def __init__(self, rng: np.random.Generator, size: Tuple[int, int], light: Light, horizon: float) -> None:
        self.rng, self.size, self.light, self.horizon = rng, size, light, horizon
        self.objects: List[SceneObject] = []
        self.plans: List[Plan] = []

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
        view = View(foot, height, yaw=rng.uniform(-math.pi, math.pi), pitch=rng.uniform(0.08, 0.5),
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
            parts.append((d, owner, light.colour(albedo), line(pa, pb, w)))
            if shade and w >= 3:   # a lit stripe on the sun side: limbs read as round
                offset = toward_sun * 0.22 * w
                lit = light.colour(np.minimum(albedo * 1.18 + 22, 255))
                parts.append((d + 1e-4, owner, lit, line(pa + offset, pb + offset, w * 0.4)))
            shadows.append(line(shadow_xy[2 * k], shadow_xy[2 * k + 1], w))
        torso = view.ground(body["torso"])
        torso_xy, torso_depth = view.project(torso)
        parts.append((float(torso_depth.mean()), owner, light.colour(jacket), hull(torso_xy)))
        shadows.append(hull(view.shadow(torso, sun)))
        self._head(view, body, owner, parts, shadows, sun)
        parts += body["gear"](view, shadows, sun)
        parts.sort(key=lambda part: part[0])
        self.plans.append(Plan(foot[1], [(who, colour, stroke) for _, who, colour, stroke in parts], shadows))

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

        def gear(view: View, shadows: list, sun: np.ndarray) -> list:
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
                                line(xy[j], xy[j + 1], thickness)))
                shadows.append(polyline(view.shadow(ground, sun), thickness))
            for i, h in enumerate(hand):
                tip = pole_tips[i]
                top = h + (h - tip) / np.linalg.norm(h - tip) * 0.05
                basket = tip + (top - tip) / np.linalg.norm(top - tip) * 0.07
                ground = view.ground(np.stack([top, (top + tip) / 2, tip, basket]))
                xy, depth = view.project(ground)
                width = max(0.016 * view.height, 1.0)
                out.append((float(depth[:2].mean()), poles[i], pole_colour, line(xy[0], xy[1], width)))
                out.append((float(depth[1:3].mean()), poles[i], pole_colour, line(xy[1], xy[2], width)))
                out.append((float(depth[3]), poles[i], light.colour(np.array([30, 30, 30.0])),
                            circle(xy[3], max(0.025 * view.height, 1.0))))
                shadows.append(line(*view.shadow(ground[[0, 2]], sun), width))
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

        def gear(view: View, shadows: list, sun: np.ndarray) -> list:
            # A rounded rectangle (superellipse) under the feet, drawn before the body.
            t = np.linspace(0, 2 * math.pi, 28, endpoint=False)
            c, s = np.cos(t), np.sin(t)
            outline = np.stack([length * np.sign(c) * np.abs(c) ** 0.3, np.full_like(t, 0.02),
                                width * np.sign(s) * np.abs(s) ** 0.3], 1)
            ground = view.ground(outline)
            xy, _ = view.project(ground)
            stripe = outline * [0.55, 1, 0.35]
            out = [(-10.0, board, board_colour, polygon(xy)),
                   (-9.9, board, stripe_colour, polygon(view.project(view.ground(stripe))[0]))]
            edge = max(0.012 * view.height, 1.0)
            out.append((-9.8, board, light.colour(np.array([30, 30, 35.0])), polyline(xy, edge, True)))
            shadows.append(polygon(view.shadow(ground, sun)))
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

    def _head(self, view: View, body: Dict[str, Any], owner: int, parts: list, shadows: list,
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
        parts.append((d - 0.01, owner, light.colour(skin * 0.9), line(view.project(neck)[0][0], xy[0], r_px)))
        parts.append((d, owner, light.colour(skin), circle(xy[0], r_px)))
        shadows.append(circle(view.shadow(centre, sun)[0], r_px))
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
        parts.append((d + 0.001, helmet, light.colour(_pick(rng, HELMETS)), hull(view.project(cap)[0])))
        # Goggles: a band on the front of the sphere, drawn when the face turns towards the camera.
        band = sphere(1.16, (0.38, -0.08), np.linspace(-1.1, 1.1, 9))
        frame = light.colour(_pick(rng, ((20, 20, 22), (240, 240, 240), (200, 40, 40)), 8))
        lens = light.colour(_pick(rng, LENSES, 15))
        if ((band[0, 4] - centre) @ view.to_camera.T)[2] > -0.02:
            outline = np.concatenate([view.project(band[0])[0], view.project(band[1, ::-1])[0]])
            parts.append((d + 0.002, goggles, frame, polygon(outline)))
            parts.append((d + 0.003, goggles, frame, polyline(outline, max(0.012 * view.height, 1.0), True)))
            inner = outline.mean(0) + (outline - outline.mean(0)) * 0.72
            parts.append((d + 0.004, goggles, lens, polygon(inner)))
            shine = inner[:9] * 0.6 + inner.mean(0) * 0.4
            parts.append((d + 0.005, goggles, np.minimum(lens * 1.3 + 50, 255),
                          polyline(shine[1:4], max(0.008 * view.height, 1.0))))

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
            shapes.append((owner, colour, line(a, b, width)))
            shapes.append((owner, light.colour(np.array([245, 245, 245.0])),
                           line(a, (a[0] * 0.85 + b[0] * 0.15, a[1] * 0.85 + b[1] * 0.15), width)))
            shadows.append(line(a, (a[0] + shadow_dir[0], a[1] + shadow_dir[1]), width))
        shapes.append((owner, colour, polygon(panel)))
        if rng.random() < 0.6:   # a white logo stripe across the panel
            p = np.asarray(panel)
            stripe = np.array([p[0] * 0.55 + p[-1] * 0.45, p[1] * 0.55 + p[-2] * 0.45]) if len(p) == 4 else \
                np.array([p[0] * 0.5 + p[2] * 0.5, p[1] * 0.7 + p[0] * 0.15 + p[2] * 0.15])
            shapes.append((owner, light.colour(np.array([240, 240, 240.0])),
                           line(stripe[0], stripe[1], max(0.05 * height, 1.0))))
        self.plans.append(Plan(y, shapes, shadows))

    def tree(self, base: Tuple[float, float], height: float) -> None:
        """A snowy conifer: trunk and stacked tiers with snow on their upper edges."""
        rng, light = self.rng, self.light
        owner = self.new("tree")
        x, y = base
        green = light.colour(np.array([28, 62, 42], np.float32) + rng.uniform(-10, 10, 3))
        snow = light.colour(light.snow_lit * rng.uniform(0.85, 0.95))
        shapes: List[Tuple[int, Colour, Stroke]] = [
            (owner, light.colour(np.array([70, 50, 35.0])), line((x, y), (x, y - 0.3 * height), 0.05 * height))]
        tiers = int(rng.integers(4, 7))
        for i in range(tiers):
            bottom = y - 0.12 * height - i * 0.8 * height / tiers
            half = 0.28 * height * (1 - 0.7 * i / tiers) * rng.uniform(0.9, 1.1)
            tip = (x + rng.uniform(-0.02, 0.02) * height, bottom - 0.36 * height)
            tier = [(x - half, bottom), tip, (x + half, bottom), (x, bottom - 0.05 * height)]
            shapes.append((owner, green, polygon(tier)))
            # Snow lying on the tier: a thin sliver along each upper edge, thicker at the bottom.
            for side in (-1, 1):
                corner = np.array([x + side * half, bottom])
                toward_tip = np.asarray(tip) - corner
                inward = np.array([-side * 0.06 * half, -0.01 * height])
                sliver = [corner, corner + toward_tip * 0.55, corner + toward_tip * 0.5 + inward * 0.4,
                          corner + inward + np.array([0.0, 0.02 * height])]
                shapes.append((owner, snow, polygon(sliver)))
        shadows = [polygon([(x - 0.3 * height, y), (x + 0.3 * height, y), (x, y + 0.1 * height)])]
        self.plans.append(Plan(y, shapes, shadows))

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
            shapes.append((owner, colour, line((x0, ground(x0) - fraction * height),
                                               (x1, ground(x1) - fraction * height), thin * (1 + (fraction == 1)))))
        run = 0.6 * height   # horizontal run of a mesh diagonal from the bottom rail to the top one
        for x in np.arange(x0, x1, 0.35 * height):
            for direction in (-1, 1):
                end = float(np.clip(x + direction * run, x0, x1))
                shapes.append((owner, colour, line((x, ground(x)), (end, ground(end) - height * abs(end - x) / run),
                                                   thin)))
        post = light.colour(np.array([60, 60, 60.0]))
        for x in np.arange(x0, x1 + 1, 1.4 * height):
            shapes.append((owner, post, line((x, ground(x) + 0.05 * height), (x, ground(x) - 1.05 * height),
                                             thin * 1.6)))
        self.plans.append(Plan(y, shapes, []))
