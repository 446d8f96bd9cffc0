"""Optimizers of the family's trainers: the trainable parameters only (a frozen backbone has
``requires_grad=False`` and stays out), optionally with layer-wise learning-rate decay over the
fusion stack (``train.py --layerwise-decay``, SimpleClick's MAE-style rule) or with learning-rate
multipliers by parameter-name prefix (EMC-Click's backbone at 0.1x, the authors' ``LRMult``)."""
from __future__ import annotations

import re
from typing import Any, Dict, List, Sequence, Tuple

import torch
from torch import nn

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
LAYER_DECAY = 0.75
DECAY_WEIGHT_DECAY = 0.02


def get_optimizer(model: nn.Module, name: str, params: Dict[str, Any], layerwise_decay: bool = False,
                  lr_mults: Sequence[Tuple[str, float]] = ()) -> torch.optim.Optimizer:
    """``name`` (adam, adamw, sgd) over the parameters that require gradients, ``params`` its
    keyword arguments (``lr``, ``betas``, ...). ``lr_mults``: see ``lr_mult_groups``."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")
    if layerwise_decay and lr_mults:
        raise ValueError("layer-wise decay and learning-rate multipliers (the recipe's lr_mults) do not combine; "
                         "drop --layerwise-decay or the recipe's lr_mults")
    if layerwise_decay:
        groups = layer_decay_groups(model, params["lr"])
    elif lr_mults:
        groups = lr_mult_groups(model, params["lr"], lr_mults)
    else:
        groups = [{"params": [p for p in model.parameters() if p.requires_grad]}]
    return OPTIMIZERS[name](groups, **params)


def lr_mult_groups(model: nn.Module, lr: float, lr_mults: Sequence[Tuple[str, float]]) -> List[Dict[str, Any]]:
    """One group per multiplier, with ``lr * multiplier``: ``lr_mults`` is ``(name prefix,
    multiplier)`` pairs, the longest matching prefix deciding; other parameters get 1. The
    full-rate group comes first (it is the one the trainer logs)."""
    by_mult: Dict[float, List[nn.Parameter]] = {1.0: []}
    ordered = sorted(lr_mults, key=lambda rule: len(rule[0]), reverse=True)
    for name, param in model.named_parameters():
        if param.requires_grad:
            mult = next((float(m) for prefix, m in ordered if name.startswith(prefix)), 1.0)
            by_mult.setdefault(mult, []).append(param)
    return [{"params": ps, "lr": lr * mult} for mult, ps in by_mult.items() if ps]


def _layer_id(name: str, num_layers: int) -> int:
    """0 for the click embedding and position table, ``i + 1`` for fusion block ``i``, and
    ``num_layers`` (full rate) for everything after the stack."""
    if name.startswith(("patch_embed_coords.", "backbone_mix.pos_embed")):
        return 0
    match = re.match(r"backbone_mix\.blocks\.(\d+)\.", name)
    return int(match.group(1)) + 1 if match else num_layers


def layer_decay_groups(model: nn.Module, lr: float) -> List[Dict[str, Any]]:
    """Parameter groups with ``lr * 0.75 ** (num_layers - layer_id)``; weight decay 0.02 except on
    biases, norms and the position table (one group per layer and decay setting)."""
    num_layers = len(model.backbone_mix.blocks) + 1
    groups: Dict[tuple, Dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        layer = _layer_id(name, num_layers)
        no_decay = param.ndim == 1 or name.endswith("pos_embed")
        group = groups.setdefault((layer, no_decay), {
            "params": [], "lr": lr * LAYER_DECAY ** (num_layers - layer),
            "weight_decay": 0.0 if no_decay else DECAY_WEIGHT_DECAY})
        group["params"].append(param)
    return list(groups.values())
