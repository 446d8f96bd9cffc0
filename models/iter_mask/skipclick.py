"""Paper row: + Skip Connections (full SkipClick).

Adds skip connections from the tapped blocks into each FPN branch.
Authors' model file: models/iter_mask/featurevit_base448_cocolvis_itermask_intermediate_skip.py
"""
from isegm.model import build_skipclick

VARIANT = "skipclick"
MODEL_NAME = "featurevit_base448_cocolvis_itermask_intermediate_skip"


def init_model(cfg: dict):
    """The untrained model, with the pretrained backbone from ``cfg['DINOV2_WEIGHTS']`` when set."""
    return build_skipclick(VARIANT, backbone_weights=cfg.get("DINOV2_WEIGHTS"))
