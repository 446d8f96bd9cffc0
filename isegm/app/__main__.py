"""``skipclick-app --images DIR --out DIR [--checkpoint PATH] [--device cpu|cuda|cuda:N|mps] [--port N]``
(also ``python -m isegm.app``): annotate a folder of images in the browser.

Left click adds a positive click, right click a negative one; ``u`` undo, ``r`` reset the
object, ``Enter`` finish it and start the next, ``s`` save, ``n`` / ``p`` next / previous image.
Masks go to ``DIR/masks/<image>/object_NNN.png`` and ``DIR/annotations.json`` (COCO, RLE).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import List, Optional

from ..cli.common import HelpFormatter, exit_error
from ..inference.baselines import BASELINES
from ..utils.device import add_device_arguments, select_device
from .backend import DEFAULT_MAX_SIDE, load_backend
from .server import AnnotationApp, AppServer
from .store import StoreError


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    prog = "python -m isegm.app" if Path(sys.argv[0]).parts[-3:] == ("isegm", "app", "__main__.py") else "skipclick-app"
    p = argparse.ArgumentParser(prog=prog, formatter_class=HelpFormatter,
                                description="Annotate a folder of images in the browser: click-based segmentation "
                                            "with SkipClick or EMC-Click (or a model-free baseline), masks saved as "
                                            "PNGs and a COCO JSON.")
    p.add_argument("--images", required=True, help="folder of images to annotate (its files, not sub-folders)")
    p.add_argument("--out", required=True, help="folder for the masks and annotations.json (created if needed)")
    p.add_argument("--checkpoint", help="SkipClick checkpoint (ours or the authors'), the authors' EMC-Click file or "
                                         "a folder written by skipclick-export (default: none, a model-free baseline)")
    p.add_argument("--size", type=int, help="model input: SkipClick resizes the image to size x size (default 448), "
                                             "EMC-Click its short side to size (default 384)")
    p.add_argument("--flip", action="store_true", help="flip test-time augmentation (twice the per-click work)")
    p.add_argument("--baseline", default="grabcut", choices=sorted(BASELINES), help="the model-free predictor")
    p.add_argument("--categories", help="comma-separated category names offered per object "
                                         "(default: those of an existing annotations.json, else 'object')")
    p.add_argument("--max-side", type=int, default=DEFAULT_MAX_SIDE,
                   help="longest side the model and page work on; masks are saved at full resolution")
    p.add_argument("--cache", type=int, default=8, help="images whose features stay cached (LRU)")
    p.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to serve other machines (there is no login)")
    p.add_argument("--port", type=int, default=8000, help="0: any free port")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--verbose", action="store_true", help="log every request")
    add_device_arguments(p)
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    categories = [c.strip() for c in args.categories.split(",") if c.strip()] if args.categories else None
    try:
        device = select_device(args.device, args.threads)
        backend = load_backend(args.checkpoint, device, args.size, args.dtype, args.flip, args.baseline)
        app = AnnotationApp(args.images, args.out, backend, categories, args.max_side, args.cache)
    except (FileNotFoundError, ValueError, ImportError, StoreError) as err:
        exit_error(str(err))
    if backend.notice:
        logging.warning("note: %s", backend.notice)
    if backend.model_free and (args.dtype, args.size, args.flip) != ("fp32", None, False):
        logging.warning("note: --dtype, --size and --flip apply to a model; the %s baseline ignores them", args.baseline)
    try:
        server = AppServer(app, args.host, args.port)
    except OSError as err:
        exit_error(f"cannot listen on {args.host}:{args.port} ({err}); choose another --port")
    print(f"annotating {len(app.names)} images of {app.images_dir} with {backend.name}\n"
          f"output: {app.store.root}\nopen {server.url} (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
