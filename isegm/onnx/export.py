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

EMC-Click does not export (``UNSUPPORTED``): its correction network chooses its templates with a
data-dependent ``topk`` whose tie order onnxruntime does not reproduce, and runs a grouped
convolution whose kernels are those templates.
"""
from __future__ import annotations

import contextlib
import hashlib
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
from ..model.families import family_of
from ..model.skipclick import ImageFeatures, SkipClick
from ..model.skipclick.fast_decoder import FastHead, _conv, _from_nchw, _to_nchw, resize_matrix
from ..model.skipclick.fusion import token_grid
from .engine import DECODER_FILE, ENCODER_FILE, FORMAT, META_FILE, OnnxModel

DEFAULT_OPSET = 18
FOLD_IMAGE_TERMS = ("offset", "offset_mean", "cross", "offset_ss")   # a FoldedNorm's image-dependent fields
UNSUPPORTED = {
    "EMCClick": "EMC-Click does not export to ONNX: its correction network picks its templates with a "
                "data-dependent top-k (tie order differs in onnxruntime) and convolves with them as kernels; "
                "run it with PyTorch (see docs/onnx.md)",
}

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


# ---------------------------------------------------------------------------------------------
# export


def file_sha256(path: PathLike) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
                 opset: int = DEFAULT_OPSET, source: Optional[PathLike] = None) -> Dict:
    """Write ``out/encoder.onnx``, ``out/decoder.onnx`` and ``out/meta.json`` for ``model`` (eval
    mode, CPU, float32) at network size ``size`` = (h, w); returns the meta. ``source``: the
    checkpoint the model came from (its sha256 goes into the meta). Both graphs pass
    ``onnx.checker``."""
    family = family_of(model)
    name = family.name if family is not None else type(model).__name__
    if name in UNSUPPORTED:
        raise NotImplementedError(UNSUPPORTED[name])
    if not isinstance(model, SkipClick):
        raise TypeError(f"export_model exports SkipClick models, not {name}")
    h, w = export_size(model, size)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = model.cpu().float().eval()
    with torch.no_grad(), export_form(model, (h, w)), _quiet():
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
    model.eval()   # the exporter restores the wrappers' mode on every submodule
    graphs = {}
    for part, file in (("encoder", ENCODER_FILE), ("decoder", DECODER_FILE)):
        onnx.checker.check_model(str(out / file))
        graph = onnx.load(str(out / file), load_external_data=False).graph
        graphs[part] = {"file": file, "inputs": [i.name for i in graph.input], "outputs": [o.name for o in graph.output]}
    meta = {"format": FORMAT, "family": name, "variant": variant_name(model), "size": [h, w],
            "patch_size": model.patch_size, "config": json.loads(json.dumps(model.config.to_dict())),
            **graphs, "opset": opset, "torch": torch.__version__, "skipclick": __version__,
            "source": None if source is None else os.path.basename(os.fspath(source)),
            "source_sha256": None if source is None else file_sha256(source)}
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return meta


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the tracer's warnings about the models' input checks (they read tensor values,
    which a graph cannot; the engine builds valid inputs)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def check_export(model: SkipClick, folder: PathLike, clicks: int = 3, seed: int = 0) -> float:
    """Max |logits difference| between PyTorch and onnxruntime on a random image, ``clicks``
    random clicks (positives and negatives) and a random previous mask."""
    onnx_model = OnnxModel(folder)
    h, w = onnx_model.size
    rng = np.random.default_rng(seed)
    image = rng.random((1, 3, h, w), dtype=np.float32)
    prev_mask = rng.random((1, 1, h, w), dtype=np.float32)
    num = max(1, (clicks + 1) // 2)
    points = np.full((1, 2 * num, 3), -1.0, dtype=np.float32)
    for i in range(clicks):
        row = i // 2 if i % 2 == 0 else num + i // 2
        points[0, row] = (rng.uniform(0, h - 1), rng.uniform(0, w - 1), i)
    logits = onnx_model.decode(onnx_model.encode(image), points, prev_mask)
    with torch.no_grad():
        model = model.cpu().float().eval()
        expected = model.decode(model.encode_image(torch.from_numpy(image)), torch.from_numpy(points),
                                torch.from_numpy(prev_mask)).numpy()
    return float(np.abs(expected.astype(np.float64) - logits).max())


__all__ = ["DEFAULT_OPSET", "UNSUPPORTED", "check_export", "export_model", "feature_tensors", "file_sha256",
           "variant_name", "with_feature_tensors"]
