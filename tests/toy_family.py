"""A third model family in a few lines, as a plug-in: a model answering the families' common calls
and its ``FAMILY`` record. The evaluation chain and training step are the RITM family's."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, Optional

import torch
from torch import Tensor, nn

from isegm.model.click_maps import encode_clicks
from isegm.model.families import ModelFamily
from isegm.model.state_dict import load_strict


@dataclass
class ToyConfig:
    width: int = 8

    def to_dict(self) -> Dict:
        return asdict(self)


class ToyNet(nn.Module):
    """Image features once per image, click disks and the previous mask added per click."""

    def __init__(self, config: Optional[ToyConfig] = None) -> None:
        super().__init__()
        self.config = config or ToyConfig()
        self.image_conv = nn.Conv2d(3, self.config.width, 3, padding=1)
        self.click_conv = nn.Conv2d(3, self.config.width, 3, padding=1)
        self.predict = nn.Conv2d(self.config.width, 1, 1)

    def encode_image(self, image: Tensor, points: Optional[Tensor] = None) -> Tensor:
        return self.image_conv(image)

    def decode(self, features: Tensor, points: Tensor, prev_mask: Optional[Tensor] = None) -> Tensor:
        if prev_mask is None:
            prev_mask = features.new_zeros(points.shape[0], 1, *features.shape[-2:])
        return self.predict(torch.relu(features + self.click_conv(encode_clicks(points, prev_mask))))

    def forward(self, x: Tensor, points: Tensor) -> Dict[str, Tensor]:
        return {"instances": self.decode(self.encode_image(x[:, :3]), points, x[:, 3:])}


def toy_config(variant: str) -> ToyConfig:
    if variant not in VARIANTS:
        raise ValueError(f"unknown toy variant {variant!r}")
    return VARIANTS[variant]


VARIANTS = {"toy": ToyConfig(), "wide": ToyConfig(width=16)}

FAMILY = ModelFamily(
    name="ToyNet", label="Toy", model_class=ToyNet, config_class=ToyConfig, variants=VARIANTS,
    build=lambda variant: ToyNet(toy_config(variant)), variant_config=toy_config,
    load_state=lambda model, state, source: load_strict(model, state, source, "ToyNet"),
    read_file=lambda obj, source, variant: None,
    predictor="isegm.inference.predictor:ritm_predictor", training_step="isegm.engine.steps:ClickTraining")
