"""``skipclick-evaluate`` under faults: a truncated or corrupt image never gives a number, a
resumed run never mixes records of other settings, every problem of the set-up is found before
the first click, and finished work survives a failed write. Real GrabCut / DAVIS files, copied
(and damaged) into a temporary folder, with a tiny SkipClick."""
from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import REPO, SHARED
from isegm.cli import evaluate as command
from isegm.data import DatasetError
from isegm.data.datasets.base import jpeg_complete, read_image, read_mask_bgr
from isegm.inference import report
from isegm.model import build_skipclick, save_checkpoint
from isegm.utils.files import atomic_write

DATASETS = SHARED / "datasets"
GRABCUT_FIRST = ["106024", "124080", "153077"]   # the first three GrabCut images in loader order
RUN = "fixed56_NoBRS_3"


def needs_datasets() -> None:
    if not (DATASETS / "GrabCut").is_dir() or not (DATASETS / "DAVIS").is_dir():
        pytest.skip(f"datasets {DATASETS}/GrabCut and DAVIS are absent (set SKIPCLICK_SHARED to the shared/ folder)")


def tiny_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_skipclick("skipclick", backbone="dinov2_vits14_reg", fusion_depth=1, fpn_dims=(16, 32, 64, 128),
                           head_channels=16)


@pytest.fixture
def setup(tmp_path):
    """Three GrabCut images, two DAVIS frames, a tiny checkpoint and a config naming them."""
    needs_datasets()
    grabcut, davis = tmp_path / "GrabCut", tmp_path / "DAVIS"
    for sub in ("data_GT", "boundary_GT"):
        (grabcut / sub).mkdir(parents=True)
    for stem in GRABCUT_FIRST:
        shutil.copy(next((DATASETS / "GrabCut" / "data_GT").glob(stem + ".*")), grabcut / "data_GT")
        shutil.copy(DATASETS / "GrabCut" / "boundary_GT" / f"{stem}.bmp", grabcut / "boundary_GT")
    for sub, ext in (("img", "jpg"), ("gt", "png")):
        (davis / sub).mkdir(parents=True)
        for stem in ("000", "001"):
            shutil.copy(DATASETS / "DAVIS" / sub / f"{stem}.{ext}", davis / sub)
    save_checkpoint(tiny_model(0), tmp_path / "tiny.pth")
    (tmp_path / "config.yml").write_text(f"GRABCUT_PATH: {grabcut}\nDAVIS_PATH: {davis}\n"
                                         f"HQSEG_PATH: {tmp_path / 'HQSeg'}\nCHECKPOINTS_PATH: {tmp_path}\n")
    return tmp_path


def args_for(setup, *extra, datasets="GrabCut"):
    return ["NoBRS", "--checkpoint", "tiny", "--datasets", datasets, "--eval-mode", "fixed56", "--suppress-zoom",
            "--n-clicks", "3", "--cpu", "--no-progress", "--config-path", str(setup / "config.yml"),
            "--logs-path", str(setup / "logs"), *extra]


def evaluate(setup, *extra, **kwargs):
    return command.main(args_for(setup, *extra, **kwargs))


def refused(setup, capsys, *extra, **kwargs):
    """Run a command that must stop with status 2; its stderr lines."""
    with pytest.raises(SystemExit) as stop:
        evaluate(setup, *extra, **kwargs)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "Traceback" not in err, err
    assert all(line.startswith("error: ") for line in err.splitlines()), err
    return err.splitlines()


def logs(setup):
    return setup / "logs" / "others" / "tiny"


def results(setup):
    return json.loads((logs(setup) / f"results_{RUN}.json").read_text())["datasets"]


def truncate(path: Path, fraction: float = 0.3) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * fraction)])


# --- strict decoding --------------------------------------------------------------------------

def test_every_intact_benchmark_file_passes_and_decodes_as_opencv_reads_it():
    needs_datasets()
    files = sorted(p for p in DATASETS.glob("*/*/*") if p.suffix.lower() in (".jpg", ".png", ".bmp"))
    assert len(files) == 790
    for path in files:
        assert np.array_equal(read_mask_bgr(path), cv2.imread(str(path))), path


@pytest.mark.parametrize("name", ["GrabCut/data_GT/106024.jpg", "GrabCut/data_GT/music.JPG", "DAVIS/img/000.jpg"])
def test_truncated_jpeg_is_an_error_naming_the_file(tmp_path, name):
    needs_datasets()
    path = tmp_path / Path(name).name
    data = (DATASETS / name).read_bytes()
    for cut in (0.3, 0.9, 0.999):
        path.write_bytes(data[:int(len(data) * cut)])
        assert cv2.imread(str(path)) is not None   # what OpenCV alone makes of it: a partly grey image
        assert not jpeg_complete(path.read_bytes())
        with pytest.raises(DatasetError, match="truncated or damaged JPEG") as err:
            read_image(path)
        assert str(path) in str(err.value)


def test_thumbnails_and_progressive_jpegs_do_not_fool_the_check(tmp_path):
    """An EXIF thumbnail holds a whole JPEG (its own end-of-image marker) inside a header
    segment; a progressive JPEG has several scans. Intact they pass, truncated they fail."""
    needs_datasets()
    image = cv2.imread(str(DATASETS / "DAVIS" / "img" / "000.jpg"))
    thumbnail = cv2.imencode(".jpg", cv2.resize(image, (160, 90)))[1].tobytes()
    payload = b"Exif\0\0" + thumbnail
    main = cv2.imencode(".jpg", image)[1].tobytes()
    with_thumbnail = main[:2] + b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload + main[2:]
    progressive = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    for name, data in (("thumbnail.jpg", with_thumbnail), ("progressive.jpg", progressive)):
        path = tmp_path / name
        path.write_bytes(data)
        assert np.array_equal(read_image(path), cv2.imread(str(path))[:, :, ::-1])
        path.write_bytes(data[:len(with_thumbnail) // 2 if name == "thumbnail.jpg" else len(data) * 3 // 4])
        assert cv2.imread(str(path)) is not None
        with pytest.raises(DatasetError, match="truncated"):
            read_image(path)


def test_corrupt_png_mask_and_truncated_bmp_are_errors(tmp_path):
    needs_datasets()
    png = bytearray((DATASETS / "DAVIS" / "gt" / "000.png").read_bytes())
    png[len(png) // 2:len(png) // 2 + 20] = bytes(20)
    (tmp_path / "000.png").write_bytes(bytes(png))
    shutil.copy(DATASETS / "GrabCut" / "boundary_GT" / "106024.bmp", tmp_path)
    truncate(tmp_path / "106024.bmp")
    (tmp_path / "empty.png").write_bytes(b"")
    for name in ("000.png", "106024.bmp", "empty.png", "missing.png"):
        with pytest.raises(DatasetError, match="cannot read mask") as err:
            read_mask_bgr(tmp_path / name)
        assert name in str(err.value)


def test_truncated_jpeg_stops_the_run_or_is_skipped_and_counted(setup, capsys):
    bad = next((setup / "GrabCut" / "data_GT").glob(GRABCUT_FIRST[1] + ".*"))
    truncate(bad)
    (line,) = refused(setup, capsys)
    assert bad.name in line and "truncated" in line and "--skip-bad" in line
    assert evaluate(setup, "--skip-bad") == 0
    out = capsys.readouterr().out
    assert "GrabCut: 1 of 3 samples skipped" in out and bad.name in out
    grabcut = results(setup)["GrabCut"]
    assert grabcut["n_instances"] == 2 and grabcut["n_skipped"] == 1 and bad.name in grabcut["skipped"]["1"]
    assert (logs(setup) / f"results_{RUN}.csv").read_text().splitlines()[1].startswith("GrabCut,2,1,")


# --- resume only with the same settings -------------------------------------------------------

def test_resume_refuses_records_made_with_other_settings(setup, capsys):
    assert evaluate(setup, "--target-iou", "0.95") == 0
    records = logs(setup) / "instances" / f"GrabCut_{RUN}.jsonl"
    before = records.read_text()
    lines = refused(setup, capsys, "--resume", "--target-iou", "0.99", "--thresh", "0.6")
    assert len(lines) == 1 and str(records) in lines[0]
    assert "target_iou 0.95 -> 0.99" in lines[0] and "pred_thr 0.49 -> 0.6" in lines[0]
    assert "rerun without --resume" in lines[0] and "another --logs-path" in lines[0]
    assert records.read_text() == before
    # Another checkpoint under the same name: its SHA-256 differs.
    save_checkpoint(tiny_model(1), setup / "tiny.pth")
    (line,) = refused(setup, capsys, "--resume")
    assert "checkpoint_sha256" in line
    # Records of an earlier version have no settings line: refused, not trusted.
    records.write_text("".join(before.splitlines(keepends=True)[1:]))
    (line,) = refused(setup, capsys, "--resume")
    assert "without the settings" in line
    # Without --resume the run starts again and its numbers are those of a fresh run.
    assert evaluate(setup) == 0
    assert json.loads(records.read_text().splitlines()[0])["settings"]["checkpoint_sha256"] != \
        json.loads(before.splitlines()[0])["settings"]["checkpoint_sha256"]


def test_resume_with_the_same_settings_rebuilds_every_dataset_from_the_records(setup, capsys):
    assert evaluate(setup, datasets="GrabCut,DAVIS") == 0
    full = results(setup)
    assert evaluate(setup, "--resume", datasets="GrabCut,DAVIS") == 0
    resumed = results(setup)
    for name in ("GrabCut", "DAVIS"):
        assert [i["ious"] for i in resumed[name]["instances"]] == [i["ious"] for i in full[name]["instances"]]


def test_each_checkpoint_of_an_experiment_resumes_from_its_own_records(setup, capsys):
    """``--exp-path`` with two checkpoints: one record file each, so a resumed run gives each
    checkpoint its own numbers (a shared file gave one checkpoint's clicks to the other)."""
    checkpoints = setup / "exps" / "exp1" / "checkpoints"
    checkpoints.mkdir(parents=True)
    for seed, name in ((0, "a"), (1, "b")):
        save_checkpoint(tiny_model(seed), checkpoints / f"{name}.pth")
    config = setup / "config.yml"
    config.write_text(config.read_text() + f"EXPS_PATH: {setup / 'exps'}\n")
    flags = [arg for arg in args_for(setup) if arg not in ("--checkpoint", "tiny")]
    assert command.main([*flags, "--exp-path", "exp1"]) == 0
    folder = setup / "logs" / "exp1"
    assert sorted(p.name for p in (folder / "instances").iterdir()) == \
        [f"all_checkpoints_{name}_GrabCut_{RUN}.jsonl" for name in ("a", "b")]
    full = json.loads((folder / f"all_checkpoints_results_{RUN}.json").read_text())["datasets"]
    assert command.main([*flags, "--exp-path", "exp1", "--resume"]) == 0
    resumed = json.loads((folder / f"all_checkpoints_results_{RUN}.json").read_text())["datasets"]
    for key in ("GrabCut:a", "GrabCut:b"):
        assert [i["ious"] for i in resumed[key]["instances"]] == [i["ious"] for i in full[key]["instances"]]
    assert [i["ious"] for i in full["GrabCut:a"]["instances"]] != [i["ious"] for i in full["GrabCut:b"]["instances"]]


# --- pre-flight -------------------------------------------------------------------------------

def test_a_missing_second_dataset_stops_before_the_first_click(setup, capsys):
    (line,) = refused(setup, capsys, datasets="GrabCut,HQSeg")
    assert "HQSeg" in line and str(setup / "HQSeg") in line and "HQSEG_PATH" in line
    assert not (setup / "logs").exists()


def test_every_problem_is_listed_at_once(setup, capsys):
    (setup / "blocker").write_text("a file, not a folder")
    (setup / "bad.pth").write_bytes(bytes(range(256)) * 8)
    lines = refused(setup, capsys, "--checkpoint", str(setup / "bad.pth"), "--logs-path",
                    str(setup / "blocker" / "logs"), datasets="GrabCut,HQSeg,Nowhere")
    assert len(lines) == 4, lines
    text = "\n".join(lines)
    for needle in ("bad.pth", "HQSEG_PATH", "unknown dataset 'Nowhere'", "output folder", "not a folder"):
        assert needle in text, needle


def test_missing_checkpoint_is_one_line(setup, capsys):
    lines = refused(setup, capsys, "--checkpoint", "nothing_here")
    assert len(lines) == 1 and "CHECKPOINTS_PATH" in lines[0]


@pytest.mark.parametrize("case", ["checkpoint", "dataset", "logs"])
def test_script_prints_one_error_line(setup, case):
    """``scripts/evaluate_model.py`` as a user runs it: one ``error:`` line, status 2."""
    (setup / "bad.pth").write_bytes(b"")
    (setup / "blocker").write_text("")
    extra = {"checkpoint": ["--checkpoint", str(setup / "bad.pth")], "dataset": ["--datasets", "GrabCut,HQSeg"],
             "logs": ["--logs-path", str(setup / "blocker" / "out")]}[case]
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "evaluate_model.py"), *args_for(setup), *extra],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and done.stderr.startswith("error: "), done.stderr
    assert done.stdout == ""


# --- finished work is never lost ---------------------------------------------------------------

def test_results_are_written_as_each_dataset_finishes(setup, capsys):
    """DAVIS stops on an unreadable frame: GrabCut's results, CSV and plot are already on disk."""
    truncate(setup / "DAVIS" / "img" / "001.jpg")
    (line,) = refused(setup, capsys, datasets="GrabCut,DAVIS")
    assert "001.jpg" in line
    assert list(results(setup)) == ["GrabCut"]
    assert (logs(setup) / f"results_{RUN}.csv").read_text().splitlines()[1].startswith("GrabCut,3,0,")
    assert (logs(setup) / "plots" / f"miou_{RUN}.png").read_bytes()[:4] == b"\x89PNG"


def test_a_full_disk_keeps_the_last_good_files_and_the_records(setup, capsys, monkeypatch):
    assert evaluate(setup) == 0
    good = {p: p.read_bytes() for p in logs(setup).rglob("*") if p.is_file() and "instances" not in p.parts}
    assert len(good) == 4   # results JSON and CSV, log, plot

    def full(path, data):   # the disk fills up after the records are written
        if "instances" in Path(path).parts:
            return atomic_write(path, data)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(report, "atomic_write", full)
    capsys.readouterr()
    (line,) = refused(setup, capsys, "--target-iou", "0.9")
    assert "No space left on device" in line and "rerun with --resume" in line
    assert {p: p.read_bytes() for p in good} == good
    records = (logs(setup) / "instances" / f"GrabCut_{RUN}.jsonl").read_text().splitlines()
    assert len(records) == 1 + 3 and json.loads(records[0])["settings"]["target_iou"] == 0.9
    monkeypatch.undo()
    assert evaluate(setup, "--target-iou", "0.9", "--resume") == 0
    assert results(setup)["GrabCut"]["target_iou"] == 0.9
    assert not list(logs(setup).rglob("*.tmp"))
