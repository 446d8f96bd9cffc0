"""On a CUDA GPU, fp32 means fp32: the Predictor's masks and logits agree with the CPU's.

Skipped without a GPU. Run on one with ``python -m pytest -q tests/test_cuda.py``."""
from __future__ import annotations

from typing import List, Tuple

import numpy as np
import pytest
import torch

from isegm import Predictor
from test_predictor_api import evaluation_path, filled_emc, filled_skipclick

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def logits_per_click(predictor: Predictor, image: np.ndarray, clicks) -> List[np.ndarray]:
    predictor.set_image(image)
    out, previous = [], None
    for n in range(1, len(clicks) + 1):
        coords = [[c.coords[1], c.coords[0]] for c in clicks[:n]]
        labels = [int(c.is_positive) for c in clicks[:n]]
        logits, previous = predictor.predict(coords, labels, mask_input=previous, return_logits=True)
        out.append(logits)
    return out


@pytest.fixture(scope="module")
def photo() -> Tuple[np.ndarray, np.ndarray]:
    """A real photograph and its object (GrabCut), so the clicks follow a real boundary."""
    import conftest
    import cv2
    root = conftest.shared_path("datasets", "GrabCut")
    image = cv2.imread(str(root / "data_GT" / "124080.jpg"))[..., ::-1].copy()
    gt = cv2.imread(str(root / "boundary_GT" / "124080.bmp"), cv2.IMREAD_GRAYSCALE) == 255
    return image, gt.astype(np.int32)


@pytest.mark.parametrize("build, size, atol", [(filled_skipclick, 448, 1e-4), (filled_emc, 384, 1e-4)],
                         ids=["skipclick", "emc"])
def test_fp32_on_cuda_equals_the_cpu(photo, build, size: int, atol: float) -> None:
    image, gt = photo
    model = build()
    clicks, _ = evaluation_path(model, image, gt, size, flip=False, clicks=6)
    cpu = logits_per_click(Predictor(model, device="cpu", size=size), image, clicks)
    gpu = logits_per_click(Predictor(build(), device="cuda", dtype="fp32", size=size), image, clicks)
    for n, (a, b) in enumerate(zip(cpu, gpu)):
        difference = float(np.abs(a - b).max())
        assert difference < atol, f"click {n + 1}: logits differ by {difference:.3g}"
        # a pixel whose logit lies within the numeric noise of 0 may fall either way
        flipped = ((a > 0) != (b > 0)) & (np.abs(a) > atol)
        assert not flipped.any(), f"click {n + 1}: {int(flipped.sum())} px changed side"
