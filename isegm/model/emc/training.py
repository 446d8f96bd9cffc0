"""EMC-Click's training forward, as the authors' trainer runs it (``ISTrainer.batch_forward`` of
``isegm/engine/clickatt_trainer_batchconsistant.py``, github.com/feiaxyt/EMC-Click at e660ad0).

Per batch:

1. only the sampled first clicks (index 0) are kept;
2. without gradients and in eval mode, the base network runs once on the image and the first
   click; then for each simulated click the correction network refines, fed back its own
   previous refined 1/4-resolution logits (the coarse logits the first time), and one more
   click goes into the error, written into the next free row of its polarity as theirs
   (``add_next_clicks_per_polarity``);
3. with gradients and in train mode, the base network runs again on the same image and first
   click (its output does not depend on the later clicks), and the correction network takes all
   clicks with the last refined logits of step 2 as its previous mask (the fresh coarse logits,
   detached, when step 2 simulated nothing).

Outputs for the loss: ``instances`` (refined logits, H x W), ``coarse`` (the base network's
logits, H x W) and for HRNet ``aux`` (OCR's soft-region logits, H x W), all upsampled bilinearly
with ``align_corners=True`` as the authors do.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from .model import EMCClick, EMCState
from .corrector import resize_ac
from .model import first_click_points
from ...engine.click_simulation import add_next_clicks_per_polarity

if TYPE_CHECKING:
    from ...engine.trainer import TrainerConfig


class EMCClickTraining(nn.Module):
    """One EMC-Click training forward (see the module docstring). A module so that
    DistributedDataParallel sees the whole step as its forward. ``polarity``: the simulated
    clicks' rule (``add_next_clicks_per_polarity``; the authors' is ``proportional``)."""

    def __init__(self, model: EMCClick, polarity: str = "proportional") -> None:
        super().__init__()
        self.model = model
        self.polarity = polarity

    @classmethod
    def from_config(cls, model: EMCClick, config: "TrainerConfig") -> "EMCClickTraining":
        return cls(model, config.click_polarity)

    def forward(self, images: Tensor, points: Tensor, gt: Tensor, num_clicks: int,
                rng: np.random.Generator) -> Tuple[Dict[str, Tensor], Tensor]:
        """Outputs ``{'instances', 'coarse'[, 'aux']}`` (logits ``[B, 1, H, W]``) after ``num_clicks``
        simulated clicks, and the points ``[B, 2N, 3]`` used."""
        model = self.model
        points = first_click_points(points)
        prev_logits_lr = None
        if num_clicks:
            was_training = model.training
            model.eval()   # the simulated user sees the model as it predicts (BN statistics, no dropout)
            with torch.no_grad():
                state = model.encode_image(images, points)
                for _ in range(num_clicks):
                    logits = model.correct(state, points).logits
                    points = add_next_clicks_per_polarity(torch.sigmoid(logits.float()), gt, points, rng,
                                                          polarity=self.polarity)
                prev_logits_lr = state.prev_logits_lr
            model.train(was_training)
        image, base = model.run_base(images, points)
        coarse_lr = base["instances_lr"]
        state = EMCState(image, base["feature"], coarse_lr,
                         coarse_lr.detach() if prev_logits_lr is None else prev_logits_lr)
        size = tuple(images.shape[-2:])
        outputs = {"instances": model.correct(state, points).logits, "coarse": resize_ac(coarse_lr, size)}
        if "instances_aux" in base:
            outputs["aux"] = resize_ac(base["instances_aux"], size)
        return outputs, points
