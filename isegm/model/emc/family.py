"""EMC-Click's entry in the model-family registry (``isegm.model.families``)."""
from ..families import ModelFamily
from .checkpoint import AUTHORS_CLASSES, config_bounds, load_emc_state, read_file
from .model import EMC_CONFIGS, EMCClick, EMCConfig, build_emc, emc_config

FAMILY = ModelFamily(
    name="EMCClick", label="EMC-Click", model_class=EMCClick, config_class=EMCConfig, variants=EMC_CONFIGS,
    build=build_emc, variant_config=emc_config, load_state=load_emc_state, read_file=read_file,
    predictor="isegm.model.emc.predictor:make_emc_predictor", training_step="isegm.model.emc.training:EMCClickTraining",
    authors_classes=tuple(AUTHORS_CLASSES.values()), weights="https://github.com/feiaxyt/EMC-Click/releases",
    config_bounds=config_bounds)
