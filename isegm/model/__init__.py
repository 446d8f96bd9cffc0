"""Interactive segmentation models: SkipClick (builders, the late-fusion API) and EMC-Click
(``isegm.model.emc``), and checkpoint loading for both."""
from .skipclick.variants import AUTHORS_MODEL_FILES, VARIANTS, build_skipclick, variant_config
from .checkpoint import config_from_authors, load_checkpoint, save_checkpoint
from .emc import EMC_CONFIGS, EMCClick, build_emc, load_emc_checkpoint, save_emc_checkpoint
from .skipclick.model import BLOCK2_QUIRK, ImageFeatures, SkipClick, SkipClickConfig

__all__ = ["AUTHORS_MODEL_FILES", "BLOCK2_QUIRK", "EMCClick", "EMC_CONFIGS", "VARIANTS", "ImageFeatures", "SkipClick",
           "SkipClickConfig", "build_emc", "build_skipclick", "config_from_authors", "load_checkpoint",
           "load_emc_checkpoint", "save_checkpoint", "save_emc_checkpoint", "variant_config"]
