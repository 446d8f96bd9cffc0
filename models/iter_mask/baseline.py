"""Paper row: Baseline.

DINOv2 ViT-B/14 trained end to end; the fusion stack reads one backbone block.
Like the authors' code, it reads block 2 (the block-2 quirk, isegm.model.BLOCK2_QUIRK).
Authors' model file: models/iter_mask/featurevit_base448_cocolvis_itermask_unfrozen.py
"""
from isegm.model import build_skipclick

VARIANT = "baseline"
MODEL_NAME = "featurevit_base448_cocolvis_itermask_unfrozen"


def init_model(cfg: dict):
    """The untrained model, with the pretrained backbone from ``cfg['DINOV2_WEIGHTS']`` when set."""
    return build_skipclick(VARIANT, backbone_weights=cfg.get("DINOV2_WEIGHTS"))
