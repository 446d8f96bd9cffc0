"""``skipclick-evaluate`` (``isegm/cli/evaluate.py``; ``scripts/evaluate_model.py`` in a clone) end
to end on real GrabCut images with a tiny SkipClick: the family's table and log, the JSON / CSV /
plot outputs, ``--resume``, ``--skip-bad``, ``--batch-size``, ``--dtype`` and torchrun shards."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO, SHARED
from isegm.model import build_skipclick, save_checkpoint

GRABCUT = SHARED / "datasets" / "GrabCut"
FIRST = ["106024", "124080", "153077"]   # the first three GrabCut images in loader order


def load_script():
    """The evaluation command's module (the script in ``scripts/`` only calls its ``main``)."""
    from isegm.cli import evaluate as module
    return module


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    if not GRABCUT.is_dir():
        pytest.skip(f"dataset {GRABCUT} is absent (set SKIPCLICK_SHARED to the shared/ folder)")
    root = tmp_path_factory.mktemp("eval")
    data = root / "GrabCut"
    for sub in ("data_GT", "boundary_GT"):
        (data / sub).mkdir(parents=True)
    for stem in FIRST:
        shutil.copy(next((GRABCUT / "data_GT").glob(stem + ".*")), data / "data_GT")
        shutil.copy(GRABCUT / "boundary_GT" / f"{stem}.bmp", data / "boundary_GT")
    torch.manual_seed(0)
    model = build_skipclick("skipclick", backbone="dinov2_vits14_reg", fusion_depth=1, fpn_dims=(16, 32, 64, 128),
                            head_channels=16)
    save_checkpoint(model, root / "tiny.pth")
    config = root / "config.yml"
    config.write_text(f"GRABCUT_PATH: {data}\nCHECKPOINTS_PATH: {root}\nEXPS_PATH: {root / 'exps'}\n")
    return root


def evaluate(setup, *extra):
    args = ["NoBRS", "--checkpoint", "tiny", "--datasets", "GrabCut", "--eval-mode", "fixed56", "--suppress-zoom",
            "--n-clicks", "3", "--cpu", "--no-progress", "--config-path", str(setup / "config.yml"),
            "--logs-path", str(setup / "logs"), *extra]
    return load_script().main(args)


def test_outputs_of_a_run(setup, capsys):
    assert evaluate(setup, "--save-ious") == 0
    out = capsys.readouterr().out
    logs = setup / "logs" / "others" / "tiny"
    log_text = (logs / "fixed56_NoBRS_3.txt").read_text()
    assert log_text.startswith("Eval results for model: tiny\n") and "|    NoBRS    |" in log_text
    assert log_text.splitlines()[-1] in out
    results = json.loads((logs / "results_fixed56_NoBRS_3.json").read_text())
    grabcut = results["datasets"]["GrabCut"]
    assert grabcut["n_instances"] == 3 and len(grabcut["instances"]) == 3
    assert all(1 <= len(i["ious"]) <= 3 for i in grabcut["instances"])
    assert set(grabcut["noc"]) == {"0.80", "0.85", "0.90", "0.95"}
    assert (logs / "results_fixed56_NoBRS_3.csv").read_text().splitlines()[1].startswith("GrabCut,3,0,")
    assert (logs / "plots" / "miou_fixed56_NoBRS_3.png").read_bytes()[:4] == b"\x89PNG"
    assert len((logs / "ious" / "GrabCut_fixed56_NoBRS_3.pkl").read_bytes()) > 0
    settings, *records = (logs / "instances" / "GrabCut_fixed56_NoBRS_3.jsonl").read_text().splitlines()
    assert json.loads(settings)["settings"]["target_iou"] == 0.95
    assert [json.loads(r)["ious"] for r in records] == [i["ious"] for i in grabcut["instances"]]
    # A second run appends its row to the log without a second header.
    assert evaluate(setup) == 0
    assert (logs / "fixed56_NoBRS_3.txt").read_text().count("Eval results") == 1


def test_resume_after_an_interruption_gives_the_same_numbers(setup):
    assert evaluate(setup, "--logs-path", str(setup / "full")) == 0
    logs = setup / "full" / "others" / "tiny"
    full = json.loads((logs / "results_fixed56_NoBRS_3.json").read_text())["datasets"]["GrabCut"]
    records = logs / "instances" / "GrabCut_fixed56_NoBRS_3.jsonl"
    settings, first = records.read_text().splitlines()[:2]
    records.write_text(f"{settings}\n{first}\n" + '{"sample_index": 1, "obj')   # stopped writing the second record
    assert evaluate(setup, "--logs-path", str(setup / "full"), "--resume") == 0
    resumed = json.loads((logs / "results_fixed56_NoBRS_3.json").read_text())["datasets"]["GrabCut"]
    assert [i["ious"] for i in resumed["instances"]] == [i["ious"] for i in full["instances"]]
    assert resumed["noc"] == full["noc"]
    assert records.read_text().splitlines()[:2] == [settings, first] and len(records.read_text().splitlines()) == 4


def test_corrupt_image_stops_with_its_name_or_is_skipped(setup, capsys):
    broken = setup / "broken"
    shutil.copytree(setup / "GrabCut", broken)
    bad = next((broken / "data_GT").glob(FIRST[1] + ".*"))
    bad.write_bytes(b"not an image")
    config = setup / "broken.yml"
    config.write_text((setup / "config.yml").read_text().replace(str(setup / "GrabCut"), str(broken)))
    with pytest.raises(SystemExit) as stop:
        evaluate(setup, "--config-path", str(config), "--logs-path", str(setup / "b"))
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and bad.name in err and "--skip-bad" in err
    assert evaluate(setup, "--config-path", str(config), "--logs-path", str(setup / "b"), "--skip-bad") == 0
    results = json.loads((setup / "b" / "others" / "tiny" / "results_fixed56_NoBRS_3.json").read_text())
    assert results["datasets"]["GrabCut"]["n_instances"] == 2
    assert list(results["datasets"]["GrabCut"]["skipped"]) == ["1"]
    assert bad.name in capsys.readouterr().out


def test_unknown_checkpoint_names_the_folder(setup, capsys):
    with pytest.raises(SystemExit) as stop:
        evaluate(setup, "--checkpoint", "missing")
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and "CHECKPOINTS_PATH" in err and "Traceback" not in err


def test_wrong_device_is_one_line_with_status_2(setup, capsys):
    device = "cuda:99" if torch.cuda.is_available() else "cuda"
    for flags, message in ((["--device", device], f"error: --device {device}:"),
                           (["--cpu", "--device", device], "error: --cpu and --device")):
        with pytest.raises(SystemExit) as stop:
            load_script().main(["NoBRS", "--checkpoint", "tiny", "--datasets", "GrabCut", "--config",
                                str(setup / "config.yml"), "--logs-path", str(setup / "dev"), *flags])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and err.startswith(message) and err.count("\n") == 1, err


def test_full_sam_eval_is_gone():
    """Its datasets (PPDLS, BBBC038, ...) have no loader here: the flag is refused, not half-run."""
    with pytest.raises(SystemExit):
        load_script().parse_args(["NoBRS", "--baseline", "grabcut", "--full-sam-eval"])


def test_only_nobrs_is_accepted():
    with pytest.raises(SystemExit):
        load_script().parse_args(["f-BRS-B", "--checkpoint", "x"])
    assert np.isclose(load_script().parse_args(["NoBRS", "--checkpoint", "x", "--print-ious"]).target_iou, 1.01)


def results_of(logs):
    return json.loads((logs / "others" / "tiny" / "results_fixed56_NoBRS_3.json").read_text())["datasets"]["GrabCut"]


def same_numbers(a, b):
    assert [(i["sample_index"], i["ious"], i["clicks"]) for i in a["instances"]] == \
        [(i["sample_index"], i["ious"], i["clicks"]) for i in b["instances"]]
    assert (a["noc"], a["noc_std"], a["over_max"], a["miou_curve"]) == (b["noc"], b["noc_std"], b["over_max"],
                                                                       b["miou_curve"])


def test_dtype_runs_the_model_under_autocast(setup, capsys, monkeypatch):
    """--dtype bf16: every network call of the run is under bf16 autocast (and the CPU's lack of
    bf16 units, if so, is said); the first click's IoUs stay near fp32's."""
    module = load_script()
    seen = []
    real = module.run_dataset

    def recording(*args, **kwargs):
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "run_dataset", recording)
    assert evaluate(setup, "--logs-path", str(setup / "fp32")) == 0
    assert evaluate(setup, "--logs-path", str(setup / "bf16"), "--dtype", "bf16") == 0
    assert seen == [(False, torch.get_autocast_dtype("cpu")), (True, torch.bfloat16)]
    from isegm.utils.device import native_reduced_precision
    if not native_reduced_precision(torch.device("cpu"), torch.bfloat16):
        assert "note: bf16 on this CPU" in capsys.readouterr().err
    first = [[i["ious"][0] for i in results_of(setup / name)["instances"]] for name in ("fp32", "bf16")]
    assert np.allclose(first[0], first[1], atol=0.05), first


def test_batch_size_gives_the_same_numbers(setup):
    assert evaluate(setup, "--logs-path", str(setup / "one")) == 0
    assert evaluate(setup, "--logs-path", str(setup / "batched"), "--batch-size", "3") == 0
    same_numbers(results_of(setup / "batched"), results_of(setup / "one"))
    with pytest.raises(SystemExit):
        load_script().parse_args(["NoBRS", "--baseline", "grabcut", "--batch-size", "2"])


def test_torchrun_shards_give_the_same_numbers_and_resume_with_another_count(setup):
    """Two CPU processes under torchrun (gloo): each takes every other image, rank 0 merges;
    then a resume with a single process reads both shard files and evaluates nothing again."""
    if not (setup / "one").is_dir():
        assert evaluate(setup, "--logs-path", str(setup / "one")) == 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           str(REPO / "scripts" / "evaluate_model.py"), "NoBRS", "--checkpoint", "tiny", "--datasets", "GrabCut",
           "--eval-mode", "fixed56", "--suppress-zoom", "--n-clicks", "3", "--cpu", "--no-progress",
           "--config-path", str(setup / "config.yml"), "--logs-path", str(setup / "shards")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("|    NoBRS    |") == 1   # one table row: rank 0 reports
    sharded = results_of(setup / "shards")
    same_numbers(sharded, results_of(setup / "one"))
    instances = setup / "shards" / "others" / "tiny" / "instances"
    files = sorted(p.name for p in instances.iterdir())
    assert files == ["GrabCut_fixed56_NoBRS_3.rank0of2.jsonl", "GrabCut_fixed56_NoBRS_3.rank1of2.jsonl"]
    assert [len((instances / f).read_text().splitlines()) for f in files] == [1 + 2, 1 + 1]   # settings, records
    assert evaluate(setup, "--logs-path", str(setup / "shards"), "--resume") == 0
    resumed = results_of(setup / "shards")
    same_numbers(resumed, sharded)
    assert len((instances / "GrabCut_fixed56_NoBRS_3.jsonl").read_text().splitlines()) == 1   # nothing left to do
