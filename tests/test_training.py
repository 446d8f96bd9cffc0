"""Training: the normalized focal loss, the simulated training clicks, the click-iteration step
with and without backbone reuse, one optimizer step per paper configuration, resume
equivalence and a two-process DDP run."""
from __future__ import annotations

import functools
import importlib.util
import textwrap

import numpy as np
import pytest
import torch

from conftest import REPO
from isegm.engine.click_simulation import add_next_clicks
from isegm.engine.optimizer import get_optimizer, layer_decay_groups
from isegm.engine.trainer import ClickTraining, Trainer, TrainerConfig
from isegm.model import VARIANTS, build_skipclick, load_checkpoint, variant_config
from isegm.model.backbones import BACKBONES
from isegm.engine.losses import NormalizedFocalLossSigmoid
from training_toys import Rectangles, resumed_equals_straight, tiny_model, train_under_torchrun


# --- loss -----------------------------------------------------------------------------------

def test_normalized_focal_loss():
    loss = NormalizedFocalLossSigmoid(alpha=0.5, gamma=2)
    label = torch.zeros(2, 1, 8, 8)
    label[:, :, 2:6, 2:6] = 1
    good = (label * 2 - 1) * 8                         # confident and right
    bad = -good
    values = loss(torch.cat([good[:1], bad[:1]]), label)
    assert values.shape == (2,) and values[0] < 1e-3 < 0.1 < values[1]
    # Ignored pixels count for nothing, however wrong the prediction is there.
    ignored = label.clone()
    ignored[:, :, 0, :] = -1
    worse = good.clone()
    worse[:, :, 0, :] = 20
    torch.testing.assert_close(loss(worse, ignored), loss(good, ignored))
    # The focusing weights are renormalised to the labelled pixel count: a uniformly wrong map
    # of 0 logits gives the same loss at any size.
    small, large = torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 16, 16)
    torch.testing.assert_close(loss(small, (small + 1) * 0), loss(large, large * 0))
    assert loss.k_sum > 0 and loss.m_max > 0


# --- training clicks ------------------------------------------------------------------------

def test_next_click_goes_into_the_largest_error():
    gt = torch.zeros(2, 1, 20, 20)
    gt[:, :, 2:18, 2:18] = 1
    probs = gt.clone()
    probs[0, 0, 2:18, 2:10] = 0                        # sample 0 misses the left half: positive click
    probs[1, 0, 0:20, 0:2] = 1                         # sample 1 leaks into a thin band: negative click
    points = torch.full((2, 6, 3), -1.0)
    points[:, 0] = torch.tensor([10.0, 10.0, 0.0])
    out = add_next_clicks(probs, gt, points, 1, np.random.default_rng(0))
    assert out[0, 2, 2] == 1 and 2 <= out[0, 2, 1] < 10 and gt[0, 0, int(out[0, 2, 0]), int(out[0, 2, 1])] == 1
    assert out[1, 5, 2] == 1 and out[1, 5, 1] < 2 and (out[1, :5] == points[1, :5]).all()
    assert (points[:, 2] == -1).all()                  # the input is not changed
    again = add_next_clicks(probs, gt, points, 1, np.random.default_rng(0))
    assert torch.equal(out, again)
    assert torch.equal(add_next_clicks(gt, gt, points, 1, np.random.default_rng(0)), points)   # no error, no click
    with pytest.raises(ValueError, match="from 1"):
        add_next_clicks(probs, gt, points, 0, np.random.default_rng(0))


@functools.lru_cache(maxsize=None)
def make_batch(size: int = 28):
    data = Rectangles(n=2, size=size)
    items = [data[i] for i in range(2)]
    return {k: torch.stack([item[k] for item in items]) for k in items[0]}


@pytest.fixture
def batch():
    return make_batch()


def test_feature_reuse_gives_the_authors_step(batch):
    """Backbone once per batch (ours) and the whole network per click (the authors') give the
    same clicks and the same prediction."""
    model = tiny_model().eval()
    outputs = []
    for reuse in (True, False):
        step = ClickTraining(model, max_num_next_clicks=3, reuse_features=reuse)
        with torch.no_grad():
            outputs.append(step(batch["images"], batch["points"], batch["instances"], 3, np.random.default_rng(1)))
    (logits_a, points_a), (logits_b, points_b) = outputs
    assert torch.equal(points_a, points_b) and (points_a[:, :, 2] >= 1).any()
    torch.testing.assert_close(logits_a, logits_b, rtol=0, atol=1e-5)
    assert not model.training


@pytest.mark.parametrize("variant", [pytest.param(v, marks=() if v in ("skipclick", "baseline", "tiny") else pytest.mark.slow)
                                     for v in VARIANTS])
def test_one_training_step_per_paper_configuration(variant):
    """ViT-B backbones at 2x2 tokens: the frozen backbone gets no gradient and stays out of the
    optimizer; everything in it is unchanged, and the trained part moves."""
    torch.manual_seed(0)
    backbone = variant_config(variant).backbone
    size = 2 * BACKBONES[backbone].kwargs.get("patch_size", 16 if backbone.startswith("dinov3") else 14)   # 2x2 patches
    model = build_skipclick(variant, train_size=(size, size)).train()
    batch = make_batch(size)
    optimizer = get_optimizer(model, "adam", {"lr": 1e-4})
    frozen = model.config.freeze_backbone
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    backbone = list(model.feature_extractor.parameters())
    assert all((id(p) in optimized) != frozen for p in backbone)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    logits, _ = ClickTraining(model, 3)(batch["images"], batch["points"], batch["instances"], 2,
                                        np.random.default_rng(0))
    NormalizedFocalLossSigmoid(alpha=0.5, gamma=2)(logits, batch["instances"]).mean().backward()
    optimizer.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("backbone_mix.") for k in changed) and any(k.startswith("head.") for k in changed)
    assert any(k.startswith("feature_extractor.") for k in changed) != frozen


def test_layerwise_decay_groups():
    model = tiny_model()
    groups = layer_decay_groups(model, lr=1.0)
    rates = {round(g["lr"], 6) for g in groups}
    assert rates == {round(0.75 ** k, 6) for k in (0, 1, 2)}       # head/neck, block 0, click embedding
    by_param = {id(p): g for g in groups for p in g["params"]}
    assert by_param[id(model.patch_embed_coords.proj.weight)]["lr"] == pytest.approx(0.75 ** 2)
    assert by_param[id(model.backbone_mix.blocks[0].attn.qkv.bias)]["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in model.parameters())


# --- the trainer ----------------------------------------------------------------------------

def run_trainer(tmp_path, epochs, resume=None, **overrides):
    model = tiny_model()
    config = TrainerConfig(exp_path=tmp_path, epochs=epochs, batch_size=4, workers=0, image_dump_interval=2,
                           log_interval=1, checkpoint_interval=((0, 1),), **overrides)
    optimizer = get_optimizer(model, "adam", {"lr": 1e-3})
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[1], gamma=0.1)
    trainer = Trainer(model, config, Rectangles(n=8, size=28, epoch_len=8), NormalizedFocalLossSigmoid(0.5, 2),
                      optimizer, scheduler, valset=Rectangles(n=4, size=28))
    if resume is not None:
        trainer.resume(resume)
    trainer.run()
    return trainer


def test_resume_equals_an_uninterrupted_run(tmp_path):
    straight, resumed = resumed_equals_straight(run_trainer, tmp_path)
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
    files = sorted(p.name for p in (tmp_path / "cut" / "checkpoints").iterdir())
    assert files == ["000.pth", "001.pth", "002.pth", "last_checkpoint.pth", "last_checkpoint.pth.previous"]
    assert load_checkpoint(tmp_path / "cut" / "checkpoints" / "002.pth").config == straight.model.config
    logs = (tmp_path / "straight" / "logs" / "scalars.jsonl").read_text()
    assert '"Train/loss"' in logs and '"Val/iou"' in logs and (tmp_path / "straight" / "vis" / "train").is_dir()
    if importlib.util.find_spec("tensorboard") is not None:   # the dev extra installs it
        assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "straight" / "logs").iterdir())


def test_weights_only_checkpoint_cannot_be_resumed(tmp_path):
    from isegm.model import save_checkpoint
    save_checkpoint(tiny_model(), tmp_path / "w.pth")
    with pytest.raises(ValueError, match="--weights"):
        run_trainer(tmp_path, epochs=1, resume=tmp_path / "w.pth")


DDP_MODEL_FILE = textwrap.dedent("""
    import sys
    import torch
    sys.path.insert(0, {tests!r})
    from isegm.engine.optimizer import get_optimizer
    from isegm.engine.trainer import Trainer, TrainerConfig
    from isegm.engine.losses import NormalizedFocalLossSigmoid
    from training_toys import Rectangles, tiny_model

    def main(cfg):
        model = tiny_model()
        config = TrainerConfig(exp_path=cfg["EXP_PATH"], epochs=1, batch_size=4, workers=0, image_dump_interval=0)
        trainer = Trainer(model, config, Rectangles(n=8, size=28, epoch_len=8), NormalizedFocalLossSigmoid(0.5, 2),
                          get_optimizer(model, "adam", {{"lr": 1e-3}}))
        trainer.run()
        torch.save(model.state_dict(), f"{{cfg['EXP_PATH']}}/rank{{trainer.process.rank}}.pt")
""")


def test_two_process_ddp_ends_with_identical_weights(tmp_path):
    """train.py under torchrun with 2 CPU processes (gloo): after the same steps both ranks hold
    the same weights, and these moved from the start."""
    exp = train_under_torchrun(tmp_path, DDP_MODEL_FILE.format(tests=str(REPO / "tests")), "toy_model", 300)
    assert exp.name == "000_ddp" and (exp / "checkpoints" / "last_checkpoint.pth").is_file()
    assert any(p.name.startswith("toy_model_") for p in exp.iterdir())
    rank0, rank1 = (torch.load(exp / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    start = tiny_model().state_dict()
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    assert not all(torch.equal(rank0[k], start[k]) for k in rank0)


def test_loss_falls_on_generated_scenes():
    """The tiny model on four generated winter scenes (fixed crops, no simulated clicks): the loss
    falls, and the masks go from nothing to most of the objects. (The normalized focal loss
    re-weights the remaining errors every step, so it falls unevenly; the IoU shows the learning.)"""
    from isegm.data.datasets import WinterSportsDataset
    from isegm.data.points_sampler import MultiPointSampler
    from isegm.data.augmentation import validation_augmentation
    torch.manual_seed(0)
    model = build_skipclick("tiny").train()
    data = WinterSportsDataset(MultiPointSampler(8), num_scenes=4, size=(112, 112), min_object_area=40,
                               augmentation=validation_augmentation((112, 112)))
    items = [data[i] for i in range(4)]
    batch = {k: torch.stack([item[k] for item in items]) for k in items[0]}
    optimizer = get_optimizer(model, "adam", {"lr": 3e-4})
    loss_fn = NormalizedFocalLossSigmoid(alpha=0.5, gamma=2)
    step = ClickTraining(model, max_num_next_clicks=0)
    losses, ious = [], []
    gt = batch["instances"] > 0.5
    for i in range(36):
        logits, _ = step(batch["images"], batch["points"], batch["instances"], 0, np.random.default_rng(i))
        loss = loss_fn(logits, batch["instances"]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        pred = torch.sigmoid(logits.detach()) > 0.49
        losses.append(loss.item())
        ious.append(((pred & gt).sum() / (pred | gt).sum()).item())
    assert np.mean(losses[-10:]) < 0.8 * losses[0], losses
    assert ious[0] < 0.1 and np.mean(ious[-3:]) > 0.4, ious
