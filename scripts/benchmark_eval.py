"""Evaluation throughput: instances per second of the NoC loop as the papers run it (RITM click
simulator, SkipClick's official predictor chain: whole image at the dataset's size, flip TTA,
probability fed back), one instance at a time and in batches, and whether every batch size
gives the same clicks and IoUs.

Dataset folders come from config.yml (or ``SKIPCLICK_<KEY>`` variables); the weights from
``--checkpoint`` (the authors' fixture checkpoint works) or random (``--variant``), which cost
the same time per click. Untrained weights never reach the target IoU, so every instance takes
all ``--n-clicks`` clicks: the slowest case.

    SKIPCLICK_GRABCUT_PATH=../shared/datasets/GrabCut SKIPCLICK_DAVIS_PATH=../shared/datasets/DAVIS \\
    python scripts/benchmark_eval.py --checkpoint ../shared/reference/model/official_format_skip.pth \\
        --datasets GrabCut,DAVIS --batch-sizes 1 8 --device cuda --json benchmarks/eval_gpu.json
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

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from isegm.data import FirstSamples, get_dataset  # noqa: E402
from isegm.inference.evaluation import DatasetResult, run_dataset  # noqa: E402
from isegm.inference.metrics import compute_noc_metric, noc_thresholds  # noqa: E402
from isegm.inference.predictor import get_predictor  # noqa: E402
from isegm.model import build_skipclick, load_checkpoint  # noqa: E402
from isegm.utils.config import add_config_argument, config_source, load_config  # noqa: E402
from isegm.cli.common import HelpFormatter  # noqa: E402
from isegm.utils.device import (DTYPES, add_device_arguments, default_device, device_name,  # noqa: E402
                                native_reduced_precision, select_device)



def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--checkpoint", help="weights to evaluate (default: random weights of --variant)")
    p.add_argument("--variant", default="skipclick", help="model variant for random weights")
    p.add_argument("--datasets", default="GrabCut,DAVIS", help="comma-separated dataset names")
    add_config_argument(p)
    p.add_argument("--limit", type=int, default=None, help="only the first N samples of each dataset (default: all)")
    p.add_argument("--eval-mode", default="cvpr", help="cvpr (each dataset's size), fixed<N> or fixed<H>,<W>")
    p.add_argument("--n-clicks", type=int, default=20, help="click limit per instance")
    p.add_argument("--target-iou", type=float, default=0.95, help="early-stop IoU")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8], help="instances in flight; the first is "
                   "the reference the others' clicks and IoUs are compared with")
    add_device_arguments(p, compare=True)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", help="write every figure to this JSON file (default: none)")
    args = p.parse_args(argv)
    args.device = args.device or default_device()
    if min(args.batch_sizes) < 1:
        p.error("--batch-sizes must be at least 1")
    return args


def instance_key(result: DatasetResult) -> List[Any]:
    return [(r.sample_index, r.object_id, r.ious.tolist(), r.clicks) for r in result.instances]


def timed_run(dataset: Any, model: torch.nn.Module, name: str, batch_size: int, dtype: torch.dtype,
              device: torch.device, args: argparse.Namespace) -> Dict[str, Any]:
    """One full evaluation of ``dataset``; the clock covers loading, clicks, network and scores."""
    predictor = get_predictor(model, args.eval_mode, name, suppress_zoom=True, device=device)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    with autocast:
        result = run_dataset(dataset, predictor, batch_size=batch_size, max_iou_thr=args.target_iou,
                             max_clicks=args.n_clicks)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    clicks = sum(len(r.ious) for r in result.instances)
    noc, _, over_max = compute_noc_metric(result.all_ious, noc_thresholds(0.95), args.n_clicks)
    row = {"dataset": name, "batch_size": batch_size, "instances": len(result.instances), "clicks": clicks,
           "seconds": seconds, "instances_per_s": len(result.instances) / seconds, "clicks_per_s": clicks / seconds,
           "ms_per_click": 1000 * seconds / clicks, "noc_85_90": noc[1:3], "over_max_90": over_max[2],
           "eval_size": predictor.zoom_in.target_size}
    if device.type == "cuda":
        row["peak_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    return {"row": row, "result": result}


def warm_up(dataset: Any, model: torch.nn.Module, name: str, dtype: torch.dtype, device: torch.device,
            args: argparse.Namespace) -> None:
    """Two clicks on the first instance, untimed: kernel selection and allocator growth."""
    quick = argparse.Namespace(**{**vars(args), "n_clicks": 2})
    timed_run(FirstSamples(dataset, 1), model, name, 1, dtype, device, quick)


def print_table(rows: List[Dict[str, Any]], meta: Dict[str, Any]) -> None:
    print(f"\n{meta['weights']} on {meta['device_name']} ({meta['device']}, {meta['dtype']}, {meta['threads']} "
          f"threads, torch {meta['torch']}; up to {meta['n_clicks']} clicks, target IoU {meta['target_iou']})\n")
    cols = ["dataset", "size", "batch", "instances", "clicks", "seconds", "instances/s", "clicks/s", "ms/click",
            "same clicks & IoUs as batch " + str(meta["reference_batch"])]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        size = "x".join(map(str, r["eval_size"]))
        same = "reference" if r["batch_size"] == meta["reference_batch"] else \
            f"{'yes' if r['identical'] else 'NO'} ({r['instances'] - r['differing_instances']}/{r['instances']})"
        print(f"| {r['dataset']} | {size} | {r['batch_size']} | {r['instances']} | {r['clicks']} | "
              f"{r['seconds']:.1f} | {r['instances_per_s']:.3f} | {r['clicks_per_s']:.2f} | {r['ms_per_click']:.1f} | "
              f"{same} |")


def main(argv: Optional[List[str]] = None) -> List[Dict[str, Any]]:
    args = parse_args(argv)
    device = select_device(args.device, args.threads)
    config = load_config(args.config)
    if args.checkpoint:
        model = load_checkpoint(args.checkpoint, device=device).eval()
    else:
        torch.manual_seed(0)
        model = build_skipclick(args.variant).eval().to(device)
    datasets = {}
    for name in args.datasets.split(","):
        dataset = get_dataset(name, config, config_source(args.config))
        datasets[name] = FirstSamples(dataset, args.limit) if args.limit is not None else dataset
    runs: List[Dict[str, Any]] = []
    for dtype_name in args.dtype:
        dtype = DTYPES[dtype_name]
        if not native_reduced_precision(device, dtype):
            print(f"\nskipping {dtype_name}: this CPU has no hardware {dtype_name} matrix units (see the README, Speed)")
            continue
        meta = {"weights": args.checkpoint or f"{args.variant} (random weights)", "device": args.device,
                "device_name": device_name(device), "dtype": dtype_name, "threads": torch.get_num_threads(),
                "torch": torch.__version__, "n_clicks": args.n_clicks, "target_iou": args.target_iou,
                "reference_batch": args.batch_sizes[0]}
        rows: List[Dict[str, Any]] = []
        runs.append({"meta": meta, "results": rows})
        for name, dataset in datasets.items():
            warm_up(dataset, model, name, dtype, device, args)
            reference = None
            for batch_size in args.batch_sizes:
                run = timed_run(dataset, model, name, batch_size, dtype, device, args)
                key = instance_key(run["result"])
                reference = key if reference is None else reference
                run["row"]["differing_instances"] = sum(a != b for a, b in zip(key, reference))
                run["row"]["identical"] = key == reference
                rows.append(run["row"])
                print(f"{name} batch {batch_size}: {run['row']['instances_per_s']:.3f} instances/s", flush=True)
                if args.json:   # after every run: a run cut short keeps what it measured
                    save(runs, args.json)
        print_table(rows, meta)
    if args.json:
        print(f"wrote {args.json}")
    return runs


def save(runs: List[Dict[str, Any]], path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(runs, f, indent=2)
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()
