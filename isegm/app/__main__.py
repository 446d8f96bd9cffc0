"""``skipclick-app --images DIR --out DIR [--checkpoint PATH] [--device cpu|cuda|cuda:N|mps] [--port N]``
(also ``python -m isegm.app``): annotate a folder of images in the browser.

On 127.0.0.1 (the default) only this machine's browser pages of the app itself can use it; with
``--host`` of a network the app needs a token (``--token`` or ``SKIPCLICK_APP_TOKEN``), which the
address printed at start carries (``isegm.app.guard``).

Left click adds a positive click, right click a negative one; ``u`` undo, ``r`` reset the
object, ``Enter`` finish it and start the next, ``s`` save, ``n`` / ``p`` next / previous image.
Masks go to ``DIR/masks/<image>/object_NNN.png`` and ``DIR/annotations.json`` (COCO, RLE).
"""
from __future__ import annotations

import argparse
import ctypes
import logging
import os
import sys
from pathlib import Path
from typing import List, Optional

from ..cli.common import HelpFormatter, add_debug_argument, add_model_arguments, exit_error, main_entry
from ..utils.device import add_device_arguments, select_device
from ..utils.serving import serve_until_interrupted
from .backend import DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE, load_backend
from .guard import TOKEN_ENV, TOKEN_HEADER
from .server import DEFAULT_TIMEOUT, AnnotationApp, AppServer
from .session import DEFAULT_UNDO_STEPS


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    prog = "python -m isegm.app" if Path(sys.argv[0]).parts[-3:] == ("isegm", "app", "__main__.py") else "skipclick-app"
    p = argparse.ArgumentParser(prog=prog, formatter_class=HelpFormatter,
                                description="Annotate a folder of images in the browser: click-based segmentation "
                                            "with SkipClick or EMC-Click (or a model-free baseline), masks saved as "
                                            "PNGs and a COCO JSON.")
    p.add_argument("--images", required=True, help="folder of images to annotate (its files, not sub-folders)")
    p.add_argument("--out", required=True, help="folder for the masks and annotations.json (created if needed)")
    add_model_arguments(p)
    p.add_argument("--categories", help="comma-separated category names offered per object "
                                         "(default: those of an existing annotations.json, else 'object')")
    p.add_argument("--max-side", type=int, default=DEFAULT_MAX_SIDE,
                   help="longest side the model and page work on; masks are saved at full resolution")
    p.add_argument("--cache", type=int, default=8, help="images whose features stay cached (LRU)")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help="largest image decoded, in pixels (read from the file's header first; 8K frames are 33 MP)")
    p.add_argument("--undo-steps", type=int, default=DEFAULT_UNDO_STEPS,
                   help="how many of an image's last clicks can be undone (older ones are kept, not undoable)")
    p.add_argument("--max-sessions", type=int, default=64,
                   help="browser tabs served at once; a new one replaces an idle tab without unsaved work, never one "
                        "with unsaved work")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                   help="seconds a connection may stay silent before it is closed")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; any but 127.0.0.1 / localhost / ::1 (e.g. 0.0.0.0: every network) "
                        "needs --token")
    p.add_argument("--token", default=os.environ.get(TOKEN_ENV),
                   help=f"the secret annotators need (at least 8 characters; default: ${TOKEN_ENV}, else none: on "
                        "127.0.0.1 a random one the page gets by itself). The address printed at start carries it "
                        f"(?token=...); API clients send it as the {TOKEN_HEADER} header")
    p.add_argument("--port", type=int, default=8000, help="0: any free port")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--verbose", action="store_true", help="log every request")
    add_device_arguments(p)
    add_debug_argument(p)
    return p.parse_args(argv)


# Buffers of at least this many bytes get their own memory mapping (glibc), returned when freed.
MMAP_THRESHOLD = 256 * 1024


def return_freed_maps() -> None:
    """Keep the server's memory at what it holds (glibc only; a no-op elsewhere or when
    ``MALLOC_MMAP_THRESHOLD_`` is set). Every click allocates and frees maps of the working
    image; glibc by default raises its mmap threshold after the first such frees and serves
    them from per-thread heaps, which fragment: with 8 sessions clicking, RSS then grew by
    0.15 MB a click without end, and stays flat with a fixed threshold."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, MMAP_THRESHOLD)   # M_MMAP_THRESHOLD; a fixed value ends the raising
    except (OSError, AttributeError):
        pass


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    categories = [c.strip() for c in args.categories.split(",") if c.strip()] if args.categories else None
    try:
        AppServer.check(args.host, args.token, args.timeout)   # before the model loads
        device = select_device(args.device, args.threads)
        backend = load_backend(args.checkpoint, device, args.size, args.dtype, args.flip, args.baseline)
        app = AnnotationApp(args.images, args.out, backend, categories, args.max_side, args.cache,
                            args.max_sessions, args.undo_steps, args.max_pixels)
    except (OSError, ValueError, TypeError, ImportError, RuntimeError) as err:
        # a missing folder, an unreadable or damaged checkpoint, a bad setting: one line, no traceback
        exit_error(str(err) or type(err).__name__)
    if backend.notice:
        logging.warning("note: %s", backend.notice)
    if backend.model_free and (args.dtype, args.size, args.flip) != ("fp32", None, False):
        logging.warning("note: --dtype, --size and --flip apply to a model; the %s baseline ignores them", args.baseline)
    try:
        server = AppServer(app, args.host, args.port, args.token, args.timeout)
    except OSError as err:
        exit_error(f"cannot listen on {args.host}:{args.port} ({err}); choose another --port")
    access = ("open it in a browser of this machine (forward the port to reach it from elsewhere)"
              if server.guard.loopback else
              f"from other machines use this machine's name or address instead of localhost; the address carries "
              f"the token (or send the {TOKEN_HEADER} header)")
    print(f"annotating {len(app.names)} images of {app.images_dir} with {backend.name}\n"
          f"output: {app.store.root}\n{access}\nopen {server.url} (Ctrl-C stops)", flush=True)
    return_freed_maps()
    serve_until_interrupted(server)


if __name__ == "__main__":
    main_entry(main)
