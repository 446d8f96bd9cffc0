"""SkipClick models: builders, the late-fusion API and checkpoint loading."""
from .build import AUTHORS_MODEL_FILES, VARIANTS, build_skipclick, variant_config
from .checkpoint import config_from_authors, load_checkpoint, save_checkpoint
from .skipclick import BLOCK2_QUIRK, ImageFeatures, SkipClick, SkipClickConfig

__all__ = ["AUTHORS_MODEL_FILES", "BLOCK2_QUIRK", "VARIANTS", "ImageFeatures", "SkipClick",
           "SkipClickConfig", "build_skipclick", "config_from_authors", "load_checkpoint", "save_checkpoint",
           "variant_config"]
