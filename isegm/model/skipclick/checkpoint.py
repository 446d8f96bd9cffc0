"""SkipClick's checkpoint formats other than ours (``isegm.model.checkpoint``).

* The authors' released ``.pth`` files: ``{'state_dict', 'config'}`` written by their
  ``isegm.utils.misc.save_checkpoint``, the config recording their model class and its
  constructor arguments; the architecture comes from the stored config.
* Official DINOv2 / DINOv3 backbone release files (a flat ViT state dict): the rest of the model
  is freshly initialised (with a warning).

The authors' config pickles an instance of their training loss; its two globals are mapped to
inert stand-ins (``UNPICKLE_GLOBALS``) so that their files load with the weights-only unpickler,
without their code.
"""
from __future__ import annotations

import inspect
import re
import warnings
from typing import Any, Dict, Mapping, Optional, Tuple

from torch import Tensor

from ..backbones import BACKBONES, BackboneSpec
from ..click_maps import DISK_RADIUS
from ..checkpoint import CheckpointError, authors_settings, check_config, check_variant, plain, unsupported
from ..config_bounds import Bound
from ..normalize import IMAGENET_MEAN, IMAGENET_STD
from ..state_dict import load_strict
from .head import UPSAMPLE_FACTORS
from .model import SkipClick, SkipClickConfig
from .variants import variant_config

AUTHORS_CLASS = "isegm.model.is_featurevit_model.FeatureVitModel"
AUTHORS_WEIGHTS = "https://github.com/Schorob/skipclick#weights"
_AUTHORS_LOSS_MODULE = "isegm.model.modeling.transformer_helper.cross_entropy_loss"


class _AuthorsLoss:
    """Inert stand-in for the authors' ``CrossEntropyLoss`` module pickled in their config
    (``head_params['loss_decode']``): keeps the pickled attribute dict, does nothing else."""

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.state = state


def _authors_loss_function(*args: Any, **kwargs: Any) -> None:
    """Inert stand-in for the authors' ``cross_entropy``: the config only refers to it."""
    raise RuntimeError("stand-in for the authors' training loss; SkipClick inference never calls it")


# (stand-in, "module.name") pairs for the weights-only unpickler
UNPICKLE_GLOBALS = ((_AuthorsLoss, f"{_AUTHORS_LOSS_MODULE}.CrossEntropyLoss"),
                    (_authors_loss_function, f"{_AUTHORS_LOSS_MODULE}.cross_entropy"))


# --- the authors' config ----------------------------------------------------------------------

# Settings that cannot change inference: checkpoint paths of their backbone code, where disks
# are computed, windowing that primitive_stack switches off, an activation of the rgb conv.
_IGNORED = ("backbone_weight_path", "backbone_repo_path", "cpu_dist_maps", "random_split", "use_leaky_relu")
# Settings whose other values select code paths this reimplementation does not have.
_FIXED = {"use_disks": True, "with_prev_mask": True, "use_conv_stack": False, "with_aux_output": False,
          "use_rgb_conv": False}
_READ = ("extractor_type", "use_intermediate", "skip_connections", "trained_extractor", "norm_radius",
         "norm_mean_std", "backbone_params", "neck_params", "head_params")
# extractor_type -> backbone fields. DINOv3 taps come from get_intermediate_layers(norm=True),
# DINOv2 taps from hooks on the raw block outputs.
_EXTRACTORS = {"dinov2_vitb14_reg": dict(backbone="dinov2_vitb14_reg", tap_norm=False),
               "dinov3_vitb16": dict(backbone="dinov3_vitb16", tap_norm=True)}
_ALL_TAPS = [2, 5, 8, 11]


def _section(value: Any, name: str, source: str, read: Tuple[str, ...], checked: Dict[str, Any],
             ignored: Tuple[str, ...] = ()) -> Dict[str, Any]:
    """A dict-valued setting: unknown keys and wrong ``checked`` values raise, ``read`` keys
    must be present."""
    if not isinstance(value, Mapping):
        raise unsupported(source, name, value, "expected a dict")
    for key, item in value.items():
        if key not in read and key not in checked and key not in ignored:
            raise unsupported(source, f"{name}.{key}", item, "unknown setting")
        if key in checked and plain(item) != checked[key]:
            raise unsupported(source, f"{name}.{key}", item, f"only {checked[key]!r} is implemented")
    missing = [key for key in read if key not in value]
    if missing:
        raise ValueError(f"{source!r}: the authors' config lacks the setting {name}.{missing[0]}")
    return dict(value)


def _pair(value: Any, setting: str, source: str) -> Tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value) if isinstance(value, (list, tuple)) else ()
    if len(pair) != 2 or not all(isinstance(v, int) and v > 0 for v in pair):
        raise unsupported(source, setting, value, "expected a positive int or a pair of them")
    return pair


def _spec_dims(spec: BackboneSpec) -> Dict[str, int]:
    """A backbone's patch size, width, depth and register count, from its constructor defaults."""
    args = inspect.signature(spec.cls).bind_partial(**spec.kwargs)
    args.apply_defaults()
    return {k: args.arguments[k] for k in ("patch_size", "embed_dim", "depth", "num_register_tokens")}


def config_from_authors(params: Mapping[str, Any], source: str) -> SkipClickConfig:
    """Our config for the authors' stored ``config['params']`` (``{name: {'type', 'value',
    'specified'}}``); ``source`` names the file in errors.

    Raises ``ValueError`` naming the setting and its value for anything this reimplementation
    does not implement, rather than building a model that computes something else.
    """
    values = authors_settings(params, source, _READ, _FIXED, _IGNORED)

    extractor = values["extractor_type"]
    if extractor not in _EXTRACTORS:
        raise unsupported(source, "extractor_type", extractor, f"known: {', '.join(_EXTRACTORS)}")
    fields = dict(_EXTRACTORS[extractor])
    dims = _spec_dims(BACKBONES[fields["backbone"]])

    taps = plain(values["use_intermediate"])
    if taps == _ALL_TAPS:
        fields["tap_blocks"] = tuple(_ALL_TAPS)
    elif isinstance(taps, list) and len(taps) == 1:
        fields["tap_blocks"] = (2,)   # BLOCK2_QUIRK: their code uses block 2 whatever the one block named
    else:
        raise unsupported(source, "use_intermediate", values["use_intermediate"],
                           f"only {_ALL_TAPS} or a single block is implemented")
    fields["skip_connections"] = bool(values["skip_connections"])
    fields["freeze_backbone"] = not values["trained_extractor"]

    radius = values["norm_radius"]
    if isinstance(radius, bool) or not isinstance(radius, (int, float)) or not radius > 0:
        raise unsupported(source, "norm_radius", radius, "expected a positive number")
    fields["disk_radius"] = radius
    if plain(values["norm_mean_std"]) != [list(IMAGENET_MEAN), list(IMAGENET_STD)]:
        raise unsupported(source, "norm_mean_std", values["norm_mean_std"],
                           "only the ImageNet mean/std is implemented")

    mixer = _section(values["backbone_params"], "backbone_params", source,
                     read=("img_size", "patch_size", "depth", "num_heads", "mlp_ratio"),
                     checked=dict(embed_dim=dims["embed_dim"], qkv_bias=True, primitive_stack=True))
    patch = dims["patch_size"]
    if _pair(mixer["patch_size"], "backbone_params.patch_size", source) != (patch, patch):
        raise unsupported(source, "backbone_params.patch_size", mixer["patch_size"],
                           f"{extractor} has {patch}x{patch} patches")
    fields.update(train_size=_pair(mixer["img_size"], "backbone_params.img_size", source),
                  fusion_depth=mixer["depth"], fusion_heads=mixer["num_heads"],
                  fusion_mlp_ratio=float(mixer["mlp_ratio"]))
    neck = _section(values["neck_params"], "neck_params", source, read=("out_dims",),
                    checked=dict(in_dim=dims["embed_dim"]))
    fields["fpn_dims"] = tuple(neck["out_dims"])
    # dropout is the identity in eval; the loss only matters for training
    head = _section(values["head_params"], "head_params", source, read=("channels", "upsample"),
                    checked=dict(in_channels=plain(neck["out_dims"]), in_index=[0, 1, 2, 3], num_classes=1,
                                 align_corners=False),
                    ignored=("dropout_ratio", "loss_decode"))
    if head["upsample"] not in UPSAMPLE_FACTORS:
        raise unsupported(source, "head_params.upsample", head["upsample"], f"known: {', '.join(UPSAMPLE_FACTORS)}")
    fields.update(head_channels=head["channels"], head_upsample=head["upsample"])
    try:
        return SkipClickConfig(**fields)
    except (TypeError, ValueError) as err:
        raise CheckpointError(source, f"the authors' config gives an unsupported combination: {err}",
                              "this version reads the settings of the authors' released models") from None


# --- bounds of a stored config -----------------------------------------------------------------

def config_bounds(values: Mapping[str, Any]) -> Dict[str, Bound]:
    """The bounds of a stored SkipClick config (``isegm.model.config_bounds``). They hold every
    released model (DINOv2 / DINOv3 ViT-B, fusion depth 2 to 6, 448 crop, FPN widths up to 1024)
    and the small from-scratch one, with room; tap blocks, attention heads and the training crop
    follow the backbone ``values`` names."""
    backbone = values.get("backbone", SkipClickConfig.backbone)
    dims = _spec_dims(BACKBONES[backbone]) if backbone in BACKBONES else dict(patch_size=1, embed_dim=0, depth=64)
    width = f"{backbone} tokens have {dims['embed_dim']} channels" if dims["embed_dim"] else ""
    return {
        "backbone": Bound("choice", choices=tuple(BACKBONES)),
        "tap_blocks": Bound("ints", 0, dims["depth"] - 1, length=(1, dims["depth"]),
                            why=f"{backbone} has {dims['depth']} blocks" if backbone in BACKBONES else ""),
        "tap_norm": Bound("bool"),
        "skip_connections": Bound("bool"),
        "freeze_backbone": Bound("bool"),
        "fusion_depth": Bound("int", 1, 12, why="the released models have 2 to 6 blocks"),
        "fusion_heads": Bound("int", 1, 64, divides=dims["embed_dim"], why=width),
        "fusion_mlp_ratio": Bound("number", 0.25, 8, why="the released models: 4"),
        "train_size": Bound("ints", dims["patch_size"], 2048, length=(2, 2), multiple_of=dims["patch_size"],
                            why=f"{backbone} patches are {dims['patch_size']} pixels" if backbone in BACKBONES else ""),
        "fpn_dims": Bound("ints", 1, 2048, length=(4, 4), why="the released models: 128 256 512 1024"),
        "head_channels": Bound("int", 1, 2048, why="the released models: 256"),
        "head_upsample": Bound("choice", choices=tuple(UPSAMPLE_FACTORS)),
        "disk_radius": Bound("number", 1, 100, why=f"the released models: {DISK_RADIUS:g}"),
        "detail_channels": Bound("int", 0, 512, why="0: none, as in every released model"),
    }


# --- backbone files --------------------------------------------------------------------------

def _is_backbone_state(obj: Any) -> bool:
    return (isinstance(obj, Mapping) and {"cls_token", "patch_embed.proj.weight"} <= set(obj)
            and all(isinstance(v, Tensor) for v in obj.values()))


def _backbone_name(state: Mapping[str, Tensor], source: str) -> str:
    """The ``BACKBONES`` entry whose shapes a DINOv2 / DINOv3 release state dict has."""
    family = "dinov3" if "storage_tokens" in state else "dinov2"
    extra = state.get("storage_tokens" if family == "dinov3" else "register_tokens")
    blocks = {int(m.group(1)) for k in state for m in [re.match(r"blocks\.(\d+)\.", k)] if m}
    dims = dict(patch_size=state["patch_embed.proj.weight"].shape[-1], embed_dim=state["cls_token"].shape[-1],
                depth=max(blocks) + 1 if blocks else 0, num_register_tokens=0 if extra is None else extra.shape[1])
    for name, spec in BACKBONES.items():
        if name.startswith(family) and _spec_dims(spec) == dims:
            return name
    known = ", ".join(name for name in BACKBONES if name.startswith(family))
    raise ValueError(f"{source!r} looks like a {family} backbone with {dims}, which is none of the known "
                     f"backbones ({known})")


def _from_backbone(state: Mapping[str, Tensor], variant: Optional[str], source: str) -> SkipClick:
    name = _backbone_name(state, source)
    family = name.split("_")[0]
    variant = variant or ("skipclick_dinov3" if family == "dinov3" else "skipclick")
    declared = variant_config(variant).backbone
    if declared.split("_")[0] != family:   # tap_norm and the FPN widths belong to the family
        raise ValueError(f"{source!r} holds a {name} backbone, but variant {variant!r} uses {declared}")
    model = SkipClick(variant_config(variant, backbone=name))
    try:
        model.feature_extractor.vit.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{source!r} is not a {name} weights file: {err}") from None
    warnings.warn(f"{source!r} holds only {name} backbone weights: the rest of SkipClick (fusion stack, "
                  f"FPN, head) is freshly initialised and untrained, so its masks mean nothing. Load a "
                  f"SkipClick checkpoint ({AUTHORS_WEIGHTS}) to segment.", stacklevel=4)
    return model


def load_state(model: SkipClick, state: Mapping[str, Tensor], source: str) -> SkipClick:
    """``model`` with ``state`` loaded strictly; a mismatch names the first missing / unexpected keys."""
    return load_strict(model, state, source, f"SkipClick with config {model.config}")


def read_file(obj: Any, source: str, variant: Optional[str]) -> Optional[SkipClick]:
    """SkipClick from the authors' release or a DINOv2 / DINOv3 backbone file already read from
    ``source``; None when ``obj`` is neither. ``variant``: the variant the file must hold (for a
    backbone file: the variant to build around it, default ``skipclick`` or ``skipclick_dinov3``)."""
    if isinstance(obj, Mapping) and {"state_dict", "config"} <= set(obj):
        stored = obj["config"]
        if not (isinstance(stored, Mapping) and stored.get("class") == AUTHORS_CLASS):
            return None
        config = config_from_authors(stored.get("params", {}), source)
        check_config(config.to_dict(), config_bounds, "SkipClick", source)
        if variant is not None:
            check_variant(config, variant_config(variant), variant, "SkipClick", source)
        return load_state(SkipClick(config), obj["state_dict"], source)
    if _is_backbone_state(obj):
        return _from_backbone(obj, variant, source)
    return None

