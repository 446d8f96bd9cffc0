"""The Label Studio ML backend without Label Studio: brush RLE, the ``/predict`` protocol with a
context as Label Studio sends it (masks equal to ``Predictor``'s, the feature cache), basic auth,
image sources and every bad input. ``test_label_studio_server.py`` runs it against a real server."""
from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import json
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import pytest
import torch

from conftest import REPO
from isegm import Predictor
from isegm.data.scenes import render_scene
from isegm.label_studio.auth import BasicAuth, basic_auth_from
from isegm.label_studio.images import ImageFetchError, ImageSource, decode_image
from isegm.label_studio.protocol import ProtocolError, brush_targets, read_keypoints
from isegm.label_studio.rle import RleError, mask_to_rle, rle_to_mask, rle_to_rgba
from isegm.label_studio.segmenter import BaselinePredictor, Segmenter, load_segmenter
from isegm.label_studio.server import BackendServer, LabelStudioBackend, serve_in_thread
from isegm.model import build_skipclick, save_checkpoint

SIZE = 112   # the tiny model's input side (8 px patches): fast on a CPU
DOCS = REPO / "docs" / "label-studio.md"


def docs_config() -> str:
    """The labeling config of docs/label-studio.md (its xml block), which the tests use."""
    match = re.search(r"```xml\n(.*?)```", DOCS.read_text(), re.S)
    assert match, f"{DOCS} has no ```xml block with the labeling config"
    return match.group(1)


def keypoint(x_px: float, y_px: float, shape: Tuple[int, int], positive: bool = True, label: str = "athlete",
             to_name: str = "image", from_name: str = "click") -> Dict[str, Any]:
    """A smart keypoint region as Label Studio sends it, at the centre of pixel (x_px, y_px)."""
    height, width = shape
    return {"id": f"k{x_px}_{y_px}", "type": "keypointlabels", "from_name": from_name, "to_name": to_name,
            "original_width": width, "original_height": height, "image_rotation": 0, "origin": "manual",
            "is_positive": positive,
            "value": {"x": (x_px + 0.5) / width * 100, "y": (y_px + 0.5) / height * 100, "width": 0.6,
                      "keypointlabels": [label]}}


def predict_request(url: str, regions: Sequence[Dict[str, Any]], config: Optional[str] = None) -> Dict[str, Any]:
    """A ``/predict`` body as Label Studio 1.23 sends it for an interactive request."""
    return {"tasks": [{"id": 7, "data": {"image": url}, "annotations": [], "predictions": [], "drafts": []}],
            "project": "1.1764800000", "label_config": config or docs_config(),
            "params": {"login": None, "password": None, "context": {"result": list(regions)}}}


def basic(user: str, password: str, encoding: str = "utf-8") -> Dict[str, str]:
    """The ``Authorization`` header of basic auth, the credentials in ``encoding``."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode(encoding)).decode()}


def call(url: str, payload: Any = None, raw: Optional[bytes] = None, headers: Optional[Dict[str, str]] = None
         ) -> Tuple[int, Dict[str, Any], Any]:
    """Status, headers and JSON answer of a GET (no ``payload`` nor ``raw``) or POST."""
    data = raw if raw is not None else (json.dumps(payload).encode() if payload is not None else None)
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read())


def post(url: str, payload: Any, raw: Optional[bytes] = None) -> Tuple[int, Dict[str, Any]]:
    status, _, answer = call(url, payload, raw)
    return status, answer


def get(url: str, headers: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    status, _, answer = call(url, headers=headers)
    assert status == 200, (status, answer)
    return answer


@contextlib.contextmanager
def file_server(folder: Path, seen: Optional[List[Dict[str, str]]] = None) -> Iterator[str]:
    """``folder`` over http on a free port (the request headers go to ``seen``)."""
    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            if seen is not None:
                seen.append(dict(self.headers))
            super().do_GET()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Tuple[np.ndarray, Path]:
    """A winter scene (90 x 130) written as PNG, and its folder."""
    image = render_scene(seed=3, size=(90, 130), framing="close").image
    folder = tmp_path_factory.mktemp("images")
    cv2.imwrite(str(folder / "scene.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    (folder / "notes.txt").write_text("not an image")
    return image, folder


@pytest.fixture(scope="module")
def tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_skipclick("tiny").eval()


# --- brush RLE ---

@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (64, 48), (200, 333)])
def test_rle_round_trip(shape: Tuple[int, int]) -> None:
    rng = np.random.default_rng(shape[0])
    for mask in (rng.random(shape) > 0.5, np.zeros(shape, bool), np.ones(shape, bool)):
        rle = mask_to_rle(mask)
        assert all(isinstance(b, int) and 0 <= b <= 255 for b in rle)
        assert np.array_equal(rle_to_mask(rle, *shape), mask)
        rgba = rle_to_rgba(rle).reshape(*shape, 4)
        assert np.array_equal(rgba, np.repeat(mask[..., None] * np.uint8(255), 4, axis=2))


def test_rle_long_runs_and_literal_chunks() -> None:
    """Runs longer than one chunk holds (2**16 values), and the literal chunks Label Studio's
    brush writes: a hand-made stream of 5 values, literal [1, 2, 3] then a run of two 9s."""
    mask = np.zeros((300, 400), bool)
    mask[100:250, 20:390] = True
    assert np.array_equal(rle_to_mask(mask_to_rle(mask), 300, 400), mask)
    bits = f"{5:032b}{7:05b}" + "".join(f"{b - 1:04b}" for b in (3, 4, 8, 16))
    bits += "0" + "00" + f"{2:03b}" + "".join(f"{v:08b}" for v in (1, 2, 3)) + "1" + "00" + f"{1:03b}" + f"{9:08b}"
    bits += "0" * (-len(bits) % 8)
    assert rle_to_rgba(list(int(bits, 2).to_bytes(len(bits) // 8, "big"))).tolist() == [1, 2, 3, 9, 9]


def test_rle_errors() -> None:
    rle = mask_to_rle(np.ones((4, 4), bool))
    with pytest.raises(RleError, match="another size"):
        rle_to_mask(rle, 4, 5)
    with pytest.raises(RleError, match="truncated"):
        rle_to_rgba(rle[:5])
    with pytest.raises(RleError, match="byte values"):
        rle_to_rgba([0, 300])


# --- the protocol ---

def test_docs_config_targets() -> None:
    (target,) = brush_targets(docs_config()).values()
    assert (target.to_name, target.data_key) == ("image", "image")
    assert set(target.labels) == {"athlete", "skis", "poles", "board", "gate"}


def test_predict_equals_predictor_and_caches_features(scene, tiny) -> None:
    """Keypoints one at a time, as Label Studio sends them (all of the object's so far): the
    masks equal ``Predictor``'s for the same clicks with the previous logits passed back, the
    image is encoded once, and a later keypoint runs one click pass."""
    image, folder = scene
    shape = image.shape[:2]
    clicks = [(60, 40, True), (75, 52, True), (20, 15, False)]
    expected, previous = [], None
    predictor = Predictor(tiny, device="cpu", size=SIZE)
    predictor.set_image(image)
    for n in range(1, 4):
        mask, previous = predictor.predict([[x, y] for x, y, _ in clicks[:n]], [int(p) for *_, p in clicks[:n]],
                                           mask_input=previous)
        expected.append(mask)
    assert len({int(m.sum()) for m in expected}) > 1, "the clicks should change the mask"

    segmenter = Segmenter(lambda: Predictor(tiny, device="cpu", size=SIZE), "tiny SkipClick")
    backend = LabelStudioBackend(segmenter, ImageSource())
    with file_server(folder) as images, serve_in_thread(backend) as server:
        url = f"{images}/scene.png"
        assert get(server.url + "/health")["status"] == "UP"
        status, answer = post(server.url + "/setup", {"project": "1.1", "schema": docs_config()})
        assert status == 200 and answer["model_version"] == "tiny SkipClick"
        regions = []
        for n, (x, y, positive) in enumerate(clicks, 1):
            regions.append(keypoint(x, y, shape, positive, label="skis"))
            status, answer = post(server.url + "/predict", predict_request(url, regions))
            assert status == 200, answer
            (prediction,) = answer["results"]
            (region,) = prediction["result"]
            assert (region["type"], region["from_name"], region["to_name"]) == ("brushlabels", "mask", "image")
            assert (region["original_height"], region["original_width"]) == shape
            assert region["value"]["brushlabels"] == ["skis"] and region["value"]["format"] == "rle"
            assert np.array_equal(rle_to_mask(region["value"]["rle"], *shape), expected[n - 1]), f"keypoint {n}"
            assert get(server.url + "/health")["encodings"] == 1   # the later keypoints reuse the encoding
        # Without a context (pre-annotation of a whole task) there is nothing to click on.
        status, answer = post(server.url + "/predict", {**predict_request(url, regions), "params": {}})
        assert status == 200 and answer["results"] == []

    # A backend that lost the earlier outputs replays the clicks: the same mask.
    fresh = Segmenter(lambda: Predictor(tiny, device="cpu", size=SIZE), "tiny")
    coords = np.array([[x, y] for x, y, _ in clicks], float)
    outcome = fresh.segment("k", lambda: image, lambda h, w: (coords, np.array([1, 1, 0])))
    assert outcome.encoded and outcome.clicks_run == 3 and np.array_equal(outcome.mask, expected[2])
    again = fresh.segment("k", lambda: image, lambda h, w: (coords, np.array([1, 1, 0])))
    assert not again.encoded and again.clicks_run == 1 and np.array_equal(again.mask, expected[2])


def test_feature_cache_is_bounded(scene, tiny) -> None:
    image, _ = scene
    segmenter = Segmenter(lambda: Predictor(tiny, device="cpu", size=SIZE), "tiny", capacity=2)
    one = lambda h, w: (np.array([[10.0, 10.0]]), np.array([1]))   # noqa: E731
    for key in ("a", "b", "a", "c", "a", "b"):
        segmenter.segment(key, lambda: image, one)
    # a, b encoded; a hit; c evicts b; a hit; b again (evicted): 4 encodings, 2 kept.
    assert segmenter.encodings == 4 and segmenter.cached() == 2


def test_baseline_and_checkpoint_choices(scene, tiny, tmp_path: Path) -> None:
    image, _ = scene
    baseline = load_segmenter(None)
    assert baseline.model_free and "model-free grabcut" in baseline.description
    coords, labels = np.array([[60.0, 40.0]]), np.array([1])
    mask = baseline.segment("x", lambda: image, lambda h, w: (coords, labels)).mask
    direct = BaselinePredictor("grabcut")
    direct.set_image(image)
    assert mask.any() and np.array_equal(mask, direct.predict(coords, labels)[0])

    path = tmp_path / "tiny.pth"
    save_checkpoint(tiny, path)
    from_file = load_segmenter(str(path), "cpu", size=SIZE)
    assert "tiny.pth" in from_file.description and not from_file.model_free
    predictor = Predictor(tiny, device="cpu", size=SIZE)
    predictor.set_image(image)
    got = from_file.segment("x", lambda: image, lambda h, w: (coords, labels)).mask
    assert np.array_equal(got, predictor.predict(coords, labels)[0])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_segmenter(str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="unknown baseline"):
        load_segmenter(None, baseline="nope")


BAD_CONTEXTS = [
    ({"result": []}, "no 'result' list"),
    ({"result": [{"type": "rectanglelabels", "value": {}}]}, "smart keypoints"),
    ({"result": [{"type": "keypointlabels", "value": {"x": 120, "y": 5, "keypointlabels": ["athlete"]}}]},
     r"value.x = 120"),
    ({"result": [{"type": "keypointlabels", "value": {"x": "a", "y": 5, "keypointlabels": ["athlete"]}}]},
     r"value.x = 'a'"),
    ({"result": [{"type": "keypointlabels", "value": {"x": 5, "y": 5}}]}, "no label"),
    ({"result": ["x"]}, r"result\[0\] must be an object"),
]


@pytest.mark.parametrize("context, message", BAD_CONTEXTS)
def test_bad_contexts(context: Any, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        read_keypoints(context)


def test_bad_requests_answer_errors_and_the_server_keeps_running(scene, tmp_path: Path) -> None:
    image, folder = scene
    shape = image.shape[:2]
    (folder / "big.png").exists() or cv2.imwrite(str(folder / "big.png"), np.zeros((400, 300, 3), np.uint8))
    segmenter = load_segmenter(None)
    backend = LabelStudioBackend(segmenter, ImageSource(max_pixels=100_000, timeout=5))
    good = [keypoint(60, 40, shape)]
    with file_server(folder) as images, serve_in_thread(backend) as server:
        cases = [
            (post(server.url + "/predict", None, raw=b"{nope"), 400, "not valid JSON"),
            (post(server.url + "/predict", [1, 2]), 400, "must be a JSON object"),
            (post(server.url + "/predict", {"params": {"context": {"result": good}}}), 400, "no 'tasks'"),
            (post(server.url + "/predict", predict_request(f"{images}/scene.png",
                                                           [keypoint(60, 40, shape, label="cat")])),
             400, "'cat' is not a label"),
            (post(server.url + "/predict", predict_request(f"{images}/scene.png", good, config="<View>")),
             400, "not valid XML"),
            (post(server.url + "/predict", predict_request(f"{images}/scene.png", good, config="<View/>")),
             400, "no <BrushLabels>"),
            (post(server.url + "/setup", {"schema": "<View><Image name='i' value='$i'/></View>"}), 400,
             "no <BrushLabels>"),
            (post(server.url + "/predict", predict_request(f"{images}/missing.png", good)), 422, "HTTP 404"),
            (post(server.url + "/predict", predict_request(f"{images}/notes.txt", good)), 422, "is not an image"),
            (post(server.url + "/predict", predict_request(f"{images}/big.png", good)), 422, "over the limit"),
            (post(server.url + "/predict", predict_request("ftp://host/a.png", good)), 422, "scheme 'ftp'"),
            (post(server.url + "/predict", predict_request("/data/upload/1/a.png", good)), 422, "LABEL_STUDIO_URL"),
            (post(server.url + "/predict", predict_request("http://127.0.0.1:9/a.png", good)), 422, "cannot fetch"),
            (post(server.url + "/nothing", {}), 404, "no such endpoint"),
        ]
        for (status, answer), want_status, message in cases:
            assert status == want_status and message in answer["error"], (status, answer)
        status, answer = post(server.url + "/predict", predict_request(f"{images}/scene.png", good))
        assert status == 200 and answer["results"][0]["result"][0]["value"]["rle"]


USER, PASSWORD = "annotator", "pässwort: long enough"


def test_basic_auth(scene) -> None:
    """With basic auth every request, the health check included, needs the credentials (in UTF-8,
    or in Latin-1 as Label Studio's requests library sends them): 401 with a challenge otherwise,
    and the server keeps serving."""
    image, folder = scene
    backend = LabelStudioBackend(load_segmenter(None), ImageSource())
    right = basic(USER, PASSWORD)
    with file_server(folder) as images, serve_in_thread(backend, auth=BasicAuth(USER, PASSWORD)) as server:
        body = predict_request(f"{images}/scene.png", [keypoint(60, 40, image.shape[:2])])
        refused = [
            call(server.url + "/health"),
            call(server.url + "/", headers=basic(USER, PASSWORD[:-1])),
            call(server.url + "/health", headers=basic("someone", PASSWORD)),
            call(server.url + "/health", headers=basic(USER, PASSWORD + "x")),
            call(server.url + "/health", headers={"Authorization": "Basic !!not base64"}),
            call(server.url + "/health", headers={"Authorization": f"Bearer {PASSWORD}"}),
            call(server.url + "/setup", {"project": "1.1", "schema": docs_config()}),
            call(server.url + "/predict", body, headers=basic(USER, "wrong password")),
            call(server.url + "/nothing", {}),
        ]
        for status, headers, answer in refused:
            assert status == 401 and headers["WWW-Authenticate"].startswith("Basic realm="), (status, headers)
            assert "basic auth" in answer["error"] and "model" not in answer
        assert backend.segmenter.encodings == 0
        assert get(server.url + "/health", right)["status"] == "UP"
        assert get(server.url + "/health", basic(USER, PASSWORD, "latin-1"))["status"] == "UP"
        status, _, answer = call(server.url + "/setup", {"project": "1.1", "schema": docs_config()}, headers=right)
        assert status == 200 and answer["model_version"] == backend.model_version
        status, _, answer = call(server.url + "/predict", body, headers=right)
        assert status == 200 and answer["results"][0]["result"][0]["type"] == "brushlabels"
    # Off loopback the server needs credentials; it refuses before listening.
    with pytest.raises(ValueError, match="--host 0.0.0.0 serves other machines.*--basic-auth USER:PASS.*"
                                         "BASIC_AUTH_USER and BASIC_AUTH_PASS"):
        BackendServer(backend, "0.0.0.0", 0)


def test_web_pages_and_other_hosts_are_refused(scene) -> None:
    """Only Label Studio's server calls the backend: a request with an ``Origin`` (a web page's) is
    refused, and on loopback one with another ``Host`` (a DNS-rebinding page's); nothing runs."""
    image, folder = scene
    backend = LabelStudioBackend(load_segmenter(None), ImageSource())
    with file_server(folder) as images, serve_in_thread(backend) as server:
        port = server.server_address[1]
        body = predict_request(f"{images}/scene.png", [keypoint(60, 40, image.shape[:2])])
        cases = [
            (call(server.url + "/predict", body, headers={"Origin": "http://evil.example"}), "web pages"),
            (call(server.url + "/predict", body, headers={"Origin": f"http://localhost:{port}"}), "web pages"),
            (call(server.url + "/predict", body, headers={"Host": f"evil.example:{port}"}), "is not this backend"),
            (call(server.url + "/health", headers={"Host": f"localhost:{port + 1}"}), "is not this backend"),
        ]
        for (status, _, answer), message in cases:
            assert status == 403 and message in answer["error"], (status, answer)
        assert backend.segmenter.encodings == 0
        for host in (f"127.0.0.1:{port}", f"LOCALHOST:{port}"):
            status, _, answer = call(server.url + "/predict", body, headers={"Host": host})
            assert status == 200 and answer["results"], (host, answer)


def test_basic_auth_settings() -> None:
    assert basic_auth_from(None, {}) is None and basic_auth_from(None, {"BASIC_AUTH_USER": ""}) is None
    assert basic_auth_from("u:p:q-long-pass", {"BASIC_AUTH_USER": "x"}) == BasicAuth("u", "p:q-long-pass")
    env = basic_auth_from(None, {"BASIC_AUTH_USER": USER, "BASIC_AUTH_PASS": PASSWORD})
    assert env == BasicAuth(USER, PASSWORD) and PASSWORD not in repr(env)
    with pytest.raises(ValueError, match="BASIC_AUTH_PASS is set but BASIC_AUTH_USER is not"):
        basic_auth_from(None, {"BASIC_AUTH_PASS": PASSWORD})
    with pytest.raises(ValueError, match="expects USER:PASS"):
        basic_auth_from("annotator", {})
    with pytest.raises(ValueError, match="non-empty name"):
        basic_auth_from(f":{PASSWORD}", {})
    with pytest.raises(ValueError, match="at least 8 printable characters"):
        basic_auth_from("u:short", {})


def test_image_sources(scene, tmp_path: Path) -> None:
    """Label Studio's own paths get the API key (never another host), local files are read
    under the document root only, the pixel bound holds before decoding."""
    image, folder = scene
    seen: List[Dict[str, str]] = []
    with file_server(folder, seen) as host:
        source = ImageSource(label_studio_url=host, api_key="k123")
        assert np.array_equal(source.load("/scene.png"), image)
        assert seen[-1].get("Authorization") == "Token k123"
        assert np.array_equal(ImageSource(label_studio_url="http://elsewhere:1", api_key="k123").load(
            f"{host}/scene.png"), image)
        assert "Authorization" not in seen[-1]
        with pytest.raises(ImageFetchError, match="LABEL_STUDIO_API_KEY"):
            ImageSource(label_studio_url=host).load("/scene.png")
    local = ImageSource(local_root=folder.parent)
    assert np.array_equal(local.load(f"/data/local-files/?d={folder.name}/scene.png"), image)
    with pytest.raises(ImageFetchError, match="outside LOCAL_FILES_DOCUMENT_ROOT"):
        local.load("/data/local-files/?d=../../etc/passwd")
    with pytest.raises(ImageFetchError, match="cloud storage URI"):
        local.load("s3://bucket/a.png")
    data = cv2.imencode(".png", np.zeros((3000, 3000, 3), np.uint8))[1].tobytes()
    with pytest.raises(ImageFetchError, match="3000 x 3000 = 9000000 pixels, over the limit of 1000000"):
        decode_image(data, "x.png", max_pixels=1_000_000)


def test_command_line(tmp_path: Path) -> None:
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    refusals = [
        (["--checkpoint", str(tmp_path / "no.pth")], {}, ["error: --checkpoint", "does not exist"]),
        (["--host", "0.0.0.0", "--port", "0"], {},
         ["error: --host 0.0.0.0 serves other machines", "--basic-auth USER:PASS", "BASIC_AUTH_USER and BASIC_AUTH_PASS"]),
        (["--port", "0"], {"BASIC_AUTH_USER": USER}, ["error: BASIC_AUTH_USER is set but BASIC_AUTH_PASS is not"]),
    ]
    for argv, extra, messages in refusals:
        result = subprocess.run([sys.executable, "-m", "isegm.label_studio", *argv], capture_output=True, text=True,
                                cwd=tmp_path, env={**env, **extra}, timeout=120)
        assert result.returncode == 2 and result.stderr.strip().count("\n") == 0, (argv, result.stderr)
        assert all(message in result.stderr for message in messages), (argv, result.stderr)
    # The credentials from the environment, as the label-studio-ml SDK reads them.
    process = subprocess.Popen([sys.executable, "-m", "isegm.label_studio", "--port", "0"], cwd=tmp_path,
                               env={**env, "BASIC_AUTH_USER": USER, "BASIC_AUTH_PASS": PASSWORD},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert f"basic auth as {USER!r}" in line and PASSWORD not in line
        url = re.search(r"at (http://\S+) ", line).group(1)
        assert call(url + "/health")[0] == 401
        health = get(url + "/health", basic(USER, PASSWORD))
        assert health["status"] == "UP" and health["model_free"] and "grabcut" in health["model"]
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert "model-free grabcut baseline" in process.stderr.read()


def test_onnx_folder(scene, tiny, tmp_path: Path, monkeypatch) -> None:
    """An export folder is loaded once (its onnxruntime sessions); the ``Predictor`` of each
    cached image runs that ``OnnxModel``, with the masks of ``Predictor(folder)``."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from isegm.onnx import engine
    from isegm.onnx.export import export_model
    image, _ = scene
    images = {"first": image, "second": np.ascontiguousarray(image[::-1, ::-1])}
    folder = str(tmp_path / "tiny")
    export_model(tiny, folder, size=(SIZE, SIZE))
    coords, labels = np.array([[60.0, 40.0], [20.0, 15.0]]), np.array([1, 0])
    expected = {}
    for key, picture in images.items():
        predictor, previous = Predictor(folder), None
        predictor.set_image(picture)
        for n in (1, 2):
            expected[key], previous = predictor.predict(coords[:n], labels[:n], mask_input=previous)
    assert not np.array_equal(expected["first"], expected["second"])

    loads: List[str] = []
    load = engine.OnnxModel.__init__

    def counted(self: Any, *args: Any, **kwargs: Any) -> None:
        loads.append(str(args[0] if args else kwargs["folder"]))
        load(self, *args, **kwargs)

    monkeypatch.setattr(engine.OnnxModel, "__init__", counted)
    with pytest.raises(ValueError, match="ONNX export"):
        load_segmenter(folder, size=SIZE)
    loads.clear()
    segmenter = load_segmenter(folder)
    for key, picture in images.items():
        got = segmenter.segment(key, lambda: picture, lambda h, w: (coords, labels))
        assert got.encoded and got.clicks_run == 2 and np.array_equal(got.mask, expected[key]), key
    assert loads == [folder] and segmenter.encodings == 2   # two images, one load of the sessions
    with pytest.raises(ValueError, match=f"{re.escape(repr(folder))} is an ONNX export.*drop device"):
        Predictor(engine.OnnxModel(folder), size=SIZE)
