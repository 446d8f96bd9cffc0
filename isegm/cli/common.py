"""What the console commands share: the help layout, one-line errors, the device under torchrun."""
from __future__ import annotations

import argparse
import sys
from typing import NoReturn

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


def exit_error(message: str) -> NoReturn:
    """Stop a command with ``error: message`` on one line of stderr and exit status 2."""
    print(f"error: {message}", file=sys.stderr)
    raise CommandError(message)


def process_device(device: torch.device, process: Process) -> torch.device:
    """The device of this process: under torchrun with several processes each takes its local
    GPU (``LOCAL_RANK``); otherwise ``device`` as given."""
    if device.type == "cuda" and process.world_size > 1:
        return torch.device("cuda", process.local_rank)
    return device
