"""The quickstart end to end at a toy size: training, four evaluations, the report."""
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
                            "--n-clicks", "2", "--workers", "0"]) == 0
    report = out / "report"
    text = (report / "README.md").read_text()
    for method in quickstart.METHODS:
        assert f"| {method} |" in text and (report / f"results_{method}.json").is_file()
        results = json.loads((report / f"results_{method}.json").read_text())
        assert results["datasets"][quickstart.EVAL_DATASET]["n_instances"] == 2
    for picture in ("miou.png", "examples.png"):
        assert (report / picture).read_bytes()[:4] == b"\x89PNG"
    assert "| trained |" in capsys.readouterr().out


def test_a_failed_evaluation_stops_the_quickstart_with_its_log(tmp_path, capsys):
    quickstart = _load()
    args = quickstart.parse_args(["--out", str(tmp_path), "--instances", "1", "--n-clicks", "1"])
    config = tmp_path / "config.yml"
    config.write_text(f"EXPS_PATH: {tmp_path / 'experiments'}\n")
    with pytest.raises(SystemExit, match="the evaluation of broken failed"):
        quickstart.evaluate(args, config, {"broken": ["--baseline", "no_such_baseline"]})
    log = (tmp_path / "evaluation" / "broken" / "log.txt").read_text()
    assert "no_such_baseline" in log and "no_such_baseline" in capsys.readouterr().err


def test_training_precision_follows_the_cpu():
    quickstart = _load()
    assert quickstart.training_precision("fp32") == "fp32" and quickstart.training_precision("bf16") == "bf16"
    native = quickstart.native_reduced_precision(torch.device("cpu"), torch.bfloat16)
    assert quickstart.training_precision("auto") == ("bf16" if native else "fp32")
