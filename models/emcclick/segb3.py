"""EMC-Click segb3: SegFormer MiT-B3 + all-MLP decoder (width 512), correction network width 96; learning rate 2e-3.

Released as segb3.pth. Authors' model file: models/emcclick/segformerB3_att_cclvis.py (github.com/feiaxyt/EMC-Click).
ImageNet backbone: config.yml key MIT_B3_WEIGHTS (see README, "Training EMC-Click").
"""
from isegm.engine.recipes import EMC_SEGB3, train
from isegm.model.emc.pretrained import emc_from_settings

NAME = "segb3"
MODEL_NAME = "segformerB3_att_cclvis"

RECIPE = EMC_SEGB3


def init_model(cfg: dict):
    """The untrained model with its ImageNet backbone (or ``--weights``), see emc_from_settings."""
    return emc_from_settings(NAME, cfg)


def main(cfg: dict) -> None:
    """``python train.py <this file>``: the authors' COCO+LVIS recipe."""
    train(init_model(cfg), cfg, RECIPE)
