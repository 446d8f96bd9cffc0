"""Facts about the compute device that decide how to run on it."""
from __future__ import annotations

import platform
from typing import Optional

import torch


def native_reduced_precision(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether matrix products in ``dtype`` run on hardware support (always on CUDA). On CPUs
    without AVX512-BF16 / AMX, torch falls back to scalar bf16 / fp16 GEMMs that are far slower
    than fp32 (0.7 vs 64 GFLOP/s measured on a 2-core AVX2 EPYC)."""
    if device.type != "cpu" or dtype == torch.float32:
        return True
    probe = {torch.bfloat16: "_is_mkldnn_bf16_supported", torch.float16: "_is_mkldnn_fp16_supported"}[dtype]
    check = getattr(torch.ops.mkldnn, probe, None)
    return True if check is None else bool(check())


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's as the platform reports it."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def select_device(name: str, threads: Optional[int] = None) -> torch.device:
    """The device a benchmark runs on (``cpu`` or ``cuda``), with ``threads`` CPU threads when
    given; exits with a message when CUDA is asked for and absent."""
    if threads:
        torch.set_num_threads(threads)
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible to torch")
    return device
