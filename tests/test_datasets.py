"""Evaluation dataset loaders: parity with the original loaders on the shared GrabCut / DAVIS
copies (``protocol_golden.json``), the golden loader edge cases, every format rule on small
synthetic folders, and the errors a user meets.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Dict, List

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import eval_golden, sha16, shared_path
from isegm.data import DSample
from isegm.data.datasets import (DATASET_NAMES, HQSEG_VAL_SUBSETS, WSESEG_CLASSES, BerkeleyDataset, COCOMValDataset,
                                 DatasetError, DatasetNotFoundError, DavisDataset, GrabCutDataset, HQSegDataset,
                                 SBDEvaluationDataset, SHSegDataset, WSESegDataset, get_dataset)
from isegm.data.datasets import sbd as sbd_module
from isegm.utils.config import load_config

ALL_LOADERS = (GrabCutDataset, BerkeleyDataset, DavisDataset, COCOMValDataset, SBDEvaluationDataset, HQSegDataset,
               WSESegDataset, SHSegDataset)


def _imwrite(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array), path
    return path


def _pil_write(path: Path, array: np.ndarray, palette: List[int] = None) -> Path:
    """Write with PIL in PNG format whatever the suffix (``.jpg`` files stay lossless)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if palette is None:
        image = Image.fromarray(array)
    else:
        image = Image.frombytes("P", (array.shape[1], array.shape[0]), array.astype(np.uint8).tobytes())
        image.putpalette(palette)
    image.save(path, format="PNG")
    return path


def _names(dataset, attribute: str = "image_path") -> List[str]:
    return [Path(getattr(dataset.get_sample(i), attribute)).name for i in range(len(dataset))]


# --- parity with the original loaders on real data -----------------------------------------------------------

@pytest.mark.parametrize("name, loader, n_images, n_checked", [
    ("GrabCut", GrabCutDataset, 50, 50), ("DAVIS", DavisDataset, 345, 40)])
def test_real_data_matches_the_original_loader(name, loader, n_images, n_checked):
    instances = eval_golden("protocol_golden.json")["datasets"][name]["instances"]
    assert len(instances) == n_checked
    dataset = loader(shared_path("datasets", name))
    assert len(dataset) == n_images
    for expected in instances:
        sample = dataset.get_sample(expected["index"])
        assert sample.objects_ids == [expected["object_id"]] == [0]
        assert sample.sample_id == expected["index"]
        gt = sample.gt_mask(expected["object_id"])
        assert gt.dtype == np.int32 and gt.flags.c_contiguous
        assert set(np.unique(gt).tolist()) <= {-1, 0, 1}
        assert sample.image.dtype == np.uint8 and sample.image.shape == gt.shape + (3,)
        got = dict(file=Path(sample.image_path).name, mask_file=Path(sample.mask_path).name, height=gt.shape[0],
                   width=gt.shape[1], n_object_pixels=int((gt == 1).sum()), n_ignore_pixels=int((gt == -1).sum()),
                   gt_sha16=sha16(gt.astype(np.int32)))
        assert got == {key: expected[key] for key in got}, expected["file"]


def test_grabcut_ignore_band_is_present_in_the_parity_data():
    instances = eval_golden("protocol_golden.json")["datasets"]["GrabCut"]["instances"]
    # The README: 42 of the 50 masks have a 128 band, so the parity test exercises the -1 label.
    assert sum(instance["n_ignore_pixels"] > 0 for instance in instances) == 42


def test_images_are_rgb():
    dataset = GrabCutDataset(shared_path("datasets", "GrabCut"))
    # A BMP decodes identically in PIL (RGB) and OpenCV (BGR), so the channel order is checked exactly.
    index = next(i for i, name in enumerate(_names(dataset)) if name.endswith(".bmp"))
    sample = dataset.get_sample(index)
    expected = np.array(Image.open(sample.image_path).convert("RGB"))
    assert not np.array_equal(expected, expected[:, :, ::-1])
    np.testing.assert_array_equal(sample.image, expected)


# --- golden loader edge cases ----------------------------------------------------------------------------------

def test_grabcut_loader_values(tmp_path):
    case = eval_golden("edge_cases_golden.json")["cases"]["grabcut_loader_values"]
    raw = np.array(case["raw_mask_values"], dtype=np.uint8)
    _imwrite(tmp_path / "data_GT" / "x.bmp", np.zeros(raw.shape + (3,), np.uint8))
    _imwrite(tmp_path / "boundary_GT" / "x.bmp", raw)
    sample = GrabCutDataset(tmp_path).get_sample(0)
    assert sample.objects_ids == case["objects_ids"]
    np.testing.assert_array_equal(sample.gt_mask(0), np.array(case["gt_mask_after_loader"], dtype=np.int32))


def test_davis_loader_values(tmp_path):
    case = eval_golden("edge_cases_golden.json")["cases"]["davis_loader_values"]
    indices = np.array(case["palette_indices"], dtype=np.uint8)
    palette = [0] * 768
    for index, rgb in case["palette_colors_rgb"].items():
        palette[3 * int(index):3 * int(index) + 3] = rgb
    mask_path = _pil_write(tmp_path / "gt" / "x.png", indices, palette)
    with Image.open(mask_path) as written:
        assert written.mode == "P"
        np.testing.assert_array_equal(np.array(written), indices)
    _imwrite(tmp_path / "img" / "x.jpg", np.zeros(indices.shape + (3,), np.uint8))
    sample = DavisDataset(tmp_path).get_sample(0)
    assert sample.objects_ids == case["objects_ids"]
    np.testing.assert_array_equal(sample.gt_mask(0), np.array(case["gt_mask_after_loader"], dtype=np.int32))


# --- format rules on synthetic folders -------------------------------------------------------------------------

def test_berkeley_order_mask_lookup_and_values(tmp_path):
    bgr = np.zeros((2, 3, 3), np.uint8)
    bgr[..., 0], bgr[..., 1], bgr[..., 2] = 10, 20, 30
    for name in ("a.x.png", "B.bmp", "2.png"):
        _imwrite(tmp_path / "images" / name, bgr)
    mask = np.array([[0, 255, 128], [255, 1, 0]], np.uint8)
    for name in ("a.png", "B.png", "2.png", "unused.png"):
        _imwrite(tmp_path / "masks" / name, mask)
    dataset = BerkeleyDataset(tmp_path)
    # Case-sensitive path order; the mask is found by the name up to its first dot.
    assert _names(dataset) == ["2.png", "B.bmp", "a.x.png"]
    assert _names(dataset, "mask_path") == ["2.png", "B.png", "a.png"]
    sample = dataset.get_sample(2)
    np.testing.assert_array_equal(sample.image[0, 0], [30, 20, 10])
    np.testing.assert_array_equal(sample.gt_mask(), [[0, 1, -1], [1, 1, 0]])


def test_coco_mval_uses_the_davis_rules(tmp_path):
    mask = np.zeros((2, 2, 3), np.uint8)
    mask[0, 1, 2] = 7  # one non-zero channel is enough
    _imwrite(tmp_path / "gt" / "x.png", mask)
    _imwrite(tmp_path / "img" / "x.jpg", np.zeros((2, 2, 3), np.uint8))
    dataset = COCOMValDataset(tmp_path)
    assert dataset.name == "COCO_MVal"
    np.testing.assert_array_equal(dataset.get_sample(0).gt_mask(), [[0, 1], [0, 0]])


def _hqseg(root: Path, names: Dict[int, List[str]]) -> None:
    for subset, (images, masks) in enumerate(HQSEG_VAL_SUBSETS):
        (root / images).mkdir(parents=True)
        (root / masks).mkdir(parents=True)
        for name in names.get(subset, []):
            _imwrite(root / images / f"{name}.jpg", np.zeros((3, 2, 3), np.uint8))
            mask = np.zeros((3, 2, 3), np.uint8)
            mask[1, 0, 2] = 200
            _imwrite(root / masks / f"{name}.png", mask)


def test_hqseg_order_across_subsets(tmp_path):
    _hqseg(tmp_path, {0: ["b", "B", "a"], 1: ["t"], 2: ["c"], 3: ["h"]})
    _imwrite(tmp_path / HQSEG_VAL_SUBSETS[0][0] / "z.png", np.zeros((3, 2, 3), np.uint8))  # not *.jpg: no sample
    dataset = HQSegDataset(tmp_path)
    assert [str(Path(dataset.get_sample(i).mask_path).relative_to(tmp_path)) for i in range(len(dataset))] == [
        "DIS5K/DIS-VD/gt/B.png", "DIS5K/DIS-VD/gt/a.png", "DIS5K/DIS-VD/gt/b.png",
        "thin_object_detection/ThinObject5K/masks_test/t.png", "thin_object_detection/COIFT/masks/c.png",
        "thin_object_detection/HRSOD/masks_max255/h.png"]
    np.testing.assert_array_equal(dataset.get_sample(5).gt_mask(), [[0, 0], [1, 0], [0, 0]])


def test_hqseg_requires_all_four_subsets(tmp_path):
    _hqseg(tmp_path, {0: ["a"]})
    (tmp_path / HQSEG_VAL_SUBSETS[2][1]).rmdir()
    with pytest.raises(DatasetNotFoundError, match="COIFT/masks"):
        HQSegDataset(tmp_path)


def _label_folder(folder: Path) -> Dict[str, np.ndarray]:
    """mask_a (grey photo, labels 2 = background and 5) and mask_b (RGB photo, labels 0, 3, 7)."""
    rng = np.random.default_rng(0)
    photos = {"a": rng.integers(0, 256, (2, 3), dtype=np.uint8), "b": rng.integers(0, 256, (2, 3, 3), dtype=np.uint8)}
    for name, photo in photos.items():
        _pil_write(folder / f"{name}.jpg", photo)  # PNG content: the expected floats are exact
    _pil_write(folder / "mask_b.png", np.array([[0, 3, 3], [7, 0, 7]], np.uint8))
    _pil_write(folder / "mask_a.png", np.array([[2, 5, 2], [2, 2, 5]], np.uint8))
    return photos


def test_wseseg_instances_images_and_gt(tmp_path):
    photos = _label_folder(tmp_path / "flickr_bobsleighs")
    dataset = WSESegDataset(tmp_path, "flickr_bobsleighs")
    assert dataset.name == "WSESeg_flickr_bobsleighs" and len(dataset) == 3
    samples = [dataset.get_sample(i) for i in range(3)]
    assert [(Path(s.mask_path).name, Path(s.image_path).name, s.object_values) for s in samples] == [
        ("mask_a.png", "a.jpg", (5,)), ("mask_b.png", "b.jpg", (3,)), ("mask_b.png", "b.jpg", (7,))]
    np.testing.assert_array_equal(samples[0].gt_mask(), [[0, 1, 0], [0, 0, 1]])
    np.testing.assert_array_equal(samples[2].gt_mask(), [[0, 0, 0], [1, 0, 1]])
    for sample in samples:
        assert sample.image.dtype == np.float32 and sample.image.shape == (2, 3, 3)
        assert sample.gt_mask().dtype == np.int32
    grey = (photos["a"] / 255.0).astype(np.float32)
    np.testing.assert_array_equal(samples[0].image, np.stack([grey, grey, grey], axis=2))
    np.testing.assert_array_equal(samples[1].image, (photos["b"] / 255.0).astype(np.float32))
    assert samples[1].image.max() <= 1.0


def test_wseseg_yt_sports_folder(tmp_path):
    _label_folder(tmp_path / "yt_sports" / "skijump" / "annotated_frames" / "0")
    dataset = WSESegDataset(tmp_path, "yt_sports")
    assert len(dataset) == 3
    assert Path(dataset.get_sample(0).image_path) == tmp_path / "yt_sports/skijump/annotated_frames/0/a.jpg"
    with pytest.raises(DatasetNotFoundError, match="flickr_snowboards"):
        WSESegDataset(tmp_path, "flickr_snowboards")
    with pytest.raises(ValueError, match="flickr_ski_goggles"):
        WSESegDataset(tmp_path, "skis")


def test_wseseg_rejects_colour_masks(tmp_path):
    _pil_write(tmp_path / "c" / "mask_x.png", np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(DatasetError, match="mask_x.png"):
        SHSegDataset(tmp_path / "c")


def test_shseg_reads_palette_indices(tmp_path):
    _pil_write(tmp_path / "s.jpg", np.zeros((1, 3), np.uint8))
    # Palette colours are irrelevant: PIL gives the indices, and the labels are the indices.
    _pil_write(tmp_path / "mask_s.png", np.array([[0, 4, 1]], np.uint8), palette=[9] * 768)
    dataset = SHSegDataset(tmp_path)
    assert dataset.name == "SHSeg"
    assert [dataset.get_sample(i).object_values for i in range(len(dataset))] == [(1,), (4,)]
    np.testing.assert_array_equal(dataset.get_sample(1).gt_mask(), [[0, 1, 0]])


def _sbd(root: Path) -> None:
    savemat = pytest.importorskip("scipy.io").savemat
    maps = {"n1": [[0, 1, 3], [3, 3, 0]], "n2": [[2, 0, 0], [0, 0, 0]], "n3": [[0, 0, 0], [0, 0, 0]]}
    for name, ids in maps.items():
        _imwrite(root / "img" / f"{name}.jpg", np.zeros((2, 3, 3), np.uint8))
        (root / "inst").mkdir(exist_ok=True)
        savemat(str(root / "inst" / f"{name}.mat"), {"GTinst": {
            "Segmentation": np.array(ids, np.uint8), "Boundaries": np.zeros((1, 1)), "Categories": np.ones((1, 1))}})
    (root / "val.txt").write_text("n1\nn2\nn3\n")


def _pairs(dataset: SBDEvaluationDataset) -> List:
    return [(Path(s.image_path).stem, s.object_values[0]) for s in map(dataset.get_sample, range(len(dataset)))]


def test_sbd_pairs_gt_and_cache(tmp_path):
    _sbd(tmp_path)
    dataset = SBDEvaluationDataset(tmp_path)
    assert _pairs(dataset) == [("n1", 1), ("n1", 3), ("n2", 2)]
    np.testing.assert_array_equal(dataset.get_sample(1).gt_mask(), [[0, 0, 1], [1, 1, 0]])
    assert dataset.get_sample(1).objects_ids == [0]
    cache = tmp_path / "val_images_and_ids_list.pkl"
    with open(cache, "rb") as f:
        assert pickle.load(f) == [("n1", 1), ("n1", 3), ("n2", 2)]
    # The cache is what later runs use (as in the original): the listing needs no .mat file.
    (tmp_path / "inst" / "n2.mat").unlink()
    dataset = SBDEvaluationDataset(tmp_path)
    assert len(dataset) == 3
    with pytest.raises(DatasetError, match="n2.mat"):
        dataset.get_sample(2)


def test_sbd_reads_an_original_cache(tmp_path):
    _sbd(tmp_path)
    with open(tmp_path / "val_images_and_ids_list.pkl", "wb") as f:
        pickle.dump([("n2", 2)], f)
    assert _pairs(SBDEvaluationDataset(tmp_path)) == [("n2", 2)]


class _Payload:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return os.mkdir, (str(self.target),)


@pytest.mark.parametrize("content", ["code", "stale", "garbage"])
def test_sbd_rebuilds_a_bad_cache_without_running_it(tmp_path, content):
    _sbd(tmp_path)
    sentinel = tmp_path / "payload_ran"
    data = {"code": pickle.dumps([("n1", 1), _Payload(sentinel)]), "stale": pickle.dumps([("other", 1)]),
            "garbage": b"\x80\x04not a pickle"}[content]
    (tmp_path / "val_images_and_ids_list.pkl").write_bytes(data)
    with pytest.warns(UserWarning, match="cache"):
        dataset = SBDEvaluationDataset(tmp_path)
    assert not sentinel.exists()
    assert _pairs(dataset) == [("n1", 1), ("n1", 3), ("n2", 2)]


def test_sbd_read_only_folder(tmp_path, monkeypatch):
    _sbd(tmp_path)

    def read_only(*args, **kwargs):
        raise PermissionError(30, "Read-only file system")

    monkeypatch.setattr(sbd_module.tempfile, "mkstemp", read_only)
    with pytest.warns(UserWarning, match="cannot write"):
        dataset = SBDEvaluationDataset(tmp_path)
    assert len(dataset) == 3
    assert not (tmp_path / "val_images_and_ids_list.pkl").exists()


# --- errors ----------------------------------------------------------------------------------------------------

def test_missing_folder_shows_the_expected_layout(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        GrabCutDataset(tmp_path / "nowhere")
    message = str(info.value)
    for part in (str(tmp_path / "nowhere"), "data_GT/", "boundary_GT/", "GRABCUT_PATH", "config.yml"):
        assert part in message
    (tmp_path / "data_GT").mkdir()
    with pytest.raises(DatasetNotFoundError, match="boundary_GT'"):
        GrabCutDataset(tmp_path)
    (tmp_path / "boundary_GT").mkdir()
    with pytest.raises(DatasetNotFoundError, match="no image files"):
        GrabCutDataset(tmp_path)


def test_unreadable_files_raise_errors_naming_them(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "broken.jpg").write_bytes(b"not an image")
    _imwrite(tmp_path / "img" / "fine.jpg", np.zeros((2, 2, 3), np.uint8))
    _imwrite(tmp_path / "img" / "nomask.jpg", np.zeros((2, 2, 3), np.uint8))
    _imwrite(tmp_path / "img" / "small.jpg", np.zeros((1, 2, 3), np.uint8))
    for name in ("broken", "small"):
        _imwrite(tmp_path / "gt" / f"{name}.png", np.zeros((2, 2), np.uint8))
    (tmp_path / "gt" / "fine.png").write_bytes(b"")
    dataset = DavisDataset(tmp_path)
    assert len(dataset) == 4
    expected = {0: "broken.jpg", 1: "fine.png", 2: "nomask.jpg", 3: "small.jpg"}
    for index, name in expected.items():
        with pytest.raises(DatasetError, match=name):
            dataset.get_sample(index)
    assert issubclass(DatasetError, ValueError)
    with pytest.raises(IndexError):
        dataset.get_sample(4)


def test_gt_mask_object_range():
    sample = DSample(np.zeros((1, 2, 3), np.uint8), np.array([[1, 2]], np.int32), object_values=(1, 2))
    assert sample.objects_ids == [0, 1]
    np.testing.assert_array_equal(sample.gt_mask(1), [[0, 1]])
    with pytest.raises(IndexError):
        sample.gt_mask(2)


# --- factory and config ----------------------------------------------------------------------------------------

def test_factory_names_and_classes():
    assert WSESEG_CLASSES == ("flickr_bobsleighs", "flickr_curling_stone", "flickr_ski_helmets", "flickr_snow_kites",
                              "yt_sports", "flickr_curling_brooms", "flickr_ski_goggles", "flickr_ski_misc",
                              "flickr_slalom_obstacles", "flickr_snowboards")
    assert set(DATASET_NAMES) == {"GrabCut", "Berkeley", "DAVIS", "SBD", "COCO_MVal", "HQSeg", "SHSeg",
                                  *(f"WSESeg_{name}" for name in WSESEG_CLASSES), "WinterSports",
                                  "WinterSportsCloseup"}


def test_generated_sets_need_no_config():
    wide, close = get_dataset("WinterSports", {}), get_dataset("WinterSportsCloseup", {})
    assert len(wide) > len(close) > 100 and close.framing == "close" and set(close.kinds) == {"skier", "snowboarder"}


def test_factory_builds_from_config(tmp_path):
    config = {"GRABCUT_PATH": str(shared_path("datasets", "GrabCut")), "WSESEG_PATH": str(tmp_path)}
    dataset = get_dataset("GrabCut", config)
    assert isinstance(dataset, GrabCutDataset) and len(dataset) == 50
    _label_folder(tmp_path / "flickr_ski_misc")
    dataset = get_dataset("WSESeg_flickr_ski_misc", config)
    assert isinstance(dataset, WSESegDataset) and dataset.class_name == "flickr_ski_misc"


def test_factory_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'Grabcut'.*GrabCut, Berkeley, DAVIS"):
        get_dataset("Grabcut", {})
    with pytest.raises(ValueError, match="no loader for"):
        get_dataset("BraTS", {})
    with pytest.raises(ValueError, match=r"DAVIS_PATH.*my\.yml"):
        get_dataset("DAVIS", {"GRABCUT_PATH": "x"}, config_file=tmp_path / "my.yml")


def test_repository_config_has_every_dataset_key():
    config = load_config()
    assert {loader.config_key for loader in ALL_LOADERS} <= set(config)
