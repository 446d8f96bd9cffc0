"""The backend against a real Label Studio (1.23): a user and token, a project with the docs'
labeling config, a GrabCut image uploaded, the backend connected with basic auth, interactive
predictions for two positive and one negative keypoint requested through Label Studio's API; the
brush masks equal ``Predictor``'s. Also a connection without the right credentials refused by
Label Studio, a refused keypoint reaching the labeling page as Label Studio's error, and the
labeling page's screenshot in headless Chromium.

Marked ``label_studio`` (deselected by ``make test``; ``make test-label-studio`` runs it) and
skipped unless ``SKIPCLICK_LABEL_STUDIO`` names a ``label-studio`` command (its own virtual
environment; ``.ci/run`` installs one). One server serves the whole module: its first start
creates the database, about a minute on 2 CPU cores.

SkipClick here has the reference ``fill.py`` weights (full-size ViT-B, no trained weights are
needed): its masks follow the clicks, so equal masks mean something, but their shapes are not a
trained model's. ``SKIPCLICK_LS_SCREENSHOT=docs/label_studio_screenshot.png`` also writes the
screenshot there (the docs' picture, in 256 colours).
"""
from __future__ import annotations

import importlib.util
import io
import os
import secrets
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, Iterator, List, Tuple

import cv2
import numpy as np
import pytest
from PIL import Image

import conftest
from conftest import REPO
from isegm import Predictor
from isegm.label_studio.auth import BasicAuth
from isegm.label_studio.images import ImageSource, decode_image
from isegm.label_studio.rle import rle_to_mask
from isegm.label_studio.segmenter import load_segmenter
from isegm.label_studio.server import LabelStudioBackend, serve_in_thread
from isegm.model import save_checkpoint
from isegm.utils.masks import padded_distance
from test_label_studio import docs_config, keypoint


def _load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


studio = _load_script("label_studio_server")
browser = _load_script("app_browser")
pytestmark = [pytest.mark.label_studio,
              pytest.mark.skipif(studio.missing() is not None, reason=f"no Label Studio: {studio.missing()}")]

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
IMAGE = "106024.jpg"   # GrabCut: a flower against a plain background
SIZE = 448             # SkipClick's input side (the model's default)


def deepest(mask: np.ndarray) -> Tuple[int, int]:
    """(x, y) of the pixel of ``mask`` farthest from its border."""
    y, x = np.unravel_index(padded_distance(mask).argmax(), mask.shape)
    return int(x), int(y)


def clicks_for(gt: np.ndarray) -> List[Tuple[int, int, bool]]:
    """Two positive keypoints deep inside the object (the second in the other half of it) and
    one negative one deep in the background."""
    first = deepest(gt)
    other = gt.copy()
    other[max(0, first[1] - 40):first[1] + 40, max(0, first[0] - 40):first[0] + 40] = False
    return [(*first, True), (*deepest(other), True), (*deepest(~gt), False)]


@pytest.fixture(scope="module")
def labeling(tmp_path_factory) -> Iterator[Dict[str, Any]]:
    """Label Studio with a project, the GrabCut task, and the backend (SkipClick) connected with
    basic auth (so every request Label Studio makes carries it)."""
    image_path = conftest.shared_path("datasets", "GrabCut", "data_GT", IMAGE)
    gt_path = conftest.shared_path("datasets", "GrabCut", "boundary_GT", IMAGE.replace(".jpg", ".bmp"))
    gt = cv2.imread(str(gt_path), cv2.IMREAD_GRAYSCALE) == 255
    checkpoint = tmp_path_factory.mktemp("model") / "skipclick_filled.pth"
    model = conftest._filled_model("skip")
    save_checkpoint(model, checkpoint)
    ARTIFACTS.mkdir(exist_ok=True)
    with studio.label_studio(log=ARTIFACTS / "label_studio.log") as server:
        segmenter = load_segmenter(str(checkpoint), "cpu", size=SIZE)
        backend = LabelStudioBackend(segmenter, ImageSource(server.url, server.token))
        auth = BasicAuth("label-studio", secrets.token_urlsafe(16))
        with serve_in_thread(backend, auth=auth) as ml:
            project = server.create_project("Winter sports", docs_config())
            (task,) = server.upload(project, image_path)
            ml_id = server.connect_backend(project, ml.url, basic_auth=(auth.user, auth.password))
            yield {"server": server, "backend": backend, "project": project, "task": task, "ml": ml_id,
                   "ml_url": ml.url, "auth": auth, "image": decode_image(image_path.read_bytes(), IMAGE), "gt": gt,
                   "model": model}


def test_interactive_masks_equal_the_predictor(labeling) -> None:
    server, image, gt = labeling["server"], labeling["image"], labeling["gt"]
    shape = image.shape[:2]
    assert gt.shape == shape
    clicks = clicks_for(gt)
    predictor = Predictor(labeling["model"], device="cpu", size=SIZE)
    predictor.set_image(image)
    regions, previous, masks = [], None, []
    for n, (x, y, positive) in enumerate(clicks, 1):
        expected, previous = predictor.predict([[cx, cy] for cx, cy, _ in clicks[:n]],
                                               [int(p) for *_, p in clicks[:n]], mask_input=previous)
        regions.append(keypoint(x, y, shape, positive, label="athlete"))
        answer = server.interactive(labeling["ml"], labeling["task"], regions)
        assert "errors" not in answer, answer
        (region,) = answer["data"]["result"]
        assert region["type"] == "brushlabels" and region["value"]["brushlabels"] == ["athlete"]
        assert (region["original_height"], region["original_width"]) == shape
        mask = rle_to_mask(region["value"]["rle"], *shape)
        assert np.array_equal(mask, expected), f"keypoint {n}: {int(mask.sum())} vs {int(expected.sum())} px"
        masks.append(mask)
    assert labeling["backend"].segmenter.encodings == 1   # one encoding, three keypoints
    assert len({int(m.sum()) for m in masks}) > 1, "the keypoints should change the mask"
    labeling["result"] = regions + [region]


def test_connection_needs_the_credentials(labeling) -> None:
    """Label Studio's health check gets the backend's 401 and refuses to connect without the
    credentials or with a wrong password."""
    server, auth = labeling["server"], labeling["auth"]
    for basic_auth in (None, (auth.user, auth.password + "x")):
        with pytest.raises(RuntimeError, match="HTTP 400.*authentication parameters were either not provided or "
                                               "are incorrect"):
            server.connect_backend(labeling["project"], labeling["ml_url"], basic_auth=basic_auth)


def test_refused_keypoint_reaches_label_studio(labeling) -> None:
    """A label the brush control lacks: Label Studio relays the backend's error; both keep serving."""
    server, ml, task = labeling["server"], labeling["ml"], labeling["task"]
    shape = labeling["image"].shape[:2]
    answer = server.interactive(ml, task, [keypoint(10, 10, shape, label="cat")])
    assert "400" in " ".join(answer["errors"]), answer
    answer = server.interactive(ml, task, [keypoint(*deepest(labeling["gt"]), shape)])
    assert "errors" not in answer and answer["data"]["result"][0]["type"] == "brushlabels"


@pytest.mark.skipif(browser.missing() is not None, reason=f"no browser: {browser.missing()}")
def test_labeling_page_screenshot(labeling) -> None:
    """The labeling page, logged in, showing the task annotated with the keypoints and SkipClick's mask."""
    result = labeling.get("result")
    if result is None:
        pytest.skip("needs test_interactive_masks_equal_the_predictor's result")
    server = labeling["server"]
    server.request("POST", f"/api/tasks/{labeling['task']}/annotations", {"result": result})
    with browser.chromium(1280, 860) as driver:
        driver.get(server.url + "/user/login/")
        driver.find_element("name", "email").send_keys(server.email)
        driver.find_element("name", "password").send_keys(server.password)
        driver.find_element("css selector", "button[type=submit], input[type=submit]").click()
        _wait(driver, lambda: "/user/login" not in driver.current_url, "the login")
        driver.get(f"{server.url}/projects/{labeling['project']}/data?task={labeling['task']}")
        _wait(driver, lambda: driver.execute_script(
            "return [...document.querySelectorAll('canvas')].some(c => c.width > 300)"), "the image canvas")
        time.sleep(3)   # the brush layer and the region list render after the image
        png = driver.get_screenshot_as_png()
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "label_studio.png").write_bytes(png)
    picture = Image.open(io.BytesIO(png)).convert("RGB")
    assert picture.size[0] >= 1200
    target = os.environ.get("SKIPCLICK_LS_SCREENSHOT")
    if target:
        picture.quantize(256).save(REPO / target, optimize=True)


def _wait(driver: Any, condition: Any, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            ARTIFACTS.mkdir(exist_ok=True)
            driver.save_screenshot(str(ARTIFACTS / "label_studio_timeout.png"))
            raise AssertionError(f"waited {timeout:.0f} s for {what} (tests/artifacts/label_studio_timeout.png)")
        time.sleep(0.5)
