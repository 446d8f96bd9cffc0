"""Who may talk to the annotation server: the ``Host`` and ``Origin`` checks and the token.

* Bound to a loopback address (the default, 127.0.0.1), the server answers only requests whose
  ``Host`` names it (``127.0.0.1:PORT``, ``localhost:PORT``, ``[::1]:PORT``): a page of another
  site that rebinds its DNS name to 127.0.0.1 sends its own name and is refused.
* A request with an ``Origin`` header must come from the page's own origin (``http://`` + its
  ``Host``, or ``https://`` behind a TLS proxy): another site's scripts and forms are refused.
* Every ``/api/`` request but ``GET /api/config`` carries the token in the ``X-SkipClick-Token``
  header, which neither a cross-site form nor an image tag can send. Without a token given at
  start the server makes a random one per start and ``GET /api/config`` hands it to its own
  page (the checks above keep other sites from reading it). With a token given at start
  (``--token`` or ``SKIPCLICK_APP_TOKEN``; required on any other ``--host``), ``GET /api/config``
  needs it too: the page takes it from ``?token=`` in the address printed at start, or asks.

Tokens are compared in constant time (``isegm.utils.access.same_secret``).
"""
from __future__ import annotations

import secrets
from typing import Mapping, Optional, Tuple

from ..utils.access import MIN_SECRET_LENGTH, is_loopback, loopback_hosts, same_secret

TOKEN_HEADER = "X-SkipClick-Token"
TOKEN_ENV = "SKIPCLICK_APP_TOKEN"


class AccessDenied(Exception):
    """A request the guard refuses (HTTP 403); the message says why and what to do."""


def check_token(token: str) -> str:
    """``token`` as given at start, or ``ValueError`` when it is too short to protect anything."""
    if len(token) < MIN_SECRET_LENGTH or token != token.strip():
        raise ValueError(f"the app token must have at least {MIN_SECRET_LENGTH} characters and no surrounding "
                         f"spaces; pass a long random one with --token or {TOKEN_ENV} "
                         "(python -c 'import secrets; print(secrets.token_urlsafe())')")
    return token


class Guard:
    """The access rules of one server: bound to ``host``:``port``, with ``token`` given at start
    (None: a random one, only allowed on loopback, which the page receives from /api/config)."""

    def __init__(self, host: str, port: int, token: Optional[str] = None) -> None:
        self.loopback = is_loopback(host)
        if token is None and not self.loopback:
            raise ValueError(f"--host {host} serves other machines, so the app needs a token: pass --token TOKEN or "
                             f"set {TOKEN_ENV} (annotators open the address printed at start, which carries it)")
        self.given = token is not None
        self.token = check_token(token) if token is not None else secrets.token_urlsafe(32)
        # any name on a network
        self.hosts: Optional[Tuple[str, ...]] = loopback_hosts(port) if self.loopback else None

    def check(self, method: str, path: str, headers: Mapping[str, str]) -> None:
        """Raise ``AccessDenied`` unless this request may be served."""
        host = (headers.get("Host") or "").strip().lower()
        if self.hosts is not None and host not in self.hosts:
            raise AccessDenied(f"Host {host or '(none)'!r} is not this server (it answers {', '.join(self.hosts)}); "
                               "open the address printed at start")
        origin = headers.get("Origin")
        if origin is not None and origin.strip().lower() not in (f"http://{host}", f"https://{host}"):
            raise AccessDenied(f"requests from the page of {origin!r} are refused: only the app's own page "
                               f"(http://{host}) may call it")
        if path.startswith("/api/") and not (method == "GET" and path == "/api/config" and not self.given):
            sent = headers.get(TOKEN_HEADER) or ""
            if not same_secret(sent, self.token):
                raise AccessDenied(f"{'wrong' if sent else 'missing'} {TOKEN_HEADER} header: open the address "
                                   "printed at start (it carries the token) or enter the token the app was "
                                   "started with")

    def page_token(self) -> Optional[str]:
        """The token ``GET /api/config`` hands to the page: the random one; never one given at start."""
        return None if self.given else self.token
