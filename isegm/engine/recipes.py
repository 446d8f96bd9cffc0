"""Training recipes as data: what the model files of ``models/`` train with.

``COCOLVIS`` is the paper's recipe (every SkipClick row): COCO+LVIS, 448 crops, up to 24
sampled clicks and 3 simulated ones, normalized focal loss, Adam 5e-5 for 55 epochs of 30,000
samples, learning rate x0.1 at epochs 50 and 55, batch 32. A model file picks a recipe (or
``dataclasses.replace``s a few fields) and calls ``train(model, cfg, recipe)``.

``EMC_HRNET`` / ``EMC_SEGFORMER`` are EMC-Click's (Du et al., CVPR 2023; the authors'
``models/emcclick/*.py`` and ``trainval_scripts/*.sh`` at github.com/feiaxyt/EMC-Click e660ad0):
COCO+LVIS, 320x480 crops, first click only from the sampler and up to 23 simulated ones (fewer
more likely), three loss terms, Adam 1e-3 with the backbone at 0.1x, 230 epochs of 30,000 samples,
x0.1 at epochs 200 and 220, batch 64 (their training scripts' ``--batch-size``; the model scripts
default to 32), and their dataset's target rules (``TargetFilter``: samples without an object
redrawn, target components under 900 px erased, targets of at most 1000 px or at least 85 % of
the crop redrawn).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from ..data.points_sampler import FirstPointSampler, MultiPointSampler
from ..data.augmentation import training_augmentation, validation_augmentation
from ..data.datasets.training import TargetFilter
from .losses import MultiTermLoss, NormalizedFocalLossSigmoid, SigmoidBinaryCrossEntropyLoss
from .optimizer import get_optimizer
from .trainer import Trainer, TrainerConfig


@dataclass(frozen=True)
class Recipe:
    """Everything a training run takes from its model file. ``dataset``: ``cocolvis``
    (config key ``LVIS_v1_PATH``), ``sbd`` (``SBD_PATH``), ``coco`` (any COCO-format set:
    ``COCO_IMAGES_PATH`` and ``COCO_ANNOTATIONS``) or ``winter`` (generated winter-sports scenes,
    no download).

    ``points_sampler``: ``multi`` (RITM's clicks) or ``first`` (EMC-Click's: the first click
    only). ``next_clicks_gamma`` / ``click_polarity``: see ``TrainerConfig``. ``loss_terms``:
    empty for one normalized focal loss on the step's logits, else ``(name, output, criterion,
    weight)`` with criterion ``nfl`` (alpha ``nfl_alpha``, gamma ``nfl_gamma``) or ``bce``.
    ``lr_mults``: ``(parameter-name prefix, multiplier)``, the longest prefix deciding.
    ``target_filter``: EMC-Click's target rules for the training and validation sets, None for none.
    ``crop_last_offset``: ``RandomCrop``'s ``last_offset`` (the albumentations the authors pinned).
    """

    dataset: str = "cocolvis"
    crop_size: Tuple[int, int] = (448, 448)
    num_max_points: int = 24
    batch_size: int = 32
    epochs: int = 55
    epoch_len: int = 30000
    val_epoch_len: int = 2000
    validation: bool = False
    min_object_area: int = 1000
    target_filter: Optional[TargetFilter] = None
    keep_background_prob: float = 0.05
    stuff_prob: float = 0.30
    prob_gamma: float = 0.80
    merge_objects_prob: float = 0.15
    max_num_merged_objects: int = 2
    scale_range: Tuple[float, float] = (0.75, 1.40)
    crop_last_offset: bool = True
    max_num_next_clicks: int = 3
    points_sampler: str = "multi"
    next_clicks_gamma: Optional[float] = None
    click_polarity: str = "larger"
    loss_terms: Tuple[Tuple[str, str, str, float], ...] = ()
    nfl_alpha: float = 0.5
    nfl_gamma: float = 2.0
    optimizer: str = "adam"
    lr: float = 5e-5
    betas: Tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    milestones: Tuple[int, ...] = (50, 55)
    lr_gamma: float = 0.1
    lr_mults: Tuple[Tuple[str, float], ...] = ()
    checkpoint_interval: Tuple[Tuple[int, int], ...] = ((0, 20), (50, 1))
    image_dump_interval: int = 300
    num_scenes: int = 20000                   # winter: distinct generated training scenes
    scene_size: Tuple[int, int] = (224, 224)  # winter: rendered size, before augmentation
    kinds: Tuple[str, ...] = ()               # winter: target kinds (empty: every target kind)
    framing: str = "wide"                     # winter: wide slope scenes or athlete close-ups


COCOLVIS = Recipe()
SBD = replace(COCOLVIS, dataset="sbd")
# The quickstart: close-ups of generated skiers and snowboarders at the evaluation's scale (224 px
# scenes seen at about 112 px), a small model trained from scratch, minutes on 2 CPU cores. With
# gamma 0 the normalized focal loss is a class-balanced cross-entropy, which learned a little
# faster from scratch here (mIoU after 19 clicks 0.606 against 0.596 after 2 epochs). Samples
# are what the minutes buy: NoC@85 on the quickstart's held-out close-ups was 18.4 after 6 epochs,
# 16.9 after 9 (under 5 min with bf16 autocast on an AMX CPU) and 16.1 after 12; bf16 trained
# as well as fp32. scripts/quickstart.py keeps the 9 epochs and sizes epoch_len to its time budget
# (at least 128 samples: 9 x 128 gave mIoU@5 0.57, 9 x 32 empty masks).
WINTER = Recipe(dataset="winter", kinds=("skier", "snowboarder"), framing="close", crop_size=(112, 112),
                scale_range=(0.45, 0.65), nfl_gamma=0.0,
                batch_size=8, epochs=9, epoch_len=512, min_object_area=40, lr=5e-4, milestones=(7,),
                checkpoint_interval=((0, 1),), image_dump_interval=64)


# EMC-Click (see the module docstring). HRNet: every HRNet / OCR weight at 0.1x except the OCR
# context layers (the authors' LRMult on feature_extractor, then 1.0 on conv3x3_ocr and
# ocr_distri_head; ocr_gather_head has no weights), so aux_head and cls_head train at 0.1x too.
# The click encoder (maps_transform) and the correction network (refiner) train at 1x.
EMC_HRNET_LR_MULTS = (("feature_extractor.", 0.1), ("feature_extractor.conv3x3_ocr.", 1.0),
                      ("feature_extractor.ocr_distri_head.", 1.0))
# SegFormer: the MiT encoder (click embedding included) at 0.1x; the decoder and refiner at 1x.
EMC_SEGFORMER_LR_MULTS = (("feature_extractor.backbone.", 0.1),)
# The authors' instance_loss (NFL on the base network's upsampled logits), instance_aux_loss
# (0.4 x BCE on HRNet-OCR's upsampled soft-region logits) and instance_refine_loss (their WFNL
# without pixel weights, which is the NFL, on the refined output).
EMC_LOSS_TERMS = (("coarse", "coarse", "nfl", 1.0), ("aux", "aux", "bce", 0.4), ("refined", "instances", "nfl", 1.0))
EMC_CROP_SIZE = (320, 480)


def emc_target_filter(crop_size: Tuple[int, int]) -> TargetFilter:
    """The authors' target rules (900 px components, 1000 px targets, 85 % of the crop) for their
    320 x 480 crop; for another crop the pixel limits scale with its area, so that they cut the
    same share of the crop (the generated close-ups' targets are a few thousand pixels)."""
    scale = crop_size[0] * crop_size[1] / (EMC_CROP_SIZE[0] * EMC_CROP_SIZE[1])
    return TargetFilter(min_component_area=round(900 * scale), min_area=round(1000 * scale), max_fraction=0.85)


EMC_HRNET = replace(
    COCOLVIS, crop_size=EMC_CROP_SIZE, batch_size=64, epochs=230, milestones=(200, 220), lr=1e-3,
    keep_background_prob=0.0, stuff_prob=0.2, points_sampler="first", max_num_next_clicks=23,
    next_clicks_gamma=0.8, click_polarity="proportional", loss_terms=EMC_LOSS_TERMS, lr_mults=EMC_HRNET_LR_MULTS,
    checkpoint_interval=((0, 5), (200, 1)), image_dump_interval=3000, target_filter=emc_target_filter(EMC_CROP_SIZE),
    crop_last_offset=False)   # albumentations 0.5.1 (their requirements.txt): the last offset never drawn
EMC_HR32 = replace(EMC_HRNET, lr=8e-4)                      # hrnet32_att_cclvis.py
EMC_SEGFORMER = replace(EMC_HRNET, loss_terms=EMC_LOSS_TERMS[::2], lr_mults=EMC_SEGFORMER_LR_MULTS)   # no aux head
EMC_SEGB3 = replace(EMC_SEGFORMER, lr=2e-3)                # segformerB3_att_cclvis.py
# EMC-Click on the generated winter scenes (models/emcclick/tiny.py): the quickstart's close-ups
# and scale, EMC-Click's clicks, losses, crop and target rules (scaled to the 112 px crop: 74 px
# components, 82 px targets), up to 7 simulated clicks.
EMC_WINTER = replace(WINTER, epochs=6, milestones=(5,), points_sampler="first", max_num_next_clicks=7,
                     next_clicks_gamma=0.8, click_polarity="proportional", loss_terms=EMC_LOSS_TERMS, nfl_gamma=2.0,
                     lr=1e-3, target_filter=emc_target_filter(WINTER.crop_size), crop_last_offset=False)

SAMPLERS = {"multi": MultiPointSampler, "first": FirstPointSampler}
CRITERIA = ("nfl", "bce")


def points_sampler(recipe: Recipe) -> MultiPointSampler:
    if recipe.points_sampler not in SAMPLERS:
        raise ValueError(f"recipe points_sampler {recipe.points_sampler!r}: expected one of {', '.join(SAMPLERS)}")
    return SAMPLERS[recipe.points_sampler](recipe.num_max_points, prob_gamma=recipe.prob_gamma,
                                           merge_objects_prob=recipe.merge_objects_prob,
                                           max_num_merged_objects=recipe.max_num_merged_objects)


def build_loss(recipe: Recipe) -> nn.Module:
    """The recipe's loss: one normalized focal loss, or a ``MultiTermLoss`` of ``loss_terms``."""
    if not recipe.loss_terms:
        return NormalizedFocalLossSigmoid(alpha=recipe.nfl_alpha, gamma=recipe.nfl_gamma)
    unknown = [criterion for _, _, criterion, _ in recipe.loss_terms if criterion not in CRITERIA]
    if unknown:
        raise ValueError(f"recipe loss_terms name the criteria {unknown}; known: {', '.join(CRITERIA)}")
    return MultiTermLoss([(name, output, NormalizedFocalLossSigmoid(alpha=recipe.nfl_alpha, gamma=recipe.nfl_gamma)
                           if criterion == "nfl" else SigmoidBinaryCrossEntropyLoss(), weight)
                          for name, output, criterion, weight in recipe.loss_terms])


def build_datasets(recipe: Recipe, cfg: Dict[str, Any], seed: int = 0) -> Tuple[Any, Optional[Any]]:
    """The training set and (when the recipe validates) the validation set."""
    sampler = points_sampler(recipe)
    common = dict(points_sampler=sampler, min_object_area=recipe.min_object_area, seed=seed)
    train_aug = training_augmentation(recipe.crop_size, scale_range=recipe.scale_range,
                                      crop_last_offset=recipe.crop_last_offset)
    val_aug = validation_augmentation(recipe.crop_size, crop_last_offset=recipe.crop_last_offset)
    if recipe.dataset == "cocolvis":
        from ..data.datasets.coco_lvis import CocoLvisDataset
        root = _path(cfg, "LVIS_v1_PATH")
        train = CocoLvisDataset(root, split="train", augmentation=train_aug, epoch_len=recipe.epoch_len,
                                keep_background_prob=recipe.keep_background_prob, stuff_prob=recipe.stuff_prob,
                                **common)
        val = CocoLvisDataset(root, split="val", augmentation=val_aug, epoch_len=recipe.val_epoch_len, **common) \
            if recipe.validation else None
    elif recipe.dataset == "sbd":
        from ..data.datasets.sbd import SBDDataset
        root = _path(cfg, "SBD_PATH")
        train = SBDDataset(root, split="train", augmentation=train_aug, epoch_len=recipe.epoch_len,
                           keep_background_prob=recipe.keep_background_prob, **common)
        val = SBDDataset(root, split="val", augmentation=val_aug, epoch_len=recipe.val_epoch_len, **common) \
            if recipe.validation else None
    elif recipe.dataset == "coco":
        from ..data.datasets.coco import CocoDataset
        train = CocoDataset(_path(cfg, "COCO_IMAGES_PATH"), _path(cfg, "COCO_ANNOTATIONS"), augmentation=train_aug,
                            epoch_len=recipe.epoch_len, keep_background_prob=recipe.keep_background_prob, **common)
        val = None
    elif recipe.dataset == "winter":
        from ..data.datasets.winter import WinterSportsDataset
        kinds = {"kinds": recipe.kinds} if recipe.kinds else {}
        train = WinterSportsDataset(num_scenes=recipe.num_scenes, size=recipe.scene_size, augmentation=train_aug,
                                    epoch_len=recipe.epoch_len, keep_background_prob=recipe.keep_background_prob,
                                    framing=recipe.framing, **kinds, **common)
        val = None
    else:
        raise ValueError(f"unknown recipe dataset {recipe.dataset!r}; known: cocolvis, sbd, coco, winter")
    for dataset in (train, val):
        if dataset is not None:
            dataset.target_filter = recipe.target_filter
    return train, val


def _path(cfg: Dict[str, Any], key: str) -> Path:
    value = cfg.get(key)
    if not value:
        raise ValueError(f"this recipe needs the config key {key} (a local path): add '{key}: <path>' to "
                         f"config.yml or set the environment variable SKIPCLICK_{key}")
    return Path(value)


def train(model: nn.Module, cfg: Dict[str, Any], recipe: Recipe) -> Trainer:
    """Build datasets, loss, optimizer, schedule and trainer from ``recipe`` and the run's
    settings ``cfg`` (``train.py``'s), then train (resuming when ``cfg['resume_from']`` is set)."""
    recipe = replace(recipe, **{k: cfg[k] for k in ("epochs", "epoch_len", "lr") if cfg.get(k)})
    batch_size = cfg["batch_size"] if cfg.get("batch_size", -1) > 0 else recipe.batch_size
    trainset, valset = build_datasets(recipe, cfg, seed=cfg.get("seed", 0))
    optimizer = get_optimizer(model, recipe.optimizer, {"lr": recipe.lr, "betas": recipe.betas, "eps": recipe.eps}
                              if recipe.optimizer != "sgd" else {"lr": recipe.lr},
                              layerwise_decay=cfg.get("layerwise_decay", False), lr_mults=recipe.lr_mults)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(recipe.milestones),
                                                     gamma=recipe.lr_gamma)
    config = TrainerConfig(exp_path=Path(cfg["EXP_PATH"]), epochs=recipe.epochs, batch_size=batch_size,
                           max_num_next_clicks=recipe.max_num_next_clicks, next_clicks_gamma=recipe.next_clicks_gamma,
                           click_polarity=recipe.click_polarity, workers=cfg.get("workers", 4),
                           seed=cfg.get("seed", 0), reuse_features=cfg.get("reuse_features", True),
                           bf16=cfg.get("bf16", False), grad_accumulation=cfg.get("grad_accumulation", 1),
                           checkpoint_interval=recipe.checkpoint_interval,
                           image_dump_interval=recipe.image_dump_interval, device=cfg.get("device", "cpu"))
    trainer = Trainer(model, config, trainset, build_loss(recipe), optimizer, scheduler, valset)
    if cfg.get("resume_from"):
        trainer.resume(Path(cfg["resume_from"]))
    elif cfg.get("start_epoch", 0) > 0:
        # The family's --start-epoch: weights from --weights, the schedule advanced to that epoch.
        for _ in range(cfg["start_epoch"]):
            scheduler.step()
        trainer.start_epoch = cfg["start_epoch"]
    if trainer.process.is_main:
        print(f"recipe: {asdict(recipe)}")
    trainer.run()
    return trainer
