"""The latency benchmark runs end to end (random weights, tiny input) and reports every figure."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "benchmark_latency.py"


def test_benchmark_smoke(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("benchmark_latency", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    runs = bench.main(["--variant", "skipclick_depth2", "--size", "28", "56", "--clicks", "3", "--warmup", "1",
                       "--encode-repeats", "1", "--forward-repeats", "1", "--batch-size", "2", "--json", str(out)])
    table = capsys.readouterr().out
    assert "| 28 |" in table and "| 56 |" in table
    assert json.loads(out.read_text()) == json.loads(json.dumps(runs))
    (run,) = runs
    assert run["meta"]["dtype"] == "fp32" and run["meta"]["batch_size"] == 2
    for row in run["results"]:
        assert row["decode"]["n"] == 3
        assert row["decode"]["median_ms"] > 0 and row["decode"]["p90_ms"] >= row["decode"]["median_ms"]
        assert row["encode_image"]["n"] == 1 and row["peak_memory_mb"] > 0
        assert row["decode_speedup_vs_authors"] > 0
