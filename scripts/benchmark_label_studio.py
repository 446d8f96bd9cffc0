"""Keypoint-to-mask latency through a real Label Studio: the time of Label Studio's
``interactive-annotating`` call (what the labeling page waits for after a smart keypoint: Label
Studio, the backend's ``/predict``, the image fetch, the model, the brush RLE) for the first
keypoint of a task (the image is fetched and encoded) and the later ones (the per-click path).

Starts Label Studio (``SKIPCLICK_LABEL_STUDIO``: the ``label-studio`` command, see
``label_studio_server.py`` beside this script), uploads a generated 720 x 1280 winter-sports frame
as ``--tasks`` tasks (each a new image to the backend's cache) and places ``--keypoints``
keypoints per task, alternately on the athlete and on the background. Each model is a
checkpoint file or a variant name (SkipClick's or EMC-Click's) built with random weights:
latency does not depend on the values.

    SKIPCLICK_LABEL_STUDIO=/path/to/label-studio python scripts/benchmark_label_studio.py \\
        --models skipclick segb0 --tasks 3 --keypoints 5 --threads 2
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import label_studio_server as studio  # noqa: E402
from isegm.cli.common import HelpFormatter  # noqa: E402
from isegm.data.scenes import ATHLETE_KINDS, render_scene  # noqa: E402
from isegm.label_studio.images import ImageSource  # noqa: E402
from isegm.label_studio.segmenter import Outcome, Segmenter, load_segmenter  # noqa: E402
from isegm.label_studio.server import LabelStudioBackend, serve_in_thread  # noqa: E402
from isegm.model import EMC_CONFIGS, build_emc, build_skipclick, save_checkpoint  # noqa: E402
from isegm.utils.device import DTYPES  # noqa: E402
from isegm.utils.masks import padded_distance  # noqa: E402

CONFIG = """<View>
  <Image name="image" value="$image"/>
  <BrushLabels name="mask" toName="image"><Label value="athlete"/></BrushLabels>
  <KeyPointLabels name="click" toName="image" smart="true"><Label value="athlete" smart="true"/></KeyPointLabels>
</View>"""


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--models", nargs="+", default=["skipclick", "segb0"],
                   help="checkpoint files, or variant names built with random weights (skipclick, segb0, hr18s, ...)")
    p.add_argument("--size", type=int, help="model input (default: each family's)")
    p.add_argument("--dtype", default="fp32", choices=sorted(DTYPES), help="precision (bf16 / fp16: autocast)")
    p.add_argument("--tasks", type=int, default=3, help="tasks (first keypoints with encoding) per model")
    p.add_argument("--keypoints", type=int, default=5, help="keypoints per task")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--json", help="write the figures here too")
    return p.parse_args()


class TimedSegmenter:
    """A segmenter that keeps the ``Outcome`` of each mask (the backend's own share of the time)."""

    def __init__(self, segmenter: Segmenter) -> None:
        self.inner = segmenter
        self.outcomes: List[Outcome] = []

    def segment(self, *args: Any) -> Outcome:
        outcome = self.inner.segment(*args)
        self.outcomes.append(outcome)
        return outcome

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def checkpoint_for(name: str, folder: Path) -> str:
    """``name`` itself when it is a file, else the variant saved with random weights."""
    if os.path.isfile(name):
        return name
    torch.manual_seed(0)
    model = build_emc(name) if name in EMC_CONFIGS else build_skipclick(name)
    path = folder / f"{name}.pth"
    save_checkpoint(model.eval(), path)
    return str(path)


def keypoints(mask: np.ndarray, n: int) -> List[Dict[str, Any]]:
    """``n`` smart keypoints as the labeling page sends them: the athlete's deepest pixel, then
    alternately the background and the athlete, at pixels spread over them."""
    height, width = mask.shape
    rng = np.random.default_rng(0)
    regions = []
    for i in range(n):
        region = mask if i % 2 == 0 else ~mask
        if i == 0:
            y, x = np.unravel_index(padded_distance(mask).argmax(), mask.shape)
        else:
            ys, xs = np.nonzero(region & (padded_distance(region) > 6))
            k = rng.integers(len(ys))
            y, x = ys[k], xs[k]
        regions.append({"type": "keypointlabels", "from_name": "click", "to_name": "image", "is_positive": i % 2 == 0,
                        "original_width": width, "original_height": height,
                        "value": {"x": (x + 0.5) / width * 100, "y": (y + 0.5) / height * 100,
                                  "keypointlabels": ["athlete"]}})
    return regions


def main() -> None:
    args = parse_args()
    if studio.missing():
        sys.exit(f"error: {studio.missing()}")
    torch.set_num_threads(args.threads)
    scene = render_scene(7, (720, 1280), framing="close")
    athlete = max((o for o in scene.objects if o.kind in ATHLETE_KINDS), key=lambda o: o.area)
    regions = keypoints(scene.layers[..., athlete.layer] == athlete.value, args.keypoints)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, studio.label_studio() as server:
        folder = Path(tmp)
        images = []
        for t in range(args.tasks):   # distinct files: each task is a new image to the backend
            path = folder / f"frame_{t}.png"
            cv2.imwrite(str(path), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
            images.append(path)
        for name in args.models:
            segmenter = TimedSegmenter(load_segmenter(checkpoint_for(name, folder), "cpu", args.dtype, args.size))
            backend = LabelStudioBackend(segmenter, ImageSource(server.url, server.token))
            with serve_in_thread(backend) as ml:
                project = server.create_project(f"benchmark {len(rows)}", CONFIG)
                for path in images:
                    tasks = server.upload(project, path)
                ml_id = server.connect_backend(project, ml.url)
                first, later = [], []
                for task in tasks:
                    for n in range(1, len(regions) + 1):
                        start = time.perf_counter()
                        answer = server.interactive(ml_id, task, regions[:n])
                        ms = (time.perf_counter() - start) * 1000
                        if "errors" in answer:
                            sys.exit(f"error: Label Studio answered {answer['errors']}")
                        (first if n == 1 else later).append(ms)
            model_first = [o.encode_ms + o.clicks_ms for o in segmenter.outcomes if o.encoded]
            model_later = [o.clicks_ms for o in segmenter.outcomes if not o.encoded]
            row = {"model": name, "description": segmenter.description, "tasks": len(tasks),
                   "keypoints_per_task": len(regions), "threads": args.threads, "dtype": args.dtype,
                   "first_keypoint_ms": statistics.median(first), "later_keypoint_ms": statistics.median(later),
                   "later_keypoint_p90_ms": float(np.percentile(later, 90)),
                   "model_first_ms": statistics.median(model_first), "model_later_ms": statistics.median(model_later)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| model | first keypoint ms (model) | later keypoints ms, median / p90 (model) |\n|---|---|---|")
    for row in rows:
        print(f"| {row['description']} | {row['first_keypoint_ms']:.0f} ({row['model_first_ms']:.0f}) | "
              f"{row['later_keypoint_ms']:.0f} / {row['later_keypoint_p90_ms']:.0f} ({row['model_later_ms']:.0f}) |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
