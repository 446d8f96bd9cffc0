"""Experiment folders as the RITM family lays them out, and the settings a model file's
``main(cfg)`` receives.

``<EXPS_PATH>/<folders under models/>/<MODEL_NAME>/<NNN>_<exp-name>/`` holds ``checkpoints/``,
``logs/`` (training log, scalars, TensorBoard), ``vis/`` (image dumps), a timestamped copy of
the model file and ``config.json`` (every setting of the run).
"""
from __future__ import annotations

import importlib.util
import json
import shutil
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, List, Optional

from ..utils import distributed as dist_utils


def load_model_file(path: Path) -> ModuleType:
    """Import a model file (``models/<family>/<name>.py``); it must define ``main(cfg)``."""
    spec = importlib.util.spec_from_file_location("model_file", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not callable(getattr(module, "main", None)):
        raise SystemExit(f"{path} has no main(cfg): a model file builds its model and calls train(...)")
    return module


def family_tree(model_path: Path, model_name: Optional[str] = None) -> List[str]:
    """The folders between ``models/`` and the model file, then its name (``MODEL_NAME`` or the
    file's stem). A file outside a ``models/`` folder is its own family."""
    parts = [model_name or model_path.stem]
    for parent in model_path.resolve().parents:
        if parent.name == "models":
            return parts[::-1]
        parts.append(parent.name)
    return [model_name or model_path.stem]


def next_index(parent: Path) -> int:
    """One more than the largest ``NNN`` prefix of the folders in ``parent`` (0 when none)."""
    indices = [int(p.name[:3]) for p in parent.iterdir() if p.is_dir() and p.name[:3].isdigit()] \
        if parent.is_dir() else []
    return max(indices, default=-1) + 1


def find_experiment(parent: Path, prefix: str) -> Path:
    """The one experiment folder in ``parent`` whose name starts with ``prefix`` (``--resume-exp``)."""
    found = sorted(p for p in parent.glob(f"{prefix}*") if p.is_dir()) if parent.is_dir() else []
    if len(found) != 1:
        listed = ", ".join(p.name for p in found) if found else "none"
        raise FileNotFoundError(f"--resume-exp {prefix!r}: expected exactly one experiment in {parent} starting "
                                f"with it, found {listed}")
    return found[0]


def init_experiment(model_path: Path, model_name: Optional[str], exps_path: Path, exp_name: str = "",
                    resume_exp: Optional[str] = None, settings: Optional[Dict[str, Any]] = None) -> Path:
    """Create (rank 0) or find the experiment folder; copy the model file and write the settings."""
    parent = Path(exps_path).joinpath(*family_tree(model_path, model_name))
    process = dist_utils.init_from_env()
    if resume_exp is not None:
        exp_path = find_experiment(parent, resume_exp)
    else:
        # Every process must agree on the new folder's name before rank 0 creates it.
        index = dist_utils.all_gather_object(next_index(parent))[0]
        exp_path = parent / (f"{index:03d}_{exp_name}" if exp_name else f"{index:03d}")
    if process.is_main:
        for sub in ("checkpoints", "logs", "vis"):
            (exp_path / sub).mkdir(parents=True, exist_ok=True)
        stamp = datetime.now().strftime("%Y-%m-%d-%H-%M-%S")
        shutil.copy(model_path, exp_path / f"{model_path.stem}_{stamp}.py")
        if settings is not None:
            (exp_path / "config.json").write_text(json.dumps(settings, indent=1, default=str))
    dist_utils.barrier()
    return exp_path
