"""A grid of generated winter-sports scenes with their object outlines (for the README).

Athletes are outlined in yellow, their equipment in cyan, gates in magenta; scenery (trees,
fences) is not outlined. The PNG is reduced to a palette of ``--colors`` colours (no dithering):
the scenes' sensor noise makes full-colour PNGs about five times larger. Usage::

    python scripts/preview_scenes.py --count 8 --columns 4 --size 224 --out docs/winter_scenes.png
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

import cv2
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from isegm.data.datasets.winter import EVAL_SEED_OFFSET  # noqa: E402
from isegm.data.scenes import ATHLETE_KINDS, EQUIPMENT_KINDS, Scene, render_scene  # noqa: E402

OUTLINES = {**{kind: (255, 230, 0) for kind in ATHLETE_KINDS}, **{kind: (0, 230, 255) for kind in EQUIPMENT_KINDS},
            "flag": (255, 0, 200)}


def outlined(scene: Scene) -> np.ndarray:
    """The scene's image (RGB) with a 1-pixel outline around every visible target."""
    image = scene.image.copy()
    for index in scene.targets():
        kind = scene.objects[index].kind
        contours, _ = cv2.findContours(scene.mask(index).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(image, contours, -1, OUTLINES[kind], 1)
    return image


def grid(images: List[np.ndarray], columns: int, gap: int = 4) -> np.ndarray:
    """Images (same size) in rows of ``columns`` with a white gap."""
    height, width = images[0].shape[:2]
    rows = -(-len(images) // columns)
    out = np.full((rows * (height + gap) - gap, columns * (width + gap) - gap, 3), 255, np.uint8)
    for i, image in enumerate(images):
        y, x = (i // columns) * (height + gap), (i % columns) * (width + gap)
        out[y:y + height, x:x + width] = image
    return out


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=8, help="number of scenes")
    parser.add_argument("--columns", type=int, default=4)
    parser.add_argument("--size", type=int, default=224, help="scene height and width")
    parser.add_argument("--first-seed", type=int, default=EVAL_SEED_OFFSET,
                        help="seed of the first scene (default: the first evaluation scene)")
    parser.add_argument("--raw", action="store_true", help="no outlines: the images as the datasets serve them")
    parser.add_argument("--colors", type=int, default=256, help="palette size of the PNG (0: full colour)")
    parser.add_argument("--out", type=Path, default=Path("docs/winter_scenes.png"))
    args = parser.parse_args(argv)
    scenes = [render_scene(args.first_seed + i, (args.size, args.size)) for i in range(args.count)]
    images = [scene.image if args.raw else outlined(scene) for scene in scenes]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.fromarray(grid(images, args.columns))
    if args.colors:
        picture = picture.quantize(colors=args.colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    picture.save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.count} scenes of {args.size} x {args.size}, "
          f"{args.out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
