"""The RITM family's ``isegm.inference.utils`` entry point, so that its users' scripts keep working."""
from __future__ import annotations

import os
from typing import Union

import torch
from torch import nn

from ..model.checkpoint import load_checkpoint


def load_is_model(checkpoint: Union[str, "os.PathLike[str]"], device: Union[str, torch.device] = "cpu",
                  eval_ritm: bool = False) -> nn.Module:
    """A ready model from a checkpoint file, as the family's ``load_is_model(checkpoint, device,
    eval_ritm)`` gives it: any file ``isegm.model.load_checkpoint`` reads (SkipClick's and
    EMC-Click's releases, our checkpoints). ``eval_ritm`` changes nothing in loading; the RITM
    evaluation protocol is ``get_predictor(..., model_kind='ritm')``."""
    if not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(f"load_is_model takes a checkpoint path, got a {type(checkpoint).__name__}; "
                        "a loaded state dict goes to model.load_state_dict")
    return load_checkpoint(checkpoint, device=device)
