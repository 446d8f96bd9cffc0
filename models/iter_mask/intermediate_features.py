"""Paper row: + Intermediate Features.

Blocks 2, 5, 8, 11 of the frozen backbone fused by a Linear(4C -> C).
Authors' model file: models/iter_mask/featurevit_base448_cocolvis_itermask_intermediate.py
"""
from isegm.model import build_skipclick

VARIANT = "intermediate_features"
MODEL_NAME = "featurevit_base448_cocolvis_itermask_intermediate"


def init_model(cfg: dict):
    """The untrained model, with the pretrained backbone from ``cfg['DINOV2_WEIGHTS']`` when set."""
    return build_skipclick(VARIANT, backbone_weights=cfg.get("DINOV2_WEIGHTS"))
