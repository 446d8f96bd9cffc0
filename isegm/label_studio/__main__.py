"""``skipclick-label-studio [--checkpoint PATH] [--device cpu|cuda|cuda:N|mps] [--port N]
[--host HOST --basic-auth USER:PASS]`` (also ``python -m isegm.label_studio``): serve a model to
Label Studio as its ML backend.

In Label Studio: Settings > Model > Connect Model, URL ``http://localhost:9090``, "Interactive
preannotations" on (and Basic Authentication with the backend's user and password, which any
``--host`` but loopback requires). Task images stored by Label Studio need ``LABEL_STUDIO_URL``
and ``LABEL_STUDIO_API_KEY`` in this command's environment (docs/label-studio.md).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import List, Optional

from ..cli.common import HelpFormatter, add_debug_argument, add_model_arguments, exit_error, main_entry
from ..utils.device import add_device_arguments
from ..utils.serving import serve_until_interrupted
from .auth import PASS_ENV, USER_ENV, basic_auth_from, check_exposure
from .images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, DEFAULT_TIMEOUT, ImageSource
from .segmenter import load_segmenter
from .server import BackendServer, LabelStudioBackend


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    prog = ("python -m isegm.label_studio" if Path(sys.argv[0]).parts[-3:] == ("isegm", "label_studio", "__main__.py")
            else "skipclick-label-studio")
    p = argparse.ArgumentParser(prog=prog, formatter_class=HelpFormatter,
                                description="Serve SkipClick or EMC-Click (or a model-free baseline) to Label Studio "
                                            "as an ML backend: smart keypoints in, a brush mask out.\n\n"
                                            "Environment: LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY (a user's "
                                            "access token) to fetch images Label Studio stores; "
                                            "LOCAL_FILES_DOCUMENT_ROOT to read its local files directly; "
                                            f"{USER_ENV} and {PASS_ENV} for basic auth.")
    add_model_arguments(p)
    p.add_argument("--cache", type=int, default=8, help="task images whose encodings stay cached (LRU)")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help="largest image (width x height, read from its header before decoding)")
    p.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES, help="largest image file")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds to fetch an image")
    p.add_argument("--host", default="127.0.0.1",
                   help="0.0.0.0 to serve Label Studio on another machine (needs --basic-auth: the backend fetches "
                        "the URLs it is sent)")
    p.add_argument("--basic-auth", metavar="USER:PASS",
                   help=f"every request must carry this user and password (Label Studio's Basic Authentication; "
                        f"default: ${USER_ENV} and ${PASS_ENV}, which keep the password off the command line; "
                        "required with a --host other than loopback)")
    p.add_argument("--port", type=int, default=9090, help="0: any free port")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--verbose", action="store_true", help="log every request")
    add_device_arguments(p)
    add_debug_argument(p)
    return p.parse_args(argv)


def image_source(args: argparse.Namespace) -> ImageSource:
    """Where images come from: the command's bounds and Label Studio's environment variables."""
    for name in ("max_pixels", "max_bytes", "timeout"):
        if getattr(args, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} {getattr(args, name)} must be positive")
    root = os.environ.get("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT") or os.environ.get("LOCAL_FILES_DOCUMENT_ROOT")
    if root and not os.path.isdir(root):
        raise ValueError(f"LOCAL_FILES_DOCUMENT_ROOT {root!r} is not a folder here; unset it to fetch local files "
                         "from Label Studio")
    return ImageSource(os.environ.get("LABEL_STUDIO_URL") or os.environ.get("LABEL_STUDIO_HOST"),
                       os.environ.get("LABEL_STUDIO_API_KEY"), Path(root) if root else None,
                       args.max_pixels, args.max_bytes, args.timeout)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        auth = basic_auth_from(args.basic_auth, os.environ)
        check_exposure(args.host, auth)   # before the model loads: a refused start is quick
        if args.threads:
            import torch
            torch.set_num_threads(args.threads)
        images = image_source(args)
        segmenter = load_segmenter(args.checkpoint, args.device, args.dtype, args.size, args.flip, args.baseline,
                                   args.cache)
    except (FileNotFoundError, ValueError, ImportError) as err:
        exit_error(str(err))
    if segmenter.model_free:
        logging.warning("note: no --checkpoint: masks come from the model-free %s baseline, not a model%s",
                        args.baseline, "; --dtype, --size and --flip are ignored"
                        if (args.dtype, args.size, args.flip) != ("fp32", None, False) else "")
    if not images.label_studio_url:
        logging.warning("note: LABEL_STUDIO_URL is not set: images uploaded to Label Studio cannot be fetched")
    try:
        server = BackendServer(LabelStudioBackend(segmenter, images), args.host, args.port, auth)
    except OSError as err:
        exit_error(f"cannot listen on {args.host}:{args.port} ({err}); choose another --port")
    login = f"basic auth as {auth.user!r}; " if auth is not None else ""
    print(f"serving {segmenter.description} to Label Studio at {server.url} ({login}Ctrl-C stops)", flush=True)
    serve_until_interrupted(server)


if __name__ == "__main__":
    main_entry(main)
