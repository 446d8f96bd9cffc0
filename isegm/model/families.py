"""Model families as plug-ins.

A family (SkipClick, EMC-Click, ...) is one package under ``isegm/model/`` and one
``ModelFamily`` record, the module-level ``FAMILY`` of the package's ``family.py``. The record says
everything the rest of the toolkit needs: how to build the model, which checkpoint files it
reads, how its clicks are evaluated (the predictor) and how it is trained (the training step).
``load_checkpoint``, ``get_predictor``, the trainer, the benchmarks and the annotation app reach a
family only through this registry, so a new family touches only its own package and one line of
``FAMILY_MODULES``.

Every family's model answers the same calls, in the same order of arguments::

    features = model.encode_image(image, points)          # once per image (or per object)
    logits = model.decode(features, points, prev_mask)    # per click
    model(torch.cat([image, prev_mask], 1), points)["instances"]   # the RITM family's forward

``image``: RGB ``[B, 3, H, W]`` in [0, 1]; ``points``: ``[B, 2N, 3]`` rows ``(y, x, index)``,
positives first, ``-1`` padding (``isegm.model.click_maps``). A family whose image work does not
read the clicks ignores ``points`` in ``encode_image``; one whose previous mask lives in its
state takes ``prev_mask=None``.

The predictor and the training step are named as ``"module:attribute"`` strings, imported on
first use: they build on the evaluation and training engines, which build on the models.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Set, Tuple

from torch import nn

from .config_bounds import Bound

# One line per family: the module defining its ``FAMILY`` record. Registered in this order.
FAMILY_MODULES: List[str] = ["isegm.model.skipclick.family", "isegm.model.emc.family"]


@dataclass(frozen=True)
class ModelFamily:
    """One model family as the toolkit sees it.

    ``name``: the model class name, stored in our checkpoints' ``family`` key.
    ``label``: the family's name for people (tables, the app's banner).
    ``model_class`` / ``config_class``: ``model_class(config)`` builds a fresh model;
    ``config_class(**config.to_dict())`` round-trips a config (our checkpoints store it as JSON).
    ``variants``: the named configurations (paper rows, released files), ``build(variant)``
    builds one with fresh weights, ``variant_config(variant)`` gives its config (``ValueError``
    for an unknown name).
    ``load_state(model, state_dict, source)``: strict loading of a state dict in the family's key
    layout (``source`` names the file in errors).
    ``read_file(obj, source, variant)``: a model from an already unpickled file in a format other
    than ours (the authors' releases, backbone files), or None when ``obj`` is none of them.
    ``authors_classes``: the model-class names the authors' checkpoints of this family record.
    ``weights``: where released weights come from (for error messages).
    ``unpickle_globals``: ``(object, "module.name")`` pairs the weights-only unpickler may resolve
    for this family's files (inert stand-ins for what the authors pickled).
    ``config_bounds(values)``: the ``Bound`` of each config key for a stored config ``values``
    (bounds may depend on other keys, e.g. the backbone); ``load_checkpoint`` checks a file's
    config against them before building anything. None: the family checks its configs itself.
    ``predictor``: ``"module:factory"``, ``factory(net, eval_mode=, dataset_name=, model_kind=,
    suppress_zoom=, with_flip=, clicks_limit=, device=)`` -> the family's evaluation predictor.
    ``training_step``: ``"module:Class"``, ``Class.from_config(model, trainer_config)`` -> the
    module one training forward runs (``isegm.engine.steps``).
    """

    name: str
    label: str
    model_class: type
    config_class: type
    variants: Mapping[str, Any]
    build: Callable[..., nn.Module]
    variant_config: Callable[[str], Any]
    load_state: Callable[[nn.Module, Mapping[str, Any], str], nn.Module]
    read_file: Callable[[Any, str, Optional[str]], Optional[nn.Module]]
    predictor: str
    training_step: str
    authors_classes: Tuple[str, ...] = ()
    weights: str = ""
    unpickle_globals: Tuple[Tuple[Any, str], ...] = ()
    config_bounds: Optional[Callable[[Mapping[str, Any]], Mapping[str, Bound]]] = None

    def make_predictor(self, net: Any, **settings: Any) -> Any:
        """The family's evaluation predictor for ``net`` (see ``predictor``)."""
        return _resolve(self.predictor)(net, **settings)

    def make_training_step(self, model: nn.Module, config: Any) -> nn.Module:
        """The family's training step for ``model`` (see ``training_step``)."""
        return _resolve(self.training_step).from_config(model, config)


_REGISTRY: Dict[str, ModelFamily] = {}
_LOADED: Set[str] = set()   # the FAMILY_MODULES already imported


def _resolve(target: str) -> Any:
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


def _add(family: ModelFamily) -> None:
    known = _REGISTRY.get(family.name)
    if known is not None and known != family:
        raise ValueError(f"a model family named {family.name!r} is already registered ({known.label})")
    _REGISTRY[family.name] = family


def all_families() -> List[ModelFamily]:
    """Every registered family, those of ``FAMILY_MODULES`` first, in its order."""
    for module in FAMILY_MODULES:
        if module not in _LOADED:
            _add(importlib.import_module(module).FAMILY)
            _LOADED.add(module)
    return list(_REGISTRY.values())


def register_family(family: ModelFamily) -> ModelFamily:
    """Add a family defined outside ``FAMILY_MODULES`` (a plug-in of another package)."""
    all_families()
    _add(family)
    return family


def family_named(name: str) -> ModelFamily:
    """The family whose ``name`` (our checkpoints' ``family`` key) is ``name``."""
    for family in all_families():
        if family.name == name:
            return family
    raise KeyError(f"unknown model family {name!r}; known: {', '.join(f.name for f in all_families())}")


def family_of(model: Any) -> Optional[ModelFamily]:
    """The family of ``model`` (by its class, subclasses included), or None for a model of no
    registered family (e.g. a plain callable with the RITM family's forward)."""
    by_class = {family.model_class: family for family in all_families()}
    return next((by_class[cls] for cls in type(model).__mro__ if cls in by_class), None)


def unpickle_globals() -> List[Tuple[Any, str]]:
    """The stand-ins every family allows the weights-only unpickler (see ``ModelFamily``)."""
    return [pair for family in all_families() for pair in family.unpickle_globals]
