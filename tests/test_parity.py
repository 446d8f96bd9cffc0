"""Parity with the authors' SkipClick, against the reference fixtures in
``shared/reference/model/`` (see its README): state-dict layout, fill, full-forward logits,
late fusion, every traced intermediate, positional tables, construction details, the block-2
quirk and the layer-by-layer helper in ``parity_harness``.

Every model carries the ``fill.py`` weights of its reference config. Tolerances are the README's
(``parity.tolerance``): logits / head_out ``atol 3e-5``, other intermediates ``1e-4`` on samples and
channel / position means, ``__stats`` relative ``1e-5``, ``coord_features`` exact.

The default run (``-m "not slow"``) covers s224 for every config, s448 and r224x336 for
``skip`` / ``dinov3_skip``, late fusion incl. the second click, and the helper checks; the
``slow`` ones add s448 for the other configs and late fusion at the larger sizes.
"""
from __future__ import annotations

import copy
import hashlib
import json
from typing import Dict, Optional, Tuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import parity_harness as parity
from conftest import REFERENCE_VARIANTS, reference_file
from isegm.model import build_skipclick
from isegm.model.backbones import DinoV3, build_backbone
from isegm.model.layers import LinearKMaskedBias

CONFIGS = list(REFERENCE_VARIANTS)                    # baseline_unfrozen, frozen, intermediate, skip, dinov3_skip
DINOV2_CONFIGS = [c for c in CONFIGS if c != "dinov3_skip"]
SKIP_CONFIGS = ["skip", "dinov3_skip"]                # the original's working late-fusion configs
QUIRK_CONFIGS = ["baseline_unfrozen", "frozen"]       # use_intermediate=[11], fed block 2

SIZES = {"s224": (224, 224), "s448": (448, 448), "r224x336": (224, 336), "x672": (672, 672)}

# Tags each golden holds (checked by test_golden_tags_are_all_covered, so nothing goes unchecked).
FORWARD_TAGS = {c: ("s224", "s448", "r224x336") if c in SKIP_CONFIGS else ("s224", "s448") for c in CONFIGS}
POS_TAGS = {c: ("s224", "s448", "r224x336", "x672") if c in SKIP_CONFIGS else ("s224", "s448", "x672")
            for c in CONFIGS}
ROPE_TAGS = ("s224", "s448", "r224x336")              # the DINOv3 golden has no x672 rope tables

# Positional tables are pure resizes of stored parameters: ours matches the goldens' samples bit
# for bit (the float32-rounded means to ~3e-11), so they are held far tighter than the 1e-4 of
# activations. Both resize mistakes in the README move these tables by more than 1e-4.
POS_ATOL = 1e-6
# Batched vs one-at-a-time decoding: the same arithmetic, in other BLAS blockings.
BATCH_ATOL = 2e-6


def _param(name: str, tag: str, slow: bool = False):
    return pytest.param(name, tag, id=f"{name}-{tag}", marks=[pytest.mark.slow] if slow else [])


def _forward_params(slow_unless=lambda name, tag: tag == "s224" or name in SKIP_CONFIGS):
    return [_param(c, t, slow=not slow_unless(c, t)) for c in CONFIGS for t in FORWARD_TAGS[c]]


def _maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max())


# ---------------------------------------------------------------------------------------------
# fixtures

@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


@pytest.fixture(scope="module")
def inputs(golden):
    return golden("inputs")


@pytest.fixture(scope="module")
def model(fill, manifest):
    """``model(name)``: our model of a reference config with its ``fill.py`` weights (eval,
    cached; tests must not modify it).

    ``fill.fill_value(k, key, shape, dtype)`` is a pure function of the manifest position ``k``
    and the entry, and the configs share most entries at the same positions (the whole DINOv2
    backbone, README), so each distinct entry is filled once for all five configs instead of
    once per config (conftest's ``filled_state``): about half the fill time. Bit-identity with
    ``make_state_dict`` is what ``test_fill_sha256`` checks. The models load with
    ``assign=True``, so configs share those tensors instead of holding copies (~1.5 GB for all
    five instead of ~4.5 GB): read-only by contract, deep-copy before changing anything.
    """
    values: Dict[Tuple, torch.Tensor] = {}
    cache: Dict[str, nn.Module] = {}

    def get(name: str) -> nn.Module:
        if name not in cache:
            state = {}
            for k, (key, shape, dtype) in enumerate(manifest(name)["entries"]):
                entry = (k, key, tuple(shape), dtype)
                if entry not in values:
                    values[entry] = fill.fill_value(k, key, shape, dtype)
                state[key] = values[entry]
            m = build_skipclick(REFERENCE_VARIANTS[name]).eval()
            m.load_state_dict(state, strict=True, assign=True)
            cache[name] = m
        return cache[name]

    return get


@pytest.fixture(scope="module")
def traced(model, inputs):
    """``traced(name, tag)``: ``parity.trace`` of the full forward on the tag's inputs (cached).
    Its ``logits`` entry is ``model(torch.cat([image, prev_mask], 1), points)['instances']``."""
    cache: Dict[Tuple[str, str], Dict[str, torch.Tensor]] = {}

    def get(name: str, tag: str) -> Dict[str, torch.Tensor]:
        if (name, tag) not in cache:
            cache[name, tag] = parity.trace(model(name), *parity.trace_inputs(inputs, tag))
        return cache[name, tag]

    return get


@pytest.fixture(scope="module")
def features(model, inputs):
    """``features(name, tag)``: ``model.encode_image(image)`` of the tag's image (cached)."""
    cache = {}

    def get(name: str, tag: str):
        if (name, tag) not in cache:
            image, _, _ = parity.trace_inputs(inputs, tag)
            cache[name, tag] = model(name).encode_image(image)
        return cache[name, tag]

    return get


def _t(array) -> torch.Tensor:
    return torch.from_numpy(np.array(array))


# ---------------------------------------------------------------------------------------------
# 0. the goldens hold exactly the tags these tests check

@pytest.mark.parametrize("name", CONFIGS)
def test_golden_tags_are_all_covered(name, golden):
    g = golden(name)
    fwd = {k.split(".")[0] for k in g.files if ".fwd." in k}
    assert fwd == set(FORWARD_TAGS[name]), f"{name}: forward tags {sorted(fwd)}"
    pos = {k.split(".")[0] for k in g.files if k.split(".")[1].split("__")[0] == "mixer_pos_embed"}
    assert pos == set(POS_TAGS[name]), f"{name}: mixer_pos_embed tags {sorted(pos)}"
    table = "dino_rope_sin" if name == "dinov3_skip" else "dino_pos_embed"
    dino = {k.split(".")[0] for k in g.files if k.split(".")[1].split("__")[0] == table}
    assert dino == set(ROPE_TAGS if name == "dinov3_skip" else POS_TAGS[name]), f"{name}: {table} tags {sorted(dino)}"
    click2 = {k for k in g.files if ".click2." in k}
    assert click2 == ({"s224.click2.prev_mask", "s224.click2.logits"} if name in SKIP_CONFIGS else set())


# ---------------------------------------------------------------------------------------------
# 1. state-dict layout

@pytest.mark.parametrize("name", CONFIGS)
def test_state_dict_layout_matches_manifest(name, manifest):
    m = manifest(name)
    with torch.device("meta"):          # layout only: no weight initialisation needed
        ours = build_skipclick(REFERENCE_VARIANTS[name])
    state = ours.state_dict()
    theirs = {key: (tuple(shape), dtype) for key, shape, dtype in m["entries"]}
    assert len(m["entries"]) == len(theirs) == m["num_entries"]

    missing, extra = sorted(set(theirs) - set(state)), sorted(set(state) - set(theirs))
    assert not missing and not extra, f"{name}: missing {missing[:10]} ... extra {extra[:10]}"
    wrong_shape = [(k, tuple(v.shape), theirs[k][0]) for k, v in state.items() if tuple(v.shape) != theirs[k][0]]
    assert not wrong_shape, f"{name}: shapes differ (key, ours, manifest): {wrong_shape[:10]}"
    assert {dtype for _, dtype in theirs.values()} == {"float32"}
    wrong_dtype = [(k, v.dtype) for k, v in state.items() if v.dtype != torch.float32]
    assert not wrong_dtype, f"{name}: not float32: {wrong_dtype[:10]}"

    n_params = sum(p.numel() for p in ours.parameters())
    assert n_params == m["total_params"], f"{name}: {n_params:,} parameters, manifest {m['total_params']:,}"

    buffers = {k for k, _ in ours.named_buffers()}
    persistent = buffers & set(state)
    assert set(m["buffers_in_state_dict"]) <= buffers, \
        f"{name}: not buffers in ours: {sorted(set(m['buffers_in_state_dict']) - buffers)}"
    assert persistent == set(m["buffers_in_state_dict"]), \
        f"{name}: state-dict buffers of ours not listed in the manifest: {sorted(persistent - set(m['buffers_in_state_dict']))}"
    if name == "dinov3_skip":
        assert len(persistent) == 13   # rope_embed.periods + 12 qkv.bias_mask


# ---------------------------------------------------------------------------------------------
# 2. fill

@pytest.mark.parametrize("name", CONFIGS)
def test_fill_sha256(name, model, manifest):
    """sha256 over the raw bytes of our filled model's tensors, in manifest order, equals the
    ``fill_sha256`` the fixtures were made with (so the loaded weights are bit-identical)."""
    with open(reference_file("golden_summary.json")) as f:
        expected = json.load(f)["fill_sha256"][name]
    state = model(name).state_dict()
    h = hashlib.sha256()
    for key, _, _ in manifest(name)["entries"]:
        h.update(state[key].detach().contiguous().numpy())
    assert h.hexdigest() == expected, f"{name}: fill sha256 {h.hexdigest()} != golden_summary {expected}"


# ---------------------------------------------------------------------------------------------
# 3. full forward

@pytest.mark.parametrize("name,tag", _forward_params())
def test_forward_matches_golden(name, tag, traced, golden):
    g = golden(name)
    out = traced(name, tag)
    H, W = SIZES[tag]
    assert tuple(out["logits"].shape) == (1, 1, H, W)
    failures = [parity.compare(key, out[key], g, f"{tag}.fwd.{key}", parity.tolerance(key))
                for key in ("logits", "head_out", "coord_features")]
    failures = [f for f in failures if f]
    assert not failures, f"{name}/{tag}: " + "; ".join(failures)


# ---------------------------------------------------------------------------------------------
# 4. late fusion: encode_image once, decode per click

@pytest.mark.parametrize("name,tag", _forward_params(lambda name, tag: tag == "s224"))
def test_late_fusion_matches_golden(name, tag, model, features, traced, inputs, golden):
    _, prev_mask, points = parity.trace_inputs(inputs, tag)
    late = model(name).decode(features(name, tag), points, prev_mask)
    forward = traced(name, tag)["logits"]
    assert torch.equal(late, forward), \
        f"{name}/{tag}: decode(encode_image) != forward, max |diff| {_maxdiff(late, forward):.3g}"
    msg = parity.compare("logits", late, golden(name), f"{tag}.fwd.logits", parity.LOGITS_ATOL)
    assert msg is None, f"{name}/{tag} late fusion: {msg}"


@pytest.mark.parametrize("name", SKIP_CONFIGS)
def test_second_click_matches_golden(name, model, features, traced, inputs, golden):
    g = golden(name)
    first = traced(name, "s224")["logits"]
    prev_mask = _t(g["s224.click2.prev_mask"])
    ours = (torch.sigmoid(first) > 0.5).float()
    flipped = ours != prev_mask
    # Only pixels whose logit lies within the logits tolerance of 0 may legitimately flip.
    near = first.abs() <= parity.LOGITS_ATOL
    assert not (flipped & ~near).any(), \
        (f"{name}: sigmoid(first logits) > 0.5 differs from the golden click-2 prev_mask at "
         f"{int(flipped.sum())} pixels, largest |logit| there {float(first[flipped].abs().max()):.3g}")

    points = _t(inputs["s224.points_click2"])
    logits = model(name).decode(features(name, "s224"), points, prev_mask)
    msg = parity.compare("logits", logits, g, "s224.click2.logits", parity.LOGITS_ATOL)
    assert msg is None, f"{name}/s224 click 2: {msg}"


@pytest.mark.parametrize("name", SKIP_CONFIGS)
def test_batch_of_click_sets_equals_one_at_a_time(name, model, features, inputs, golden):
    g = golden(name)
    feats = features(name, "s224")
    prev = [_t(inputs["s224.prev_mask"]), _t(g["s224.click2.prev_mask"])]
    points = [_t(inputs["s224.points"]), _t(inputs["s224.points_click2"])]
    m = model(name)
    batched = m.decode(feats, torch.cat(points), torch.cat(prev))
    assert tuple(batched.shape) == (2, 1, 224, 224)
    for i, (p, pm) in enumerate(zip(points, prev)):
        single = m.decode(feats, p, pm)
        d = _maxdiff(batched[i:i + 1], single)
        assert d <= BATCH_ATOL, f"{name}: batch item {i} vs alone max |diff| {d:.3g} > {BATCH_ATOL:g}"
    for i, key in enumerate(("s224.fwd.logits", "s224.click2.logits")):
        msg = parity.compare("logits", batched[i:i + 1], g, key, parity.LOGITS_ATOL)
        assert msg is None, f"{name}: batch item {i} vs {key}: {msg}"


# ---------------------------------------------------------------------------------------------
# 5. every intermediate, and the positional tables

@pytest.mark.parametrize("name,tag", _forward_params())
def test_intermediates_match_golden(name, tag, traced, golden):
    g = golden(name)
    out = traced(name, tag)
    names = parity.golden_names(g, tag)
    assert {"extract.0", "mixer_out", "fpn.3", "head_fusion", "logits"} <= set(names)
    failures = parity.divergences(out, g, tag)
    assert not failures, f"{name}/{tag}: {len(failures)} of {len(names)} intermediates diverge:\n" + \
        "\n".join(msg for _, msg in failures)


def _grid(model: nn.Module, tag: str) -> Tuple[int, int]:
    H, W = SIZES[tag]
    return H // model.patch_size, W // model.patch_size


def _expect_mismatch(msg: Optional[str], what: str) -> None:
    assert msg is not None, f"negative control passed the check: {what}"


@pytest.mark.parametrize("name,tag", [_param(c, t) for c in CONFIGS for t in POS_TAGS[c]])
def test_mixer_pos_embed(name, tag, model, golden):
    m = model(name)
    grid = _grid(m, tag)
    table = m.backbone_mix.pos_embed_for(grid)
    assert tuple(table.shape) == (1, grid[0] * grid[1], 768)
    msg = parity.compare("mixer_pos_embed", table, golden(name), f"{tag}.mixer_pos_embed", POS_ATOL)
    assert msg is None, f"{name}/{tag}: {msg}"
    if grid != m.backbone_mix.grid:     # negative control: the README's "with antialias" mistake
        raw = m.backbone_mix.pos_embed.reshape(1, *m.backbone_mix.grid, -1).permute(0, 3, 1, 2)
        wrong = F.interpolate(raw, size=grid, mode="bicubic", antialias=True).permute(0, 2, 3, 1)
        _expect_mismatch(parity.compare("mixer_pos_embed", wrong, golden(name), f"{tag}.mixer_pos_embed",
                                        parity.INTERMEDIATE_ATOL), f"{name}/{tag} mixer table with antialias")


@pytest.mark.parametrize("name,tag", [_param(c, t) for c in DINOV2_CONFIGS for t in POS_TAGS[c]])
def test_dinov2_pos_embed(name, tag, model, golden):
    vit = model(name).feature_extractor.vit
    grid = _grid(model(name), tag)
    table = vit.interpolate_pos_encoding(grid)
    assert tuple(table.shape) == (1, 1 + grid[0] * grid[1], 768)
    msg = parity.compare("dino_pos_embed", table, golden(name), f"{tag}.dino_pos_embed", POS_ATOL)
    assert msg is None, f"{name}/{tag}: {msg}"
    # negative control: the README's "without antialias" mistake
    side = 37
    patch = vit.pos_embed[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    wrong = F.interpolate(patch, size=grid, mode="bicubic").permute(0, 2, 3, 1).reshape(1, -1, 768)
    wrong = torch.cat([vit.pos_embed[:, :1], wrong], dim=1)
    _expect_mismatch(parity.compare("dino_pos_embed", wrong, golden(name), f"{tag}.dino_pos_embed",
                                    parity.INTERMEDIATE_ATOL), f"{name}/{tag} DINOv2 table without antialias")


@pytest.mark.parametrize("tag", ROPE_TAGS)
def test_dinov3_rope_tables(tag, model, golden):
    m = model("dinov3_skip")
    rope = m.feature_extractor.vit.rope_embed
    assert not rope.training, "RoPE jitters its coordinates in training mode"
    grid = _grid(m, tag)
    sin, cos = rope(grid)
    assert tuple(sin.shape) == tuple(cos.shape) == (grid[0] * grid[1], 64)
    for key, value in (("dino_rope_sin", sin), ("dino_rope_cos", cos)):
        msg = parity.compare(key, value, golden("dinov3_skip"), f"{tag}.{key}", POS_ATOL)
        assert msg is None, f"dinov3_skip/{tag}: {msg}"


# ---------------------------------------------------------------------------------------------
# 6. details the goldens cannot resolve, checked by construction

@pytest.mark.parametrize("name", CONFIGS)
def test_layernorm_eps_gelu_groupnorm(name):
    with torch.device("meta"):
        m = build_skipclick(REFERENCE_VARIANTS[name])
    backbone_eps = 1e-5 if name == "dinov3_skip" else 1e-6
    groups = {"backbone": (m.feature_extractor, backbone_eps, 2 * 12 + 1),
              "fusion stack": (m.backbone_mix, 1e-6, 2 * 4)}
    for what, (module, eps, count) in groups.items():
        norms = [(n, mod.eps) for n, mod in module.named_modules() if isinstance(mod, nn.LayerNorm)]
        assert len(norms) == count, f"{name}: {len(norms)} LayerNorms in the {what}, expected {count}"
        wrong = [(n, e) for n, e in norms if e != eps]
        assert not wrong, f"{name}: {what} LayerNorm eps must be {eps:g}: {wrong[:5]}"
    all_norms = sum(isinstance(mod, nn.LayerNorm) for mod in m.modules())
    assert all_norms == 25 + 8, f"{name}: LayerNorms outside the backbone and fusion stack"

    gelus = [(n, mod.approximate) for n, mod in m.named_modules() if isinstance(mod, nn.GELU)]
    assert gelus and all(a == "none" for _, a in gelus), f"{name}: GELU must be exact (erf): {gelus}"
    assert sum(1 for n, _ in gelus if n.startswith("feature_extractor.")) == 12
    assert sum(1 for n, _ in gelus if n.startswith("backbone_mix.")) == 4

    gn = [(n, mod.num_groups, mod.eps, mod.affine) for n, mod in m.neck.named_modules() if isinstance(mod, nn.GroupNorm)]
    assert len(gn) == 8 and all(g == 1 and e == 1e-5 and a for _, g, e, a in gn), f"{name}: FPN GroupNorms {gn}"


def test_dinov3_qkv_bias_mask_zeroes_the_key_third(model):
    fresh = build_backbone("dinov3_vitb16")          # the constructor's mask, not the fill's
    assert isinstance(fresh, DinoV3)
    expected = torch.ones(3 * 768)
    expected[768:1536] = 0.0
    for i, block in enumerate(fresh.blocks):
        qkv = block.attn.qkv
        assert isinstance(qkv, LinearKMaskedBias), f"block {i}: qkv is {type(qkv).__name__}"
        assert torch.equal(qkv.bias_mask, expected), f"block {i}: bias_mask is not 1 / 0 / 1 over q / k / v"
    assert all(isinstance(b.attn.qkv, nn.Linear) and not isinstance(b.attn.qkv, LinearKMaskedBias)
               for b in model("skip").feature_extractor.vit.blocks), "DINOv2 has a plain qkv bias"

    # and in use: with the filled weights the key third of qkv(x) carries no bias
    qkv = model("dinov3_skip").feature_extractor.vit.blocks[0].attn.qkv
    x = torch.randn(1, 5, 768, generator=torch.Generator().manual_seed(0))
    out, plain = qkv(x), F.linear(x, qkv.weight)
    assert qkv.bias[768:1536].abs().min() > 0
    k_dev = _maxdiff(out[..., 768:1536], plain[..., 768:1536])
    assert k_dev <= 1e-6, f"key third carries a bias: max |diff| {k_dev:.3g}"
    qv = torch.cat([out[..., :768], out[..., 1536:]], -1) - torch.cat([plain[..., :768], plain[..., 1536:]], -1)
    qv_bias = torch.cat([qkv.bias[:768], qkv.bias[1536:]])
    assert _maxdiff(qv, qv_bias.expand_as(qv)) <= 1e-6, "q / v thirds must carry their bias"


# ---------------------------------------------------------------------------------------------
# 7. block-2 quirk

@pytest.mark.parametrize("name", QUIRK_CONFIGS)
def test_block2_quirk_feeds_block2(name, model, traced):
    assert model(name).config.tap_blocks == (2,)
    out = traced(name, "s224")
    assert torch.equal(out["mixer_in_image_tokens"], out["extract.0"]), \
        f"{name}: mixer input != block-2 tap, max |diff| {_maxdiff(out['mixer_in_image_tokens'], out['extract.0']):.3g}"
    # extract.0 itself agrees with the golden (test_intermediates_match_golden checks all of them)


@pytest.mark.parametrize("name", [pytest.param("frozen"), pytest.param("baseline_unfrozen", marks=pytest.mark.slow)])
def test_block11_negative_control(name, model, inputs, golden):
    """The declared ``use_intermediate=[11]`` is not what the authors' model computes."""
    m = build_skipclick(REFERENCE_VARIANTS[name], tap_blocks=(11,)).eval()
    m.load_state_dict(model(name).state_dict(), strict=True)
    image, prev_mask, points = parity.trace_inputs(inputs, "s224")
    logits = m(torch.cat([image, prev_mask], 1), points)["instances"]
    d = _maxdiff(logits, _t(golden(name)["s224.fwd.logits"]))
    assert d > 0.1, f"{name}: tap_blocks=(11,) logits within {d:.3g} of the golden; the quirk test has no power"


# ---------------------------------------------------------------------------------------------
# 8. the helper names the first diverging layer

MUTATIONS = [
    pytest.param("skip", "backbone_mix.blocks.1.mlp.fc1.bias", "mixer_block.1", id="skip-mixer_block.1"),
    pytest.param("skip", "feature_extractor.dinov2.blocks.7.mlp.fc1.bias", "dino_block.7",
                 id="skip-dino_block.7", marks=pytest.mark.slow),
    pytest.param("dinov3_skip", "neck.down_16.0.bias", "fpn.2", id="dinov3_skip-fpn.2", marks=pytest.mark.slow),
    pytest.param("dinov3_skip", "head.fusion_conv.conv.bias", "head_fusion", id="dinov3_skip-head_fusion",
                 marks=pytest.mark.slow),
]


@pytest.mark.parametrize("name,key,layer", MUTATIONS)
def test_first_divergence_names_the_mutated_layer(name, key, layer, model, traced, inputs, golden, manifest):
    g = golden(name)
    clean = parity.first_divergence(model(name), inputs, g, "s224", name, traced=traced(name, "s224"))
    assert clean is None, f"unmutated model: {clean}"

    assert key in {k for k, _, _ in manifest(name)["entries"]}, f"{key} is not a reference parameter"
    mutated = copy.deepcopy(model(name))         # never touch the cached model
    param = dict(mutated.named_parameters())[key]
    # +-0.05 alternating: a uniform shift of a bias feeding GroupNorm(1, C) would be normalised away
    signs = 1.0 - 2.0 * (torch.arange(param.numel()) % 2)
    param.add_(0.05 * signs.view_as(param))
    msg = parity.first_divergence(mutated, inputs, g, "s224", name)
    assert msg is not None, f"{name}: +-0.05 on {key} went unnoticed"
    assert msg.startswith(f"{name}/s224: first divergence at {layer}: "), msg
    assert not torch.equal(dict(model(name).named_parameters())[key], param), "the cached model was modified"
