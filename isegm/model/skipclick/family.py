"""SkipClick's entry in the model-family registry (``isegm.model.families``)."""
from ..families import ModelFamily
from .checkpoint import AUTHORS_CLASS, AUTHORS_WEIGHTS, UNPICKLE_GLOBALS, config_bounds, load_state, read_file
from .model import SkipClick, SkipClickConfig
from .variants import VARIANTS, build_skipclick, variant_config

FAMILY = ModelFamily(
    name="SkipClick", label="SkipClick", model_class=SkipClick, config_class=SkipClickConfig, variants=VARIANTS,
    build=build_skipclick, variant_config=variant_config, load_state=load_state, read_file=read_file,
    predictor="isegm.inference.predictor:ritm_predictor", training_step="isegm.engine.steps:ClickTraining",
    authors_classes=(AUTHORS_CLASS,), weights=AUTHORS_WEIGHTS, unpickle_globals=UNPICKLE_GLOBALS,
    config_bounds=config_bounds)
