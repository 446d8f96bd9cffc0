"""Model families as plug-ins: a toy family (``tests/toy_family.py``) added with one line of
``FAMILY_MODULES`` goes through checkpoint loading, the evaluation loop, training and the
annotation app's backend like SkipClick and EMC-Click; the built-in families are found by class
and by name."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from isegm.app.backend import ImageCache, load_backend
from isegm.data import DSample
from isegm.engine.losses import NormalizedFocalLossSigmoid
from isegm.engine.optimizer import get_optimizer
from isegm.engine.steps import ClickTraining, click_step_for
from isegm.engine.trainer import Trainer, TrainerConfig
from isegm.inference import BasePredictor, Click, get_predictor, run_dataset
from isegm.model import (EMCClick, SkipClick, all_families, build_emc, family_named, family_of, load_checkpoint,
                         save_checkpoint)
import isegm.model.families as registry
from isegm.model.emc.predictor import EMCPredictor
from isegm.model.emc.training import EMCClickTraining
from training_toys import Rectangles, tiny_model


@pytest.fixture
def toy(monkeypatch):
    """The toy family registered the way a new family is: one more line in FAMILY_MODULES."""
    monkeypatch.setattr(registry, "FAMILY_MODULES", [*registry.FAMILY_MODULES, "toy_family"])
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_LOADED", set(registry._LOADED))
    import toy_family
    return toy_family


class Squares:
    """Two samples, each with two square objects."""

    name = "Squares"

    def __len__(self) -> int:
        return 2

    def get_sample(self, index: int) -> DSample:
        rng = np.random.default_rng(index)
        image = rng.integers(0, 60, (40, 48, 3), dtype=np.uint8)
        labels = np.zeros((40, 48), dtype=np.int32)
        labels[4 + index:20, 4:22] = 1
        labels[24:36, 26 + index:44] = 2
        image[labels == 1] = (200, 40, 40)
        image[labels == 2] = (40, 200, 40)
        return DSample(image, labels, object_values=(1, 2), sample_id=index)


def test_built_in_families_are_found_by_class_and_name():
    assert [f.name for f in all_families()][:2] == ["SkipClick", "EMCClick"]
    assert family_of(tiny_model()).model_class is SkipClick and family_of(build_emc("segb0")).label == "EMC-Click"
    assert family_named("EMCClick").model_class is EMCClick and family_of(object()) is None
    with pytest.raises(KeyError, match="unknown model family 'Nope'.*SkipClick.*EMCClick"):
        family_named("Nope")


def test_built_in_families_dispatch_their_predictor_and_training_step():
    config = TrainerConfig(exp_path=Path("unused"), epochs=1, batch_size=1)
    assert isinstance(get_predictor(tiny_model()), BasePredictor)
    assert isinstance(get_predictor(build_emc("segb0"), "fixed64"), EMCPredictor)
    assert type(click_step_for(tiny_model(), config)) is ClickTraining
    assert type(click_step_for(build_emc("segb0"), config)) is EMCClickTraining


def test_a_new_family_loads_from_its_checkpoints(toy, tmp_path):
    torch.manual_seed(0)
    model = toy.FAMILY.build("wide")
    path = tmp_path / "toy.pth"
    save_checkpoint(model, path, epoch=1)
    loaded = load_checkpoint(path)
    assert family_of(loaded) is toy.FAMILY and loaded.config == toy.ToyConfig(width=16) and not loaded.training
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert load_checkpoint(path, variant="wide").config.width == 16
    with pytest.raises(ValueError, match="Toy model that is not variant 'toy'"):
        load_checkpoint(path, variant="toy")
    raw = torch.load(path, weights_only=True)
    assert raw["family"] == "ToyNet" and raw["config"] == {"width": 16}


def test_a_new_family_runs_through_the_evaluation_loop(toy):
    """The family's predictor (here the RITM chain) one at a time and in batches: the same IoUs."""
    torch.manual_seed(0)
    model = toy.FAMILY.build("toy").eval()
    predictor = get_predictor(model, "fixed40,48", suppress_zoom=True)
    single = run_dataset(Squares(), predictor, max_iou_thr=0.99, max_clicks=4)
    batched = run_dataset(Squares(), get_predictor(model, "fixed40,48", suppress_zoom=True), batch_size=3,
                          max_iou_thr=0.99, max_clicks=4)
    assert len(single.instances) == 4
    for a, b in zip(single.instances, batched.instances):
        assert len(a.ious) == 4 and np.array_equal(a.ious, b.ious)


def test_a_new_family_trains_and_saves_its_checkpoints(toy, tmp_path):
    """One epoch of the iterative click trainer (its family's step, here the RITM family's):
    the weights change and the trainer's checkpoint loads back as the toy family."""
    torch.manual_seed(0)
    model = toy.FAMILY.build("toy")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = TrainerConfig(exp_path=tmp_path, epochs=1, batch_size=4, workers=0, image_dump_interval=0,
                           checkpoint_interval=((0, 1),))
    trainer = Trainer(model, config, Rectangles(n=8, size=28, epoch_len=8), NormalizedFocalLossSigmoid(0.5, 2),
                      get_optimizer(model, "adam", {"lr": 1e-2}))
    assert type(trainer.step_module) is ClickTraining
    trainer.run()
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    loaded = load_checkpoint(tmp_path / "checkpoints" / "last_checkpoint.pth")
    assert family_of(loaded) is toy.FAMILY
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_a_new_family_is_served_by_the_app(toy, tmp_path):
    """The app's backend loads the toy checkpoint and answers clicks from the cached image work;
    undo through the predictor's states gives the earlier mask back."""
    torch.manual_seed(0)
    save_checkpoint(toy.FAMILY.build("toy"), tmp_path / "toy.pth")
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), Squares().get_sample(0).image[..., ::-1])
    backend = load_backend(str(tmp_path / "toy.pth"), torch.device("cpu"), size=32)
    assert backend.name.startswith("ToyNet toy.pth, 32 px") and not backend.model_free
    entry = ImageCache(images, backend).get("a.png")
    first, after_one = backend.predict(entry, [Click(True, (10, 10))], entry.initial_state)
    second, _ = backend.predict(entry, [Click(True, (10, 10)), Click(False, (30, 36))], after_one)
    again, _ = backend.predict(entry, [Click(True, (10, 10))], entry.initial_state)
    assert first.shape == second.shape == (40, 48) and not np.array_equal(first, second)
    assert np.array_equal(first, again)
