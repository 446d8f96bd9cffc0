"""Not a paper row: the quickstart's tiny SkipClick, trained from scratch on generated
winter-sports scenes in a few minutes on a CPU (``make quickstart``).

A 6-block ViT with 8 px patches (192 channels) instead of a frozen DINO backbone, 2 fusion
blocks, a narrow FPN and head, and a detail refiner that sharpens the mask with the image at
stride 2 (``isegm/model/detail.py``); 112 px crops; everything trained.
"""
from isegm.engine.recipes import WINTER, train
from isegm.model.skipclick import model_from_settings

VARIANT = "tiny"
MODEL_NAME = "tiny"

RECIPE = WINTER
FROM_SCRATCH = True   # no pretrained backbone: every weight starts random, on purpose


def init_model(cfg: dict):
    """The untrained tiny model (``--weights`` to start from a checkpoint)."""
    return model_from_settings(VARIANT, cfg, from_scratch=FROM_SCRATCH)


def main(cfg: dict) -> None:
    """``python train.py models/quickstart/tiny.py --cpu``: the winter-scenes recipe."""
    train(init_model(cfg), cfg, RECIPE)
