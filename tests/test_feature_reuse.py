"""Feature reuse in the click-training step is exact for every backbone: the simulated clicks and
the previous masks fed to the trained prediction equal those of the full network run per click
(the authors' trainer: simulated clicks in eval mode, the trained prediction in train mode), for
DINOv2 (one encoding per batch) and DINOv3 (whose RoPE rescaling is random in train mode)."""
from __future__ import annotations

import functools
from typing import Dict, List

import numpy as np
import pytest
import torch
from torch import nn

from isegm.engine.steps import ClickTraining, stochastic_encoding
from isegm.model import SkipClick, build_skipclick
from isegm.model.backbones import DinoV2, DinoV3
from training_toys import Rectangles, tiny_model

NUM_CLICKS = 3


def with_active_blocks(model: SkipClick) -> SkipClick:
    """``model`` with its backbone's LayerScales at 1: at their initial 1e-5 the blocks barely
    change the tokens, and a difference in RoPE tables would not show in the predictions."""
    with torch.no_grad():
        for name, param in model.feature_extractor.named_parameters():
            if name.endswith(".gamma"):
                param.fill_(1.0)
    return model


def tiny_dinov2() -> SkipClick:
    """A SkipClick on a (random) DINOv2 ViT-S/14 with a one-block fusion stack, 2x2 tokens."""
    return with_active_blocks(tiny_model())


@functools.lru_cache(maxsize=None)
def tiny_dinov3() -> SkipClick:
    """A SkipClick on a (random) DINOv3 ViT-B/16 with a one-block fusion stack, 2x2 tokens; built
    once (the tests set its mode and never change its weights)."""
    torch.manual_seed(0)
    return with_active_blocks(build_skipclick("skipclick_dinov3", fusion_depth=1, fpn_dims=(16, 32, 64, 128),
                                              head_channels=16, train_size=(32, 32)))


MODELS = {"dinov2": (tiny_dinov2, 28), "dinov3": (tiny_dinov3, 32)}


def batch_of(size: int) -> Dict[str, torch.Tensor]:
    data = Rectangles(n=2, size=size)
    items = [data[i] for i in range(2)]
    return {k: torch.stack([item[k] for item in items]) for k in items[0]}


@functools.lru_cache(maxsize=None)
def run_step(backbone: str, reuse: bool):
    """One training step of the ``backbone`` model in train mode (torch seed 0, click seed 1): its
    logits and points, the click maps (positive / negative disks + previous mask) of every decode,
    and per RoPE call the mode it ran in and its tables."""
    make, size = MODELS[backbone]
    model, batch = make().train(), batch_of(size)
    click_maps: List[torch.Tensor] = []
    rope_calls: List[tuple] = []
    hooks = [model.patch_embed_coords.register_forward_pre_hook(lambda m, args: click_maps.append(args[0].clone()))]
    vit = model.feature_extractor.vit
    if isinstance(vit, DinoV3):
        hooks.append(vit.rope_embed.register_forward_hook(
            lambda m, args, out: rope_calls.append((m.training, torch.cat(out)))))
    try:
        torch.manual_seed(0)
        logits, points = ClickTraining(model, NUM_CLICKS, reuse_features=reuse)(
            batch["images"], batch["points"], batch["instances"], NUM_CLICKS, np.random.default_rng(1))
    finally:
        for hook in hooks:
            hook.remove()
    assert model.training
    return logits.detach(), points, click_maps, rope_calls


@pytest.mark.parametrize("backbone", sorted(MODELS))
def test_reuse_gives_the_clicks_and_masks_of_the_full_network_per_click(backbone):
    logits_a, points_a, maps_a, _ = run_step(backbone, reuse=True)
    logits_b, points_b, maps_b, _ = run_step(backbone, reuse=False)
    assert torch.equal(points_a, points_b) and (points_a[:, :, 2] >= 1).any()
    # One decode per simulated click, then the trained one: the same inputs bit for bit, the
    # previous mask fed to the trained prediction included (the same computation either way).
    assert len(maps_a) == len(maps_b) == NUM_CLICKS + 1
    assert all(torch.equal(a, b) for a, b in zip(maps_a, maps_b))
    assert maps_a[-1][:, 2].abs().sum() > 0
    assert torch.equal(logits_a, logits_b)


def test_dinov3_rope_jitter_reaches_the_trained_prediction_only():
    """The simulated clicks see eval-mode RoPE tables; the trained prediction gets its own
    train-mode draw, the same draw as the full network per click makes."""
    calls_reuse, calls_full = run_step("dinov3", reuse=True)[3], run_step("dinov3", reuse=False)[3]
    assert [training for training, _ in calls_reuse] == [False, True]
    assert [training for training, _ in calls_full] == [False] * NUM_CLICKS + [True]
    eval_tables = calls_full[0][1]
    assert all(torch.equal(tables, eval_tables) for _, tables in calls_reuse[:-1] + calls_full[:-1])
    assert not torch.allclose(calls_reuse[-1][1], eval_tables)          # the jitter is there
    assert torch.equal(calls_reuse[-1][1], calls_full[-1][1])           # and is the same draw


@pytest.mark.parametrize("backbone, mode, num_clicks, encodings", [
    ("dinov2", "train", NUM_CLICKS, 1),   # exact with one encoding: the speed gain stays
    ("dinov3", "train", NUM_CLICKS, 2),   # eval-mode encoding for the clicks, train-mode for the loss
    ("dinov3", "train", 0, 1),            # no simulated click, nothing to encode twice
    ("dinov3", "eval", NUM_CLICKS, 1),    # no jitter in eval mode
])
def test_encodings_per_step(backbone, mode, num_clicks, encodings):
    make, size = MODELS[backbone]
    model, batch = make().train(mode == "train"), batch_of(size)
    calls = []
    hook = model.feature_extractor.register_forward_hook(lambda m, args, out: calls.append(m.training))
    try:
        ClickTraining(model, NUM_CLICKS)(batch["images"], batch["points"], batch["instances"], num_clicks,
                                         np.random.default_rng(1))
    finally:
        hook.remove()
    assert calls == [False] * (encodings - 1) + [mode == "train"]


def test_backbones_say_whether_train_mode_is_random():
    assert not DinoV2(patch_size=14, embed_dim=32, depth=1, num_heads=2).stochastic_in_training
    dinov3 = DinoV3(embed_dim=32, depth=1, num_heads=2)
    assert dinov3.stochastic_in_training
    dinov3.rope_embed.rescale_coords = None
    assert not dinov3.stochastic_in_training
    assert not tiny_model().stochastic_encoding and tiny_dinov3().stochastic_encoding
    assert stochastic_encoding(nn.Identity())          # a model that does not say is encoded twice
