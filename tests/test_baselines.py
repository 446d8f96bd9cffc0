"""Model-free baselines (click-seeded GrabCut and random walker) on synthetic scenes: they
segment through the evaluation loop, are deterministic, undo a wrong region on a negative click,
and the registry and the optional scikit-image dependency behave."""
from __future__ import annotations

import importlib.util
import sys
from typing import Tuple

import numpy as np
import pytest

from isegm.inference.baselines import BASELINES, GrabCutPredictor, RandomWalkerPredictor, get_baseline
from isegm.inference.clicker import Click, Clicker
from isegm.inference.evaluation import evaluate_sample

needs_skimage = pytest.mark.skipif(importlib.util.find_spec("skimage") is None,
                                   reason="scikit-image is not installed (pip install scikit-image)")
PREDICTORS = [pytest.param(GrabCutPredictor, id="grabcut"),
              pytest.param(RandomWalkerPredictor, id="random_walker", marks=needs_skimage)]
H, W = 96, 128


def textured_background(rng: np.random.Generator) -> np.ndarray:
    """A dark, striped, noisy H x W x 3 float background."""
    rows, cols = np.mgrid[:H, :W]
    stripes = 30 + 20 * np.sin(cols / 2.5) * np.cos(rows / 3.5)
    return stripes[..., None] * np.ones(3) + rng.normal(0, 6, (H, W, 3))


def disk_scene() -> Tuple[np.ndarray, np.ndarray]:
    """A noisy yellow disk (the object, off-centre) on the textured background: image, gt (int32)."""
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[:H, :W]
    gt = (rows - 50) ** 2 + (cols - 70) ** 2 <= 30 ** 2
    image = textured_background(rng)
    image[gt] = np.array((210, 180, 60)) + rng.normal(0, 10, (gt.sum(), 3))
    return np.clip(image, 0, 255).astype(np.uint8), gt.astype(np.int32)


def bridged_scene() -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Object disk A (red) joined by a bridge to disk B of a close colour: image, A, B (bool)."""
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[:H, :W]
    disk_a = (rows - 48) ** 2 + (cols - 38) ** 2 <= 22 ** 2
    disk_b = (rows - 48) ** 2 + (cols - 96) ** 2 <= 18 ** 2
    bridge = (abs(rows - 48) <= 5) & (cols >= 50) & (cols <= 85) & ~disk_a
    image = textured_background(rng)
    image[disk_a] = np.array((220, 60, 60)) + rng.normal(0, 15, (disk_a.sum(), 3))
    image[disk_b | bridge] = np.array((220, 80, 60)) + rng.normal(0, 6, ((disk_b | bridge).sum(), 3))
    return np.clip(image, 0, 255).astype(np.uint8), disk_a, disk_b


@pytest.mark.parametrize("predictor_class", PREDICTORS)
def test_segments_the_object_in_a_few_clicks(predictor_class):
    image, gt = disk_scene()
    clicks, ious, probs = evaluate_sample(image, gt, predictor_class(), max_iou_thr=0.9, max_clicks=3)
    assert ious[-1] >= 0.9, f"IoU after {len(clicks)} clicks: {ious.tolist()}"
    assert probs.dtype == np.float32 and probs.shape == gt.shape
    assert 0.0 <= probs.min() and probs.max() <= 1.0


@pytest.mark.parametrize("predictor_class", PREDICTORS)
def test_deterministic(predictor_class):
    image, gt = disk_scene()
    runs = [evaluate_sample(image, gt, predictor_class(), max_iou_thr=1.0, max_clicks=3) for _ in range(2)]
    (clicks_a, ious_a, probs_a), (clicks_b, ious_b, probs_b) = runs
    assert clicks_a == clicks_b
    np.testing.assert_array_equal(ious_a, ious_b)
    np.testing.assert_array_equal(probs_a, probs_b)


@pytest.mark.parametrize("predictor_class", PREDICTORS)
def test_negative_click_removes_a_wrongly_included_region(predictor_class):
    image, disk_a, disk_b = bridged_scene()
    predictor = predictor_class()
    predictor.set_input_image(image)
    clicker = Clicker()
    clicker.add_click(Click(is_positive=True, coords=(48, 38)))
    first = predictor.get_prediction(clicker) > 0.49
    assert first[disk_a].mean() > 0.95 and first[disk_b].mean() > 0.9, "the scene should fool the first click"
    clicker.add_click(Click(is_positive=False, coords=(48, 96)))
    second = predictor.get_prediction(clicker) > 0.49
    assert second[disk_a].mean() > 0.95 and second[disk_b].mean() < 0.05


@pytest.mark.parametrize("predictor_class", PREDICTORS)
def test_downscaled_work_gives_full_resolution_maps(predictor_class):
    image, gt = disk_scene()
    # A float image in [0, 1] (as WSESeg loads) worked on at half size.
    predictor = predictor_class(max_side=W // 2)
    predictor.set_input_image(image.astype(np.float32) / 255)
    clicker = Clicker(gt_mask=gt)
    clicker.make_next_click(np.zeros(gt.shape, dtype=bool))
    probs = predictor.get_prediction(clicker)
    assert probs.dtype == np.float32 and probs.shape == gt.shape
    y, x = clicker.get_clicks()[0].coords
    assert probs[y, x] == 1.0   # the click's disk is stamped at full resolution
    assert ((probs > 0.49) == (gt == 1)).mean() > 0.95


@pytest.mark.parametrize("predictor_class", PREDICTORS)
def test_prediction_needs_an_image(predictor_class):
    clicker = Clicker()
    clicker.add_click(Click(is_positive=True, coords=(1, 1)))
    with pytest.raises(RuntimeError, match="set_input_image"):
        predictor_class().get_prediction(clicker)


def test_grabcut_on_an_image_too_small_for_its_colour_models():
    predictor = GrabCutPredictor(seed_radius=2)
    predictor.set_input_image(np.zeros((3, 3, 3), dtype=np.uint8))
    clicker = Clicker()
    clicker.add_click(Click(is_positive=True, coords=(1, 1)))
    np.testing.assert_array_equal(predictor.get_prediction(clicker), np.ones((3, 3), dtype=np.float32))


@needs_skimage
def test_random_walker_without_background_seeds_is_all_object():
    # Every border pixel is within the clearance of the click and there is no negative click.
    predictor = RandomWalkerPredictor(border_clearance=1.0)
    predictor.set_input_image(disk_scene()[0])
    clicker = Clicker()
    clicker.add_click(Click(is_positive=True, coords=(48, 64)))
    np.testing.assert_array_equal(predictor.get_prediction(clicker), np.ones((H, W), dtype=np.float32))


def test_random_walker_names_the_missing_dependency(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage.segmentation", None)   # makes the import fail
    with pytest.raises(ImportError, match="pip install scikit-image"):
        RandomWalkerPredictor()


def test_registry():
    assert set(BASELINES) == {"grabcut", "random_walker"}
    predictor = get_baseline("grabcut", iterations=2)
    assert isinstance(predictor, GrabCutPredictor) and predictor.iterations == 2
    with pytest.raises(ValueError, match="unknown baseline 'graph_cut'; known: grabcut, random_walker"):
        get_baseline("graph_cut")
