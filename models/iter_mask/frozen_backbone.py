"""Paper row: + Frozen Backbone.

As Baseline with the backbone frozen (block-2 quirk included, isegm.model.BLOCK2_QUIRK).
Authors' model file: models/iter_mask/featurevit_base448_cocolvis_itermask.py
"""
from isegm.engine.recipes import COCOLVIS, train
from isegm.model.skipclick import model_from_settings

VARIANT = "frozen_backbone"
MODEL_NAME = "featurevit_base448_cocolvis_itermask"

RECIPE = COCOLVIS


def init_model(cfg: dict):
    """The untrained model with its pretrained backbone (or ``--weights``), see model_from_settings."""
    return model_from_settings(VARIANT, cfg)


def main(cfg: dict) -> None:
    """``python train.py <this file>``: the paper's COCO+LVIS recipe."""
    train(init_model(cfg), cfg, RECIPE)
