"""``skipclick-export``: a checkpoint as an ONNX folder that ``Predictor(DIR)`` and the annotation
app run on onnxruntime alone (``isegm.onnx``; docs/onnx.md)::

    skipclick-export --checkpoint weights/skipclick.pth --out exported/skipclick --check

writes ``encoder.onnx`` (image -> image features, once per image), ``decoder.onnx`` (features +
clicks + previous mask -> logits, per click; any number of clicks) and ``meta.json``.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

DESCRIPTION = __doc__.split("\n\n")[0].replace("``", "")
EPILOG = ("The export traces the model on the CPU in float32, the precision of the graphs, so this command has no "
          "--device or --dtype. EMC-Click checkpoints do not export (docs/onnx.md says why).")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="skipclick-export", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--checkpoint", required=True, metavar="PATH",
                        help="model file: ours, the authors' SkipClick release, or a backbone file")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to write (created if absent)")
    parser.add_argument("--size", nargs=2, type=int, default=None, metavar=("H", "W"),
                        help="network input size, multiples of the patch size (14 for DINOv2, 16 for DINOv3); "
                             "default: the model's training crop (448 448 for the released models)")
    parser.add_argument("--opset", type=int, default=None,
                        help="ONNX opset of the graphs (at least 17, for LayerNormalization; default: 18)")
    parser.add_argument("--check", action="store_true",
                        help="after the export, run PyTorch and onnxruntime on a random image with random clicks "
                             "and print the largest logits difference")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.opset is not None and args.opset < 17:
        parser.exit(2, f"skipclick-export: error: --opset {args.opset}: the graphs need opset 17 or later\n")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        parser.exit(2, f"skipclick-export: error: --out {args.out!r} is a file; give a folder\n")
    try:
        from ..model import load_checkpoint
        from ..onnx.export import DEFAULT_OPSET, check_export, export_model
    except ImportError as err:
        parser.exit(2, f"skipclick-export: error: {err}; install the export's requirements: "
                       "pip install 'skipclick[onnx]'\n")
    try:
        model = load_checkpoint(args.checkpoint)
        meta = export_model(model, args.out, size=args.size, opset=args.opset or DEFAULT_OPSET,
                            source=args.checkpoint)
    except (OSError, ValueError, TypeError, NotImplementedError) as err:
        parser.exit(2, f"skipclick-export: error: {err}\n")
    h, w = meta["size"]
    print(f"wrote {args.out}: {meta['family']} {meta['variant']} at {h}x{w}, opset {meta['opset']}")
    for part in ("encoder", "decoder"):
        path = os.path.join(args.out, meta[part]["file"])
        print(f"  {meta[part]['file']:<13} {os.path.getsize(path) / 2 ** 20:8.1f} MiB")
    if args.check:
        diff = check_export(model, args.out)
        print(f"check: max |logits difference| PyTorch vs onnxruntime = {diff:.2e} (random image, 3 clicks)")
    print(f"use it: Predictor({args.out!r}) or skipclick-app --checkpoint {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
