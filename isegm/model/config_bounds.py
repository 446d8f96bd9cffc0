"""Bounds of the model configs a checkpoint file may declare, checked before anything is built.

A file is data from anywhere: a 2 KB file declaring ``fusion_depth=5000`` or a negative width
would otherwise build the model until memory runs out, or fail deep inside torch. Each family
states, per config key, the type and range its released models lie well within
(``ModelFamily.config_bounds``); ``config_problem`` names the first key outside them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Tuple

KINDS = ("int", "number", "bool", "choice", "ints")


@dataclass(frozen=True)
class Bound:
    """What one config value may be.

    ``kind``: ``int``, ``number`` (int or float, finite), ``bool``, ``choice`` (one of
    ``choices``) or ``ints`` (a list of ints, ``length`` items). Numbers and list items lie in
    ``low..high`` and, when set, are multiples of ``multiple_of`` or divide ``divides``.
    ``why``: what limits the range, for the message (e.g. ``the backbone has 12 blocks``).
    """

    kind: str
    low: float = -math.inf
    high: float = math.inf
    choices: Sequence[Any] = ()
    length: Tuple[int, int] = (1, 1)
    multiple_of: int = 1
    divides: int = 0
    why: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Bound.kind is {self.kind!r}; known: {', '.join(KINDS)}")

    def allowed(self) -> str:
        """The allowed values in words."""
        if self.kind == "bool":
            return "true or false"
        if self.kind == "choice":
            return "one of " + ", ".join(repr(c) for c in self.choices)
        text = f"{_num(self.low)} to {_num(self.high)}"
        if self.multiple_of > 1:
            text += f", a multiple of {self.multiple_of}"
        if self.divides:
            text += f", dividing {self.divides}"
        if self.kind == "ints":
            count = str(self.length[0]) if self.length[0] == self.length[1] else f"{self.length[0]} to {self.length[1]}"
            text = f"a list of {count} integers, each {text}"
        elif self.kind == "int":
            text = f"an integer {text}"
        else:
            text = f"a number {text}"
        return text + (f" ({self.why})" if self.why else "")

    def fits(self, value: Any) -> bool:
        """Whether ``value`` has this kind and lies in range."""
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "choice":
            return isinstance(value, str) and value in self.choices
        if self.kind == "ints":
            return (isinstance(value, (list, tuple)) and self.length[0] <= len(value) <= self.length[1]
                    and all(self._number_fits(v, integer=True) for v in value))
        return self._number_fits(value, integer=self.kind == "int")

    def _number_fits(self, value: Any, integer: bool) -> bool:
        if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
            return False
        if not (math.isfinite(value) and self.low <= value <= self.high):
            return False
        if self.multiple_of > 1 and value % self.multiple_of:
            return False
        return not self.divides or (value > 0 and self.divides % value == 0)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def config_problem(values: Any, bounds: Mapping[str, Bound]) -> Optional[str]:
    """What is wrong with a stored config (``{key: value}``, as in a checkpoint) against
    ``bounds``, in words naming the key, its value and the allowed values; None when it fits.
    Keys absent from ``values`` are left to the config's defaults; unknown keys are a problem."""
    if not isinstance(values, Mapping):
        return f"it is a {type(values).__name__}, not a dict of settings"
    for key, value in values.items():
        bound = bounds.get(key)
        if bound is None:
            return f"{key!r} is no setting of the model (known: {', '.join(bounds)})"
        if not bound.fits(value):
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
            return f"{key}={shown} is outside the allowed values: {bound.allowed()}"
    return None
