"""The background of a scene: sky with clouds, mountain ranges, the snow slope (texture,
corduroy and ski tracks) and a forest along its top edge."""
from __future__ import annotations

import math
from typing import Tuple

import cv2
import numpy as np

from .drawing import SHIFT, Canvas, fixed, polygons
from .lighting import Light
from .noise import fractal_noise, fractal_noise1d

ROCK = np.array([85, 90, 105], np.float32)   # the mountains' rock, RGB


def draw_background(rng: np.random.Generator, size: Tuple[int, int], light: Light, horizon: float
                    ) -> Tuple[np.ndarray, np.ndarray]:
    """float32 H x W x 3 background and the slope (bool H x W). Sky and mountains are computed
    only in the rows above the slope's top edge, the snow only in the rows below its highest point."""
    height, width = size
    rows = np.arange(height, dtype=np.float32)[:, None]
    tilt = rng.uniform(-0.25, 0.25) * height / width
    edge = (horizon + tilt * (np.arange(width) - width / 2)
            + fractal_noise1d(rng, width, 3) * 0.04 * height).astype(np.float32)[None, :]
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
                       light: Light) -> np.ndarray:
    """float32 (len(rows), W, 3): sky gradient with clouds, a far hazy range and a nearer one
    (rock with snow fields, shaded by the relief)."""
    height, width = size
    band = (len(rows), width)
    t = np.clip(rows / max(float(edge.min()), 1.0), 0, 1)[..., None] ** 0.8
    sky = light.sky_top * (1 - t) + light.sky_horizon * t
    clouds = np.clip(fractal_noise(rng, band, 3, 4) * 1.6 - (0.2 if light.name == "overcast" else 0.9), 0, 1)[..., None]
    image = sky * (1 - clouds * 0.7) + light.sky_horizon * (1.05 * 0.7) * clouds
    for layer, (lift, haze) in enumerate(((rng.uniform(0.12, 0.35), 0.55), (rng.uniform(0.04, 0.16), 0.25))):
        if rng.random() < 0.2:
            continue
        ridge = edge - lift * height * (0.45 + 0.55 * (fractal_noise1d(rng, width, 2 + 2 * layer, 4) * 0.9 + 0.6))
        first = int(np.clip(math.floor(ridge.min()), 0, len(rows)))   # only the rows the range reaches
        r = rows[first:]
        relief = fractal_noise(rng, (len(r), width), 6, 4)
        light_side = np.clip(np.gradient(relief, axis=1) * (width * 0.05), -1, 1)[..., None]
        above = (edge - r) / np.maximum(edge - ridge, 1.0)   # 0 at the foot, 1 at the ridge
        snowy = (relief * 1.2 + above * 0.8 > 0.2)[..., None]
        # Snow and rock shaded by the relief (x0.85-1 and x0.7-1.3), then hazed towards the sky.
        snow, rock = light.snow_lit * (1 - haze), ROCK * (1 - haze)
        mountain = np.where(snowy, snow + light.sky_horizon * haze + snow * 0.15 * (light_side - 1),
                            rock + light.sky_horizon * haze + rock * 0.3 * light_side)
        image[first:] = np.where(((r >= ridge) & (r < edge))[..., None], mountain, image[first:])
    return image


def _snow(rng: np.random.Generator, rows: np.ndarray, edge: np.ndarray, size: Tuple[int, int], light: Light,
          horizon: float) -> np.ndarray:
    """float32 (len(rows), W, 3): bump-shaded snow, corduroy lines converging to the horizon
    and ski tracks, for the given rows of the image."""
    height, width = size
    band = (len(rows), width)
    bumps = fractal_noise(rng, band, rng.uniform(3, 8), 3)
    gy, gx = np.gradient(bumps)
    sun = light.sun_direction()
    lit = 0.8 + (gx * sun[0] - gy * sun[2]) * (rng.uniform(3, 7) * min(size) / 224)
    depth = np.clip((rows - horizon) / max(height - horizon, 1.0), 0.02, 1.0)
    lit += 0.12 * depth + fractal_noise(rng, band, 60, 1) * 0.03
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
            pts = fixed(np.stack([x + side * gap, ys - first], 1))
            cv2.polylines(tracks, [pts], False, 255, max(1, int(0.006 * width)), cv2.LINE_AA, SHIFT)
    lit -= tracks.astype(np.float32) * (0.18 / 255)
    lit = np.clip(lit, 0, 1)[..., None]
    return light.snow_shade + (light.snow_lit - light.snow_shade) * lit


def draw_forest(canvas: Canvas, rng: np.random.Generator, size: Tuple[int, int], light: Light, horizon: float,
                slope: np.ndarray) -> None:
    """A band of small conifers along the slope's top edge (background, in no mask)."""
    height, width = size
    if horizon < 2 or rng.random() < 0.35:
        return
    top = slope.argmax(0)
    crowns, snow = [], []
    for x in rng.uniform(-5, width + 5, int(width * rng.uniform(0.1, 0.3))):
        y = top[int(np.clip(x, 0, width - 1))] + rng.uniform(0, 0.03) * height
        h = rng.uniform(0.03, 0.08) * height
        crowns.append([(x - 0.25 * h, y), (x, y - h), (x + 0.25 * h, y)])
        snow.append([(x - 0.12 * h, y - 0.45 * h), (x, y - h * 0.9), (x + 0.05 * h, y - 0.5 * h)])
    canvas.draw(0, light.colour(np.array([30, 55, 40.0])) * 0.8 + light.sky_horizon * 0.2, polygons(crowns))
    canvas.draw(0, light.colour(light.snow_lit * 0.8), polygons(snow))
