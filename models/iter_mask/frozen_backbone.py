"""Paper row: + Frozen Backbone.

As Baseline with the backbone frozen (block-2 quirk included, isegm.model.BLOCK2_QUIRK).
Authors' model file: models/iter_mask/featurevit_base448_cocolvis_itermask.py
"""
from isegm.model import build_skipclick

VARIANT = "frozen_backbone"
MODEL_NAME = "featurevit_base448_cocolvis_itermask"


def init_model(cfg: dict):
    """The untrained model, with the pretrained backbone from ``cfg['DINOV2_WEIGHTS']`` when set."""
    return build_skipclick(VARIANT, backbone_weights=cfg.get("DINOV2_WEIGHTS"))
