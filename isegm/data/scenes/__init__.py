"""Procedural winter-sports scenes with exact masks, behind the generated datasets of
``isegm.data.datasets.winter``.

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
annotates them. Masks are *visible* masks: whatever is drawn in front of an object (another
athlete, a gate, a tree, a fence mesh) is removed from it; ``Scene.amodal_mask`` gives the
unoccluded shape.

``TARGET_KINDS`` (athletes, their equipment and gates) are the interactive-segmentation targets
of the generated datasets; trees and fences are scenery: occluders and distractors, background in
every target mask.

Conventions: images H x W x 3 uint8 RGB, label layers int32 H x W x 2, pixel positions
``(y, x)`` in the public API (the drawing code uses OpenCV ``(x, y)`` points internally).

Modules: ``scene`` (kinds, ``Scene``), ``render`` (``render_scene``), ``figures`` (athletes,
gates, trees, fences), ``background`` (sky, mountains, slope), ``lighting``, ``drawing`` (shapes
drawn on the image and the masks alike) and ``noise`` (textures).
"""
from .lighting import LIGHTS
from .render import FRAMINGS, render_scene
from .scene import (ATHLETE_KINDS, EQUIPMENT_KINDS, HELD_KINDS, KINDS, SCENERY_KINDS, TARGET_KINDS, WORN_KINDS, Scene,
                    SceneObject)

__all__ = ["ATHLETE_KINDS", "EQUIPMENT_KINDS", "FRAMINGS", "HELD_KINDS", "KINDS", "LIGHTS", "SCENERY_KINDS",
           "TARGET_KINDS", "WORN_KINDS", "Scene", "SceneObject", "render_scene"]
