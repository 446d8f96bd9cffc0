"""Running the HTTP servers (the annotation app, the Label Studio backend): their address, in the
foreground until Ctrl-C, or from a background thread (tests, benchmarks, notebooks)."""
from __future__ import annotations

import contextlib
import socketserver
import threading
from typing import Iterator, Tuple, TypeVar

Server = TypeVar("Server", bound=socketserver.BaseServer)


def base_url(address: Tuple) -> str:
    """``http://name:port`` of a listening ``server_address`` (``localhost`` for 127.0.0.1 and
    every-address binds, IPv6 addresses in brackets)."""
    host, port = address[:2]
    name = "localhost" if host in ("127.0.0.1", "0.0.0.0", "") else f"[{host}]" if ":" in host else host
    return f"http://{name}:{port}"


def serve_until_interrupted(server: socketserver.BaseServer) -> None:
    """Serve in this thread until Ctrl-C, then close the socket."""
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@contextlib.contextmanager
def running_in_thread(server: Server, name: str) -> Iterator[Server]:
    """``server`` served from a daemon thread named ``name`` while the block runs; stopped and
    closed when it ends."""
    thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
