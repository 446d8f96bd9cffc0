"""The predictor chain (ZoomIn -> sigmoid -> flip TTA) against ``transform_chain_golden.json``,
made by running the authors' ``BasePredictor`` with a synthetic network (see
``shared/reference/eval/README.md``), plus late fusion (the image encoder runs once per crop),
the points layout and the eval-size table.

The synthetic network reads channel 0 of its input as the GT (``> 0.5``), decodes the points
(clicks ordered by their index), calls the reference ``synthetic_predictor.predict`` at network
resolution with the input's prev channel and returns ``log(p) - log1p(-p)`` (p clipped to
[1e-6, 1 - 1e-6], in float64) as float32 logits. The 'image' given to the predictor is the GT:
``gt == 1`` in channel 0, ``gt == -1`` in channel 1.
"""
from __future__ import annotations

import functools
import json
from typing import Dict, List

import cv2
import numpy as np
import pytest
import torch

from conftest import SHARED, eval_file, sha16, synthetic_predictor
from isegm.inference.clicker import Click, Clicker
from isegm.inference.metrics import get_iou
from isegm.inference.predictor import BasePredictor, get_predictor, points_from_clicks, zoom_in_params
from isegm.inference.transforms import ZoomIn
from isegm.model import build_skipclick

DATASETS = SHARED / "datasets"
PRED_THR = np.float32(0.49)

# Golden config -> (model_kind, suppress) for zoom_in_params.
CONFIGS = {"fvit_cvpr_suppress_zoom": ("skipclick", True), "vit_cvpr_zoom_in": ("simpleclick", False),
           "ritm_cvpr": ("ritm", False)}
FILES = {"banana1.bmp": "GrabCut", "teddy.jpg": "GrabCut", "009.jpg": "DAVIS"}
# SkipClick's official setting and the one RITM run with a real object crop stay in the fast set
# (about 5 s together); the other five runs take about 5 s more.
FAST = {("fvit_cvpr_suppress_zoom", f) for f in FILES} | {("ritm_cvpr", "009.jpg")}
RUNS = [pytest.param(c, f, id=f"{c}-{f}", marks=() if (c, f) in FAST else pytest.mark.slow)
        for c in CONFIGS for f in FILES]


@functools.lru_cache(maxsize=None)
def golden_runs() -> Dict:
    with open(eval_file("transform_chain_golden.json")) as f:
        return {(run["config"], run["file"]): run for run in json.load(f)["runs"]}


def load_gt(dataset: str, file: str) -> np.ndarray:
    """The instance GT as the original loaders make it (int32; 1 object, -1 ignore), read
    minimally here so that this test does not depend on the dataset package."""
    stem = file.split(".")[0]
    folder = DATASETS / dataset / ("boundary_GT" if dataset == "GrabCut" else "gt")
    paths = sorted(folder.glob(f"{stem}.*"))
    if not paths:
        pytest.skip(f"dataset mask {folder / stem}.* is absent (set SKIPCLICK_SHARED to the shared/ folder)")
    mask = cv2.imread(str(paths[0]))
    if dataset == "DAVIS":
        return (mask.max(axis=2) > 0).astype(np.int32)
    raw = mask[:, :, 0]
    gt = raw.astype(np.int32)
    gt[raw == 128] = -1
    gt[raw > 128] = 1
    return gt


def float64_sum(x: torch.Tensor) -> float:
    """How the golden's sums were taken: float32 values summed in float64 by numpy."""
    return float(x.numpy().astype(np.float64).sum())


class SyntheticNet:
    """The family's forward ``net(x [B, 4, h, w], points [B, 2P, 3]) -> logits [B, 1, h, w]``
    around the reference synthetic predictor; records every call as the golden does."""

    def __init__(self) -> None:
        self.calls: List[Dict] = []

    def __call__(self, x: torch.Tensor, points: torch.Tensor) -> Dict[str, torch.Tensor]:
        self.calls.append(dict(input_shape=list(x.shape), points=points.tolist(),
                               prev_sums=[float64_sum(x[b, 3]) for b in range(x.shape[0])]))
        half = points.shape[1] // 2
        logits = []
        for b in range(x.shape[0]):
            rows = [(idx, y, xx, i < half) for i, (y, xx, idx) in enumerate(points[b].tolist()) if max(y, xx) >= 0]
            clicks = [(y, xx, pos) for _, y, xx, pos in sorted(rows)]
            gt = (x[b, 0] > 0.5).numpy().astype(np.int32)
            p = synthetic_predictor().predict(gt, clicks, x[b, 3].numpy())
            p = np.clip(p.astype(np.float64), 1e-6, 1 - 1e-6)
            logits.append((np.log(p) - np.log1p(-p)).astype(np.float32))
        return {"instances": torch.from_numpy(np.stack(logits))[:, None]}


@pytest.mark.parametrize("config, file", RUNS)
def test_chain_matches_the_original(config, file):
    """20 clicks (no early stop) through our predictor: clicks, float32 IoUs, the crop after
    every click, every network call (input shape, exact points, prev-channel sums) and every
    probability map (sha256 of the float32 bytes, foreground count, sum) as the original."""
    run = golden_runs()[config, file]
    model_kind, suppress = CONFIGS[config]
    params = zoom_in_params("cvpr", run["dataset"], model_kind, suppress)
    expected = ZoomIn(**run["zoom_in_params"])
    assert (params["target_size"], params["skip_clicks"], params["suppress"]) == (
        expected.target_size, expected.skip_clicks, expected.suppress)

    gt = load_gt(run["dataset"], file)
    assert gt.shape == (run["height"], run["width"])
    image = np.zeros(gt.shape + (3,), dtype=np.float32)
    image[..., 0] = gt == 1
    image[..., 1] = gt == -1
    net = SyntheticNet()
    predictor = BasePredictor(net, zoom_in=ZoomIn(**params), with_flip=True)
    predictor.set_input_image(image)
    maps = None
    if (config, file) == ("fvit_cvpr_suppress_zoom", "teddy.jpg"):
        maps = np.load(eval_file("transform_chain_probs.npz"))

    clicker = Clicker(gt_mask=gt)
    pred_mask = np.zeros(gt.shape, dtype=bool)
    ious = []
    for i in range(20):
        click = clicker.make_next_click(pred_mask)
        prob = predictor.get_prediction(clicker)
        pred_mask = prob > PRED_THR
        ious.append(get_iou(gt, pred_mask))
        where = f"{config} {file} click {i + 1}"
        assert [*click.coords, int(click.is_positive)] == run["clicks"][i], where
        roi = predictor.zoom_in.object_roi
        assert (list(roi) if roi is not None else None) == run["object_roi_after_click"][i], where
        call, want = net.calls[i], run["net_calls"][i]
        assert call["input_shape"] == want["input_shape"], where
        assert call["points"] == want["points"], where
        # Float64 sums of the float32 maps, summed as the golden did: equal bit for bit.
        assert call["prev_sums"] == [want["prev_sum_b0"], want["prev_sum_b1"]], where
        assert prob.dtype == np.float32 and prob.shape == gt.shape, where
        assert sha16(prob) == run["per_click"][i]["prob_sha16"], where
        assert int(pred_mask.sum()) == run["per_click"][i]["n_pred_fg"], where
        prob_sum = float64_sum(torch.from_numpy(prob))
        assert prob_sum == run["per_click"][i]["prob_sum"], where
        if maps is not None and i < 3:
            np.testing.assert_array_equal(prob, maps[f"teddy_fvit_click{i + 1}_prob"], err_msg=where)
    assert len(net.calls) == 20
    np.testing.assert_array_equal(np.array(ious, dtype=np.float32), np.array(run["ious"], dtype=np.float32))


# --- late fusion -------------------------------------------------------------------------------

class FakeLateFusion:
    """A late-fusion model whose logits are +10 inside radius-8 disks around the positive clicks
    and -10 elsewhere (negative disks win), counting its encoder runs."""

    def __init__(self) -> None:
        self.encoded: List[tuple] = []
        self.decoded = 0

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        self.encoded.append(tuple(image.shape))
        return image

    def decode(self, features: torch.Tensor, points: torch.Tensor, prev_mask: torch.Tensor) -> torch.Tensor:
        self.decoded += 1
        assert features.shape[0] == points.shape[0] == prev_mask.shape[0]
        h, w = features.shape[-2:]
        rows = torch.arange(h, dtype=torch.float64)[:, None]
        cols = torch.arange(w, dtype=torch.float64)[None, :]
        logits = torch.full((points.shape[0], 1, h, w), -10.0)
        half = points.shape[1] // 2
        for b in range(points.shape[0]):
            for i, (y, x, _) in enumerate(points[b].tolist()):
                if max(y, x) >= 0:
                    logits[b, 0][(rows - y) ** 2 + (cols - x) ** 2 <= 64] = 10.0 if i < half else -10.0
        return logits

    def __call__(self, x: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode_image(x[:, :3]), points, x[:, 3:])


def click_sequence(predictor: BasePredictor, clicks: List[Click]) -> List[np.ndarray]:
    clicker = Clicker()
    probs = []
    for click in clicks:
        clicker.add_click(click)
        probs.append(predictor.get_prediction(clicker))
    return probs


@pytest.fixture(scope="module")
def tiny_skipclick():
    torch.manual_seed(0)
    return build_skipclick("skipclick", backbone="dinov2_vits14_reg", fusion_depth=1, fusion_heads=6,
                           fpn_dims=(16, 32, 64, 128), head_channels=32).eval()


class Counting:
    """Wraps a late-fusion model and counts its ``encode_image`` calls."""

    def __init__(self, model) -> None:
        self.model, self.encoded = model, 0

    def encode_image(self, image):
        self.encoded += 1
        return self.model.encode_image(image)

    def decode(self, features, points, prev_mask):
        return self.model.decode(features, points, prev_mask)


def test_skipclick_encodes_once_per_image_and_equals_its_forward(tiny_skipclick):
    """Suppressed zoom (SkipClick's setting): one encoder run per image, flip copy included in
    its batch, and the same maps as the family's forward ``model(cat([image, prev]), points)``."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (60, 90, 3), dtype=np.uint8) for _ in range(2)]
    clicks = [Click(True, (30, 45)), Click(False, (10, 80)), Click(False, (58, 88))]
    late = Counting(tiny_skipclick)
    params = dict(target_size=(56, 84), skip_clicks=-1, suppress=True)
    fused = BasePredictor(late, zoom_in=ZoomIn(**params))
    family = BasePredictor(lambda x, points: tiny_skipclick(x, points), zoom_in=ZoomIn(**params))
    for n, image in enumerate(images, 1):
        fused.set_input_image(image)
        family.set_input_image(image)
        for a, b in zip(click_sequence(fused, clicks), click_sequence(family, clicks)):
            np.testing.assert_array_equal(a, b)
        assert late.encoded == n


def test_zoom_in_reencodes_only_when_the_crop_changes():
    """With zoom-in the encoder reruns exactly when the crop box changes; the maps equal those of
    the family-forward path."""
    image = np.random.default_rng(1).random((400, 600, 3), dtype=np.float32)
    clicks = [Click(True, (100, 100)),    # no previous mask: the full image
              Click(True, (110, 120)),    # crop around the first disk
              Click(True, (105, 110)),    # inside it, about the same box: kept
              Click(True, (350, 550))]    # outside it: a new crop
    late, family = FakeLateFusion(), FakeLateFusion()
    predictors = [BasePredictor(net, zoom_in=ZoomIn(target_size=(112, 112), skip_clicks=-1))
                  for net in (late, lambda x, points: family(x, points))]
    rois, encoded = [], []
    clicker = Clicker()
    for p in predictors:
        p.set_input_image(image)
    for click in clicks:
        clicker.add_click(click)
        a, b = (p.get_prediction(clicker) for p in predictors)
        np.testing.assert_array_equal(a, b)
        rois.append(predictors[0].zoom_in.object_roi)
        encoded.append(len(late.encoded))
    assert rois[0] == (0, 399, 0, 599) and rois[1] != rois[0] and rois[2] == rois[1] and rois[3] != rois[2]
    assert encoded == [1, 2, 2, 3]
    assert late.encoded == [(2, 3, 112, 112)] * 3
    assert len(family.encoded) == late.decoded == family.decoded == 4


def test_zoom_in_recompute_pass_after_an_unzoomed_first_click():
    """``skip_clicks=0``: a small object found on the full-resolution first pass is predicted again
    inside its crop, as the original's recalculation does."""
    net = FakeLateFusion()
    predictor = BasePredictor(net, zoom_in=ZoomIn(target_size=(112, 112), skip_clicks=0))
    predictor.set_input_image(np.zeros((400, 600, 3), dtype=np.uint8))
    prob, = click_sequence(predictor, [Click(True, (100, 100))])
    assert net.encoded == [(2, 3, 400, 600), (2, 3, 112, 112)] and net.decoded == 2
    roi = predictor.zoom_in.object_roi
    assert roi is not None and prob[roi[0]:roi[1] + 1, roi[2]:roi[3] + 1].max() > 0.5
    outside = np.ones(prob.shape, dtype=bool)
    outside[roi[0]:roi[1] + 1, roi[2]:roi[3] + 1] = False
    assert not prob[outside].any()


def test_unzoomed_click_after_a_crop_keeps_its_full_resolution_map():
    """RITM-style ``skip_clicks=1``: once the previous mask is empty the click is not zoomed and its
    map is returned as computed (the documented difference from the original), while the crop
    is kept for the next comparisons."""
    net = FakeLateFusion()
    predictor = BasePredictor(net, zoom_in=ZoomIn(target_size=200), with_flip=False)
    predictor.set_input_image(np.zeros((400, 600, 3), dtype=np.uint8))
    probs = click_sequence(predictor, [Click(True, (100, 100)), Click(True, (100, 100)),
                                       Click(False, (100, 100)), Click(True, (300, 500))])
    assert net.encoded[:2] == [(1, 3, 400, 600), (1, 3, 200, 200)]
    assert not (probs[2] > 0.5).any()
    assert net.encoded[2:] == [(1, 3, 400, 600)]
    roi = predictor.zoom_in.object_roi
    assert roi is not None and probs[3][300, 500] > 0.5 and probs[3][100, 100] < 0.5


# --- points layout, eval sizes, input checks ---------------------------------------------------

def test_points_layout_and_clicks_limit():
    clicks = [Click(True, (1.5, 2.0), 0), Click(False, (3, 4), 1), Click(False, (5, 6), 2), Click(True, (7, 8), 3)]
    pad = [-1.0, -1.0, -1.0]
    points = points_from_clicks([clicks])
    assert points.dtype == torch.float64
    assert points.tolist() == [[[1.5, 2, 0], [7, 8, 3], [3, 4, 1], [5, 6, 2]]]
    # The first N clicks are kept; P = the largest count of one sign in the full lists, capped.
    assert points_from_clicks([clicks], clicks_limit=2).tolist() == [[[1.5, 2, 0], pad, [3, 4, 1], pad]]
    assert points_from_clicks([clicks[:1], clicks]).tolist()[0] == [[1.5, 2, 0], pad, pad, pad]
    assert points_from_clicks([[]]).tolist() == [[pad, pad]]


@pytest.mark.parametrize("mode, dataset, kind, want", [
    ("cvpr", "GrabCut", "skipclick", ((448, 448), -1)),
    ("cvpr", "DAVIS", "skipclick", ((672, 672), -1)),
    ("cvpr", "HQSeg", "simpleclick", ((896, 896), -1)),
    ("cvpr", "WSESeg_flickr_curling_stone", "skipclick", ((896, 896), -1)),
    ("cvpr", "SHSeg", "skipclick", ((896, 896), -1)),
    ("cvpr", "GrabCut", "ritm", (400, 1)),
    ("cvpr", "DAVIS", "ritm", (600, 1)),
    ("cvpr", "HQSeg", "ritm", (1024, 1)),
    ("cvpr", "WSESeg_yt_sports", "ritm", (1024, 1)),
    ("fixed336", "DAVIS", "skipclick", ((336, 336), -1)),
    ("fixed336,504", "DAVIS", "skipclick", ((336, 504), -1)),
    ("fixed400", "DAVIS", "ritm", ((400, 400), -1)),
])
def test_zoom_in_params_table(mode, dataset, kind, want):
    params = zoom_in_params(mode, dataset, kind, suppress=True)
    assert (params["target_size"], params["skip_clicks"], params["suppress"]) == (*want, True)


@pytest.mark.parametrize("mode, kind", [("fixed400,600", "ritm"), ("fixed", "skipclick"), ("fixed1,2,3", "skipclick"),
                                        ("nocvpr", "skipclick"), ("cvpr", "sam")])
def test_zoom_in_params_rejects(mode, kind):
    with pytest.raises(ValueError):
        zoom_in_params(mode, "GrabCut", kind)


def test_get_predictor_and_input_checks():
    net = FakeLateFusion()
    predictor = get_predictor(net, "cvpr", "DAVIS", suppress_zoom=True)
    assert predictor.with_flip and predictor.zoom_in.target_size == (672, 672) and predictor.zoom_in.suppress
    with pytest.raises(RuntimeError, match="set_input_image"):
        predictor.get_prediction(Clicker())
    for bad in (np.zeros((4, 5), np.uint8), np.zeros((4, 5, 4), np.uint8), np.zeros((4, 5, 3), np.int64)):
        with pytest.raises(ValueError, match="image must be"):
            predictor.set_input_image(bad)
    # uint8 images are divided by 255 (torchvision's ToTensor in the original).
    image = np.arange(60, dtype=np.uint8).reshape(4, 5, 3)
    predictor.set_input_image(image)
    torch.testing.assert_close(predictor.original_image[0].permute(1, 2, 0),
                               torch.from_numpy(image).float().div(255), rtol=0, atol=0)


# --- several instances at once ------------------------------------------------------------------

class BatchCounting(Counting):
    """``Counting`` that also records the batch of every ``decode``."""

    def __init__(self, model) -> None:
        super().__init__(model)
        self.decoded: List[int] = []

    def decode(self, features, points, prev_mask):
        self.decoded.append(points.shape[0])
        return super().decode(features, points, prev_mask)


def grabcut(n: int):
    root = DATASETS / "GrabCut"
    if not root.is_dir():
        pytest.skip(f"dataset {root} is absent (set SKIPCLICK_SHARED to the shared/ folder)")
    from isegm.data import FirstSamples
    from isegm.data.datasets import GrabCutDataset
    return FirstSamples(GrabCutDataset(root), n)


def run_with_maps(dataset, predictor, batch_size: int):
    from isegm.inference.evaluation import run_dataset
    maps: Dict[int, List[np.ndarray]] = {}

    def keep(image, gt, probs, sample_id, click_index, clicks):
        maps.setdefault(sample_id, []).append(probs)

    result = run_dataset(dataset, predictor, max_iou_thr=1.01, max_clicks=4, batch_size=batch_size, callback=keep)
    return [(r.sample_index, r.ious.tolist(), r.clicks) for r in result.instances], maps


@pytest.mark.parametrize("suppress", [True, False], ids=["suppress_zoom", "zoom_in"])
def test_batched_skipclick_equals_one_by_one_on_real_images(tiny_skipclick, suppress):
    """Three GrabCut instances decoded together: every click and IoU equals the one-by-one run,
    and the maps agree to float rounding (batched GEMMs may round differently)."""
    dataset = grabcut(3)
    params = dict(target_size=(56, 84), skip_clicks=-1, suppress=suppress)
    single = run_with_maps(dataset, BasePredictor(tiny_skipclick, zoom_in=ZoomIn(**params)), 1)
    net = BatchCounting(tiny_skipclick)
    batched = run_with_maps(dataset, BasePredictor(net, zoom_in=ZoomIn(**params)), 3)
    assert batched[0] == single[0]
    assert net.decoded == [6] * 4   # 3 instances x (image + flip), one decode per click
    for index, maps in single[1].items():
        for a, b in zip(maps, batched[1][index]):
            np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)


def test_batched_steps_group_instances_by_network_size():
    """RITM zoom-in (longest side 200): crops of different shapes go through the network in one
    call per size, with exactly the one-by-one maps."""
    dataset = grabcut(4)
    single = run_with_maps(dataset, BasePredictor(FakeLateFusion(), zoom_in=ZoomIn(target_size=200)), 1)
    net = FakeLateFusion()
    batched = run_with_maps(dataset, BasePredictor(net, zoom_in=ZoomIn(target_size=200)), 4)
    assert batched[0] == single[0]
    for index, maps in single[1].items():
        for a, b in zip(maps, batched[1][index]):
            np.testing.assert_array_equal(a, b)
    assert len({shape for shape in net.encoded}) > 2 and net.decoded < 16
