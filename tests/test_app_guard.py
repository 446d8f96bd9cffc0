"""The annotation app under attack and under faults: who may call it (Host, Origin, token), saves
over newer saves, the session limit, bounded undo, huge images, stalled connections, malformed
JSON and start-up errors. Each test is one probe: it fails on a server without the guard."""
from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
import zlib
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple
from urllib.parse import urlsplit

import numpy as np
import pytest
import torch

from conftest import REPO
from isegm.app import AnnotationApp, baseline_backend
from isegm.app.__main__ import main as app_main
from isegm.app.backend import ImageCache, ImageError
from isegm.app.guard import TOKEN_ENV, TOKEN_HEADER
from isegm.app.server import serve_in_thread
from isegm.model import build_skipclick, save_checkpoint
from test_app_api import Client, current, model_app, serving, write_scene

TOKEN = "a-long-secret-token"


@pytest.fixture(scope="module")
def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_skipclick("tiny").eval()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    images = tmp_path / "images"
    write_scene(images, "a.png", 3)
    write_scene(images, "b.png", 5)
    return images


def saved_app(folder: Path, out: Path, **kwargs: Any) -> AnnotationApp:
    """A GrabCut app whose ``a.png`` has two saved objects."""
    app = AnnotationApp(folder, out, baseline_backend("grabcut"), **kwargs)
    with serving(app) as client:
        client.post("open", image="a.png")
        client.post("click", image="a.png", x=60, y=40, positive=True)
        client.post("finish", image="a.png")
        client.post("click", image="a.png", x=20, y=80, positive=True)
        client.post("save", image="a.png")
    assert len(json.loads((out / "annotations.json").read_text())["annotations"]) == 2
    return app


@pytest.fixture
def served(folder: Path, tmp_path: Path) -> Iterator[Client]:
    with serving(saved_app(folder, tmp_path / "out")) as client:
        yield client


def host_of(client: Client) -> str:
    return urlsplit(client.url).netloc


def token_of(client: Client) -> str:
    """The token the server handed ``client`` (as it hands it to its page)."""
    if client.token is None:
        client.request("GET", "/api/config")
    return client.token


# --- access control ---

def test_a_foreign_host_cannot_delete_saved_work(served: Client, tmp_path: Path) -> None:
    """DNS rebinding: the attacker's page reaches 127.0.0.1 under its own name."""
    before = (tmp_path / "out/annotations.json").read_bytes()
    evil = {"Host": "attacker.example", TOKEN_HEADER: token_of(served)}
    status, answer, headers = served.raw("GET", "/api/config", headers={"Host": "attacker.example"})
    assert status == 403 and "attacker.example" in answer["error"] and TOKEN_HEADER not in headers
    status, answer, _ = served.raw("POST", "/api/session", {}, evil)
    assert status == 403 and "is not this server" in answer["error"]
    for action, fields in [("open", {}), ("delete", {"object": 1}), ("delete", {"object": 2}), ("save", {})]:
        status, _, _ = served.raw("POST", f"/api/{action}", {"session": "x", "image": "a.png", **fields}, evil)
        assert status == 403
    assert served.raw("GET", "/api/image?name=a.png", headers=evil)[0] == 403
    assert (tmp_path / "out/annotations.json").read_bytes() == before
    assert (tmp_path / "out/masks/a.png/object_002.png").is_file()
    port = urlsplit(served.url).port
    for name in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", f"[::1]:{port}"):
        assert served.raw("GET", "/api/config", headers={"Host": name})[0] == 200, name
    assert served.raw("GET", "/api/config", headers={"Host": f"localhost:{port + 1}"})[0] == 403


def test_other_sites_cannot_act_or_read_the_token(served: Client) -> None:
    """A cross-site form (text/plain, no custom header) or script (a foreign Origin) is refused;
    the page's own requests, which carry the token, are served."""
    form = {"Content-Type": "text/plain", "Origin": "http://evil.example"}
    status, answer, headers = served.raw("GET", "/api/config", headers={"Origin": "http://evil.example"})
    assert status == 403 and "evil.example" in answer["error"] and TOKEN_HEADER not in headers
    assert served.raw("POST", "/api/session", b"{}", form)[0] == 403
    assert served.raw("POST", "/api/session", b"{}", {"Content-Type": "text/plain"})[0] == 403   # no token
    assert served.raw("OPTIONS", "/api/session", headers={"Origin": "http://evil.example"})[0] == 403
    status, answer, _ = served.raw("POST", "/api/session", b"{}", {TOKEN_HEADER: "guessed-token-123"})
    assert status == 403 and "wrong X-SkipClick-Token" in answer["error"]
    own = {"Origin": f"http://{host_of(served)}", TOKEN_HEADER: token_of(served)}
    assert served.raw("POST", "/api/session", {}, own)[0] == 200
    assert served.raw("GET", "/", headers={"Origin": "http://evil.example"})[0] == 403
    assert served.raw("GET", "/")[0] == 200   # the page itself needs no token


def test_cross_site_requests_cannot_flush_a_users_unsaved_session(folder: Path, tmp_path: Path) -> None:
    app = AnnotationApp(folder, tmp_path / "out", baseline_backend("grabcut"), max_sessions=4)
    with serving(app) as user:
        user.post("open", image="a.png")
        user.post("click", image="a.png", x=60, y=40, positive=True)
        for _ in range(64):
            assert user.raw("POST", "/api/session", b"{}", {"Content-Type": "text/plain",
                                                               "Origin": "http://evil.example"})[0] == 403
        assert user.post("save", image="a.png")["unsaved"] == []


def test_a_network_server_needs_a_token(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    app = AnnotationApp(folder, tmp_path / "out", baseline_backend("grabcut"))
    with pytest.raises(ValueError, match="needs a token: pass --token"):
        with serve_in_thread(app, host="0.0.0.0"):
            pass
    with pytest.raises(ValueError, match="at least 8 characters"):
        with serve_in_thread(app, host="0.0.0.0", token="short"):
            pass
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    with pytest.raises(SystemExit) as stop:
        app_main(["--images", str(folder), "--out", str(tmp_path / "out"), "--host", "0.0.0.0"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --host 0.0.0.0") and TOKEN_ENV in err

    with serve_in_thread(app, host="0.0.0.0", token=TOKEN) as server:
        assert server.url.endswith(f"/?token={TOKEN}")
        url = server.url.split("?")[0]
        stranger = Client(url, token="")
        status, answer, headers = stranger.raw("GET", "/api/config")
        assert status == 403 and "missing X-SkipClick-Token" in answer["error"] and TOKEN_HEADER not in headers
        assert stranger.raw("GET", "/api/config", headers={TOKEN_HEADER: TOKEN[:-1] + "X"})[0] == 403
        # any Host is fine on a network (the token decides), but the Origin must match it
        assert stranger.raw("GET", "/api/config", headers={TOKEN_HEADER: TOKEN, "Host": "annotate.lan:1"})[0] == 200
        assert stranger.raw("GET", "/api/config", headers={TOKEN_HEADER: TOKEN, "Host": "annotate.lan:1",
                                                           "Origin": "http://evil.example"})[0] == 403
        assert stranger.raw("GET", "/api/config", headers={TOKEN_HEADER: TOKEN, "Host": "annotate.lan",
                                                           "Origin": "https://annotate.lan"})[0] == 200   # TLS proxy
        annotator = Client(url, token=TOKEN)
        annotator.post("open", image="a.png")
        assert len(current(annotator.post("click", image="a.png", x=60, y=40))["clicks"]) == 1


# --- saving over a newer save ---

def test_a_stale_save_is_refused_and_nothing_is_lost(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with serving(saved_app(folder, out)) as one:
        other = Client(one.url, token=token_of(one))
        opened = [c.post("open", image="a.png") for c in (one, other)]
        assert opened[0]["image"]["version"] == opened[1]["image"]["version"] != ""
        one.post("delete", image="a.png", object=1)
        other.post("click", image="a.png", x=100, y=20, positive=True)
        first = one.post("save", image="a.png", version=opened[0]["image"]["version"])
        assert first["image"]["version"] != opened[0]["image"]["version"]
        stored = (out / "annotations.json").read_bytes()
        refused = other.post("save", expect=409, image="a.png", version=opened[1]["image"]["version"])
        assert "'a.png'" in refused["error"] and "someone else saved" in refused["error"].lower()
        assert (out / "annotations.json").read_bytes() == stored   # the first save stands
        assert other.post("undo", image="a.png")["unsaved"] == ["a.png"]   # the work is still there
        other.post("click", image="a.png", x=100, y=20, positive=True)
        # without a version the server checks the one its session loaded: refused too
        other.post("save", expect=409, image="a.png")
        forced = other.post("save", image="a.png", force=True)
        assert len(forced["objects"]) == 3 and forced["unsaved"] == []
        # a session with nothing unsaved that opens the image again sees the newest save; one
        # with unsaved changes keeps them unless it discards them
        assert len(one.post("open", image="a.png")["objects"]) == 3 + 1   # 3 saved, 1 new empty
        one.post("delete", image="a.png", object=1)
        other.post("delete", image="a.png", object=2)
        other.post("save", image="a.png")
        assert len(one.post("open", image="a.png")["objects"]) == 3
        reloaded = one.post("open", image="a.png", discard=True)
        assert len(reloaded["objects"]) == 2 + 1 and reloaded["unsaved"] == []
        assert one.post("save", expect=400, image="a.png", version=7)["error"].startswith("'version' must be")


# --- the session limit ---

def test_sessions_with_unsaved_work_are_never_evicted(folder: Path, tmp_path: Path) -> None:
    app = AnnotationApp(folder, tmp_path / "out", baseline_backend("grabcut"), max_sessions=2)
    with serving(app) as one:
        two, idle = Client(one.url, token_of(one)), Client(one.url, token_of(one))
        idle.post("open", image="b.png")   # nothing unsaved: may be replaced
        for client in (one, two):
            client.post("open", image="a.png")
            client.post("click", image="a.png", x=60, y=40, positive=True)
        assert len(app.sessions._sessions) == 2   # the idle one made room for the second
        assert idle.post("undo", expect=404, image="b.png")["error"].startswith("unknown session")
        status, answer = one.request("POST", "/api/session", {})
        assert status == 429 and "unsaved work" in answer["error"] and "--max-sessions" in answer["error"]
        one.post("save", image="a.png")
        two.post("save", image="a.png", force=True)   # both sessions are still there
        assert one.request("POST", "/api/session", {})[0] == 200   # saved sessions make room again


# --- bounded undo ---

def test_undo_is_capped_and_exact_for_the_kept_steps(folder: Path, tmp_path: Path, tiny_model) -> None:
    clicks = [(60, 40, True), (10, 10, False), (100, 60, True), (30, 70, False), (90, 20, True)]
    masks = {}
    for cap in (50, 3):
        with serving(model_app(folder, tmp_path / f"out{cap}", tiny_model, undo_steps=cap)) as client:
            client.post("open", image="a.png")
            views = [current(client.post("click", image="a.png", x=x, y=y, positive=p)) for x, y, p in clicks]
            assert views[-1]["undoable"] == min(cap, 5)
            undone = [current(client.post("undo", image="a.png")) for _ in range(min(cap, 5))]
            masks[cap] = [v["mask"] for v in views], [u["mask"] for u in undone]
            if cap == 3:
                # the fourth undo finds nothing: the first two clicks stay, with their mask
                last = client.post("undo", image="a.png")
                assert last["message"] == "nothing to undo" and len(current(last)["clicks"]) == 2
                assert current(last)["mask"] == views[1]["mask"]
                again = current(client.post("click", image="a.png", x=100, y=60, positive=True))
                assert again["mask"] == views[2]["mask"]   # the kept state gives the same next click
    full, capped = masks[50], masks[3]
    assert capped[0] == full[0]   # the cap changes no result
    assert capped[1] == full[1][:3] == [full[0][3], full[0][2], full[0][1]]


def test_undo_states_are_compact(folder: Path, tmp_path: Path, tiny_model) -> None:
    app = model_app(folder, tmp_path / "out", tiny_model, undo_steps=4)
    with serving(app) as client:
        client.post("open", image="a.png")
        for i in range(12):
            client.post("click", image="a.png", x=10 + 9 * i, y=40, positive=i % 3 != 2)
        (session,) = app.sessions._sessions.values()
    (obj,) = session.works["a.png"].objects
    assert len(obj.steps) == 4 and obj.floor is not None and len(obj.clicks) == 12
    work_pixels = 96 * 128
    for step in obj.steps:
        prev = step._state["prev_prediction"]
        assert step.prob.dtype == np.float16 and prev.dtype == torch.float16
        assert prev.numpy().ctypes.data == step.prob.ctypes.data   # one map for both: 2 bytes a pixel
    assert sum(s.prob.nbytes for s in obj.steps) == 4 * 2 * work_pixels


# --- huge images ---

def write_png(path: Path, width: int, height: int) -> None:
    """A valid all-black 8-bit grey PNG, written row by row (no full image in memory)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer, row, parts = zlib.compressobj(6), b"\0" * (width + 1), []
    for _ in range(height):
        parts.append(packer.compress(row))
    parts.append(packer.flush())
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b""))


def test_a_huge_image_is_refused_from_its_header(folder: Path, tmp_path: Path) -> None:
    bomb = folder / "bomb.png"
    write_png(bomb, 15000, 15000)
    assert bomb.stat().st_size < 1 << 20   # 225 MP in a small file
    app = AnnotationApp(folder, tmp_path / "out", baseline_backend("grabcut"))
    reasons = dict(app.skipped)
    assert "larger than 179 MP, more than --max-pixels 40000000: downscale it" in reasons["bomb.png"]

    cache = ImageCache(folder, baseline_backend("grabcut"), max_pixels=40_000_000)
    tracemalloc.start()
    try:
        with pytest.raises(ImageError, match="more than --max-pixels 40000000"):
            cache.get("bomb.png")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 << 20, f"{peak / 2**20:.0f} MiB allocated"   # decoding would take 225 MB

    # an image replaced by a huge one after the scan: 422 on opening, the server keeps serving
    with serving(app) as client:
        write_png(folder / "b.png", 9000, 5000)
        answer = client.post("open", expect=422, image="b.png")
        assert "9000x5000 px (45 MP)" in answer["error"]
        assert client.post("open", image="a.png")["image"]["width"] == 128


def test_8k_frames_are_within_the_default_limit(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    write_png(folder / "8k.png", 7680, 4320)
    app = AnnotationApp(folder, tmp_path / "out", baseline_backend("grabcut"), max_side=64)
    assert app.names == ["8k.png"] and app.skipped == []


# --- stalled connections ---

def test_stalled_connections_are_closed(folder: Path, tmp_path: Path) -> None:
    app = AnnotationApp(folder, tmp_path / "out", baseline_backend("grabcut"))
    with serve_in_thread(app, timeout=0.5) as server:
        port = server.server_address[1]
        stalled = []
        for partial in (b"", b"GET /api/config HTTP/1.1\r\nHost: localhost", b"POST /api/session HTTP/1.1\r\n"
                        b"Host: localhost:%d\r\nContent-Length: 100\r\n\r\n{" % port):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(partial)
            stalled.append(sock)
        time.sleep(1.5)
        for sock in stalled:
            assert sock.recv(1000) == b""   # closed by the server, nothing answered
            sock.close()
        assert Client(server.url).request("GET", "/api/config")[0] == 200


# --- malformed JSON ---

@pytest.mark.parametrize("body, expect", [
    (b"[" * 100000 + b"]" * 100000, "nested too deeply"),
    (b'{"a":' * 100000 + b"1" + b"}" * 100000, "nested too deeply"),
    (b'{"image": "a.png", "x": 1' + b"0" * 400 + b', "y": 5}', "finite number"),
    (b'{"image": "a.png", "x": 5, "y": -1' + b"0" * 400 + b"}", "finite number"),
    (b'{"image": "a.png", "x": NaN, "y": 5}', "finite"),
    (b'{"image": "a.png", "x": Infinity, "y": 5}', "finite"),
    (b'{"image": "a.png", "x": 5, "y": -Infinity}', "finite"),
    (b'{"image": "a.png", "x": 1e400, "y": 5}', "finite"),
    (b'"a string"', "JSON object"),
    (b"17", "JSON object"),
    (b"null", "JSON object"),
    (b"\xff\xfe{}", "not valid JSON"),
    (b'{"image": ["a.png"], "x": 5, "y": 5}', "'image' must be"),
    (b'{"image": "a.png", "x": "5", "y": 5}', "finite number"),
    (b'{"image": "a.png", "x": true, "y": 5}', "finite number"),
    (b'{"image": "a.png", "x": 5, "y": 5, "positive": "yes"}', "true or false"),
])
def test_malformed_json_gets_400(served: Client, body: bytes, expect: str) -> None:
    served.post("open", image="a.png")
    if body.startswith(b'{"image"'):
        body = b'{"session": "' + served.session.encode() + b'", ' + body[1:]
    status, answer = served.request("POST", "/api/click", body)
    assert status == 400 and expect in answer["error"], answer
    assert len(answer["error"]) < 400


def test_wrong_types_elsewhere_get_4xx(served: Client) -> None:
    served.post("open", image="a.png")
    assert served.post("select", expect=400, image="a.png", object=1.5)["error"].startswith("'object' must be")
    assert served.post("delete", expect=404, image="a.png", object=10 ** 400)["error"].startswith("image 'a.png' has")
    assert served.post("category", expect=400, image="a.png", object=1, category=["x"])["error"].startswith(
        "'category' must be")
    assert served.post("save", expect=400, image="a.png", force="yes")["error"].startswith("'version' must be")
    status, answer = served.request("POST", "/api/open", {"session": 12, "image": "a.png"})
    assert status == 404 and "unknown session 12" in answer["error"]


# --- start-up errors ---

def test_start_up_errors_are_one_line(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    good = tmp_path / "tiny.pth"
    torch.manual_seed(0)
    save_checkpoint(build_skipclick("tiny"), good)
    data = good.read_bytes()
    cases = {"truncated.pth": data[: len(data) * 3 // 10], "empty.pth": b"",
             "random.pth": np.random.default_rng(0).bytes(4096)}
    out = str(tmp_path / "out")
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(SystemExit) as stop:
            app_main(["--images", str(folder), "--out", out, "--checkpoint", str(tmp_path / name)])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    for argv, words in [(["--images", str(tmp_path / "nowhere")], "is not a folder"),
                        (["--images", str(folder), "--checkpoint", str(tmp_path / "none.pth")], "none.pth"),
                        (["--images", str(folder), "--undo-steps", "-1"], "--undo-steps -1"),
                        (["--images", str(folder), "--max-pixels", "0"], "--max-pixels 0"),
                        (["--images", str(folder), "--timeout", "0"], "--timeout 0"),
                        (["--images", str(folder), "--token", "short"], "at least 8 characters")]:
        with pytest.raises(SystemExit) as stop:
            app_main(argv + ["--out", out])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and err.count("\n") == 1 and words in err, err


def start_app(command: List[str], env: Optional[Dict[str, str]] = None) -> Tuple[subprocess.Popen, List[str]]:
    """The app started by ``command`` and the lines it printed up to the address to open (the last)."""
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=env)
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("open http"):
            return process, lines
    process.wait(timeout=30)
    raise AssertionError("the app did not start:\n" + "".join(lines))


def test_the_start_up_line_says_how_to_connect(folder: Path, tmp_path: Path) -> None:
    """``--token`` from the environment: the printed address carries it."""
    process, lines = start_app([sys.executable, "-m", "isegm.app", "--images", str(folder), "--out",
                                str(tmp_path / "out"), "--host", "0.0.0.0", "--port", "0"],
                               {**os.environ, TOKEN_ENV: TOKEN})
    try:
        assert f"?token={TOKEN}" in lines[-1] and "token" in lines[-2], "".join(lines)
        url = lines[-1].split()[1].split("?")[0]
        assert Client(url, token=TOKEN).request("GET", "/api/config")[0] == 200
        assert Client(url, token="").raw("GET", "/api/config")[0] == 403
    finally:
        process.terminate()
        process.wait(timeout=30)


# --- bounded memory under load ---

def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` (Linux ``/proc``)."""
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


def soak(url: str, pid: int, images: List[str], seconds: float, width: int, height: int) -> Dict[str, Any]:
    """One session per image clicking at random for ``seconds``: clicks made, the server's RSS
    (MB) after each session's first click and at the end, errors."""
    first = Client(url)
    first.token = first.raw("GET", "/api/config")[2][TOKEN_HEADER] or ""
    clients = [first] + [Client(url, first.token) for _ in images[1:]]
    for client, image in zip(clients, images):
        client.post("open", image=image)
        client.post("click", image=image, x=width // 2, y=height // 2, positive=True)
    result: Dict[str, Any] = {"clicks": [0] * len(images), "errors": [], "before": rss_mb(pid)}
    deadline = time.monotonic() + seconds

    def click(i: int) -> None:
        rng = np.random.default_rng(i)
        try:
            while time.monotonic() < deadline:
                x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
                clients[i].post("click", image=images[i], x=x, y=y, positive=bool(rng.random() < 0.7))
                result["clicks"][i] += 1
        except Exception as err:   # reported by the caller, with the session
            result["errors"].append(f"session {i}: {err}")

    threads = [threading.Thread(target=click, args=(i,)) for i in range(len(images))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result["after"] = rss_mb(pid)
    result["undoable"] = [current(c.post("undo", image=i))["undoable"] for c, i in zip(clients, images)]
    return result


SOAK_SESSIONS, SOAK_SECONDS, SOAK_UNDO, SOAK_BOUND_MB = 8, 10.0, 20, 250


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc (Linux)")
def test_soak_many_sessions_clicking_keep_memory_bounded(tmp_path: Path) -> None:
    """``skipclick-app`` with the tiny model: 8 sessions click one 480 x 640 image each for 10 s
    (undo capped at 20); the server's RSS grows by less than 250 MB. What the sessions hold is
    8 x 20 steps x 0.6 MB (a float16 map of 0.3 M working pixels) = 98 MB; without the cap and
    the compact states each click kept 1.8 MB: 1.7 GB in 20 s (over 550 clicks)."""
    folder = tmp_path / "images"
    images = [f"{i}.png" for i in range(SOAK_SESSIONS)]
    for i, name in enumerate(images):
        write_scene(folder, name, i, size=(480, 640))
    torch.manual_seed(0)
    save_checkpoint(build_skipclick("tiny"), tmp_path / "tiny.pth")
    process, lines = start_app([sys.executable, "-m", "isegm.app", "--images", str(folder), "--out",
                                str(tmp_path / "out"), "--checkpoint", str(tmp_path / "tiny.pth"), "--size", "112",
                                "--undo-steps", str(SOAK_UNDO), "--max-sessions", str(SOAK_SESSIONS), "--port", "0"])
    try:
        result = soak(lines[-1].split()[1], process.pid, images, SOAK_SECONDS, 640, 480)
    finally:
        process.terminate()
        process.wait(timeout=30)
    growth = result["after"] - result["before"]
    assert not result["errors"], result["errors"]
    assert min(result["clicks"]) > SOAK_UNDO, result   # every session went past the cap
    assert result["undoable"] == [SOAK_UNDO - 1] * SOAK_SESSIONS
    assert growth < SOAK_BOUND_MB, f"RSS grew {growth:.0f} MB over {sum(result['clicks'])} clicks"
