"""The compute device and precision every command and the Python API accept, and facts about
them that decide how to run.

One vocabulary everywhere: ``--device cpu|cuda|cuda:N|mps`` (default: cuda when available) and
``--dtype fp32|bf16|fp16``; the family's ``--gpus N`` / ``--cpu`` are kept as aliases.
"""
from __future__ import annotations

import argparse
import contextlib
import platform
import re
from typing import Callable, ContextManager, Optional, Tuple

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_DEVICE = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")


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


def default_device() -> str:
    """``cuda`` when torch sees a GPU, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def select_device(name: Optional[str] = None, threads: Optional[int] = None) -> torch.device:
    """The device named ``name`` (``cpu``, ``cuda``, ``cuda:N``, ``mps``; None: ``default_device()``),
    with ``threads`` CPU threads when given. Raises ``ValueError`` naming the value and the fix
    when it is malformed or absent on this machine."""
    if threads:
        torch.set_num_threads(threads)
    name = default_device() if name is None else str(name).strip().lower()
    if not _DEVICE.match(name):
        raise ValueError(f"--device {name!r}: expected cpu, cuda, cuda:N or mps")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: no CUDA device is visible to torch; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                             f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"--device {name}: MPS is not available in this torch build or machine; use --device cpu")
    return device


def select_dtype(name: Optional[str]) -> torch.dtype:
    """The torch dtype of ``fp32`` / ``bf16`` / ``fp16`` (None: fp32)."""
    name = "fp32" if name is None else str(name).strip().lower()
    if name not in DTYPES:
        raise ValueError(f"--dtype {name!r}: expected one of {', '.join(DTYPES)}")
    return DTYPES[name]


def precision(device: torch.device, dtype: torch.dtype) -> Tuple[Callable[[], ContextManager], str]:
    """A factory of the context to run the model in (autocast for bf16 / fp16; for fp32 on CUDA,
    cuDNN without TF32) and a notice for the user ('' when the choice is sound): reduced
    precision on a CPU without hardware support for it runs far slower than fp32.

    fp32 means fp32 on a GPU too: cuDNN's default TF32 convolutions (10-bit mantissa) moved
    EMC-Click's logits by up to 2 against the CPU on an H200 and flipped its template choices,
    where strict fp32 agrees within 1e-5."""
    notice = ""
    if not native_reduced_precision(device, dtype):
        name = next(key for key, value in DTYPES.items() if value == dtype)
        notice = (f"{name} on this CPU ({device_name(device)}) has no hardware support and runs about 14x slower "
                  "than fp32; use --dtype fp32")

    def context() -> ContextManager:
        if dtype != torch.float32:
            return torch.autocast(device.type, dtype=dtype)
        if device.type == "cuda":
            cudnn = torch.backends.cudnn
            return cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark,
                               deterministic=cudnn.deterministic, allow_tf32=False)
        return contextlib.nullcontext()

    return context, notice


def add_device_arguments(parser: argparse.ArgumentParser, legacy: bool = False,
                         dtype_default: Optional[str] = "fp32", compare: bool = False) -> None:
    """``--device`` and ``--dtype`` (and, with ``legacy``, the family's ``--gpus`` / ``--cpu`` as
    their aliases). With ``compare`` (benchmarks), ``--dtype`` takes several precisions, timed in
    turn. Read them back with ``device_from_args``."""
    group = parser.add_argument_group("device and precision")
    group.add_argument("--device", default=None,
                       help="cpu, cuda, cuda:N or mps (default: cuda when available, else cpu)")
    several = " (several: each in turn)" if compare else ""
    group.add_argument("--dtype", default=[dtype_default] if compare else dtype_default, choices=sorted(DTYPES),
                       nargs="+" if compare else None,
                       help=f"precision of the model's computations{several}; bf16 / fp16 run under autocast and "
                            f"are fast only on GPUs and CPUs with AVX512-BF16 / AMX (default: {dtype_default})")
    if legacy:
        group.add_argument("--gpus", default=None, metavar="N",
                           help="alias of --device cuda:N (the first id of a list is used)")
        group.add_argument("--cpu", action="store_true", help="alias of --device cpu")


def device_from_args(args: argparse.Namespace, threads: Optional[int] = None) -> torch.device:
    """The device of ``add_device_arguments``' flags; conflicting flags are a ``ValueError``."""
    name = args.device
    if getattr(args, "cpu", False):
        if name not in (None, "cpu"):
            raise ValueError(f"--cpu and --device {name} disagree; give one of them")
        name = "cpu"
    gpus = getattr(args, "gpus", None)
    if gpus not in (None, "") and not getattr(args, "cpu", False):
        first = str(gpus).split(",")[0].strip()
        if not first.isdigit():
            raise ValueError(f"--gpus {gpus!r}: expected a GPU id such as 0 (or use --device cuda:N)")
        if name is not None and name != f"cuda:{first}" and not (name == "cuda" and first == "0"):
            raise ValueError(f"--gpus {gpus} and --device {name} disagree; give one of them")
        name = f"cuda:{first}"
    return select_device(name, threads)
