"""The light of a scene: day, overcast or dusk, with its sky and snow colours, its tint of
object colours, the sun's direction and the strength of shadows and fog."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

LIGHTS = ("day", "overcast", "dusk")


@dataclass
class Light:
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


def random_light(rng: np.random.Generator) -> Light:
    """One of ``LIGHTS`` (day 45 %, overcast 30 %, dusk 25 %) with its colours, sun and fog jittered."""
    name = LIGHTS[int(rng.choice(3, p=[0.45, 0.3, 0.25]))]

    def jitter(scale: float) -> np.ndarray:
        return rng.uniform(-scale, scale, 3).astype(np.float32)

    if name == "day":
        return Light(name, np.array([35, 95, 195], np.float32) + jitter(20),
                     np.array([175, 210, 242], np.float32) + jitter(10),
                     np.array([250, 251, 253], np.float32) - abs(jitter(4)),
                     np.array([140, 170, 215], np.float32) + jitter(12),
                     np.ones(3, np.float32), (rng.uniform(-math.pi, 0), rng.uniform(0.4, 1.0)),
                     rng.uniform(0.4, 0.6), rng.uniform(0, 0.15))
    if name == "overcast":
        grey = rng.uniform(150, 200)
        return Light(name, np.full(3, grey, np.float32) + jitter(6),
                     np.full(3, grey + 30, np.float32) + jitter(5),
                     np.array([232, 235, 238], np.float32) + jitter(5),
                     np.array([185, 192, 205], np.float32) + jitter(8),
                     np.array([0.86, 0.88, 0.92], np.float32), None,
                     rng.uniform(0.2, 0.35), rng.uniform(0.1, 0.6))
    return Light(name, np.array([45, 45, 100], np.float32) + jitter(15),
                 np.array([250, 155, 95], np.float32) + jitter(15),
                 np.array([252, 215, 190], np.float32) + jitter(8),
                 np.array([115, 115, 170], np.float32) + jitter(12),
                 np.array([0.95, 0.76, 0.68], np.float32), (rng.uniform(-math.pi, 0), rng.uniform(0.12, 0.35)),
                 rng.uniform(0.35, 0.55), rng.uniform(0, 0.2))
