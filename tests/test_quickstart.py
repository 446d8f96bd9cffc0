"""The quickstart end to end at a toy size: training, four evaluations, the report."""
from __future__ import annotations

import importlib.util
import json

from conftest import REPO


def test_quickstart_writes_the_report(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("quickstart", REPO / "scripts" / "quickstart.py")
    quickstart = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quickstart)
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
