"""config.yml: relative paths resolve against the file, environment variables override."""
from __future__ import annotations

import pytest

from isegm.utils.config import DEFAULT_CONFIG, load_config


def test_relative_paths_resolve_against_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir("/")
    (tmp_path / "config.yml").write_text("DINOV2_WEIGHTS: weights/v2.pth\nEXPS_PATH: /abs/exps\nEMPTY:\n")
    config = load_config(tmp_path / "config.yml")
    assert config["DINOV2_WEIGHTS"] == str(tmp_path / "weights" / "v2.pth")
    assert config["EXPS_PATH"] == "/abs/exps"
    assert config["EMPTY"] is None


def test_environment_overrides_and_adds_keys(tmp_path, monkeypatch):
    (tmp_path / "config.yml").write_text("DINOV2_WEIGHTS: weights/v2.pth\n")
    monkeypatch.setenv("SKIPCLICK_DINOV2_WEIGHTS", "/data/dinov2.pth")
    monkeypatch.setenv("SKIPCLICK_GRABCUT_PATH", "/data/GrabCut")
    config = load_config(tmp_path / "config.yml")
    assert config["DINOV2_WEIGHTS"] == "/data/dinov2.pth"
    assert config["GRABCUT_PATH"] == "/data/GrabCut"


def test_repository_config_loads(monkeypatch):
    monkeypatch.delenv("SKIPCLICK_DINOV2_WEIGHTS", raising=False)
    config = load_config()
    assert {"DINOV2_WEIGHTS", "DINOV3_WEIGHTS", "CHECKPOINTS_PATH", "EXPS_PATH"} <= set(config)
    assert config["DINOV2_WEIGHTS"].startswith(str(DEFAULT_CONFIG.parent))


def test_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.yml"):
        load_config(tmp_path / "nowhere.yml")
    (tmp_path / "bad.yml").write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="bad.yml"):
        load_config(tmp_path / "bad.yml")
