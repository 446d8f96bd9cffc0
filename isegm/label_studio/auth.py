"""HTTP basic authentication of the backend, as Label Studio's model connection offers it.

Label Studio (Connect Model: "Select authentication method" Basic Authentication, "Basic auth
user", "Basic auth pass") sends ``Authorization: Basic ...`` with every request to the backend,
its health check included; the label-studio-ml SDK checks every request and reads the
credentials from ``BASIC_AUTH_USER`` and ``BASIC_AUTH_PASS``, and so does this backend. A
backend reachable from other machines (``--host`` not a loopback address) must have them.
"""
from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Mapping, Optional

from ..utils.access import MIN_SECRET_LENGTH, is_loopback, same_secret

USER_ENV = "BASIC_AUTH_USER"
PASS_ENV = "BASIC_AUTH_PASS"
HOW = (f"pass --basic-auth USER:PASS or set {USER_ENV} and {PASS_ENV}, and enter the same user and password in "
       "Label Studio's Connect Model form (authentication method: Basic Authentication)")
# The WWW-Authenticate header of a 401 answer (RFC 7617).
CHALLENGE = 'Basic realm="skipclick-label-studio", charset="UTF-8"'


@dataclass(frozen=True)
class BasicAuth:
    """The user and password every request must carry."""

    user: str
    password: str = field(repr=False)

    def __post_init__(self) -> None:
        if not self.user or ":" in self.user or not self.user.isprintable():
            raise ValueError(f"basic auth user {self.user!r}: give a non-empty name without ':' ({HOW})")
        if len(self.password) < MIN_SECRET_LENGTH or not self.password.isprintable():
            raise ValueError(f"the basic auth password must have at least {MIN_SECRET_LENGTH} printable characters; "
                             "use a long random one (python -c 'import secrets; print(secrets.token_urlsafe())')")

    @classmethod
    def parse(cls, spec: str) -> "BasicAuth":
        """``USER:PASS`` (the password may contain ':')."""
        user, colon, password = spec.partition(":")
        if not colon:
            raise ValueError(f"--basic-auth expects USER:PASS, got no ':' ({HOW})")
        return cls(user, password)

    def admits(self, authorization: Optional[str]) -> bool:
        """Whether an ``Authorization`` header value carries these credentials."""
        scheme, _, encoded = (authorization or "").strip().partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            raw = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        try:
            sent = raw.decode("utf-8")
        except UnicodeDecodeError:   # Label Studio (requests) encodes the credentials in Latin-1
            sent = raw.decode("latin-1")
        # one comparison of the whole pair: the time taken does not tell whether the user was right
        return same_secret(sent, f"{self.user}:{self.password}")


def basic_auth_from(spec: Optional[str], environ: Mapping[str, str]) -> Optional[BasicAuth]:
    """The credentials of ``--basic-auth`` (``spec``), else of ``BASIC_AUTH_USER`` and
    ``BASIC_AUTH_PASS`` in ``environ`` (both or neither), else None."""
    if spec is not None:
        return BasicAuth.parse(spec)
    user, password = environ.get(USER_ENV) or None, environ.get(PASS_ENV) or None
    if (user is None) != (password is None):
        given, lacking = (USER_ENV, PASS_ENV) if user is not None else (PASS_ENV, USER_ENV)
        raise ValueError(f"{given} is set but {lacking} is not: set both for basic auth, or unset {given}")
    return BasicAuth(user, password) if user is not None else None


def check_exposure(host: str, auth: Optional[BasicAuth]) -> None:
    """Refuse to serve other machines without credentials: a ``ValueError`` naming the fix."""
    if auth is None and not is_loopback(host):
        raise ValueError(f"--host {host} serves other machines, so the backend needs basic auth: {HOW}")
