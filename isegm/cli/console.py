"""The console commands of ``setup.py``: each runs its command's ``main`` through
``main_entry`` (one line per error, exit status 2, the traceback only with ``--debug``).
A command's module is imported when it runs, so one command does not load another's imports."""
from __future__ import annotations

from typing import NoReturn

from .common import main_entry


def train() -> NoReturn:
    """``skipclick-train``"""
    from .train import main
    main_entry(main)


def evaluate() -> NoReturn:
    """``skipclick-evaluate``"""
    from .evaluate import main
    main_entry(main)


def tables() -> NoReturn:
    """``skipclick-tables``"""
    from .tables import main
    main_entry(main)


def app() -> NoReturn:
    """``skipclick-app``"""
    from ..app.__main__ import main
    main_entry(main)


def export() -> NoReturn:
    """``skipclick-export``"""
    from .export import main
    main_entry(main)


def weights() -> NoReturn:
    """``skipclick-weights``"""
    from .weights import main
    main_entry(main)


def label_studio() -> NoReturn:
    """``skipclick-label-studio``"""
    from ..label_studio.__main__ import main
    main_entry(main)
