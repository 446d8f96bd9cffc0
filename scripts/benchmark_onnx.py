"""Per-click latency of onnxruntime against PyTorch on this CPU, in one run: a SkipClick model is
exported (``isegm.onnx.export``), then the decoder (every click) and the encoder (once per image)
run alternately in both runtimes on the same inputs, so that load from other processes hits both
alike; each speedup is the median of the per-pair ratios.

Random weights by default (the architecture of the release: timing only), or ``--checkpoint``::

    python scripts/benchmark_onnx.py --variant skipclick --size 448 --clicks 20 --threads 2 --json onnx_cpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from isegm.cli.common import HelpFormatter  # noqa: E402
from isegm.model import build_skipclick, load_checkpoint  # noqa: E402
from isegm.onnx.engine import OnnxModel  # noqa: E402
from isegm.onnx.export import export_model  # noqa: E402


def cpu_description() -> str:
    """The CPU's model name and whether it has AVX2 / AVX512-BF16 (from /proc/cpuinfo)."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    found = [flag for flag in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if flag in flags]
    return f"{name} ({os.cpu_count()} cores; {', '.join(found) or 'no avx2'})"


def stats_ms(seconds: List[float]) -> Dict[str, float]:
    ms = sorted(s * 1000 for s in seconds)
    return {"median_ms": statistics.median(ms), "p90_ms": ms[min(len(ms) - 1, int(round(0.9 * (len(ms) - 1))))],
            "n": len(ms)}


def paired(torch_fn: Callable[[], object], onnx_fn: Callable[[], object], repeats: int, warmup: int) -> Dict:
    """``repeats`` alternating timings of both (after ``warmup`` pairs), their statistics and the
    median per-pair speedup of onnxruntime over PyTorch."""
    pairs = []
    for _ in range(warmup + repeats):
        start = time.perf_counter()
        torch_fn()
        middle = time.perf_counter()
        onnx_fn()
        pairs.append((middle - start, time.perf_counter() - middle))
    pairs = pairs[warmup:]
    return {"pytorch": stats_ms([t for t, _ in pairs]), "onnxruntime": stats_ms([o for _, o in pairs]),
            "speedup": statistics.median(t / o for t, o in pairs)}


def click_points(n: int, size: int, rng: np.random.Generator) -> List[np.ndarray]:
    """Points ``[1, 2P, 3]`` after each of ``n`` clicks (alternating positive / negative)."""
    coords = rng.uniform(0, size - 1, (n, 2))
    sequence = []
    for k in range(1, n + 1):
        npos, nneg = (k + 1) // 2, k // 2
        points = -np.ones((1, 2 * npos, 3), dtype=np.float32)
        points[0, :npos, :2], points[0, :npos, 2] = coords[0:k:2], np.arange(0, k, 2)
        points[0, npos:npos + nneg, :2], points[0, npos:npos + nneg, 2] = coords[1:k:2], np.arange(1, k, 2)
        sequence.append(points)
    return sequence


def run(args: argparse.Namespace) -> Dict:
    torch.set_num_threads(args.threads)
    model = load_checkpoint(args.checkpoint) if args.checkpoint else build_skipclick(args.variant)
    model = model.eval()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.out or tmp
        start = time.perf_counter()
        export_model(model, folder, size=(args.size, args.size))
        export_s = time.perf_counter() - start
        # no spin-waiting between runs: spinning threads would take the cores from PyTorch's turn
        onnx_model = OnnxModel(folder, threads=args.threads, spin=False)
        rng = np.random.default_rng(0)
        image = rng.random((1, 3, args.size, args.size), dtype=np.float32)
        prev = np.zeros((1, 1, args.size, args.size), dtype=np.float32)
        load_before = os.getloadavg()
        with torch.inference_mode():
            timage = torch.from_numpy(image)
            encoder = paired(lambda: model.encode_image(timage), lambda: onnx_model.encode(image=image),
                             args.encode_repeats, 1)
            features, onnx_features = model.encode_image(timage), onnx_model.encode(image=image)
            decoder = {"pytorch": [], "onnxruntime": [], "ratio": []}
            max_diff = 0.0
            for k, points in enumerate(click_points(args.clicks + args.warmup, args.size, rng)):
                tpoints, tprev = torch.from_numpy(points), torch.from_numpy(prev)
                t0 = time.perf_counter()
                logits = model.decode(features, tpoints, tprev)
                t1 = time.perf_counter()
                onnx_logits = onnx_model.decode(**onnx_features, points=points, prev_mask=prev)["logits"]
                t2 = time.perf_counter()
                max_diff = max(max_diff, float(np.abs(logits.numpy() - onnx_logits).max()))
                prev = torch.sigmoid(logits).numpy()   # the evaluation feeds back probabilities
                if k >= args.warmup:
                    decoder["pytorch"].append(t1 - t0)
                    decoder["onnxruntime"].append(t2 - t1)
                    decoder["ratio"].append((t1 - t0) / (t2 - t1))
    return {
        "variant": args.variant if not args.checkpoint else str(args.checkpoint), "size": args.size,
        "threads": args.threads, "cpu": cpu_description(), "torch": torch.__version__,
        "onnxruntime": ort.__version__, "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "load_average_before": load_before, "load_average_after": os.getloadavg(), "export_s": export_s,
        "encoder": encoder,
        "decoder": {"pytorch": stats_ms(decoder["pytorch"]), "onnxruntime": stats_ms(decoder["onnxruntime"]),
                    "speedup": statistics.median(decoder["ratio"])},
        "max_abs_logit_diff": max_diff,
    }


def table(result: Dict) -> str:
    rows = [f"SkipClick {result['variant']} at {result['size']} px, fp32, {result['threads']} threads each; "
            f"{result['cpu']}; torch {result['torch']}, onnxruntime {result['onnxruntime']}; {result['date']}",
            f"load average before / after: {result['load_average_before'][0]:.2f} / "
            f"{result['load_average_after'][0]:.2f}",
            "| part | PyTorch median (p90) ms | onnxruntime median (p90) ms | onnxruntime speedup |",
            "|---|---|---|---|"]
    for part, label in (("encoder", "encoder, once per image"), ("decoder", "decoder, per click")):
        r = result[part]
        rows.append(f"| {label} | {r['pytorch']['median_ms']:.1f} ({r['pytorch']['p90_ms']:.1f}) | "
                    f"{r['onnxruntime']['median_ms']:.1f} ({r['onnxruntime']['p90_ms']:.1f}) | {r['speedup']:.2f}x |")
    rows.append(f"max |logits difference| over the clicks: {result['max_abs_logit_diff']:.1e}")
    return "\n".join(rows)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--variant", default="skipclick", help="SkipClick variant built with random weights")
    parser.add_argument("--checkpoint", default=None, help="time this model file (default: --variant with random weights)")
    parser.add_argument("--size", type=int, default=448, help="network input side (a multiple of the patch size)")
    parser.add_argument("--clicks", type=int, default=20, help="timed clicks")
    parser.add_argument("--warmup", type=int, default=3, help="untimed clicks first")
    parser.add_argument("--encode-repeats", type=int, default=3, help="timed encoder runs")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of each runtime")
    parser.add_argument("--out", default=None, help="keep the export in this folder (default: a temporary one)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file (default: print only)")
    return parser


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """The benchmark's arguments (CPU and float32 only: it compares two CPU runtimes)."""
    return build_parser().parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    result = run(args)
    print(table(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
