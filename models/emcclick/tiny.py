"""Not a released model: a small EMC-Click trained from scratch on generated winter-sports scenes,
minutes on a CPU (the EMC-Click counterpart of models/quickstart/tiny.py).

HRNet-W18-small-v2 with a 32-wide OCR head and a 32-wide correction network (32 templates per
polarity); 112 px close-ups; EMC-Click's clicks, losses and target rules (recipe EMC_WINTER).
"""
from isegm.engine.recipes import EMC_WINTER, train
from isegm.model.emc import EMCConfig
from isegm.model.emc.pretrained import emc_from_settings

CONFIG = EMCConfig("hrnet", hrnet_width=18, ocr_width=32, small=True, mid_dims=32)
MODEL_NAME = "emc_tiny"

RECIPE = EMC_WINTER


def init_model(cfg: dict):
    """The untrained small model, the authors' initialisation (``--weights`` to start from a checkpoint)."""
    return emc_from_settings(CONFIG, cfg)


def main(cfg: dict) -> None:
    """``python train.py models/emcclick/tiny.py --cpu``: the winter-scenes recipe."""
    train(init_model(cfg), cfg, RECIPE)
