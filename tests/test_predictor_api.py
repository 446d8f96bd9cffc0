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

import conftest
import test_emc_parity as emc_parity
from conftest import REPO
from isegm import Predictor
from isegm.data.scenes import render_scene
from isegm.inference import evaluate_sample
from isegm.inference.interactive import interactive_predictor
from isegm.model import build_emc, build_skipclick, save_checkpoint


def tiny_skipclick() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_skipclick("tiny").eval()


def tiny_emc() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_emc("segb0").eval()


def filled_skipclick() -> torch.nn.Module:
    """SkipClick with the reference ``fill.py`` weights: unlike random weights, its masks follow
    the clicks and the previous mask, so equal masks mean something."""
    return conftest._filled_model("skip")


def filled_emc() -> torch.nn.Module:
    return emc_parity.filled_model("segformer_b0")


@pytest.fixture(scope="module")
def scene() -> Tuple[np.ndarray, np.ndarray]:
    scene = render_scene(seed=3, size=(90, 130), framing="close")
    largest = max(scene.objects, key=lambda o: o.area)
    return scene.image, (scene.layers[..., largest.layer] == largest.value).astype(np.int32)


def evaluation_path(model: torch.nn.Module, image: np.ndarray, gt: np.ndarray, size: int, flip: bool,
                    clicks: int = 4) -> Tuple[List, List[np.ndarray]]:
    """The evaluation loop's clicks and probability maps (``evaluate_sample``, the interactive chain)."""
    probs: List[np.ndarray] = []
    predictor = interactive_predictor(model, size, flip)
    clicked, _, _ = evaluate_sample(image, gt, predictor, max_iou_thr=1.01, min_clicks=clicks, max_clicks=clicks,
                                    callback=lambda *args: probs.append(args[2].copy()))
    return clicked, probs


def api_path(predictor: Predictor, image: np.ndarray, clicks) -> List[Tuple[np.ndarray, np.ndarray]]:
    """The API's mask and probabilities for the same clicks, each call passing back the logits the
    previous one returned."""
    predictor.set_image(image)
    out, previous = [], None
    for n in range(1, len(clicks) + 1):
        coords = [[c.coords[1], c.coords[0]] for c in clicks[:n]]
        labels = [int(c.is_positive) for c in clicks[:n]]
        logits, _ = predictor.predict(coords, labels, mask_input=previous, return_logits=True)
        mask, low_res = predictor.predict(coords, labels, mask_input=previous)
        assert mask.dtype == bool and mask.shape == logits.shape == image.shape[:2]
        assert low_res.ndim == 3 and low_res.shape[0] == 1
        out.append((mask, 1 / (1 + np.exp(-logits.astype(np.float64)))))
        previous = low_res
    return out


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("build, size", [(filled_skipclick, 112), (filled_emc, 64)], ids=["skipclick", "emc"])
def test_masks_equal_the_evaluation_path(scene, build, size: int, flip: bool) -> None:
    image, gt = scene
    model = build()
    clicks, expected = evaluation_path(model, image, gt, size, flip)
    got = api_path(Predictor(model, device="cpu", size=size, flip=flip), image, clicks)
    for n, ((mask, prob), reference) in enumerate(zip(got, expected)):
        assert np.array_equal(mask, reference > 0.49), f"click {n + 1}"
        np.testing.assert_allclose(prob, reference, rtol=0, atol=1e-6, err_msg=f"click {n + 1}")
    assert len({int((p > 0.49).sum()) for p in expected}) > 2, "the clicks should change the mask"


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
    model = filled_skipclick()
    predictor = Predictor(model, size=112)
    predictor.set_image(image)
    foreign = np.full((1, 112, 112), -8.0, dtype=np.float32)
    foreign[:, 20:90, 10:60] = 8.0
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
