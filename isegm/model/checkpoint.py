"""Loading and saving the weights of any model family (``isegm.model.families``).

``load_checkpoint`` reads

* our own checkpoints, written by ``save_checkpoint`` (``format: skipclick-checkpoint/1``, the
  model family in ``family``, its config as plain JSON, the state dict);
* every format a registered family reads itself (``ModelFamily.read_file``): the authors'
  released SkipClick and EMC-Click files, official DINOv2 / DINOv3 backbone files.

Every file goes through torch's weights-only unpickler, so loading a file never runs code from
it; a family may map the globals its authors pickled to inert stand-ins
(``ModelFamily.unpickle_globals``).
"""
from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import zipfile
from collections import OrderedDict
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ..utils.files import atomic_write
from .config_bounds import Bound, config_problem
from .families import ModelFamily, all_families, family_named, family_of, unpickle_globals

FORMAT = "skipclick-checkpoint/1"
# torch < 2.6 cannot allow-list a global under another name ((stand-in, "module.name") pairs)
_STAND_INS_SUPPORTED = torch.__version__ >= "2.6"
_ZIP_MAGIC = b"PK\x03\x04"     # torch.save's format since torch 1.6
_PICKLE_MAGIC = b"\x80"         # a pickle (protocol 2+): torch's legacy format, or a plain pickle
_DAMAGED_FIX = "copy, download or save it again (an interrupted copy, download or save leaves such a file)"

PathLike = Union[str, "os.PathLike[str]"]
Device = Union[str, torch.device]


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used. ``path``: the file; ``problem``: what is wrong;
    ``fix``: what to do. ``str()`` is ``'PATH': PROBLEM; FIX``, one line."""

    def __init__(self, path: PathLike, problem: str, fix: str = "") -> None:
        self.path, self.problem, self.fix = os.fspath(path), problem, fix
        super().__init__(f"{self.path!r}: {problem}" + (f"; {fix}" if fix else ""))


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No file at a checkpoint's path (also a ``FileNotFoundError``)."""

    def __init__(self, path: PathLike, problem: str, fix: str = "") -> None:
        CheckpointError.__init__(self, path, problem, fix)
        self.filename = self.path

    def __str__(self) -> str:   # the message, not OSError's "[Errno None] None: 'PATH'"
        return BaseException.__str__(self)


def _where_to_get() -> str:
    """Where checkpoints come from, for the errors of a missing or unusable file."""
    kinds = " or ".join(f"{'an' if f.label[0] in 'AEIOU' else 'a'} {f.label} checkpoint ({f.weights})"
                        for f in all_families() if f.weights)
    return f"use {kinds}; nothing is downloaded at run time"


def check_file(path: PathLike) -> None:
    """Raise ``CheckpointError`` unless ``path`` is a non-empty file that starts like a torch
    checkpoint; a missing file raises ``CheckpointNotFoundError``."""
    if not os.path.exists(path):
        raise CheckpointNotFoundError(path, "no checkpoint at this path (no such file)", _where_to_get())
    if os.path.isdir(path):
        raise CheckpointError(path, "is a folder, not a checkpoint file",
                              "give the .pth file itself (a folder written by skipclick-export is read by "
                              "Predictor and skipclick-app, not by load_checkpoint)")
    size = os.path.getsize(path)
    if size == 0:
        raise CheckpointError(path, "the file is empty (0 bytes)", _DAMAGED_FIX)
    with open(path, "rb") as f:
        head = f.read(len(_ZIP_MAGIC))
    if head == _ZIP_MAGIC:
        if not zipfile.is_zipfile(path):   # the archive's directory sits at its end
            raise CheckpointError(path, f"the file is cut short: its zip archive ends without its directory "
                                        f"({size} bytes)", _DAMAGED_FIX)
    elif not head.startswith(_PICKLE_MAGIC):
        raise CheckpointError(path, f"cannot be read as a torch checkpoint: it is neither a torch zip archive nor a "
                                    f"pickle (it starts with {head!r})", _where_to_get())


def read_checkpoint_file(source: PathLike) -> Any:
    """The unpickled content of a torch checkpoint file, read with the weights-only unpickler
    (and the families' stand-ins), so nothing in the file runs. A missing, empty, cut short,
    damaged or foreign file and a refused global raise ``CheckpointError`` naming the file, what
    is wrong and the fix (``CheckpointNotFoundError`` for a missing one)."""
    source = os.fspath(source)
    check_file(source)
    stand_ins = unpickle_globals()
    allowed = (torch.serialization.safe_globals([*stand_ins, set, OrderedDict]) if _STAND_INS_SUPPORTED
               else contextlib.nullcontext())
    try:
        with allowed:
            return torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's own text advises weights_only=False, which would run the file's code: not relayed
        match = re.search(r"\bGLOBAL ([\w.]+)", str(err))
        if match is None:
            raise CheckpointError(source, "the file is damaged or not a PyTorch checkpoint: its pickle does not "
                                          "read", _DAMAGED_FIX) from err
        refused = match.group(1)
        if refused in {name for _, name in stand_ins} and not _STAND_INS_SUPPORTED:
            fix = "reading the authors' checkpoints without their code needs torch >= 2.6: upgrade torch"
        else:
            fix = ("nothing from the file was run; use a checkpoint of a known model family, or save this model's "
                   "state dict with plain tensors where it was made")
        raise CheckpointError(source, f"refused: it needs the Python global {refused}, which loading never "
                                      "imports (a checkpoint holds tensors and plain values only)", fix) from err
    except (EOFError, RuntimeError, OSError, ValueError, KeyError, IndexError, TypeError,
            AttributeError, zipfile.BadZipFile) as err:
        # truncated records, broken zip members, garbage in the pickle stream
        raise CheckpointError(source, f"the file is damaged: torch cannot read it ({type(err).__name__})",
                              _DAMAGED_FIX) from err


# --- helpers for the families' readers of the authors' configs ----------------------------------

def unsupported(source: str, setting: str, value: Any, why: str) -> CheckpointError:
    """The error for an authors' setting this reimplementation does not implement."""
    return CheckpointError(source, f"the authors' setting {setting}={value!r} is not supported ({why})",
                           "this version reads the settings of the authors' released models")


def plain(value: Any) -> Any:
    """Tuples as lists, so that a pickled tuple and a JSON list compare equal."""
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def authors_settings(params: Mapping[str, Any], source: str, read: Sequence[str], fixed: Mapping[str, Any],
                     ignored: Sequence[str]) -> Dict[str, Any]:
    """The values of the authors' stored constructor arguments (``{name: {'type', 'value',
    'specified'}}``, as their ``@serialize`` records them). Every ``read`` setting must be
    present; a ``fixed`` one must have its value (other values select code this
    reimplementation does not have); ``ignored`` ones cannot change inference; any other
    setting raises, rather than building a model that computes something else."""
    values = {}
    for name, entry in params.items():
        if not isinstance(entry, Mapping) or "value" not in entry:
            raise CheckpointError(source, f"the authors' setting {name} has no stored value: {entry!r}", _DAMAGED_FIX)
        values[name] = entry["value"]
    for name, value in values.items():
        if name not in read and name not in fixed and name not in ignored:
            raise unsupported(source, name, value, "unknown setting")
        if name in fixed and plain(value) != fixed[name]:
            raise unsupported(source, name, value, f"only {fixed[name]!r} is implemented")
    missing = [name for name in read if name not in values]
    if missing:
        raise CheckpointError(source, f"the authors' config lacks the setting {missing[0]}", _DAMAGED_FIX)
    return values


# --- loading ----------------------------------------------------------------------------------

def check_variant(config: Any, wanted: Any, variant: str, label: str, source: str) -> None:
    """Raise unless the file's ``config`` is ``wanted``, the config of ``variant``, naming the
    values that differ."""
    if wanted != config:
        diff = {k: (v, getattr(config, k)) for k, v in wanted.to_dict().items() if getattr(config, k) != v}
        raise CheckpointError(source, f"holds a {label} model that is not variant {variant!r}; (variant, file) "
                                      f"values differ: {diff}", "give that variant's file, or no variant")


def _describe(obj: Any) -> str:
    if isinstance(obj, Mapping):
        keys = [repr(k) for k in list(obj)[:8]]
        return f"a dict with {len(obj)} keys ({', '.join(keys)}{', ...' if len(obj) > 8 else ''})"
    return f"a {type(obj).__name__}"


def check_config(values: Any, bounds: Optional[Callable[[Mapping[str, Any]], Mapping[str, Bound]]], label: str,
                 source: str) -> None:
    """Raise ``CheckpointError`` when a file's stored model config (``values``) lies outside
    its family's ``bounds`` (``ModelFamily.config_bounds``), before anything is built."""
    if bounds is None:
        return
    problem = config_problem(values, bounds(values) if isinstance(values, Mapping) else {})
    if problem is not None:
        raise CheckpointError(source, f"its {label} config is out of bounds: {problem}",
                              f"every released {label} model lies within these bounds: the file is damaged "
                              "or not a model checkpoint this version reads")


def _from_our_format(obj: Mapping[str, Any], source: str, variant: Optional[str]) -> nn.Module:
    if obj["format"] != FORMAT:
        raise CheckpointError(source, f"has format {obj['format']!r}; this version reads {FORMAT!r}",
                              "save it again with this version's save_checkpoint")
    missing = [key for key in ("config", "state_dict") if key not in obj]
    if missing:
        raise CheckpointError(source, f"the {FORMAT} file lacks {missing[0]!r}", _DAMAGED_FIX)
    name = obj.get("family", "SkipClick")   # files written before EMC-Click have no family
    try:
        family = family_named(name)
    except (KeyError, TypeError):
        raise CheckpointError(source, f"its model family {name!r} is unknown (known: "
                                      f"{', '.join(f.name for f in all_families())})",
                              "install the package that registers that family") from None
    check_config(obj["config"], family.config_bounds, family.label, source)
    try:
        config = family.config_class(**obj["config"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(source, f"holds an invalid {family.label} config: {err}",
                              "the file is damaged or was written by another version") from None
    if variant is not None:
        check_variant(config, family.variant_config(variant), variant, family.label, source)
    state = obj["state_dict"]
    if not (isinstance(state, Mapping) and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items())):
        raise CheckpointError(source, f"its 'state_dict' is {_describe(state)}, not a dict of tensors", _DAMAGED_FIX)
    return family.load_state(family.model_class(config), state, source)


def _what_it_holds(obj: Any) -> Tuple[str, str]:
    """What a file that is no model checkpoint holds, and the fix."""
    if isinstance(obj, Mapping) and {"state", "param_groups"} <= set(obj):
        return ("it holds an optimizer state (torch.optim), not model weights",
                "give the model's checkpoint (an experiment's checkpoints/last_checkpoint.pth or NNN.pth)")
    return (f"no checkpoint of a known model family ({_formats()}): it holds {_describe(obj)}",
            "give a model checkpoint: " + _where_to_get())


def load_checkpoint(path: PathLike, device: Device = "cpu", variant: Optional[str] = None) -> nn.Module:
    """A ready model (eval mode, on ``device``) of whichever family the file holds: our format,
    or any format a family reads (the authors' SkipClick and EMC-Click releases, a DINOv2 / DINOv3
    backbone file). ``variant``: the named variant the file must hold (for a backbone file: the
    SkipClick variant to build around it). ``isegm.model.families.family_of(model)`` tells the
    family. Nothing in the file is executed: a file that needs other Python globals is refused.

    A file that cannot be used raises ``CheckpointError`` (a ``ValueError``) naming it, what is
    wrong and the fix: missing (``CheckpointNotFoundError``, also a ``FileNotFoundError``), a
    folder, empty, cut short, damaged, not a checkpoint, refused globals, an unknown family, a
    stored config outside the family's bounds (checked before anything is built).
    """
    source = os.fspath(path)
    obj = read_checkpoint_file(source)
    if isinstance(obj, Mapping) and "format" in obj:
        model = _from_our_format(obj, source, variant)
    else:
        model = next((m for m in (f.read_file(obj, source, variant) for f in all_families()) if m is not None), None)
    if model is None:
        stored = obj.get("config") if isinstance(obj, Mapping) and "state_dict" in obj else None
        if isinstance(stored, Mapping) and "class" in stored:
            known = ", ".join(f"{name} ({f.label})" for f in all_families() for name in f.authors_classes)
            raise CheckpointError(source, f"its model class {stored['class']!r} is none this version reads "
                                          f"(known: {known})", _where_to_get())
        raise CheckpointError(source, *_what_it_holds(obj))
    return model.to(device).eval()


def _formats() -> str:
    """The formats ``load_checkpoint`` reads, for its errors."""
    authors = "".join(f", the authors' {f.label} release" for f in all_families() if f.authors_classes)
    return f"ours{authors}, a DINOv2 / DINOv3 backbone file"


# --- saving -----------------------------------------------------------------------------------

_RESERVED = ("format", "family", "config", "state_dict")


def _check_plain(value: Any, where: str) -> None:
    """Raise unless ``value`` loads with ``torch.load(weights_only=True)`` (and so with ours)."""
    # exact types: subclasses such as numpy.float64 pickle with globals a weights-only load refuses
    if value is None or type(value) in (str, int, float, bool) or isinstance(value, Tensor):
        return
    if type(value) in (list, tuple):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
    elif type(value) is dict:
        for key, item in value.items():
            if type(key) not in (str, int):   # optimizer states are keyed by parameter index
                raise TypeError(f"checkpoint metadata {where} has a key {key!r} that is neither str nor int")
            _check_plain(item, f"{where}[{key!r}]")
    else:
        raise TypeError(f"checkpoint metadata {where} is a {type(value).__name__}; only str, int, float, bool, "
                        "None, tensors and lists / dicts of them load with weights_only=True")


def save_checkpoint(model: nn.Module, path: PathLike, **extra: Any) -> None:
    """Write ``model`` as ``{'format': 'skipclick-checkpoint/1', 'family', 'config', 'state_dict',
    **extra}`` (``family``: the name of the model's family, e.g. ``SkipClick``, ``EMCClick``).

    ``extra`` is plain metadata (epoch, metrics, ...). The file loads with plain
    ``torch.load(weights_only=True)``. It is written to a temporary file beside ``path`` that
    replaces ``path`` only when complete, so ``path`` never holds a half-written checkpoint.
    """
    clash = [key for key in extra if key in _RESERVED]
    if clash:
        raise ValueError(f"checkpoint metadata cannot use the reserved keys {clash}")
    for key, value in extra.items():
        _check_plain(value, key)
    family: Optional[ModelFamily] = family_of(model)
    if family is None:
        raise TypeError(f"save_checkpoint writes models of a registered family "
                        f"({', '.join(f.name for f in all_families())}), not {type(model).__name__}")
    payload = {"format": FORMAT, "family": family.name,
               "config": json.loads(json.dumps(model.config.to_dict())),   # tuples -> lists: plain JSON
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
               **extra}
    atomic_write(path, lambda f: torch.save(payload, f))
