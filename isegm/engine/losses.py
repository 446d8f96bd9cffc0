"""Training losses of the RITM family.

``NormalizedFocalLossSigmoid`` is the loss every SkipClick model file trains with
(``alpha=0.5, gamma=2``): a focal loss whose focusing weights ``(1 - p_t)^gamma`` are rescaled
per sample to sum to the number of labelled pixels, so the loss does not fade as the
prediction improves (Sofiiuk et al., "AdaptIS", 2019).

``MultiTermLoss`` combines criteria on several named outputs of one training step (EMC-Click:
the normalized focal loss on the base network's coarse output and on the refined output, and
0.4 x ``SigmoidBinaryCrossEntropyLoss`` on HRNet-OCR's auxiliary output).
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
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


class SigmoidBinaryCrossEntropyLoss(nn.Module):
    """Per-sample binary cross-entropy ``[B]`` of logits against labels ``[B, 1, H, W]``: the mean
    over all pixels, an ignored pixel counting as a zero loss (the family's definition)."""

    def __init__(self, ignore_label: int = IGNORE_LABEL) -> None:
        super().__init__()
        self.ignore_label = ignore_label

    def forward(self, logits: Tensor, label: Tensor) -> Tensor:
        logits, label = logits.float(), label.float()
        valid = label != self.ignore_label
        target = torch.where(valid, label, torch.zeros_like(label))
        loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none") * valid
        return loss.mean(dim=tuple(range(1, loss.dim())))


class MultiTermLoss(nn.Module):
    """A weighted sum of criteria, each on one named output of a training step.

    ``terms``: ``(name, output_key, criterion, weight)``. ``forward(outputs, label)`` returns the
    per-sample total ``[B]`` and each term's unweighted per-sample loss ``{name: [B]}`` (what the
    trainer logs).
    """

    def __init__(self, terms: Sequence[Tuple[str, str, nn.Module, float]]) -> None:
        super().__init__()
        if not terms:
            raise ValueError("MultiTermLoss needs at least one (name, output_key, criterion, weight) term")
        self.criteria = nn.ModuleDict({name: criterion for name, _, criterion, _ in terms})
        self.output_keys = {name: key for name, key, _, _ in terms}
        self.weights = {name: float(weight) for name, _, _, weight in terms}

    def forward(self, outputs: Mapping[str, Tensor], label: Tensor) -> Tuple[Tensor, Dict[str, Tensor]]:
        missing = sorted({key for key in self.output_keys.values() if key not in outputs})
        if missing:
            raise KeyError(f"the loss reads the outputs {missing}, the training step gave {sorted(outputs)}")
        terms = {name: criterion(outputs[self.output_keys[name]].float(), label)
                 for name, criterion in self.criteria.items()}
        total = sum(self.weights[name] * value for name, value in terms.items())
        return total, terms
