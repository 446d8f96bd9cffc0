"""Paper row: + Skip Connections (full SkipClick).

Adds skip connections from the tapped blocks into each FPN branch.
Authors' model file: models/iter_mask/featurevit_base448_cocolvis_itermask_intermediate_skip.py
"""
from isegm.engine.recipes import COCOLVIS, train
from isegm.model.skipclick import model_from_settings

VARIANT = "skipclick"
MODEL_NAME = "featurevit_base448_cocolvis_itermask_intermediate_skip"

RECIPE = COCOLVIS


def init_model(cfg: dict):
    """The untrained model with its pretrained backbone (or ``--weights``), see model_from_settings."""
    return model_from_settings(VARIANT, cfg)


def main(cfg: dict) -> None:
    """``python train.py <this file>``: the paper's COCO+LVIS recipe."""
    train(init_model(cfg), cfg, RECIPE)
