"""Parity of our EMC-Click with the authors' code, against the fixtures in
``shared/reference/emc/`` (read in place; see its README): state-dict layout and parameter
counts, the ``fill.py`` weights, a 3-click interaction (click 1 through the base network and the
correction network, clicks 2 and 3 through the correction network only, on the cached base
feature and the fed-back refined logits), every stored intermediate, the flip-batch evaluation
run, and the authors' checkpoint format.

Tolerances are the README's ("Tolerance and how to test"): float tensors
``max|ours - golden| <= 1e-4 * max(1, absmax_golden)`` (summaries: the strided sample, the
channel / position means; each ``__stats`` entry relatively at 1e-4); template scores atol 1e-5;
points, quantised points and template indices exact and in order; thresholded masks may differ
only where the golden probability is within 1e-4 of the threshold. In the flip-batch run a
template order may differ only as a near-tie swap (scores within 1e-5); that click then
continues with the golden indices (teacher forcing), as the README prescribes.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import json
import pickletools
import zipfile
from collections import OrderedDict
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, List, Optional

import numpy as np
import pytest
import torch

from conftest import shared_path
from isegm.inference.clicker import Click
from isegm.inference.predictor import points_from_clicks
from isegm.inference.transforms import add_flip, flip_clicks, merge_flip, resize
from isegm.model.click_maps import click_maps
from isegm.model.emc import (EMC_CONFIGS, EMCClick, authors_config, build_emc, config_from_authors,
                             is_emc_checkpoint, load_emc_checkpoint, load_emc_state, save_emc_checkpoint)

GOLDEN_MODELS = {"hrnet18s": "hr18s", "segformer_b0": "segb0"}   # fixture name -> our config
NAMES = list(GOLDEN_MODELS)
CLICKS = (1, 2, 3)
NET_SIZE = (536, 384)        # network input (image_net)
ORIG_SIZE = (398, 284)       # image_orig
LR_SIZE = (134, 96)          # 1/4 resolution
THRESHOLDS = ("0.5", "0.49")

REL_TOL = 1e-4               # README rule 2 (about 20x the float32 noise)
SCORE_ATOL = 1e-5            # README rule 3
PROB_ATOL = 1e-4             # rule 2 for probabilities (absmax <= 1)

# README "Configurations": unique parameters (total, base network, correction network).
RELEASED_PARAMS = {"hr18s": (4_322_416, 4_220_015, 102_401), "hr18": (10_239_828, 10_031_987, 207_841),
                   "hr32": (31_171_460, 30_951_331, 220_129), "segb0": (3_828_770, 3_716_129, 112_641),
                   "segb3": (45_896_738, 45_652_033, 244_705)}

# The golden keys each test compares (test_golden_keys_are_all_covered keeps this list complete).
BASE_KEYS = {
    "hrnet18s": ["normalized_image", "coord_features", "maps_transform", "stem_conv2_in", "stem_out",
                 "stage4.0", "stage4.1", "stage4.2", "stage4.3", "hrnet_feats", "aux_logits", "conv3x3_ocr",
                 "ocr_context", "feature", "logits_lr", "instances"],
    "segformer_b0": ["normalized_image", "coord_features", "side_embed", "stage1", "stage2_in", "stage2",
                     "stage3", "stage4", "feature", "logits_lr", "instances"],
}
CLICK_FLOAT_KEYS = ["click_map", "coord_dist_sq", "bin_mask", "image_conv1", "image_feature", "base_feature_fused",
                    "fuse_feature", "coord_dist_norm", "similarity", "pos_similarity", "neg_similarity",
                    "feature_q", "feature_k", "pos_corr_raw", "neg_corr_raw", "pos_corr", "neg_corr", "corr_res",
                    "attn_out", "fuse_after_attn", "all_fusion", "refine_fusion1", "refine_fusion2",
                    "logits_lr", "logits", "prob"]
SELECTION_KEYS = ["points_lr", "pos_indices", "neg_indices", "pos_scores", "neg_scores", "pos_values", "neg_values"]
CLICK_EXACT_KEYS = ["points", "click_map_count"]
MASK_KEYS = [f"mask_gt{t}_packbits" for t in THRESHOLDS]
PRED_CLICK_KEYS = ["points", "logits_lr", "points_lr", "pos_indices", "neg_indices", "pos_values", "neg_values",
                   "prob"] + MASK_KEYS
PRED_KEYS = ["image_nd_rgb", "base.logits_lr"]
NOT_COMPARED = {
    # The predictor's previous probability, the 4th input channel: the authors' models never read
    # it, nor do ours (test_fourth_input_channel_is_ignored).
    "input_prev_mask": "ignored input channel",
}


# ---------------------------------------------------------------------------------------------
# fixtures (plain cached functions: the runs are shared by many tests)

@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: on a 2-core machine shared with other jobs, two OpenMP threads that
    wait for each other make HRNet's ~400 small ops up to 30x slower; the results differ only
    at the float32 noise (README: 1 vs 2 threads <= 6.6e-6 on the logits)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def emc_file(name: str) -> Path:
    """A file of ``shared/reference/emc/`` (the test skips when the folder is absent)."""
    return shared_path("reference", "emc", name)


@functools.lru_cache(maxsize=None)
def fill_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("emc_reference_fill", emc_file("fill.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.lru_cache(maxsize=None)
def manifest(name: str) -> Dict:
    with open(emc_file(f"manifest_{name}.json")) as f:
        return json.load(f)


@functools.lru_cache(maxsize=None)
def golden(name: str) -> Any:
    return np.load(emc_file(f"golden_{name}.npz"))


@functools.lru_cache(maxsize=None)
def checks(name: str) -> Dict:
    with open(emc_file(f"golden_{name}.json")) as f:
        return json.load(f)["checks"]


@functools.lru_cache(maxsize=None)
def inputs() -> Any:
    return np.load(emc_file("golden_inputs.npz"))


@functools.lru_cache(maxsize=None)
def filled_state(name: str) -> Dict[str, torch.Tensor]:
    m = manifest(name)
    return fill_module().make_state_dict(m["entries"], m["aliases"])


@functools.lru_cache(maxsize=None)
def filled_model(name: str) -> EMCClick:
    """Our model of a fixture config with the ``fill.py`` weights (eval; do not modify)."""
    model = build_emc(GOLDEN_MODELS[name]).eval()
    model.load_state_dict(filled_state(name), strict=True)
    return model


def decode_json(value: Any) -> Any:
    """The manifests' JSON of the authors' config -> the pickled builtins (``__tuple__`` -> tuple)."""
    if isinstance(value, dict):
        if set(value) == {"__tuple__"}:
            return tuple(decode_json(v) for v in value["__tuple__"])
        return {k: decode_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_json(v) for v in value]
    return value


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """torchvision's ``ToTensor`` of an HWC uint8 image, batch 1."""
    return torch.from_numpy(image).permute(2, 0, 1)[None].float().div(255)


def golden_clicks(c: int, rows: str, coords=lambda y, x: (y, x)) -> List[Click]:
    """The first ``c`` clicks of ``golden_inputs[rows]`` (``(y, x, is_positive)``, numpy int64
    as the evaluation's Clicker makes them), at ``coords(y, x)``."""
    return [Click(bool(p), coords(y, x), i) for i, (y, x, p) in enumerate(inputs()[rows][:c])]


def net_points(c: int) -> torch.Tensor:
    return points_from_clicks([golden_clicks(c, "clicks_net")])


def pred_points(c: int) -> torch.Tensor:
    """The predictor's points: ``ResizeTrans`` (``y * (h / H)``, the ratio first), then the
    flipped copy (``x'' = w - x' - 1``)."""
    (H, W), (h, w) = ORIG_SIZE, NET_SIZE
    clicks = golden_clicks(c, "clicks_orig", lambda y, x: (y * (h / H), x * (w / W)))
    return points_from_clicks([clicks, flip_clicks(clicks, w)])


# ---------------------------------------------------------------------------------------------
# the runs

class Recorder:
    """Forward hooks that keep the intermediates the goldens store, under the golden key names
    (``prefix`` + name); a module called twice (``corr_conv``) fills the names in call order."""

    def __init__(self, model: EMCClick) -> None:
        self.values: Dict[str, torch.Tensor] = {}
        self.prefix = ""
        self.handles = []
        fe, r = model.feature_extractor, model.refiner
        self.pre(fe, ["normalized_image"])
        if model.maps_transform is not None:
            self.pre(model.maps_transform, ["coord_features"])
            self.post(model.maps_transform, ["maps_transform"])
            self.pre(fe.conv2, ["stem_conv2_in"])
            self.pre(fe.layer1, ["stem_out"])
            self.post(fe.stage4, ["stage4"], lambda out: out)
            self.pre(fe.aux_head, ["hrnet_feats"])
            self.post(fe.aux_head, ["aux_logits"])
            self.post(fe.conv3x3_ocr, ["conv3x3_ocr"])
            self.post(fe.ocr_gather_head, ["ocr_context"])
        else:
            self.pre(fe, ["coord_features"], index=1)
            self.post(fe.backbone.patch_embed_side1, ["side_embed"],
                      lambda out: out[0].transpose(1, 2).reshape(out[0].shape[0], -1, out[1], out[2]))
            self.post(fe.backbone, ["stages"], lambda out: out)
            self.pre(fe.backbone.patch_embed2, ["stage2_in"])
        self.pre(r, ["refiner_image", "click_map", "coord_dist_sq", "refiner_feature", "prev_logits_lr"], index=None)
        self.pre(r.image_conv1, ["refiner_input"])
        for module, key in [(r.image_conv1, "image_conv1"), (r.image_conv2, "image_feature"),
                            (r.refine_fusion, "base_feature_fused"), (r.fusion1, "fuse_feature"),
                            (r.feature_convq, "feature_q"), (r.feature_convk, "feature_k"),
                            (r.corr_fusion, "corr_res"), (r.all_fusion, "all_fusion"),
                            (r.refine_fusion1, "refine_fusion1"), (r.refine_fusion2, "refine_fusion2")]:
            self.post(module, [key])
        self.pre(r.corr_conv, ["pos_corr_raw", "neg_corr_raw"])
        self.post(r.corr_conv, ["pos_corr", "neg_corr"])
        self.post(r.cross_attention, ["attn_out"], lambda out: out[0])
        self.pre(r.all_fusion, ["all_fusion_in"])
        self.calls = {"feature_extractor": 0}
        self.handles.append(fe.register_forward_pre_hook(lambda m, a: self.calls.__setitem__(
            "feature_extractor", self.calls["feature_extractor"] + 1)))

    def _store(self, names: List[str], value: Any) -> None:
        for name in names:
            key = self.prefix + name
            if key not in self.values:
                self.values[key] = value
                return
        raise AssertionError(f"{names} recorded more often than expected")

    def pre(self, module, names, index: Optional[int] = 0) -> None:
        def hook(mod, args):
            if index is None:
                for name, arg in zip(names, args):
                    self._store([name], arg)
            else:
                self._store(names, args[index].detach().clone())
        self.handles.append(module.register_forward_pre_hook(hook))

    def post(self, module, names, convert=lambda out: out.detach().clone()) -> None:
        self.handles.append(module.register_forward_hook(lambda mod, args, out: self._store(names, convert(out))))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _unpack_intermediates(values: Dict[str, Any], prefix: str) -> None:
    """Hook captures -> the golden keys that are views or slices of them."""
    if prefix + "stage4" in values:
        for i, t in enumerate(values.pop(prefix + "stage4")):
            values[f"{prefix}stage4.{i}"] = t.detach().clone()
    if prefix + "stages" in values:
        for i, t in enumerate(values.pop(prefix + "stages")):
            values[f"{prefix}stage{i + 1}"] = t.detach().clone()
    if prefix + "refiner_input" in values:
        x = values.pop(prefix + "refiner_input")
        values[prefix + "bin_mask"] = x[:, 5:6]
        attn = values[prefix + "attn_out"]
        B, C, h, w = values[prefix + "fuse_feature"].shape
        values[prefix + "attn_out"] = attn.permute(1, 2, 0).reshape(B, C, h, w)
        values[prefix + "fuse_after_attn"] = values.pop(prefix + "all_fusion_in")[:, :C]


@functools.lru_cache(maxsize=None)
def net_run(name: str) -> Dict[str, Any]:
    """The ``net`` run: batch 1 at network size, one model call per click, intermediates kept."""
    model = filled_model(name)
    image = to_tensor(inputs()["image_net"])
    recorder = Recorder(model)
    calls, states = [], []
    try:
        with torch.no_grad():
            state = None
            for c in CLICKS:
                points = net_points(c)
                before = recorder.calls["feature_extractor"]
                if state is None:
                    recorder.prefix = "net.base."
                    state = model.encode_image(image, points)
                    _unpack_intermediates(recorder.values, recorder.prefix)
                    recorder.values.update({"net.image_nd_rgb": image, "net.base.feature": state.feature,
                                            "net.base.logits_lr": state.coarse_logits_lr,
                                            "net.base.instances": resize(state.coarse_logits_lr, NET_SIZE)})
                recorder.prefix = p = f"net.click{c}."
                out = model.correct(state, points)
                calls.append(recorder.calls["feature_extractor"] - before)
                states.append(dataclasses.replace(state))
                _unpack_intermediates(recorder.values, p)
                sel = out.selection
                recorder.values.update({
                    p + "points": points, p + "logits_lr": out.logits_lr, p + "logits": out.logits,
                    p + "prob": torch.sigmoid(out.logits)[0, 0], p + "coord_dist_norm": sel.dist,
                    p + "click_map_count": recorder.values[p + "click_map"].sum(dim=(2, 3)).long(),
                    **{p + k: getattr(sel, k) for k in ("points_lr", "similarity", "pos_similarity", "neg_similarity",
                                                        *SELECTION_KEYS[1:])}})
    finally:
        recorder.remove()
    return {"values": recorder.values, "calls": calls, "states": states}


def near_tie_swap(ours_idx: np.ndarray, ours_val: np.ndarray, gold_idx: np.ndarray, gold_val: np.ndarray) -> bool:
    """Whether two top-K orders differ only where the scores are within 1e-5 (README rule 3):
    at every rank that holds another pixel, the two ranked scores nearly coincide."""
    differ = ours_idx != gold_idx
    return bool(np.all(np.abs(ours_val[differ] - gold_val[differ]) <= SCORE_ATOL))


@functools.lru_cache(maxsize=None)
def pred_run(name: str) -> Dict[str, Any]:
    """The ``pred`` run (the evaluation's configuration): the original photo resized to network
    size, batch 2 with the flipped copy, float64 non-integer clicks, probabilities at the
    original size. A click whose template order differs from the golden one as a near-tie swap
    continues with the golden indices."""
    model, g = filled_model(name), golden(name)
    image = add_flip(resize(to_tensor(inputs()["image_orig"]), NET_SIZE))
    values: Dict[str, Any] = {"pred.image_nd_rgb": image}
    forced = {}
    with torch.no_grad():
        state = None
        for c in CLICKS:
            p = f"pred.click{c}."
            points = pred_points(c)
            if state is None:
                state = model.encode_image(image, points)
                values["pred.base.logits_lr"] = state.coarse_logits_lr
                values["first_state"] = dataclasses.replace(state)
            prev = state.prev_logits_lr
            out = model.correct(state, points)
            sel = out.selection
            gold = {k: g[p + k] for k in ("pos_indices", "neg_indices", "pos_values", "neg_values")}
            if any(not np.array_equal(getattr(sel, k).numpy(), gold[k]) for k in ("pos_indices", "neg_indices")):
                state.prev_logits_lr = prev
                templates = (torch.from_numpy(gold["pos_indices"]), torch.from_numpy(gold["neg_indices"]))
                forced[c] = templates
                out = model.correct(state, points, templates=templates)
            prob = resize(torch.sigmoid(merge_flip(out.logits)), ORIG_SIZE)[0, 0]
            values.update({p + "points": points, p + "logits_lr": out.logits_lr, p + "prob": prob,
                           **{p + k: getattr(sel, k) for k in SELECTION_KEYS}})
    values["forced"] = forced
    return values


# ---------------------------------------------------------------------------------------------
# comparison helpers

def assert_float(g: Any, key: str, ours: torch.Tensor) -> None:
    """README rule 2 against a full or a summarised golden tensor."""
    ours = ours.detach().double().numpy()
    if key in g.files:
        gold = g[key].astype(np.float64)
        assert ours.shape == gold.shape, f"{key}: shape {ours.shape}, golden {gold.shape}"
        err = np.abs(ours - gold).max()
        assert err <= REL_TOL * max(1.0, np.abs(gold).max()), f"{key}: max |ours - golden| = {err:.3g}"
        return
    shape = tuple(g[key + "__shape"])
    assert ours.shape == shape, f"{key}: shape {ours.shape}, golden {shape}"
    stats = g[key + "__stats"]
    atol = REL_TOL * max(1.0, stats[4])
    sample = ours.reshape(-1)[::int(g[key + "__stride"])]
    err = np.abs(sample - g[key + "__sample"]).max()
    assert err <= atol, f"{key}: max |ours - golden| over the sample = {err:.3g} (atol {atol:.3g})"
    axes = tuple(a for a in range(ours.ndim) if a != 1)
    err = np.abs(ours.mean(axis=axes) - g[key + "__chmean"]).max()
    assert err <= atol, f"{key}: channel means differ by {err:.3g}"
    if key + "__posmean" in g.files:
        err = np.abs(ours.mean(axis=1) - g[key + "__posmean"]).max()
        assert err <= atol, f"{key}: position means differ by {err:.3g}"
    flat = ours.reshape(-1)
    mine = np.array([flat.mean(), flat.std(ddof=1), flat.min(), flat.max(), np.abs(flat).max(), np.linalg.norm(flat)])
    bad = np.abs(mine - stats) > REL_TOL * np.abs(stats)
    assert not bad.any(), f"{key}: stats [mean, std, min, max, absmax, L2] {mine} vs golden {stats}"


def assert_exact(g: Any, key: str, ours: torch.Tensor) -> None:
    gold = g[key]
    ours = ours.numpy()
    assert ours.dtype == gold.dtype and ours.shape == gold.shape, \
        f"{key}: {ours.dtype} {ours.shape}, golden {gold.dtype} {gold.shape}"
    assert np.array_equal(ours, gold), f"{key}: ours {ours.tolist()} golden {gold.tolist()}"


def assert_scores(g: Any, key: str, ours: torch.Tensor) -> None:
    err = np.abs(ours.double().numpy() - g[key]).max()
    assert err <= SCORE_ATOL, f"{key}: max |ours - golden| = {err:.3g}"


def assert_masks(g: Any, prefix: str, prob: torch.Tensor, gold_prob: torch.Tensor) -> None:
    """Packed thresholded masks: the golden probability recomputed from the stored logits gives
    the stored masks; ours may differ from them only where that probability is within
    ``PROB_ATOL`` of the threshold."""
    for thr in THRESHOLDS:
        key = f"{prefix}mask_gt{thr}_packbits"
        gold = np.unpackbits(g[key]).astype(bool)[:gold_prob.numel()]
        assert np.array_equal(gold, (gold_prob > float(thr)).numpy().reshape(-1)), f"{key}: recomputed golden differs"
        differ = gold != (prob > float(thr)).numpy().reshape(-1)
        near = np.abs(gold_prob.numpy().reshape(-1) - float(thr)) <= PROB_ATOL
        assert not (differ & ~near).any(), f"{key}: {int((differ & ~near).sum())} pixels differ away from the threshold"


# ---------------------------------------------------------------------------------------------
# 1. weights and layout

@pytest.mark.parametrize("name", NAMES)
def test_fill_reproduces_fixture_hash(name):
    digest = hashlib.sha256()
    for key, tensor in filled_state(name).items():
        digest.update(key.encode() + tensor.numpy().tobytes())
    assert digest.hexdigest() == checks(name)["fill_sha256"]
    assert list(filled_state(name)) == [e[0] for e in manifest(name)["entries"]]


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_layout_matches_manifest(name):
    m = manifest(name)
    with torch.device("meta"):   # layout only: no weight initialisation needed
        model = build_emc(GOLDEN_MODELS[name])
    state = model.state_dict()
    assert [(k, list(v.shape), str(v.dtype).replace("torch.", "")) for k, v in state.items()] == \
        [tuple(e) for e in m["entries"]], f"{name}: keys, order, shapes or dtypes differ from the manifest"
    buffers = dict(model.named_buffers(remove_duplicate=False))
    assert [k for k in state if k in buffers] == m["buffers_in_state_dict"]
    params = dict(model.named_parameters())   # unique tensors, aliases once
    total = sum(p.numel() for p in params.values())
    refiner = sum(p.numel() for k, p in params.items() if k.startswith("refiner."))
    assert (total, total - refiner, refiner) == \
        (m["total_params"], m["base_network_params"], m["correction_network_params"])
    assert len(params) + len([k for k, _ in model.named_buffers() if k in state]) == m["n_unique_tensors"]


@pytest.mark.parametrize("name", NAMES)
def test_correlation_conv_aliases_are_one_module(name):
    """``corr_conv_pos`` / ``corr_conv_neg`` are listed in the state dict but share the tensors of
    ``corr_conv``: loading the alias keys writes the same weights, the last one winning."""
    model = filled_model(name)
    aliases = manifest(name)["aliases"]
    assert len(aliases) == 32
    state = model.state_dict()
    for alias, canonical in aliases.items():
        assert state[alias].data_ptr() == state[canonical].data_ptr(), alias
    assert model.refiner.corr_conv_pos is model.refiner.corr_conv is model.refiner.corr_conv_neg


@pytest.mark.parametrize("config", list(EMC_CONFIGS))
def test_parameter_counts_of_released_configs(config):
    with torch.device("meta"):
        model = build_emc(config)
    params = dict(model.named_parameters())
    total = sum(p.numel() for p in params.values())
    refiner = sum(p.numel() for k, p in params.items() if k.startswith("refiner."))
    assert (total, total - refiner, refiner) == RELEASED_PARAMS[config]


# ---------------------------------------------------------------------------------------------
# 2. the 3-click interaction (net run)

@pytest.mark.parametrize("name", NAMES)
def test_golden_keys_are_all_covered(name):
    g = golden(name)
    stored = {k.split("__")[0] for k in g.files}
    compared = {f"net.base.{k}" for k in BASE_KEYS[name]} | {"net.image_nd_rgb"} | {f"pred.{k}" for k in PRED_KEYS}
    for c in CLICKS:
        compared |= {f"net.click{c}.{k}" for k in CLICK_FLOAT_KEYS + SELECTION_KEYS + CLICK_EXACT_KEYS + MASK_KEYS}
        compared |= {f"pred.click{c}.{k}" for k in PRED_CLICK_KEYS}
        compared |= {f"net.click{c}.{k}" for k in NOT_COMPARED}
    assert stored == compared, f"not compared: {sorted(stored - compared)}; absent: {sorted(compared - stored)}"


@pytest.mark.parametrize("name", NAMES)
def test_points_are_the_authors(name):
    """Our click layout (``points_from_clicks``, float64) and the predictor's resize and flip give
    the points the authors' model received, bit for bit."""
    g = golden(name)
    for c in CLICKS:
        assert_exact(g, f"net.click{c}.points", net_points(c))
        assert_exact(g, f"pred.click{c}.points", pred_points(c))


@pytest.mark.parametrize("name", NAMES)
def test_base_network(name):
    g, values = golden(name), net_run(name)["values"]
    assert_float(g, "net.image_nd_rgb", values["net.image_nd_rgb"])
    for key in BASE_KEYS[name]:
        assert_float(g, f"net.base.{key}", values[f"net.base.{key}"])


@pytest.mark.parametrize("click", CLICKS)
@pytest.mark.parametrize("name", NAMES)
def test_correction_network_intermediates(name, click):
    g, values = golden(name), net_run(name)["values"]
    p = f"net.click{click}."
    assert_exact(g, p + "click_map_count", values[p + "click_map_count"])
    for key in CLICK_FLOAT_KEYS:
        assert_float(g, p + key, values[p + key])


@pytest.mark.parametrize("click", CLICKS)
@pytest.mark.parametrize("name", NAMES)
def test_template_selection(name, click):
    """Quantised clicks and the top-K template indices exact and in ``torch.topk`` order."""
    g, values = golden(name), net_run(name)["values"]
    p = f"net.click{click}."
    for key in ("points_lr", "pos_indices", "neg_indices"):
        assert_exact(g, p + key, values[p + key])
    for key in ("pos_scores", "neg_scores", "pos_values", "neg_values"):
        assert_scores(g, p + key, values[p + key])


@pytest.mark.parametrize("click", CLICKS)
@pytest.mark.parametrize("name", NAMES)
def test_masks(name, click):
    g, values = golden(name), net_run(name)["values"]
    p = f"net.click{click}."
    gold_prob = torch.sigmoid(resize(torch.from_numpy(g[p + "logits_lr"]), NET_SIZE))[0, 0]
    assert_masks(g, p, values[p + "prob"], gold_prob)


@pytest.mark.parametrize("name", NAMES)
def test_cache_between_clicks(name):
    """The base network runs on click 1 only; later clicks reuse its feature (the same tensor)
    and read the previous click's refined 1/4-resolution logits as their mask, bit for bit."""
    run, facts = net_run(name), checks(name)
    values = run["values"]
    assert run["calls"] == facts["feature_extractor_calls_per_click"] == [1, 0, 0]
    assert all(values[f"net.click{c}.refiner_feature"] is values["net.base.feature"] for c in CLICKS)
    assert values["net.click1.prev_logits_lr"] is values["net.base.logits_lr"]
    for c in CLICKS[1:]:
        assert torch.equal(values[f"net.click{c}.prev_logits_lr"], values[f"net.click{c - 1}.logits_lr"])
    assert torch.equal(run["states"][-1].prev_logits_lr, values["net.click3.logits_lr"])


@pytest.mark.parametrize("name", NAMES)
def test_forced_templates_set_the_correlation_order(name):
    """Templates given to ``correct`` replace the selected ones in the given order: the golden
    indices (equal to ours here) reproduce click 3 bit for bit, and swapping two adjacent
    positive templates changes the logits far beyond float noise (README: 0.09 to 0.87)."""
    model, run = filled_model(name), net_run(name)
    values = run["values"]
    g = golden(name)
    pos, neg = (torch.from_numpy(g[f"net.click3.{k}"]) for k in ("pos_indices", "neg_indices"))
    swapped = pos.clone()
    swapped[0, [0, 1]] = pos[0, [1, 0]]
    outputs = []
    with torch.no_grad():
        for templates in ((pos, neg), (swapped, neg)):
            state = dataclasses.replace(run["states"][1])   # after click 2
            outputs.append(model.correct(state, net_points(3), templates=templates).logits_lr)
    assert torch.equal(outputs[0], values["net.click3.logits_lr"])
    assert (outputs[1] - outputs[0]).abs().max() > 1e-2


# ---------------------------------------------------------------------------------------------
# 3. the evaluation configuration (pred run: resize, flip batch, non-integer clicks)

@pytest.mark.parametrize("name", NAMES)
def test_flip_batch_base_network(name):
    g, values = golden(name), pred_run(name)
    assert_float(g, "pred.image_nd_rgb", values["pred.image_nd_rgb"])
    assert_float(g, "pred.base.logits_lr", values["pred.base.logits_lr"])


@pytest.mark.parametrize("click", CLICKS)
@pytest.mark.parametrize("name", NAMES)
def test_flip_batch_template_selection(name, click):
    """Per branch, the templates are the golden ones in order, or (only) a near-tie swap."""
    g, values = golden(name), pred_run(name)
    p = f"pred.click{click}."
    assert_exact(g, p + "points_lr", values[p + "points_lr"])
    for sign in ("pos", "neg"):
        assert_scores(g, f"{p}{sign}_values", values[f"{p}{sign}_values"])
        ours, gold = values[f"{p}{sign}_indices"].numpy(), g[f"{p}{sign}_indices"]
        assert ours.shape == gold.shape
        if not np.array_equal(ours, gold):
            assert near_tie_swap(ours, values[f"{p}{sign}_values"].numpy(), gold, g[f"{p}{sign}_values"]), \
                f"{p}{sign}_indices differ beyond a near-tie swap: ours {ours.tolist()} golden {gold.tolist()}"


@pytest.mark.parametrize("click", CLICKS)
@pytest.mark.parametrize("name", NAMES)
def test_flip_batch_predictions(name, click):
    """Refined logits per branch (each branch feeds back its own), and the predictor's chain:
    flip-average of the logits, sigmoid, resize to the original photo, thresholds."""
    g, values = golden(name), pred_run(name)
    p = f"pred.click{click}."
    assert_float(g, p + "logits_lr", values[p + "logits_lr"])
    assert_float(g, p + "prob", values[p + "prob"])
    gold_logits = resize(torch.from_numpy(g[p + "logits_lr"]), NET_SIZE)
    gold_prob = resize(torch.sigmoid(merge_flip(gold_logits)), ORIG_SIZE)[0, 0]
    assert_masks(g, p, values[p + "prob"], gold_prob)


def test_documented_near_tie_with_golden_templates():
    """README: segformer_b0's flip-batch click 1 is near-tie sensitive (margins ~1e-6). Its
    downstream path with the golden template indices forced matches the golden logits."""
    name = "segformer_b0"
    g, values = golden(name), pred_run(name)
    assert min(v for k, v in checks(name).items() if k.startswith("pred.click1.") and k.endswith("boundary")) < 2e-6
    templates = tuple(torch.from_numpy(g[f"pred.click1.{k}"]) for k in ("pos_indices", "neg_indices"))
    with torch.no_grad():
        out = filled_model(name).correct(dataclasses.replace(values["first_state"]), pred_points(1), templates)
    assert_float(g, "pred.click1.logits_lr", out.logits_lr)


# ---------------------------------------------------------------------------------------------
# 4. the authors' checkpoint format

def _pickle_globals(path: Path) -> set:
    with zipfile.ZipFile(path) as archive:
        data = archive.read(next(n for n in archive.namelist() if n.endswith("/data.pkl")))
    found, strings = set(), []
    for opcode, arg, _ in pickletools.genops(data):
        if opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(arg)
        elif opcode.name == "GLOBAL":
            found.add(arg.replace(" ", "."))
        elif opcode.name == "STACK_GLOBAL":
            found.add(f"{strings[-2]}.{strings[-1]}")
    assert data[:2] == b"\x80\x02", "not pickle protocol 2"
    return found


@pytest.mark.parametrize("name", NAMES)
def test_authors_config_round_trip(name):
    stored = decode_json(manifest(name)["config"])
    config = config_from_authors(stored, "manifest")
    assert config == EMC_CONFIGS[GOLDEN_MODELS[name]]
    ours = authors_config(config)
    assert ours == stored and list(ours["params"]) == list(stored["params"])


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_save_and_load(name, tmp_path):
    """Our file is the authors' format: ``{'state_dict', 'config'}``, protocol 2, only the four
    pickle globals they have, one storage per aliased triple; it loads back bit for bit."""
    m, model = manifest(name), filled_model(name)
    path = tmp_path / "emc.pth"
    save_emc_checkpoint(model, path)
    assert _pickle_globals(path) == {"collections.OrderedDict", "torch._utils._rebuild_tensor_v2",
                                     "torch.FloatStorage", "torch.LongStorage"}
    with zipfile.ZipFile(path) as archive:
        storages = [n for n in archive.namelist() if "/data/" in n and not n.endswith("serialization_id")]
    assert len(storages) == m["checkpoint_format"]["n_storage_records"] == m["n_unique_tensors"]
    raw = torch.load(path, weights_only=True)
    assert list(raw) == ["state_dict", "config"] and type(raw["state_dict"]) is OrderedDict
    assert raw["config"] == decode_json(m["config"])

    loaded = load_emc_checkpoint(path, name=GOLDEN_MODELS[name])
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    state = loaded.state_dict()
    assert list(state) == list(filled_state(name))
    for key, value in filled_state(name).items():
        assert torch.equal(state[key], value), key


@pytest.mark.parametrize("name", NAMES)
def test_loads_authors_written_file(name, tmp_path):
    """A file as the authors' ``save_checkpoint`` writes it (their config, separate alias
    storages) loads; so does one without the alias keys; differing aliases warn and the
    ``corr_conv_neg`` copy wins, as with the authors' loader."""
    m, state = manifest(name), filled_state(name)
    path = tmp_path / "authors.pth"
    torch.save({"state_dict": OrderedDict(state), "config": decode_json(m["config"])}, path)
    assert is_emc_checkpoint(torch.load(path, weights_only=True))
    skipclick = {"class": "isegm.model.is_featurevit_model.FeatureVitModel"}
    assert not is_emc_checkpoint({"state_dict": {}, "config": skipclick})
    assert torch.equal(load_emc_checkpoint(path).refiner.corr_conv.conv1x1.weight,
                       state["refiner.corr_conv.conv1x1.weight"])

    without = {k: v for k, v in state.items() if k not in m["aliases"]}
    model = load_emc_state(EMCClick(EMC_CONFIGS[GOLDEN_MODELS[name]]), without)
    assert torch.equal(model.refiner.corr_conv_neg.norm2.running_var, state["refiner.corr_conv.norm2.running_var"])

    differing = dict(state)
    differing["refiner.corr_conv_neg.conv1x1.bias"] = state["refiner.corr_conv.conv1x1.bias"] + 1
    with pytest.warns(UserWarning, match="corr_conv_neg"):
        model = load_emc_state(EMCClick(EMC_CONFIGS[GOLDEN_MODELS[name]]), differing)
    assert torch.equal(model.refiner.corr_conv.conv1x1.bias, differing["refiner.corr_conv_neg.conv1x1.bias"])


def test_checkpoint_errors_name_file_and_setting(tmp_path):
    state = filled_state("hrnet18s")
    config = decode_json(manifest("hrnet18s")["config"])
    empty: Dict[str, torch.Tensor] = {}   # the config is checked before the weights

    def write(name: str, obj: Any) -> Path:
        torch.save(obj, tmp_path / name)
        return tmp_path / name

    bad_class = dict(config, **{"class": "isegm.model.is_hrnet_model.HRNetModel"})
    with pytest.raises(ValueError, match=r"class\.pth.*class='isegm\.model\.is_hrnet_model\.HRNetModel'"):
        load_emc_checkpoint(write("class.pth", {"state_dict": empty, "config": bad_class}))
    rgb = json.loads(json.dumps(config))
    rgb["params"]["use_rgb_conv"]["value"] = True
    with pytest.raises(ValueError, match=r"rgb\.pth.*use_rgb_conv=True"):
        load_emc_checkpoint(write("rgb.pth", {"state_dict": empty, "config": rgb}))
    corr = json.loads(json.dumps(config))
    corr["params"]["refiner_conf"]["value"]["corr_channel"] = 32
    with pytest.raises(ValueError, match=r"corr_channel=32"):
        load_emc_checkpoint(write("corr.pth", {"state_dict": empty, "config": corr}))
    partial = {k: v for k, v in state.items() if not k.startswith("refiner.refine_pred")}
    with pytest.raises(ValueError, match=r"partial\.pth.*2 missing keys.*refine_pred"):
        load_emc_checkpoint(write("partial.pth", {"state_dict": partial, "config": config}))
    with pytest.raises(ValueError, match=r"not 'hr32'"):
        load_emc_checkpoint(write("ok.pth", {"state_dict": empty, "config": config}), name="hr32")
    with pytest.raises(ValueError, match=r"plain\.pth.*not an EMC-Click checkpoint"):
        load_emc_checkpoint(write("plain.pth", state))
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        load_emc_checkpoint(tmp_path / "absent.pth")


# ---------------------------------------------------------------------------------------------
# 5. the API on a small image (random weights)

@pytest.fixture(scope="module")
def small_model() -> EMCClick:
    torch.manual_seed(0)
    return build_emc("hr18s").eval()


def _small_inputs():
    generator = torch.Generator().manual_seed(1)
    image = torch.rand(2, 3, 64, 48, generator=generator)
    points = torch.tensor([[[20.0, 30.0, 0.0], [-1, -1, -1]], [[10.0, 11.5, 1.0], [40.0, 7.0, 0.0]]],
                          dtype=torch.float64)
    return image, points


def test_forward_is_encode_then_decode(small_model):
    image, points = _small_inputs()
    with torch.no_grad():
        out = small_model(torch.cat([image, torch.zeros_like(image[:, :1])], 1), points)
        state = small_model.encode_image(image, points)
        logits = small_model.decode(state, points)
    assert torch.equal(out["instances"], logits)
    assert out["instances"].shape == (2, 1, 64, 48) and out["instances_lr"].shape == (2, 1, 16, 12)
    assert torch.equal(state.prev_logits_lr, out["instances_lr"])
    assert torch.equal(out["coarse"], resize(state.coarse_logits_lr, (64, 48)))


def test_fourth_input_channel_is_ignored(small_model):
    image, points = _small_inputs()
    with torch.no_grad():
        zeros = small_model(torch.cat([image, torch.zeros_like(image[:, :1])], 1), points)["instances"]
        noise = small_model(torch.cat([image, torch.rand_like(image[:, :1])], 1), points)["instances"]
    assert torch.equal(zeros, noise)


def test_base_network_sees_only_the_first_click(small_model):
    """Batch item 1's first click (index 0) is the negative one: its base input is an empty
    disk, and later clicks never change the base output."""
    image, points = _small_inputs()
    more = torch.tensor([[[20.0, 30.0, 0.0], [30.0, 30.0, 2.0], [-1, -1, -1], [-1, -1, -1]],
                         [[10.0, 11.5, 1.0], [5.0, 5.0, 2.0], [40.0, 7.0, 0.0], [-1, -1, -1]]], dtype=torch.float64)
    with torch.no_grad():
        a, b = small_model.encode_image(image, points), small_model.encode_image(image, more)
    assert torch.equal(a.coarse_logits_lr, b.coarse_logits_lr) and torch.equal(a.feature, b.feature)


def test_click_maps_round_the_float64_offsets_once():
    """DistMaps: ``row - y`` in the points' dtype rounded once to float32, a padding row is
    ``1e6`` away, a polarity's map is the min over its clicks."""
    points = torch.tensor([[[2.3, 1.0, 0.0], [-1, -1, -1]]], dtype=torch.float64)
    disks, dist_sq = click_maps(points, (6, 5), radius=2)
    dy = (torch.arange(6, dtype=torch.float64) - 2.3).float()
    expected = dy[:, None] ** 2 + (torch.arange(5) - 1.0)[None, :] ** 2
    assert torch.equal(dist_sq[0, 0], expected)
    assert torch.equal(dist_sq[0, 1], torch.full((6, 5), 1e6))
    assert torch.equal(disks[0, 0], (expected <= 4).float()) and not disks[0, 1].any()


def test_input_errors_name_the_fix(small_model):
    image, points = _small_inputs()
    with pytest.raises(ValueError, match="multiples of 4"):
        small_model.encode_image(image[..., :62, :], points)
    with pytest.raises(ValueError, match=r"points must be \[B=2, 2N, 3\]"):
        small_model.encode_image(image, points[:, :1])
    with pytest.raises(ValueError, match=r"\[B, 4, H, W\]"):
        small_model(image, points)
    with pytest.raises(ValueError, match="fewer 1/4-resolution pixels than the 64 templates"):
        small_model.encode_image(image[..., :28, :28], points)
