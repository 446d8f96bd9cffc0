"""EMC-Click training through the shared trainer: the recipes as data, the authors' click-training
step (the base network once without gradients for the simulated clicks and again with them; the
correction network fed back its refined logits), the simulated clicks and the first-click sampler,
the loss terms, the backbone's learning-rate multipliers, the initialisation and the ImageNet
backbone loaders, one optimizer step per released configuration, the loss falling on generated
scenes, and resume equality."""
from __future__ import annotations

import functools
import math
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import REPO
from isegm.data.points_sampler import FirstPointSampler
from isegm.engine.click_simulation import add_next_clicks, add_next_clicks_per_polarity, draw_num_clicks
from isegm.model.emc.training import EMCClickTraining
from isegm.engine.experiment import load_model_file
from isegm.engine.optimizer import get_optimizer
from isegm.engine.recipes import (EMC_HR32, EMC_HRNET, EMC_HRNET_LR_MULTS, EMC_SEGB3, EMC_SEGFORMER,
                                  EMC_SEGFORMER_LR_MULTS, EMC_WINTER, build_loss)
from isegm.engine.steps import ClickTraining, click_step_for
from isegm.engine.trainer import Trainer, TrainerConfig
from isegm.model import build_skipclick, save_checkpoint
from isegm.model.emc import EMC_CONFIGS, EMCClick, EMCConfig, build_emc
from isegm.model.emc.pretrained import (emc_from_settings, init_for_training, load_imagenet_backbone,
                                        load_emc_weights)
from isegm.engine.losses import MultiTermLoss, NormalizedFocalLossSigmoid, SigmoidBinaryCrossEntropyLoss
from training_toys import CenterClick, Rectangles, resumed_equals_straight, train_under_torchrun

TINY = EMCConfig("hrnet", hrnet_width=8, ocr_width=8, small=True, mid_dims=8)


@pytest.fixture(autouse=True)
def one_thread():
    """One thread: these small convolutions are far slower split over threads on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_emc(seed: int = 0, config: EMCConfig = TINY) -> EMCClick:
    torch.manual_seed(seed)
    return init_for_training(EMCClick(config))


def toy_batch(size: int = 28, batch: int = 2, num_points: int = 6):
    """Rectangles with a positive first click (index 0) and a sampled non-first click (index 100)."""
    gt = torch.zeros(batch, 1, size, size)
    gt[:, :, size // 4:3 * size // 4, size // 5:3 * size // 5] = 1
    images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0)) * 0.3 + gt * 0.6
    points = torch.full((batch, 2 * num_points, 3), -1.0)
    points[:, 0] = torch.tensor([size / 2, size * 2 / 5, 0.0])
    points[:, 1] = torch.tensor([size / 2 - 2, size * 2 / 5 - 2, 100.0])
    return images, points, gt


# --- the recipes ----------------------------------------------------------------------------

MODEL_FILES = {"hr18s": EMC_HRNET, "hr18": EMC_HRNET, "hr32": EMC_HR32, "segb0": EMC_SEGFORMER, "segb3": EMC_SEGB3}


def test_recipes_are_the_authors():
    """models/emcclick/*.py and trainval_scripts/*.sh of the authors (e660ad0)."""
    for recipe in MODEL_FILES.values():
        assert (recipe.dataset, recipe.crop_size, recipe.num_max_points) == ("cocolvis", (320, 480), 24)
        assert (recipe.epochs, recipe.epoch_len, recipe.milestones, recipe.lr_gamma) == (230, 30000, (200, 220), 0.1)
        assert (recipe.batch_size, recipe.optimizer, recipe.betas, recipe.eps) == (64, "adam", (0.9, 0.999), 1e-8)
        assert (recipe.points_sampler, recipe.max_num_next_clicks, recipe.next_clicks_gamma,
                recipe.click_polarity) == ("first", 23, 0.8, "proportional")
        assert (recipe.keep_background_prob, recipe.stuff_prob, recipe.min_object_area) == (0.0, 0.2, 1000)
        assert (recipe.prob_gamma, recipe.merge_objects_prob, recipe.max_num_merged_objects) == (0.8, 0.15, 2)
        assert recipe.scale_range == (0.75, 1.40) and (recipe.nfl_alpha, recipe.nfl_gamma) == (0.5, 2.0)
        assert recipe.checkpoint_interval == ((0, 5), (200, 1)) and not recipe.validation
    assert {name: r.lr for name, r in MODEL_FILES.items()} == \
        {"hr18s": 1e-3, "hr18": 1e-3, "hr32": 8e-4, "segb0": 1e-3, "segb3": 2e-3}
    assert EMC_HRNET.loss_terms == (("coarse", "coarse", "nfl", 1.0), ("aux", "aux", "bce", 0.4),
                                    ("refined", "instances", "nfl", 1.0))
    assert EMC_SEGFORMER.loss_terms == (("coarse", "coarse", "nfl", 1.0), ("refined", "instances", "nfl", 1.0))
    assert EMC_HRNET.lr_mults == EMC_HR32.lr_mults == EMC_HRNET_LR_MULTS
    assert EMC_SEGFORMER.lr_mults == EMC_SEGB3.lr_mults == EMC_SEGFORMER_LR_MULTS
    for name, recipe in MODEL_FILES.items():
        model_file = load_model_file(REPO / "models" / "emcclick" / f"{name}.py")
        assert model_file.NAME == name and model_file.RECIPE is recipe
    assert load_model_file(REPO / "models" / "emcclick" / "tiny.py").RECIPE is EMC_WINTER


def test_number_of_simulated_clicks():
    """Uniform 0..max as SkipClick's trainer (the same draws as before), or P(k) ∝ 0.8^k over 0..23."""
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    assert [draw_num_clicks(a, 3) for _ in range(20)] == [int(b.integers(0, 4)) for _ in range(20)]
    rng = np.random.default_rng(0)
    draws = np.array([draw_num_clicks(rng, 23, 0.8) for _ in range(4000)])
    probs = 0.8 ** np.arange(24) / (0.8 ** np.arange(24)).sum()
    assert draws.min() == 0 and draws.max() <= 23
    assert abs(draws.mean() - (probs * np.arange(24)).sum()) < 0.2
    assert abs((draws == 0).mean() - probs[0]) < 0.03


# --- clicks ---------------------------------------------------------------------------------

def test_proportional_click_polarity():
    """EMC-Click's rule: positive with probability fn / (fn + fp) of the largest error distances."""
    gt = torch.zeros(1, 1, 60, 60)
    gt[:, :, 5:35, 5:35] = 1
    probs = gt.clone()
    probs[0, 0, 5:35, 5:15] = 0                      # a 10 px wide miss: largest fn distance 5
    probs[0, 0, 5:35, 35:43] = 1                     # an 8 px wide leak: largest fp distance 4
    points = torch.full((1, 4, 3), -1.0)
    points[0, 0] = torch.tensor([20.0, 20.0, 0.0])
    positive = []
    for seed in range(300):
        out = add_next_clicks(probs, gt, points, 1, np.random.default_rng(seed), polarity="proportional")
        positive.append(out[0, 1, 2].item() == 1)
        assert (out[0, 3, 2].item() == 1) != positive[-1]
    assert 0.45 < np.mean(positive) < 0.65                 # ~ 5 / (5 + 4); the larger-error rule: always
    assert add_next_clicks(probs, gt, points, 1, np.random.default_rng(0))[0, 1, 2] == 1
    with pytest.raises(ValueError, match="polarity"):
        add_next_clicks(probs, gt, points, 1, np.random.default_rng(0), polarity="random")
    with pytest.raises(ValueError, match="num_max_points"):
        add_next_clicks(probs, gt, points, 2, np.random.default_rng(0))


def authors_rows(probs, gt, points, pos_count, neg_count, rng):
    """The authors' get_rough_next_points (clickatt_trainer_batchconsistant.py, e660ad0) with its
    per-sample click counters, drawing from ``rng`` in our order (polarity, then the pixel)."""
    from isegm.utils.masks import padded_distance
    num_points = points.shape[1] // 2
    points = points.clone()
    for b in range(points.shape[0]):
        gt_b = gt[b, 0].numpy() > 0.5
        fn = padded_distance(np.logical_and(gt_b, probs[b, 0].numpy() < 0.49), mask_size=5)
        fp = padded_distance(np.logical_and(~gt_b, probs[b, 0].numpy() > 0.49), mask_size=5)
        if fn.max() + fp.max() == 0:
            continue
        is_positive = rng.random() < fn.max() / (fn.max() + fp.max())
        if pos_count[b] >= num_points - 1:
            is_positive = False
        if neg_count[b] >= num_points:
            is_positive = True
        if pos_count[b] >= num_points - 1 and neg_count[b] >= num_points:
            continue
        indices = np.argwhere((fn if is_positive else fp) > max(fn.max(), fp.max()) / 2.0)
        if len(indices) > 0:
            y, x = indices[rng.integers(len(indices))]
            if is_positive:
                pos_count[b] += 1
                points[b, num_points - pos_count[b]] = torch.tensor([float(y), float(x), float(pos_count[b])])
            else:
                neg_count[b] += 1
                points[b, 2 * num_points - neg_count[b]] = torch.tensor([float(y), float(x), float(neg_count[b])])
    return points


def test_per_polarity_rows_are_the_authors():
    """EMC-Click writes the k-th click of a polarity into row N - k or 2N - k with index k, and
    a polarity whose rows are full gives way: equal to the authors' counters over 12 clicks with
    4 rows per polarity (so both caps are reached), on random predictions."""
    gen = torch.Generator().manual_seed(0)
    gt = torch.zeros(3, 1, 40, 40)
    gt[:, :, 8:30, 10:32] = 1
    points = torch.full((3, 8, 3), -1.0)
    points[:, 0] = torch.tensor([18.0, 20.0, 0.0])
    ours, theirs = points, points
    pos_count, neg_count = np.zeros(3, int), np.zeros(3, int)
    rng_ours, rng_theirs = np.random.default_rng(5), np.random.default_rng(5)
    for _ in range(12):
        probs = torch.rand(3, 1, 40, 40, generator=gen)
        ours = add_next_clicks_per_polarity(probs, gt, ours, rng_ours)
        theirs = authors_rows(probs, gt, theirs, pos_count, neg_count, rng_theirs)
        assert torch.equal(ours, theirs)
    assert (pos_count == 3).all() and (neg_count == 4).all()         # every row filled, then no click
    assert torch.equal(ours[:, 0], points[:, 0])

    # positive, negative, positive: rows N-1, 2N-1, N-2 (by click number: N-1, 2N-2, N-3)
    miss, leak = gt.clone(), gt.clone()
    miss[:, :, 8:30, 10:20] = 0                                       # only a false negative
    leak[:, :, 30:38, 10:32] = 1                                      # only a false positive
    rng = np.random.default_rng(0)
    by_polarity, by_click = points, points
    for k, probs in enumerate((miss, leak, miss), start=1):
        by_polarity = add_next_clicks_per_polarity(probs, gt, by_polarity, rng)
        by_click = add_next_clicks(probs, gt, by_click, k, rng, polarity="proportional")
    assert by_polarity[0, :, 2].tolist() == [0, -1, 2, 1, -1, -1, -1, 1]
    assert by_click[0, :, 2].tolist() == [0, 3, -1, 1, -1, -1, 2, -1]


def test_emc_step_writes_clicks_per_polarity(monkeypatch):
    """The EMC-Click step simulates its clicks with the per-polarity rows."""
    import isegm.model.emc.training as emc_training
    calls = []
    monkeypatch.setattr(emc_training, "add_next_clicks_per_polarity",
                        lambda probs, gt, points, rng, polarity: calls.append(polarity) or points)
    images, points, gt = toy_batch()
    EMCClickTraining(tiny_emc().train())(images, points, gt, 2, np.random.default_rng(0))
    assert calls == ["proportional", "proportional"]


def test_first_point_sampler_keeps_only_first_clicks():
    from isegm.data.datasets import WinterSportsDataset
    data = WinterSportsDataset(FirstPointSampler(24, prob_gamma=0.8, merge_objects_prob=0.15), num_scenes=8,
                               size=(112, 112), min_object_area=40)
    for i in range(8):
        item = data[i]
        points, mask = item["points"], item["instances"][0]
        first = points[:, 2] == 0
        assert first.any() and (points[~first] == -1).all() and not first[24:].any()
        for y, x, _ in points[first].tolist():
            assert mask[int(y), int(x)] == 1


# --- the step -------------------------------------------------------------------------------

def test_registry_picks_each_familys_step():
    config = TrainerConfig(exp_path=".", epochs=1, batch_size=2, click_polarity="proportional")
    assert isinstance(click_step_for(tiny_emc(), config), EMCClickTraining)
    step = click_step_for(build_skipclick("tiny"), config)
    assert isinstance(step, ClickTraining) and step.polarity == "proportional"


def test_emc_step_is_the_authors_forward():
    """Base network: once in eval mode without gradients for the simulated clicks, once more in
    train mode with gradients. Correction network: every simulated click, fed back its own refined
    1/4-resolution logits (the coarse ones first), then the trained pass on the last of them."""
    model = tiny_emc().train()
    images, points, gt = toy_batch()
    base_calls, refiner_calls = [], []
    model.feature_extractor.register_forward_hook(
        lambda m, args, out: base_calls.append((m.training, torch.is_grad_enabled(), out["instances_lr"])))
    model.refiner.register_forward_hook(
        lambda m, args, out: refiner_calls.append((m.training, args[4], out.logits_lr)))
    outputs, used = EMCClickTraining(model)(images, points, gt, 3, np.random.default_rng(0))

    assert [(t, g) for t, g, _ in base_calls] == [(False, False), (True, True)] and model.training
    assert [t for t, _, _ in refiner_calls] == [False, False, False, True]
    assert refiner_calls[0][1] is base_calls[0][2]                   # click 1 reads the coarse logits
    for (_, prev, _), (_, _, before) in zip(refiner_calls[1:], refiner_calls):
        assert torch.equal(prev, before) and not prev.requires_grad  # later ones the previous refined
    assert sorted(outputs) == ["aux", "coarse", "instances"]
    assert all(v.shape == gt.shape and v.requires_grad for v in outputs.values())
    assert (used[:, 1] == -1).all()                                  # only the sampler's first click stays
    assert ((used[:, :, 2] >= 1).sum(1) <= 3).all() and (used[:, :, 2] >= 1).any()

    # The refined output alone trains the base network through its feature, never through the mask.
    outputs["instances"].sum().backward()
    assert model.feature_extractor.conv1.weight.grad.abs().sum() > 0 and model.maps_transform[0].weight.grad is not None
    assert model.feature_extractor.cls_head.weight.grad is None or not model.feature_extractor.cls_head.weight.grad.any()


def test_without_simulated_clicks_the_mask_is_the_detached_coarse_output():
    model = tiny_emc().train()
    images, points, gt = toy_batch()
    prevs = []
    model.refiner.register_forward_hook(lambda m, args, out: prevs.append(args[4]))
    outputs, _ = EMCClickTraining(model)(images, points, gt, 0, np.random.default_rng(0))
    assert len(prevs) == 1 and not prevs[0].requires_grad
    assert torch.equal(F.interpolate(prevs[0], size=gt.shape[-2:], mode="bilinear", align_corners=True),
                       outputs["coarse"].detach())


# --- losses and optimizer -------------------------------------------------------------------

def test_loss_terms():
    logits = torch.randn(2, 1, 8, 8)
    label = (torch.rand(2, 1, 8, 8) > 0.5).float()
    label[0, 0, 0] = -1
    bce = SigmoidBinaryCrossEntropyLoss()(logits, label)
    target = label.clamp(min=0)
    authors = (torch.relu(logits) - logits * target + F.softplus(-logits.abs())) * (label != -1)   # their formula
    torch.testing.assert_close(bce, authors.mean(dim=(1, 2, 3)))
    outputs = {"instances": logits, "coarse": logits * 2, "aux": logits - 1}
    loss = build_loss(EMC_HRNET)
    total, terms = loss(outputs, label)
    assert list(terms) == ["coarse", "aux", "refined"] and total.shape == (2,)
    nfl = NormalizedFocalLossSigmoid(alpha=0.5, gamma=2)
    torch.testing.assert_close(terms["refined"], nfl(logits, label))
    torch.testing.assert_close(total, terms["coarse"] + 0.4 * terms["aux"] + terms["refined"])
    with pytest.raises(KeyError, match="aux"):
        loss({"instances": logits, "coarse": logits}, label)
    with pytest.raises(ValueError, match="at least one"):
        MultiTermLoss([])


@pytest.mark.parametrize("name", ["hr18s", "segb0"])
def test_backbone_learning_rate_multipliers(name):
    """The authors' LRMult: HRNet (aux and cls heads included) at 0.1x but the OCR context layers;
    MiT with its click embedding at 0.1x; click encoder, decoder and correction network at 1x."""
    model = build_emc(name)
    recipe = EMC_HRNET if name == "hr18s" else EMC_SEGFORMER
    optimizer = get_optimizer(model, "adam", {"lr": 1.0}, lr_mults=recipe.lr_mults)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert optimizer.param_groups[0]["lr"] == 1.0
    named = dict(model.named_parameters())
    assert len(lr_of) == len(named)
    slow = ("feature_extractor.stage4.", "feature_extractor.aux_head.", "feature_extractor.cls_head.") \
        if name == "hr18s" else ("feature_extractor.backbone.block1.", "feature_extractor.backbone.patch_embed_side1.")
    fast = ("refiner.", "maps_transform.", "feature_extractor.conv3x3_ocr.", "feature_extractor.ocr_distri_head.") \
        if name == "hr18s" else ("refiner.", "feature_extractor.decode_head.")
    for key, param in named.items():
        if key.startswith(slow):
            assert lr_of[id(param)] == pytest.approx(0.1), key
        if key.startswith(fast):
            assert lr_of[id(param)] == 1.0, key
    with pytest.raises(ValueError, match="layerwise"):
        get_optimizer(model, "adam", {"lr": 1.0}, layerwise_decay=True, lr_mults=recipe.lr_mults)


# --- start points ---------------------------------------------------------------------------

def test_initialisation_is_the_authors():
    hrnet = init_for_training(build_emc("hr18s"))
    conv = hrnet.feature_extractor.aux_head[0].weight                       # 270 x 270 1x1
    assert conv.std().item() == pytest.approx(math.sqrt(2 / 270), rel=0.05)
    assert not hrnet.feature_extractor.aux_head[0].bias.any() and (hrnet.feature_extractor.bn1.weight == 1).all()
    segformer = init_for_training(build_emc("segb0"))
    assert segformer.feature_extractor.backbone.block4[0].mlp.fc1.weight.std().item() == pytest.approx(0.02, rel=0.1)


def _save_backbone(model: EMCClick, path, extra: str) -> dict:
    target = model.feature_extractor if model.config.base == "hrnet" else model.feature_extractor.backbone
    fresh = ("conv3x3_ocr.", "ocr_", "cls_head.", "aux_head.", "patch_embed_side1.", "norm_add.")
    state = {k: v.clone() for k, v in target.state_dict().items() if not k.startswith(fresh)}
    torch.save({**state, extra: torch.zeros(3)}, path)
    return state


@pytest.mark.parametrize("config", [TINY, EMC_CONFIGS["segb0"]], ids=["hrnet", "segformer"])
def test_imagenet_backbone_loading(tmp_path, config):
    """The classification file's backbone tensors land in the base network (the classifier is
    ignored, the heads and the click embedding keep their values); a missing file names its
    config key and source; a file of another network is refused."""
    source = tiny_emc(1, config)
    state = _save_backbone(source, tmp_path / "imagenet.pth", "classifier.weight" if config is TINY else "head.weight")
    model = tiny_emc(2, config)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    load_imagenet_backbone(model, tmp_path / "imagenet.pth")
    prefix = "feature_extractor." if config is TINY else "feature_extractor.backbone."
    after = model.state_dict()
    assert all(torch.equal(after[prefix + k], v) for k, v in state.items())
    assert all(torch.equal(after[k], before[k]) for k in after if k.startswith(("refiner.", "maps_transform.")))
    with pytest.raises(FileNotFoundError, match="hrnet_w18_small_model_v2.pth.*HRNet-Image-Classification.*HRNETV2_W18_SMALL_WEIGHTS"):
        load_imagenet_backbone(build_emc("hr18s"), tmp_path / "absent.pth", "hr18s")
    with pytest.raises(ValueError, match="does not fit"):
        load_imagenet_backbone(tiny_emc(0, EMCConfig("hrnet", hrnet_width=12, ocr_width=8, small=True, mid_dims=8))
                               if config is TINY else build_emc("segb3"), tmp_path / "imagenet.pth")


def test_model_file_settings(tmp_path):
    """No ImageNet key: an error naming it, the file and its source, unless from scratch is chosen;
    --weights: a checkpoint our trainer wrote."""
    with pytest.raises(FileNotFoundError, match="HRNETV2_W18_SMALL_WEIGHTS is not set.*hrnet_w18_small_model_v2.pth"
                                                ".*--from-scratch"):
        emc_from_settings("hr18s", {})
    model = emc_from_settings("hr18s", {"from_scratch": True})
    assert isinstance(model, EMCClick) and model.config == EMC_CONFIGS["hr18s"]
    trained = tiny_emc(5)
    save_checkpoint(trained, tmp_path / "last.pth", epoch=3)
    loaded = emc_from_settings(TINY, {"weights": str(tmp_path / "last.pth")})
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in trained.state_dict().items())
    with pytest.raises(FileNotFoundError, match="--weights"):
        load_emc_weights(tiny_emc(), tmp_path / "absent.pth")


# --- training -------------------------------------------------------------------------------

STEP_SIZES = {64: 32, 96: 40}   # templates per polarity -> smallest side with that many 1/4-res pixels


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow if n in ("hr32", "segb3") else ())
                                  for n in EMC_CONFIGS])
def test_one_training_step_per_configuration(name):
    """A released configuration, one simulated click and one optimizer step with its recipe's
    loss and learning-rate multipliers: the base network, click encoder and correction network move."""
    model = init_for_training(build_emc(name)).train()
    recipe = MODEL_FILES[name]
    images, points, gt = toy_batch(STEP_SIZES[model.config.mid_dims])
    optimizer = get_optimizer(model, "adam", {"lr": recipe.lr}, lr_mults=recipe.lr_mults)
    assert sorted(g["lr"] for g in optimizer.param_groups) == pytest.approx([recipe.lr * 0.1, recipe.lr])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    outputs, _ = EMCClickTraining(model)(images, points, gt, 1, np.random.default_rng(0))
    total, terms = build_loss(recipe)(outputs, gt)
    assert torch.isfinite(total).all() and set(terms) == {t[0] for t in recipe.loss_terms}
    total.mean().backward()
    optimizer.step()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(before[k], v)}
    side = "maps_transform." if model.config.base == "hrnet" else "feature_extractor.backbone.patch_embed_side1."
    for prefix in ("feature_extractor.", side, "refiner.corr_conv.", "refiner.refine_pred."):
        assert any(k.startswith(prefix) for k in changed), prefix


@functools.lru_cache(maxsize=None)
def winter_batch(n: int = 4, size: int = 64):
    from isegm.data.datasets import WinterSportsDataset
    from isegm.data.augmentation import validation_augmentation
    data = WinterSportsDataset(FirstPointSampler(8), num_scenes=n, size=(size, size), min_object_area=20,
                               framing="close", augmentation=validation_augmentation((size, size)))
    items = [data[i] for i in range(n)]
    return {k: torch.stack([item[k] for item in items]) for k in items[0]}


def test_loss_falls_on_generated_scenes():
    """A small EMC-Click on four generated close-ups with simulated clicks (EMC_WINTER's step and
    loss): the loss falls and the refined masks go from nothing to most of the athletes."""
    batch = winter_batch()
    model = tiny_emc(0, EMCConfig("hrnet", hrnet_width=8, ocr_width=16, small=True, mid_dims=16)).train()
    optimizer = get_optimizer(model, "adam", {"lr": 2e-3})
    loss_fn, step = build_loss(EMC_WINTER), EMCClickTraining(model)
    gt = batch["instances"] > 0.5
    losses, ious = [], []
    for i in range(40):
        rng = np.random.default_rng(i)
        outputs, _ = step(batch["images"], batch["points"], batch["instances"],
                          draw_num_clicks(rng, 3, 0.8), rng)
        total, _ = loss_fn(outputs, batch["instances"])
        optimizer.zero_grad()
        total.mean().backward()
        optimizer.step()
        pred = torch.sigmoid(outputs["instances"].detach()) > 0.49
        losses.append(total.mean().item())
        ious.append(((pred & gt).sum() / (pred | gt).sum()).item())
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:3]), losses
    assert np.mean(ious[-5:]) > 0.3 > 0.1 > ious[0], ious


def run_trainer(tmp_path, epochs, resume=None):
    model = tiny_emc()
    config = TrainerConfig(exp_path=tmp_path, epochs=epochs, batch_size=4, workers=0, image_dump_interval=2,
                           log_interval=1, checkpoint_interval=((0, 1),), max_num_next_clicks=3,
                           next_clicks_gamma=0.8, click_polarity="proportional")
    optimizer = get_optimizer(model, "adam", {"lr": 1e-3}, lr_mults=EMC_HRNET_LR_MULTS)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[1], gamma=0.1)
    trainer = Trainer(model, config, Rectangles(n=8, size=28, epoch_len=8, points_sampler=CenterClick()),
                      build_loss(EMC_HRNET), optimizer, scheduler, valset=Rectangles(n=4, size=28))
    if resume is not None:
        trainer.resume(resume)
    trainer.run()
    return trainer


def test_resume_equals_an_uninterrupted_run(tmp_path):
    """The shared trainer with EMC-Click's step, loss and schedule: a run cut after 2 of 3 epochs
    and resumed ends with the uninterrupted run's weights and BatchNorm statistics, bit for bit;
    each loss term is logged."""
    straight, resumed = resumed_equals_straight(run_trainer, tmp_path)
    assert [g["lr"] for g in resumed.optimizer.param_groups] == pytest.approx([1e-4, 1e-5])
    logs = (tmp_path / "straight" / "logs" / "scalars.jsonl").read_text()
    for tag in ("Train/loss", "Train/loss_coarse", "Train/loss_aux", "Train/loss_refined", "Val/iou"):
        assert f'"{tag}"' in logs, tag
    assert any((tmp_path / "straight" / "vis" / "train").iterdir())


DDP_MODEL_FILE = textwrap.dedent("""
    import sys
    import torch
    sys.path.insert(0, {tests!r})
    from isegm.engine.optimizer import get_optimizer
    from isegm.engine.recipes import EMC_HRNET, EMC_HRNET_LR_MULTS, build_loss
    from isegm.engine.trainer import Trainer, TrainerConfig
    from isegm.model.emc import EMCClick, EMCConfig
    from isegm.model.emc.pretrained import init_for_training
    from training_toys import Rectangles

    def main(cfg):
        torch.manual_seed(0)
        model = init_for_training(EMCClick(EMCConfig("hrnet", hrnet_width=8, ocr_width=8, small=True, mid_dims=8)))
        config = TrainerConfig(exp_path=cfg["EXP_PATH"], epochs=1, batch_size=4, workers=0, image_dump_interval=0,
                               next_clicks_gamma=0.8, click_polarity="proportional")
        trainer = Trainer(model, config, Rectangles(n=8, size=28, epoch_len=8), build_loss(EMC_HRNET),
                          get_optimizer(model, "adam", {{"lr": 1e-3}}, lr_mults=EMC_HRNET_LR_MULTS))
        trainer.run()
        torch.save(dict(model.named_parameters()), f"{{cfg['EXP_PATH']}}/rank{{trainer.process.rank}}.pt")
""")


@pytest.mark.slow
def test_two_process_ddp(tmp_path):
    """train.py under torchrun with 2 CPU processes (gloo) and EMC-Click's step: both ranks end
    with the same parameters, and these moved. (BatchNorm statistics stay per process on CPUs;
    on GPUs the trainer makes them SyncBatchNorm.)"""
    exp = train_under_torchrun(tmp_path, DDP_MODEL_FILE.format(tests=str(REPO / "tests")), "emc_toy", 600)
    rank0, rank1 = (torch.load(exp / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    start = dict(tiny_emc().named_parameters())
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    assert not all(torch.equal(rank0[k], start[k]) for k in rank0)


def test_trainer_checkpoint_of_emc_loads_with_load_checkpoint(tmp_path):
    """The trainer writes EMC-Click with ``save_checkpoint``; ``load_checkpoint`` (evaluation, app)
    reads it back as EMC-Click with the same weights, and a wrong variant name is refused."""
    from isegm.model import load_checkpoint, save_checkpoint
    from isegm.model.emc import EMCClick, build_emc

    torch.manual_seed(0)
    model = build_emc("segb0")
    path = tmp_path / "emc.pth"
    save_checkpoint(model, path, epoch=3)
    loaded = load_checkpoint(path)
    assert isinstance(loaded, EMCClick) and loaded.config == model.config
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert load_checkpoint(path, variant="segb0").config == model.config
    with pytest.raises(ValueError, match="not variant 'hr18s'"):
        load_checkpoint(path, variant="hr18s")
