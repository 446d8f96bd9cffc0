"""The quickstart end to end at a toy size (training, the evaluations, the report) and how it
sizes training to its time budget."""
from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from conftest import REPO


def _load():
    spec = importlib.util.spec_from_file_location("quickstart", REPO / "scripts" / "quickstart.py")
    quickstart = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quickstart)
    return quickstart


def test_quickstart_writes_the_report(tmp_path, capsys):
    quickstart = _load()
    out = tmp_path / "qs"
    assert quickstart.main(["--out", str(out), "--epochs", "1", "--epoch-len", "16", "--instances", "2",
                            "--n-clicks", "2", "--workers", "0", "--dtype", "fp32"]) == 0
    report = out / "report"
    text = (report / "README.md").read_text()
    for method in (*quickstart.MODELS, "grabcut"):
        assert f"| {method} |" in text and (report / f"results_{method}.json").is_file()
        results = json.loads((report / f"results_{method}.json").read_text())
        assert results["datasets"][quickstart.EVAL_DATASET]["n_instances"] == 2
    assert "random_walker" not in text   # not a default baseline
    assert "Precision: fp32, because --dtype fp32" in text
    assert "1 epochs of 16 samples (16 samples, batch 8" in text and "--epoch-len 16 fixed the size" in text
    assert "Training moved NoC@85 from" in text
    for picture in ("miou.png", "examples.png"):
        assert (report / picture).read_bytes()[:4] == b"\x89PNG"
    assert "| trained |" in capsys.readouterr().out


def test_the_budget_fits_the_measured_speed(monkeypatch):
    quickstart = _load()
    recipe = quickstart.load_model_file(quickstart.MODEL_FILE).RECIPE
    monkeypatch.setattr(quickstart, "seconds_per_sample", lambda *args, **kwargs: 0.05)
    budget = quickstart.choose_budget(quickstart.parse_args(["--train-seconds", "100"]), recipe, "fp32")
    # 100 s at 0.05 s per sample: 2000 samples, in the recipe's epochs of whole batches
    assert budget.epochs == recipe.epochs and budget.epoch_len % recipe.batch_size == 0
    assert budget.samples <= 2000 < budget.samples + recipe.epochs * recipe.batch_size
    assert budget.seconds_per_sample == 0.05 and budget.reason == "100 s of training at the 0.050 s per sample " \
        "measured here"
    short = quickstart.choose_budget(quickstart.parse_args(["--train-seconds", "10"]), recipe, "fp32")
    assert short.epoch_len == quickstart.MIN_EPOCH_LEN and "raised to the 128 samples per epoch" in short.reason
    fixed = quickstart.choose_budget(quickstart.parse_args(["--epoch-len", "64", "--epochs", "2"]), recipe, "fp32")
    assert (fixed.epochs, fixed.epoch_len, fixed.seconds_per_sample) == (2, 64, None)


def test_seconds_per_sample_times_real_training_steps():
    quickstart = _load()
    recipe = quickstart.load_model_file(quickstart.MODEL_FILE).RECIPE
    threads = torch.get_num_threads()
    seconds = quickstart.seconds_per_sample(recipe, "fp32", 1, steps=1)
    assert 0 < seconds < 60 and torch.get_num_threads() == threads   # the caller's threads restored


def test_a_failed_evaluation_stops_the_quickstart_with_its_log(tmp_path, capsys):
    quickstart = _load()
    args = quickstart.parse_args(["--out", str(tmp_path), "--instances", "1", "--n-clicks", "1"])
    with pytest.raises(SystemExit, match="the evaluation of broken failed"):
        quickstart.evaluate(args, {"SKIPCLICK_EXPS_PATH": str(tmp_path / "experiments")},
                            {"broken": ["--baseline", "no_such_baseline"]})
    log = (tmp_path / "evaluation" / "broken" / "log.txt").read_text()
    assert "no_such_baseline" in log and "no_such_baseline" in capsys.readouterr().err


def test_training_precision_follows_the_cpu():
    quickstart = _load()
    assert quickstart.training_precision("fp32") == "fp32" and quickstart.training_precision("bf16") == "bf16"
    native = quickstart.native_reduced_precision(torch.device("cpu"), torch.bfloat16)
    assert quickstart.training_precision("auto") == ("bf16" if native else "fp32")
    assert "no bf16 units" in quickstart.precision_reason("fp32", "auto")
