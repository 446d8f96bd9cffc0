"""Label Studio's ML backend protocol (as the label-studio-ml SDK serves it) on the standard
library's ``ThreadingHTTPServer``.

* ``GET /health`` (and ``GET /``): ``{"status": "UP", "model_class": ..., "model": ...}`` and the
  feature cache's counters (``encodings``: images encoded so far, ``cached``: kept now);
* ``POST /setup`` (``project``, ``schema``: the labeling config): ``{"model_version": ...}``; a
  config without ``BrushLabels`` on an ``Image`` is refused, so Label Studio shows why on connecting;
* ``POST /predict`` (``tasks``, ``label_config``, ``params.context``): with the context of an
  interactive request (smart keypoints), ``{"results": [prediction]}`` where the prediction is
  one ``BrushLabels`` region at the original image size; without a context (pre-annotation of
  whole tasks, which clicks need) ``{"results": []}``;
* ``POST /webhook``: accepted and ignored (no training here); ``GET /versions``.

Only Label Studio's server calls the backend, never a web page: a request with an ``Origin``
header (which browsers send with every cross-site or POST request) is refused with 403, and so,
on a loopback address, is one whose ``Host`` does not name it (a page of another site that
rebinds its DNS name to 127.0.0.1 sends its own). With basic auth (``auth``: what Label Studio's
model connection sends), every request, the health check included, must carry the credentials:
401 with ``WWW-Authenticate`` otherwise. Without it the server listens only on a loopback
address. A refused request's body is not read.

Errors answer ``{"error": message}``: 400 for a malformed request or context, 422 for an image
that cannot be fetched or read, 500 for a fault of ours; the server keeps running.
"""
from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Iterator, Optional, Tuple
from urllib.parse import urlsplit

import numpy as np

from ..utils.access import is_loopback, loopback_hosts
from ..utils.serving import base_url, running_in_thread
from .auth import CHALLENGE, BasicAuth, check_exposure
from .images import ImageFetchError, ImageSource
from .protocol import ProtocolError, brush_result, brush_targets, check_label, read_keypoints, task_image_url, tasks_of
from .segmenter import Segmenter

logger = logging.getLogger(__name__)

# Label Studio sends the task with its annotations, drafts and predictions (brush masks included).
MAX_BODY = 64 << 20


@dataclass
class Answer:
    status: int
    payload: Any
    headers: Dict[str, str] = field(default_factory=dict)


class LabelStudioBackend:
    """The protocol, independent of HTTP: ``handle`` maps a request to an ``Answer`` and never raises.

    ``segmenter``: the model and its feature cache; ``images``: where task images come from.
    """

    def __init__(self, segmenter: Segmenter, images: ImageSource) -> None:
        self.segmenter = segmenter
        self.images = images
        self.model_version = segmenter.description

    def handle(self, method: str, path: str, body: bytes) -> Answer:
        """The answer to one request."""
        path = path.rstrip("/") or "/"
        try:
            if method == "GET" and path in ("/", "/health"):
                return Answer(200, self._health())
            if method == "GET" and path == "/versions":
                return Answer(200, {"versions": [self.model_version]})
            if method == "POST" and path in ("/setup", "/predict", "/webhook"):
                request = _parse_body(body)
                if path == "/setup":
                    return Answer(200, self._setup(request))
                if path == "/predict":
                    return Answer(200, self._predict(request))
                return Answer(200, {})
            return Answer(404, {"error": f"no such endpoint: {method} {path}"})
        except ProtocolError as err:
            logger.warning("refused %s %s: %s", method, path, err)
            return Answer(400, {"error": str(err)})
        except ImageFetchError as err:
            logger.warning("refused %s %s: %s", method, path, err)
            return Answer(422, {"error": str(err)})
        except Exception as err:   # a fault of ours: report it, keep serving
            logger.exception("error handling %s %s", method, path)
            return Answer(500, {"error": f"internal error ({type(err).__name__}: {err}); the backend keeps running"})

    def _health(self) -> Dict[str, Any]:
        return {"status": "UP", "model_class": "SkipClickBackend", "model": self.segmenter.description,
                "model_free": self.segmenter.model_free, "encodings": self.segmenter.encodings,
                "cached": self.segmenter.cached()}

    def _setup(self, request: Dict[str, Any]) -> Dict[str, Any]:
        if request.get("schema"):
            brush_targets(request["schema"])
        return {"model_version": self.model_version}

    def _predict(self, request: Dict[str, Any]) -> Dict[str, Any]:
        params = request.get("params") or {}
        context = params.get("context") if isinstance(params, dict) else None
        tasks = tasks_of(request)
        if not context:
            return {"results": [], "model_version": self.model_version}
        keypoints = read_keypoints(context)
        targets = brush_targets(request.get("label_config") or "")
        target = targets.get(keypoints.to_name)
        if target is None:
            raise ProtocolError(f"the keypoints lie on <Image name=\"{keypoints.to_name}\">, which has no "
                                f"<BrushLabels> in the labeling config (images with one: {sorted(targets)})")
        check_label(keypoints.label, target)
        url, task_id = task_image_url(tasks[0], target)

        def clicks(height: int, width: int) -> Tuple[np.ndarray, np.ndarray]:
            return keypoints.pixels(height, width), np.array(keypoints.positive, dtype=np.int64)

        outcome = self.segmenter.segment(url, lambda: self.images.load(url, task_id), clicks)
        logger.info("task %s, %d keypoints: %s%d click pass(es) %.0f ms", task_id, len(keypoints.points),
                    f"encoded in {outcome.encode_ms:.0f} ms, " if outcome.encoded else "", outcome.clicks_run,
                    outcome.clicks_ms)
        prediction = brush_result(outcome.mask, target, keypoints.label, self.model_version)
        return {"results": [prediction], "model_version": self.model_version}


def _parse_body(body: bytes) -> Dict[str, Any]:
    try:
        request = json.loads(body.decode("utf-8")) if body else None
    except (UnicodeDecodeError, ValueError) as err:
        raise ProtocolError(f"request body is not valid JSON: {err}") from None
    if not isinstance(request, dict):
        raise ProtocolError(f"request body must be a JSON object, got {type(request).__name__}")
    return request


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "skipclick-label-studio"
    server: "BackendServer"

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        refusal = self._refusal()
        if refusal is not None:
            self.close_connection = True   # the body is not read, so the connection cannot be reused
            logger.warning("refused %s %s from %s: %s", method, urlsplit(self.path).path, self.client_address[0],
                           refusal.payload["error"])
            answer = refusal
        elif not 0 <= length <= MAX_BODY:
            self.close_connection = True   # the body is not read, so the connection cannot be reused
            answer = Answer(413 if length > MAX_BODY else 400,
                            {"error": f"Content-Length {self.headers.get('Content-Length')!r}: expected 0 to "
                                      f"{MAX_BODY} bytes"})
        else:
            body = self.rfile.read(length) if length else b""
            answer = self.server.backend.handle(method, urlsplit(self.path).path, body)
        data = json.dumps(answer.payload, separators=(",", ":")).encode("utf-8")
        self.send_response(answer.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _refusal(self) -> Optional[Answer]:
        """The answer to a request the server refuses (module docstring), or None."""
        if self.headers.get("Origin") is not None:
            return Answer(403, {"error": f"requests from web pages (Origin {self.headers['Origin']!r}) are refused: "
                                         "only Label Studio's server calls its ML backend"})
        host, hosts = (self.headers.get("Host") or "").strip().lower(), self.server.hosts
        if hosts is not None and host not in hosts:
            return Answer(403, {"error": f"Host {host or '(none)'!r} is not this backend (it answers "
                                         f"{', '.join(hosts)}): connect Label Studio to {self.server.url}"})
        auth = self.server.auth
        if auth is not None and not auth.admits(self.headers.get("Authorization")):
            return Answer(401, {"error": f"{'wrong' if self.headers.get('Authorization') else 'no'} basic auth "
                                         "credentials: give the backend's user and password in Label Studio's "
                                         "Connect Model form (authentication method: Basic Authentication)"},
                          {"WWW-Authenticate": CHALLENGE})
        return None

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)


class BackendServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` serving a ``LabelStudioBackend``, to requests carrying ``auth``
    when given; without it ``host`` must be a loopback address (else ``ValueError``)."""

    daemon_threads = True

    def __init__(self, backend: LabelStudioBackend, host: str = "127.0.0.1", port: int = 9090,
                 auth: Optional[BasicAuth] = None) -> None:
        check_exposure(host, auth)
        self.backend = backend
        self.auth = auth
        super().__init__((host, port), _Handler)
        # the Host names a loopback server answers; any name on a network
        self.hosts = loopback_hosts(self.server_address[1]) if is_loopback(host) else None

    @property
    def url(self) -> str:
        return base_url(self.server_address)


@contextlib.contextmanager
def serve_in_thread(backend: LabelStudioBackend, host: str = "127.0.0.1", port: int = 0,
                    auth: Optional[BasicAuth] = None) -> Iterator[BackendServer]:
    """``backend`` served from a background thread (tests, benchmarks); port 0 takes a free one."""
    with running_in_thread(BackendServer(backend, host, port, auth), "skipclick-label-studio") as server:
        yield server
