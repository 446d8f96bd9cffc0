"""SkipClick (Schön et al. 2025): a frozen DINO encoder run once per image, a small per-click path
(``model.py``), its variants (``variants.py``) and its checkpoint formats."""
from .model import BLOCK2_QUIRK, ImageFeatures, SkipClick, SkipClickConfig
from .variants import AUTHORS_MODEL_FILES, VARIANTS, build_skipclick, model_from_settings, variant_config

__all__ = ["AUTHORS_MODEL_FILES", "BLOCK2_QUIRK", "VARIANTS", "ImageFeatures", "SkipClick", "SkipClickConfig",
           "build_skipclick", "model_from_settings", "variant_config"]
