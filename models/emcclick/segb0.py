"""EMC-Click segb0: SegFormer MiT-B0 + all-MLP decoder (width 256), correction network width 64.

Released as segb0.pth. Authors' model file: models/emcclick/segformerB0_att_cclvis.py (github.com/feiaxyt/EMC-Click).
ImageNet backbone: config.yml key MIT_B0_WEIGHTS (see README, "Training EMC-Click").
"""
from isegm.engine.recipes import EMC_SEGFORMER, train
from isegm.model.emc.pretrained import emc_from_settings

NAME = "segb0"
MODEL_NAME = "segformerB0_att_cclvis"

RECIPE = EMC_SEGFORMER


def init_model(cfg: dict):
    """The untrained model with its ImageNet backbone (or ``--weights``), see emc_from_settings."""
    return emc_from_settings(NAME, cfg)


def main(cfg: dict) -> None:
    """``python train.py <this file>``: the authors' COCO+LVIS recipe."""
    train(init_model(cfg), cfg, RECIPE)
