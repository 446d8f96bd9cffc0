"""skipclick-weights: the table of released files, the offline check of a folder, and error
messages that name flags and config keys that exist."""
import ast
import hashlib
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from conftest import reference_file
from isegm.cli.weights import RELEASES, inspect_file, main, markdown_table
from isegm.model.backbones import BACKBONES, build_backbone
from isegm.model.emc.checkpoint import save_emc_checkpoint
from isegm.model.emc.model import build_emc
from isegm.model.emc.pretrained import IMAGENET_WEIGHTS
from isegm.model.families import family_named
from isegm.model.skipclick import build_skipclick

ROOT = Path(__file__).resolve().parents[1]


def _digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --- the table --------------------------------------------------------------------------------

def test_list_prints_the_table_of_the_docs(capsys):
    assert main(["list"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == markdown_table()
    assert printed in (ROOT / "docs" / "weights.md").read_text(), \
        "docs/weights.md must hold the table `skipclick-weights list` prints"
    assert len(printed.splitlines()) == 2 + len(RELEASES)


def test_table_rows_name_what_exists():
    config_keys = set(yaml.safe_load((ROOT / "config.yml").read_text()))
    files = [r.file for r in RELEASES]
    assert len(set(files)) == len(files)
    kinds = {}
    for r in RELEASES:
        kinds.setdefault((r.kind, r.family), []).append(r.variant)
        if r.kind == "model":
            assert r.variant in family_named(r.family).variants and (ROOT / r.use).is_file(), r
        else:
            assert r.use in config_keys, r
            assert r.variant in (BACKBONES if r.kind == "backbone" else IMAGENET_WEIGHTS), r
    # the authors' releases: four DINOv2 rows and one DINOv3 model; EMC-Click's five files
    assert kinds[("model", "SkipClick")] == ["baseline", "frozen_backbone", "intermediate_features", "skipclick",
                                             "skipclick_dinov3"]
    assert kinds[("model", "EMCClick")] == ["hr18s", "hr18", "hr32", "segb0", "segb3"]
    assert kinds[("backbone", "SkipClick")] == ["dinov2_vitb14_reg", "dinov3_vitb16"]


@pytest.mark.slow
def test_table_parameter_counts_are_the_built_variants():
    torch.manual_seed(0)
    for r in RELEASES:
        if r.params is None:
            continue
        module = build_backbone(r.variant) if r.kind == "backbone" else family_named(r.family).build(r.variant)
        assert sum(p.numel() for p in module.parameters()) == r.params, r.file


# --- check ------------------------------------------------------------------------------------

@pytest.fixture
def folder(tmp_path):
    """A weights folder: an EMC-Click model in the authors' format, a DINOv2 backbone file of
    another size than the table's, an ImageNet MiT-B0 file and a corrupt file."""
    torch.manual_seed(0)
    save_emc_checkpoint(build_emc("hr18s"), tmp_path / "my_hr18s.pth")
    torch.save(build_backbone("dinov2_vits14_reg").state_dict(), tmp_path / "dinov2_small.pth")
    torch.save(build_emc("segb0").feature_extractor.backbone.state_dict(), tmp_path / "mit_b0.pth")
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    (tmp_path / "notes.txt").write_text("not a weights file")
    return tmp_path


def test_inspect_file_says_what_a_file_holds(folder):
    emc = inspect_file(folder / "my_hr18s.pth")
    assert (emc.error, emc.kind, emc.family, emc.variant) == (None, "model", "EMCClick", "hr18s")
    assert emc.params == 4_322_416 and emc.release.file == "hr18s.pth"
    assert emc.sha256 == _digest(folder / "my_hr18s.pth")

    backbone = inspect_file(folder / "dinov2_small.pth")
    assert (backbone.kind, backbone.variant) == ("backbone", "dinov2_vits14_reg") and backbone.release is None
    assert backbone.params == sum(p.numel() for p in build_backbone("dinov2_vits14_reg").parameters())

    imagenet = inspect_file(folder / "mit_b0.pth")
    assert (imagenet.kind, imagenet.variant, imagenet.release.file) == ("imagenet", "segb0", "mit_b0.pth")

    broken = inspect_file(folder / "broken.pth")
    assert broken.release is None and "cannot be read as a torch checkpoint" in broken.error


def test_check_reports_files_and_missing_releases(folder, capsys):
    assert main(["check", str(folder)]) == 1   # the corrupt file does not load
    out = capsys.readouterr().out
    assert "4 file(s)" in out and "notes.txt" not in out
    assert f"sha256 {_digest(folder / 'my_hr18s.pth')}" in out
    assert "variant hr18s, 4,322,416 parameters (the configuration of hr18s.pth in the table)" in out
    assert "broken.pth\n  does not load:" in out
    missing = out.split("not present")[1]
    assert "hr18s.pth" not in missing.replace("my_hr18s", "") and "\n  mit_b0.pth" not in missing
    assert "\n  segb3.pth (EMC-Click, SegFormer-B3 (MiT-B3)): https://github.com/feiaxyt/EMC-Click" in missing
    assert "set DINOV2_WEIGHTS in config.yml" in missing

    (folder / "broken.pth").unlink()
    assert main(["check", str(folder / "my_hr18s.pth")]) == 0


def test_check_default_folders_come_from_the_config(folder, tmp_path_factory, capsys):
    config = tmp_path_factory.mktemp("cfg") / "config.yml"
    config.write_text(f"CHECKPOINTS_PATH: {folder}\nDINOV2_WEIGHTS: {folder}/dinov2_vitb14_reg4_pretrain.pth\n"
                      "MIT_B0_WEIGHTS: elsewhere/mit_b0.pth\n")
    (folder / "broken.pth").unlink()
    assert main(["check", "--config", str(config)]) == 0
    assert capsys.readouterr().out.startswith(f"weights in {folder}: 3 file(s)")


def test_check_without_weights_lists_every_release(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "config.yml"
    config.write_text("CHECKPOINTS_PATH: nowhere/\n")
    assert main(["check", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("weights in weights (absent): 0 file(s)\nnot present")
    assert all(f"\n  {r.file} (" in out for r in RELEASES)


def test_check_of_a_missing_path_is_one_line_and_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["check", str(tmp_path / "nowhere")])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nowhere" in err and "does not exist" in err


def test_check_reads_the_authors_skipclick_files(tmp_path, capsys):
    for name in ("official_format_skip.pth", "official_format_dinov3_skip.pth"):
        shutil.copy(reference_file(name), tmp_path / name)
    assert main(["check", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "variant skipclick, 153,164,417 parameters (the configuration of skipclick_dinov2.pth" in out
    assert "variant skipclick_dinov3, 152,204,417 parameters (the configuration of skipclick_dinov3.pth" in out
    assert f"sha256 {_digest(tmp_path / 'official_format_skip.pth')}" in out


# --- messages name flags and config keys that exist ----------------------------------------------

SOURCES = [*ROOT.glob("*.py"), *ROOT.glob("isegm/**/*.py"), *ROOT.glob("scripts/**/*.py")]
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9_-]*")
# Options of other programs that messages name with their program: torchrun's.
OTHER_PROGRAMS_FLAGS = {"--nproc-per-node", "--nnodes", "--rdzv-backend", "--rdzv-endpoint", "--no-python"}
CONFIG_KEY = re.compile(r"\b(?:SKIPCLICK_)?([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*_(?:WEIGHTS|PATH))\b")


def _strings(path):
    """The text of every string literal of a module (f-strings' literal parts included) but
    docstrings and dict keys looked up (``cfg["KEY"]``, ``cfg.get("KEY")``): what it says."""
    tree = ast.parse(path.read_text(), str(path))
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body \
                and isinstance(node.body[0], ast.Expr):
            skip.add(id(node.body[0].value))
        elif isinstance(node, ast.Subscript):
            skip.add(id(node.slice))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) in ("get", "pop", "setdefault") \
                and node.args:
            skip.add(id(node.args[0]))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            yield node.value


def _defined_flags():
    flags = set()
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
                flags |= {a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("--")}
    return flags


def test_messages_name_flags_some_command_defines():
    defined = _defined_flags()
    assert {"--checkpoint", "--device", "--dtype"} <= defined
    named = {(flag, path.relative_to(ROOT).as_posix()) for path in ROOT.glob("isegm/**/*.py")
             for text in _strings(path) for flag in FLAG.findall(text)}
    assert named, "no flag found in any message: the scan is broken"
    unknown = sorted((flag, where) for flag, where in named if flag not in defined | OTHER_PROGRAMS_FLAGS)
    assert not unknown, f"messages name flags no command defines: {unknown}"


def test_messages_name_config_keys_config_yml_has():
    keys = set(yaml.safe_load((ROOT / "config.yml").read_text()))
    named = {(key, path.relative_to(ROOT).as_posix()) for path in ROOT.glob("isegm/**/*.py")
             for text in _strings(path) for key in CONFIG_KEY.findall(text)}
    assert named
    unknown = sorted((key, where) for key, where in named if key not in keys)
    assert not unknown, f"messages name config keys config.yml lacks: {unknown}"


@pytest.mark.parametrize("variant, key", [("skipclick", "DINOV2_WEIGHTS"), ("skipclick_dinov3", "DINOV3_WEIGHTS")])
def test_missing_backbone_names_its_config_key(tmp_path, variant, key):
    with pytest.raises(FileNotFoundError) as err:
        build_skipclick(variant, backbone_weights=tmp_path / "absent.pth")
    message = str(err.value)
    assert f"{key} in config.yml" in message and f"SKIPCLICK_{key}" in message and "--backbone" not in message
