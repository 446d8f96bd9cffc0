"""Interactive segmentation models, one package per family (``skipclick``, ``emc``), the
family registry (``families``) and checkpoint loading for every family (``checkpoint``)."""
from .checkpoint import load_checkpoint, save_checkpoint
from .emc import EMC_CONFIGS, EMCClick, build_emc, load_emc_checkpoint, save_emc_checkpoint
from .families import ModelFamily, all_families, family_named, family_of, register_family
from .skipclick import (AUTHORS_MODEL_FILES, BLOCK2_QUIRK, VARIANTS, ImageFeatures, SkipClick, SkipClickConfig,
                        build_skipclick, variant_config)
from .skipclick.checkpoint import config_from_authors

__all__ = ["AUTHORS_MODEL_FILES", "BLOCK2_QUIRK", "EMCClick", "EMC_CONFIGS", "VARIANTS", "ImageFeatures",
           "ModelFamily", "SkipClick", "SkipClickConfig", "all_families", "build_emc", "build_skipclick",
           "config_from_authors", "family_named", "family_of", "load_checkpoint", "load_emc_checkpoint",
           "register_family", "save_checkpoint", "save_emc_checkpoint", "variant_config"]
