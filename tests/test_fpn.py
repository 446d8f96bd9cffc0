"""The fast decoder (``fast_decoder``) equals the plain ``SimpleFPN`` and ``SegFormerHead``.

``FastFPN`` caches the skip half of each first layer and folds ``ConvT -> GroupNorm(1) -> 1x1``
runs; ``FastHead`` fuses each level at its own resolution and resizes with separable matrices.
Each is checked in float64 against the plain module's forward, with GroupNorm affines and input
offsets far from the defaults, and through backward.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from isegm.model.skipclick.fast_decoder import FastFPN, FastHead, foldable, resize_matrix
from isegm.model.skipclick.head import SegFormerHead
from isegm.model.skipclick.neck import SimpleFPN

GRID = (4, 6)
DIM = 32
LEVELS = (8, 16, 24, 32)


def _randomize_norms(module: nn.Module) -> None:
    for m in module.modules():   # GroupNorm affines of 1 / 0 would hide a wrong fold
        if isinstance(m, nn.GroupNorm):
            nn.init.normal_(m.weight)
            nn.init.normal_(m.bias)


def _fpn(skip: bool) -> SimpleFPN:
    torch.manual_seed(0)
    fpn = SimpleFPN(DIM, out_dims=LEVELS, skip_dim=DIM if skip else 0).double()
    _randomize_norms(fpn)
    return fpn


def _inputs(batch: int = 3):
    torch.manual_seed(1)
    n = GRID[0] * GRID[1]
    # a large common offset: variance from E[x^2] - mean^2 would lose most of its digits
    x = torch.randn(batch, n, DIM, dtype=torch.float64) + 20.0
    taps = [torch.randn(1, n, DIM, dtype=torch.float64) * 3 + 5 for _ in range(4)]   # 1 image, 3 click sets
    return x, taps


@pytest.mark.parametrize("skip", [True, False], ids=["skip", "no-skip"])
def test_fast_fpn_equals_plain(skip):
    fpn = _fpn(skip)
    fast = FastFPN(fpn)
    x, taps = _inputs()
    cache = fast.precompute(taps if skip else None, GRID)
    # down_4's second ConvT and down_8's first ConvT are folded; nothing else is
    assert [sorted(c.folds) for c in cache] == [[3], [0], [], []]
    ours = fast(x, GRID, cache)
    for level, (a, b) in enumerate(zip(ours, fpn(x, GRID, taps if skip else None))):
        assert a.shape == b.shape
        assert torch.allclose(a, b, rtol=0, atol=1e-10), f"level {level}: {(a - b).abs().max():.3g}"


def test_fast_fpn_gradients_equal_plain():
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

    fast = FastFPN(fpn)
    gx, gp = grads(fast(x, GRID, fast.precompute(taps, GRID)))
    rx, rp = grads(fpn(x, GRID, taps))
    assert torch.allclose(gx, rx, atol=1e-9)
    for name in rp:
        assert torch.allclose(gp[name], rp[name], atol=1e-9), name


def test_fast_decoder_uses_the_live_parameters():
    """No copies: weights loaded after construction are the ones the fast forms run with, and
    the fast modules add nothing to the state dict."""
    fpn, head = _fpn(skip=True), SegFormerHead(LEVELS, channels=16).double()
    fast_fpn, fast_head = FastFPN(fpn), FastHead(head)
    assert not list(fast_fpn.parameters()) and not fast_fpn.state_dict()
    assert not list(fast_head.parameters()) and not fast_head.state_dict()
    other = _fpn(skip=True)
    torch.manual_seed(4)
    _randomize_norms(other)
    fpn.load_state_dict(other.state_dict())
    x, taps = _inputs()
    for a, b in zip(fast_fpn(x, GRID, fast_fpn.precompute(taps, GRID)), other(x, GRID, taps)):
        assert torch.allclose(a, b, rtol=0, atol=1e-10)


def test_fpn_needs_its_skip_inputs():
    fpn = _fpn(skip=True)
    x, taps = _inputs()
    for module in (fpn, FastFPN(fpn)):
        with pytest.raises(ValueError, match="skip connections"):
            module(x, GRID)
    with pytest.raises(ValueError, match="4 tapped maps"):
        FastFPN(fpn).precompute(taps[:2], GRID)
    with pytest.raises(ValueError, match="4 tapped maps"):
        fpn(x, GRID, taps[:2])


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


def _head_inputs(batch: int = 2):
    return [torch.randn(batch, c, 16 // 2 ** i, 24 // 2 ** i, dtype=torch.float64) for i, c in enumerate(LEVELS)]


def test_head_fusion_equals_concatenated_form():
    torch.manual_seed(3)
    head = SegFormerHead(LEVELS, channels=16).double()
    inputs = _head_inputs()
    size = inputs[0].shape[-2:]
    parts = [F.interpolate(level(x), size=size, mode="bilinear", align_corners=False)
             for level, x in zip(head.convs, inputs)]
    ref = head.fusion_conv(torch.cat(parts, 1))
    assert torch.allclose(head.fuse(inputs), ref, rtol=0, atol=1e-12)
    assert torch.allclose(FastHead(head).fuse(inputs), ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("upsample", ["x1", "x2", "x4"])
def test_fast_head_equals_plain(upsample):
    torch.manual_seed(5)
    head = SegFormerHead(LEVELS, channels=16, upsample=upsample).double().eval()
    _randomize_norms(head)
    inputs = [x.requires_grad_(True) for x in _head_inputs()]

    def run(module):
        out = module(inputs)
        head.zero_grad()
        for x in inputs:
            x.grad = None
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        return out.detach(), [x.grad.clone() for x in inputs], {n: p.grad.clone() for n, p in head.named_parameters()
                                                               if p.grad is not None}

    out, gx, gp = run(FastHead(head))
    ref, rx, rp = run(head)
    assert out.shape == ref.shape == (2, 1, 16 * int(upsample[1]), 24 * int(upsample[1]))
    assert torch.allclose(out, ref, rtol=0, atol=1e-10), (out - ref).abs().max()
    assert all(torch.allclose(a, b, rtol=0, atol=1e-9) for a, b in zip(gx, rx))
    assert gp.keys() == rp.keys()
    for name in rp:
        assert torch.allclose(gp[name], rp[name], rtol=0, atol=1e-9), name
