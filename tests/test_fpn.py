"""The neck's and head's per-click rewrites equal the plain layers they replace.

``SimpleFPN`` caches the skip half of each first layer and folds ``ConvT -> GroupNorm(1) -> 1x1``
runs (``norm_fold``); the head resizes with separable matrices. Each is checked in float64
against the module's own ``nn.Sequential`` / ``F.interpolate`` evaluated the plain way, with
GroupNorm affines and input offsets far from the defaults, and through backward.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from isegm.model.skipclick.head import SegFormerHead, resize_matrix
from isegm.model.skipclick.neck import SimpleFPN
from isegm.model.skipclick.norm_fold import foldable

GRID = (4, 6)
DIM = 32


def _fpn(skip: bool) -> SimpleFPN:
    torch.manual_seed(0)
    fpn = SimpleFPN(DIM, out_dims=(8, 16, 24, 32), skip_dim=DIM if skip else 0).double()
    for m in fpn.modules():   # GroupNorm affines of 1 / 0 would hide a wrong fold
        if isinstance(m, nn.GroupNorm):
            nn.init.normal_(m.weight)
            nn.init.normal_(m.bias)
    return fpn


def _inputs(batch: int = 3):
    torch.manual_seed(1)
    n = GRID[0] * GRID[1]
    # a large common offset: variance from E[x^2] - mean^2 would lose most of its digits
    x = torch.randn(batch, n, DIM, dtype=torch.float64) + 20.0
    taps = [torch.randn(1, n, DIM, dtype=torch.float64) * 3 + 5 for _ in range(4)]
    return x, taps


def _plain(fpn: SimpleFPN, x, taps, skip: bool):
    """Every branch as an ordinary NCHW ``nn.Sequential`` on ``cat([x, tap])``."""
    x = x.transpose(1, 2).reshape(x.shape[0], -1, *GRID)
    outs = []
    for branch, tap in zip(fpn.branches, taps):
        tap = tap.transpose(1, 2).reshape(1, -1, *GRID).expand(x.shape[0], -1, -1, -1)
        outs.append(branch(torch.cat([x, tap], 1) if skip else x))
    return outs


@pytest.mark.parametrize("skip", [True, False], ids=["skip", "no-skip"])
def test_fpn_equals_plain_branches(skip):
    fpn = _fpn(skip)
    x, taps = _inputs()
    cache = fpn.precompute(taps if skip else None, GRID)
    # down_4's second ConvT and down_8's first ConvT are folded; nothing else is
    assert [sorted(c.folds) for c in cache] == [[3], [0], [], []]
    ours = fpn(x, GRID, cache)
    for level, (a, b) in enumerate(zip(ours, _plain(fpn, x, taps, skip))):
        assert a.shape == b.shape
        assert torch.allclose(a, b, rtol=0, atol=1e-10), f"level {level}: {(a - b).abs().max():.3g}"


def test_fpn_gradients_equal_plain_branches():
    """Training backpropagates through the folded form: same gradients for inputs and weights."""
    fpn = _fpn(skip=True)
    x, taps = _inputs(batch=2)
    x.requires_grad_(True)

    def grads(outputs):
        loss = sum((o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype).view_as(o)).sum() for o in outputs)
        fpn.zero_grad()
        x.grad = None
        loss.backward()
        return x.grad.clone(), {n: p.grad.clone() for n, p in fpn.named_parameters()}

    gx, gp = grads(fpn(x, GRID, fpn.precompute(taps, GRID)))
    rx, rp = grads(_plain(fpn, x, taps, skip=True))
    assert torch.allclose(gx, rx, atol=1e-9)
    for name in rp:
        assert torch.allclose(gp[name], rp[name], atol=1e-9), name


def test_fpn_needs_its_skip_inputs():
    fpn = _fpn(skip=True)
    x, taps = _inputs()
    with pytest.raises(ValueError, match="skip connections"):
        fpn(x, GRID)
    with pytest.raises(ValueError, match="4 tapped maps"):
        fpn.precompute(taps[:2], GRID)


def test_only_expanding_norm_runs_fold():
    fpn = _fpn(skip=False)
    assert foldable(fpn.down_4, 3) and foldable(fpn.down_8, 0)
    assert not foldable(fpn.down_4, 0)      # ConvT -> GN -> GELU: a nonlinearity in between
    assert not foldable(fpn.down_32, 0)     # a stride-2 conv shrinks: folding would not save work
    assert not foldable(fpn.down_16, 0)


def test_resize_matrices_equal_bilinear_interpolation():
    torch.manual_seed(2)
    x = torch.randn(2, 3, 7, 12)
    for size in [(28, 48), (16, 20), (7, 12)]:
        ref = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        ours = resize_matrix(7, size[0], x) @ x @ resize_matrix(12, size[1], x).t()
        assert torch.allclose(ours, ref, rtol=0, atol=1e-6), size


def test_head_fusion_equals_concatenated_form():
    torch.manual_seed(3)
    head = SegFormerHead((8, 16, 24, 32), channels=16).double()
    inputs = [torch.randn(2, c, 16 // 2 ** i, 24 // 2 ** i, dtype=torch.float64) for i, c in enumerate((8, 16, 24, 32))]
    size = inputs[0].shape[-2:]
    parts = [F.interpolate(level(x), size=size, mode="bilinear", align_corners=False)
             for level, x in zip(head.convs, inputs)]
    ref = head.fusion_conv(torch.cat(parts, 1))
    assert torch.allclose(head.fuse(inputs), ref, rtol=0, atol=1e-12)
