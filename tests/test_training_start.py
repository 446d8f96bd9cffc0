"""Where training starts from: a pretrained backbone named in config.yml, or random weights only
when chosen (a model file's ``FROM_SCRATCH``, ``skipclick-train --from-scratch``)."""
from __future__ import annotations

import textwrap

import pytest

from conftest import REPO
from isegm.cli import train as train_cli
from isegm.engine.experiment import load_model_file
from isegm.model.backbones import BACKBONES
from isegm.model.skipclick import model_from_settings

BACKBONE_KEYS = [("frozen_backbone", "dinov2_vitb14_reg", "DINOV2_WEIGHTS"),
                 ("skipclick_dinov3", "dinov3_vitb16", "DINOV3_WEIGHTS")]


@pytest.mark.parametrize("variant, backbone, key", BACKBONE_KEYS)
@pytest.mark.parametrize("value", ["absent", None, ""])
def test_a_backbone_without_its_file_is_an_error(variant, backbone, key, value):
    """The key unset (absent, null or empty in config.yml): the message names the key, the
    release file, where to get it and how to train from scratch on purpose."""
    cfg = {} if value == "absent" else {key: value}
    with pytest.raises(FileNotFoundError) as err:
        model_from_settings(variant, cfg)
    spec = BACKBONES[backbone]
    message = str(err.value)
    for part in (f"{key} is not set", spec.weights_file, spec.weights_source, f"SKIPCLICK_{key}", "--from-scratch",
                 "FROM_SCRATCH = True"):
        assert part in message, (part, message)


def test_a_set_key_whose_file_is_missing_stays_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="DINOV2_WEIGHTS in config.yml"):
        model_from_settings("frozen_backbone", {"DINOV2_WEIGHTS": str(tmp_path / "absent.pth")})


def test_the_baseline_row_needs_its_pretrained_backbone_too():
    """The Baseline trains DINOv2 end to end from its pretrained weights, as the authors do."""
    with pytest.raises(FileNotFoundError, match="DINOV2_WEIGHTS is not set"):
        model_from_settings("baseline", {})


@pytest.mark.parametrize("cfg, from_scratch", [({"from_scratch": True}, False), ({}, True),
                                               ({"resume_from": "checkpoint.pth"}, False)])
def test_random_starting_weights_when_chosen(tmp_path, cfg, from_scratch):
    """``--from-scratch`` (cfg), a model file's ``FROM_SCRATCH`` (argument), or a resumed run
    (the trainer loads the checkpoint) builds without the backbone file, set or not."""
    cfg = {**cfg, "DINOV2_WEIGHTS": str(tmp_path / "absent.pth")}
    model = model_from_settings("frozen_backbone", cfg, from_scratch=from_scratch)
    assert model.config.freeze_backbone
    assert not any(p.requires_grad for p in model.feature_extractor.vit.parameters())


def test_the_quickstart_model_declares_training_from_scratch():
    with pytest.raises(FileNotFoundError, match="tinyvit_p8 backbone has no pretrained file.*--from-scratch"):
        model_from_settings("tiny", {})
    model_file = load_model_file(REPO / "models" / "quickstart" / "tiny.py")
    assert model_file.FROM_SCRATCH is True
    assert model_file.init_model({}).config.backbone == "tinyvit_p8"


@pytest.fixture
def no_weights_env(monkeypatch):
    """No backbone key of the caller's shell reaches ``train.py``."""
    for key in ("SKIPCLICK_DINOV2_WEIGHTS", "SKIPCLICK_DINOV3_WEIGHTS", "SKIPCLICK_CONFIG"):
        monkeypatch.delenv(key, raising=False)


def test_train_command_stops_on_an_unset_backbone_key(tmp_path, capsys, no_weights_env):
    config = tmp_path / "config.yml"
    config.write_text(f"EXPS_PATH: {tmp_path / 'exps'}\n")
    with pytest.raises(SystemExit) as stop:
        train_cli.main([str(REPO / "models" / "iter_mask" / "skipclick.py"), "--cpu", "--config-path", str(config)])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: DINOV2_WEIGHTS is not set") and "Traceback" not in err


def test_train_command_from_scratch_reaches_the_model_file(tmp_path, no_weights_env):
    model_file = tmp_path / "records.py"
    model_file.write_text(textwrap.dedent("""
        from pathlib import Path

        def main(cfg):
            Path(cfg["EXP_PATH"], "from_scratch.txt").write_text(str(cfg["from_scratch"]))
    """))
    config = tmp_path / "config.yml"
    config.write_text(f"EXPS_PATH: {tmp_path / 'exps'}\n")
    train_cli.main([str(model_file), "--cpu", "--config-path", str(config), "--from-scratch"])
    assert [p.read_text() for p in (tmp_path / "exps").rglob("from_scratch.txt")] == ["True"]
    with pytest.raises(SystemExit) as stop:
        train_cli.parse_args([str(model_file), "--from-scratch", "--weights", "w.pth"])
    assert stop.value.code == 2
