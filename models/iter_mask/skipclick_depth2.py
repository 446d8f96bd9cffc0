"""Paper row: fusion depth 2 (Table 6).

Full SkipClick with 2 fusion blocks instead of 4.
Authors' model file: models/iter_mask/featurevit_base448_cocolvis_itermask_intermediate_skip_p2.py
"""
from isegm.engine.recipes import COCOLVIS, train
from isegm.model.skipclick import model_from_settings

VARIANT = "skipclick_depth2"
MODEL_NAME = "featurevit_base448_cocolvis_itermask_intermediate_skip_p2"

RECIPE = COCOLVIS


def init_model(cfg: dict):
    """The untrained model with its pretrained backbone (or ``--weights``), see model_from_settings."""
    return model_from_settings(VARIANT, cfg)


def main(cfg: dict) -> None:
    """``python train.py <this file>``: the paper's COCO+LVIS recipe."""
    train(init_model(cfg), cfg, RECIPE)
