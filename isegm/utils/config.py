"""Local paths of datasets, weights and outputs (``config.yml``), and where they are looked up.

Lookup, first found wins: ``--config PATH``, the environment variable ``SKIPCLICK_CONFIG``,
``config.yml`` in the current folder, then the defaults shipped in the package
(``isegm/utils/config_defaults.yml``, paths under the current folder). Relative paths in a file
resolve against that file's folder (the defaults' against the current folder);
``SKIPCLICK_<KEY>`` environment variables override keys (so CI and clusters need no edited copy).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Dict, Optional, Union

import yaml

# The file a user creates or edits in the folder they run commands from; the built-in defaults
# below apply when there is none.
DEFAULT_CONFIG = Path("config.yml")
BUILTIN_CONFIG = Path(__file__).resolve().parent / "config_defaults.yml"
CONFIG_ENV = "SKIPCLICK_CONFIG"


def find_config(path: Optional[Union[str, Path]] = None) -> Optional[Path]:
    """The config file to read: ``path`` (``--config``), else ``$SKIPCLICK_CONFIG``, else
    ``./config.yml`` when it exists; None means the built-in defaults. A file named by ``path``
    or the environment that does not exist is a ``FileNotFoundError`` naming it."""
    if path is not None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"config file {str(path)!r} (--config) not found; pass an existing file "
                                    "or drop --config to use ./config.yml or the built-in defaults")
        return Path(path)
    if os.environ.get(CONFIG_ENV):
        env = Path(os.environ[CONFIG_ENV])
        if not env.is_file():
            raise FileNotFoundError(f"config file {str(env)!r} (environment variable {CONFIG_ENV}) not found; "
                                    f"point {CONFIG_ENV} to an existing file or unset it")
        return env
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


def load_config(path: Optional[Union[str, Path]] = None) -> Dict[str, Optional[str]]:
    """The config of ``find_config(path)`` as a dict of resolved values, environment overrides
    applied."""
    found = find_config(path)
    source = found if found is not None else BUILTIN_CONFIG
    with open(source) as f:
        raw = yaml.safe_load(f) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{str(source)!r} must hold 'KEY: value' lines, got {type(raw).__name__}")
    base = found.resolve().parent if found is not None else Path.cwd()
    config = {}
    for key, value in raw.items():
        env = f"SKIPCLICK_{key}"
        # Every value is a local path; environment values are taken as given.
        if env in os.environ:
            value = os.environ[env]
        elif isinstance(value, str) and value and not os.path.isabs(value):
            value = str((base / value).resolve())
        config[key] = value
    for key, value in os.environ.items():
        if key.startswith("SKIPCLICK_") and key != CONFIG_ENV and key[len("SKIPCLICK_"):] not in config:
            config[key[len("SKIPCLICK_"):]] = value
    return config


def config_source(path: Optional[Union[str, Path]] = None) -> Path:
    """The file ``load_config(path)`` reads, for messages that tell the user where to set a key
    (``./config.yml`` when the built-in defaults apply: the file to create)."""
    found = find_config(path)
    return found if found is not None else DEFAULT_CONFIG


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """``--config PATH`` (alias ``--config-path``, the family's name), read back as ``args.config``."""
    parser.add_argument("--config", "--config-path", dest="config", default=None, metavar="PATH",
                        help=f"config file of local paths (default: ${CONFIG_ENV}, else ./config.yml, else the "
                             "built-in defaults: weights/, datasets/, experiments/ under the current folder)")
