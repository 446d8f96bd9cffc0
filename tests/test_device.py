"""The precision contexts of ``isegm.utils.device``: what fp32, bf16 and fp16 mean on each device."""
from __future__ import annotations

import torch

from isegm.utils.device import precision


def test_fp32_on_cuda_turns_off_tf32_convolutions_and_restores_them() -> None:
    # cuDNN's flags are plain settings: the context can be checked without a GPU
    cudnn = torch.backends.cudnn
    before = (cudnn.allow_tf32, cudnn.benchmark, cudnn.deterministic, cudnn.enabled)
    context, notice = precision(torch.device("cuda"), torch.float32)
    assert notice == ""
    with context():
        assert cudnn.allow_tf32 is False
        assert (cudnn.benchmark, cudnn.deterministic, cudnn.enabled) == before[1:]
    assert (cudnn.allow_tf32, cudnn.benchmark, cudnn.deterministic, cudnn.enabled) == before


def test_fp32_on_cpu_changes_nothing_and_bf16_autocasts() -> None:
    allow = torch.backends.cudnn.allow_tf32
    context, _ = precision(torch.device("cpu"), torch.float32)
    with context():
        assert torch.backends.cudnn.allow_tf32 == allow
        assert not torch.is_autocast_enabled("cpu")
    context, _ = precision(torch.device("cpu"), torch.bfloat16)
    with context():
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
