"""Layer-by-layer parity against the reference goldens (``../shared/reference/model/README.md``).

Useful to anyone porting weights or changing a layer: ``trace`` runs the model once and returns
every intermediate under the goldens' names, ``compare`` checks one tensor against a golden entry
(stored in full or as a summary), and ``first_divergence`` names the first layer that disagrees.

Golden summaries (tensors of more than 16384 elements) hold, for ``<key>``:
``__shape``, ``__stride`` (sampling step), ``__sample`` (``t.reshape(-1)[::stride]``),
``__stats`` (float64 ``[mean, std (unbiased), min, max, absmax, L2]``), ``__chmean`` (mean over
every axis but the channel axis) and ``__posmean`` (mean over the channel axis, when small).
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

# The README's recommended tolerances.
LOGITS_ATOL = 3e-5          # logits, head_out: about 10x the original's own float32 error
INTERMEDIATE_ATOL = 1e-4    # samples, chmean and posmean of every other intermediate
STATS_RTOL = 1e-5           # __stats entries (see ``_stats_tolerance`` for what "relative" means)
EXACT = 0.0                 # coord_features: 0/1 maps, bit-exact

# The DINO backbone taps of the authors' extractor (0-based blocks).
TAP_BLOCKS = (2, 5, 8, 11)

STAT_NAMES = ("mean", "std", "min", "max", "absmax", "l2")

Golden = Mapping[str, np.ndarray]


def tolerance(name: str) -> float:
    """The README's absolute tolerance for intermediate ``name`` (0 means exact)."""
    if name == "coord_features":
        return EXACT
    if name in ("logits", "head_out"):
        return LOGITS_ATOL
    return INTERMEDIATE_ATOL


def trace_names(depth: int = 12, mixer_depth: int = 4) -> List[str]:
    """Every intermediate name of the goldens, in data-flow order."""
    return (["normalized_image", "dino_patch_embed", "dino_tokens_in"]
            + [f"dino_block.{i}" for i in range(depth)]
            + [f"extract.{i}" for i in range(len(TAP_BLOCKS))]
            + ["fused", "coord_features", "coord_embed", "mixer_in_image_tokens"]
            + [f"mixer_block.{i}" for i in range(mixer_depth)]
            + ["mixer_out"] + [f"fpn.{i}" for i in range(4)]
            + ["head_fusion", "head_out", "logits"])


# ---------------------------------------------------------------------------------------------
# compare

def _channel_axis(shape: Sequence[int], chmean_len: Optional[int], channels_last: Optional[bool]) -> int:
    """The channel axis: last for token tensors ``[B,N,C]`` and ``[B,H,W,C]``, 1 for ``[B,C,H,W]``.

    A 4-d tensor is ambiguous from its shape alone (DINOv3's ``dino_patch_embed`` is stored
    ``[1,gh,gw,768]``), so unless ``channels_last`` says, the axis whose length matches the stored
    ``__chmean`` wins, with axis 1 on a tie.
    """
    if len(shape) != 4:
        return len(shape) - 1
    if channels_last is not None:
        return 3 if channels_last else 1
    if chmean_len is not None and shape[3] == chmean_len and shape[1] != chmean_len:
        return 3
    return 1


def _max_dev(ours: np.ndarray, golden: np.ndarray) -> Tuple[float, int]:
    """Largest ``|ours - golden|`` (inf where either is not finite) and its flat index."""
    diff = np.abs(ours.astype(np.float64).reshape(-1) - golden.astype(np.float64).reshape(-1))
    diff[~np.isfinite(diff)] = np.inf
    if diff.size == 0:
        return 0.0, 0
    i = int(np.argmax(diff))
    return float(diff[i]), i


def _check(name: str, what: str, ours: np.ndarray, golden: np.ndarray, atol: float) -> Optional[str]:
    if ours.size != golden.size:
        return f"{name}: {what} has {ours.size} values, golden {golden.size}"
    dev, i = _max_dev(ours, golden)
    if dev <= atol:
        return None
    return (f"{name}: {what} max |diff| {dev:.3g} > atol {atol:g} at flat index {i} "
            f"(ours {float(ours.reshape(-1)[i]):.7g}, golden {float(golden.reshape(-1)[i]):.7g})")


def tensor_stats(t: Tensor) -> np.ndarray:
    """``[mean, std (unbiased), min, max, absmax, L2]`` in float64, as the goldens store them."""
    x = t.detach().double().reshape(-1)
    std = x.std(unbiased=True) if x.numel() > 1 else x.new_zeros(())
    return torch.stack([x.mean(), std, x.min(), x.max(), x.abs().max(), x.norm()]).cpu().numpy()


def _stats_tolerance(golden_stats: np.ndarray, rtol: float) -> np.ndarray:
    """Per-entry tolerance ``rtol * max(|golden entry|, absmax)``.

    "Relative 1e-5" cannot mean relative to the entry itself for all six entries: a mean near 0
    (or a minimum of 0 after a ReLU) would then allow no float32 rounding at all. Every entry
    is therefore taken relative to the tensor's scale, its absmax (golden entry 4), unless the
    entry is larger (the L2 norm): the bound is then ``1e-5 * absmax`` for mean, std, min, max
    and absmax, and ``1e-5 * L2`` for the norm. The original's own float32 error is at most
    ~1.5e-6 of absmax (README), so this keeps the README's ~10x margin and loosens nothing else.
    """
    scale = np.maximum(np.abs(golden_stats), abs(float(golden_stats[4])))
    return rtol * scale


def compare(name: str, ours: Tensor, golden: Golden, key: str, atol: float,
            stats_rtol: float = STATS_RTOL, channels_last: Optional[bool] = None) -> Optional[str]:
    """Check ``ours`` against golden entry ``key`` (stored in full or as a summary).

    ``atol`` bounds full values, ``__sample``, ``__chmean`` and ``__posmean``; ``atol=0`` demands
    exact equality. ``__stats`` entries use ``_stats_tolerance``. ``ours`` may have another shape
    with the same number of elements (e.g. ``[1, gh*gw, C]`` against ``[1, gh, gw, C]``, or an
    NCHW view of channels-last memory): it is reshaped in logical (C) order to the golden shape.
    Returns None when equal within tolerance, else a one-line message with the largest deviation.
    """
    t = ours.detach().cpu()
    if key in golden:
        g = np.asarray(golden[key])
        if t.numel() != g.size:
            return f"{name}: shape {tuple(t.shape)} != golden {tuple(g.shape)}"
        return _check(name, "value", t.reshape(g.shape).double().numpy(), g, atol)
    if f"{key}__shape" not in golden:
        return f"{name}: golden has no entry {key!r}"
    shape = tuple(int(s) for s in np.asarray(golden[f"{key}__shape"]))
    if t.numel() != math.prod(shape):
        return f"{name}: shape {tuple(t.shape)} != golden {shape}"
    t = t.reshape(shape)
    flat = t.reshape(-1)
    stride = int(np.asarray(golden[f"{key}__stride"]))
    msg = _check(name, f"sample (every {stride}th)", flat[::stride].double().numpy(),
                 np.asarray(golden[f"{key}__sample"]), atol)
    if msg:
        return msg
    x = t.double()
    if f"{key}__chmean" in golden:
        chmean = np.asarray(golden[f"{key}__chmean"])
        axis = _channel_axis(shape, chmean.size, channels_last)
        other = tuple(d for d in range(len(shape)) if d != axis)
        msg = _check(name, f"chmean (axis {axis})", x.mean(dim=other).numpy(), chmean, atol)
        if msg:
            return msg
        if f"{key}__posmean" in golden:
            msg = _check(name, f"posmean (axis {axis})", x.mean(dim=axis).numpy(),
                         np.asarray(golden[f"{key}__posmean"]), atol)
            if msg:
                return msg
    if f"{key}__stats" in golden:
        g_stats = np.asarray(golden[f"{key}__stats"], dtype=np.float64)
        o_stats = tensor_stats(t)
        dev = np.abs(o_stats - g_stats)
        tol = _stats_tolerance(g_stats, stats_rtol)
        bad = ~(dev <= tol)
        if bad.any():
            i = int(np.argmax(np.where(bad, dev / np.maximum(tol, 1e-300), -1.0)))
            return (f"{name}: stats {STAT_NAMES[i]} ours {o_stats[i]:.9g} vs golden {g_stats[i]:.9g} "
                    f"(|diff| {dev[i]:.3g} > {tol[i]:.3g} = {stats_rtol:g} * max(|golden|, absmax))")
    return None


def summarize(key: str, t: Tensor, channel_axis: Optional[int] = None,
              max_full: int = 16384) -> Dict[str, np.ndarray]:
    """Golden entries for ``t`` in the reference format (full, or a summary above ``max_full``).

    ``channel_axis`` defaults to the last axis, or 1 for 4-d tensors (NCHW).
    """
    t = t.detach().cpu().float().contiguous()
    if t.numel() <= max_full:
        return {key: t.numpy().copy()}
    n = t.numel()
    stride = _next_prime(-(-n // 4096))
    out = {f"{key}__shape": np.asarray(t.shape, dtype=np.int64),
           f"{key}__stride": np.asarray(stride, dtype=np.int64),
           f"{key}__sample": t.reshape(-1)[::stride].numpy().copy(),
           f"{key}__stats": tensor_stats(t)}
    if t.dim() >= 2:
        axis = channel_axis if channel_axis is not None else (1 if t.dim() == 4 else t.dim() - 1)
        x = t.double()
        out[f"{key}__chmean"] = x.mean(dim=tuple(d for d in range(t.dim()) if d != axis)).float().numpy()
        posmean = x.mean(dim=axis)
        if posmean.numel() <= max_full:
            out[f"{key}__posmean"] = posmean.float().numpy()
    return out


def _next_prime(n: int) -> int:
    n = max(n, 2)
    while any(n % p == 0 for p in range(2, int(math.isqrt(n)) + 1)):
        n += 1
    return n


# ---------------------------------------------------------------------------------------------
# trace

@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for the duration (DINOv3 jitters its RoPE coordinates in training mode)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _first(x):
    return x[0] if isinstance(x, (tuple, list)) else x


def trace(model: nn.Module, image: Tensor, prev_mask: Tensor, points: Tensor) -> Dict[str, Tensor]:
    """Run the full forward ``model(cat([image, prev_mask], 1), points)`` once (eval, no_grad)
    and return every intermediate under the goldens' names, in data-flow order.

    Intermediates come from forward hooks, so the model's own code path is what is traced.
    Extras: ``head_fusion`` recomputes ``head.fuse`` on the FPN outputs (``fuse`` uses the
    fusion conv's weights directly, so there is no module to hook), and for single-tap models
    (the block-2 quirk) ``extract.0..3`` come from one more backbone pass that runs all blocks
    with taps (2, 5, 8, 11), since the model itself stops after block 2.
    """
    vit = model.feature_extractor.vit
    found: Dict[str, Tensor] = {}

    def keep(name: str, value: Tensor) -> None:
        # First occurrence wins: the extra backbone pass must not overwrite the forward's values.
        if name not in found:
            found[name] = value.detach().clone()

    def on_output(name: str) -> Callable:
        return lambda module, args, output: keep(name, _first(output))

    def on_input(name: str, kw: str) -> Callable:
        return lambda module, args, kwargs: keep(name, args[0] if args else kwargs[kw])

    hooks = [vit.patch_embed.register_forward_pre_hook(on_input("normalized_image", "x"), with_kwargs=True),
             vit.patch_embed.register_forward_hook(on_output("dino_patch_embed")),
             vit.blocks[0].register_forward_pre_hook(on_input("dino_tokens_in", "x"), with_kwargs=True)]
    hooks += [b.register_forward_hook(on_output(f"dino_block.{i}")) for i, b in enumerate(vit.blocks)]

    def on_taps(module, args, output) -> None:
        if len(output) == len(TAP_BLOCKS):
            for i, tap in enumerate(output):
                keep(f"extract.{i}", tap)

    hooks.append(model.feature_extractor.register_forward_hook(on_taps))
    if model.fuse is not None:
        hooks.append(model.fuse.register_forward_hook(on_output("fused")))
    hooks += [model.patch_embed_coords.register_forward_pre_hook(on_input("coord_features", "x"), with_kwargs=True),
              model.patch_embed_coords.register_forward_hook(on_output("coord_embed")),
              model.backbone_mix.register_forward_pre_hook(on_input("mixer_in_image_tokens", "image_tokens"),
                                                           with_kwargs=True),
              model.backbone_mix.register_forward_hook(on_output("mixer_out"))]
    hooks += [b.register_forward_hook(on_output(f"mixer_block.{i}")) for i, b in enumerate(model.backbone_mix.blocks)]

    def on_fpn(module, args, output) -> None:
        for i, level in enumerate(output):
            keep(f"fpn.{i}", level)

    hooks += [model.fast_neck.register_forward_hook(on_fpn),
              model.fast_head.register_forward_hook(on_output("head_out"))]
    try:
        with torch.no_grad(), _eval_mode(model):
            out = model(torch.cat([image, prev_mask], dim=1), points)
            keep("logits", out["instances"])
            keep("head_fusion", model.head.fuse([found[f"fpn.{i}"] for i in range(4)]))
            if "extract.0" not in found:
                taps = vit.get_intermediate_layers(found["normalized_image"], TAP_BLOCKS,
                                                   norm=model.feature_extractor.tap_norm)
                for i, tap in enumerate(taps):
                    keep(f"extract.{i}", tap)
    finally:
        for h in hooks:
            h.remove()
    order = trace_names(len(vit.blocks), len(model.backbone_mix.blocks))
    return {name: found[name] for name in order if name in found}


# ---------------------------------------------------------------------------------------------
# first_divergence

def trace_inputs(inputs: Golden, tag: str) -> Tuple[Tensor, Tensor, Tensor]:
    """``(image, prev_mask, points)`` of a tag of ``golden_inputs.npz``."""
    return tuple(torch.from_numpy(np.array(inputs[f"{tag}.{k}"])) for k in ("image", "prev_mask", "points"))


def golden_names(golden: Golden, tag: str, path: str = "fwd") -> List[str]:
    """Intermediate names the golden stores for ``<tag>.<path>``."""
    prefix = f"{tag}.{path}."
    return sorted({k[len(prefix):].split("__")[0] for k in golden if k.startswith(prefix)})


def divergences(traced: Mapping[str, Tensor], golden: Golden, tag: str, path: str = "fwd",
                stop_at_first: bool = False) -> List[Tuple[str, str]]:
    """``(name, message)`` for every golden intermediate of ``<tag>.<path>`` that disagrees,
    in data-flow order; golden names the trace lacks are reported after the traced ones."""
    wanted = set(golden_names(golden, tag, path))
    failures = []
    for name, value in traced.items():
        if name not in wanted:
            continue
        wanted.discard(name)
        msg = compare(name, value, golden, f"{tag}.{path}.{name}", tolerance(name))
        if msg:
            failures.append((name, msg))
            if stop_at_first:
                return failures
    failures += [(name, f"{name}: in the golden but not produced by the trace") for name in sorted(wanted)]
    return failures


def first_divergence(model: nn.Module, inputs: Golden, golden: Golden, tag: str, config_name: str,
                     traced: Optional[Mapping[str, Tensor]] = None) -> Optional[str]:
    """The first layer (in data-flow order) where ``model`` leaves the golden, as one line.

    ``inputs``: ``golden_inputs.npz``; ``golden``: ``golden_<config_name>.npz``; ``tag``: e.g.
    ``s224``. Pass ``traced`` to reuse a trace of the same inputs. Returns None when every
    intermediate agrees within the README's tolerances.
    """
    if traced is None:
        traced = trace(model, *trace_inputs(inputs, tag))
    failures = divergences(traced, golden, tag, stop_at_first=True)
    if not failures:
        return None
    name, msg = failures[0]
    return f"{config_name}/{tag}: first divergence at {name}: {msg}"


__all__ = ["EXACT", "INTERMEDIATE_ATOL", "LOGITS_ATOL", "STATS_RTOL", "TAP_BLOCKS", "compare",
           "divergences", "first_divergence", "golden_names", "summarize", "tensor_stats",
           "tolerance", "trace", "trace_inputs", "trace_names"]
