"""Paper row: SkipClick with DINOv3.

Full SkipClick on a frozen DINOv3 ViT-B/16 (RoPE, taps after the final norm).
Authors' model file: models/iter_mask/featurevit_dinov3_base448_cocolvis_itermask_intermediate_skip.py
"""
from isegm.engine.recipes import COCOLVIS, train
from isegm.model.skipclick import model_from_settings

VARIANT = "skipclick_dinov3"
MODEL_NAME = "featurevit_dinov3_base448_cocolvis_itermask_intermediate_skip"

RECIPE = COCOLVIS


def init_model(cfg: dict):
    """The untrained model with its pretrained backbone (or ``--weights``), see model_from_settings."""
    return model_from_settings(VARIANT, cfg)


def main(cfg: dict) -> None:
    """``python train.py <this file>``: the paper's COCO+LVIS recipe."""
    train(init_model(cfg), cfg, RECIPE)
