"""``config.yml``: local paths of datasets, weights and outputs.

Relative paths resolve against the file's folder; ``SKIPCLICK_<KEY>`` environment variables
override keys (so CI and clusters need no edited copy).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Optional, Union

import yaml

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "config.yml"


def load_config(path: Optional[Union[str, Path]] = None) -> Dict[str, str]:
    """Read ``config.yml`` (default: the repository's) into a dict of resolved values."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} not found; copy config.yml from the repository "
                                "root and set your local paths in it")
    with open(path) as f:
        raw = yaml.safe_load(f) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{str(path)!r} must hold 'KEY: value' lines, got {type(raw).__name__}")
    config = {}
    for key, value in raw.items():
        value = os.environ.get(f"SKIPCLICK_{key}", value)
        # Every value is a local path; environment values are taken as given.
        if isinstance(value, str) and value and not os.path.isabs(value) and f"SKIPCLICK_{key}" not in os.environ:
            value = str((path.parent / value).resolve())
        config[key] = value
    for key, value in os.environ.items():
        if key.startswith("SKIPCLICK_") and key[len("SKIPCLICK_"):] not in config:
            config[key[len("SKIPCLICK_"):]] = value
    return config
