"""What the servers (the annotation app, the Label Studio backend) share to decide who may talk
to them: whether an address serves only this machine and the names it goes by, and secrets
compared in constant time."""
from __future__ import annotations

import hmac
import ipaddress
from typing import Tuple

# The shortest secret (token, password) a server accepts when given at start.
MIN_SECRET_LENGTH = 8


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) only serves this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def loopback_hosts(port: int) -> Tuple[str, ...]:
    """The ``Host`` header values that name a server on a loopback address at ``port`` (a
    browser leaves out port 80). A page of another site that rebinds its DNS name to 127.0.0.1
    sends its own name, so a loopback server answering only these cannot be reached that way."""
    names = ("127.0.0.1", "localhost", "[::1]")
    return tuple(f"{name}:{port}" for name in names) + (names if port == 80 else ())


def same_secret(sent: str, expected: str) -> bool:
    """Whether ``sent`` equals ``expected``, compared with ``hmac.compare_digest`` (the time
    taken does not tell how much of it matched)."""
    return hmac.compare_digest(sent.encode("utf-8", "replace"), expected.encode("utf-8"))
