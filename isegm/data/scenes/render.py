"""A whole scene from its seed: light, background, objects, shadows, camera effects and the
label layers of the visible objects."""
from __future__ import annotations

from typing import List, Tuple

import cv2
import numpy as np

from .background import draw_background, draw_forest
from .drawing import Canvas
from .figures import Builder
from .lighting import Light, random_light
from .noise import fractal_noise
from .scene import Scene, SceneObject

FRAMINGS = ("wide", "close")


def render_scene(seed: int, size: Tuple[int, int] = (224, 224), framing: str = "wide") -> Scene:
    """Draw scene ``seed`` at ``size`` = (H, W); the same seed, size and framing give the same
    bytes. ``framing``: ``wide`` (1-4 athletes on the slope) or ``close`` (1-2 athletes near the
    camera, 0.6-0.95 of the image tall, as broadcast close-ups frame them)."""
    if framing not in FRAMINGS:
        raise ValueError(f"framing {framing!r}: expected one of {', '.join(FRAMINGS)}")
    height, width = size
    rng = np.random.default_rng(seed)
    light = random_light(rng)
    horizon = height * (rng.uniform(0.12, 0.5) if rng.random() < 0.85 else rng.uniform(-0.3, -0.05))
    background, slope = draw_background(rng, size, light, horizon)
    builder = Builder(rng, size, light, horizon)

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

    canvas = Canvas(np.clip(background, 0, 255).astype(np.uint8))
    draw_forest(canvas, rng, size, light, horizon, slope)
    for plan in sorted(builder.plans, key=lambda p: p.ground_y):   # far to near; stable for ties
        for owner, colour, stroke in plan.shapes:
            canvas.draw(owner, colour, stroke)

    image = _finish(canvas.image, rng, light, horizon, slope)
    layers = _layers(canvas.owner, builder.objects)
    counts = [np.bincount(layers[:, :, layer].ravel(), minlength=len(builder.objects) + 1) for layer in (0, 1)]
    for obj in builder.objects:
        obj.area = int(counts[obj.layer][obj.value])
    return Scene(image, layers, builder.objects, seed, light.name, canvas.strokes)


def _finish(image: np.ndarray, rng: np.random.Generator, light: Light, horizon: float, slope: np.ndarray
            ) -> np.ndarray:
    """Global light and camera: cast shadows over the slope (athletes included), fog by depth,
    exposure, colour cast, contrast and vignette, blur and sensor noise. uint8 in, uint8 out."""
    height, width = image.shape[:2]
    out = image.astype(np.float32)
    if light.sun is not None and rng.random() < 0.3:   # shadows of trees or lifts out of frame
        # Noise stretched sideways: long bands across the slope, as low sun casts them.
        field_ = cv2.resize(fractal_noise(rng, (height, max(width // 4, 2)), 3, 3), (width, height))
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
