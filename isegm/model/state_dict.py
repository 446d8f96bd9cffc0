"""Strict state-dict loading whose errors name the file and what does not fit."""
from __future__ import annotations

from typing import Mapping

from torch import Tensor, nn


def load_strict(model: nn.Module, state: Mapping[str, Tensor], source: str, what: str) -> nn.Module:
    """Load ``state`` into ``model`` with ``strict=True``; missing / unexpected keys or shape
    mismatches raise ``ValueError`` naming ``source`` (the file) and ``what`` (the model and its
    config), so a wrong file is never loaded half-way silently."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise ValueError(f"{source!r} does not fit {what}: {len(missing)} missing keys {missing[:5]}, "
                         f"{len(unexpected)} unexpected keys {unexpected[:5]}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:   # shape mismatches
        raise ValueError(f"{source!r} does not fit {what}: {err}") from None
    return model
