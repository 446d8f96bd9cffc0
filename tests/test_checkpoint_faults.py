"""Checkpoint files that cannot be used: each gives one ``CheckpointError`` naming the file, what
is wrong and the fix (never torch's advice to load with ``weights_only=False``), before anything
is built; every released and reference config lies within the families' bounds; the commands
turn these errors into one ``error:`` line and exit status 2."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO, REFERENCE_VARIANTS, SHARED
from isegm.model import EMC_CONFIGS, VARIANTS, build_skipclick, load_checkpoint, save_checkpoint, variant_config
from isegm.model.checkpoint import CheckpointError, CheckpointNotFoundError, check_config
from isegm.model.config_bounds import Bound, config_problem
from isegm.model.emc.checkpoint import authors_config
from isegm.model.emc.checkpoint import config_bounds as emc_bounds
from isegm.model.emc.checkpoint import config_from_authors as emc_from_authors
from isegm.model.emc.model import EMCConfig
from isegm.model.skipclick.checkpoint import config_bounds as skipclick_bounds
from isegm.model.skipclick.checkpoint import config_from_authors as skipclick_from_authors


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    """A real checkpoint of our format (the tiny SkipClick)."""
    path = tmp_path_factory.mktemp("good") / "tiny.pth"
    torch.manual_seed(0)
    save_checkpoint(build_skipclick("tiny"), path)
    return path


def our_file(path: Path, **config) -> Path:
    """A small file of our format whose stored config is the tiny variant's with ``config`` on top."""
    stored = json.loads(json.dumps(variant_config("tiny").to_dict()))
    torch.save({"format": "skipclick-checkpoint/1", "family": "SkipClick", "config": {**stored, **config},
                "state_dict": {}}, path)
    return path


class Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def refused(path: Path, *words: str) -> CheckpointError:
    """The error of loading ``path``, checked to be one line naming the file and ``words``."""
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message and "weights_only" not in message, message
    for word in words:
        assert word in message, message
    assert err.value.path == str(path) and err.value.problem and err.value.fix
    return err.value


# --- the file itself --------------------------------------------------------------------------

def test_missing_file_is_also_a_file_not_found_error(tmp_path):
    err = refused(tmp_path / "none.pth", "no checkpoint at", "nothing is downloaded")
    assert isinstance(err, CheckpointNotFoundError) and isinstance(err, FileNotFoundError)
    assert err.filename == str(tmp_path / "none.pth")


def test_folder(tmp_path):
    (tmp_path / "model.pth").mkdir()
    refused(tmp_path / "model.pth", "is a folder")


def test_empty_file(tmp_path):
    (tmp_path / "empty.pth").write_bytes(b"")
    refused(tmp_path / "empty.pth", "empty (0 bytes)", "again")


def test_first_half_of_a_real_checkpoint(good, tmp_path):
    data = good.read_bytes()
    (tmp_path / "half.pth").write_bytes(data[: len(data) // 2])
    refused(tmp_path / "half.pth", "cut short", f"{len(data) // 2} bytes", "again")


def test_cut_short_authors_file_names_it(tmp_path):
    """The cut that made torch raise a bare ``OSError: [Errno 22] Invalid argument``."""
    source = SHARED / "reference" / "model" / "official_format_skip.pth"
    if not source.is_file():
        pytest.skip(f"{source} is absent (set SKIPCLICK_SHARED to the shared/ folder)")
    data = source.read_bytes()
    for fraction in (0.1, 0.3, 0.5, 0.9):
        path = tmp_path / f"cut{fraction}.pth"
        path.write_bytes(data[: int(len(data) * fraction)])
        refused(path, "cut short")


def test_damaged_member_of_a_complete_archive(good, tmp_path):
    """A complete zip whose data record is overwritten: torch's failure becomes ours."""
    data = bytearray(good.read_bytes())
    start = data.index(b"data.pkl") + 64   # inside the pickle record
    data[start:start + 64] = os.urandom(64)
    (tmp_path / "damaged.pth").write_bytes(bytes(data))
    refused(tmp_path / "damaged.pth", "damaged")


def test_random_bytes(tmp_path):
    (tmp_path / "random.pth").write_bytes(b"\x05\x13" + os.urandom(4094))
    refused(tmp_path / "random.pth", "cannot be read as a torch checkpoint", "neither a torch zip archive nor a pickle")


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_malicious_pickle_refused_and_nothing_runs(writer, tmp_path):
    marker, path = tmp_path / "executed", tmp_path / "evil.pth"
    obj = {"state_dict": Payload(marker), "config": {}}
    if writer == "torch.save":
        torch.save(obj, path)
    else:
        import pickle
        path.write_bytes(pickle.dumps(obj, protocol=2))
    refused(path, "refused", f"{os.system.__module__}.system", "nothing from the file was run")
    assert not marker.exists()


# --- what the file holds ----------------------------------------------------------------------

def test_optimizer_state(tmp_path):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    torch.save(optimizer.state_dict(), tmp_path / "optimizer.pth")
    refused(tmp_path / "optimizer.pth", "optimizer state", "last_checkpoint.pth")


def test_plain_value_and_unknown_family(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pth")
    refused(tmp_path / "list.pth", "no checkpoint of a known model family", "a list")
    stored = json.loads(json.dumps(variant_config("tiny").to_dict()))
    torch.save({"format": "skipclick-checkpoint/1", "family": "Nope", "config": stored, "state_dict": {}},
               tmp_path / "family.pth")
    refused(tmp_path / "family.pth", "family 'Nope' is unknown", "SkipClick, EMCClick")


def test_our_format_without_weights(tmp_path):
    torch.save({"format": "skipclick-checkpoint/1", "family": "SkipClick", "config": {}}, tmp_path / "x.pth")
    refused(tmp_path / "x.pth", "lacks 'state_dict'")
    our_file(tmp_path / "y.pth")
    data = torch.load(tmp_path / "y.pth", weights_only=True)
    torch.save({**data, "state_dict": [1, 2]}, tmp_path / "y.pth")
    refused(tmp_path / "y.pth", "'state_dict' is a list")


# --- configs out of bounds: refused before anything is built ------------------------------------

@pytest.mark.parametrize("config, words", [
    (dict(fusion_depth=5000), ["fusion_depth=5000", "1 to 12"]),
    (dict(fusion_depth=-2), ["fusion_depth=-2", "1 to 12"]),
    (dict(fpn_dims=[32, 64, 128, -1]), ["fpn_dims=[32, 64, 128, -1]", "4 integers, each 1 to 2048"]),
    (dict(fpn_dims=[32, 64]), ["fpn_dims=[32, 64]", "4 integers"]),
    (dict(head_channels=10 ** 9), ["head_channels=1000000000", "1 to 2048"]),
    (dict(train_size=[100, 112]), ["train_size=[100, 112]", "a multiple of 8", "tinyvit_p8 patches are 8"]),
    (dict(train_size=[112 * 200, 112]), ["train_size=[22400, 112]", "8 to 2048"]),
    (dict(tap_blocks=[1, 2, 4, 40]), ["tap_blocks=[1, 2, 4, 40]", "each 0 to 5", "tinyvit_p8 has 6 blocks"]),
    (dict(fusion_heads=5), ["fusion_heads=5", "dividing 192"]),
    (dict(fusion_heads="3"), ["fusion_heads='3'", "an integer"]),
    (dict(fusion_depth=2.0), ["fusion_depth=2.0", "an integer"]),
    (dict(fusion_depth=True), ["fusion_depth=True", "an integer"]),
    (dict(fusion_mlp_ratio=float("inf")), ["fusion_mlp_ratio=inf", "0.25 to 8"]),
    (dict(disk_radius=0), ["disk_radius=0", "1 to 100"]),
    (dict(skip_connections="yes"), ["skip_connections='yes'", "true or false"]),
    (dict(head_upsample="x8"), ["head_upsample='x8'", "one of 'x1', 'x2', 'x4'"]),
    (dict(backbone="vit_giant"), ["backbone='vit_giant'", "one of"]),
    (dict(depth=3), ["'depth' is no setting"]),
])
def test_config_out_of_bounds_refused_instantly(config, words, tmp_path):
    path = our_file(tmp_path / "crafted.pth", **config)
    assert path.stat().st_size < 4096
    start = time.perf_counter()
    err = refused(path, "SkipClick config is out of bounds", *words)
    assert time.perf_counter() - start < 1.0
    assert "every released SkipClick model lies within" in err.fix


def test_config_that_is_not_a_dict(tmp_path):
    torch.save({"format": "skipclick-checkpoint/1", "family": "SkipClick", "config": [1, 2], "state_dict": {}},
               tmp_path / "x.pth")
    refused(tmp_path / "x.pth", "it is a list, not a dict of settings")


def _authors_skipclick(name: str):
    manifest = json.loads((SHARED / "reference" / "model" / f"manifest_{name}.json").read_text())
    from test_checkpoint import from_json
    return from_json(manifest["config"])


def test_authors_format_out_of_bounds_refused_before_building(tmp_path):
    """A file in the authors' release format declaring a 5000-block fusion stack."""
    if not (SHARED / "reference" / "model" / "manifest_skip.json").is_file():
        pytest.skip(f"{SHARED / 'reference' / 'model'} is absent (set SKIPCLICK_SHARED)")
    config = _authors_skipclick("skip")
    config["params"]["backbone_params"]["value"]["depth"] = 5000
    torch.save({"config": config, "state_dict": {}}, tmp_path / "authors.pth")
    start = time.perf_counter()
    refused(tmp_path / "authors.pth", "fusion_depth=5000")
    assert time.perf_counter() - start < 1.0


def test_emc_authors_format_out_of_bounds_refused(tmp_path):
    stored = authors_config(EMCConfig("hrnet", hrnet_width=18, ocr_width=48, small=True, mid_dims=64))
    stored["params"]["width"]["value"] = 4096
    torch.save({"config": stored, "state_dict": {}}, tmp_path / "emc.pth")
    refused(tmp_path / "emc.pth", "EMC-Click config is out of bounds", "hrnet_width=4096", "1 to 64")


# --- the bounds hold every released, reference and test model ---------------------------------

# The small models the tests and benchmarks build (besides the named variants).
TEST_SKIPCLICK = [dict(backbone="dinov2_vits14_reg", fusion_depth=1),
                  dict(backbone="dinov2_vits14_reg", fusion_depth=1, fpn_dims=(16, 32, 64, 128), head_channels=16),
                  dict(backbone="dinov2_vits14_reg", fusion_depth=1, fusion_heads=6, fpn_dims=(16, 32, 64, 128),
                       head_channels=16, train_size=(28, 28)),
                  dict(backbone="dinov3_vitb16", tap_norm=True, fusion_depth=1, fpn_dims=(16, 32, 64, 128),
                       head_channels=16, train_size=(32, 32)),
                  dict(disk_radius=3, train_size=(224, 224)), dict(detail_channels=16)]
TEST_EMC = [EMCConfig("hrnet", hrnet_width=8, ocr_width=8, small=True, mid_dims=8),
            EMCConfig("hrnet", hrnet_width=12, ocr_width=8, small=True, mid_dims=8),
            EMCConfig("hrnet", hrnet_width=8, ocr_width=16, small=True, mid_dims=16)]


def _fits(values, bounds) -> None:
    stored = json.loads(json.dumps(values))   # as our files store it: tuples as lists
    assert config_problem(stored, bounds(stored)) is None, (stored, config_problem(stored, bounds(stored)))
    check_config(values, bounds, "test", "x.pth")


def test_every_variant_and_test_model_lies_within_the_bounds():
    for name in VARIANTS:
        _fits(variant_config(name).to_dict(), skipclick_bounds)
    for overrides in TEST_SKIPCLICK:
        _fits(variant_config("skipclick", **overrides).to_dict(), skipclick_bounds)
    for config in [*EMC_CONFIGS.values(), *TEST_EMC]:
        _fits(config.to_dict(), emc_bounds)


def test_reference_configs_lie_within_the_bounds():
    """The authors' stored configs of the reference manifests (every SkipClick row, both EMC-Click
    fixtures) as the loader reads them."""
    names = [*REFERENCE_VARIANTS]
    if not (SHARED / "reference" / "model" / "manifest_skip.json").is_file():
        pytest.skip(f"{SHARED / 'reference'} is absent (set SKIPCLICK_SHARED)")
    for name in names:
        config = skipclick_from_authors(_authors_skipclick(name)["params"], name)
        assert config == variant_config(REFERENCE_VARIANTS[name])
        _fits(config.to_dict(), skipclick_bounds)
    for name in ("hrnet18s", "segformer_b0"):
        manifest = json.loads((SHARED / "reference" / "emc" / f"manifest_{name}.json").read_text())
        from test_checkpoint import from_json
        _fits(emc_from_authors(from_json(manifest["config"]), name).to_dict(), emc_bounds)


def test_bound_kinds():
    assert Bound("int", 1, 4).fits(4) and not Bound("int", 1, 4).fits(5) and not Bound("int", 1, 4).fits(True)
    assert Bound("number", 0.5, 2).fits(1) and Bound("number", 0.5, 2).fits(1.5)
    assert not Bound("number", 0.5, 2).fits(float("nan"))
    assert Bound("ints", 0, 9, length=(2, 3)).fits((1, 2)) and not Bound("ints", 0, 9, length=(2, 3)).fits([1])
    assert Bound("int", 1, 64, divides=768).fits(12) and not Bound("int", 1, 64, divides=768).fits(7)
    assert Bound("choice", choices=("a", "b")).allowed() == "one of 'a', 'b'"
    with pytest.raises(ValueError, match="kind"):
        Bound("float")


# --- the commands: one line, status 2 -----------------------------------------------------------

def run_command(module: str, *args: str) -> subprocess.CompletedProcess:
    """``python -c 'from isegm.cli.console import <module>; <module>()' ARGS`` (the console entry)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "SKIPCLICK_DEBUG": ""}
    return subprocess.run([sys.executable, "-c", f"from isegm.cli.console import {module}; {module}()", *args],
                          capture_output=True, text=True, env=env, timeout=300, cwd=REPO)


def test_commands_report_a_bad_checkpoint_in_one_line(good, tmp_path):
    half = tmp_path / "half.pth"
    half.write_bytes(good.read_bytes()[:5000])
    crafted = our_file(tmp_path / "crafted.pth", fusion_depth=5000)
    for module, args, path in [("export", ["--checkpoint", str(half), "--out", str(tmp_path / "out")], half),
                               ("export", ["--checkpoint", str(crafted), "--out", str(tmp_path / "out")], crafted)]:
        done = run_command(module, *args)
        lines = done.stderr.splitlines()
        assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), done.stderr[-3000:]
        assert str(path) in lines[0] and "Traceback" not in done.stderr
    done = run_command("export", "--checkpoint", str(crafted), "--out", str(tmp_path / "out"), "--debug")
    assert done.returncode == 2 and "Traceback (most recent call last)" in done.stderr
    assert "isegm.model.checkpoint.CheckpointError" in done.stderr


# --- training resume: the same loader, and the previous checkpoint when the last is damaged -----

def small_trainer(exp_path: Path):
    from isegm.engine.losses import NormalizedFocalLossSigmoid
    from isegm.engine.optimizer import get_optimizer
    from isegm.engine.trainer import Trainer, TrainerConfig
    from training_toys import Rectangles, tiny_model
    model = tiny_model()
    config = TrainerConfig(exp_path=exp_path, epochs=4, batch_size=4, workers=0, image_dump_interval=0)
    optimizer = get_optimizer(model, "adam", {"lr": 1e-3})
    return Trainer(model, config, Rectangles(n=8, size=28, epoch_len=8), NormalizedFocalLossSigmoid(0.5, 2), optimizer)


def _nudge(model, value: float) -> None:
    with torch.no_grad():
        next(model.parameters()).fill_(value)


def test_resume_falls_back_to_the_previous_checkpoint(tmp_path, capsys):
    trainer = small_trainer(tmp_path)
    folder = trainer.config.checkpoints_path
    for epoch in (0, 1):   # two epochs' checkpoints, told apart by one weight
        _nudge(trainer.model, epoch + 0.5)
        trainer.save(epoch)
    last, previous = folder / "last_checkpoint.pth", folder / "last_checkpoint.pth.previous"
    assert torch.load(previous, weights_only=True)["epoch"] == 0
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])   # a write killed half-way

    resumed = small_trainer(tmp_path)
    resumed.resume(last)
    assert resumed.start_epoch == 1 and next(resumed.model.parameters()).flatten()[0].item() == 0.5
    warning = capsys.readouterr().err.splitlines()
    assert len(warning) == 1 and warning[0].startswith("warning: cannot resume from") and "cut short" in warning[0]
    assert str(last) in warning[0] and str(previous) in warning[0]

    _nudge(resumed.model, 1.5)
    resumed.save(1)   # the unreadable file is not kept as the previous checkpoint
    assert torch.load(previous, weights_only=True)["epoch"] == 0
    intact = small_trainer(tmp_path)   # with both intact, the last one is used, silently
    intact.resume(last)
    assert intact.start_epoch == 2 and next(intact.model.parameters()).flatten()[0].item() == 1.5
    assert capsys.readouterr().err == ""


def test_resume_errors_name_the_file(tmp_path):
    trainer = small_trainer(tmp_path)
    with pytest.raises(CheckpointNotFoundError, match="none.pth"):
        trainer.resume(tmp_path / "none.pth")
    (tmp_path / "last_checkpoint.pth").write_bytes(b"PK\x03\x04 cut")   # no previous checkpoint beside it
    with pytest.raises(CheckpointError, match=r"last_checkpoint.pth': the file is cut short"):
        trainer.resume(tmp_path / "last_checkpoint.pth")
    save_checkpoint(trainer.model, tmp_path / "weights.pth")
    with pytest.raises(CheckpointError, match=r"weights.pth': holds weights only.*--weights"):
        trainer.resume(tmp_path / "weights.pth")


# --- atomic writes: nothing half-written, no temporary file left for good ------------------------

def test_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path):
    from isegm.utils.files import atomic_write
    target = tmp_path / "results.json"
    atomic_write(target, b"old")

    def dies(f):
        f.write(b"half")
        raise KeyboardInterrupt   # Ctrl-C in the middle of a write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, dies)
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["results.json"]


KILLED_WRITE = """
import os, sys, time
from isegm.utils.files import atomic_write
def slow(f):
    f.write(b"half a file")
    f.flush()
    print("writing", flush=True)
    time.sleep(60)
atomic_write(sys.argv[1], slow)
"""


def test_a_killed_write_leaves_a_temporary_file_the_next_process_removes(tmp_path):
    target = tmp_path / "model.pth"
    target.write_bytes(b"old")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITE, str(target)], stdout=subprocess.PIPE, env=env)
    assert writer.stdout.readline() == b"writing\n"
    writer.kill()   # SIGKILL: no finally runs
    writer.wait(timeout=30)
    left = [p for p in tmp_path.iterdir() if p.name != "model.pth"]
    assert len(left) == 1 and left[0].name.startswith(".model.pth.atomic-") and left[0].name.endswith(".tmp")
    assert target.read_bytes() == b"old"
    time.sleep(0.05)   # the next process starts after the killed write's last change
    subprocess.run([sys.executable, "-c", "import sys; from isegm.utils.files import atomic_write; "
                    "atomic_write(sys.argv[1], b'new')", str(target)], check=True, env=env, timeout=120)
    assert sorted(os.listdir(tmp_path)) == ["model.pth"] and target.read_bytes() == b"new"


def test_only_stale_temporary_files_are_removed(tmp_path, monkeypatch):
    from isegm.utils import files
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()
    host = files._HOST
    names = {"dead": f".a.pth.atomic-{host}-{dead}-0a1b.tmp",            # its writer is gone
             "other_host": f".b.pth.atomic-{host}x-{os.getpid()}-0a1b.tmp",   # another machine's, old
             "alive": f".c.pth.atomic-{host}-{os.getpid()}-0a1b.tmp",    # a running process's (ours)
             "recent": f".d.pth.atomic-{host}-{dead}-0a1b.tmp",           # written after this process started
             "foreign": ".e.pth.tmp"}                                    # not ours to remove
    for name in names.values():
        (tmp_path / name).write_bytes(b"x")
    for key in ("dead", "other_host", "alive"):
        os.utime(tmp_path / names[key], (files.PROCESS_START - 60, files.PROCESS_START - 60))
    assert sorted(p.name for p in files.stale_temp_files(tmp_path)) == sorted([names["dead"], names["other_host"]])
    assert [p.name for p in files.stale_temp_files(tmp_path, "a.pth")] == [names["dead"]]
    removed = files.remove_stale_temp_files(tmp_path)
    assert len(removed) == 2 and sorted(os.listdir(tmp_path)) == sorted([names["alive"], names["recent"],
                                                                          names["foreign"]])


def test_trainer_start_removes_stale_temporary_checkpoints(tmp_path, capsys):
    from isegm.utils import files
    trainer = small_trainer(tmp_path)
    trainer.config.epochs = 0   # start, train nothing
    folder = trainer.config.checkpoints_path
    folder.mkdir(parents=True)
    left = folder / f".last_checkpoint.pth.atomic-{files._HOST}x-1-0a1b.tmp"   # another machine's, old
    left.write_bytes(b"half")
    os.utime(left, (files.PROCESS_START - 60, files.PROCESS_START - 60))
    trainer.run()
    assert not left.exists() and left.name in capsys.readouterr().err


def test_keep_previous_links_the_old_content(tmp_path):
    from isegm.utils.files import atomic_write, keep_previous
    assert not keep_previous(tmp_path / "last.pth", tmp_path / "previous.pth")
    atomic_write(tmp_path / "last.pth", b"epoch 0")
    assert keep_previous(tmp_path / "last.pth", tmp_path / "previous.pth")
    atomic_write(tmp_path / "last.pth", b"epoch 1")
    assert (tmp_path / "previous.pth").read_bytes() == b"epoch 0" and (tmp_path / "last.pth").read_bytes() == b"epoch 1"
    assert sorted(os.listdir(tmp_path)) == ["last.pth", "previous.pth"]
