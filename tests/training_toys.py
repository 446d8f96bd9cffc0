"""Small training data for the trainer's tests: coloured rectangles on noise, and a click
sampler that puts one positive click at the target's centre."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Tuple

import numpy as np
import torch

from conftest import REPO
from isegm.data.datasets.training import PointsSampler, TrainingDataset
from isegm.data.sample import TrainingSample
from isegm.model import build_skipclick


class CenterClick(PointsSampler):
    """Target: the first object; one positive click at the centre of its pixels."""

    def __init__(self, num_points: int = 4) -> None:
        self.num_points = num_points

    def sample(self, sample: TrainingSample, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
        points = np.full((2 * self.num_points, 3), -1, dtype=np.float32)
        if len(sample) == 0:
            return np.zeros(sample.image.shape[:2], np.float32), points
        mask = sample.get_object_mask(sample.objects_ids[0]).astype(np.float32)
        ys, xs = np.nonzero(mask == 1)
        points[0] = (ys[len(ys) // 2], xs[len(xs) // 2], 0)
        return mask, points


class Rectangles(TrainingDataset):
    """``n`` images of ``size`` x ``size``: one or two rectangles of random colour on noise."""

    def __init__(self, n: int = 8, size: int = 28, **kwargs) -> None:
        kwargs.setdefault("points_sampler", CenterClick())
        super().__init__(**kwargs)
        self.size = size
        self.dataset_samples = list(range(n))

    def get_sample(self, index: int, rng: np.random.Generator) -> TrainingSample:
        scene = np.random.default_rng(index)
        image = scene.integers(0, 80, (self.size, self.size, 3), dtype=np.uint8)
        labels = np.zeros((self.size, self.size), np.int32)
        for value in range(1, 1 + int(scene.integers(1, 3))):
            y, x = scene.integers(0, self.size // 2, 2)
            h, w = scene.integers(self.size // 4, self.size // 2, 2)
            labels[y:y + h, x:x + w] = value
            image[y:y + h, x:x + w] = scene.integers(100, 256, 3)
        return TrainingSample(image, labels, objects_ids=sorted(set(np.unique(labels).tolist()) - {0}),
                              sample_id=index)


def tiny_model(seed: int = 0):
    """A SkipClick with a ViT-S/14 backbone and a one-block fusion stack (random weights)."""
    torch.manual_seed(seed)
    return build_skipclick("skipclick", backbone="dinov2_vits14_reg", fusion_depth=1, fusion_heads=6,
                           fpn_dims=(16, 32, 64, 128), head_channels=16, train_size=(28, 28))


def train_under_torchrun(tmp_path: Path, model_file_text: str, name: str, timeout: int) -> Path:
    """``train.py`` on the model file ``<name>.py`` (``model_file_text``) under torchrun with 2 CPU
    processes (gloo); asserts it succeeded and returns its experiment folder."""
    model_file = tmp_path / f"{name}.py"
    model_file.write_text(model_file_text)
    config = tmp_path / "config.yml"
    config.write_text(f"EXPS_PATH: {tmp_path / 'exps'}\n")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           str(REPO / "train.py"), str(model_file), "--cpu", "--config-path", str(config), "--exp-name", "ddp"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    (exp,) = (tmp_path / "exps" / name).iterdir()
    return exp



def resumed_equals_straight(run_trainer: Callable[..., Any], tmp_path: Path) -> Tuple[Any, Any]:
    """Train 3 epochs straight, and 2 then resumed to 3; assert the resumed run starts at epoch 2
    and ends with the straight run's state dict bit for bit. Returns (straight, resumed)."""
    straight = run_trainer(tmp_path / "straight", epochs=3)
    run_trainer(tmp_path / "cut", epochs=2)
    resumed = run_trainer(tmp_path / "cut", epochs=3, resume=tmp_path / "cut" / "checkpoints" / "last_checkpoint.pth")
    assert resumed.start_epoch == 2
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    return straight, resumed
