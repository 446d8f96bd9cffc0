"""EMC-Click checkpoints in the authors' format.

The authors' ``isegm.utils.misc.save_checkpoint`` writes ``torch.save({'state_dict':
net.state_dict(), 'config': net._config}, path)``, where ``_config`` is what their ``@serialize``
decorator records: ``{'class': 'isegm.model....', 'params': {name: {'type', 'value',
'specified'}}}``, plain builtins only. Their released ``hr18s.pth`` ... ``segb3.pth`` have this
format; ``save_emc_checkpoint`` writes it too, so files go both ways.

The state dict lists the correlation conv three times (``refiner.corr_conv``, ``corr_conv_pos``
and ``corr_conv_neg`` are one module). A file without the two alias copies loads as well; when
the copies differ, the last one (``corr_conv_neg``) wins, as with the authors' loader.
Files are read with torch's weights-only unpickler, so loading never runs code from the file.
"""
from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from typing import Any, Dict, Mapping, Optional, Union

import torch
from torch import Tensor

from ..checkpoint import (CheckpointError, CheckpointNotFoundError, authors_settings, check_config, plain,
                          read_checkpoint_file, unsupported)
from ..config_bounds import Bound
from ..state_dict import load_strict
from ..normalize import IMAGENET_MEAN, IMAGENET_STD
from .model import BASES, EMCClick, EMCConfig, emc_config
from .segformer import SEGFORMER_CONFIGS

PathLike = Union[str, "os.PathLike[str]"]

AUTHORS_CLASSES = {"hrnet": "isegm.model.is_refine_model.HRNetRefineModel",
                   "segformer": "isegm.model.is_refine_segformer_model.SegFormerModel"}
ALIASES = ("refiner.corr_conv_pos.", "refiner.corr_conv_neg.")
CANONICAL = "refiner.corr_conv."
_BATCH_NORM = "torch.nn.modules.batchnorm.BatchNorm2d"
_NORM_MEAN_STD = (list(IMAGENET_MEAN), list(IMAGENET_STD))


def _param(value: Any, specified: bool, kind: str = "builtin") -> Dict[str, Any]:
    return {"type": kind, "value": value, "specified": specified}


def authors_config(config: EMCConfig) -> Dict[str, Any]:
    """The ``_config`` the authors' model class records for ``config``: the released scripts'
    constructor arguments (``specified``), then the defaults, in their order."""
    refiner = {"conv_layer": "xconv2", "mid_dims": config.mid_dims, "corr_channel": config.mid_dims}
    common = dict(use_leaky_relu=config.use_leaky_relu, use_rgb_conv=False, use_disks=True,
                  norm_radius=config.norm_radius)
    if config.base == "hrnet":
        specified = dict(width=config.hrnet_width, ocr_width=config.ocr_width, small=config.small,
                         with_aux_output=True, **common, with_prev_mask=True, refiner_conf=refiner,
                         only_first_click=True)
        defaults = [("backbone_lr_mult", 0.1), ("norm_layer", _BATCH_NORM), ("feature_stride", 4),
                    ("cpu_dist_maps", False), ("clicks_groups", None), ("binary_prev_mask", False),
                    ("conv_extend", False), ("norm_mean_std", _NORM_MEAN_STD)]
    else:
        specified = dict(model_version=config.segformer_version, **common, binary_prev_mask=False,
                         with_prev_mask=True, with_aux_output=True, refiner_conf=refiner, only_first_click=True)
        defaults = [("feature_stride", 4), ("backbone_lr_mult", 0.1), ("norm_layer", _BATCH_NORM),
                    ("cpu_dist_maps", False), ("clicks_groups", None), ("conv_extend", False),
                    ("norm_mean_std", _NORM_MEAN_STD)]
    params = {name: _param(value, True) for name, value in specified.items()}
    for name, value in defaults:
        params[name] = _param(value, False, "class" if name == "norm_layer" else "builtin")
    return {"class": AUTHORS_CLASSES[config.base], "params": params}


# Settings that cannot change inference: training-only, or only touching the 4th input channel,
# which these models never read.
_IGNORED = ("backbone_lr_mult", "cpu_dist_maps", "with_aux_output", "binary_prev_mask")
# Settings whose other values select code paths that are not implemented.
_FIXED = {"use_rgb_conv": False, "use_disks": True, "with_prev_mask": True, "only_first_click": True,
          "norm_layer": _BATCH_NORM, "feature_stride": 4, "clicks_groups": None, "conv_extend": False,
          "norm_mean_std": plain(_NORM_MEAN_STD)}
_READ = {"hrnet": ("width", "ocr_width", "small", "use_leaky_relu", "norm_radius", "refiner_conf"),
         "segformer": ("model_version", "use_leaky_relu", "norm_radius", "refiner_conf")}


def config_from_authors(stored: Mapping[str, Any], source: str) -> EMCConfig:
    """Our ``EMCConfig`` for the authors' stored ``config`` (``{'class', 'params'}``).

    Raises ``ValueError`` naming the file, the setting and its value for anything not
    implemented, rather than building a model that computes something else.
    """
    model_class = stored.get("class") if isinstance(stored, Mapping) else None
    base = next((b for b, name in AUTHORS_CLASSES.items() if name == model_class), None)
    if base is None:
        raise unsupported(source, "class", model_class, f"known: {', '.join(AUTHORS_CLASSES.values())}")
    values = authors_settings(stored.get("params", {}), source, _READ[base], _FIXED, _IGNORED)

    refiner = values["refiner_conf"]
    if not isinstance(refiner, Mapping) or set(refiner) != {"conv_layer", "mid_dims", "corr_channel"}:
        raise unsupported(source, "refiner_conf", refiner, "expected exactly conv_layer, mid_dims, corr_channel")
    if refiner["conv_layer"] != "xconv2":
        raise unsupported(source, "refiner_conf.conv_layer", refiner["conv_layer"], "only 'xconv2' is implemented")
    if refiner["corr_channel"] != refiner["mid_dims"]:
        raise unsupported(source, "refiner_conf.corr_channel", refiner["corr_channel"],
                           f"only corr_channel == mid_dims ({refiner['mid_dims']}) is implemented")
    fields = dict(base=base, mid_dims=refiner["mid_dims"], norm_radius=values["norm_radius"],
                  use_leaky_relu=bool(values["use_leaky_relu"]))
    if base == "hrnet":
        fields.update(hrnet_width=values["width"], ocr_width=values["ocr_width"], small=bool(values["small"]))
    else:
        if values["model_version"] not in ("b0", "b3"):
            raise unsupported(source, "model_version", values["model_version"], "known: 'b0', 'b3'")
        fields["segformer_version"] = values["model_version"]
    return EMCConfig(**fields)


def config_bounds(values: Mapping[str, Any]) -> Dict[str, Bound]:
    """The bounds of a stored EMC-Click config (``isegm.model.config_bounds``): every released
    model (HRNet-18s / 18 / 32 with OCR widths 48 to 128, SegFormer-B0 / B3, 64 or 96 templates)
    lies well within them."""
    return {
        "base": Bound("choice", choices=BASES),
        "hrnet_width": Bound("int", 1, 64, why="the released models: 18 and 32"),
        "ocr_width": Bound("int", 1, 512, why="the released models: 48 to 128"),
        "small": Bound("bool"),
        "segformer_version": Bound("choice", choices=tuple(SEGFORMER_CONFIGS)),
        "mid_dims": Bound("int", 1, 512, why="the released models: 64 and 96"),
        "norm_radius": Bound("number", 1, 100, why="the released models: 5"),
        "use_leaky_relu": Bound("bool"),
    }


def _with_aliases(state: Mapping[str, Tensor], source: str) -> Dict[str, Tensor]:
    """``state`` with the ``corr_conv_pos`` / ``corr_conv_neg`` copies of ``corr_conv`` filled in
    where absent; differing copies are kept (the last one loaded wins) with a warning."""
    state = dict(state)
    differ = []
    for key in [k for k in state if k.startswith(CANONICAL)]:
        suffix = key[len(CANONICAL):]
        for alias in ALIASES:
            if not torch.equal(state.setdefault(alias + suffix, state[key]), state[key]):
                differ.append(alias + suffix)
    if differ:
        warnings.warn(f"{source!r}: {differ[:3]} differ from their refiner.corr_conv twins; the three are one "
                      "module, and the corr_conv_neg copies are used, as by the authors' loader", stacklevel=3)
    return state


def load_emc_state(model: EMCClick, state: Mapping[str, Tensor], source: str = "<state dict>") -> EMCClick:
    """Load an authors'-layout state dict into ``model`` strictly (aliases optional); a mismatch
    raises ``ValueError`` naming the first missing / unexpected keys."""
    state = _with_aliases(state, source)
    return load_strict(model, state, source, f"EMC-Click {model.config}")


def is_emc_checkpoint(obj: Any) -> bool:
    """Whether a loaded file holds an EMC-Click model in the authors' format (for dispatch)."""
    config = obj.get("config") if isinstance(obj, Mapping) and "state_dict" in obj else None
    return isinstance(config, Mapping) and config.get("class") in AUTHORS_CLASSES.values()


def read_file(obj: Any, source: str, name: Optional[str] = None) -> Optional[EMCClick]:
    """The model of an already loaded file in the authors' format, or None for another format
    (``ModelFamily.read_file``)."""
    return emc_from_checkpoint(obj, source, name) if is_emc_checkpoint(obj) else None


def emc_from_checkpoint(obj: Any, source: str, name: Optional[str] = None) -> EMCClick:
    """The model of an already loaded authors'-format checkpoint ``obj`` (eval mode, no
    gradients, on the CPU); ``source`` names the file in errors, ``name`` is as in
    ``load_emc_checkpoint``."""
    if not (isinstance(obj, Mapping) and {"state_dict", "config"} <= set(obj)):
        kind = f"a dict with keys {list(obj)[:8]}" if isinstance(obj, Mapping) else f"a {type(obj).__name__}"
        raise CheckpointError(source, f"not an EMC-Click checkpoint ({{'state_dict', 'config'}}): it holds {kind}",
                              "give one of the authors' released files (hr18s.pth, ..., segb3.pth)")
    config = config_from_authors(obj["config"], source)
    check_config(config.to_dict(), config_bounds, "EMC-Click", source)
    if name is not None and emc_config(name) != config:
        raise CheckpointError(source, f"holds {config}, not {name!r} ({emc_config(name)})",
                              f"give the {name}.pth file, or no name")
    model = load_emc_state(EMCClick(config), obj["state_dict"], source)
    return model.requires_grad_(False).eval()


def load_emc_checkpoint(path: PathLike, device: Union[str, torch.device] = "cpu",
                        name: Optional[str] = None) -> EMCClick:
    """A ready EMC-Click (eval mode, no gradients, on ``device``) from an authors'-format file.

    ``name``: if given, one of ``EMC_CONFIGS`` the file must hold.
    """
    source = os.fspath(path)
    if not os.path.exists(source):
        raise CheckpointNotFoundError(source, "no such EMC-Click checkpoint",
                                      "the released ones are hr18s.pth, hr18.pth, hr32.pth, segb0.pth and segb3.pth "
                                      "(github.com/feiaxyt/EMC-Click, Releases)")
    return emc_from_checkpoint(read_checkpoint_file(source), source, name).to(device)


def save_emc_checkpoint(model: EMCClick, path: PathLike) -> None:
    """Write ``{'state_dict', 'config'}`` as the authors do (pickle protocol 2, alias keys
    included and sharing storage), loadable by their ``load_is_model`` and by ours."""
    on_cpu: Dict[tuple, Tensor] = {}   # one copy per shared tensor, so the aliases keep sharing storage
    state = OrderedDict((k, on_cpu.setdefault((v.data_ptr(), v.shape, v.stride()), v.detach().cpu()))
                        for k, v in model.state_dict().items())
    torch.save({"state_dict": state, "config": authors_config(model.config)}, os.fspath(path),
               pickle_protocol=2)
