"""The annotation app's HTTP API (a real server on a free port, driven with urllib), its output
files and the predictor state it relies on."""
from __future__ import annotations

import contextlib
import copy
import json
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import cv2
import numpy as np
import pytest
import torch

from isegm.app import AnnotationApp, baseline_backend, model_backend
from isegm.app.__main__ import main as app_main
from isegm.app.backend import ImageCache, mask_state
from isegm.app.guard import TOKEN_HEADER
from isegm.app.server import serve_in_thread
from isegm.app.store import AnnotationStore, SavedObject, StoreError
from isegm.data.scenes import ATHLETE_KINDS, render_scene
from isegm.inference.clicker import Click
from isegm.model import build_skipclick, load_checkpoint, save_checkpoint
from isegm.utils.masks import padded_distance
from isegm.utils.rle import decode_rle, encode_rle

SIZE = 112   # the tiny model's input side here (8 px patches): fast on a CPU


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.pth"
    save_checkpoint(build_skipclick("tiny"), path)
    return path


@pytest.fixture(scope="module")
def tiny_model(tiny_checkpoint: Path) -> torch.nn.Module:
    return load_checkpoint(tiny_checkpoint)


def write_scene(folder: Path, name: str, seed: int, size: Tuple[int, int] = (96, 128)) -> np.ndarray:
    """A generated winter scene saved as ``folder/name``; returns the mask of its first athlete."""
    scene = render_scene(seed, size, framing="close")
    folder.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / name), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
    return scene.mask(scene.targets(ATHLETE_KINDS)[0])


def inside(mask: np.ndarray) -> Tuple[int, int]:
    """(x, y) of the pixel of ``mask`` farthest from its border."""
    y, x = np.unravel_index(padded_distance(mask).argmax(), mask.shape)
    return int(x), int(y)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    images = tmp_path / "images"
    write_scene(images, "a.png", 3)
    write_scene(images, "b.jpg", 5)
    (images / "notes.txt").write_text("not an image")
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    (images / "sub").mkdir()
    return images


class Client:
    """JSON requests against a running server, as its page makes them: with the token the
    server hands out (or ``token``) in the ``X-SkipClick-Token`` header; ``post`` fills in the
    session."""

    def __init__(self, url: str, token: Optional[str] = None) -> None:
        self.url = url.rstrip("/")
        self.session: Optional[str] = None
        self.token = token

    def raw(self, method: str, path: str, body: Union[None, bytes, Dict[str, Any]] = None,
            headers: Optional[Dict[str, str]] = None) -> Tuple[int, Any, Any]:
        """(status, answer, response headers), with exactly the ``headers`` given."""
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=60) as response:
                status, payload, answer_headers = response.status, response.read(), response.headers
        except urllib.error.HTTPError as err:
            status, payload, answer_headers = err.code, err.read(), err.headers
        kind = answer_headers["Content-Type"]
        return status, json.loads(payload) if kind == "application/json" else payload, answer_headers

    def request(self, method: str, path: str, body: Union[None, bytes, Dict[str, Any]] = None,
                headers: Optional[Dict[str, str]] = None) -> Tuple[int, Any]:
        if self.token is None:
            self.token = self.raw("GET", "/api/config")[2][TOKEN_HEADER]
        status, payload, _ = self.raw(method, path, body, {TOKEN_HEADER: self.token, **(headers or {})})
        return status, payload

    def post(self, action: str, expect: int = 200, **fields: Any) -> Dict[str, Any]:
        if self.session is None:
            self.session = self.request("POST", "/api/session", {})[1]["session"]
        status, payload = self.request("POST", f"/api/{action}", {"session": self.session, **fields})
        assert status == expect, payload
        return payload


@contextlib.contextmanager
def serving(app: AnnotationApp) -> Iterator[Client]:
    with serve_in_thread(app) as server:
        yield Client(server.url)


def model_app(folder: Path, out: Path, model: torch.nn.Module, **kwargs: Any) -> AnnotationApp:
    return AnnotationApp(folder, out, model_backend(model, torch.device("cpu"), size=SIZE), **kwargs)


def current(view: Dict[str, Any]) -> Dict[str, Any]:
    return next(o for o in view["objects"] if o["id"] == view["current"])


def test_config_lists_images_and_says_what_was_skipped(folder: Path, tmp_path: Path, tiny_model) -> None:
    with serving(model_app(folder, tmp_path / "out", tiny_model)) as client:
        status, config = client.request("GET", "/api/config")
        assert status == 200
        assert [i["name"] for i in config["images"]] == ["a.png", "b.jpg"]
        reasons = {s["name"]: s["reason"] for s in config["skipped"]}
        assert set(reasons) == {"notes.txt", "broken.png", "sub"}
        assert "not a readable image" in reasons["notes.txt"] and "sub-folders" in reasons["sub"]
        assert not config["model_free"] and config["notice"] == "" and "112 px" in config["backend"]
        status, page = client.request("GET", "/")
        assert status == 200 and b"app.js" in page
        assert client.request("GET", "/static/app.js")[0] == 200


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")   # inside pycocotools
def test_click_undo_save_and_load_back(folder: Path, tmp_path: Path, tiny_model) -> None:
    pycoco = pytest.importorskip("pycocotools.mask")
    out = tmp_path / "out"
    with serving(model_app(folder, out, tiny_model)) as client:
        view = client.post("open", image="a.png")
        assert view["image"]["width"] == 128 and view["image"]["height"] == 96 and len(view["objects"]) == 1
        first = client.post("click", image="a.png", x=60, y=40, positive=True)
        assert first["model_ms"] > 0 and current(first)["clicks"] == [{"x": 60.0, "y": 40.0, "positive": True}]
        assert current(first)["mask"]["size"] == [96, 128] and first["unsaved"] == ["a.png"]
        second = client.post("click", image="a.png", x=10, y=10, positive=False)
        assert len(current(second)["clicks"]) == 2
        undone = client.post("undo", image="a.png")
        assert current(undone)["mask"] == current(first)["mask"] and len(current(undone)["clicks"]) == 1
        again = client.post("click", image="a.png", x=10, y=10, positive=False)
        assert current(again)["mask"] == current(second)["mask"]   # the restored state gives the same result
        client.post("category", image="a.png", object=view["current"], category="skier")
        client.post("finish", image="a.png")
        saved = client.post("save", image="a.png")
        assert saved["written"] == ["masks/a.png/object_001.png", "annotations.json"]
        assert saved["image"]["saved"] and saved["unsaved"] == [] and len(saved["objects"]) == 2
        mask = decode_rle(current(again)["mask"])

    png = cv2.imread(str(out / "masks/a.png/object_001.png"), cv2.IMREAD_UNCHANGED)
    assert png.shape == (96, 128) and png.dtype == np.uint8 and set(np.unique(png)) <= {0, 255}
    assert ((png > 0) == mask).all()   # working size = full size here
    doc = json.loads((out / "annotations.json").read_text())
    assert [i["file_name"] for i in doc["images"]] == ["a.png"]
    assert doc["categories"] == [{"id": 1, "name": "skier"}]
    (annotation,) = doc["annotations"]
    rle = dict(annotation["segmentation"], counts=annotation["segmentation"]["counts"].encode())
    assert (pycoco.decode(rle).astype(bool) == (png > 0)).all()
    assert annotation["area"] == int(pycoco.area(rle)) and annotation["bbox"] == pycoco.toBbox(rle).tolist()
    assert annotation["clicks"] == [{"x": 60.0, "y": 40.0, "positive": True}, {"x": 10.0, "y": 10.0, "positive": False}]
    assert not list(out.rglob("*.tmp"))

    # a new server on the same --out loads the annotation back for editing
    with serving(model_app(folder, out, tiny_model)) as client:
        config = client.request("GET", "/api/config")[1]
        assert [i["saved"] for i in config["images"]] == [True, False] and config["categories"] == ["skier"]
        view = client.post("open", image="a.png")
        loaded = view["objects"][0]
        assert (decode_rle(loaded["mask"]) == mask).all() and len(loaded["clicks"]) == 2
        assert loaded["category"] == "skier" and loaded["undoable"] == 0
        client.post("select", image="a.png", object=loaded["id"])
        assert client.post("undo", image="a.png")["message"] == "nothing to undo"   # the saved start stays
        edited = client.post("click", image="a.png", x=100, y=50, positive=True)
        assert len(current(edited)["clicks"]) == 3
        client.post("save", image="a.png")
    assert len(json.loads((out / "annotations.json").read_text())["annotations"]) == 1


def test_features_computed_once_per_image_and_sessions_isolated(folder: Path, tmp_path: Path, tiny_model,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    encoded: List[Tuple[int, ...]] = []
    original = type(tiny_model).encode_image

    def counting(self, image):
        encoded.append(tuple(image.shape))
        return original(self, image)

    monkeypatch.setattr(type(tiny_model), "encode_image", counting)
    app = model_app(folder, tmp_path / "out", tiny_model, cache_size=1)
    with serving(app) as one, serving(app) as other:
        one.post("open", image="a.png")
        other.post("open", image="a.png")
        assert encoded == [(1, 3, SIZE, SIZE)]
        alone = current(one.post("click", image="a.png", x=60, y=40, positive=True))

        # concurrent clicks of two sessions on one image: each gets its own result
        results: Dict[str, Dict] = {}
        threads = [threading.Thread(target=lambda c=c, k=k, x=x: results.__setitem__(
            k, current(c.post("click", image="a.png", x=x, y=40, positive=True)))) for c, k, x in
            [(one, "one", 20), (other, "other", 100)]]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert [c["x"] for c in results["one"]["clicks"]] == [60.0, 20.0]
        assert [c["x"] for c in results["other"]["clicks"]] == [100.0]
        other.post("reset", image="a.png")
        replay = current(other.post("click", image="a.png", x=60, y=40, positive=True))
        assert replay["mask"] == alone["mask"]   # the other session's clicks did not leak in
        assert len(encoded) == 1   # every click ran only the per-click path

        one.post("open", image="b.jpg")   # capacity 1: a.png leaves the cache
        assert app.cache.cached() == ["b.jpg"] and len(encoded) == 2
        one.post("click", image="b.jpg", x=5, y=5, positive=True)
        one.post("open", image="a.png")
        assert len(encoded) == 3   # prepared again after eviction, its session state intact
        assert len(current(one.post("undo", image="a.png"))["clicks"]) == 1


def test_bad_requests_get_a_4xx_with_a_message_and_the_server_keeps_running(folder: Path, tmp_path: Path,
                                                                          tiny_model) -> None:
    with serving(model_app(folder, tmp_path / "out", tiny_model)) as client:
        client.post("open", image="a.png")
        outside = client.post("click", expect=400, image="a.png", x=128, y=5, positive=True)
        assert "outside image 'a.png' (128x96 px)" in outside["error"]
        client.post("click", expect=400, image="a.png", x=-1, y=5, positive=True)
        assert "finite number" in client.post("click", expect=400, image="a.png", x="5", y=5)["error"]
        assert "true or false" in client.post("click", expect=400, image="a.png", x=5, y=5, positive=1)["error"]
        status, answer = client.request("POST", "/api/click", b'{"session": "' + client.session.encode()
                                        + b'", "image": "a.png", "x": NaN, "y": 1}')
        assert status == 400 and "finite" in answer["error"]
        assert "rejected" in client.post("open", expect=400, image="../a.png")["error"]
        assert "rejected" in client.post("open", expect=400, image="..")["error"]
        assert "no image named" in client.post("open", expect=404, image="notes.txt")["error"]
        assert "not open" in client.post("click", expect=409, image="b.jpg", x=1, y=1)["error"]
        assert "'object' must be" in client.post("select", expect=400, image="a.png", object="1")["error"]
        assert "no object 99" in client.post("delete", expect=404, image="a.png", object=99)["error"]
        assert "category" in client.post("category", expect=400, image="a.png", object=1, category=" ")["error"]
        status, answer = client.request("POST", "/api/click", b"{not json")
        assert status == 400 and "not valid JSON" in answer["error"]
        status, answer = client.request("POST", "/api/click", b"[1, 2]")
        assert status == 400 and "JSON object" in answer["error"]
        status, answer = client.request("POST", "/api/click", {"session": "nope", "image": "a.png", "x": 1, "y": 1})
        assert status == 404 and "unknown session" in answer["error"]
        assert client.request("GET", "/api/nothing")[0] == 404
        assert client.request("GET", "/api/click")[0] == 405
        assert client.request("GET", "/static/../server.py")[0] == 404
        assert client.request("GET", "/static/%2e%2e/server.py")[0] == 404
        assert client.request("GET", "/api/image?name=../../etc/passwd")[0] == 400
        status, answer = client.request("POST", "/api/session", b"{}", {"Content-Length": str(1 << 30)})
        assert status == 413
        view = client.post("click", image="a.png", x=60, y=40, positive=True)   # still serving
        assert len(current(view)["clicks"]) == 1


def test_a_failed_save_keeps_the_annotation(folder: Path, tmp_path: Path, tiny_model) -> None:
    out = tmp_path / "out"
    with serving(model_app(folder, out, tiny_model)) as client:
        client.post("open", image="a.png")
        client.post("click", image="a.png", x=60, y=40, positive=True)
        (out / "masks").write_text("a file where the masks folder goes")
        failed = client.post("save", expect=500, image="a.png")
        assert "cannot save 'a.png'" in failed["error"] and "kept in memory" in failed["error"]
        (out / "masks").unlink()
        assert client.post("save", image="a.png")["unsaved"] == []
    assert (out / "masks/a.png/object_001.png").is_file()


def test_large_images_are_downscaled_for_the_model_and_saved_at_full_size(tmp_path: Path, tiny_model) -> None:
    folder = tmp_path / "images"
    write_scene(folder, "big.png", 7, size=(150, 250))
    out = tmp_path / "out"
    everywhere = copy.deepcopy(tiny_model)   # a mask to save, whatever the random weights say
    with torch.no_grad():
        everywhere.head.conv_seg.bias.fill_(100.0)
    with serving(model_app(folder, out, everywhere, max_side=100)) as client:
        view = client.post("open", image="big.png")
        assert (view["image"]["work_height"], view["image"]["work_width"]) == (60, 100)
        status, jpeg = client.request("GET", "/api/image?name=big.png")
        assert status == 200 and cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (60, 100, 3)
        view = client.post("click", image="big.png", x=249, y=149, positive=True)   # the last pixel is inside
        assert current(view)["mask"]["size"] == [60, 100]
        client.post("save", image="big.png")
    png = cv2.imread(str(out / "masks/big.png/object_001.png"), cv2.IMREAD_GRAYSCALE)
    assert png.shape == (150, 250) and (png == 255).all()
    (annotation,) = json.loads((out / "annotations.json").read_text())["annotations"]
    assert annotation["segmentation"]["size"] == [150, 250]
    assert annotation["clicks"] == [{"x": 249.0, "y": 149.0, "positive": True}]


def test_model_free_baseline_says_so_and_segments(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    athlete = write_scene(folder, "scene.png", 6, size=(180, 240))
    with serving(AnnotationApp(folder, tmp_path / "out", baseline_backend("grabcut"))) as client:
        config = client.request("GET", "/api/config")[1]
        assert config["model_free"] and "model-free grabcut" in config["notice"]
        client.post("open", image="scene.png")
        x, y = inside(athlete)
        mask = decode_rle(current(client.post("click", image="scene.png", x=x, y=y, positive=True))["mask"])
        assert (mask & athlete).sum() / (mask | athlete).sum() > 0.5


def test_output_stays_under_out_and_existing_annotations_are_kept(folder: Path, tmp_path: Path, tiny_model) -> None:
    out = tmp_path / "out"
    store = AnnotationStore(out)
    for bad in (("..", "x.png"), ("masks", "..", "..", "x.png"), ("/etc", "passwd")):
        with pytest.raises(StoreError, match="outside the output folder"):
            store.safe_path(*bad)
    with pytest.raises(StoreError, match="not a file name"):
        store.save("..", 2, 2, [])
    with pytest.raises(StoreError, match="not a file name"):
        store.save("../x.png", 2, 2, [])

    # another image's entry and extra keys of an existing file survive a save
    mask = np.zeros((96, 128), bool)
    mask[10:20, 30:50] = True
    other = {"id": 7, "image_id": 3, "category_id": 2, "segmentation": encode_rle(mask), "area": 200,
             "bbox": [30, 10, 20, 10], "iscrowd": 0}
    (out / "annotations.json").write_text(json.dumps({
        "info": {"description": "from another tool"}, "images": [{"id": 3, "file_name": "elsewhere.png",
                                                                  "width": 128, "height": 96}],
        "annotations": [other], "categories": [{"id": 2, "name": "pole"}]}))
    with serving(model_app(folder, out, tiny_model)) as client:
        client.post("open", image="a.png")
        client.post("click", image="a.png", x=60, y=40, positive=True)
        client.post("save", image="a.png")
    doc = json.loads((out / "annotations.json").read_text())
    assert doc["info"] == {"description": "from another tool"}
    assert doc["annotations"][0] == other and doc["annotations"][1]["id"] == 8
    assert [(i["id"], i["file_name"]) for i in doc["images"]] == [(3, "elsewhere.png"), (4, "a.png")]
    assert doc["categories"] == [{"id": 2, "name": "pole"}]   # the file's categories are offered

    # an unreadable file stops the app and is left as it was
    (out / "annotations.json").write_text("{broken")
    with pytest.raises(StoreError, match=r"cannot read the existing annotations .*annotations\.json.*move it away"):
        model_app(folder, out, tiny_model)
    assert (out / "annotations.json").read_text() == "{broken"


def test_mask_pngs_without_a_json_entry_are_loaded_back(folder: Path, tmp_path: Path, tiny_model) -> None:
    out = tmp_path / "out"
    mask = np.zeros((96, 128), bool)
    mask[40:60, 50:80] = True
    AnnotationStore(out).save("a.png", 96, 128, [SavedObject(mask)])
    (out / "annotations.json").unlink()
    with serving(model_app(folder, out, tiny_model)) as client:
        loaded = client.post("open", image="a.png")["objects"][0]
    assert (decode_rle(loaded["mask"]) == mask).all()


def test_saved_masks_are_the_models_previous_mask(folder: Path, tiny_model) -> None:
    """Editing a loaded object continues from its mask: the predictor's previous map is the mask."""
    cache = ImageCache(folder, model_backend(tiny_model, torch.device("cpu"), size=SIZE))
    entry = cache.get("a.png")
    mask = np.zeros((96, 128), bool)
    mask[20:50, 30:90] = True
    state = mask_state(entry, mask)
    assert torch.equal(state["prev_prediction"][0, 0] > 0.5, torch.from_numpy(mask))
    assert entry.initial_state["prev_prediction"].abs().sum() == 0


def test_command_line_errors_name_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit, match=r"--images .*nowhere.* is not a folder"):
        app_main(["--images", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit, match="holds no readable image"):
        app_main(["--images", str(empty), "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match="checkpoint"):
        app_main(["--images", str(empty), "--out", str(tmp_path / "out"), "--checkpoint", str(tmp_path / "x.pth")])


def test_rle_encoding_matches_pycocotools() -> None:
    mask_utils = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(0)
    masks = [rng.random((h, w)) < p for h, w, p in [(1, 1, 1.0), (6, 5, 0.5), (37, 53, 0.02), (40, 30, 0.0)]]
    big = np.zeros((900, 1400), bool)
    big[100:800, 200:1300] = True   # runs of hundreds: multi-character numbers, negative differences
    big[300:350, 20:40] = True
    for mask in masks + [big, ~big]:
        ours = encode_rle(mask)
        assert ours["counts"] == mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode()
        assert (decode_rle(ours) == mask).all()


@pytest.mark.parametrize("name", ["grabcut", "model"])
def test_predictor_states_undo_exactly(name: str, folder: Path, tiny_model) -> None:
    """``set_states(get_states())`` after a click gives the next click the same result: undo and
    switching objects need no recomputation."""
    backend = (baseline_backend("grabcut") if name == "grabcut"
               else model_backend(tiny_model, torch.device("cpu"), size=SIZE))
    entry = ImageCache(folder, backend).get("a.png")
    first = [Click(True, (40.0, 60.0))]
    second = first + [Click(False, (10.0, 10.0))]
    _, after_first = backend.predict(entry, first, entry.initial_state)
    prob, _ = backend.predict(entry, second, after_first)
    backend.predict(entry, [Click(True, (80.0, 100.0))], entry.initial_state)   # another object in between
    again, _ = backend.predict(entry, second, after_first)
    assert np.array_equal(prob, again)


def test_masks_are_the_predictors(tmp_path: Path) -> None:
    """The app's masks for the evaluation clicker's clicks on a GrabCut photo (SkipClick with the
    reference ``fill.py`` weights, whose probabilities crowd around the threshold: a hard case)
    are ``isegm.Predictor``'s: the first click's exactly; later ones continue from the float16
    undo state and may differ in a few pixels next to the threshold (at most 1 in 10000)."""
    import conftest
    from isegm import Predictor
    from isegm.app.session import ImageWork
    from isegm.inference import evaluate_sample
    from isegm.inference.interactive import interactive_predictor
    root = conftest.shared_path("datasets", "GrabCut")
    image_path = root / "data_GT" / "124080.jpg"
    (tmp_path / image_path.name).write_bytes(image_path.read_bytes())
    rgb = cv2.imread(str(image_path))[..., ::-1].copy()
    gt = (cv2.imread(str(root / "boundary_GT" / "124080.bmp"), cv2.IMREAD_GRAYSCALE) == 255).astype(np.int32)
    model = conftest._filled_model("skip")
    clicks, _, _ = evaluate_sample(rgb, gt, interactive_predictor(model, 112), 1.01, min_clicks=4, max_clicks=4)
    backend = model_backend(model, torch.device("cpu"), size=112)
    entry = ImageCache(tmp_path, backend, max_side=1000).get(image_path.name)
    work = ImageWork(entry, [], "object")
    predictor = Predictor(model, device="cpu", size=112)
    predictor.set_image(rgb)
    previous = None
    for n, click in enumerate(clicks, 1):
        work.click(entry, backend, click.coords[0], click.coords[1], click.is_positive)
        expected, previous = predictor.predict([[c.coords[1], c.coords[0]] for c in clicks[:n]],
                                               [int(c.is_positive) for c in clicks[:n]], mask_input=previous)
        differ = int((work.object().full_mask(entry.full_size) != expected).sum())
        assert differ <= (0 if n == 1 else expected.size // 10000), f"click {n}: {differ} px differ"
