"""Export a model as an ONNX folder that ``isegm.onnx.engine`` runs without torch.

SkipClick splits as its own code does (``encode_image`` / ``decode``)::

    encoder.onnx   image [1, 3, h, w] float in [0, 1]
                   -> every image-dependent tensor of ``ImageFeatures`` the per-click path reads:
                      the image tokens, each FPN branch's cached skip half and image terms of its
                      folded GroupNorm, the detail refiner's image features (named outputs)
    decoder.onnx   those features + points [1, 2P, 3] (y, x, index; P dynamic) + prev_mask
                   [1, 1, h, w] -> logits [1, 1, h, w]

The decoder is the model's own ``decode`` traced with the image-only tensors as inputs; the
weight-only terms (the fusion stack's position table for this grid, the folded GroupNorm
matrices) are constants of the graph. Graphs are traced by the TorchScript exporter: the dynamo
exporter stops at the models' input checks, which read tensor values.

EMC-Click splits as its protocol does (``encode_image`` on an object's first click, ``correct``
on every click); its graphs take any network size (multiples of 4)::

    encoder.onnx   image [1, 3, h, w] float in [0, 1], points [1, 2, 3] (the first click, float64)
                   -> normalized [1, 3, h, w], feature [1, C, h/4, w/4], coarse_logits [1, 1, h/4, w/4]
    decoder.onnx   normalized, feature, prev_logits [1, 1, h/4, w/4], points [1, 2P, 3] (float64)
                   -> logits [1, 1, h, w], logits_lr [1, 1, h/4, w/4] (the next click's prev_logits)

The correction network's template correlation is traced as a batched matrix product: its grouped
convolution takes the chosen templates as kernels, which the exporter cannot give a shape.
"""
from __future__ import annotations

import contextlib
import json
import os
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import __version__
from ..model.emc import EMCClick
from ..model.emc.corrector import _gather_rows
from ..model.emc.model import EMCState
from ..model.emc.predictor import EMC_DEFAULT_SHORT_SIDE, SIDE_MULTIPLE
from ..model.families import family_of
from ..model.skipclick import ImageFeatures, SkipClick
from ..model.skipclick.fast_decoder import FastHead, _conv, _from_nchw, _to_nchw, resize_matrix
from ..model.skipclick.fusion import token_grid
from ..utils.files import file_sha256
from .engine import DECODER_FILE, ENCODER_FILE, FORMAT, META_FILE, OnnxModel

DEFAULT_OPSET = 18
FOLD_IMAGE_TERMS = ("offset", "offset_mean", "cross", "offset_ss")   # a FoldedNorm's image-dependent fields
# EMC-Click: the network size its graphs are traced at (they run at any size).
EMC_TRACE_SIZE = (384, 512)

PathLike = Union[str, "os.PathLike[str]"]


# ---------------------------------------------------------------------------------------------
# SkipClick's features as named tensors


def feature_tensors(features: ImageFeatures) -> List[Tuple[str, Tensor]]:
    """The image-dependent tensors of ``features`` that ``SkipClick.decode`` reads, named, in a
    fixed order (``with_feature_tensors`` puts them back)."""
    named = [("tokens", features.tokens)]
    for b, cache in enumerate(features.neck):
        if cache.skip is not None:
            named.append((f"neck{b}_skip", cache.skip))
        for i, fold in sorted(cache.folds.items()):
            if fold.cross is not None:   # a fold with only the bias as offset holds weight terms only
                named += [(f"neck{b}_fold{i}_{name}", getattr(fold, name)) for name in FOLD_IMAGE_TERMS]
    if features.detail is not None:
        named.append(("detail", features.detail))
    return named


def with_feature_tensors(template: ImageFeatures, tensors: Sequence[Tensor]) -> ImageFeatures:
    """``template`` with its image-dependent tensors replaced by ``tensors`` (in the order of
    ``feature_tensors``); its weight terms are kept."""
    values: Iterator[Tensor] = iter(tensors)
    tokens = next(values)
    neck = []
    for cache in template.neck:
        skip = next(values) if cache.skip is not None else None
        folds = {i: replace(fold, **{name: next(values) for name in FOLD_IMAGE_TERMS}) if fold.cross is not None
                 else fold for i, fold in sorted(cache.folds.items())}
        neck.append(replace(cache, skip=skip, folds=folds))
    detail = next(values) if template.detail is not None else None
    return replace(template, taps=[], tokens=tokens, neck=neck, detail=detail)


class ExportHead(FastHead):
    """``FastHead`` whose fusion sums out of place: the TorchScript exporter drops in-place
    writes made through a view (``FastHead.fuse`` accumulates into ``total.view(...)``), which
    would leave every level but the finest out of the graph. Same function, same rounding."""

    def fuse(self, inputs: Sequence[Tensor]) -> Tensor:
        fusion = self.head.fusion_conv.conv
        w = fusion.weight.flatten(1)
        width = w.shape[0]
        shares = [F.linear(F.relu(_conv(level.conv, _from_nchw(x))), w[:, i * width:(i + 1) * width])
                  for i, (x, level) in enumerate(zip(inputs, self.head.convs))]
        B, H, W, _ = shares[0].shape
        total = shares[0] + fusion.bias
        for y in shares[1:]:
            y = torch.matmul(resize_matrix(y.shape[2], W, y), y)
            rows = resize_matrix(y.shape[1], H, y)
            total = total + torch.matmul(rows, y.reshape(B, y.shape[1], W * width)).view(B, H, W, width)
        return _to_nchw(F.relu(total))


@contextlib.contextmanager
def export_form(model: SkipClick, size: Tuple[int, int]) -> Iterator[SkipClick]:
    """``model`` as it is traced for inputs of ``size``, restored afterwards: ``ExportHead`` as
    its per-click head, no parameter requiring grad, and a DINOv2 backbone's position table
    resized once for that size (its antialiased bicubic resize has no ONNX operator; for a fixed
    size the table is a constant)."""
    head, grads = model.fast_head, [p.requires_grad for p in model.parameters()]
    vit = model.feature_extractor.vit
    model.fast_head = ExportHead(model.head)
    model.requires_grad_(False)
    if hasattr(vit, "interpolate_pos_encoding"):
        table = vit.interpolate_pos_encoding(token_grid(size, model.patch_size)).detach()
        vit.interpolate_pos_encoding = lambda grid: table   # the instance's attribute shadows the method
    try:
        yield model
    finally:
        model.fast_head = head
        vit.__dict__.pop("interpolate_pos_encoding", None)
        for p, g in zip(model.parameters(), grads):
            p.requires_grad_(g)


class SkipClickEncoder(nn.Module):
    """``encode_image`` as a graph: image -> the named feature tensors."""

    def __init__(self, model: SkipClick) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> Tuple[Tensor, ...]:
        return tuple(t for _, t in feature_tensors(self.model.encode_image(image)))


class SkipClickDecoder(nn.Module):
    """``decode`` as a graph: the named feature tensors, points, previous mask -> logits.
    ``template``: features of the export size, whose weight terms become graph constants."""

    def __init__(self, model: SkipClick, template: ImageFeatures) -> None:
        super().__init__()
        self.model = model
        self.template = template

    def forward(self, *inputs: Tensor) -> Tensor:
        *features, points, prev_mask = inputs
        return self.model.decode(with_feature_tensors(self.template, features), points, prev_mask)


def correlation_as_product(q: Tensor, k: Tensor, indices: Tensor) -> Tensor:
    """``CorrectionNetwork._correlation`` as a batched matrix product (same sums)."""
    B, C, h, w = k.shape
    kernels = _gather_rows(q.flatten(2).transpose(1, 2), indices)            # [B, K, C]
    return torch.bmm(kernels, k.reshape(B, C, h * w)).view(B, -1, h, w)


class EMCEncoder(nn.Module):
    """EMC-Click's base network as a graph: image, first click -> normalized image, feature, coarse logits."""

    def __init__(self, model: EMCClick) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor, points: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        state = self.model.encode_image(image, points)
        return state.image, state.feature, state.coarse_logits_lr


class EMCDecoder(nn.Module):
    """EMC-Click's correction step as a graph: state tensors + all clicks -> logits, 1/4-resolution logits."""

    def __init__(self, model: EMCClick) -> None:
        super().__init__()
        self.model = model

    def forward(self, normalized: Tensor, feature: Tensor, prev_logits: Tensor, points: Tensor) -> Tuple[Tensor, Tensor]:
        out = self.model.correct(EMCState(normalized, feature, prev_logits, prev_logits), points)
        return out.logits, out.logits_lr


# ---------------------------------------------------------------------------------------------
# export


def variant_name(model: nn.Module) -> str:
    """The name of the family's variant whose config the model has, or ``custom``."""
    family = family_of(model)
    return next((name for name in family.variants if family.variant_config(name) == model.config), "custom")


def export_size(model: SkipClick, size: Optional[Sequence[int]]) -> Tuple[int, int]:
    """(h, w) of the network input: ``size``, or the model's training crop (448 x 448 for the
    paper's models); ``ValueError`` unless both sides are multiples of the patch size."""
    h, w = (int(s) for s in (size if size is not None else model.config.train_size))
    token_grid((h, w), model.patch_size)
    return h, w


def export_model(model: nn.Module, out: PathLike, size: Optional[Sequence[int]] = None,
                 opset: int = DEFAULT_OPSET, source: Optional[PathLike] = None,
                 short_side: Optional[int] = None) -> Dict:
    """Write ``out/encoder.onnx``, ``out/decoder.onnx`` and ``out/meta.json`` for ``model`` (moved
    to the CPU and traced in eval mode in float32); returns the meta. ``size``: SkipClick's network input
    (h, w). ``short_side``: EMC-Click's network short side (default 384, the authors'). ``source``:
    the checkpoint the model came from (its sha256 goes into the meta). Both graphs pass
    ``onnx.checker``."""
    out = Path(out)
    model = model.cpu().float().eval()
    if isinstance(model, SkipClick):
        if short_side is not None:
            raise ValueError("short_side is EMC-Click's setting; a SkipClick export takes size (h, w)")
        h, w = export_size(model, size)
        out.mkdir(parents=True, exist_ok=True)
        _export_skipclick(model, out, (h, w), opset)
        settings = {"size": [h, w], "patch_size": model.patch_size}
    elif isinstance(model, EMCClick):
        if size is not None:
            raise ValueError("EMC-Click's graphs take any size; its predictor resizes the image's short side "
                             f"(short_side, default {EMC_DEFAULT_SHORT_SIDE}) instead of a fixed size")
        short_side = EMC_DEFAULT_SHORT_SIDE if short_side is None else int(short_side)
        if short_side < SIDE_MULTIPLE:
            raise ValueError(f"short_side must be at least {SIDE_MULTIPLE}, got {short_side}")
        out.mkdir(parents=True, exist_ok=True)
        _export_emc(model, out, opset)
        settings = {"size": None, "short_side": short_side}
    else:
        raise TypeError(f"export_model exports SkipClick and EMC-Click models, not {type(model).__name__}")
    model.eval()   # the exporter restores the wrappers' mode on every submodule
    graphs = {}
    for part, file in (("encoder", ENCODER_FILE), ("decoder", DECODER_FILE)):
        onnx.checker.check_model(str(out / file))
        graph = onnx.load(str(out / file), load_external_data=False).graph
        graphs[part] = {"file": file, "inputs": [i.name for i in graph.input], "outputs": [o.name for o in graph.output]}
    meta = {"format": FORMAT, "family": family_of(model).name, "variant": variant_name(model), **settings,
            "config": json.loads(json.dumps(model.config.to_dict())), **graphs, "opset": opset,
            "torch": torch.__version__, "skipclick": __version__,
            "source": None if source is None else os.path.basename(os.fspath(source)),
            "source_sha256": None if source is None else file_sha256(source)}
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _export_skipclick(model: SkipClick, out: Path, size: Tuple[int, int], opset: int) -> None:
    h, w = size
    with torch.no_grad(), export_form(model, size), _quiet():
        image = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
        template = model.encode_image(image)
        named = feature_tensors(template)
        names = [n for n, _ in named]
        points = torch.tensor([[[h / 2, w / 2, 0], [-1, -1, -1]]])
        prev_mask = torch.zeros(1, 1, h, w)
        torch.onnx.export(SkipClickEncoder(model).eval(), (image,), str(out / ENCODER_FILE), dynamo=False,
                          opset_version=opset, input_names=["image"], output_names=names)
        torch.onnx.export(SkipClickDecoder(model, template).eval(), (*(t for _, t in named), points, prev_mask),
                          str(out / DECODER_FILE), dynamo=False, opset_version=opset,
                          input_names=names + ["points", "prev_mask"], output_names=["logits"],
                          dynamic_axes={"points": {1: "points"}})


def _export_emc(model: EMCClick, out: Path, opset: int) -> None:
    h, w = EMC_TRACE_SIZE
    refiner = model.refiner
    refiner._correlation = correlation_as_product   # the instance's attribute shadows the method
    try:
        with torch.no_grad(), _quiet():
            image = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
            # float64 clicks, as the evaluation's Clicker makes them (the family rounds them as given)
            first = torch.tensor([[[h / 3, w / 3, 0], [-1, -1, -1]]], dtype=torch.float64)
            points = torch.tensor([[[h / 3, w / 3, 0], [h / 2, w / 4, 2], [h / 4, w / 2, 1], [-1, -1, -1]]],
                                  dtype=torch.float64)
            torch.onnx.export(EMCEncoder(model).eval(), (image, first), str(out / ENCODER_FILE), dynamo=False,
                              opset_version=opset, input_names=["image", "points"],
                              output_names=["normalized", "feature", "coarse_logits"],
                              dynamic_axes={"image": {2: "h", 3: "w"}, "points": {1: "points"}})
            normalized, feature, coarse = EMCEncoder(model)(image, first)
            torch.onnx.export(EMCDecoder(model).eval(), (normalized, feature, coarse, points), str(out / DECODER_FILE),
                              dynamo=False, opset_version=opset,
                              input_names=["normalized", "feature", "prev_logits", "points"],
                              output_names=["logits", "logits_lr"],
                              dynamic_axes={"normalized": {2: "h", 3: "w"}, "feature": {2: "h4", 3: "w4"},
                                            "prev_logits": {2: "h4", 3: "w4"}, "points": {1: "points"}})
    finally:
        del refiner._correlation


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the tracer's warnings about the models' input checks (they read tensor values,
    which a graph cannot; the engine builds valid inputs)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def check_export(model: nn.Module, folder: PathLike, clicks: int = 3, seed: int = 0) -> Tuple[float, float]:
    """Max |logits difference| between PyTorch and onnxruntime, and max |logit| of PyTorch's, on a random image (SkipClick: at
    the export size, EMC-Click: 384 x 576), ``clicks`` random clicks (positives and negatives)
    and, for SkipClick, a random previous mask."""
    onnx_model = OnnxModel(folder)
    h, w = onnx_model.size or (EMC_DEFAULT_SHORT_SIDE, EMC_DEFAULT_SHORT_SIDE * 3 // 2)
    rng = np.random.default_rng(seed)
    image = rng.random((1, 3, h, w), dtype=np.float32)
    num = max(1, (clicks + 1) // 2)
    points = np.full((1, 2 * num, 3), -1.0)
    for i in range(clicks):
        points[0, i // 2 if i % 2 == 0 else num + i // 2] = (rng.uniform(0, h - 1), rng.uniform(0, w - 1), i)
    model = model.cpu().float().eval()
    timage, tpoints = torch.from_numpy(image), torch.from_numpy(points)
    with torch.no_grad():
        if isinstance(model, EMCClick):
            first = np.where(points[..., 2:] > 0, -1.0, points)   # the base network reads the first click alone
            state = onnx_model.encode(image=image, points=first)
            logits = onnx_model.decode(**state, prev_logits=state["coarse_logits"], points=points)["logits"]
            expected = model.decode(model.encode_image(timage, torch.from_numpy(first)), tpoints)
        else:
            prev_mask = rng.random((1, 1, h, w), dtype=np.float32)
            logits = onnx_model.decode(**onnx_model.encode(image=image), points=points.astype(np.float32),
                                       prev_mask=prev_mask)["logits"]
            expected = model.decode(model.encode_image(timage), tpoints.float(), torch.from_numpy(prev_mask))
    expected = expected.numpy().astype(np.float64)
    return float(np.abs(expected - logits).max()), float(np.abs(expected).max())


__all__ = ["DEFAULT_OPSET", "check_export", "export_model", "feature_tensors",
           "variant_name", "with_feature_tensors"]
