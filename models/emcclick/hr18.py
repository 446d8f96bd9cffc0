"""EMC-Click hr18: HRNet-W18 + OCR (OCR width 64), correction network width 96.

Released as hr18.pth. Authors' model file: models/emcclick/hrnet18_att_cclvis.py (github.com/feiaxyt/EMC-Click).
ImageNet backbone: config.yml key HRNETV2_W18_WEIGHTS (see README, "Training EMC-Click").
"""
from isegm.engine.recipes import EMC_HRNET, train
from isegm.model.emc.pretrained import emc_from_settings

NAME = "hr18"
MODEL_NAME = "hrnet18_att_cclvis"

RECIPE = EMC_HRNET


def init_model(cfg: dict):
    """The untrained model with its ImageNet backbone (or ``--weights``), see emc_from_settings."""
    return emc_from_settings(NAME, cfg)


def main(cfg: dict) -> None:
    """``python train.py <this file>``: the authors' COCO+LVIS recipe."""
    train(init_model(cfg), cfg, RECIPE)
