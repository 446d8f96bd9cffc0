"""Training throughput: samples per second of full training steps (encode, 0-3 simulated clicks
without gradients, the trained prediction, loss, backward, Adam step) for a SkipClick variant
at the paper's 448 px crops, with the backbone computed once per batch and reused across the
click iterations (ours), and recomputed for every iteration (the authors' trainer).

The number of simulated clicks cycles through 0, 1, 2, 3, the trainer's uniform draw, so the
mean is the expected cost of a step. Random weights and inputs (speed does not depend on them).

    python scripts/benchmark_train.py --variant skipclick --size 448 --batch-size 2 --device cpu
    python scripts/benchmark_train.py --variant skipclick --size 448 --batch-size 32 --device cuda --dtype bf16
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from isegm.engine.optimizer import get_optimizer  # noqa: E402
from isegm.engine.trainer import ClickTraining  # noqa: E402
from isegm.model import build_skipclick  # noqa: E402
from isegm.engine.losses import NormalizedFocalLossSigmoid  # noqa: E402
from isegm.cli.common import HelpFormatter  # noqa: E402
from isegm.utils.device import add_device_arguments, default_device, device_name, select_device  # noqa: E402

MAX_CLICKS = 3


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--variant", default="skipclick", help="model variant (random weights)")
    p.add_argument("--size", type=int, default=448, help="square crop side")
    p.add_argument("--batch-size", type=int, default=2, help="samples per step")
    p.add_argument("--steps", type=int, default=8, help="timed steps per setting (a multiple of 4 cycles 0-3 clicks)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", help="write the figures to this JSON file (default: none)")
    add_device_arguments(p)
    p.add_argument("--bf16", dest="dtype", action="store_const", const="bf16", help="alias of --dtype bf16")
    args = p.parse_args(argv)
    if args.dtype == "fp16":
        p.error("--dtype fp16: training steps run in fp32 or bf16 (fp16 would need loss scaling)")
    args.device = args.device or default_device()
    args.bf16 = args.dtype == "bf16"
    return args


def batch(size: int, batch_size: int, device: torch.device) -> Dict[str, torch.Tensor]:
    """Images, a centred box as target and one positive click at its centre."""
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(batch_size, 3, size, size, generator=gen)
    gt = torch.zeros(batch_size, 1, size, size)
    gt[:, :, size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1
    points = torch.full((batch_size, 48, 3), -1.0)
    points[:, 0] = torch.tensor([size / 2, size / 2, 0.0])
    return {k: v.to(device) for k, v in {"images": images, "instances": gt, "points": points}.items()}


def time_steps(model: torch.nn.Module, data: Dict[str, torch.Tensor], reuse: bool, args: argparse.Namespace,
               device: torch.device) -> Dict[str, Any]:
    step = ClickTraining(model, MAX_CLICKS, reuse_features=reuse)
    optimizer = get_optimizer(model, "adam", {"lr": 5e-5})
    loss_fn = NormalizedFocalLossSigmoid(alpha=0.5, gamma=2)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if args.bf16 else contextlib.nullcontext()
    seconds = []
    for i in range(args.warmup + args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with autocast:
            logits, _ = step(data["images"], data["points"], data["instances"], i % (MAX_CLICKS + 1),
                             np.random.default_rng(i))
        loss_fn(logits.float(), data["instances"]).mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= args.warmup:
            seconds.append(time.perf_counter() - start)
    mean = float(np.mean(seconds))
    return {"reuse_features": reuse, "steps": len(seconds), "seconds_per_step": mean,
            "samples_per_second": args.batch_size / mean,
            "seconds_by_clicks": {str(c): float(np.mean(seconds[(c - args.warmup) % (MAX_CLICKS + 1)::MAX_CLICKS + 1]))
                                  for c in range(MAX_CLICKS + 1)}}


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    device = select_device(args.device, args.threads)
    torch.manual_seed(0)
    model = build_skipclick(args.variant).to(device).train()
    data = batch(args.size, args.batch_size, device)
    runs = [time_steps(model, data, reuse, args, device) for reuse in (True, False)]
    result = {"variant": args.variant, "size": args.size, "batch_size": args.batch_size, "device": args.device,
              "device_name": device_name(device), "bf16": args.bf16, "threads": torch.get_num_threads(),
              "torch": torch.__version__, "runs": runs,
              "reuse_speedup": runs[1]["seconds_per_step"] / runs[0]["seconds_per_step"]}
    print(f"\n{args.variant} training at {args.size} px, batch {args.batch_size}, on {result['device_name']} "
          f"({args.device}, {'bf16' if args.bf16 else 'fp32'}, {result['threads']} threads, torch {torch.__version__})\n")
    print("| backbone | samples/s | s/step (mean) | s/step with 0 / 1 / 2 / 3 simulated clicks |")
    print("|---|---|---|---|")
    for run in runs:
        by = " / ".join(f"{run['seconds_by_clicks'][str(c)]:.2f}" for c in range(MAX_CLICKS + 1))
        name = "features reused (ours)" if run["reuse_features"] else "per click iteration (authors')"
        print(f"| {name} | {run['samples_per_second']:.3f} | {run['seconds_per_step']:.2f} | {by} |")
    print(f"\nreuse speedup: {result['reuse_speedup']:.2f}x")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
