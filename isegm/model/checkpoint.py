"""Loading and saving SkipClick weights (and loading EMC-Click's).

``load_checkpoint`` reads four kinds of file and returns a ready model:

* the authors' released SkipClick ``.pth`` files (``{'state_dict', 'config'}`` written by their
  ``isegm.utils.misc.save_checkpoint``); the architecture comes from the stored config,
* official DINOv2 / DINOv3 backbone release files (a flat ViT state dict); the rest of the
  model is freshly initialised,
* our own checkpoints, written by ``save_checkpoint`` (``format: skipclick-checkpoint/1``),
* the authors' EMC-Click files (``hr18s.pth`` ... ``segb3.pth``, or ``save_emc_checkpoint``'s),
  recognised by their stored model class and read by ``isegm.model.emc.checkpoint``.

Every file goes through torch's weights-only unpickler, so loading a file never runs code from
it. The authors' config pickles an instance of their training loss; its two globals are mapped
to inert stand-ins so that their files load without their code and without ``weights_only=False``.
"""
from __future__ import annotations

import contextlib
import inspect
import json
import os
import pickle
import re
import warnings
from collections import OrderedDict
from typing import Any, ContextManager, Dict, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor

from ..utils.files import atomic_write
from .backbones import BACKBONES, BackboneSpec
from .skipclick.variants import PathLike, missing_weights_message, variant_config
from .emc import EMC_CONFIGS, EMCClick, EMCConfig, emc_from_checkpoint, is_emc_checkpoint, load_emc_state
from .emc.checkpoint import AUTHORS_CLASSES as EMC_AUTHORS_CLASSES
from .skipclick.head import UPSAMPLE_FACTORS
from .state_dict import load_strict
from .skipclick.model import IMAGENET_MEAN, IMAGENET_STD, SkipClick, SkipClickConfig

FORMAT = "skipclick-checkpoint/1"
AUTHORS_CLASS = "isegm.model.is_featurevit_model.FeatureVitModel"
AUTHORS_WEIGHTS = "https://github.com/Schorob/skipclick#weights"
EMC_WEIGHTS = "https://github.com/feiaxyt/EMC-Click/releases"
_AUTHORS_LOSS_MODULE = "isegm.model.modeling.transformer_helper.cross_entropy_loss"
_AUTHORS_GLOBALS = (f"{_AUTHORS_LOSS_MODULE}.CrossEntropyLoss", f"{_AUTHORS_LOSS_MODULE}.cross_entropy")
# torch < 2.6 cannot allow-list a global under another name ((stand-in, "module.name") pairs)
_STAND_INS_SUPPORTED = torch.__version__ >= "2.6"

Device = Union[str, torch.device]


class _AuthorsLoss:
    """Inert stand-in for the authors' ``CrossEntropyLoss`` module pickled in their config
    (``head_params['loss_decode']``): keeps the pickled attribute dict, does nothing else."""

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.state = state


def _authors_loss_function(*args: Any, **kwargs: Any) -> None:
    """Inert stand-in for the authors' ``cross_entropy``: the config only refers to it."""
    raise RuntimeError("stand-in for the authors' training loss; SkipClick inference never calls it")


def _allowed_globals() -> ContextManager:
    if not _STAND_INS_SUPPORTED:
        return contextlib.nullcontext()
    return torch.serialization.safe_globals([
        (_AuthorsLoss, _AUTHORS_GLOBALS[0]), (_authors_loss_function, _AUTHORS_GLOBALS[1]),
        set, OrderedDict])


def _read(source: str) -> Any:
    """``torch.load`` with the weights-only unpickler; a refused global becomes a ValueError."""
    try:
        with _allowed_globals():
            return torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        match = re.search(r"\bGLOBAL ([\w.]+)", str(err))
        if match is None:
            raise ValueError(f"{source!r} cannot be read as a torch checkpoint: {str(err).splitlines()[0]}") from None
        refused = match.group(1)
        hint = (" Reading the authors' checkpoints without their code needs torch >= 2.6."
                if refused in _AUTHORS_GLOBALS and not _STAND_INS_SUPPORTED else "")
        raise ValueError(
            f"refused to load {source!r}: it needs the Python global {refused}, which the weights-only "
            f"unpickler does not allow. Nothing from the file was executed. Only load a file you trust "
            f"with torch.load(weights_only=False).{hint}") from None
    except (EOFError, RuntimeError) as err:   # empty or truncated files, broken zip archives
        raise ValueError(f"{source!r} cannot be read as a torch checkpoint: {err}") from None


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


def _unsupported(source: str, setting: str, value: Any, why: str) -> ValueError:
    return ValueError(f"{source!r}: the authors' setting {setting}={value!r} is not supported ({why})")


def _section(value: Any, name: str, source: str, read: Tuple[str, ...], checked: Dict[str, Any],
             ignored: Tuple[str, ...] = ()) -> Dict[str, Any]:
    """A dict-valued setting: unknown keys and wrong ``checked`` values raise, ``read`` keys
    must be present."""
    if not isinstance(value, Mapping):
        raise _unsupported(source, name, value, "expected a dict")
    for key, item in value.items():
        if key not in read and key not in checked and key not in ignored:
            raise _unsupported(source, f"{name}.{key}", item, "unknown setting")
        if key in checked and _plain(item) != checked[key]:
            raise _unsupported(source, f"{name}.{key}", item, f"only {checked[key]!r} is implemented")
    missing = [key for key in read if key not in value]
    if missing:
        raise ValueError(f"{source!r}: the authors' config lacks the setting {name}.{missing[0]}")
    return dict(value)


def _plain(value: Any) -> Any:
    """Tuples as lists, so that a pickled tuple and a JSON list compare equal."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _pair(value: Any, setting: str, source: str) -> Tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value) if isinstance(value, (list, tuple)) else ()
    if len(pair) != 2 or not all(isinstance(v, int) and v > 0 for v in pair):
        raise _unsupported(source, setting, value, "expected a positive int or a pair of them")
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
    values = {}
    for name, entry in params.items():
        if not isinstance(entry, Mapping) or "value" not in entry:
            raise ValueError(f"{source!r}: the authors' setting {name} has no stored value: {entry!r}")
        values[name] = entry["value"]
    for name, value in values.items():
        if name not in _READ and name not in _FIXED and name not in _IGNORED:
            raise _unsupported(source, name, value, "unknown setting")
        if name in _FIXED and value != _FIXED[name]:
            raise _unsupported(source, name, value, f"only {_FIXED[name]!r} is implemented")
    missing = [name for name in _READ if name not in values]
    if missing:
        raise ValueError(f"{source!r}: the authors' config lacks the setting {missing[0]}")

    extractor = values["extractor_type"]
    if extractor not in _EXTRACTORS:
        raise _unsupported(source, "extractor_type", extractor, f"known: {', '.join(_EXTRACTORS)}")
    fields = dict(_EXTRACTORS[extractor])
    dims = _spec_dims(BACKBONES[fields["backbone"]])

    taps = _plain(values["use_intermediate"])
    if taps == _ALL_TAPS:
        fields["tap_blocks"] = tuple(_ALL_TAPS)
    elif isinstance(taps, list) and len(taps) == 1:
        fields["tap_blocks"] = (2,)   # BLOCK2_QUIRK: their code uses block 2 whatever the one block named
    else:
        raise _unsupported(source, "use_intermediate", values["use_intermediate"],
                           f"only {_ALL_TAPS} or a single block is implemented")
    fields["skip_connections"] = bool(values["skip_connections"])
    fields["freeze_backbone"] = not values["trained_extractor"]

    radius = values["norm_radius"]
    if isinstance(radius, bool) or not isinstance(radius, (int, float)) or not radius > 0:
        raise _unsupported(source, "norm_radius", radius, "expected a positive number")
    fields["disk_radius"] = radius
    if _plain(values["norm_mean_std"]) != [list(IMAGENET_MEAN), list(IMAGENET_STD)]:
        raise _unsupported(source, "norm_mean_std", values["norm_mean_std"],
                           "only the ImageNet mean/std is implemented")

    mixer = _section(values["backbone_params"], "backbone_params", source,
                     read=("img_size", "patch_size", "depth", "num_heads", "mlp_ratio"),
                     checked=dict(embed_dim=dims["embed_dim"], qkv_bias=True, primitive_stack=True))
    patch = dims["patch_size"]
    if _pair(mixer["patch_size"], "backbone_params.patch_size", source) != (patch, patch):
        raise _unsupported(source, "backbone_params.patch_size", mixer["patch_size"],
                           f"{extractor} has {patch}x{patch} patches")
    fields.update(train_size=_pair(mixer["img_size"], "backbone_params.img_size", source),
                  fusion_depth=mixer["depth"], fusion_heads=mixer["num_heads"],
                  fusion_mlp_ratio=float(mixer["mlp_ratio"]))
    neck = _section(values["neck_params"], "neck_params", source, read=("out_dims",),
                    checked=dict(in_dim=dims["embed_dim"]))
    fields["fpn_dims"] = tuple(neck["out_dims"])
    # dropout is the identity in eval; the loss only matters for training
    head = _section(values["head_params"], "head_params", source, read=("channels", "upsample"),
                    checked=dict(in_channels=_plain(neck["out_dims"]), in_index=[0, 1, 2, 3], num_classes=1,
                                 align_corners=False),
                    ignored=("dropout_ratio", "loss_decode"))
    if head["upsample"] not in UPSAMPLE_FACTORS:
        raise _unsupported(source, "head_params.upsample", head["upsample"], f"known: {', '.join(UPSAMPLE_FACTORS)}")
    fields.update(head_channels=head["channels"], head_upsample=head["upsample"])
    try:
        return SkipClickConfig(**fields)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{source!r}: the authors' config gives an unsupported combination: {err}") from None


# --- loading ----------------------------------------------------------------------------------

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


def _fill(model: SkipClick, state: Mapping[str, Tensor], source: str) -> SkipClick:
    """``model`` with ``state`` loaded strictly; a mismatch names the first missing / unexpected keys."""
    return load_strict(model, state, source, f"SkipClick with config {model.config}")


def _check_variant(config: SkipClickConfig, variant: Optional[str], source: str) -> None:
    if variant is None:
        return
    wanted = variant_config(variant)
    if wanted != config:
        diff = {k: (v, getattr(config, k)) for k, v in wanted.to_dict().items() if getattr(config, k) != v}
        raise ValueError(f"{source!r} holds a model that is not variant {variant!r}; "
                         f"(variant, file) values differ: {diff}")


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
                  f"SkipClick checkpoint ({AUTHORS_WEIGHTS}) to segment.", stacklevel=3)
    return model


def _describe(obj: Any) -> str:
    if isinstance(obj, Mapping):
        keys = [repr(k) for k in list(obj)[:8]]
        return f"a dict with {len(obj)} keys ({', '.join(keys)}{', ...' if len(obj) > 8 else ''})"
    return f"a {type(obj).__name__}"


def load_checkpoint(path: PathLike, device: Device = "cpu", variant: Optional[str] = None
                    ) -> Union[SkipClick, EMCClick]:
    """A ready model (eval mode, on ``device``): SkipClick from the authors' released ``.pth``, one
    of our checkpoints or an official DINOv2 / DINOv3 backbone file; EMC-Click from the authors'
    released files (their format, whatever the file name).

    ``variant``: for a backbone file, which SkipClick variant to build around it (default
    ``skipclick``, or ``skipclick_dinov3`` for DINOv3); for a full checkpoint, the variant it
    must hold (for EMC-Click a name of ``EMC_CONFIGS``: ``hr18s``, ``hr18``, ``hr32``, ``segb0``,
    ``segb3``). The caller tells the families apart by type (``isinstance(model, EMCClick)``);
    ``isegm.inference.get_predictor`` picks each one's evaluation protocol. Nothing in the file is
    executed: a file that needs other Python globals is refused.
    """
    source = os.fspath(path)
    if not os.path.isfile(source):
        raise FileNotFoundError(missing_weights_message(
            source, "SkipClick checkpoint (the authors' released weights or one written by save_checkpoint) or "
            "EMC-Click checkpoint (the authors' format)",
            f"{AUTHORS_WEIGHTS} (SkipClick) or {EMC_WEIGHTS} (EMC-Click)"))
    obj = _read(source)
    if is_emc_checkpoint(obj):
        return emc_from_checkpoint(obj, source, variant).to(device).eval()
    if isinstance(obj, Mapping) and "format" in obj:
        if obj["format"] != FORMAT:
            raise ValueError(f"{source!r} has format {obj['format']!r}; this version reads {FORMAT!r}")
        family = obj.get("family", "SkipClick")   # files written before EMC-Click have no family
        if family not in FAMILIES:
            raise _unsupported(source, "family", family, f"known: {', '.join(FAMILIES)}")
        try:
            config = FAMILIES[family](**obj["config"])
        except (TypeError, ValueError) as err:
            raise ValueError(f"{source!r} holds an invalid {family} config: {err}") from None
        if family == "EMCClick":
            if variant is not None and EMC_CONFIGS.get(variant) != config:
                raise ValueError(f"{source!r} holds EMC-Click {config}, not {variant!r}")
            return load_emc_state(EMCClick(config), obj["state_dict"], source).to(device).eval()
        _check_variant(config, variant, source)
        model = _fill(SkipClick(config), obj["state_dict"], source)
    elif isinstance(obj, Mapping) and {"state_dict", "config"} <= set(obj):
        stored = obj["config"]
        model_class = stored.get("class") if isinstance(stored, Mapping) else None
        if model_class != AUTHORS_CLASS:
            known = ", ".join([f"{AUTHORS_CLASS} (SkipClick)"]
                              + [f"{name} (EMC-Click)" for name in EMC_AUTHORS_CLASSES.values()])
            raise _unsupported(source, "class", model_class, f"known: {known}")
        config = config_from_authors(stored.get("params", {}), source)
        _check_variant(config, variant, source)
        model = _fill(SkipClick(config), obj["state_dict"], source)
    elif _is_backbone_state(obj):
        model = _from_backbone(obj, variant, source)
    else:
        raise ValueError(f"{source!r} is neither a SkipClick checkpoint (ours or the authors'), an EMC-Click "
                         f"checkpoint (the authors') nor a DINOv2 / DINOv3 backbone file; it holds {_describe(obj)}")
    return model.to(device).eval()


# --- saving -----------------------------------------------------------------------------------

_RESERVED = ("format", "family", "config", "state_dict")
# Model classes our format stores, by the name in its ``family`` key, with their config class.
FAMILIES = {"SkipClick": SkipClickConfig, "EMCClick": EMCConfig}


def _check_plain(value: Any, where: str) -> None:
    """Raise unless ``value`` loads with ``torch.load(weights_only=True)`` (and so with ours)."""
    # exact types: subclasses such as numpy.float64 pickle with globals a weights-only load refuses
    if value is None or type(value) in (str, int, float, bool) or isinstance(value, Tensor):
        return
    if type(value) in (list, tuple):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
    elif type(value) is dict:
        for key, item in value.items():
            if type(key) not in (str, int):   # optimizer states are keyed by parameter index
                raise TypeError(f"checkpoint metadata {where} has a key {key!r} that is neither str nor int")
            _check_plain(item, f"{where}[{key!r}]")
    else:
        raise TypeError(f"checkpoint metadata {where} is a {type(value).__name__}; only str, int, float, bool, "
                        "None, tensors and lists / dicts of them load with weights_only=True")


def save_checkpoint(model: Union[SkipClick, EMCClick], path: PathLike, **extra: Any) -> None:
    """Write ``model`` as ``{'format': 'skipclick-checkpoint/1', 'family', 'config', 'state_dict',
    **extra}`` (``family``: the model class, ``SkipClick`` or ``EMCClick``).

    ``extra`` is plain metadata (epoch, metrics, ...). The file loads with plain
    ``torch.load(weights_only=True)``. It is written to a temporary file beside ``path`` that
    replaces ``path`` only when complete, so ``path`` never holds a half-written checkpoint.
    """
    clash = [key for key in extra if key in _RESERVED]
    if clash:
        raise ValueError(f"checkpoint metadata cannot use the reserved keys {clash}")
    for key, value in extra.items():
        _check_plain(value, key)
    family = type(model).__name__
    if family not in FAMILIES:
        raise TypeError(f"save_checkpoint writes {', '.join(FAMILIES)} models, not {family}")
    payload = {"format": FORMAT, "family": family,
               "config": json.loads(json.dumps(model.config.to_dict())),   # tuples -> lists: plain JSON
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
               **extra}
    atomic_write(path, lambda f: torch.save(payload, f))
