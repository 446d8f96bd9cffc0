"""Paper row: Baseline.

DINOv2 ViT-B/14 trained end to end; the fusion stack reads one backbone block.
Like the authors' code, it reads block 2 (the block-2 quirk, isegm.model.BLOCK2_QUIRK).
Authors' model file: models/iter_mask/featurevit_base448_cocolvis_itermask_unfrozen.py
"""
from isegm.engine.recipes import COCOLVIS, train
from isegm.model.skipclick import model_from_settings

VARIANT = "baseline"
MODEL_NAME = "featurevit_base448_cocolvis_itermask_unfrozen"

RECIPE = COCOLVIS


def init_model(cfg: dict):
    """The untrained model with its pretrained backbone (or ``--weights``), see model_from_settings."""
    return model_from_settings(VARIANT, cfg)


def main(cfg: dict) -> None:
    """``python train.py <this file>``: the paper's COCO+LVIS recipe."""
    train(init_model(cfg), cfg, RECIPE)
