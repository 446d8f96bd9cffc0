"""Paper row: fusion depth 5 (Table 6).

Full SkipClick with 5 fusion blocks instead of 4.
Authors' model file: models/iter_mask/featurevit_base448_cocolvis_itermask_intermediate_skip_p5.py
"""
from isegm.model import build_skipclick

VARIANT = "skipclick_depth5"
MODEL_NAME = "featurevit_base448_cocolvis_itermask_intermediate_skip_p5"


def init_model(cfg: dict):
    """The untrained model, with the pretrained backbone from ``cfg['DINOV2_WEIGHTS']`` when set."""
    return build_skipclick(VARIANT, backbone_weights=cfg.get("DINOV2_WEIGHTS"))
