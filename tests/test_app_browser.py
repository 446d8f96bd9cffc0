"""End to end in real headless Chromium: open the page, click an object, see its mask, undo, click
again, add a second object, save, and check the written PNGs and COCO JSON.

Needs selenium and the Debian packages ``chromium chromium-driver`` (``.ci/run`` installs them);
skipped with the reason otherwise. The screenshot goes to ``tests/artifacts/app.png``;
``SKIPCLICK_APP_SCREENSHOT=docs/app_screenshot.png`` also writes it there in 256 colours (the
README's picture).
"""
from __future__ import annotations

import importlib.util
import io
import json
import os
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from isegm.app import AnnotationApp, baseline_backend
from isegm.app.server import serve_in_thread
from isegm.data.scenes import render_scene
from isegm.utils.masks import padded_distance
from isegm.utils.rle import decode_rle
from test_app_api import Client


def _load_driver() -> ModuleType:
    """``scripts/app_browser.py``, the page driver the app's latency benchmark also uses."""
    spec = importlib.util.spec_from_file_location("app_browser", REPO / "scripts" / "app_browser.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


browser = _load_driver()
pytestmark = pytest.mark.skipif(browser.missing() is not None, reason=f"no browser: {browser.missing()}")

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
# Scene 5 (close framing, 360 x 480): a skier (object 0) and a slalom flag (object 7), both of
# which one click of the GrabCut baseline segments well (IoU 0.80 and 0.86).
SEED, SIZE, SKIER, FLAG = 5, (360, 480), 0, 7


def inside(mask: np.ndarray) -> tuple:
    """(x, y) of the pixel of ``mask`` farthest from its border."""
    y, x = np.unravel_index(padded_distance(mask).argmax(), mask.shape)
    return int(x), int(y)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_annotate_in_chromium(tmp_path: Path) -> None:
    from selenium.webdriver.common.keys import Keys

    scene = render_scene(SEED, SIZE, framing="close")
    folder, out = tmp_path / "images", tmp_path / "out"
    folder.mkdir()
    cv2.imwrite(str(folder / "slope.png"), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
    (folder / "readme.txt").write_text("not an image")
    skier, flag = scene.mask(SKIER), scene.mask(FLAG)

    app = AnnotationApp(folder, out, baseline_backend("grabcut"))
    with serve_in_thread(app) as server, browser.chromium(1280, 900) as driver:
        page = browser.AppPage(driver, server.url)
        assert driver.find_element("id", "notice").text.startswith("No checkpoint given")
        assert "1 file skipped" in driver.find_element("id", "skipped").text
        assert page.mask_pixels() == 0

        page.click_image(*inside(skier))
        (obj,) = page.objects()
        assert obj["area"] > 0 and obj["clicks"] == 1 and page.mask_pixels() > 0   # the mask appears
        latency = page.latency()
        assert latency["count"] == 1 and latency["ms"] >= latency["model_ms"] > 0

        page.key("u")
        assert page.objects()[0]["area"] == 0 and page.mask_pixels() == 0   # and goes with undo

        page.click_image(*inside(skier))
        first_area = page.objects()[0]["area"]
        assert first_area > 0
        page.key(Keys.ENTER)   # finish the skier, start the next object
        page.click_image(*inside(flag))
        objects = page.objects()
        assert [o["area"] > 0 for o in objects] == [True, True] and objects[1]["current"]
        page.key("s")
        assert page.status().startswith("saved 2 objects")
        assert driver.find_element("css selector", "#image-list li").get_attribute("data-saved") == "true"

        ARTIFACTS.mkdir(exist_ok=True)
        shot = driver.get_screenshot_as_png()
        (ARTIFACTS / "app.png").write_bytes(shot)
        if os.environ.get("SKIPCLICK_APP_SCREENSHOT"):   # 256 colours: a quarter of the bytes, same look
            picture = Image.open(io.BytesIO(shot)).convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE)
            picture.save(os.environ["SKIPCLICK_APP_SCREENSHOT"], optimize=True)

    masks = [cv2.imread(str(out / f"masks/slope.png/object_00{i}.png"), cv2.IMREAD_GRAYSCALE) > 0 for i in (1, 2)]
    assert all(m.shape == SIZE for m in masks)
    assert iou(masks[0], skier) > 0.7 and iou(masks[1], flag) > 0.7
    assert masks[0].sum() == first_area   # full size = working size here
    doc = json.loads((out / "annotations.json").read_text())
    assert [i["file_name"] for i in doc["images"]] == ["slope.png"]
    assert len(doc["annotations"]) == 2
    for annotation, mask in zip(doc["annotations"], masks):
        assert (decode_rle(annotation["segmentation"]) == mask).all()
        assert len(annotation["clicks"]) == 1 and annotation["clicks"][0]["positive"]
    x, y = inside(skier)
    click = doc["annotations"][0]["clicks"][0]
    assert abs(click["x"] - x) <= 1 and abs(click["y"] - y) <= 1   # the page maps screen to image pixels


def test_a_refused_save_shows_in_the_page(tmp_path: Path) -> None:
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    """Someone else saves the image while the page edits it: the page's save is refused, the page
    says so (not "saved"), and on the user's choice overwrites theirs."""
    scene = render_scene(SEED, SIZE, framing="close")
    folder, out = tmp_path / "images", tmp_path / "out"
    folder.mkdir()
    cv2.imwrite(str(folder / "slope.png"), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
    app = AnnotationApp(folder, out, baseline_backend("grabcut"))
    with serve_in_thread(app) as server, browser.chromium(1280, 900) as driver:
        page = browser.AppPage(driver, server.url)
        page.click_image(*inside(scene.mask(SKIER)))
        other = Client(server.url)
        other.post("open", image="slope.png")
        other.post("click", image="slope.png", x=10, y=10, positive=True)
        other.post("save", image="slope.png")

        driver.find_element("tag name", "body").send_keys("s")
        alert = WebDriverWait(driver, 60).until(expected_conditions.alert_is_present())
        assert "not saved" in alert.text and "'slope.png'" in alert.text
        alert.dismiss()   # do not overwrite theirs
        WebDriverWait(driver, 60).until(expected_conditions.alert_is_present()).dismiss()   # nor load theirs
        assert page.status().startswith("not saved") and "saved 1 object" not in page.status()
        assert driver.find_element("css selector", "#image-list li").get_attribute("data-unsaved") == "true"
        assert len(json.loads((out / "annotations.json").read_text())["annotations"][0]["clicks"]) == 1
        assert json.loads((out / "annotations.json").read_text())["annotations"][0]["clicks"][0]["x"] == 10

        driver.find_element("tag name", "body").send_keys("s")
        WebDriverWait(driver, 60).until(expected_conditions.alert_is_present()).accept()   # overwrite
        WebDriverWait(driver, 60).until(lambda _: page.status().startswith("saved 1 object"))
    x, _ = inside(scene.mask(SKIER))
    (annotation,) = json.loads((out / "annotations.json").read_text())["annotations"]
    assert abs(annotation["clicks"][0]["x"] - x) <= 1


def test_a_network_server_takes_the_token_from_the_printed_address(tmp_path: Path) -> None:
    """Served with a token: the page opened at the address the app prints works, and the token
    leaves the address bar (it is kept for the tab)."""
    scene = render_scene(SEED, SIZE, framing="close")
    folder = tmp_path / "images"
    folder.mkdir()
    cv2.imwrite(str(folder / "slope.png"), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
    app = AnnotationApp(folder, tmp_path / "out", baseline_backend("grabcut"))
    with serve_in_thread(app, host="0.0.0.0", token="a-long-secret-token") as server, \
            browser.chromium(1280, 900) as driver:
        assert "?token=" in server.url
        page = browser.AppPage(driver, server.url)
        page.click_image(*inside(scene.mask(SKIER)))
        assert page.objects()[0]["area"] > 0
        assert "token" not in driver.current_url
        assert driver.execute_script("return sessionStorage.getItem('skipclick-token');") == "a-long-secret-token"


def test_the_page_fetches_a_new_token_after_a_restart(tmp_path: Path) -> None:
    """A restarted server draws a new token: the page's next request fetches it and goes through."""
    scene = render_scene(SEED, SIZE, framing="close")
    folder = tmp_path / "images"
    folder.mkdir()
    cv2.imwrite(str(folder / "slope.png"), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
    app = AnnotationApp(folder, tmp_path / "out", baseline_backend("grabcut"))
    with serve_in_thread(app) as server, browser.chromium(1280, 900) as driver:
        page = browser.AppPage(driver, server.url)
        page.click_image(*inside(scene.mask(SKIER)))
        server.guard.token = "drawn-again-at-restart"
        page.click_image(*inside(scene.mask(FLAG)))
        assert page.objects()[0]["clicks"] == 2
        assert driver.execute_script("return state.token;") == "drawn-again-at-restart"
