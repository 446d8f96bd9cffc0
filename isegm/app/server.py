"""The annotation server: a JSON API and the static page, on the standard library's
``ThreadingHTTPServer`` (one thread per connection; sessions and images are locked).

API (JSON bodies and answers; every POST but ``/api/session`` names ``session`` and ``image``;
coordinates are full-image pixels, x = column, y = row):

* ``GET  /api/config``: model, notice, categories, the images (with ``saved``) and skipped files;
* ``POST /api/session``: a new session id;
* ``POST /api/open``: prepares the image (its features are cached) and answers its objects
  (a saved annotation is loaded for editing; ``discard``: drop the tab's unsaved changes
  of it first);
* ``GET  /api/image?name=N``: the working image (JPEG) the page shows;
* ``POST /api/click`` (``x``, ``y``, ``positive``), ``/api/undo``, ``/api/reset``,
  ``/api/finish``, ``/api/select`` (``object``), ``/api/delete`` (``object``),
  ``/api/category`` (``object``, ``category``), ``/api/save`` (``version``: the image's
  ``version`` the page was given, ``force``: overwrite a newer save).

Object masks go to the page as COCO compressed RLE at the working size. Errors answer
``{"error": message}`` with a 4xx status for bad requests (malformed JSON, unknown image or
session, a click outside the image, a path outside the folders), 403 for a request the access
rules refuse (``isegm.app.guard``: Host, Origin, the ``X-SkipClick-Token`` header), 409 for a
save over a newer one, 429 when every session slot holds unsaved work, and 5xx for server
faults; the server keeps running either way. A connection that sends nothing for ``timeout``
seconds is closed.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import mimetypes
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple
from urllib.parse import parse_qs, quote, urlsplit

from ..utils.serving import base_url, running_in_thread
from .backend import (DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE, PIXELS_PIL_READS, Backend, ImageCache, ImageError,
                      scan_images)
from .guard import TOKEN_HEADER, AccessDenied, Guard
from .session import DEFAULT_UNDO_STEPS, ImageWork, NotFound, Session, SessionLimit, Sessions
from .store import DEFAULT_CATEGORY, AnnotationStore, StaleAnnotation, StoreError

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_BODY = 1 << 20   # bytes; the API's requests are a few hundred
MAX_CATEGORY_LENGTH = 100
DEFAULT_TIMEOUT = 30.0   # seconds a connection may stay silent (also between keep-alive requests)


class ApiError(Exception):
    """A request the server refuses: HTTP ``status`` and a message for the user."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: Dict[str, str] = field(default_factory=dict)


def _json(payload: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(payload, separators=(",", ":")).encode("utf-8"))


class AnnotationApp:
    """Everything the server serves, independent of HTTP (``handle`` maps a request to a response).

    ``images_dir``: the folder to annotate; ``out_dir``: where masks and the COCO JSON go;
    ``backend``: the model (``isegm.app.backend``); ``categories``: the names the page offers
    (default: those of an existing annotation file, else ``object``); ``max_side``: longest
    side of the image the model and page work on; ``cache_size``: images whose features are kept;
    ``max_sessions``: sessions kept at once; ``undo_steps``: clicks per image that can be undone;
    ``max_pixels``: the largest image decoded (checked from the file's header).
    """

    def __init__(self, images_dir: Path, out_dir: Path, backend: Backend, categories: Optional[Sequence[str]] = None,
                 max_side: int = DEFAULT_MAX_SIDE, cache_size: int = 8, max_sessions: int = 64,
                 undo_steps: int = DEFAULT_UNDO_STEPS, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.images_dir = Path(images_dir).resolve()
        if not self.images_dir.is_dir():
            raise FileNotFoundError(f"--images {str(images_dir)!r} is not a folder; give the folder of images to annotate")
        if max_side < 16:
            raise ValueError(f"--max-side {max_side} is too small; use at least 16 (default {DEFAULT_MAX_SIDE})")
        if not 0 <= undo_steps <= 10_000:
            raise ValueError(f"--undo-steps {undo_steps} is out of range; use 0 to 10000 "
                             f"(default {DEFAULT_UNDO_STEPS})")
        if not 1 <= max_pixels <= PIXELS_PIL_READS:
            raise ValueError(f"--max-pixels {max_pixels} is out of range; use 1 to {PIXELS_PIL_READS} "
                             f"(default {DEFAULT_MAX_PIXELS})")
        if max_sessions < 1:
            raise ValueError(f"--max-sessions {max_sessions} is too small; use at least 1")
        self.undo_steps = undo_steps
        self.names, self.skipped = scan_images(self.images_dir, max_pixels)
        for name, reason in self.skipped:
            logger.warning("skipping %s: %s", self.images_dir / name, reason)
        if not self.names:
            raise FileNotFoundError(f"--images {str(self.images_dir)!r} holds no readable image "
                                    f"({len(self.skipped)} entries skipped)")
        self.backend = backend
        self.store = AnnotationStore(out_dir)
        self.categories = list(categories or self.store.categories() or [DEFAULT_CATEGORY])
        self.cache = ImageCache(self.images_dir, backend, cache_size, max_side, max_pixels)
        self.sessions = Sessions(max_sessions)
        self._static = {p.name: p for p in STATIC_DIR.iterdir() if p.is_file()}
        self._routes: Dict[Tuple[str, str], Callable[..., Response]] = {
            ("GET", "/"): lambda q, b: self._static_file("index.html"),
            ("GET", "/api/config"): self._config,
            ("GET", "/api/image"): self._image,
            ("POST", "/api/session"): self._new_session,
        }
        actions = {"open": self._open, "click": self._click, "undo": self._undo, "reset": self._reset,
                   "finish": self._finish, "select": self._select, "delete": self._delete,
                   "category": self._category, "save": self._save}
        for action, handler in actions.items():
            self._routes[("POST", f"/api/{action}")] = self._with_session(handler)

    # --- dispatch ---

    def handle(self, method: str, path: str, query: Dict[str, List[str]], body: bytes) -> Response:
        """The response to one request; never raises."""
        try:
            if method == "GET" and path.startswith("/static/"):
                return self._static_file(path[len("/static/"):])
            route = self._routes.get((method, path))
            if route is None:
                if any(p == path for _, p in self._routes):
                    raise ApiError(405, f"{method} is not allowed on {path}")
                raise ApiError(404, f"no such endpoint: {method} {path}")
            return route(query, body)
        except ApiError as err:
            return _json({"error": err.message}, err.status)
        except NotFound as err:
            return _json({"error": err.args[0]}, 404)
        except ImageError as err:
            return _json({"error": str(err)}, 422)
        except SessionLimit as err:
            return _json({"error": str(err)}, 429)
        except StoreError as err:
            return _json({"error": str(err)}, 409)
        except Exception as err:   # a fault of ours: report it, keep serving
            logger.exception("error handling %s %s", method, path)
            return _json({"error": f"internal error ({type(err).__name__}: {err}); the server keeps running"}, 500)

    def _with_session(self, handler: Callable[[Session, Dict[str, Any]], Response]) -> Callable[..., Response]:
        def run(query: Dict[str, List[str]], body: bytes) -> Response:
            request = _parse_body(body)
            session = self.sessions.get(request.get("session"))
            with session.lock:
                return handler(session, request)
        return run

    # --- static files and configuration ---

    def _static_file(self, name: str) -> Response:
        path = self._static.get(name)   # only the files of static/: no path reaches outside it
        if path is None:
            raise ApiError(404, f"no static file {name!r}")
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if content_type.startswith("text/") or content_type.endswith("javascript"):
            content_type += "; charset=utf-8"
        return Response(200, path.read_bytes(), content_type)

    def _config(self, query: Dict[str, List[str]], body: bytes) -> Response:
        return _json({"backend": self.backend.name, "model_free": self.backend.model_free,
                      "notice": self.backend.notice, "categories": self.categories,
                      "images": [{"name": n, "saved": self.store.saved(n)} for n in self.names],
                      "skipped": [{"name": n, "reason": r} for n, r in self.skipped],
                      "out": str(self.store.root)})

    def _image_name(self, value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise ApiError(400, f"'image' must be the file name of an image of the folder, got {value!r}")
        if "/" in value or "\\" in value or value in (".", "..") or "\0" in value:
            raise ApiError(400, f"image name {value!r} rejected: a path, not a file name of {str(self.images_dir)!r}")
        if value not in self.names:
            raise NotFound(f"no image named {value!r} in {str(self.images_dir)!r}")
        return value

    def _image(self, query: Dict[str, List[str]], body: bytes) -> Response:
        entry = self.cache.get(self._image_name((query.get("name") or [None])[0]))
        return Response(200, entry.jpeg, "image/jpeg", {"Cache-Control": "private, max-age=3600"})

    # --- session actions ---

    def _new_session(self, query: Dict[str, List[str]], body: bytes) -> Response:
        return _json({"session": self.sessions.create().id})

    def _work(self, session: Session, request: Dict[str, Any]) -> ImageWork:
        name = self._image_name(request.get("image"))
        work = session.works.get(name)
        if work is None:
            raise ApiError(409, f"image {name!r} is not open; POST /api/open first")
        return work

    def _view(self, session: Session, work: ImageWork, masks: Optional[Sequence[int]] = None,
              **extra: Any) -> Response:
        return _json(self._state(session, work, masks, **extra))

    def _state(self, session: Session, work: ImageWork, masks: Optional[Sequence[int]] = None,
               **extra: Any) -> Dict[str, Any]:
        """The page's view of ``work`` (masks of the ids in ``masks``, default all) and ``extra``."""
        image = {"name": work.name, "index": self.names.index(work.name), "width": work.full_size[1],
                 "height": work.full_size[0], "work_width": work.work_size[1], "work_height": work.work_size[0],
                 "saved": self.store.saved(work.name), "version": work.version}
        return {"image": image, **work.to_json(masks), "unsaved": session.unsaved(), **extra}

    def _open(self, session: Session, request: Dict[str, Any]) -> Response:
        name = self._image_name(request.get("image"))
        entry = self.cache.get(name)
        if session.image is not None and session.image != name:
            left = session.works.get(session.image)
            if left is not None and not left.dirty:
                del session.works[session.image]   # saved: reload it from the store when it is opened again
        discard = request.get("discard", False)
        if not isinstance(discard, bool):
            raise ApiError(400, f"'discard' must be true or false, got {discard!r}")
        work = session.works.get(name)
        if work is not None and (discard or not work.dirty and work.version != self.store.version(name)):
            work = None   # dropped, or saved from elsewhere since with nothing here to keep: load the stored one
        if work is None:
            saved, version = self.store.load(name, *entry.full_size)
            work = session.works[name] = ImageWork(entry, saved, self.categories[0], version, self.undo_steps)
        session.image = name
        return self._view(session, work, encode_ms=round(entry.encode_ms, 1))

    def _click(self, session: Session, request: Dict[str, Any]) -> Response:
        start = time.perf_counter()
        work = self._work(session, request)
        x, y = _number(request, "x"), _number(request, "y")
        positive = request.get("positive", True)
        if not isinstance(positive, bool):
            raise ApiError(400, f"'positive' must be true or false, got {positive!r}")
        height, width = work.full_size
        if not (0 <= x < width and 0 <= y < height):
            raise ApiError(400, f"click (x={x:g}, y={y:g}) lies outside image {work.name!r} ({width}x{height} px): "
                                f"x must be in [0, {width}) and y in [0, {height})")
        model_ms = work.click(self.cache.get(work.name), self.backend, y, x, positive)
        state = self._state(session, work, [work.current], model_ms=round(model_ms, 1))
        state["server_ms"] = round((time.perf_counter() - start) * 1000, 1)   # all but sending the answer
        return _json(state)

    def _undo(self, session: Session, request: Dict[str, Any]) -> Response:
        work = self._work(session, request)
        done = work.undo()
        return self._view(session, work, [work.current], message="" if done else "nothing to undo")

    def _reset(self, session: Session, request: Dict[str, Any]) -> Response:
        work = self._work(session, request)
        work.reset()
        return self._view(session, work, [work.current])

    def _finish(self, session: Session, request: Dict[str, Any]) -> Response:
        work = self._work(session, request)
        work.finish()
        return self._view(session, work, [work.current])

    def _select(self, session: Session, request: Dict[str, Any]) -> Response:
        work = self._work(session, request)
        work.select(_object_id(request))
        return self._view(session, work, [])

    def _delete(self, session: Session, request: Dict[str, Any]) -> Response:
        work = self._work(session, request)
        work.delete(_object_id(request))
        return self._view(session, work, [work.current])

    def _category(self, session: Session, request: Dict[str, Any]) -> Response:
        work = self._work(session, request)
        category = request.get("category")
        if not isinstance(category, str) or not category.strip() or len(category) > MAX_CATEGORY_LENGTH:
            raise ApiError(400, f"'category' must be a non-empty name of at most {MAX_CATEGORY_LENGTH} characters, "
                                f"got {category!r}")
        work.set_category(_object_id(request), category.strip())
        return self._view(session, work, [])

    def _save(self, session: Session, request: Dict[str, Any]) -> Response:
        work = self._work(session, request)
        version, force = request.get("version", work.version), request.get("force", False)
        if not isinstance(version, str) or not isinstance(force, bool):
            raise ApiError(400, f"'version' must be the image's version as the page got it and 'force' true or "
                                f"false, got {version!r} and {force!r}")
        try:
            written, work.version = self.store.save(work.name, *work.full_size, work.to_save(),
                                                    None if force else version)
        except StaleAnnotation as err:
            raise ApiError(409, f"not saved: {err}. Someone else saved it after you opened it; your changes are "
                                "kept here, unsaved: save again with force to overwrite theirs, or open the image "
                                "again with discard to load theirs") from None
        except OSError as err:
            raise ApiError(500, f"cannot save {work.name!r} under {str(self.store.root)!r} ({err}); the annotation is "
                                "kept in memory: fix the folder (space, permissions) and save again") from None
        work.dirty = False
        return self._view(session, work, [], written=[str(p.relative_to(self.store.root)) for p in written])


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a finite number")


def _parse_body(body: bytes) -> Dict[str, Any]:
    """The request's JSON object; ``ApiError`` 400 for anything else: invalid or non-UTF-8 text,
    NaN / Infinity, nesting deeper than the parser's recursion limit, another top-level type."""
    try:
        request = json.loads(body.decode("utf-8"), parse_constant=_reject_constant) if body else None
    except (UnicodeDecodeError, ValueError) as err:
        raise ApiError(400, f"request body is not valid JSON: {err}") from None
    except RecursionError:
        raise ApiError(400, "request body is not valid JSON for this API: it is nested too deeply") from None
    if not isinstance(request, dict):
        raise ApiError(400, f"request body must be a JSON object, got {type(request).__name__}")
    return request


def _number(request: Dict[str, Any], key: str) -> float:
    value = request.get(key)
    try:
        number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
    except OverflowError:   # an integer beyond float's range
        number = math.inf
    if not math.isfinite(number):
        shown = repr(value) if len(repr(value)) <= 40 else f"{repr(value)[:40]}..."
        raise ApiError(400, f"{key!r} must be a finite number (full-image pixels), got {shown}")
    return number


def _object_id(request: Dict[str, Any]) -> int:
    value = request.get("object")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"'object' must be an object id (an integer), got {value!r}")
    return value


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive (a click costs no new connection); bodies up to ``MAX_BODY``;
    every request passes the server's ``Guard`` first; a connection silent for the server's
    ``timeout`` is closed (its thread ends)."""

    protocol_version = "HTTP/1.1"
    server_version = "skipclick-app"
    server: "AppServer"

    def setup(self) -> None:
        self.timeout = self.server.request_timeout   # StreamRequestHandler.setup sets it on the socket
        super().setup()

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_OPTIONS(self) -> None:   # a cross-site preflight: never granted
        self._serve("OPTIONS")

    def _serve(self, method: str) -> None:
        url = urlsplit(self.path)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        headers: Dict[str, str] = {}
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True   # the body is not read, so the connection cannot be reused
            response = _json({"error": f"Content-Length {self.headers.get('Content-Length')!r}: expected 0 to "
                                       f"{MAX_BODY} bytes"}, 413 if length > MAX_BODY else 400)
        else:
            body = self.rfile.read(length) if length else b""
            try:
                self.server.guard.check(method, url.path, self.headers)
            except AccessDenied as err:
                response = _json({"error": f"forbidden: {err}"}, 403)
            else:
                response = self.server.app.handle(method, url.path, parse_qs(url.query), body)
                token = self.server.guard.page_token()
                if method == "GET" and url.path == "/api/config" and token is not None:
                    headers[TOKEN_HEADER] = token   # the page's own token, for its same-origin requests
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        headers = {"Cache-Control": "no-store", **response.headers, **headers}
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)


class AppServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` serving an ``AnnotationApp`` behind a ``Guard``: ``token`` is
    the one given at start (required unless ``host`` is a loopback address; None there: a
    random one the page receives); ``timeout``: seconds a connection may stay silent."""

    daemon_threads = True

    def __init__(self, app: AnnotationApp, host: str = "127.0.0.1", port: int = 8000, token: Optional[str] = None,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self.check(host, token, timeout)
        self.app = app
        self.request_timeout = timeout
        super().__init__((host, port), _Handler)
        self.guard = Guard(host, self.server_address[1], token)

    @staticmethod
    def check(host: str, token: Optional[str], timeout: float = DEFAULT_TIMEOUT) -> None:
        """``ValueError`` for settings the server refuses: a network ``host`` without a token, a
        short token, a timeout that is not positive."""
        if not timeout > 0:
            raise ValueError(f"--timeout {timeout} must be more than 0 seconds (default {DEFAULT_TIMEOUT:g})")
        Guard(host, 0, token)

    @property
    def url(self) -> str:
        """The address to open; with a token given at start it carries it (``?token=``)."""
        return base_url(self.server_address) + "/" + (f"?token={quote(self.guard.token)}" if self.guard.given else "")


@contextlib.contextmanager
def serve_in_thread(app: AnnotationApp, host: str = "127.0.0.1", port: int = 0, token: Optional[str] = None,
                    timeout: float = DEFAULT_TIMEOUT) -> Iterator[AppServer]:
    """``app`` served from a background thread (tests, benchmarks, notebooks); port 0 takes a
    free one (``server.url``). The server stops when the block ends."""
    with running_in_thread(AppServer(app, host, port, token, timeout), "skipclick-app") as server:
        yield server
