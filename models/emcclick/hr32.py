"""EMC-Click hr32: HRNet-W32 + OCR (OCR width 128), correction network width 96; learning rate 8e-4.

Released as hr32.pth. Authors' model file: models/emcclick/hrnet32_att_cclvis.py (github.com/feiaxyt/EMC-Click).
ImageNet backbone: config.yml key HRNETV2_W32_WEIGHTS (see README, "Training EMC-Click").
"""
from isegm.engine.recipes import EMC_HR32, train
from isegm.model.emc.pretrained import emc_from_settings

NAME = "hr32"
MODEL_NAME = "hrnet32_att_cclvis"

RECIPE = EMC_HR32


def init_model(cfg: dict):
    """The untrained model with its ImageNet backbone (or ``--weights``), see emc_from_settings."""
    return emc_from_settings(NAME, cfg)


def main(cfg: dict) -> None:
    """``python train.py <this file>``: the authors' COCO+LVIS recipe."""
    train(init_model(cfg), cfg, RECIPE)
