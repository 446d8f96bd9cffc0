"""Shared fixtures: the reference fixtures in ``../shared`` (read in place, never copied) and
deterministic models filled by the reference ``fill.py`` rule.

``SKIPCLICK_SHARED`` points elsewhere when the checkout does not sit beside ``shared/``. Tests
that need a fixture skip with the path they looked for when it is absent.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
from pathlib import Path
from types import ModuleType
from typing import Dict

import numpy as np
import pytest
import torch

from isegm.model import SkipClick, build_skipclick

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SKIPCLICK_SHARED", REPO.parent / "shared"))
REFERENCE = SHARED / "reference" / "model"

# Reference configuration name -> our variant (the fixtures README's table).
REFERENCE_VARIANTS = {
    "baseline_unfrozen": "baseline",
    "frozen": "frozen_backbone",
    "intermediate": "intermediate_features",
    "skip": "skipclick",
    "dinov3_skip": "skipclick_dinov3",
}

torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: takes more than a few seconds; `make test-all` runs it")
    config.addinivalue_line("markers", "label_studio: needs a real Label Studio server; `make test-label-studio` runs it")


def shared_path(*parts: str) -> Path:
    """A file or folder of ``shared/``, or a skip naming where it was looked for."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (set SKIPCLICK_SHARED to the shared/ folder)")
    return path


def reference_file(name: str) -> Path:
    """A file of ``shared/reference/model/``."""
    return shared_path("reference", "model", name)


def eval_file(name: str) -> Path:
    """A file of ``shared/reference/eval/``."""
    return shared_path("reference", "eval", name)


@functools.lru_cache(maxsize=None)
def eval_golden(name: str) -> Dict:
    """A parsed JSON golden of ``shared/reference/eval/`` (cached)."""
    with open(eval_file(name)) as f:
        return json.load(f)


def sha16(array: np.ndarray) -> str:
    """The goldens' hash: sha256 of the array's C-order bytes, first 16 hex digits."""
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


def _import_file(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.lru_cache(maxsize=None)
def synthetic_predictor() -> ModuleType:
    """The reference ``synthetic_predictor.py`` (imported from ``shared/``, not copied)."""
    return _import_file("synthetic_predictor", eval_file("synthetic_predictor.py"))


@functools.lru_cache(maxsize=None)
def _fill_module(path: str) -> ModuleType:
    return _import_file("reference_fill", Path(path))


@pytest.fixture(scope="session")
def fill() -> ModuleType:
    """The reference ``fill.py`` (imported from ``shared/``, not copied)."""
    return _fill_module(str(reference_file("fill.py")))


@functools.lru_cache(maxsize=None)
def _manifest(name: str) -> Dict:
    with open(reference_file(f"manifest_{name}.json")) as f:
        return json.load(f)


@pytest.fixture(scope="session")
def manifest():
    """``manifest(name)``: the parsed ``manifest_<name>.json``."""
    return _manifest


@functools.lru_cache(maxsize=None)
def _golden(name: str):
    return np.load(reference_file(f"golden_{name}.npz"))


@pytest.fixture(scope="session")
def golden():
    """``golden(name)``: ``golden_<name>.npz`` (``golden('inputs')`` for the shared inputs)."""
    return _golden


@functools.lru_cache(maxsize=None)
def _filled_state(name: str) -> Dict[str, torch.Tensor]:
    return _fill_module(str(reference_file("fill.py"))).make_state_dict(_manifest(name)["entries"])


@functools.lru_cache(maxsize=None)
def _filled_model(name: str) -> SkipClick:
    model = build_skipclick(REFERENCE_VARIANTS[name]).eval()
    model.load_state_dict(_filled_state(name), strict=True)
    return model


@pytest.fixture(scope="session")
def filled_state():
    """``filled_state(name)``: the ``fill.py`` state dict of a reference config (cached)."""
    return _filled_state


@pytest.fixture(scope="session")
def filled_model():
    """``filled_model(name)``: our model of a reference config with ``fill.py`` weights, eval
    mode, cached for the session (do not modify it in a test)."""
    return _filled_model
