"""Where EMC-Click training starts: the authors' initialisation and the ImageNet backbone weights.

The authors' model scripts (``models/emcclick/*.py`` of github.com/feiaxyt/EMC-Click) build the
model, then

* HRNet configs: initialise every convolution / linear weight with RITM's ``XavierGluon``
  (Gaussian, magnitude 2: std ``sqrt(2 / ((fan_in + fan_out) / 2))``, biases 0, BatchNorm 1 / 0),
  then load the ImageNet HRNet classification weights into the HRNet (stem and stages);
* SegFormer configs: keep MiT's own initialisation (linear: truncated normal std 0.02; conv:
  normal std ``sqrt(2 / fan_out)``; LayerNorm 1 / 0; biases 0) and load the ImageNet MiT weights
  into the encoder (all but the click embedding).

Nothing is downloaded: the files come from ``config.yml`` keys (``IMAGENET_WEIGHTS``).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Union

import torch
from torch import Tensor, nn

from ..checkpoint import read_checkpoint_file
from .checkpoint import load_emc_state
from .model import EMC_CONFIGS, EMCClick, EMCConfig

PathLike = Union[str, "os.PathLike[str]"]

HRNET_SOURCE = ("https://github.com/HRNet/HRNet-Image-Classification (ImageNet-pretrained models; the file "
                "names are the authors' config.yml's)")
MIT_SOURCE = ("https://github.com/NVlabs/SegFormer (ImageNet-1K-pretrained MiT encoders; NVIDIA Source Code "
              "License, non-commercial)")


@dataclass(frozen=True)
class BackboneFile:
    """An ImageNet backbone file: its ``config.yml`` key, the release's file name, where to get it."""

    config_key: str
    file_name: str
    source: str


IMAGENET_WEIGHTS: Dict[str, BackboneFile] = {
    "hr18s": BackboneFile("HRNETV2_W18_SMALL_WEIGHTS", "hrnet_w18_small_model_v2.pth", HRNET_SOURCE),
    "hr18": BackboneFile("HRNETV2_W18_WEIGHTS", "hrnetv2_w18_imagenet_pretrained.pth", HRNET_SOURCE),
    "hr32": BackboneFile("HRNETV2_W32_WEIGHTS", "hrnetv2_w32_imagenet_pretrained.pth", HRNET_SOURCE),
    "segb0": BackboneFile("MIT_B0_WEIGHTS", "mit_b0.pth", MIT_SOURCE),
    "segb3": BackboneFile("MIT_B3_WEIGHTS", "mit_b3.pth", MIT_SOURCE),
}

# HRNetOCR submodules that are not in an ImageNet classification file (built fresh).
_HRNET_HEADS = ("conv3x3_ocr.", "ocr_gather_head.", "ocr_distri_head.", "cls_head.", "aux_head.")
# MiT submodules EMC-Click adds to the encoder (built fresh).
_MIT_ADDED = ("patch_embed_side1.", "norm_add.")


@torch.no_grad()
def xavier_gluon_(model: nn.Module, magnitude: float = 2.0) -> nn.Module:
    """RITM's ``XavierGluon(rnd_type='gaussian', magnitude)`` applied to every module: BatchNorm
    weight 1 and bias 0; any other module's ``weight`` ~ N(0, sqrt(magnitude / ((fan_in +
    fan_out) / 2))) and ``bias`` 0. Parameters under other names (attention's in-projection, the
    click-feature scale) keep their values."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
            continue
        weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
        if isinstance(weight, Tensor):
            fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(weight)
            nn.init.normal_(weight, 0.0, math.sqrt(magnitude / ((fan_in + fan_out) / 2.0)))
        if isinstance(bias, Tensor):
            nn.init.zeros_(bias)
    return model


@torch.no_grad()
def mit_init_(encoder: nn.Module) -> nn.Module:
    """MiT's own initialisation (SegFormer's ``_init_weights``) of an encoder's layers."""
    for module in encoder.modules():
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
        elif isinstance(module, nn.Conv2d):
            fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
            nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
        else:
            continue
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    return encoder


def init_for_training(model: EMCClick) -> EMCClick:
    """The authors' initial values before the ImageNet weights (see the module docstring); the
    SegFormer decoder's fusion conv gets mmcv ``ConvModule``'s Kaiming (fan-out) initialisation."""
    if model.config.base == "hrnet":
        return xavier_gluon_(model)
    mit_init_(model.feature_extractor.backbone)
    with torch.no_grad():
        nn.init.kaiming_normal_(model.feature_extractor.decode_head.linear_fuse.conv.weight, mode="fan_out",
                                nonlinearity="relu")
    return model


def _read_state(path: PathLike, what: str) -> Mapping[str, Tensor]:
    source = os.fspath(path)
    obj = read_checkpoint_file(source)   # a damaged or foreign file: a CheckpointError naming it
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ValueError(f"{source!r} is not {what}: it holds a {type(obj).__name__}, not a state dict")
    return obj


def load_imagenet_backbone(model: EMCClick, path: PathLike, name: str = "") -> EMCClick:
    """Load an ImageNet HRNet / MiT classification file (``IMAGENET_WEIGHTS``) into the base
    network: HRNet's stem and stages, or MiT's encoder without EMC-Click's click embedding. Keys
    are matched as the authors' loaders do (HRNet: ``last_layer`` -> ``aux_head``, no ``model.``
    prefix; a ``state_dict`` wrapper is unwrapped); every backbone tensor must be in the file with
    its shape, and keys the model lacks (the classifier) are ignored."""
    source = os.fspath(path)
    hrnet = model.config.base == "hrnet"
    spec = IMAGENET_WEIGHTS.get(name)
    what = f"an ImageNet {'HRNet' if hrnet else 'MiT'} weights file" + (f" ({spec.file_name})" if spec else "")
    if not os.path.isfile(source):
        where = spec.source if spec else (HRNET_SOURCE if hrnet else MIT_SOURCE)
        raise FileNotFoundError(f"{what} not found at {source!r}. Download it from {where} and point to it in "
                                f"config.yml{f' ({spec.config_key})' if spec else ''}. Nothing is downloaded at run time.")
    state = _read_state(source, what)
    if hrnet:
        state = {k.replace("last_layer", "aux_head").replace("model.", ""): v for k, v in state.items()}
        target, fresh = model.feature_extractor, _HRNET_HEADS
    else:
        target, fresh = model.feature_extractor.backbone, _MIT_ADDED
    own = target.state_dict()
    required = [k for k in own if not k.startswith(fresh) and not k.endswith("num_batches_tracked")]
    missing = [k for k in required if k not in state]
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(own[k].shape)})" for k in required
             if k in state and state[k].shape != own[k].shape]
    if missing or wrong:
        raise ValueError(f"{source!r} does not fit the {model.config} backbone: {len(missing)} missing tensors "
                         f"{missing[:4]}, {len(wrong)} of another shape {wrong[:2]}; is it {what}?")
    target.load_state_dict({k: state[k] for k in own if k in state}, strict=False)
    return model


def load_emc_weights(model: EMCClick, path: PathLike) -> EMCClick:
    """All weights from an EMC-Click checkpoint (the authors' release or one our trainer wrote)."""
    source = os.fspath(path)
    if not os.path.isfile(source):
        raise FileNotFoundError(f"no EMC-Click checkpoint at {source!r} (--weights); the released ones are "
                                "hr18s.pth ... segb3.pth at github.com/feiaxyt/EMC-Click (Releases)")
    return load_emc_state(model, _read_state(source, "an EMC-Click checkpoint"), source)


def emc_from_settings(config: Union[str, EMCConfig], cfg: Mapping[str, Any]) -> EMCClick:
    """The model a model file's ``init_model(cfg)`` builds for ``train.py``: ``config`` (a name of
    ``EMC_CONFIGS`` or a config) with the weights of ``cfg['weights']`` (``--weights``) when given;
    otherwise the authors' initialisation and, for a released config, the ImageNet backbone named
    by its ``config.yml`` key. A released config whose key is not set stops with the file to get,
    unless training from scratch is chosen (``cfg['from_scratch']``: ``--from-scratch``)."""
    name = config if isinstance(config, str) else ""
    if name and name not in EMC_CONFIGS:
        raise ValueError(f"unknown EMC-Click model {name!r}; known: {', '.join(EMC_CONFIGS)}")
    model = EMCClick(EMC_CONFIGS[name] if name else config)
    if cfg.get("weights"):
        return load_emc_weights(model, cfg["weights"])
    init_for_training(model)
    spec = IMAGENET_WEIGHTS.get(name)
    if spec is None or cfg.get("from_scratch") or cfg.get("resume_from"):
        return model
    if not cfg.get(spec.config_key):
        raise FileNotFoundError(
            f"{spec.config_key} is not set, so the {name} backbone would start from random weights (the authors start "
            f"from ImageNet weights): download {spec.file_name} from {spec.source} and set {spec.config_key} in the "
            f"config file (or SKIPCLICK_{spec.config_key}); to train from scratch on purpose, pass --from-scratch")
    return load_imagenet_backbone(model, cfg[spec.config_key], name)
