"""Parity of the EMC-Click SegFormer base network (``isegm.model.emc.segformer``) with the authors'
model, against the fixtures in ``shared/reference/emc/`` (see its README; read in place).

The model carries the ``fill.py`` weights of ``manifest_segformer_b0.json``. Checked: the
state-dict layout, every ``net.base.*`` tensor of ``golden_segformer_b0`` (inputs, click
embedding, the four stage outputs, ``feature``, coarse logits) and the batch-2 flip run's coarse
logits. Tolerances are the README's: ``max|ours - golden| <= 1e-4 * max(1, absmax_golden)`` on
full tensors, samples and channel / position means, ``__stats`` relative ``1e-4``, the binary
click disk exact.
"""
from __future__ import annotations

import functools
import importlib.util
import json
from typing import Dict

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import shared_path
from isegm.model.emc.segformer import (SegFormerFeatureExtractor, feature_extractor_state, segformer_b0,
                                       segformer_b3, tokens_to_map)

PREFIX = "feature_extractor."
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
DISK_RADIUS = 5
REL_TOL = 1e-4


def emc_file(name: str):
    return shared_path("reference", "emc", name)


@functools.lru_cache(maxsize=None)
def manifest() -> Dict:
    with open(emc_file("manifest_segformer_b0.json")) as f:
        return json.load(f)


@functools.lru_cache(maxsize=None)
def golden_index() -> Dict:
    with open(emc_file("golden_segformer_b0.json")) as f:
        return json.load(f)["keys"]


@functools.lru_cache(maxsize=None)
def npz(name: str):
    return np.load(emc_file(name))


@functools.lru_cache(maxsize=None)
def filled_model() -> SegFormerFeatureExtractor:
    """B0 with the reference ``fill.py`` weights (fill.py imported from shared/, not copied)."""
    spec = importlib.util.spec_from_file_location("emc_fill", emc_file("fill.py"))
    fill = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fill)
    state = fill.make_state_dict(manifest()["entries"], manifest()["aliases"])
    model = segformer_b0().eval()
    model.load_state_dict(feature_extractor_state(state, PREFIX), strict=True)
    return model


def normalise(rgb: torch.Tensor) -> torch.Tensor:
    """``(rgb - mean) / std`` in float32, as the authors' in-place ``sub_`` / ``div_``."""
    mean = torch.tensor(MEAN, dtype=torch.float32)[None, :, None, None]
    std = torch.tensor(STD, dtype=torch.float32)[None, :, None, None]
    return rgb.clone().sub_(mean).div_(std)


def first_click_disk(points: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The base network's click input ``[B, 1, H, W]``: the radius-5 disk of the positive click
    with index 0 (the README's DistMaps with ``is_first_point=True``, channel 1 kept).

    ``points`` is ``[B, 2N, 3]`` float64 rows ``(y, x, click_index)``, positives first.
    """
    rows = torch.arange(height, dtype=torch.float32)
    cols = torch.arange(width, dtype=torch.float32)
    disks = []
    for batch in points[:, : points.shape[1] // 2]:
        d2 = torch.full((height, width), 1e6)
        for y, x, index in batch.tolist():
            if index != 0:
                continue
            # offsets rounded once from float64, squared distance in float32
            dr = (rows.double() - y).float()
            dc = (cols.double() - x).float()
            d2 = torch.minimum(d2, dr[:, None] * dr[:, None] + dc[None, :] * dc[None, :])
        disks.append((d2 <= float(DISK_RADIUS ** 2)).float())
    return torch.stack(disks)[:, None]


@functools.lru_cache(maxsize=None)
def net_run() -> Dict[str, torch.Tensor]:
    """The ``net`` run's click-1 base pass on ``image_net``, with every stored intermediate."""
    model = filled_model()
    image = npz("golden_inputs.npz")["image_net"]
    rgb = torch.from_numpy(image).permute(2, 0, 1)[None].float().div(255)
    x = normalise(rgb)
    disk = first_click_disk(torch.from_numpy(npz("golden_segformer_b0.npz")["net.click1.points"]),
                            *x.shape[-2:])
    seen: Dict[str, torch.Tensor] = {}
    hooks = [
        model.backbone.patch_embed_side1.register_forward_hook(
            lambda m, args, out: seen.__setitem__("side_embed", tokens_to_map(*out))),
        model.backbone.patch_embed2.register_forward_pre_hook(
            lambda m, args: seen.__setitem__("stage2_in", args[0])),
        model.backbone.register_forward_hook(lambda m, args, out: seen.__setitem__("stages", out)),
    ]
    try:
        with torch.no_grad():
            out = model(x, disk)
    finally:
        for hook in hooks:
            hook.remove()
    tensors = {"net.image_nd_rgb": rgb, "net.base.normalized_image": x, "net.base.coord_features": disk,
               "net.base.side_embed": seen["side_embed"], "net.base.stage2_in": seen["stage2_in"],
               "net.base.feature": out["feature"], "net.base.logits_lr": out["instances_lr"],
               "net.base.instances": F.interpolate(out["instances_lr"], size=x.shape[-2:], mode="bilinear",
                                                   align_corners=True)}
    tensors.update({f"net.base.stage{i + 1}": c for i, c in enumerate(seen["stages"])})
    return tensors


def assert_close(name: str, ours: np.ndarray, ref: np.ndarray, absmax: float) -> None:
    err = float(np.abs(ours.astype(np.float64) - ref).max())
    assert err <= REL_TOL * max(1.0, absmax), f"{name}: max|diff| {err:.3g} (golden absmax {absmax:.3g})"


def assert_matches_golden(key: str, ours: torch.Tensor) -> None:
    """The README's rule on a full tensor, or on a summary's sample, means and stats."""
    entry, golden = golden_index()[key], npz("golden_segformer_b0.npz")
    ours = ours.numpy()
    assert list(ours.shape) == entry["shape"], key
    if entry["stored"] == "full":
        ref = golden[key]
        assert_close(key, ours, ref, float(np.abs(ref).max()))
        return
    stats = golden[f"{key}__stats"]
    sample = ours.reshape(-1)[:: int(golden[f"{key}__stride"])]
    if key == "net.base.coord_features":  # a binary map: exact
        np.testing.assert_array_equal(sample, golden[f"{key}__sample"])
    assert_close(f"{key}__sample", sample, golden[f"{key}__sample"], stats[4])
    values = ours.astype(np.float64)
    flat = values.reshape(-1)
    mine = [flat.mean(), flat.std(ddof=1), flat.min(), flat.max(), np.abs(flat).max(), np.linalg.norm(flat)]
    np.testing.assert_allclose(mine, stats, rtol=REL_TOL, atol=0, err_msg=f"{key}__stats")
    chmean = values.mean(axis=tuple(a for a in range(values.ndim) if a != 1))
    assert_close(f"{key}__chmean", chmean, golden[f"{key}__chmean"], stats[4])
    if entry["posmean"]:
        assert_close(f"{key}__posmean", values.mean(axis=1), golden[f"{key}__posmean"], stats[4])


def test_state_dict_layout_equals_manifest():
    ours = [(key, list(value.shape)) for key, value in segformer_b0().state_dict().items()]
    ref = [(key[len(PREFIX):], shape) for key, shape, _ in manifest()["entries"] if key.startswith(PREFIX)]
    assert ours == ref  # keys, order and shapes, incl. the unused norm_add and BN buffers
    assert sum(p.numel() for p in segformer_b0().parameters()) == manifest()["base_network_params"]


def test_segformer_b3_size_and_outputs():
    with torch.device("meta"):  # shapes only: no 180 MB of weights to initialise
        model = segformer_b3().eval()
        out = model(torch.empty(1, 3, 64, 96), torch.empty(1, 1, 64, 96))
    assert sum(p.numel() for p in model.parameters()) == 45_652_033  # README table, base of segb3
    assert len(model.backbone.block3) == 18 and model.backbone.norm_add.weight.shape == (64,)
    assert out["instances_lr"].shape == (1, 1, 16, 24)
    assert out["feature"].shape == (1, 512, 16, 24)


def test_golden_base_keys_are_all_covered():
    stored = {key for key in golden_index() if key.startswith("net.base.") or key == "net.image_nd_rgb"}
    assert stored == set(net_run())


@pytest.mark.parametrize("key", [
    "net.image_nd_rgb", "net.base.normalized_image", "net.base.coord_features", "net.base.side_embed",
    "net.base.stage1", "net.base.stage2_in", "net.base.stage2", "net.base.stage3", "net.base.stage4",
    "net.base.feature", "net.base.logits_lr", "net.base.instances"])
def test_base_matches_golden(key):
    assert_matches_golden(key, net_run()[key])


def test_flip_batch_coarse_logits_match_golden():
    """The evaluation run: ``image_orig`` resized (bilinear, align_corners) to 536x384, batch
    ``[x, flip(x)]``, non-integer first clicks; its coarse logits ``pred.base.logits_lr``."""
    golden = npz("golden_segformer_b0.npz")
    ref = golden["pred.base.logits_lr"]
    image = torch.from_numpy(npz("golden_inputs.npz")["image_orig"]).permute(2, 0, 1)[None].float().div(255)
    size = (ref.shape[2] * 4, ref.shape[3] * 4)
    rgb = F.interpolate(image, size=size, mode="bilinear", align_corners=True)
    rgb = torch.cat([rgb, rgb.flip(-1)])
    disk = first_click_disk(torch.from_numpy(golden["pred.click1.points"]), *size)
    with torch.no_grad():
        logits = filled_model()(normalise(rgb), disk)["instances_lr"]
    assert_close("pred.base.logits_lr", logits.numpy(), ref, float(np.abs(ref).max()))
