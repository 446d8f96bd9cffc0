"""Frozen image encoders, by the names the authors' configs use (``extractor_type``)."""
from __future__ import annotations

from typing import Dict, NamedTuple

from .base import DinoViT
from .dinov2 import DINOV2_SIZES, DinoV2
from .dinov3 import DinoV3


class BackboneSpec(NamedTuple):
    cls: type
    kwargs: dict
    weights_file: str      # the official release file name
    weights_source: str    # where a user gets it


_DINOV2_URL = "https://dl.fbaipublicfiles.com/dinov2/{arch}/{file}"
_DINOV3_SOURCE = ("request access at https://ai.meta.com/resources/models-and-libraries/dinov3-downloads/ "
                  "(or https://github.com/facebookresearch/dinov3#pretrained-models)")


def _dinov2_specs() -> Dict[str, BackboneSpec]:
    specs = {}
    for size, kwargs in DINOV2_SIZES.items():
        arch = f"dinov2_{size}"
        for reg, suffix in ((4, "_reg"), (0, "")):
            file = f"{arch}{'_reg4' if reg else ''}_pretrain.pth"
            specs[arch + suffix] = BackboneSpec(DinoV2, dict(kwargs, num_register_tokens=reg), file,
                                                _DINOV2_URL.format(arch=arch, file=file))
    return specs


BACKBONES: Dict[str, BackboneSpec] = {
    **_dinov2_specs(),
    "dinov3_vitb16": BackboneSpec(DinoV3, {}, "dinov3_vitb16_pretrain_lvd1689m-73cec8be.pth", _DINOV3_SOURCE),
    # A small ViT trained from scratch in minutes on a CPU (the quickstart); no release file.
    "tinyvit_p8": BackboneSpec(DinoV2, dict(patch_size=8, embed_dim=192, depth=6, num_heads=3, num_register_tokens=0,
                                            img_size=112), "", "no pretrained file: it is trained from scratch"),
}


def build_backbone(name: str) -> DinoViT:
    """An untrained backbone by name (``dinov2_vitb14_reg``, ``dinov3_vitb16``, ...)."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(sorted(BACKBONES))}")
    spec = BACKBONES[name]
    return spec.cls(**spec.kwargs)


__all__ = ["BACKBONES", "BackboneSpec", "DinoV2", "DinoV3", "DinoViT", "build_backbone"]
