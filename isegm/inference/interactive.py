"""The evaluation chain set up for interactive use (the Python ``Predictor`` and the annotation
app): the whole image at the family's network size, flip TTA and the zoom-in off unless asked for.
"""
from __future__ import annotations

import os
import warnings
from typing import Callable, ContextManager, Optional, Tuple, Union

import torch

from ..model.families import family_of
from ..utils.device import device_name, precision, select_device, select_dtype
from .engine import ClickPredictor
from .predictor import get_predictor


def interactive_predictor(model: torch.nn.Module, size: Optional[int] = None, flip: bool = False,
                          zoom_in: bool = False, device: Union[str, torch.device] = "cpu") -> ClickPredictor:
    """The model family's evaluation predictor (``get_predictor``) on the whole image.

    ``size``: the network input as the family's ``fixed<size>`` eval mode reads it (SkipClick:
    ``size`` x ``size``, a multiple of the patch size; EMC-Click: the short side); None: the
    family's default (SkipClick 448, EMC-Click a short side of 384). ``flip``: flip TTA (twice the
    per-click work). ``zoom_in``: crop around the object after the first click (the RITM protocol's
    zoom-in; SkipClick's official evaluation suppresses it)."""
    patch = getattr(model, "patch_size", 1)
    if size is not None and (size <= 0 or size % patch):
        nearest = max(patch, round(size / patch) * patch)
        raise ValueError(f"size {size} is not a positive multiple of the model's patch size {patch}; "
                         f"use e.g. {nearest}")
    eval_mode = "cvpr" if size is None else f"fixed{size}"
    return get_predictor(model, eval_mode=eval_mode, suppress_zoom=not zoom_in, with_flip=flip, device=device)


def torch_engine(model: Union[torch.nn.Module, str, "os.PathLike[str]"], device: Optional[str] = None,
                 dtype: Optional[str] = None, size: Optional[int] = None, flip: bool = False,
                 zoom_in: bool = False) -> Tuple[ClickPredictor, Callable[[], ContextManager], str]:
    """A model or a checkpoint file (any family ``load_checkpoint`` reads) as an interactive
    predictor, the precision context to run it in, and a one-line description.

    ``device``: None = the model's own device for a model, else cuda when available. ``dtype``:
    fp32 (default), bf16 or fp16 (autocast; a warning when this CPU has no hardware support)."""
    torch_dtype = select_dtype(dtype)
    if isinstance(model, torch.nn.Module):
        if device is None:
            first = next(model.parameters(), None)
            device = str(first.device) if first is not None else None
        target = select_device(device)
        model = model.to(target).eval()
    else:
        from ..model.checkpoint import load_checkpoint
        target = select_device(device)
        model = load_checkpoint(model, device=target)
    family = family_of(model)
    name = family.name if family is not None else type(model).__name__
    context, notice = precision(target, torch_dtype)
    if notice:
        warnings.warn(notice, stacklevel=3)
    predictor = interactive_predictor(model, size, flip, zoom_in, target)
    return predictor, context, describe(name, size, dtype or "fp32", flip, target, zoom_in)


def describe(name: str, size: Optional[int], dtype: str, flip: bool, device: torch.device,
             zoom_in: bool = False) -> str:
    """One line naming a model and how it runs (the app's banner, ``Predictor.description``)."""
    return (f"{name}, {'default size' if size is None else f'{size} px'}, {dtype}{', flip TTA' if flip else ''}"
            f"{', zoom-in' if zoom_in else ''}, {device.type} ({device_name(device)})")
