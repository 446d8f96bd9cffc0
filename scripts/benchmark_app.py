"""Click-to-mask latency of the annotation app as its page shows it, in headless Chromium.

Serves one generated winter-sports image (a 720 x 1280 broadcast-like close-up) with SkipClick
(random weights unless ``--checkpoint``; latency does not depend on the values), opens the page,
clicks on the athletes and the background, and reads after each click the latency the page
shows: from the mouse-down to the frame with the new mask drawn (the request, the model's
per-click path, the answer and the drawing), and the model's share of it. The page is driven
by ``app_browser.py`` beside this script.

    python scripts/benchmark_app.py --device cpu --dtype fp32 bf16 --clicks 10 --threads 2
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app_browser import AppPage, chromium, missing  # noqa: E402
from isegm.app import AnnotationApp, model_backend  # noqa: E402
from isegm.app.server import serve_in_thread  # noqa: E402
from isegm.data.scenes import ATHLETE_KINDS, render_scene  # noqa: E402
from isegm.model import build_skipclick, load_checkpoint  # noqa: E402
from isegm.cli.common import HelpFormatter  # noqa: E402
from isegm.utils.device import (DTYPES, add_device_arguments, default_device, device_name,  # noqa: E402
                                native_reduced_precision, select_device)


def click_points(mask: np.ndarray, n: int, rng: np.random.Generator) -> List[tuple]:
    """``n`` (x, y, positive) clicks: alternately inside the athletes and on the background."""
    inside, outside = np.argwhere(mask), np.argwhere(~mask)
    points = []
    for i in range(n):
        pool = inside if i % 2 == 0 else outside
        y, x = pool[rng.integers(len(pool))]
        points.append((int(x), int(y), i % 2 == 0))
    return points


def stats(values: List[float]) -> Dict[str, float]:
    ordered = sorted(values)
    return {"median": statistics.median(ordered), "p90": ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))],
            "min": ordered[0], "n": len(ordered)}


def run(model: torch.nn.Module, dtype: str, args: argparse.Namespace, device: torch.device, folder: Path,
        points: List[tuple]) -> Dict:
    """Page latencies of one dtype: ``args.warmup`` clicks untimed, then ``args.clicks``."""
    with tempfile.TemporaryDirectory() as out:
        app = AnnotationApp(folder, Path(out), model_backend(model, device, args.size, dtype), max_side=args.max_side)
        with serve_in_thread(app) as server, chromium(1280, 900) as driver:
            page = AppPage(driver, server.url, timeout=args.timeout)
            encode_ms = app.cache.get("scene.png").encode_ms
            page_ms, model_ms, server_ms = [], [], []
            for i, (x, y, positive) in enumerate(points[:args.warmup + args.clicks]):
                page.click_image(x, y, positive)
                latency = page.latency()
                if i >= args.warmup:
                    page_ms.append(latency["ms"])
                    model_ms.append(latency["model_ms"])
                    server_ms.append(latency["server_ms"])
    result = {"dtype": dtype, "encode_ms": encode_ms, "page_ms": stats(page_ms), "model_ms": stats(model_ms),
              "server_ms": stats(server_ms), "browser_ms": stats([p - s for p, s in zip(page_ms, server_ms)])}
    print(f"{dtype}: click -> mask on the page {result['page_ms']['median']:.0f} ms median "
          f"(p90 {result['page_ms']['p90']:.0f}); model {result['model_ms']['median']:.0f} ms, server in all "
          f"{result['server_ms']['median']:.0f} ms, browser and transfer {result['browser_ms']['median']:.0f} ms; "
          f"image features {encode_ms:.0f} ms", flush=True)
    return result


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--variant", default="skipclick", help="model variant with random weights")
    p.add_argument("--checkpoint", help="time this checkpoint instead (default: random weights of --variant)")
    add_device_arguments(p, compare=True)
    p.add_argument("--force", action="store_true", help="time bf16 on a CPU without hardware bf16 anyway")
    p.add_argument("--size", type=int, default=448, help="the app's model input side")
    p.add_argument("--max-side", type=int, default=1024, help="the app's working image side")
    p.add_argument("--clicks", type=int, default=10, help="timed clicks per dtype")
    p.add_argument("--warmup", type=int, default=2, help="untimed clicks first")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--timeout", type=float, default=600, help="seconds the page may take per step")
    p.add_argument("--json", help="write the figures to this JSON file (default: none)")
    args = p.parse_args(argv)
    args.device = args.device or default_device()
    return args


def main(argv=None) -> List[Dict]:
    args = parse_args(argv)
    reason = missing()
    if reason:
        raise SystemExit(f"cannot run the browser: {reason}")
    device = select_device(args.device, args.threads)
    model = (load_checkpoint(args.checkpoint, device=device) if args.checkpoint
             else build_skipclick(args.variant).eval().to(device))
    scene = render_scene(2024, (720, 1280), framing="close")
    athletes = np.zeros(scene.image.shape[:2], bool)
    for index in scene.targets(ATHLETE_KINDS):
        athletes |= scene.mask(index)
    points = click_points(athletes, args.warmup + args.clicks, np.random.default_rng(0))
    meta = {"model": args.checkpoint or f"{args.variant} (random weights)", "device": device_name(device),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "size": args.size,
            "image": [720, 1280], "max_side": args.max_side}
    print(f"{meta['model']} at {args.size} px on {meta['device']} ({args.device}, torch {meta['torch']}, "
          f"{meta['threads']} threads), a 720x1280 image", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as images:
        folder = Path(images)
        cv2.imwrite(str(folder / "scene.png"), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
        for dtype in args.dtype:
            if not (args.force or native_reduced_precision(device, DTYPES[dtype])):
                print(f"skipping {dtype}: no hardware {dtype} on this CPU (--force times it anyway)")
                continue
            results.append(run(model, dtype, args, device, folder, points))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=2)
    return results


if __name__ == "__main__":
    main()
