"""Fine-tune SkipClick on your own COCO-format data (e.g. winter-sports footage).

Set ``COCO_IMAGES_PATH`` (the image folder) and ``COCO_ANNOTATIONS`` (an instances JSON with
polygon or RLE masks; ``iscrowd`` regions are ignored) in config.yml, then start from the
authors' weights:

    python train.py models/finetune/skipclick_coco.py --weights weights/skipclick_dinov2.pth --exp-name ski

The paper's recipe with a shorter schedule and a lower learning rate; change any field here.
"""
from dataclasses import replace

from isegm.engine.recipes import COCOLVIS, train
from isegm.model.skipclick import model_from_settings

VARIANT = "skipclick"
MODEL_NAME = "skipclick_coco_finetune"

RECIPE = replace(COCOLVIS, dataset="coco", epochs=10, epoch_len=5000, lr=1e-5, milestones=(8,),
                 checkpoint_interval=((0, 1),))


def init_model(cfg: dict):
    """SkipClick with ``--weights`` (or the pretrained backbone alone, see model_from_settings)."""
    return model_from_settings(VARIANT, cfg)


def main(cfg: dict) -> None:
    train(init_model(cfg), cfg, RECIPE)
