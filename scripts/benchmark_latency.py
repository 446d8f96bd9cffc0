"""Latency and FLOPs of a click, for any model family: ``encode_image`` (SkipClick: once per
image; EMC-Click: its base network, on an object's first click) and ``decode`` on every click.

For SkipClick it also times the full forward and, for comparison on the same machine and run,
the per-click work as the authors' ``apply_click`` does it (``authors_decode``: fusion linear
recomputed each click, fusion-stack attention as an explicit softmax, the plain FPN and head:
convolutions over the concatenated maps in NCHW, head fused at full resolution). Works with random weights
(architecture-only timing) or a checkpoint. With several ``--variant`` names (SkipClick
variants and EMC-Click models, ``isegm.model.EMC_CONFIGS``) a last table puts first-click and
per-click latency and FLOPs side by side.

    python scripts/benchmark_latency.py --variant skipclick --size 448 672 896 --device cpu \
        --dtype fp32 bf16 --clicks 30 --json benchmarks/cpu.json
    python scripts/benchmark_latency.py --variant skipclick segb0 hr18s --size 448 --emc-size 384x512 \
        --clicks 10 --threads 2 --no-authors
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple, Union

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from isegm.model import all_families, family_of, load_checkpoint  # noqa: E402
from isegm.model.click_maps import encode_clicks  # noqa: E402
from isegm.cli.common import HelpFormatter  # noqa: E402
from isegm.utils.device import (DTYPES, add_device_arguments, default_device, device_name,  # noqa: E402
                                native_reduced_precision, select_device)



def authors_fusion_stack(stack: torch.nn.Module, tokens: torch.Tensor, clicks: torch.Tensor,
                         pos_embed: torch.Tensor) -> torch.Tensor:
    """The fusion stack as the authors' EncoderStack computes it: attention as an explicit
    ``softmax(q k^T / sqrt(d)) v`` (about twice the time of SDPA on a CPU at 1024 tokens)."""
    x = tokens + clicks + pos_embed
    for block in stack.blocks:
        B, N, C = x.shape
        heads = block.attn.num_heads
        q, k, v = block.attn.qkv(block.norm1(x)).reshape(B, N, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1) * (C // heads) ** -0.5).softmax(dim=-1)
        x = x + block.attn.proj((attn @ v).transpose(1, 2).reshape(B, N, C))
        x = x + block.mlp(block.norm2(x))
    return x


def authors_decode(model: torch.nn.Module, features: Any, points: torch.Tensor,
                   prev_mask: torch.Tensor) -> torch.Tensor:
    """The authors' per-click computation (reference for speed and outputs): the fusion linear
    recomputed, the fusion stack's attention as an explicit softmax, and the plain FPN and head
    (``model.neck`` / ``model.head``: convolutions over the concatenated maps in NCHW, the head
    fused at full resolution)."""
    taps = features.taps
    tokens = model.fuse(torch.cat(taps, dim=-1)) if model.fuse is not None else taps[0]
    clicks = model.patch_embed_coords(encode_clicks(points, prev_mask, model.config.disk_radius))
    x = authors_fusion_stack(model.backbone_mix, tokens, clicks, model.backbone_mix.pos_embed_for(features.grid))
    levels = model.neck(x, features.grid, taps if model.config.skip_connections else None)
    return F.interpolate(model.head(levels), size=features.image_size, mode="bilinear", align_corners=True)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds taken by ``fn`` (GPU work included)."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def stats_ms(seconds: List[float]) -> Dict[str, float]:
    ms = sorted(s * 1000 for s in seconds)
    return {"median_ms": statistics.median(ms), "p90_ms": ms[min(len(ms) - 1, int(round(0.9 * (len(ms) - 1))))],
            "n": len(ms)}


def gflops(fn: Callable[[], object]) -> float:
    """GFLOPs of ``fn`` as ``FlopCounterMode`` counts them (2 x MAC of convolutions, matrix
    products and attention; elementwise ops, norms, interpolation and top-k are not counted)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


def click_sequence(n: int, size: Union[int, Tuple[int, int]], batch: int,
                   generator: torch.Generator) -> List[torch.Tensor]:
    """Points tensors after each of ``n`` clicks (alternating positive / negative), RITM layout,
    inside a ``size`` (square side or (H, W)) image."""
    if isinstance(size, int):
        coords = torch.randint(0, size, (batch, n, 2), generator=generator).float()
    else:
        coords = torch.stack([torch.randint(0, side, (batch, n), generator=generator) for side in size], -1).float()
    sequences = []
    for k in range(1, n + 1):
        npos, nneg = (k + 1) // 2, k // 2
        pts = -torch.ones(batch, 2 * npos, 3)
        pts[:, :npos, :2] = coords[:, 0:k:2]
        pts[:, :npos, 2] = torch.arange(0, k, 2).float()
        pts[:, npos:npos + nneg, :2] = coords[:, 1:k:2]
        pts[:, npos:npos + nneg, 2] = torch.arange(1, k, 2).float()
        sequences.append(pts)
    return sequences


def compare_with_authors(model: torch.nn.Module, features: Any, points: torch.Tensor, prev: torch.Tensor,
                         args: argparse.Namespace, device: torch.device) -> Dict:
    """The authors' per-click path against ``decode`` on the same inputs, timed in alternating
    pairs so that load from other processes hits both alike; the speedup is the median of the
    per-pair ratios. Also the largest logit difference between the two paths."""
    ours, theirs = [], []
    for _ in range(args.warmup + args.authors_repeats):
        theirs.append(timed(lambda: authors_decode(model, features, points, prev), device))
        ours.append(timed(lambda: model.decode(features, points, prev), device))
    ours, theirs = ours[args.warmup:], theirs[args.warmup:]
    diff = (authors_decode(model, features, points, prev).float()
            - model.decode(features, points, prev).float()).abs().max().item()
    return {"authors_decode": stats_ms(theirs), "decode_paired": stats_ms(ours),
            "decode_speedup_vs_authors": statistics.median(t / o for t, o in zip(theirs, ours)),
            "max_abs_logit_diff_vs_authors": diff}


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # Linux: KiB


def run_size(model: torch.nn.Module, size: int, args: argparse.Namespace, device: torch.device) -> Dict:
    """SkipClick at one square input size and dtype: every measurement of ``run_protocol_size``
    with the previous probabilities fed back as the evaluation does, the full forward, and the
    authors' per-click computation beside ours."""
    gen = torch.Generator().manual_seed(size)
    image = torch.rand(args.batch_size, 3, size, size, generator=gen).to(device)
    clicks = [p.to(device) for p in click_sequence(args.clicks + args.warmup, size, args.batch_size, gen)]
    dtype = DTYPES[args.dtype]
    autocast = (torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext())
    result: Dict = {"size": size}
    with torch.inference_mode(), autocast:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        prev = torch.zeros(args.batch_size, 1, size, size, device=device)
        encode, first = [], []
        for _ in range(args.warmup + args.encode_repeats):
            encode_s, first_s = first_click_seconds(lambda: model.encode_image(image),
                                                    lambda features: model.decode(features, clicks[0], prev), device)
            encode.append(encode_s)
            first.append(first_s)
        result["encode_image"] = stats_ms(encode[args.warmup:])
        result["first_click"] = stats_ms(first[args.warmup:])
        features = model.encode_image(image)
        per_click = []
        for points in clicks:
            start = time.perf_counter()
            logits = model.decode(features, points, prev)
            prev = torch.sigmoid(logits.float())   # the evaluation protocol feeds back probabilities
            synchronize(device)
            per_click.append(time.perf_counter() - start)
        result["decode"] = stats_ms(per_click[args.warmup:])
        result["peak_memory_mb"] = peak_memory_mb(device)
        zeros = torch.zeros_like(prev)
        result["gflops"] = {"first_click": gflops(lambda: model.decode(model.encode_image(image), clicks[0], zeros)),
                            "per_click": gflops(lambda: model.decode(features, clicks[-1], prev))}
        x = torch.cat([image, prev], 1)
        last = clicks[-1]
        result["forward"] = stats_ms([timed(lambda: model(x, last), device) for _ in range(args.forward_repeats)])
        if args.authors and model.detail is None:   # the authors' models have no detail refiner
            result.update(compare_with_authors(model, features, last, prev, args, device))
    if dtype != torch.float32:
        with torch.inference_mode():
            ref = model.decode(model.encode_image(image), last, prev)
            with autocast:
                low = model.decode(model.encode_image(image), last, prev)
        result["mask_agreement_vs_fp32"] = ((ref > 0) == (low.float() > 0)).float().mean().item()
    return result


def first_click_seconds(encode: Callable[[], object], click: Callable[[object], object],
                        device: torch.device) -> Tuple[float, float]:
    """Seconds of ``encode()`` (the image-only or base-network work) and of a first click,
    ``encode()`` followed by ``click(encoded)``."""
    synchronize(device)
    start = time.perf_counter()
    encoded = encode()
    synchronize(device)
    encoded_at = time.perf_counter()
    click(encoded)
    synchronize(device)
    return encoded_at - start, time.perf_counter() - start


def run_protocol_size(model: torch.nn.Module, size: Tuple[int, int], args: argparse.Namespace,
                      device: torch.device) -> Dict:
    """Any family at one network input (H, W) and dtype, through the families' common calls:
    ``encode_image`` (with the first click), a first click (``encode_image`` + ``decode``), every
    later click (``decode``, the family's own state fed back), FLOPs."""
    gen = torch.Generator().manual_seed(size[0] * 10007 + size[1])
    image = torch.rand(args.batch_size, 3, *size, generator=gen).to(device)
    clicks = [p.to(device) for p in click_sequence(args.clicks + args.warmup, size, args.batch_size, gen)]
    dtype = DTYPES[args.dtype]
    autocast = (torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext())
    result: Dict = {"size": f"{size[0]}x{size[1]}"}
    with torch.inference_mode(), autocast:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        encode, first = [], []
        for _ in range(args.warmup + args.encode_repeats):
            encode_s, first_s = first_click_seconds(lambda: model.encode_image(image, clicks[0]),
                                                    lambda state: model.decode(state, clicks[0]), device)
            encode.append(encode_s)
            first.append(first_s)
        result["encode_image"] = stats_ms(encode[args.warmup:])
        result["first_click"] = stats_ms(first[args.warmup:])
        state = model.encode_image(image, clicks[0])
        per_click = [timed(lambda: model.decode(state, points), device) for points in clicks]
        result["decode"] = stats_ms(per_click[args.warmup:])
        result["peak_memory_mb"] = peak_memory_mb(device)
        result["gflops"] = {"first_click": gflops(lambda: model.decode(model.encode_image(image, clicks[0]), clicks[0])),
                            "per_click": gflops(lambda: model.decode(state, clicks[-1]))}
    if dtype != torch.float32:
        last = clicks[-1]
        with torch.inference_mode():
            ref = model.decode(model.encode_image(image, last), last)
            with autocast:
                low = model.decode(model.encode_image(image, last), last)
        result["mask_agreement_vs_fp32"] = ((ref > 0) == (low.float() > 0)).float().mean().item()
    return result


def print_protocol_table(rows: List[Dict], meta: Dict) -> None:
    """A Markdown table of ``run_protocol_size`` results of one model for one dtype."""
    print(f"\n{meta['variant']} ({meta['family']}) on {meta['device_name']} ({meta['device']}, {meta['dtype']}, batch "
          f"{meta['batch_size']}, {meta['threads']} threads, torch {meta['torch']}, {meta['weights']} weights)\n")
    cols = ["input", "encode_image ms (median / p90)", "first click ms (encode_image + decode)",
            "decode ms per click (median / p90)", "GFLOPs first click", "GFLOPs per click", "peak MB",
            "mask agreement vs fp32"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        cells = [r["size"], f"{r['encode_image']['median_ms']:.1f} / {r['encode_image']['p90_ms']:.1f}",
                 f"{r['first_click']['median_ms']:.1f}",
                 f"{r['decode']['median_ms']:.1f} / {r['decode']['p90_ms']:.1f}",
                 f"{r['gflops']['first_click']:.2f}", f"{r['gflops']['per_click']:.2f}", f"{r['peak_memory_mb']:.0f}",
                 f"{r['mask_agreement_vs_fp32']:.4f}" if "mask_agreement_vs_fp32" in r else "-"]
        print("| " + " | ".join(cells) + " |")


def print_summary(runs: List[Dict]) -> None:
    """Every model, input and dtype side by side: a first click (``encode_image`` + ``decode``;
    EMC-Click's base network plus a correction) and each later click."""
    print("\nside by side (first click: image encoding or base network plus one click; median ms)\n")
    cols = ["model", "family", "params (M)", "input", "dtype", "first click ms", "per click ms (median / p90)",
            "GFLOPs first click", "GFLOPs per click"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for run in runs:
        meta = run["meta"]
        for r in run.get("results", []):
            click = r["decode"]
            size = r["size"] if isinstance(r["size"], str) else f"{r['size']}x{r['size']}"
            cells = [meta["variant"], meta["family"], f"{meta['params_m']:.1f}", size, meta["dtype"],
                     f"{r['first_click']['median_ms']:.1f}", f"{click['median_ms']:.1f} / {click['p90_ms']:.1f}",
                     f"{r['gflops']['first_click']:.2f}", f"{r['gflops']['per_click']:.2f}"]
            print("| " + " | ".join(cells) + " |")


def print_table(rows: List[Dict], meta: Dict) -> None:
    """A Markdown table of one SkipClick variant's results for one dtype."""
    print(f"\n{meta['variant']} on {meta['device_name']} ({meta['device']}, {meta['dtype']}, batch "
          f"{meta['batch_size']}, {meta['threads']} threads, torch {meta['torch']}, {meta['weights']} weights)\n")
    cols = ["size", "encode_image ms (median / p90)", "decode ms (median / p90)", "forward ms",
            "authors' per-click ms", "decode speedup (paired)", "max |Δlogits| vs authors", "peak MB",
            "mask agreement vs fp32"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        authors = r.get("authors_decode")
        cells = [str(r["size"]),
                 f"{r['encode_image']['median_ms']:.1f} / {r['encode_image']['p90_ms']:.1f}",
                 f"{r['decode']['median_ms']:.1f} / {r['decode']['p90_ms']:.1f}",
                 f"{r['forward']['median_ms']:.1f}",
                 f"{authors['median_ms']:.1f}" if authors else "-",
                 f"{r['decode_speedup_vs_authors']:.2f}x" if authors else "-",
                 f"{r['max_abs_logit_diff_vs_authors']:.1e}" if authors else "-",
                 f"{r['peak_memory_mb']:.0f}",
                 f"{r['mask_agreement_vs_fp32']:.4f}" if "mask_agreement_vs_fp32" in r else "-"]
        print("| " + " | ".join(cells) + " |")


def image_size(text: str) -> Tuple[int, int]:
    """``HxW`` -> (H, W), both positive multiples of 4."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 and int(p) % 4 == 0 for p in parts):
        raise argparse.ArgumentTypeError(f"{text!r}: expected HxW with positive multiples of 4, e.g. 384x512")
    return int(parts[0]), int(parts[1])


def build_model(name: str) -> torch.nn.Module:
    """A randomly initialised model: the variant ``name`` of whichever family has it."""
    for family in all_families():
        try:
            family.variant_config(name)
        except ValueError:
            continue
        return family.build(name)
    known = "; ".join(f"{family.label}: {', '.join(family.variants)}" for family in all_families())
    raise SystemExit(f"--variant {name!r} is no model family's variant ({known})")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--variant", nargs="+", default=["skipclick"],
                   help="models to time: variants of any family (SkipClick's isegm.model.VARIANTS, EMC-Click's "
                        "isegm.model.EMC_CONFIGS)")
    p.add_argument("--checkpoint", help="trained checkpoint (SkipClick or EMC-Click) to time (default: random weights "
                   "of --variant)")
    p.add_argument("--size", type=int, nargs="+", default=[448], help="SkipClick's square input sizes (448, 672, 896)")
    p.add_argument("--emc-size", type=image_size, nargs="+", default=[(384, 512)],
                   help="network inputs HxW, multiples of 4, of the families timed through the common calls "
                        "(EMC-Click; 384x512: a 480x640 photo at the authors' short side 384)")
    add_device_arguments(p, compare=True)
    p.add_argument("--force", action="store_true",
                   help="time bf16 / fp16 on a CPU without hardware support anyway (about 14x slower than fp32)")
    p.add_argument("--batch-size", type=int, default=1, help="click sets decoded at once against one image")
    p.add_argument("--clicks", type=int, default=30, help="timed clicks per size (after warm-up)")
    p.add_argument("--warmup", type=int, default=3, help="untimed clicks first")
    p.add_argument("--encode-repeats", type=int, default=5, help="timed image encodings per size")
    p.add_argument("--forward-repeats", type=int, default=5, help="timed full forward passes per size")
    p.add_argument("--authors-repeats", type=int, default=10,
                   help="alternating (authors', ours) per-click pairs timed for the speedup")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-authors", dest="authors", action="store_false",
                   help="skip timing the authors' per-click computation")
    p.add_argument("--json", help="write all figures to this JSON file (default: none)")
    args = p.parse_args(argv)
    args.device = args.device or default_device()
    return args


def main(argv=None) -> List[Dict]:
    args = parse_args(argv)
    if args.clicks < 1:
        raise SystemExit("--clicks must be at least 1")
    device = select_device(args.device, args.threads)
    runs = []
    for name in [args.checkpoint] if args.checkpoint else args.variant:
        if args.checkpoint:
            model = load_checkpoint(args.checkpoint, device=device)
        else:
            model = build_model(name).eval().to(device)
        # FlopCounterMode's module hooks fail on parameters that require grad under inference_mode
        model.requires_grad_(False)
        family = family_of(model)
        for dtype in args.dtype:
            if not (args.force or native_reduced_precision(device, DTYPES[dtype])):
                print(f"\nskipping {dtype} for {name}: this CPU has no hardware {dtype} matrix units (AVX512-BF16 / "
                      f"AMX), so torch runs {dtype} products as scalar code: bf16 took 14x longer per click than fp32 "
                      f"on such a CPU (README, Speed). Use a GPU, or --force.")
                runs.append({"meta": {"variant": name, "dtype": dtype, "device": args.device},
                             "skipped": "no hardware support on this CPU"})
                continue
            meta = {"variant": name, "family": family.label, "device": args.device,
                    "dtype": dtype, "batch_size": args.batch_size, "threads": torch.get_num_threads(),
                    "torch": torch.__version__, "device_name": device_name(device), "clicks": args.clicks,
                    "weights": "checkpoint" if args.checkpoint else "random",
                    "params_m": sum(p.numel() for p in model.parameters()) / 1e6}
            settings = argparse.Namespace(**{**vars(args), "dtype": dtype})
            if family.name == "SkipClick":   # the script restates the authors' SkipClick path
                rows = [run_size(model, size, settings, device) for size in args.size]
                print_table(rows, meta)
            else:
                rows = [run_protocol_size(model, size, settings, device) for size in args.emc_size]
                print_protocol_table(rows, meta)
            runs.append({"meta": meta, "results": rows})
        del model
    print_summary(runs)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(runs, f, indent=2)
        print(f"wrote {args.json}")
    return runs


if __name__ == "__main__":
    main()
