"""Click-training steps: what one training forward is, per model family.

A step is a module (so DistributedDataParallel sees the whole step as its forward), called as
``step(images, points, gt, num_clicks, rng) -> (outputs, points)``: ``num_clicks`` simulated
clicks without gradients, then the prediction with gradients. ``outputs`` is the logits
``[B, 1, H, W]`` of a family with one output, or a dict of named logits whose ``'instances'`` is
the final prediction (a ``MultiTermLoss`` reads the others). ``Step.from_config(model, config)``
builds it from the trainer's settings.

The trainer takes a model's step from its family's registry record (``click_step_for``,
``isegm.model.families``); a model of no registered family trains with ``ClickTraining``, which
needs only the RITM family's ``model(cat([image, prev_mask], 1), points)['instances']`` (and
``encode_image`` / ``decode`` for feature reuse, with ``stochastic_encoding`` to say whether the
encoding is random in train mode, so that one encoding can serve the clicks and the prediction).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from ..model.families import family_of
from .click_simulation import add_next_clicks

if TYPE_CHECKING:
    from .trainer import TrainerConfig


class ClickTraining(nn.Module):
    """The RITM / SimpleClick / SkipClick step: encode once, simulated clicks without gradients,
    each from the previous prediction fed back as the previous mask, then the trained prediction."""

    def __init__(self, model: nn.Module, max_num_next_clicks: int, reuse_features: bool = True,
                 polarity: str = "larger") -> None:
        super().__init__()
        self.model = model
        self.max_num_next_clicks = max_num_next_clicks
        self.reuse_features = reuse_features
        self.polarity = polarity

    @classmethod
    def from_config(cls, model: nn.Module, config: "TrainerConfig") -> "ClickTraining":
        return cls(model, config.max_num_next_clicks, config.reuse_features, config.click_polarity)

    def forward(self, images: Tensor, points: Tensor, gt: Tensor, num_clicks: int,
                rng: np.random.Generator) -> Tuple[Tensor, Tensor]:
        """Logits ``[B, 1, H, W]`` after ``num_clicks`` extra clicks, and the points used.

        As the authors' trainer: the simulated clicks come from the model in eval mode, the
        trained prediction from the model in its own mode. With ``reuse_features`` one encoding
        serves both where that is exact; a model in train mode whose encoding is random there
        (``stochastic_encoding``) is encoded twice: in eval mode without gradients for the clicks,
        in train mode (its own random draw) for the prediction.
        """
        model = self.model
        prev = images.new_zeros(images.shape[0], 1, *images.shape[-2:])
        shared = self.reuse_features and not (model.training and stochastic_encoding(model))
        features = model.encode_image(images) if shared else None
        if num_clicks:
            was_training = model.training
            model.eval()   # the simulated user sees the model as it predicts (no dropout, no RoPE jitter)
            with torch.no_grad():
                click_features = features
                if click_features is None and self.reuse_features:
                    click_features = model.encode_image(images)
                for click_index in range(1, num_clicks + 1):
                    logits = model.decode(click_features, points, prev) if click_features is not None else \
                        model(torch.cat([images, prev], 1), points)["instances"]
                    prev = torch.sigmoid(logits.float())
                    points = add_next_clicks(prev, gt, points, click_index, rng, polarity=self.polarity)
            model.train(was_training)
        if self.reuse_features and features is None:
            features = model.encode_image(images)
        if features is None:
            return model(torch.cat([images, prev], 1), points)["instances"], points
        return model.decode(features, points, prev), points


def stochastic_encoding(model: nn.Module) -> bool:
    """Whether ``model.encode_image`` in train mode may differ from eval mode (the model's
    ``stochastic_encoding``; True for a model that does not say, so that reuse stays exact)."""
    return bool(getattr(model, "stochastic_encoding", True))


def click_step_for(model: nn.Module, config: "TrainerConfig") -> nn.Module:
    """The training step of ``model``'s family (``ClickTraining`` for a model of none)."""
    family = family_of(model)
    if family is None:
        return ClickTraining.from_config(model, config)
    return family.make_training_step(model, config)
