"""The Python API (``isegm.Predictor``): SAM's conventions over the evaluation chain, masks equal
to the evaluation path's for the same clicks, both model families."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest
import torch

from conftest import REPO
from isegm import Predictor
from isegm.data.scenes import render_scene
from isegm.inference import evaluate_sample
from isegm.inference.interactive import interactive_predictor
from isegm.model import build_emc, build_skipclick, save_checkpoint


def tiny_skipclick() -> torch.nn.Module:
    """The tiny SkipClick with its last bias shifted so that probabilities straddle the 0.49
    threshold: masks then depend on every click and on the previous mask."""
    torch.manual_seed(0)
    model = build_skipclick("tiny").eval()
    with torch.no_grad():
        probe = model(torch.rand(1, 4, 112, 112), torch.tensor([[[50.0, 50.0, 0.0], [-1.0, -1.0, -1.0]]]))
        logits = probe["instances"] if isinstance(probe, dict) else probe
        last_bias = [p for name, p in model.named_parameters() if name.endswith("bias")][-1]
        last_bias -= logits.median()
    return model


def tiny_emc() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_emc("segb0").eval()


@pytest.fixture(scope="module")
def scene() -> Tuple[np.ndarray, np.ndarray]:
    scene = render_scene(seed=3, size=(90, 130), framing="close")
    largest = max(scene.objects, key=lambda o: o.area)
    return scene.image, (scene.layers[..., largest.layer] == largest.value).astype(np.int32)


def evaluation_masks(model: torch.nn.Module, image: np.ndarray, gt: np.ndarray, size: int, flip: bool,
                     clicks: int = 4) -> Tuple[List, List[np.ndarray]]:
    """The evaluation loop's clicks and masks (``evaluate_sample`` with the interactive chain)."""
    masks: List[np.ndarray] = []
    predictor = interactive_predictor(model, size, flip)
    clicked, _, _ = evaluate_sample(image, gt, predictor, max_iou_thr=1.01, min_clicks=clicks, max_clicks=clicks,
                                    callback=lambda *args: masks.append(args[2] > 0.49))
    return clicked, masks


def api_masks(predictor: Predictor, image: np.ndarray, clicks) -> List[np.ndarray]:
    """The API's masks for the same clicks, each call passing back the previous logits."""
    predictor.set_image(image)
    masks, logits = [], None
    for n in range(1, len(clicks) + 1):
        coords = [[c.coords[1], c.coords[0]] for c in clicks[:n]]
        labels = [int(c.is_positive) for c in clicks[:n]]
        mask, logits = predictor.predict(coords, labels, mask_input=logits)
        assert mask.dtype == bool and mask.shape == image.shape[:2]
        assert logits.ndim == 3 and logits.shape[0] == 1
        masks.append(mask)
    return masks


@pytest.mark.parametrize("flip", [False, True])
def test_skipclick_masks_equal_the_evaluation_path(scene, flip: bool) -> None:
    image, gt = scene
    model = tiny_skipclick()
    clicks, expected = evaluation_masks(model, image, gt, 112, flip)
    got = api_masks(Predictor(model, device="cpu", size=112, flip=flip), image, clicks)
    assert len({int(m.sum()) for m in expected}) > 1, "the masks should change from click to click"
    for n, (a, b) in enumerate(zip(got, expected)):
        assert np.array_equal(a, b), f"click {n + 1}"


@pytest.mark.parametrize("flip", [False, True])
def test_emc_masks_equal_the_evaluation_path(scene, flip: bool) -> None:
    image, gt = scene
    model = tiny_emc()
    clicks, expected = evaluation_masks(model, image, gt, 64, flip)
    got = api_masks(Predictor(model, device="cpu", size=64, flip=flip), image, clicks)
    for n, (a, b) in enumerate(zip(got, expected)):
        assert np.array_equal(a, b), f"click {n + 1}"


def test_checkpoint_file_bgr_and_logits(scene, tmp_path: Path) -> None:
    image, _ = scene
    model = tiny_skipclick()
    path = tmp_path / "tiny.pth"
    save_checkpoint(model, path)
    from_model, from_file = Predictor(model, size=112), Predictor(str(path), device="cpu", size=112)
    from_model.set_image(image)
    from_file.set_image(np.ascontiguousarray(image[..., ::-1]), image_format="BGR")
    mask, low = from_model.predict([[60, 40]], [1])
    logits, low_file = from_file.predict(np.array([[60, 40]]), np.array([1]), return_logits=True)
    assert logits.dtype == np.float32 and logits.shape == image.shape[:2]
    assert np.array_equal(mask, 1 / (1 + np.exp(-logits)) > 0.49)
    np.testing.assert_allclose(low, low_file, atol=1e-5)


def test_foreign_mask_input_is_the_previous_mask(scene) -> None:
    """A logits map the predictor did not return becomes the previous mask, as a predicted one
    would: the result equals the chain's with that map as its state."""
    image, _ = scene
    model = tiny_skipclick()
    predictor = Predictor(model, size=112)
    predictor.set_image(image)
    foreign = np.full((1, 112, 112), -4.0, dtype=np.float32)
    foreign[:, 30:80, 40:90] = 4.0
    mask, _ = predictor.predict([[60, 40]], [1], mask_input=foreign)
    chain = interactive_predictor(model, 112)
    chain.set_input_image(image)
    chain.set_mask_input(foreign)
    from isegm.inference import Click, Clicker
    clicker = Clicker()
    clicker.add_click(Click(True, (40, 60)))
    assert np.array_equal(mask, chain.get_prediction(clicker) > 0.49)
    empty, _ = predictor.predict([[60, 40]], [1])
    assert not np.array_equal(mask, empty), "the mask input should change the prediction"


def test_emc_refuses_a_foreign_mask(scene) -> None:
    image, _ = scene
    predictor = Predictor(tiny_emc(), size=64)
    predictor.set_image(image)
    with pytest.raises(ValueError, match="pass back as mask_input the logits that predict returned"):
        predictor.predict([[60, 40]], [1], mask_input=np.zeros((1, 16, 23), np.float32))


def test_bad_input_names_the_value(scene) -> None:
    image, _ = scene
    predictor = Predictor(tiny_skipclick(), size=112)
    with pytest.raises(RuntimeError, match="set_image"):
        predictor.predict([[1, 1]], [1])
    with pytest.raises(ValueError, match="uint8"):
        predictor.set_image(image.astype(np.float32))
    with pytest.raises(ValueError, match="image_format"):
        predictor.set_image(image, image_format="RGBA")
    predictor.set_image(image)
    assert predictor.is_image_set and predictor.original_size == image.shape[:2]
    with pytest.raises(ValueError, match=r"point_coords\[1\] = \[130.0, 5.0\] lies outside the 130 x 90 image"):
        predictor.predict([[1, 1], [130, 5]], [1, 0])
    with pytest.raises(ValueError, match="point_labels must be 1"):
        predictor.predict([[1, 1]], [2])
    with pytest.raises(ValueError, match=r"point_labels must be \(2,\)"):
        predictor.predict([[1, 1], [2, 2]], [1])
    with pytest.raises(ValueError, match="N >= 1"):
        predictor.predict(np.zeros((0, 2)), np.zeros(0))
    with pytest.raises(ValueError, match="multimask_output"):
        predictor.predict([[1, 1]], [1], multimask_output=True)
    with pytest.raises(ValueError, match="size 100 is not a positive multiple of the model's patch size 8; use e.g. 96"):
        Predictor(tiny_skipclick(), size=100)
    predictor.reset_image()
    assert not predictor.is_image_set


def test_import_isegm_is_light() -> None:
    """``import isegm`` loads neither torch nor the model code (the ONNX path relies on it)."""
    code = "import sys, isegm; isegm.__version__; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
