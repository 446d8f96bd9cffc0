"""The annotation app under attack and under load, as figures: the probes of
``tests/test_app_guard.py`` (statuses, what is left of the annotation, peak RSS, threads held)
and the soak (sessions clicking at random; RSS growth). ``--repo`` points at any checkout
(``git worktree add /tmp/other COMMIT``), so one command compares two versions. The app runs
there as ``python -m isegm.app``: with the GrabCut baseline for the probes, and with the
tiny SkipClick (random weights) at 112 px on 480 x 640 images for the soak. Linux only (RSS and
threads come from ``/proc``).

    python scripts/probe_app.py --soak-seconds 20
    python scripts/probe_app.py --repo /tmp/other --soak-seconds 20
    python scripts/probe_app.py --soak-only --app-args="--undo-steps 20"
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from isegm.app.guard import TOKEN_HEADER  # noqa: E402
from isegm.cli.common import HelpFormatter  # noqa: E402
from isegm.model import build_skipclick, save_checkpoint  # noqa: E402
from test_app_api import Client, write_scene  # noqa: E402
from test_app_guard import soak, write_png  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--repo", default=str(REPO), help="checkout whose app is probed")
    p.add_argument("--soak-seconds", type=float, default=20.0, help="how long the sessions click (0: no soak)")
    p.add_argument("--sessions", type=int, default=8, help="sessions of the soak")
    p.add_argument("--stalled-wait", type=float, default=32.0,
                   help="seconds after which the stalled connections' threads are counted again")
    p.add_argument("--soak-only", action="store_true", help="only the soak, not the probes")
    p.add_argument("--app-args", default="", help="more options for the app, one string (default: none)")
    return p.parse_args()


class App:
    """``python -m isegm.app`` of ``repo`` on a free port, with the address it prints."""

    def __init__(self, repo: str, argv: List[str]) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "isegm.app", "--port", "0", *argv], cwd=repo,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        env={**os.environ, "PYTHONPATH": repo})
        lines = []
        for line in self.process.stdout:
            lines.append(line)
            if line.startswith("open http"):
                self.url = line.split()[1]
                return
        raise SystemExit("the app did not start:\n" + "".join(lines))

    def status(self, key: str) -> str:
        with open(f"/proc/{self.process.pid}/status") as status:
            return next(line.split(":", 1)[1].strip() for line in status if line.startswith(key + ":"))

    def user(self) -> Client:
        """A client as the app's page is (with the token the server hands its page, if any)."""
        client = Client(self.url)
        client.token = client.raw("GET", "/api/config")[2][TOKEN_HEADER] or ""
        return client

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def probes(repo: str, folder: Path, extra: List[str], stalled_wait: float) -> None:
    write_scene(folder / "images", "a.png", 3)
    write_scene(folder / "images", "b.png", 5)
    write_png(folder / "images" / "bomb.png", 15000, 15000)
    out = folder / "out"
    app = App(repo, ["--images", str(folder / "images"), "--out", str(out), *extra])

    def annotations() -> int:
        return len(json.loads((out / "annotations.json").read_text())["annotations"])

    try:
        owner = app.user()
        owner.post("open", image="a.png")
        owner.post("click", image="a.png", x=60, y=40, positive=True)
        owner.post("finish", image="a.png")
        owner.post("click", image="a.png", x=20, y=80, positive=True)
        owner.post("save", image="a.png")

        attacker, rebound = Client(app.url, token=""), {"Host": "attacker.example"}
        status, answer, _ = attacker.raw("POST", "/api/session", {}, rebound)
        session = answer.get("session")
        codes = [status] + [attacker.raw("POST", f"/api/{action}", {"session": session, "image": "a.png", **fields},
                                         rebound)[0]
                            for action, fields in [("open", {}), ("delete", {"object": 1}), ("delete", {"object": 2}),
                                                   ("save", {})]]
        print(f"Host: attacker.example, session/open/delete/delete/save: {codes}; annotations 2 -> {annotations()}")

        user = app.user()
        user.post("open", image="b.png")
        user.post("click", image="b.png", x=60, y=40, positive=True)
        form = {"Content-Type": "text/plain", "Origin": "http://evil.example"}
        codes = sorted({attacker.raw("POST", "/api/session", b"{}", form)[0] for _ in range(64)})
        status = user.request("POST", "/api/save", {"session": user.session, "image": "b.png"})[0]
        print(f"64 cross-site POST /api/session: {codes}; then the user's save: {status}")

        one, other = app.user(), app.user()
        for client, x in ((one, 100), (other, 110)):
            client.post("open", image="a.png")
            client.post("click", image="a.png", x=x, y=40, positive=True)
        codes = [c.request("POST", "/api/save", {"session": c.session, "image": "a.png"})[0] for c in (one, other)]
        print(f"two sessions edit a.png, both save: {codes}")

        peak = int(app.status("VmHWM").split()[0]) / 1024
        status, answer = one.request("POST", "/api/open", {"session": one.session, "image": "bomb.png"})
        print(f"open a {(folder / 'images/bomb.png').stat().st_size // 1024} KB PNG declaring 15000 x 15000: {status}, "
              f"peak RSS {peak:.0f} -> {int(app.status('VmHWM').split()[0]) / 1024:.0f} MB")

        fresh = app.user()
        fresh.post("open", image="a.png")
        nested = fresh.request("POST", "/api/click", b"[" * 100000 + b"]" * 100000)[0]
        huge = fresh.request("POST", "/api/click", b'{"session": "%s", "image": "a.png", "x": 1%s, "y": 5}'
                             % (fresh.session.encode(), b"0" * 400))[0]
        print(f"POST /api/click with JSON nested 100000 deep: {nested}; with x = 10**400: {huge}")

        port = int(app.url.split(":")[2].split("/")[0])
        stalled = [socket.create_connection(("127.0.0.1", port)) for _ in range(300)]
        time.sleep(2)
        held = app.status("Threads")
        time.sleep(stalled_wait - 2)
        print(f"300 connections that send nothing: {held} server threads after 2 s, "
              f"{app.status('Threads')} after {stalled_wait:.0f} s")
        for sock in stalled:
            sock.close()
    finally:
        app.stop()


def soak_run(repo: str, folder: Path, extra: List[str], sessions: int, seconds: float) -> None:
    images = [f"{i}.png" for i in range(sessions)]
    for i, name in enumerate(images):
        write_scene(folder / "images", name, i, size=(480, 640))
    torch.manual_seed(0)
    save_checkpoint(build_skipclick("tiny"), folder / "tiny.pth")
    app = App(repo, ["--images", str(folder / "images"), "--out", str(folder / "out"), "--checkpoint",
                     str(folder / "tiny.pth"), "--size", "112", *extra])
    try:
        result = soak(app.url, app.process.pid, images, seconds, 640, 480)
    finally:
        app.stop()
    print(f"{sessions} sessions clicking for {seconds:g} s: RSS {result['before']:.0f} -> {result['after']:.0f} MB "
          f"(+{result['after'] - result['before']:.0f} MB) over {sum(result['clicks'])} clicks; undoable steps "
          f"{result['undoable']}; errors {result['errors'][:2]}")


def main() -> None:
    args = parse_args()
    extra = shlex.split(args.app_args)
    print(f"app of {args.repo}, options {extra}, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        if not args.soak_only:
            probes(args.repo, Path(tmp) / "probes", extra, args.stalled_wait)
        if args.soak_seconds > 0:
            soak_run(args.repo, Path(tmp) / "soak", extra, args.sessions, args.soak_seconds)


if __name__ == "__main__":
    main()
