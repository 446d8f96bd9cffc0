"""Training losses of the RITM family.

``NormalizedFocalLossSigmoid`` is the loss every SkipClick model file trains with
(``alpha=0.5, gamma=2``): a focal loss whose focusing weights ``(1 - p_t)^gamma`` are rescaled
per sample to sum to the number of labelled pixels, so the loss does not fade as the
prediction improves (Sofiiuk et al., "AdaptIS", 2019).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

IGNORE_LABEL = -1


class NormalizedFocalLossSigmoid(nn.Module):
    """Per-sample loss ``[B]`` of logits ``[B, 1, H, W]`` against labels ``[B, 1, H, W]`` (1 object,
    0 background, ``ignore_label`` not counted).

    ``detach_delimiter``: the normalising factor is a constant for the gradient (the family's
    default). ``max_mult > 0`` caps the rescaled weights. ``size_average``: divide each sample's
    sum by its labelled pixel count.
    """

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0, max_mult: float = -1, eps: float = 1e-12,
                 detach_delimiter: bool = True, weight: Optional[float] = None, size_average: bool = True,
                 ignore_label: int = IGNORE_LABEL) -> None:
        super().__init__()
        self.alpha, self.gamma, self.max_mult, self.eps = alpha, gamma, max_mult, eps
        self.detach_delimiter, self.size_average, self.ignore_label = detach_delimiter, size_average, ignore_label
        self.weight = 1.0 if weight is None else weight
        # Running statistics for logging only: the mean normalising factor of samples without
        # ignored pixels, and the mean of each sample's largest weight.
        self.k_sum = 0.0
        self.m_max = 0.0

    def forward(self, logits: Tensor, label: Tensor) -> Tensor:
        dims = tuple(range(1, logits.dim()))
        prob = torch.sigmoid(logits.float())
        label = label.float()
        one_hot = label > 0.5
        valid = label != self.ignore_label
        alpha = torch.where(one_hot, self.alpha * valid, (1 - self.alpha) * valid)
        pt = torch.where(valid, 1.0 - (label - prob).abs(), torch.ones_like(prob))
        beta = (1 - pt) ** self.gamma
        mult = valid.sum(dim=(-2, -1), keepdim=True) / (beta.sum(dim=(-2, -1), keepdim=True) + self.eps)
        if self.detach_delimiter:
            mult = mult.detach()
        beta = beta * mult
        if self.max_mult > 0:
            beta = beta.clamp_max(self.max_mult)
        self._update_statistics(label, mult, beta)
        # log(min(pt + eps, 1)): pt + eps may exceed 1 by rounding
        loss = -alpha * beta * torch.log((pt + self.eps).clamp_max(1.0))
        loss = self.weight * loss * valid
        if self.size_average:
            return loss.sum(dim=dims) / (valid.sum(dim=dims) + self.eps)
        return loss.sum(dim=dims)

    @torch.no_grad()
    def _update_statistics(self, label: Tensor, mult: Tensor, beta: Tensor) -> None:
        no_ignore = (label == self.ignore_label).flatten(1).sum(1) == 0
        if no_ignore.any():
            self.k_sum = 0.9 * self.k_sum + 0.1 * mult.flatten(1).mean(1)[no_ignore].mean().item()
            self.m_max = 0.8 * self.m_max + 0.2 * beta.flatten(1).max(1).values.mean().item()
