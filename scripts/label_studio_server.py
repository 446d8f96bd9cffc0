"""A real Label Studio server for the backend's tests and latency benchmark: started on
127.0.0.1 with a temporary data folder (SQLite), a user and an API token, driven through its
REST API with the standard library.

The ``label-studio`` command lives in its own environment (it is no dependency of skipclick):
``SKIPCLICK_LABEL_STUDIO`` names it, e.g. ``/opt/lsvenv/bin/label-studio``. Label Studio 1.23
disables legacy API tokens for new organisations; ``LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true``
enables them, so that the token given in ``LABEL_STUDIO_USER_TOKEN`` works as
``Authorization: Token ...`` (what the backend's ``LABEL_STUDIO_API_KEY`` sends too).
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

ENV = "SKIPCLICK_LABEL_STUDIO"
EMAIL = "annotator@example.com"
# The first start creates the database (migrations): about a minute on 2 CPU cores.
START_TIMEOUT = 600.0


def binary() -> Optional[str]:
    """The ``label-studio`` command named by ``SKIPCLICK_LABEL_STUDIO`` (None when unset)."""
    name = os.environ.get(ENV)
    return shutil.which(name) if name else None


def missing() -> Optional[str]:
    """Why Label Studio cannot run here (None when it can)."""
    name = os.environ.get(ENV)
    if not name:
        return (f"{ENV} is not set; install Label Studio in its own environment (python -m venv ls && "
                f"ls/bin/pip install label-studio) and set {ENV}=ls/bin/label-studio")
    if binary() is None:
        return f"{ENV}={name!r} is not an executable label-studio command"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LabelStudio:
    """A running server: ``url``, the user's ``email`` / ``password`` / ``token``, and its API."""

    def __init__(self, url: str, email: str, password: str, token: str) -> None:
        self.url, self.email, self.password, self.token = url, email, password, token

    def request(self, method: str, path: str, payload: Any = None, body: Optional[bytes] = None,
                content_type: str = "application/json", timeout: float = 300.0) -> Any:
        """The JSON answer of ``method path`` (a ``RuntimeError`` with the server's answer on failure)."""
        data = body if body is not None else (json.dumps(payload).encode() if payload is not None else None)
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Authorization": f"Token {self.token}", "Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                text = response.read()
        except urllib.error.HTTPError as err:
            raise RuntimeError(f"Label Studio {method} {path}: HTTP {err.code}: {err.read()[:2000]!r}") from None
        return json.loads(text) if text else None

    def create_project(self, title: str, label_config: str) -> int:
        return self.request("POST", "/api/projects", {"title": title, "label_config": label_config})["id"]

    def upload(self, project: int, path: Path) -> List[int]:
        """Import an image file into ``project`` (as the UI's upload does); the new task ids."""
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{path.name}\"\r\n"
                f"Content-Type: application/octet-stream\r\n\r\n").encode() + path.read_bytes() + \
            f"\r\n--{boundary}--\r\n".encode()
        self.request("POST", f"/api/projects/{project}/import", body=body,
                     content_type=f"multipart/form-data; boundary={boundary}")
        return [task["id"] for task in self.request("GET", f"/api/tasks?project={project}")["tasks"]]

    def connect_backend(self, project: int, url: str, title: str = "skipclick",
                        basic_auth: Optional[Tuple[str, str]] = None) -> int:
        """Connect an ML backend with interactive pre-annotations, with ``basic_auth`` (user,
        password) when given, as the Connect Model form does; its id (Label Studio calls
        ``/health`` and ``/setup`` now)."""
        auth: Dict[str, Any] = {"auth_method": "NONE"}
        if basic_auth is not None:
            auth = {"auth_method": "BASIC_AUTH", "basic_auth_user": basic_auth[0], "basic_auth_pass": basic_auth[1]}
        return self.request("POST", "/api/ml", {"project": project, "url": url, "title": title,
                                                "is_interactive": True, **auth})["id"]

    def interactive(self, backend: int, task: int, regions: List[Dict[str, Any]]) -> Dict[str, Any]:
        """What the labeling page gets for smart keypoints ``regions``: ``{"data": prediction}``
        or ``{"errors": [...]}``."""
        return self.request("POST", f"/api/ml/{backend}/interactive-annotating",
                            {"task": task, "context": {"result": regions}})


@contextlib.contextmanager
def label_studio(log: Optional[Path] = None) -> Iterator[LabelStudio]:
    """A fresh Label Studio (``missing()`` must be None) on a free port of 127.0.0.1, stopped on exit."""
    command = binary()
    if command is None:
        raise RuntimeError(f"cannot start Label Studio: {missing()}")
    port, password, token = free_port(), secrets.token_hex(8), secrets.token_hex(20)
    with tempfile.TemporaryDirectory(prefix="label-studio-") as data:
        env = {**os.environ, "LABEL_STUDIO_USERNAME": EMAIL, "LABEL_STUDIO_PASSWORD": password,
               "LABEL_STUDIO_USER_TOKEN": token, "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
               "LABEL_STUDIO_BASE_DATA_DIR": data, "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
               "COLLECT_ANALYTICS": "false", "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": ""}
        output = open(log or os.devnull, "w")
        process = subprocess.Popen([command, "start", "--no-browser", "--internal-host", "127.0.0.1",
                                    "--port", str(port), "--data-dir", data],
                                   env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        server = LabelStudio(f"http://127.0.0.1:{port}", EMAIL, password, token)
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"Label Studio exited with status {process.returncode} while starting"
                                       + (f"; see {log}" if log else ""))
                try:
                    server.request("GET", "/api/current-user/whoami", timeout=5)
                    break
                except (RuntimeError, OSError):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"Label Studio did not answer within {START_TIMEOUT:.0f} s") from None
                    time.sleep(2)
            yield server
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            output.close()
