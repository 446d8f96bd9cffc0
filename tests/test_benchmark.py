"""The benchmarks run end to end (random weights, tiny inputs) and report every figure."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "benchmark_latency.py"

QUICK = ["--variant", "skipclick_depth2", "--clicks", "3", "--warmup", "1", "--encode-repeats", "1",
         "--forward-repeats", "1", "--authors-repeats", "2"]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("benchmark_latency", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_smoke(bench, tmp_path, capsys):
    out = tmp_path / "bench.json"
    runs = bench.main(QUICK + ["--size", "28", "56", "--batch-size", "2", "--json", str(out)])
    table = capsys.readouterr().out
    assert "| 28 |" in table and "| 56 |" in table
    assert json.loads(out.read_text()) == json.loads(json.dumps(runs))
    (run,) = runs
    assert run["meta"]["dtype"] == "fp32" and run["meta"]["batch_size"] == 2
    for row in run["results"]:
        assert row["decode"]["n"] == 3
        assert row["decode"]["median_ms"] > 0 and row["decode"]["p90_ms"] >= row["decode"]["median_ms"]
        assert row["encode_image"]["n"] == 1 and row["peak_memory_mb"] > 0
        assert row["decode_speedup_vs_authors"] > 0 and row["authors_decode"]["n"] == 2
        # the authors' per-click computation and ours are the same function
        assert row["max_abs_logit_diff_vs_authors"] < 1e-5


def test_emc_click_side_by_side_with_skipclick(bench, capsys):
    """EMC-Click models time their base network, first click and later clicks; FLOPs at the
    authors' 384x512 input are the fixtures README's (segb0: 11.29 base + 3.17 per click)."""
    threads = torch.get_num_threads()
    try:   # one thread: two waiting on each other on this shared machine make EMC-Click's small ops crawl
        runs = bench.main(QUICK + ["--variant", "skipclick_depth2", "segb0", "--size", "28", "--emc-size", "384x512",
                                   "--clicks", "1", "--warmup", "0", "--no-authors", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    table = capsys.readouterr().out
    assert "segb0 (EMC-Click)" in table and "| 384x512 |" in table and "side by side" in table
    assert "| skipclick_depth2 | SkipClick |" in table and "| segb0 | EMC-Click | 3.8 | 384x512 | fp32 |" in table
    skipclick, emc = runs
    assert [r["meta"]["family"] for r in runs] == ["SkipClick", "EMC-Click"]
    (row,) = emc["results"]
    assert row["size"] == "384x512" and row["encode_image"]["n"] == 1 and row["decode"]["n"] == 1
    assert row["first_click"]["median_ms"] >= row["encode_image"]["median_ms"] > 0
    assert abs(row["gflops"]["first_click"] - (11.29 + 3.17)) < 0.02 and abs(row["gflops"]["per_click"] - 3.17) < 0.02
    (row,) = skipclick["results"]
    assert row["first_click"]["median_ms"] >= row["encode_image"]["median_ms"] > 0
    assert row["gflops"]["first_click"] > row["gflops"]["per_click"] > 0


def test_reduced_precision_without_hardware_support_is_skipped(bench, monkeypatch, capsys):
    monkeypatch.setattr(bench, "native_reduced_precision", lambda device, dtype: dtype == bench.torch.float32)
    runs = bench.main(QUICK + ["--size", "28", "--dtype", "fp32", "bf16"])
    assert "skipping bf16" in capsys.readouterr().out
    assert [run["meta"]["dtype"] for run in runs] == ["fp32", "bf16"]
    assert "results" in runs[0] and runs[1]["skipped"] == "no hardware support on this CPU"


def test_eval_benchmark_smoke(tmp_path, capsys, monkeypatch):
    """Two GrabCut instances with a tiny SkipClick, one at a time and both at once: every figure
    is reported and the batched run is checked against the first."""
    from conftest import SHARED
    from isegm.model import build_skipclick, save_checkpoint
    grabcut = SHARED / "datasets" / "GrabCut"
    if not grabcut.is_dir():
        pytest.skip(f"dataset {grabcut} is absent (set SKIPCLICK_SHARED to the shared/ folder)")
    torch.manual_seed(0)
    save_checkpoint(build_skipclick("skipclick", backbone="dinov2_vits14_reg", fusion_depth=1,
                                    fpn_dims=(16, 32, 64, 128), head_channels=16), tmp_path / "tiny.pth")
    monkeypatch.setenv("SKIPCLICK_GRABCUT_PATH", str(grabcut))
    spec = importlib.util.spec_from_file_location("benchmark_eval", SCRIPT.parent / "benchmark_eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "eval.json"
    runs = module.main(["--checkpoint", str(tmp_path / "tiny.pth"), "--datasets", "GrabCut", "--eval-mode", "fixed56",
                        "--limit", "2", "--n-clicks", "3", "--batch-sizes", "1", "2", "--json", str(out)])
    table = capsys.readouterr().out
    assert "| GrabCut | 56x56 | 1 | 2 |" in table and "yes (2/2)" in table
    assert json.loads(out.read_text()) == json.loads(json.dumps(runs))
    rows = runs[0]["results"]
    assert [r["batch_size"] for r in rows] == [1, 2] and all(r["identical"] for r in rows)
    assert all(r["instances"] == 2 and 2 <= r["clicks"] <= 6 and r["instances_per_s"] > 0 for r in rows)


def test_train_benchmark_smoke(tmp_path, capsys):
    """Full SkipClick at 28 px: both backbone settings are timed for every click count."""
    spec = importlib.util.spec_from_file_location("benchmark_train", SCRIPT.parent / "benchmark_train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "train.json"
    result = module.main(["--size", "28", "--batch-size", "1", "--steps", "4", "--warmup", "0", "--json", str(out)])
    assert "features reused (ours)" in capsys.readouterr().out
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert [run["reuse_features"] for run in result["runs"]] == [True, False]
    for run in result["runs"]:
        assert run["steps"] == 4 and run["samples_per_second"] > 0 and set(run["seconds_by_clicks"]) == set("0123")
