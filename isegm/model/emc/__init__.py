"""EMC-Click (Du et al., CVPR 2023): HRNet / SegFormer base network run once, mask-correction
network run on every click; the authors' state-dict and checkpoint formats."""
from .checkpoint import (authors_config, config_from_authors, emc_from_checkpoint, is_emc_checkpoint,
                         load_emc_checkpoint, load_emc_state, save_emc_checkpoint)
from .corrector import CorrectionNetwork, CorrectionOutput, TemplateSelection, select_templates
from .hrnet import HRNetOCR
from .model import EMC_CONFIGS, EMCClick, EMCConfig, EMCState, build_emc

__all__ = ["EMC_CONFIGS", "CorrectionNetwork", "CorrectionOutput", "EMCClick", "EMCConfig", "EMCState", "HRNetOCR",
           "TemplateSelection", "authors_config", "build_emc", "config_from_authors",
           "emc_from_checkpoint", "is_emc_checkpoint", "load_emc_checkpoint", "load_emc_state",
           "save_emc_checkpoint", "select_templates"]
