"""Behaviour of the model API beyond parity: late fusion, input errors, variants, options."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from isegm.model import BLOCK2_QUIRK, VARIANTS, build_skipclick, variant_config
from isegm.model.backbones import BACKBONES
from isegm.model.skipclick import ImageFeatures

REPO = Path(__file__).resolve().parents[1]
SIZE = 224


def _load_script(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_skipclick("skipclick").eval()


@pytest.fixture(scope="module")
def image():
    return torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def features(model, image):
    with torch.no_grad():
        return model.encode_image(image)


def points(*clicks, pad_to: int = 0) -> torch.Tensor:
    """RITM layout from ``(y, x, positive)`` clicks: ``[1, 2N, 3]``, positives first."""
    pos = [(y, x, i) for i, (y, x, p) in enumerate(clicks) if p]
    neg = [(y, x, i) for i, (y, x, p) in enumerate(clicks) if not p]
    n = max(len(pos), len(neg), pad_to)
    rows = pos + [(-1, -1, -1)] * (n - len(pos)) + neg + [(-1, -1, -1)] * (n - len(neg))
    return torch.tensor([rows], dtype=torch.float32)


# --- late fusion --------------------------------------------------------------------------

def test_decode_recomputes_nothing_image_only(model, features):
    calls = []
    hooks = [m.register_forward_hook(lambda *a, name=name: calls.append(name))
             for name, m in (("backbone", model.feature_extractor), ("fuse", model.fuse))]
    try:
        with torch.no_grad():
            for k in range(1, 4):
                model.decode(features, points(*[(30 * k, 40 + 20 * j, j % 2 == 0) for j in range(k)]))
    finally:
        for h in hooks:
            h.remove()
    assert calls == [], f"decode ran image-only modules: {calls}"


def test_forward_equals_encode_then_decode(model, image, features):
    pts = points((50, 60, True), (120, 100, False), (150, 170, True))
    prev = (torch.rand(1, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(2)) > 0.5).float()
    with torch.no_grad():
        out = model(torch.cat([image, prev], 1), pts)
        late = model.decode(features, pts, prev)
    assert set(out) == {"instances", "instances_aux"} and out["instances_aux"] is None
    assert torch.equal(out["instances"], late)


def test_batch_of_click_sets_against_one_image(model, features):
    sets = [points((50, 60, True), pad_to=1), points((10, 200, True), (100, 100, False)),
            points((223, 0, True), (0, 223, False))]
    prev = torch.rand(3, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        batched = model.decode(features, torch.cat(sets), prev)
        single = torch.cat([model.decode(features, p, prev[i:i + 1]) for i, p in enumerate(sets)])
    assert batched.shape == (3, 1, SIZE, SIZE)
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)
    assert (batched[0] - batched[1]).abs().max() > 1e-3, "different click sets gave the same logits"


def test_authors_per_click_path_gives_identical_outputs(model, features):
    """The benchmark's restatement of the authors' per-click work computes the same function."""
    authors_decode = _load_script(REPO / "scripts" / "benchmark_latency.py").authors_decode
    pts = points((50, 60, True), (120, 100, False))
    prev = torch.rand(1, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ours = model.decode(features, pts, prev)
        theirs = authors_decode(model, features, pts, prev)
    torch.testing.assert_close(ours, theirs, atol=3e-5, rtol=0)


def test_missing_prev_mask_means_empty_mask(model, features):
    pts = points((50, 60, True))
    with torch.no_grad():
        torch.testing.assert_close(model.decode(features, pts),
                                   model.decode(features, pts, torch.zeros(1, 1, SIZE, SIZE)), atol=0, rtol=0)


# --- the detail refiner (tiny model) -----------------------------------------------------

def _refined_model(seed: int, channels: int = 16, variant: str = "tiny") -> torch.nn.Module:
    """A model with a detail refiner whose correction is not zero (as after training)."""
    torch.manual_seed(seed)
    model = build_skipclick(variant, detail_channels=channels).eval()
    with torch.no_grad():
        model.detail.refine[-1].weight.normal_(0, 0.1)
    return model


def test_untrained_detail_refiner_passes_the_head_logits_through():
    torch.manual_seed(9)
    refined = build_skipclick("tiny", detail_channels=16).eval()
    plain = build_skipclick("tiny", detail_channels=0).eval()
    plain.load_state_dict({k: v for k, v in refined.state_dict().items() if not k.startswith("detail.")})
    x = torch.cat([torch.rand(1, 3, 112, 112, generator=torch.Generator().manual_seed(1)),
                   torch.zeros(1, 1, 112, 112)], 1)
    pts = points((50, 60, True), (20, 30, False))
    with torch.no_grad():
        torch.testing.assert_close(refined(x, pts)["instances"], plain(x, pts)["instances"], atol=1e-6, rtol=0)


def test_detail_refiner_is_late_fusion():
    """Its image convs run once in encode_image; decode refines with their cached output."""
    model = _refined_model(10)
    image = torch.rand(1, 3, 112, 112, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        features = model.encode_image(image)
        assert features.detail.shape == (1, 16, 56, 56)
        calls = []
        hook = model.detail.image_convs.register_forward_hook(lambda *a: calls.append(1))
        pts = points((50, 60, True))
        prev = torch.zeros(1, 1, 112, 112)
        try:
            late = model.decode(features, pts, prev)
        finally:
            hook.remove()
        assert calls == []
        assert torch.equal(model(torch.cat([image, prev], 1), pts)["instances"], late)
        features.detail = torch.zeros_like(features.detail)
        assert (model.decode(features, pts, prev) - late).abs().max() > 1e-3


def test_detail_features_batch_with_the_rest():
    model = _refined_model(11)
    images = torch.rand(2, 3, 56, 88, generator=torch.Generator().manual_seed(3))
    pts = torch.cat([points((5, 6, True), pad_to=1), points((40, 80, True), (10, 10, False))])
    with torch.no_grad():
        one = [model.encode_image(images[i:i + 1]) for i in range(2)]
        batched = model.decode(ImageFeatures.cat(one), pts)
        single = torch.cat([model.decode(f, pts[i:i + 1]) for i, f in enumerate(one)])
    assert batched.shape == (2, 1, 56, 88)
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)


def test_detail_refiner_on_a_patch_14_backbone():
    """The head's finest level (stride 3.5) is resized to the refiner's stride 2."""
    model = _refined_model(12, channels=8, variant="intermediate_features")
    with torch.no_grad():
        logits = model(torch.rand(1, 4, 56, 84), points((10, 20, True)))["instances"]
    assert logits.shape == (1, 1, 56, 84) and torch.isfinite(logits).all()


# --- input errors -------------------------------------------------------------------------

@pytest.mark.parametrize("size, match", [((1, 3, 225, 224), r"225x224 is not a multiple of the patch size 14"),
                                         ((1, 4, 224, 224), r"\[B, 3, H, W\]")])
def test_bad_image_shapes(model, size, match):
    with pytest.raises(ValueError, match=match):
        model.encode_image(torch.rand(*size))


def test_nan_image_and_uint8_image(model):
    image = torch.rand(1, 3, 28, 28)
    image[0, 1, 3, 4] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        model.encode_image(image)
    with pytest.raises(ValueError, match="divide uint8 images by 255"):
        model.encode_image(torch.zeros(1, 3, 28, 28, dtype=torch.uint8))


@pytest.mark.parametrize("click, match", [((224, 10), r"y=224, x=10"), ((5, -3), r"y=5, x=-3"),
                                          ((float("nan"), 3), "NaN")])
def test_bad_clicks(model, features, click, match):
    with pytest.raises(ValueError, match=match):
        model.decode(features, points((click[0], click[1], True)))


def test_bad_prev_mask(model, features):
    with pytest.raises(ValueError, match=r"prev_mask must be \[1, 1, 224, 224\]"):
        model.decode(features, points((5, 5, True)), torch.zeros(1, 1, 112, 112))
    prev = torch.zeros(1, 1, SIZE, SIZE)
    prev[..., 7, 7] = float("nan")
    with pytest.raises(ValueError, match="prev_mask contains NaN"):
        model.decode(features, points((5, 5, True)), prev)


def test_points_layout_checked(model, features):
    with pytest.raises(ValueError, match=r"\[B, 2N, 3\]"):
        model.decode(features, torch.zeros(1, 3, 3))


def test_points_in_the_protocols_open_range_are_accepted(model, features):
    H, W = features.image_size
    # A click on the last row/column resized by th * y / H, and its mirror tw - x - 1.
    edge = torch.tensor([[[H - 1e-3, -1 + 1e-3, 0.0], [-1.0, -1.0, -1.0]]])
    assert model.decode(features, edge).shape == (1, 1, H, W)
    for y, x in [(H, 3.0), (3.0, -1.0), (3.0, W + 0.5)]:
        with pytest.raises(ValueError, match="lies outside"):
            model.decode(features, torch.tensor([[[y, x, 0.0], [-1.0, -1.0, -1.0]]]))


def test_missing_backbone_weights_names_file_and_source(tmp_path):
    missing = tmp_path / "dinov2_vitb14_reg4_pretrain.pth"
    with pytest.raises(FileNotFoundError) as err:
        build_skipclick("skipclick", backbone_weights=missing)
    message = str(err.value)
    assert str(missing) in message and "dinov2_vitb14_reg4_pretrain.pth" in message
    assert BACKBONES["dinov2_vitb14_reg"].weights_source in message


def test_backbone_weights_load_strictly(tmp_path):
    torch.manual_seed(5)
    small = dict(backbone="dinov2_vits14_reg", fusion_depth=1)
    source = build_skipclick("skipclick", **small)
    path = tmp_path / "backbone.pth"
    torch.save(source.feature_extractor.vit.state_dict(), path)
    model = build_skipclick("skipclick", backbone_weights=path, **small)
    for key, value in source.feature_extractor.vit.state_dict().items():
        assert torch.equal(model.feature_extractor.vit.state_dict()[key], value), key
    torch.save({"blocks.0.wrong": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="is not a dinov2_vits14_reg weights file"):
        build_skipclick("skipclick", backbone_weights=path, **small)


# --- variants and options -----------------------------------------------------------------

def test_variants_follow_the_paper_rows():
    assert variant_config("baseline").tap_blocks == (2,) and "block 2" in BLOCK2_QUIRK
    assert not variant_config("baseline").freeze_backbone and variant_config("frozen_backbone").freeze_backbone
    assert variant_config("intermediate_features").tap_blocks == (2, 5, 8, 11)
    assert not variant_config("intermediate_features").skip_connections
    assert variant_config("skipclick_dinov3").tap_norm and not variant_config("skipclick").tap_norm
    assert [variant_config(f"skipclick_depth{d}").fusion_depth for d in (2, 3, 5, 6)] == [2, 3, 5, 6]
    # the authors' model-file names select the same variants
    assert variant_config("featurevit_base448_cocolvis_itermask") == variant_config("frozen_backbone")
    with pytest.raises(ValueError, match="unknown SkipClick variant 'nope'"):
        variant_config("nope")


def test_frozen_backbone_has_no_trainable_parameters():
    frozen = build_skipclick("frozen_backbone")
    assert not any(p.requires_grad for p in frozen.feature_extractor.parameters())
    assert all(p.requires_grad for n, p in frozen.named_parameters() if not n.startswith("feature_extractor."))
    assert all(p.requires_grad for p in build_skipclick("baseline").feature_extractor.parameters())


def test_model_files_select_their_variant():
    """One file per paper row in iter_mask/ (named by its variant, its MODEL_NAME the authors'),
    the quickstart's tiny model, and fine-tuning files naming a known variant."""
    rows = sorted((REPO / "models" / "iter_mask").glob("*.py")) + [REPO / "models" / "quickstart" / "tiny.py"]
    assert {f.stem for f in rows} == set(VARIANTS)
    for path in rows:
        script = _load_script(path)
        assert script.VARIANT == path.stem and callable(script.main)
        assert variant_config(script.MODEL_NAME) == variant_config(script.VARIANT), path.name
    for path in sorted((REPO / "models").glob("*/*.py")):
        if path.parent.name != "emcclick":   # the EMC-Click family's files: tests/test_emc_training.py
            assert _load_script(path).VARIANT in VARIANTS, path
    model = _load_script(REPO / "models" / "iter_mask" / "skipclick_depth2.py").init_model({"from_scratch": True})
    assert len(model.backbone_mix.blocks) == 2


@pytest.mark.parametrize("upsample, factor", [("x2", 2), ("x4", 4)])
def test_head_upsampling_options(upsample, factor):
    torch.manual_seed(6)
    model = build_skipclick("intermediate_features", head_upsample=upsample).eval()
    with torch.no_grad():
        features = model.encode_image(torch.rand(1, 3, 56, 84))
        fpn = model.neck(model.backbone_mix(features.tokens, model.patch_embed_coords(
            torch.zeros(1, 3, 56, 84)), features.pos_embed), features.grid)
        head_out = model.head(fpn)
        logits = model.decode(features, points((10, 20, True)))
    assert head_out.shape == (1, 1, 4 * 4 * factor, 4 * 6 * factor)
    assert logits.shape == (1, 1, 56, 84)


def test_model_files_keep_the_variants_head_width_for_each_upsample_setting():
    """train.py --upsample: the authors' 256 / 128 / 64 channels for the paper rows; the tiny
    model keeps its own width (64 x factor) instead of being widened to the paper's."""
    from isegm.model.skipclick import model_from_settings
    scratch = {"from_scratch": True}
    assert model_from_settings("intermediate_features", {"upsample": "x2", **scratch}).config.head_channels == 128
    assert [model_from_settings("tiny", {"upsample": u, **scratch}).config.head_channels for u in ("x1", "x4")] == [64, 16]


def test_dinov3_variant_runs_on_its_patch_size():
    torch.manual_seed(7)
    model = build_skipclick("skipclick_dinov3").eval()
    with torch.no_grad():
        logits = model(torch.rand(2, 4, 32, 48), torch.cat([points((3, 4, True)), points((30, 47, False))]))
    assert logits["instances"].shape == (2, 1, 32, 48) and torch.isfinite(logits["instances"]).all()
    with pytest.raises(ValueError, match="multiple of the patch size 16"):
        model.encode_image(torch.rand(1, 3, 28, 28))


def test_autocast_bf16_runs_the_late_fusion_path(model):
    """bf16 autocast through encode_image + decode (folded FPN, matrix-resize head) on a tiny
    input: it runs, returns bf16 logits and stays near fp32. The fixture-level agreement
    criterion is the slow test below."""
    image = torch.rand(1, 3, 28, 42, generator=torch.Generator().manual_seed(8))
    pts = torch.cat([points((10, 20, True), (3, 40, False))] * 2)
    with torch.no_grad():
        ref = model.decode(model.encode_image(image), pts)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model.decode(model.encode_image(image), pts)
    assert low.dtype == torch.bfloat16 and low.shape == ref.shape
    assert (low.float() - ref).abs().max() < 0.05 * ref.abs().max()


@pytest.mark.slow
def test_bf16_autocast_agrees_with_fp32_on_fixture_inputs(filled_model, golden):
    """bf16 autocast keeps mask agreement >= 0.99 with fp32 (on a CPU without AVX512-BF16 / AMX,
    e.g. a 2-core AMD EPYC with AVX2 only, this mode is slow; see docs/speed.md)."""
    inputs = golden("inputs")
    for name in ("skip", "dinov3_skip"):
        model = filled_model(name)
        for tag in ("s224", "s448"):
            image, prev, pts = (torch.from_numpy(inputs[f"{tag}.{k}"]) for k in ("image", "prev_mask", "points"))
            with torch.no_grad():
                ref = model.decode(model.encode_image(image), pts, prev)
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    low = model.decode(model.encode_image(image), pts, prev).float()
            agreement = ((ref > 0) == (low > 0)).float().mean().item()
            assert agreement >= 0.99, f"{name}/{tag}: bf16 mask agreement {agreement:.4f}"
