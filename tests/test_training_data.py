"""Training data on hand-made files: ``scripts/convert_annotations.py`` on tiny COCO panoptic and
LVIS files (polygons, RLE, a part inside an object, duplicates, a crowd segment, stuff) read back
by ``CocoLvisDataset``; ``CocoDataset`` on a tiny instances JSON; ``SBDDataset`` on tiny .mat
files; resuming an interrupted conversion; clear errors for missing and empty inputs."""
from __future__ import annotations

import importlib.util
import json
import os
import pickle
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import cv2
import numpy as np
import pytest

from conftest import REPO
from isegm.data.datasets.base import DatasetError, DatasetNotFoundError
from isegm.data.datasets.coco import CocoDataset, decode_segmentation
from isegm.data.datasets.coco_lvis import CocoLvisDataset
from isegm.data.datasets.sbd import SBDDataset
from isegm.data.sample import TrainingSample


def load_script():
    spec = importlib.util.spec_from_file_location("convert_annotations", REPO / "scripts" / "convert_annotations.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # dataclasses (and worker processes) look their module up by name
    spec.loader.exec_module(module)
    return module


ca = load_script()
H = W = 64


class FirstRootSampler:
    """Target = the first root object, no clicks: enough to run ``dataset[i]``."""

    def sample(self, sample: TrainingSample, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
        return sample.get_object_mask(sample.root_objects[0]).astype(np.float32), np.full((2, 3), -1, np.float32)


def rect(r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    """bool H x W mask of rows r0..r1 and columns c0..c1 (inclusive)."""
    mask = np.zeros((H, W), bool)
    mask[r0:r1 + 1, c0:c1 + 1] = True
    return mask


def polygon(r0: int, r1: int, c0: int, c1: int) -> List[List[float]]:
    """The COCO polygon (x, y vertices) whose filling is ``rect(r0, r1, c0, c1)``."""
    return [[c0, r0, c1, r0, c1, r1, c0, r1]]


def rle(mask: np.ndarray) -> Dict:
    """Uncompressed COCO RLE: run lengths over the column-major pixels, background first."""
    flat = mask.T.ravel().astype(np.int8)
    edges = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    runs = np.diff(edges).tolist()
    return {"size": list(mask.shape), "counts": ([0] if flat[0] else []) + runs}


def write_image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 255, (H, W, 3), dtype=np.uint8))


def write_panoptic(path: Path, ids: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    bgr = np.stack([ids // 65536, (ids // 256) % 256, ids % 256], axis=2).astype(np.uint8)
    cv2.imwrite(str(path), bgr)


# Image 1. COCO: thing 10 (duplicated by LVIS A, so dropped), crowd thing 11, stuff 20 (kept)
# and 21 (too small). LVIS: A, B (a part inside A), E (a polygon that the later RLE C
# duplicates, so dropped), C (RLE), D (too small).
A, B, C = rect(5, 24, 5, 24), rect(6, 17, 6, 17), rect(30, 39, 0, 19)
CROWD, STUFF = rect(40, 49, 40, 59), rect(50, 63, 0, 63)
# Image 2: one LVIS object, no COCO segment. Image 3: only a too small LVIS object.
G = rect(10, 29, 30, 49)


def make_coco_lvis(root: Path) -> Path:
    """COCO 2017 folder (images, panoptic JSON and PNGs, LVIS JSON) for the train split."""
    ids1 = np.zeros((H, W), np.int64)
    ids1[rect(5, 24, 5, 24)], ids1[CROWD], ids1[STUFF], ids1[rect(0, 2, 30, 63)] = 10, 11, 20, 21
    panoptic = {
        "categories": [{"id": 1, "isthing": 1, "name": "person"}, {"id": 2, "isthing": 1, "name": "ski"},
                       {"id": 100, "isthing": 0, "name": "snow"}],
        "annotations": [
            {"image_id": 1, "file_name": "000000000001.png", "segments_info": [
                {"id": 10, "category_id": 1, "iscrowd": 0}, {"id": 11, "category_id": 1, "iscrowd": 1},
                {"id": 20, "category_id": 100, "iscrowd": 0}, {"id": 21, "category_id": 100, "iscrowd": 0}]},
            {"image_id": 2, "file_name": "000000000002.png", "segments_info": []},
            {"image_id": 3, "file_name": "000000000003.png", "segments_info": []},
            {"image_id": 4, "file_name": "000000000004.png", "segments_info": []},   # not in LVIS
        ]}
    for image_id in (1, 2, 3, 4):
        write_image(root / "train2017" / f"{image_id:012d}.jpg", image_id)
        write_panoptic(root / "annotations" / "panoptic_train2017" / f"{image_id:012d}.png",
                       ids1 if image_id == 1 else np.zeros((H, W), np.int64))
    (root / "annotations" / "panoptic_train2017.json").write_text(json.dumps(panoptic))

    def image(image_id: int) -> Dict:
        return {"id": image_id, "height": H, "width": W,
                "coco_url": f"http://images.cocodataset.org/train2017/{image_id:012d}.jpg"}

    lvis = {"images": [image(1), image(2), image(3), image(5)], "categories": [], "annotations": [
        {"id": 1, "image_id": 1, "segmentation": polygon(5, 24, 5, 24)},
        {"id": 2, "image_id": 1, "segmentation": polygon(6, 17, 6, 17)},
        {"id": 3, "image_id": 1, "segmentation": polygon(30, 39, 0, 19)},
        {"id": 4, "image_id": 1, "segmentation": rle(C)},
        {"id": 5, "image_id": 1, "segmentation": polygon(60, 62, 0, 9)},
        {"id": 6, "image_id": 2, "segmentation": polygon(10, 29, 30, 49)},
        {"id": 7, "image_id": 3, "segmentation": polygon(0, 1, 0, 1)},
        {"id": 8, "image_id": 5, "segmentation": polygon(0, 20, 0, 20)},   # not in the panoptic file
    ]}
    (root / "annotations" / "lvis_v1_train.json").write_text(json.dumps(lvis))
    return root


@pytest.fixture()
def coco_root(tmp_path: Path) -> Path:
    return make_coco_lvis(tmp_path / "coco")


def test_convert_then_read_back(coco_root: Path, tmp_path: Path):
    out = tmp_path / "cocolvis"
    annotation = ca.convert(coco_root, out)
    assert list(annotation) == ["000000000001", "000000000002"]
    assert annotation["000000000001"] == {"num_instance_masks": 4, "hierarchy": {
        0: None, 1: {"children": [2], "parent": None, "node_level": 0},
        2: {"children": [], "parent": 1, "node_level": 1}, 3: None}}
    with open(out / "train" / "hannotation.pickle", "rb") as f:
        assert pickle.load(f) == annotation
    assert not (out / "train" / "hannotation.pickle.partial").exists()
    assert sorted(p.name for p in (out / "train" / "images").iterdir()) == ["000000000001.jpg", "000000000002.jpg"]
    # The original reader's calls on the mask file: cv2.imdecode of each layer, objects mapping.
    with open(out / "train" / "masks" / "000000000001.pickle", "rb") as f:
        encoded, mapping = pickle.load(f)
    layers = np.stack([cv2.imdecode(x, cv2.IMREAD_UNCHANGED) for x in encoded], axis=2)
    expected = [CROWD, A, B, C, STUFF]
    assert [bool(((layers[:, :, lay] == val) == m).all()) for (lay, val), m in zip(mapping, expected)] == [True] * 5
    assert mapping[1][0] != mapping[2][0]   # the part overlaps its object: another layer

    dataset = CocoLvisDataset(out, FirstRootSampler())
    assert len(dataset) == 2 and [s[0] for s in dataset.dataset_samples] == ["000000000001", "000000000002"]
    sample = dataset.get_sample(0, np.random.default_rng(0))
    assert sample.objects_ids == [0, 1, 2, 3] and sample.root_objects == [0, 1, 3]
    assert sample.objects[2].parent == 1 and sample.objects[1].children == [2]
    for obj_id, mask in enumerate(expected[:4]):
        assert (sample.get_object_mask(obj_id) == mask).all(), obj_id
    assert sample.get_background_mask()[STUFF].all()   # stuff cleared without stuff_prob
    image = cv2.cvtColor(cv2.imread(str(coco_root / "train2017" / "000000000001.jpg")), cv2.COLOR_BGR2RGB)
    assert (sample.image == image).all()

    with_stuff = CocoLvisDataset(out, FirstRootSampler(), stuff_prob=1.0).get_sample(0, np.random.default_rng(0))
    assert with_stuff.objects_ids == [0, 1, 2, 3, 4] and (with_stuff.get_object_mask(4) == STUFF).all()

    item = dataset[1]
    assert item["images"].shape == (3, H, W) and float(item["images"].max()) <= 1.0
    assert item["points"].shape == (2, 3) and (item["points"] == -1).all()
    assert item["instances"].shape == (1, H, W) and (item["instances"][0].numpy() == G).all()


def test_convert_drop_crowd_with_workers_and_copies(coco_root: Path, tmp_path: Path):
    out = tmp_path / "cocolvis"
    annotation = ca.convert(coco_root, out, image_mode="copy", drop_crowd=True, workers=2)
    assert annotation["000000000001"]["num_instance_masks"] == 3
    sample = CocoLvisDataset(out, FirstRootSampler(), stuff_prob=1.0).get_sample(0, np.random.default_rng(0))
    assert [(sample.get_object_mask(i) == m).all() for i, m in enumerate([A, B, C, STUFF])] == [True] * 4
    assert not (out / "train" / "images" / "000000000001.jpg").is_symlink()


def test_convert_resumes_after_interruption(coco_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    out = tmp_path / "cocolvis"
    converted = []
    original = ca.convert_image

    def interrupted(task, settings):
        if converted:
            raise KeyboardInterrupt
        converted.append(task.name)
        return original(task, settings)

    monkeypatch.setattr(ca, "convert_image", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ca.convert(coco_root, out)
    journal = out / "train" / "hannotation.pickle.partial"
    assert converted == ["000000000001"] and journal.is_file() and not (out / "train" / "hannotation.pickle").exists()
    with open(journal, "ab") as f:
        f.write(b"\x80\x04\x95")   # a record cut short by the interruption

    def counting(task, settings):
        converted.append(task.name)
        return original(task, settings)

    monkeypatch.setattr(ca, "convert_image", counting)
    converted.clear()
    resumed = ca.convert(coco_root, out)
    assert converted == ["000000000002", "000000000003"]
    assert resumed == ca.convert(coco_root, tmp_path / "fresh")
    converted.clear()
    assert ca.main(["--coco-root", str(coco_root), "--output", str(out)]) == 0
    assert converted == ["000000000003"]   # only the image without objects is looked at again


def test_convert_names_missing_inputs(coco_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    (coco_root / "annotations" / "lvis_v1_train.json").unlink()
    assert ca.main(["--coco-root", str(coco_root), "--output", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "lvis_v1_train.json" in err and "https://www.lvisdataset.org/dataset" in err
    (coco_root / "annotations" / "panoptic_train2017.json").unlink()
    with pytest.raises(ca.ConversionError, match=r"panoptic_train2017\.json.*https://cocodataset\.org/#download"):
        ca.convert(coco_root, tmp_path / "out")


class RunsCode:
    """Unpickles by calling a function: what a dataset pickle must never do."""

    def __reduce__(self):
        return os.getcwd, ()


def test_coco_lvis_errors(coco_root: Path, tmp_path: Path):
    with pytest.raises(DatasetNotFoundError, match=r"(?s)is not a folder.*hannotation\.pickle.*LVIS_v1_PATH"):
        CocoLvisDataset(tmp_path / "nowhere", FirstRootSampler())
    out = tmp_path / "cocolvis"
    ca.convert(coco_root, out)
    anno = out / "train" / "hannotation.pickle"
    with pytest.raises(DatasetNotFoundError, match=r"missing .*hannotation_v2\.pickle"):
        CocoLvisDataset(out, FirstRootSampler(), anno_file="hannotation_v2.pickle")
    (out / "train" / "allow.json").write_text(json.dumps(["000000000002"]))
    allowed = CocoLvisDataset(out, FirstRootSampler(), allow_list_name="allow.json")
    assert [s[0] for s in allowed.dataset_samples] == ["000000000002"]
    anno.write_bytes(pickle.dumps({}))
    with pytest.raises(DatasetNotFoundError, match=r"no images in .*hannotation\.pickle"):
        CocoLvisDataset(out, FirstRootSampler())
    anno.write_bytes(pickle.dumps(RunsCode()))
    with pytest.raises(DatasetError, match=r"cannot read annotation file .*hannotation\.pickle.*not allowed"):
        CocoLvisDataset(out, FirstRootSampler())


def test_decode_segmentation_rle_and_polygons():
    small = np.zeros((6, 5), bool)
    small[1:4, 1:3], small[5, 4], small[0, 4] = True, True, True
    assert (decode_segmentation({"size": [6, 5], "counts": "73305NL0"}, 6, 5) == small).all()
    big = rect(20, 44, 30, 49)
    counts = "dl1i0W10000000000000000000000000000000000000\\k0"
    assert (decode_segmentation({"size": [H, W], "counts": counts}, H, W) == big).all()
    assert (decode_segmentation(rle(big), H, W) == big).all()
    two = decode_segmentation(polygon(0, 3, 0, 3) + polygon(2, 5, 2, 5), H, W)
    assert (two == rect(0, 3, 0, 3) | rect(2, 5, 2, 5)).all()   # polygons of one object unite
    with pytest.raises(ValueError, match="RLE size"):
        decode_segmentation({"size": [2, 2], "counts": [4]}, H, W)


def test_rle_matches_pycocotools():
    mask_utils = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(0)
    for _ in range(20):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        mask = rng.random((h, w)) < rng.random()
        encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        assert (decode_segmentation({"size": [h, w], "counts": encoded["counts"].decode()}, h, w) == mask).all()


def make_coco(root: Path) -> Tuple[Path, Path]:
    """Two images: the first with two overlapping people (polygon, compressed RLE), a ski and a
    crowd; the second with a crowd only."""
    write_image(root / "images" / "a.jpg", 1)
    write_image(root / "images" / "sub" / "b.jpg", 2)
    data = {
        "images": [{"id": 7, "file_name": "a.jpg", "height": H, "width": W},
                   {"id": 8, "file_name": "sub/b.jpg", "height": H, "width": W}],
        "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "ski"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 1, "iscrowd": 0, "segmentation": polygon(10, 39, 10, 39)},
            {"id": 2, "image_id": 7, "category_id": 1, "iscrowd": 0,
             "segmentation": {"size": [H, W], "counts": "dl1i0W10000000000000000000000000000000000000\\k0"}},
            {"id": 3, "image_id": 7, "category_id": 2, "iscrowd": 0, "segmentation": polygon(50, 55, 0, 20)},
            {"id": 4, "image_id": 7, "category_id": 1, "iscrowd": 1, "segmentation": rle(rect(0, 5, 50, 63))},
            {"id": 5, "image_id": 8, "category_id": 1, "iscrowd": 1, "segmentation": rle(rect(0, 5, 0, 5))},
        ]}
    path = root / "instances.json"
    path.write_text(json.dumps(data))
    return root / "images", path


def test_coco_dataset(tmp_path: Path):
    images, annotations = make_coco(tmp_path)
    dataset = CocoDataset(images, annotations, FirstRootSampler())
    assert len(dataset) == 1   # the crowd-only image has nothing to click on
    sample = dataset.get_sample(0, np.random.default_rng(0))
    person, other, ski, crowd = rect(10, 39, 10, 39), rect(20, 44, 30, 49), rect(50, 55, 0, 20), rect(0, 5, 50, 63)
    assert sample.objects_ids == [0, 1, 2] and sample.layers.shape[2] == 2   # the two people overlap
    for obj_id, mask in enumerate([person, other, ski]):
        got = sample.get_object_mask(obj_id)
        assert (got[~crowd] == mask[~crowd]).all() and (got[crowd] == -1).all()
    assert not sample.get_background_mask()[crowd].any()
    item = dataset[0]
    assert item["images"].shape == (3, H, W) and (item["instances"][0].numpy() == sample.get_object_mask(0)).all()

    skis = CocoDataset(images, annotations, FirstRootSampler(), category_ids=[2])
    assert skis.get_sample(0, np.random.default_rng(0)).objects_ids == [0]


def test_coco_dataset_errors(tmp_path: Path):
    images, annotations = make_coco(tmp_path)
    with pytest.raises(DatasetNotFoundError, match=r"COCO annotation file .*missing\.json.* not found"):
        CocoDataset(images, tmp_path / "missing.json", FirstRootSampler())
    with pytest.raises(DatasetNotFoundError, match=r"no image with a non-crowd annotation of the categories \[3\]"):
        CocoDataset(images, annotations, FirstRootSampler(), category_ids=[3])
    data = json.loads(annotations.read_text())
    data["annotations"].append({"id": 9, "image_id": 99, "segmentation": []})
    annotations.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=r"instances\.json.*annotations\[5\] refers to image id 99"):
        CocoDataset(images, annotations, FirstRootSampler())
    data["annotations"].pop()
    data["images"][0]["height"] = 32
    annotations.write_text(json.dumps(data))
    dataset = CocoDataset(images, annotations, FirstRootSampler())
    with pytest.raises(DatasetError, match=r"a\.jpg' is 64x64 .* says 32x64"):
        dataset.get_sample(0, np.random.default_rng(0))


def make_sbd(root: Path, names: List[str]) -> None:
    savemat = pytest.importorskip("scipy.io").savemat
    ids = np.zeros((H, W), np.uint8)
    ids[rect(5, 20, 5, 30)] = 1
    ids[np.arange(22, 62), np.arange(20, 60)] = 2   # a thin diagonal: fills 1/40 of its box
    ids[rect(40, 60, 0, 15)] = 3
    (root / "img").mkdir(exist_ok=True)
    (root / "inst").mkdir(exist_ok=True)
    for name in names:
        write_image(root / "img" / f"{name}.jpg", 3)
        savemat(str(root / "inst" / f"{name}.mat"), {"GTinst": {
            "Segmentation": ids, "Boundaries": np.zeros((1, 1)), "Categories": np.ones((1, 1))}})
    (root / "train.txt").write_text("".join(f"{name}\n" for name in names) + "\n")


def test_sbd_training_dataset(tmp_path: Path):
    make_sbd(tmp_path, ["2008_000002", "2008_000003"])
    dataset = SBDDataset(tmp_path, FirstRootSampler())
    assert dataset.dataset_samples == ["2008_000002", "2008_000003"]
    sample = dataset.get_sample(1, np.random.default_rng(0))
    assert [sample.objects[i].value for i in sample.objects_ids] == [1, 3]   # the thin object is dropped
    assert (sample.get_object_mask(1) == rect(40, 60, 0, 15)).all()
    kept = SBDDataset(tmp_path, FirstRootSampler(), buggy_mask_thresh=0).get_sample(0, np.random.default_rng(0))
    assert len(kept) == 3
    assert (dataset[0]["instances"][0].numpy() == rect(5, 20, 5, 30)).all()


def test_sbd_training_errors(tmp_path: Path):
    pytest.importorskip("scipy.io")
    with pytest.raises(DatasetNotFoundError, match=r"(?s)missing .*train\.txt.*inst/.*SBD_PATH"):
        SBDDataset(tmp_path, FirstRootSampler())
    make_sbd(tmp_path, [])
    with pytest.raises(DatasetNotFoundError, match=r"no image names in .*train\.txt"):
        SBDDataset(tmp_path, FirstRootSampler())


# --- EMC-Click's target rules ---------------------------------------------------------------

from isegm.data.datasets.training import TargetFilter, TrainingDataset  # noqa: E402


def test_target_filter_rules():
    """The authors' ``remove_small_regions`` (4-connected components under 900 px erased, ignored
    pixels to background) and ``min_object_area < area < 0.85 * crop`` (their base.py)."""
    rules = TargetFilter()
    mask = np.zeros((100, 100), np.float32)
    assert rules.filter_mask(mask) is None                                   # empty
    mask[0:30, 0:30] = 1                                                     # 900 px: kept
    mask[40:69, 0:30] = 1                                                    # 870 px: erased
    mask[70:80, 70:80] = -1                                                  # ignored: background
    assert rules.filter_mask(mask) is None                                   # 900 px left: at most 1000
    mask[0:30, 30:34] = 1                                                    # 1020 px in one component
    out = rules.filter_mask(mask)
    assert out.dtype == np.float32 and set(np.unique(out)) == {0.0, 1.0} and out.sum() == 1020
    assert not out[40:69].any() and not out[70:80, 70:80].any()
    exact = np.zeros((100, 100), np.float32)
    exact[0:20, 0:50] = 1                                                    # exactly 1000 px: rejected
    assert rules.filter_mask(exact) is None
    exact[20, 0] = 1
    assert rules.filter_mask(exact).sum() == 1001
    huge = np.ones((100, 100), np.float32)
    huge[:15, :] = 0                                                         # exactly 85 %: rejected
    assert rules.filter_mask(huge) is None
    huge[15, 0] = 0
    assert rules.filter_mask(huge).sum() == 8499
    diagonal = np.zeros((100, 100), np.float32)                             # touching at a corner only:
    diagonal[0:30, 0:30] = diagonal[30:59, 30:60] = 1                       # two components, 900 + 870
    assert rules.filter_mask(diagonal) is None


class BlockScenes(TrainingDataset):
    """Image ``i`` holds one square object of side ``sides[i]`` (0: no object), no augmentation."""

    def __init__(self, sides: List[int], **kwargs) -> None:
        super().__init__(FirstRootSampler(), **kwargs)
        self.dataset_samples = list(sides)
        self.drawn: List[int] = []

    def get_sample(self, index: int, rng: np.random.Generator) -> TrainingSample:
        self.drawn.append(index)
        layers = np.zeros((H, W), np.int32)
        side = self.dataset_samples[index]
        layers[:side, :side] = 1
        return TrainingSample(np.zeros((H, W, 3), np.uint8), layers, objects_ids=[1] if side else [],
                              sample_id=index)


def test_target_filter_redraws_rejected_samples():
    """Without objects, with a target erased to nothing, too small or too large: a new image is
    drawn until one passes; with no admissible image the error names the rules."""
    rules = TargetFilter(min_component_area=30, min_area=40, max_fraction=0.5)
    sides = [0, 5, 6, 60, 20]                        # only 20 x 20 = 400 px passes (4096 px crop)
    for epoch_len in (-1, 16):
        data = BlockScenes(sides, epoch_len=epoch_len, seed=1, target_filter=rules)
        for i in range(len(data)):
            data.drawn.clear()
            assert data[i]["instances"].sum() == 400 and data.drawn[-1] == 4
            assert all(0 <= j < len(sides) for j in data.drawn)
    unfiltered = BlockScenes(sides)
    assert [unfiltered[i]["instances"].sum().item() for i in range(1, 4)] == [25, 36, 3600]
    with pytest.raises(ValueError, match="no admissible target in 50 draws"):
        BlockScenes(sides[:4], target_filter=TargetFilter(30, 40, 0.5, max_draws=50))[0]


def test_recipes_filter_targets_only_for_emc_click():
    """SkipClick's recipes leave the targets as they were: the same samples for a seed as the
    sampling without the rules (augment, drop small objects, sample clicks); EMC-Click's carry the
    authors' values (scaled with the crop for the tiny one) and their albumentations' crop."""
    from dataclasses import replace

    from isegm.data.augmentation import RandomCrop
    from isegm.engine import recipes

    assert recipes.COCOLVIS.target_filter is None and recipes.SBD.target_filter is None
    assert recipes.WINTER.target_filter is None
    assert recipes.COCOLVIS.crop_last_offset and recipes.WINTER.crop_last_offset
    for recipe in (recipes.EMC_HRNET, recipes.EMC_HR32, recipes.EMC_SEGFORMER, recipes.EMC_SEGB3):
        assert recipe.target_filter == TargetFilter(min_component_area=900, min_area=1000, max_fraction=0.85)
        assert not recipe.crop_last_offset                    # albumentations 0.5.1
    assert recipes.EMC_WINTER.target_filter == TargetFilter(min_component_area=74, min_area=82, max_fraction=0.85)

    trainset, _ = recipes.build_datasets(replace(recipes.WINTER, num_scenes=64, epoch_len=8), {}, seed=3)
    assert trainset.target_filter is None
    trainset.set_epoch(1)
    for i in range(8):
        rng = np.random.default_rng([3, 1, i])
        sample = trainset.get_sample(int(rng.integers(64)), rng)
        trainset._augment(sample, rng)
        sample.remove_small_objects(trainset.min_object_area)
        mask, points = trainset.points_sampler.sample(sample, rng)
        got = trainset[i]
        assert np.array_equal(got["instances"][0].numpy(), mask) and np.array_equal(got["points"].numpy(), points)

    emc, _ = recipes.build_datasets(replace(recipes.EMC_WINTER, num_scenes=64, epoch_len=8), {}, seed=3)
    assert emc.target_filter == recipes.EMC_WINTER.target_filter
    crops = [t for t in emc.augmentation.transforms if isinstance(t, RandomCrop)]
    assert len(crops) == 1 and not crops[0].last_offset
    for i in range(8):
        area = emc[i]["instances"].sum().item()
        assert 82 < area < 0.85 * 112 * 112
