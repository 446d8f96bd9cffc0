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
from collections import OrderedDict
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from ..utils.files import atomic_write
from .families import ModelFamily, all_families, family_named, family_of, unpickle_globals

FORMAT = "skipclick-checkpoint/1"
# torch < 2.6 cannot allow-list a global under another name ((stand-in, "module.name") pairs)
_STAND_INS_SUPPORTED = torch.__version__ >= "2.6"

PathLike = Union[str, "os.PathLike[str]"]
Device = Union[str, torch.device]


def read_checkpoint_file(source: str) -> Any:
    """``torch.load`` with the weights-only unpickler (and the families' stand-ins); a refused
    global or a damaged file becomes a ValueError naming the file."""
    stand_ins = unpickle_globals()
    allowed = (torch.serialization.safe_globals([*stand_ins, set, OrderedDict]) if _STAND_INS_SUPPORTED
               else contextlib.nullcontext())
    try:
        with allowed:
            return torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        match = re.search(r"\bGLOBAL ([\w.]+)", str(err))
        if match is None:
            raise ValueError(f"{source!r} cannot be read as a torch checkpoint: {str(err).splitlines()[0]}") from None
        refused = match.group(1)
        hint = (" Reading the authors' checkpoints without their code needs torch >= 2.6."
                if refused in {name for _, name in stand_ins} and not _STAND_INS_SUPPORTED else "")
        raise ValueError(
            f"refused to load {source!r}: it needs the Python global {refused}, which the weights-only "
            f"unpickler does not allow. Nothing from the file was executed. Only load a file you trust "
            f"with torch.load(weights_only=False).{hint}") from None
    except (EOFError, RuntimeError) as err:   # empty or truncated files, broken zip archives
        raise ValueError(f"{source!r} cannot be read as a torch checkpoint: {err}") from None


# --- helpers for the families' readers of the authors' configs ----------------------------------

def unsupported(source: str, setting: str, value: Any, why: str) -> ValueError:
    """The error for an authors' setting this reimplementation does not implement."""
    return ValueError(f"{source!r}: the authors' setting {setting}={value!r} is not supported ({why})")


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
            raise ValueError(f"{source!r}: the authors' setting {name} has no stored value: {entry!r}")
        values[name] = entry["value"]
    for name, value in values.items():
        if name not in read and name not in fixed and name not in ignored:
            raise unsupported(source, name, value, "unknown setting")
        if name in fixed and plain(value) != fixed[name]:
            raise unsupported(source, name, value, f"only {fixed[name]!r} is implemented")
    missing = [name for name in read if name not in values]
    if missing:
        raise ValueError(f"{source!r}: the authors' config lacks the setting {missing[0]}")
    return values


# --- loading ----------------------------------------------------------------------------------

def check_variant(config: Any, wanted: Any, variant: str, label: str, source: str) -> None:
    """Raise unless the file's ``config`` is ``wanted``, the config of ``variant``, naming the
    values that differ."""
    if wanted != config:
        diff = {k: (v, getattr(config, k)) for k, v in wanted.to_dict().items() if getattr(config, k) != v}
        raise ValueError(f"{source!r} holds a {label} model that is not variant {variant!r}; "
                         f"(variant, file) values differ: {diff}")


def _describe(obj: Any) -> str:
    if isinstance(obj, Mapping):
        keys = [repr(k) for k in list(obj)[:8]]
        return f"a dict with {len(obj)} keys ({', '.join(keys)}{', ...' if len(obj) > 8 else ''})"
    return f"a {type(obj).__name__}"


def _from_our_format(obj: Mapping[str, Any], source: str, variant: Optional[str]) -> nn.Module:
    if obj["format"] != FORMAT:
        raise ValueError(f"{source!r} has format {obj['format']!r}; this version reads {FORMAT!r}")
    name = obj.get("family", "SkipClick")   # files written before EMC-Click have no family
    try:
        family = family_named(name)
    except KeyError:
        raise unsupported(source, "family", name, f"known: {', '.join(f.name for f in all_families())}") from None
    try:
        config = family.config_class(**obj["config"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"{source!r} holds an invalid {name} config: {err}") from None
    if variant is not None:
        check_variant(config, family.variant_config(variant), variant, family.label, source)
    return family.load_state(family.model_class(config), obj["state_dict"], source)


def load_checkpoint(path: PathLike, device: Device = "cpu", variant: Optional[str] = None) -> nn.Module:
    """A ready model (eval mode, on ``device``) of whichever family the file holds: our format,
    or any format a family reads (the authors' SkipClick and EMC-Click releases, a DINOv2 / DINOv3
    backbone file). ``variant``: the named variant the file must hold (for a backbone file: the
    SkipClick variant to build around it). ``isegm.model.families.family_of(model)`` tells the
    family. Nothing in the file is executed: a file that needs other Python globals is refused.
    """
    source = os.fspath(path)
    if not os.path.isfile(source):
        kinds = " or ".join(f"a {f.label} checkpoint ({f.weights})" for f in all_families())
        raise FileNotFoundError(f"no checkpoint at {source!r}: point --checkpoint (or config.yml) to {kinds}. "
                                "Nothing is downloaded at run time.")
    obj = read_checkpoint_file(source)
    if isinstance(obj, Mapping) and "format" in obj:
        model = _from_our_format(obj, source, variant)
    else:
        model = next((m for m in (f.read_file(obj, source, variant) for f in all_families()) if m is not None), None)
    if model is None:
        stored = obj.get("config") if isinstance(obj, Mapping) and "state_dict" in obj else None
        if isinstance(stored, Mapping) and "class" in stored:
            known = ", ".join(f"{name} ({f.label})" for f in all_families() for name in f.authors_classes)
            raise unsupported(source, "class", stored["class"], f"known: {known}")
        raise ValueError(f"{source!r} is no checkpoint of a known model family ({_formats()}); "
                         f"it holds {_describe(obj)}")
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
