"""EMC-Click hr18s: HRNet-W18-small-v2 + OCR (OCR width 48), correction network width 64.

Released as hr18s.pth. Authors' model file: models/emcclick/hrnet18s_att_cclvis.py (github.com/feiaxyt/EMC-Click).
ImageNet backbone: config.yml key HRNETV2_W18_SMALL_WEIGHTS (see README, "Training EMC-Click").
"""
from isegm.engine.recipes import EMC_HRNET, train
from isegm.model.emc.pretrained import emc_from_settings

NAME = "hr18s"
MODEL_NAME = "hrnet18s_att_cclvis"

RECIPE = EMC_HRNET


def init_model(cfg: dict):
    """The untrained model with its ImageNet backbone (or ``--weights``), see emc_from_settings."""
    return emc_from_settings(NAME, cfg)


def main(cfg: dict) -> None:
    """``python train.py <this file>``: the authors' COCO+LVIS recipe."""
    train(init_model(cfg), cfg, RECIPE)
