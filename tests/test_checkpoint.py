"""Checkpoint loading and saving: the authors' released format, backbone release files, our own
format, and files that must be refused (malicious pickles, unknown layouts, missing files)."""
from __future__ import annotations

import copy
import os
import pickle
from typing import Any, Dict, List

import numpy as np
import pytest
import torch

from conftest import REFERENCE_VARIANTS, reference_file
from isegm.model import build_skipclick, config_from_authors, load_checkpoint, save_checkpoint, variant_config
from isegm.model.backbones import build_backbone

AUTHORS_CLASS = "isegm.model.is_featurevit_model.FeatureVitModel"
WEIGHTS_URL = "https://github.com/Schorob/skipclick#weights"


def from_json(obj: Any) -> Any:
    """The manifests' JSON form of a pickled config back to Python: ``{"__tuple__": [...]}`` ->
    tuple; objects stay dicts (the loss module is ignored by the loader anyway)."""
    if isinstance(obj, dict):
        if set(obj) == {"__tuple__"}:
            return tuple(from_json(v) for v in obj["__tuple__"])
        return {k: from_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [from_json(v) for v in obj]
    return obj


def rule_value(i: int) -> float:
    """The official-format files' value rule: manifest entry i (0-based) holds (i+1)/1024."""
    return (i + 1) / 1024


def rule_state(entries: List, prefix: str = "") -> Dict[str, torch.Tensor]:
    """Entries under ``prefix`` (stripped) filled by the value rule, as zero-stride views so that
    a saved file stays tiny."""
    return {key[len(prefix):]: torch.tensor(rule_value(i)).expand(shape)
            for i, (key, shape, _) in enumerate(entries) if key.startswith(prefix)}


def points() -> torch.Tensor:
    return torch.tensor([[[20.0, 30.0, 0], [-1, -1, -1], [40.0, 10.0, 1], [-1, -1, -1]]])


# --- the authors' released format -------------------------------------------------------------

@pytest.mark.parametrize("name, device", [("skip", "cpu"), ("dinov3_skip", torch.device("cpu"))])
def test_official_format_loads(name, device, manifest):
    model = load_checkpoint(reference_file(f"official_format_{name}.pth"), device=device)
    assert model.config == variant_config(REFERENCE_VARIANTS[name])
    assert not model.training and not any(m.training for m in model.modules())
    state = model.state_dict()
    entries = manifest(name)["entries"]
    assert sorted(state) == sorted(key for key, _, _ in entries)
    for i, (key, shape, _) in enumerate(entries):
        assert state[key].shape == tuple(shape), key
        assert state[key].device == torch.device(device), key
        assert bool((state[key] == rule_value(i)).all()), f"{key} does not hold {rule_value(i)}"


@pytest.mark.parametrize("name", list(REFERENCE_VARIANTS))
def test_config_from_authors_gives_variant(name, manifest):
    config = from_json(manifest(name)["config"])
    assert config["class"] == AUTHORS_CLASS
    assert config_from_authors(config["params"], "x.pth") == variant_config(REFERENCE_VARIANTS[name])


def _params(manifest, base: str = "skip", **changes: Any) -> Dict:
    """A reference config's params with settings replaced (``section__key`` for nested ones)."""
    params = copy.deepcopy(from_json(manifest(base)["config"])["params"])
    for name, value in changes.items():
        section, _, key = name.partition("__")
        if key:
            params[section]["value"][key] = value
        else:
            params[section] = {"type": "builtin", "value": value, "specified": True}
    return params


def test_config_from_authors_harmless_settings(manifest):
    config = config_from_authors(_params(manifest, norm_radius=3, random_split=True, cpu_dist_maps=True,
                                         backbone_params__img_size=(224, 224), head_params__dropout_ratio=0.0),
                                 "x.pth")
    assert config == variant_config("skipclick", disk_radius=3, train_size=(224, 224))
    config = config_from_authors(_params(manifest, "frozen", use_intermediate=[5]), "x.pth")
    assert config.tap_blocks == (2,)   # the block-2 quirk, whichever single block is named


@pytest.mark.parametrize("setting, value", [
    ("use_disks", False), ("with_prev_mask", False), ("use_conv_stack", True), ("with_aux_output", True),
    ("use_rgb_conv", True), ("extractor_type", "dinov2_vitl14"), ("use_intermediate", [5, 11]),
    ("norm_radius", -1), ("norm_mean_std", ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))), ("brand_new_flag", 1),
    ("backbone_params__primitive_stack", False), ("backbone_params__patch_size", (16, 16)),
    ("backbone_params__embed_dim", 1024), ("neck_params__in_dim", 1024),
    ("head_params__align_corners", True), ("head_params__num_classes", 2), ("head_params__upsample", "x8"),
])
def test_config_from_authors_refuses_unsupported(setting, value, manifest):
    with pytest.raises(ValueError) as err:
        config_from_authors(_params(manifest, **{setting: value}), "some/file.pth")
    message = str(err.value)
    assert "some/file.pth" in message and setting.replace("__", ".") in message and repr(value) in message


def test_authors_format_with_other_class_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"state_dict": {}, "config": {"class": "isegm.model.is_plainvit_model.PlainVitModel",
                                             "params": {}}}, path)
    with pytest.raises(ValueError, match=r"class.*PlainVitModel") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


def test_authors_format_with_wrong_keys_refused(tmp_path, manifest):
    config = from_json(manifest("skip")["config"])
    state = rule_state(manifest("skip")["entries"])
    del state["fuse.weight"]
    state["head.extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save({"state_dict": state, "config": config}, path)
    expected = r"missing keys \['fuse.weight'\].*unexpected keys \['head.extra.weight'\]"
    with pytest.raises(ValueError, match=expected) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


# --- refusing malicious files -----------------------------------------------------------------

class Payload:
    """Runs a shell command when unpickled by a plain unpickler."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_malicious_pickle_refused_without_running(writer, tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pth"
    obj = {"state_dict": Payload(f"touch {marker}"), "config": {}}
    if writer == "torch.save":
        torch.save(obj, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(obj, f, protocol=2)
    with pytest.raises(ValueError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert f"{os.system.__module__}.system" in message   # the refused global
    assert str(path) in message and "nothing from the file was run" in message and "weights_only" not in message
    assert not marker.exists()


def test_malicious_payload_is_live(tmp_path):
    """The payload above does run under a plain unpickler, so the refusal test is not vacuous."""
    marker = tmp_path / "executed"
    pickle.loads(pickle.dumps(Payload(f"touch {marker}")))
    assert marker.exists()


# --- our format -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_model():
    """A small SkipClick (ViT-S/14 backbone, one fusion block) so that files stay small."""
    torch.manual_seed(0)
    return build_skipclick("skipclick", backbone="dinov2_vits14_reg", fusion_depth=1).eval()


def test_round_trip(small_model, tmp_path):
    path = tmp_path / "model.pth"
    save_checkpoint(small_model, path, epoch=3, metrics={"noc90": 1.5, "runs": [1, 2]})
    model = load_checkpoint(path)
    assert model.config == small_model.config and not model.training
    assert model.state_dict().keys() == small_model.state_dict().keys()
    for key, value in small_model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    x = torch.rand(1, 4, 56, 56, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x, points())["instances"], small_model(x, points())["instances"])
    raw = torch.load(path, weights_only=True)   # no allow-list needed
    assert raw["format"] == "skipclick-checkpoint/1" and raw["epoch"] == 3 and raw["metrics"]["runs"] == [1, 2]
    assert raw["config"]["train_size"] == [448, 448]   # plain JSON


def test_saved_variant_checked(small_model, tmp_path):
    path = tmp_path / "model.pth"
    save_checkpoint(small_model, path)
    with pytest.raises(ValueError, match=r"not variant 'skipclick'.*backbone"):
        load_checkpoint(path, variant="skipclick")


def test_save_is_atomic(small_model, tmp_path, monkeypatch):
    path = tmp_path / "model.pth"
    save_checkpoint(small_model, path, epoch=1)
    before = path.read_bytes()

    def failing_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(small_model, path, epoch=2)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.pth"]


@pytest.mark.parametrize("extra", [dict(score=np.float64(0.5)), dict(meta={"a": object()}), dict(config={})])
def test_save_refuses_non_plain_metadata(small_model, tmp_path, extra):
    with pytest.raises((TypeError, ValueError)):
        save_checkpoint(small_model, tmp_path / "model.pth", **extra)
    assert os.listdir(tmp_path) == []


# --- backbone release files -------------------------------------------------------------------

@pytest.mark.parametrize("name, family", [("skip", "dinov2"), ("dinov3_skip", "dinov3")])
def test_backbone_file_loads(name, family, manifest, tmp_path):
    state = rule_state(manifest(name)["entries"], f"feature_extractor.{family}.")
    path = tmp_path / "backbone.pth"
    torch.save(state, path)
    with pytest.warns(UserWarning, match="untrained"):
        model = load_checkpoint(path)
    assert model.config == variant_config(REFERENCE_VARIANTS[name]) and not model.training
    loaded = model.feature_extractor.vit.state_dict()
    assert loaded.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


def test_backbone_file_other_size(tmp_path):
    torch.manual_seed(0)
    state = build_backbone("dinov2_vits14_reg").state_dict()
    path = tmp_path / "dinov2_vits14_reg4_pretrain.pth"
    torch.save(state, path)
    with pytest.warns(UserWarning, match="untrained"):
        model = load_checkpoint(path, variant="frozen_backbone")
    assert model.config == variant_config("frozen_backbone", backbone="dinov2_vits14_reg")
    for key, value in model.feature_extractor.vit.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_backbone_file_wrong_family_variant(manifest, tmp_path):
    path = tmp_path / "backbone.pth"
    torch.save(rule_state(manifest("dinov3_skip")["entries"], "feature_extractor.dinov3."), path)
    with pytest.raises(ValueError, match=r"dinov3_vitb16 backbone.*variant 'skipclick'"):
        load_checkpoint(path, variant="skipclick")


# --- files that are none of these -------------------------------------------------------------

def test_unknown_layout_refused(tmp_path):
    path = tmp_path / "garbage.pth"
    torch.save({"foo.weight": torch.zeros(2), "bar": 1}, path)
    with pytest.raises(ValueError, match=r"'foo.weight'.*'bar'") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


def test_non_torch_file_refused(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("not a checkpoint\n")
    with pytest.raises(ValueError, match="cannot be read as a torch checkpoint") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


def test_missing_file(tmp_path):
    path = tmp_path / "skipclick_dinov2.pth"
    with pytest.raises(FileNotFoundError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert str(path) in message and "SkipClick checkpoint" in message and WEIGHTS_URL in message


def test_load_is_model_keeps_the_family_entry_point(small_model, tmp_path):
    """``isegm.inference.utils.load_is_model(checkpoint, device, eval_ritm)`` of RITM / SimpleClick
    scripts loads what load_checkpoint loads; a state dict is refused with the way to load it."""
    from isegm.inference.utils import load_is_model
    path = tmp_path / "model.pth"
    save_checkpoint(small_model, path)
    model = load_is_model(str(path), "cpu", False)
    assert not model.training and model.config == small_model.config
    for key, value in small_model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    with pytest.raises(TypeError, match="load_state_dict"):
        load_is_model(small_model.state_dict(), "cpu")
