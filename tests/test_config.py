"""Config lookup (--config, SKIPCLICK_CONFIG, ./config.yml, built-in defaults): relative paths
resolve against the file (the defaults' against the current folder), environment variables
override keys, and a file named but missing is an error naming it."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from isegm.utils.config import BUILTIN_CONFIG, add_config_argument, config_source, find_config, load_config


@pytest.fixture
def clean_env(monkeypatch):
    """No SKIPCLICK_* variable of the caller's shell leaks into a test."""
    for key in list(os.environ):
        if key.startswith("SKIPCLICK_"):
            monkeypatch.delenv(key)
    return monkeypatch


def test_relative_paths_resolve_against_the_file(tmp_path, clean_env):
    clean_env.chdir("/")
    (tmp_path / "config.yml").write_text("DINOV2_WEIGHTS: weights/v2.pth\nEXPS_PATH: /abs/exps\nEMPTY:\n")
    config = load_config(tmp_path / "config.yml")
    assert config["DINOV2_WEIGHTS"] == str(tmp_path / "weights" / "v2.pth")
    assert config["EXPS_PATH"] == "/abs/exps"
    assert config["EMPTY"] is None


def test_environment_overrides_and_adds_keys(tmp_path, clean_env):
    (tmp_path / "config.yml").write_text("DINOV2_WEIGHTS: weights/v2.pth\n")
    clean_env.setenv("SKIPCLICK_DINOV2_WEIGHTS", "/data/dinov2.pth")
    clean_env.setenv("SKIPCLICK_GRABCUT_PATH", "/data/GrabCut")
    config = load_config(tmp_path / "config.yml")
    assert config["DINOV2_WEIGHTS"] == "/data/dinov2.pth"
    assert config["GRABCUT_PATH"] == "/data/GrabCut"
    assert "CONFIG" not in config


def test_lookup_order(tmp_path, clean_env):
    """--config beats SKIPCLICK_CONFIG beats ./config.yml beats the built-in defaults."""
    for name in ("flag", "env", "cwd"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yml").write_text(f"EXPS_PATH: {name}_exps\n")
    clean_env.chdir(tmp_path / "cwd")
    clean_env.setenv("SKIPCLICK_CONFIG", str(tmp_path / "env" / "config.yml"))
    assert load_config(tmp_path / "flag" / "config.yml") == {"EXPS_PATH": str(tmp_path / "flag" / "flag_exps")}
    assert load_config() == {"EXPS_PATH": str(tmp_path / "env" / "env_exps")}
    clean_env.delenv("SKIPCLICK_CONFIG")
    assert load_config() == {"EXPS_PATH": str(tmp_path / "cwd" / "cwd_exps")}
    assert find_config() == Path("config.yml") == config_source()
    clean_env.chdir(tmp_path)
    assert find_config() is None and config_source().name == "config.yml"
    defaults = load_config()
    assert defaults["EXPS_PATH"] == str(tmp_path / "experiments")
    assert defaults["GRABCUT_PATH"] == str(tmp_path / "datasets" / "GrabCut")


def test_named_but_missing_files_are_errors(tmp_path, clean_env):
    clean_env.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere.yml.*--config"):
        load_config(tmp_path / "nowhere.yml")
    clean_env.setenv("SKIPCLICK_CONFIG", str(tmp_path / "gone.yml"))
    with pytest.raises(FileNotFoundError, match="gone.yml.*SKIPCLICK_CONFIG"):
        load_config()
    (tmp_path / "bad.yml").write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="bad.yml"):
        load_config(tmp_path / "bad.yml")


def test_repository_config_has_the_builtin_keys():
    """The clone's config.yml is the editable copy of the defaults shipped in the package."""
    repository = yaml.safe_load((REPO / "config.yml").read_text())
    builtin = yaml.safe_load(BUILTIN_CONFIG.read_text())
    assert list(repository) == list(builtin)
    assert {"DINOV2_WEIGHTS", "DINOV3_WEIGHTS", "CHECKPOINTS_PATH", "EXPS_PATH"} <= set(builtin)


def test_config_flag_and_its_alias():
    parser = argparse.ArgumentParser()
    add_config_argument(parser)
    assert parser.parse_args(["--config", "a.yml"]).config == "a.yml"
    assert parser.parse_args(["--config-path", "b.yml"]).config == "b.yml"
    assert parser.parse_args([]).config is None
