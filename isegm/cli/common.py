"""What the console commands share: the help layout, one-line errors (``main_entry``, ``--debug``),
the device under torchrun."""
from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import Callable, List, NoReturn, Optional, Sequence

import torch

from ..utils.distributed import Process


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's layout and appends each option's default to its help, unless the
    help already speaks of its default or there is none to show (None, False, "", [])."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        nothing = action.default is None or action.default is False or action.default in ("", [], argparse.SUPPRESS)
        if "default" in text or nothing or not action.option_strings:
            return text
        return text + " (default: %(default)s)"


class CommandError(SystemExit):
    """A command stopped on a wrong setting: exit status 2; ``str()`` is the message, so callers
    of a command's ``main`` in Python see what went wrong."""

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


def exit_error(message: str, *more: str) -> NoReturn:
    """Stop a command with ``error: message`` on one line of stderr (one line for each of several
    problems found at once) and exit status 2."""
    lines = [_one_line(text) for text in (message, *more)]
    for line in lines:
        print(f"error: {line}", file=sys.stderr)
    raise CommandError("; ".join(lines))


# Errors whose message is meant for the user (a file, a value, what is wrong, the fix): shown as
# they are. Any other exception is a defect and says how to see its traceback.
KNOWN_ERRORS = (OSError, ValueError, ImportError)
DEBUG_ENV = "SKIPCLICK_DEBUG"


def add_debug_argument(parser: argparse.ArgumentParser) -> None:
    """``--debug``: on an error, the Python traceback as well as the one-line message
    (``main_entry`` reads it from the command line before parsing, so it holds for parse errors too)."""
    parser.add_argument("--debug", action="store_true",
                        help=f"on an error, also print the Python traceback (or set {DEBUG_ENV}=1)")


def debug_requested(argv: Sequence[str]) -> bool:
    """Whether ``--debug`` is among the options of ``argv`` (before any ``--``) or ``SKIPCLICK_DEBUG``
    is set to anything but ``""`` / ``0``."""
    options = list(argv)[:list(argv).index("--")] if "--" in argv else argv
    return "--debug" in options or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def main_entry(main: Callable[[Optional[List[str]]], Optional[int]], argv: Optional[List[str]] = None) -> NoReturn:
    """Run a command's ``main(argv)`` as a console command and exit with its status (None: 0).

    Every error ends in one line of stderr: ``error: MESSAGE`` with exit status 2 for a
    ``CommandError`` (already printed by ``exit_error``) and the errors meant for the user
    (``KNOWN_ERRORS``: a missing or unreadable file, a bad value or checkpoint, a missing
    package); ``error: TYPE: MESSAGE (...--debug...)`` with status 1 for any other exception.
    ``--debug`` or ``SKIPCLICK_DEBUG=1`` prints the traceback before that line. Ctrl-C exits
    with status 130 and no traceback.
    """
    args = sys.argv[1:] if argv is None else argv
    debug = debug_requested(args)
    try:
        status = main(argv)
    except CommandError:
        if debug:
            traceback.print_exc()
        sys.exit(2)
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except KNOWN_ERRORS as err:
        if debug:
            traceback.print_exc()
        print(f"error: {_one_line(str(err)) or type(err).__name__}", file=sys.stderr)
        sys.exit(2)
    except Exception as err:
        if debug:
            traceback.print_exc()
        first = next((line for line in str(err).splitlines() if line.strip()), "")
        hint = "" if debug else "; run again with --debug for the traceback"
        print(f"error: {type(err).__name__}: {first.strip()}{hint}", file=sys.stderr)
        sys.exit(1)
    sys.exit(status or 0)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model choice of the servers that segment on request (``skipclick-app``,
    ``skipclick-label-studio``): ``--checkpoint``, ``--size``, ``--flip``, ``--baseline``."""
    from ..inference.baselines import BASELINES
    parser.add_argument("--checkpoint", help="SkipClick checkpoint (ours or the authors'), the authors' EMC-Click file "
                                             "or a folder written by skipclick-export (default: none, a model-free "
                                             "baseline)")
    parser.add_argument("--size", type=int, help="model input: SkipClick resizes the image to size x size (default "
                                                 "448), EMC-Click its short side to size (default 384)")
    parser.add_argument("--flip", action="store_true", help="flip test-time augmentation (twice the per-click work)")
    parser.add_argument("--baseline", default="grabcut", choices=sorted(BASELINES), help="the model-free predictor")


def process_device(device: torch.device, process: Process) -> torch.device:
    """The device of this process: under torchrun with several processes each takes its local
    GPU (``LOCAL_RANK``); otherwise ``device`` as given."""
    if device.type == "cuda" and process.world_size > 1:
        return torch.device("cuda", process.local_rank)
    return device
