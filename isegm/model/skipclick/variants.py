"""SkipClick variants by name (the paper's rows) and the builder.

A variant is data: the ``SkipClickConfig`` fields that differ from the default (full SkipClick,
DINOv2 ViT-B/14 with 4 registers). ``AUTHORS_MODEL_FILES`` maps the authors' model-script names
to ours, so their experiment names keep working.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Optional, Union


from ..backbones import BACKBONES
from ..checkpoint import read_checkpoint_file
from .head import UPSAMPLE_FACTORS
from .model import SkipClick, SkipClickConfig

PathLike = Union[str, "os.PathLike[str]"]

VARIANTS: Dict[str, Dict] = {
    # Table 2 rows (ablation), in order
    "baseline": dict(tap_blocks=(2,), skip_connections=False, freeze_backbone=False),   # block-2 quirk
    "frozen_backbone": dict(tap_blocks=(2,), skip_connections=False),                   # block-2 quirk
    "intermediate_features": dict(skip_connections=False),
    "skipclick": dict(),                                                                # + Skip Connections
    "skipclick_dinov3": dict(backbone="dinov3_vitb16", tap_norm=True),
    # Table 6: fusion-stack depth (4 is the default)
    "skipclick_depth2": dict(fusion_depth=2),
    "skipclick_depth3": dict(fusion_depth=3),
    "skipclick_depth5": dict(fusion_depth=5),
    "skipclick_depth6": dict(fusion_depth=6),
    # Not a paper row: a small model trained from scratch on generated scenes (the quickstart)
    "tiny": dict(backbone="tinyvit_p8", tap_blocks=(1, 2, 4, 5), freeze_backbone=False, fusion_depth=2,
                 fusion_heads=3, train_size=(112, 112), fpn_dims=(32, 64, 128, 256), head_channels=64,
                 detail_channels=32),
}

AUTHORS_MODEL_FILES = {
    "featurevit_base448_cocolvis_itermask_unfrozen": "baseline",
    "featurevit_base448_cocolvis_itermask": "frozen_backbone",
    "featurevit_base448_cocolvis_itermask_intermediate": "intermediate_features",
    "featurevit_base448_cocolvis_itermask_intermediate_skip": "skipclick",
    "featurevit_dinov3_base448_cocolvis_itermask_intermediate_skip": "skipclick_dinov3",
    **{f"featurevit_base448_cocolvis_itermask_intermediate_skip_p{d}": f"skipclick_depth{d}" for d in (2, 3, 5, 6)},
}


def variant_config(variant: str, **overrides) -> SkipClickConfig:
    """The config of a named variant (ours or the authors' model-file name), with overrides."""
    name = AUTHORS_MODEL_FILES.get(variant, variant)
    if name not in VARIANTS:
        raise ValueError(f"unknown SkipClick variant {variant!r}; known: {', '.join(VARIANTS)}")
    return SkipClickConfig(**{**VARIANTS[name], **overrides})


def backbone_config_key(backbone: str) -> str:
    """The config.yml key naming a backbone's release file: ``DINOV2_WEIGHTS`` for every
    ``dinov2_*`` backbone, ``DINOV3_WEIGHTS`` for ``dinov3_vitb16``."""
    return f"{backbone.split('_')[0].upper()}_WEIGHTS"


def missing_weights_message(path: PathLike, what: str, source: str, config_key: str) -> str:
    """One sentence naming the missing file, what it is, where a user gets it and the config key
    that points to it."""
    return (f"{what} not found at {os.fspath(path)!r}. Download it from {source} and set its path as "
            f"{config_key} in config.yml (or the environment variable SKIPCLICK_{config_key}). "
            "Nothing is downloaded at run time.")


def unset_weights_message(backbone: str, config_key: str) -> str:
    """Why a model file will not build ``backbone`` from random weights: the config key to set,
    the release file and where to get it, and how to train from scratch on purpose."""
    scratch = "pass --from-scratch (or set FROM_SCRATCH = True in the model file)"
    spec = BACKBONES[backbone]
    if not spec.weights_file:
        return (f"the {backbone} backbone has no pretrained file ({config_key} is not set): to train it "
                f"from scratch, {scratch}.")
    return (f"{config_key} is not set, so the {backbone} backbone would start from random weights: download "
            f"{spec.weights_file} from {spec.weights_source} and set its path as {config_key} in config.yml "
            f"(or the environment variable SKIPCLICK_{config_key}); to train from scratch on purpose, {scratch}.")


def _require_backbone_file(backbone: str, path: PathLike) -> None:
    spec = BACKBONES[backbone]
    if not os.path.isfile(path):
        raise FileNotFoundError(missing_weights_message(
            path, f"{backbone} backbone weights ({spec.weights_file})", spec.weights_source,
            backbone_config_key(backbone)))


def load_backbone_weights(model: SkipClick, path: PathLike) -> None:
    """Load an official DINOv2 / DINOv3 release file into the model's backbone (``strict=True``)."""
    _require_backbone_file(model.config.backbone, path)
    state = read_checkpoint_file(path)
    try:
        model.feature_extractor.vit.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{os.fspath(path)!r} is not a {model.config.backbone} weights file: {err}") from None


def build_skipclick(variant: str = "skipclick", backbone_weights: Optional[PathLike] = None,
                    **overrides) -> SkipClick:
    """A SkipClick variant (see ``VARIANTS``), optionally with pretrained backbone weights.

    Without ``backbone_weights`` every weight is freshly initialised (useful for tests and
    benchmarks); trained SkipClick weights come from ``load_checkpoint``.
    """
    config = variant_config(variant, **overrides)
    if backbone_weights is not None:   # fail before the (slow) construction
        _require_backbone_file(config.backbone, backbone_weights)
    model = SkipClick(config)
    if backbone_weights is not None:
        load_backbone_weights(model, backbone_weights)
    return model


def model_from_settings(variant: str, cfg: Mapping[str, Any], from_scratch: bool = False) -> SkipClick:
    """The model a model file's ``init_model(cfg)`` builds for ``train.py``: the variant with the
    head for ``cfg['upsample']``, and its starting weights, one of:

    - those of ``cfg['weights']`` (``--weights``) when given;
    - none when resuming (``cfg['resume_from']``: the trainer loads the checkpoint);
    - random ones when training from scratch is chosen (``from_scratch``: the model file's
      ``FROM_SCRATCH``, or ``cfg['from_scratch']``: ``--from-scratch``);
    - else the pretrained backbone named by ``<FAMILY>_WEIGHTS`` (``DINOV2_WEIGHTS`` /
      ``DINOV3_WEIGHTS`` in config.yml), an error when that key is not set: days of training
      from a random backbone would give a useless model.
    """
    upsample = cfg.get("upsample") or "x1"
    if upsample not in UPSAMPLE_FACTORS:
        raise ValueError(f"upsample {upsample!r}: expected one of {', '.join(UPSAMPLE_FACTORS)}")
    # The authors' rule (256 / 128 / 64 channels for x1 / x2 / x4): the head's width
    # (channels x factor) stays the variant's.
    overrides = dict(head_upsample=upsample,
                     head_channels=variant_config(variant).head_channels // UPSAMPLE_FACTORS[upsample])
    if cfg.get("weights"):
        from ..checkpoint import load_checkpoint
        model = build_skipclick(variant, **overrides)
        model.load_state_dict(load_checkpoint(cfg["weights"]).state_dict())
        return model
    if from_scratch or cfg.get("from_scratch") or cfg.get("resume_from"):
        return build_skipclick(variant, **overrides)
    backbone = variant_config(variant).backbone
    key = backbone_config_key(backbone)
    if not cfg.get(key):
        raise FileNotFoundError(unset_weights_message(backbone, key))
    return build_skipclick(variant, backbone_weights=cfg[key], **overrides)
