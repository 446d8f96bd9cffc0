"""``skipclick-export``: a checkpoint as an ONNX folder that ``Predictor(DIR)`` and the annotation
app run on onnxruntime alone (``isegm.onnx``; docs/onnx.md)::

    skipclick-export --checkpoint weights/skipclick_dinov2.pth --out exported/skipclick --check

writes ``encoder.onnx`` (image -> image features, once per image), ``decoder.onnx`` (features +
clicks + previous mask -> logits, per click; any number of clicks) and ``meta.json``.
"""
from __future__ import annotations

import argparse
import os
from typing import List, Optional

from .common import HelpFormatter, add_debug_argument, exit_error, main_entry

DESCRIPTION = __doc__.replace("``", "")
EPILOG = ("The export traces the model on the CPU in float32, the precision of the graphs, so this\n"
          "command has no --device or --dtype. SkipClick graphs run at one size (--size); EMC-Click\n"
          "graphs take any size and the predictor resizes the image's short side (--short-side).")


# --check fails above this difference, relative to the logits' size where they exceed 1 (float32 in
# both runtimes: ~1e-6 is usual).
CHECK_TOLERANCE = 1e-4


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``skipclick-export``."""
    parser = argparse.ArgumentParser(prog="skipclick-export", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=HelpFormatter)
    parser.add_argument("--checkpoint", required=True, metavar="PATH",
                        help="model file: ours, or the authors' SkipClick or EMC-Click release")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to write (created if absent)")
    parser.add_argument("--size", nargs=2, type=int, default=None, metavar=("H", "W"),
                        help="network input size, multiples of the patch size (14 for DINOv2, 16 for DINOv3); "
                             "default: the model's training crop (448 448 for the released models); SkipClick only")
    parser.add_argument("--short-side", type=int, default=None, metavar="N",
                        help="EMC-Click only: the network input's short side the predictor resizes images to "
                             "(default: 384, the authors' setting; 576 for DAVIS)")
    parser.add_argument("--opset", type=int, default=None,
                        help="ONNX opset of the graphs (at least 17, for LayerNormalization; default: 18)")
    parser.add_argument("--check", action="store_true",
                        help="after the export, run PyTorch and onnxruntime on a random image with random clicks "
                             "and print the largest logits difference")
    add_debug_argument(parser)
    return parser


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """``skipclick-export``'s arguments."""
    return build_parser().parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    """Export ``--checkpoint`` into ``--out``; exit status 0, 2 on bad input or a failed ``--check``."""
    args = parse_args(argv)
    if args.opset is not None and args.opset < 17:
        exit_error(f"--opset {args.opset}: the graphs need opset 17 or later")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        exit_error(f"--out {args.out!r} is a file; give a folder")
    try:
        from ..model import load_checkpoint
        from ..onnx.export import DEFAULT_OPSET, check_export, export_model
    except ImportError as err:
        exit_error(f"{err}; install the export's requirements: pip install 'skipclick[onnx]'")
    try:
        model = load_checkpoint(args.checkpoint)
        meta = export_model(model, args.out, size=args.size, opset=args.opset or DEFAULT_OPSET,
                            source=args.checkpoint, short_side=args.short_side)
    except (OSError, ValueError, TypeError) as err:
        exit_error(str(err))
    size = "x".join(map(str, meta["size"])) if meta["size"] else f"short side {meta['short_side']}"
    print(f"wrote {args.out}: {meta['family']} {meta['variant']} at {size}, opset {meta['opset']}")
    for part in ("encoder", "decoder"):
        path = os.path.join(args.out, meta[part]["file"])
        print(f"  {meta[part]['file']:<13} {os.path.getsize(path) / 2 ** 20:8.1f} MiB")
    if args.check:
        diff, scale = check_export(model, args.out)
        print(f"check: max |logits difference| PyTorch vs onnxruntime = {diff:.2e} (random image, 3 clicks; "
              f"logits up to {scale:.2g})")
        if diff > CHECK_TOLERANCE * max(1.0, scale):
            exit_error(f"the graphs differ from PyTorch by {diff:.2e} (more than {CHECK_TOLERANCE:g}); please report "
                       f"it with {os.path.join(args.out, 'meta.json')}")
    print(f"use it: Predictor({args.out!r}) or skipclick-app --images DIR --out DIR --checkpoint {args.out}")
    return 0


if __name__ == "__main__":
    main_entry(main)
