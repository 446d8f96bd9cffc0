"""Paper row: SkipClick with DINOv3.

Full SkipClick on a frozen DINOv3 ViT-B/16 (RoPE, taps after the final norm).
Authors' model file: models/iter_mask/featurevit_dinov3_base448_cocolvis_itermask_intermediate_skip.py
"""
from isegm.model import build_skipclick

VARIANT = "skipclick_dinov3"
MODEL_NAME = "featurevit_dinov3_base448_cocolvis_itermask_intermediate_skip"


def init_model(cfg: dict):
    """The untrained model, with the pretrained backbone from ``cfg['DINOV3_WEIGHTS']`` when set."""
    return build_skipclick(VARIANT, backbone_weights=cfg.get("DINOV3_WEIGHTS"))
