"""The annotation app serves EMC-Click from the authors' checkpoint format, through
``load_checkpoint`` and ``get_predictor`` like SkipClick: clicks, undo, objects, saving, and the
command line (a small segb0 with seeded random weights)."""
from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import List

import numpy as np
import pytest
import torch

from conftest import REPO
from isegm.app import AnnotationApp, load_backend
from isegm.app.__main__ import parse_args
from isegm.model import EMCClick, build_emc, save_emc_checkpoint
from isegm.utils.rle import decode_rle
from test_app_api import current, serving, write_scene

SIZE = 64   # short side of the network input: fast on a CPU


@pytest.fixture(scope="module")
def emc_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "segb0.pth"
    save_emc_checkpoint(build_emc("segb0"), path)
    return path


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    write_scene(folder, "a.png", 3)
    write_scene(folder, "b.png", 5)
    return folder


def test_clicks_undo_objects_and_save(images: Path, tmp_path: Path, emc_checkpoint: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The base network runs on each object's first click only (opening an image runs nothing);
    undo gives back the earlier mask, and clicking again after it the same mask as before."""
    encoded: List[tuple] = []
    original = EMCClick.encode_image
    monkeypatch.setattr(EMCClick, "encode_image", lambda self, image, points: encoded.append(tuple(image.shape))
                        or original(self, image, points))
    backend = load_backend(str(emc_checkpoint), torch.device("cpu"), size=SIZE)
    out = tmp_path / "out"
    with serving(AnnotationApp(images, out, backend)) as client:
        config = client.request("GET", "/api/config")[1]
        assert not config["model_free"] and config["backend"].startswith(f"EMCClick segb0.pth, {SIZE} px, fp32")
        client.post("open", image="a.png")
        assert encoded == []
        first = client.post("click", image="a.png", x=60, y=40, positive=True)
        assert encoded == [(1, 3, 64, 84)] and first["model_ms"] > 0   # 96 x 128 -> short side 64
        second = client.post("click", image="a.png", x=10, y=10, positive=False)
        undone = client.post("undo", image="a.png")
        assert current(undone)["mask"] == current(first)["mask"] and len(current(undone)["clicks"]) == 1
        again = client.post("click", image="a.png", x=10, y=10, positive=False)
        assert current(again)["mask"] == current(second)["mask"] and len(encoded) == 1
        mask = decode_rle(current(again)["mask"])
        assert mask.shape == (96, 128)

        client.post("finish", image="a.png")
        client.post("click", image="a.png", x=100, y=60, positive=True)
        assert len(encoded) == 2   # a new object: its own first click
        saved = client.post("save", image="a.png")
    assert saved["written"] == ["masks/a.png/object_001.png", "masks/a.png/object_002.png", "annotations.json"]
    doc = json.loads((out / "annotations.json").read_text())
    assert doc["annotations"][0]["clicks"][1] == {"x": 10.0, "y": 10.0, "positive": False}


def test_default_size_is_the_familys(emc_checkpoint: Path) -> None:
    assert parse_args(["--images", "i", "--out", "o"]).size is None
    backend = load_backend(str(emc_checkpoint), torch.device("cpu"))
    assert "default size" in backend.name and backend.make_predictor().short_side == 384
    with pytest.raises(ValueError, match="fixed2"):
        load_backend(str(emc_checkpoint), torch.device("cpu"), size=2)


def test_command_line_serves_an_emc_file(images: Path, tmp_path: Path, emc_checkpoint: Path) -> None:
    """``python -m isegm.app --checkpoint <EMC file>`` starts and answers with EMC-Click."""
    command = [sys.executable, "-m", "isegm.app", "--images", str(images), "--out", str(tmp_path / "out"),
               "--checkpoint", str(emc_checkpoint), "--size", str(SIZE), "--port", "0", "--threads", "1"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("open http"):
                break
        assert "with EMCClick segb0.pth" in "".join(lines), "".join(lines)
        url = lines[-1].split()[1]
        with urllib.request.urlopen(url.rstrip("/") + "/api/config", timeout=60) as response:
            config = json.loads(response.read())
        assert config["backend"].startswith("EMCClick segb0.pth") and not config["model_free"]
        assert np.array_equal([i["name"] for i in config["images"]], ["a.png", "b.png"])
    finally:
        process.terminate()
        process.wait(timeout=30)
