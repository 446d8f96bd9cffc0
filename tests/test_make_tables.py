"""``skipclick-tables`` (``isegm/cli/tables.py``; ``scripts/make_tables.py`` in a clone) on hand-made results JSONs: the exact Markdown rows (values, plain
per-class averages, bold best with ties, "–" and a note for what a model lacks), booktabs LaTeX
that holds together, labels and merging, per-table dataset lists, and clear errors for bad files."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pytest

from isegm.cli import tables as make_tables
from isegm.data.datasets import WSESEG_CLASSES

SHORT = ["Bobsleighs", "Curl. stones", "Helmets", "Kites", "Ski jump", "Curl. brooms", "Goggles", "Ski misc", "Slalom",
         "Snowboards"]


def run(noc85: float, noc90: float, noc95: Optional[float] = None, over95: int = 0, n_instances: int = 10,
        n_clicks: int = 20) -> Dict[str, Any]:
    """One dataset's metrics as ``isegm.inference.report.dataset_metrics`` writes them."""
    noc95 = noc90 + 3 if noc95 is None else noc95
    return {"n_instances": n_instances, "n_clicks": n_clicks, "target_iou": 0.95, "elapsed_s": 1.0, "skipped": {},
            "noc": {"0.80": noc85 - 0.5, "0.85": noc85, "0.90": noc90, "0.95": noc95},
            "noc_std": {"0.80": 1.0, "0.85": 1.0, "0.90": 1.0, "0.95": 1.0},
            "over_max": {"0.80": 0, "0.85": 0, "0.90": 0, "0.95": over95},
            "miou_at_k": [0.5, 0.7], "miou_curve": [0.5, 0.7] + [0.9] * (n_clicks - 2),
            "seconds_per_click": 0.01, "seconds_per_instance": 0.05, "total_clicks": 50, "instances": []}


def write(folder: Path, model: str, datasets: Dict[str, Dict[str, Any]], name: Optional[str] = None) -> Path:
    path = folder / (name or f"results_{model}.json")
    path.write_text(json.dumps({"model": model, "settings": {"mode": "NoBRS", "n_clicks": 20}, "datasets": datasets}))
    return path


def tables(capsys, *argv: Any) -> Tuple[int, List[str], List[str]]:
    """``main`` on ``argv``: return code, stdout lines, stderr lines."""
    code = make_tables.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err.splitlines()


@pytest.fixture
def standard(tmp_path) -> Tuple[Path, Path]:
    """Two models on the table-4 datasets; HQSeg 6.004 vs 5.996 print alike (a tie), B lacks SBD."""
    a = write(tmp_path, "SkipClick", {"GrabCut": run(1.2, 1.40), "Berkeley": run(1.5, 2.00),
                                      "DAVIS": run(4.0, 5.10, 8.50, over95=30), "SBD": run(5.0, 6.00),
                                      "HQSeg": run(4.0, 6.004, 9.891, over95=120, n_instances=1537)})
    b = write(tmp_path, "Other", {"GrabCut": run(1.3, 1.40), "Berkeley": run(1.4, 1.90),
                                  "DAVIS": run(4.1, 5.20, 8.25, over95=25),
                                  "HQSeg": run(4.5, 5.996, 10.2, over95=120, n_instances=1537)})
    return a, b


def test_table4_values_bold_ties_and_missing(standard, capsys):
    code, out, err = tables(capsys, *standard, "--table", "4")
    assert code == 0
    assert out[:6] == ["### Table 4: Standard benchmarks: NoC@90", "",
                       "| Model | GrabCut | Berkeley | DAVIS | SBD | HQSeg-44k |",
                       "| :--- | ---: | ---: | ---: | ---: | ---: |",
                       "| SkipClick | **1.40** | 2.00 | **5.10** | **6.00** | **6.00** |",
                       "| Other | **1.40** | **1.90** | 5.20 | – | **6.00** |"]
    assert err == ["note: Table 4: Other lacks SBD"]


def test_table5_noc95_and_over_max_as_integers(standard, capsys):
    code, out, _ = tables(capsys, *standard, "--table", "5")
    assert code == 0
    assert out[2:6] == ["| Model | DAVIS NoC@90 | DAVIS NoC@95 | DAVIS ≥20@95 | HQSeg-44k NoC@90 | HQSeg-44k NoC@95 "
                        "| HQSeg-44k ≥20@95 |",
                        "| :--- | ---: | ---: | ---: | ---: | ---: | ---: |",
                        "| SkipClick | **5.10** | 8.50 | 30 | **6.00** | **9.89** | **120** |",
                        "| Other | 5.20 | **8.25** | **25** | **6.00** | 10.20 | **120** |"]


def wseseg(noc85: Sequence[float], noc90: Sequence[float], n_instances: Sequence[int],
           skip: Sequence[str] = ()) -> Dict[str, Dict[str, Any]]:
    return {f"WSESeg_{c}": run(a, b, n_instances=n) for c, a, b, n in zip(WSESEG_CLASSES, noc85, noc90, n_instances)
            if c not in skip}


def test_table1_per_class_columns_and_plain_averages(tmp_path, capsys):
    a85 = [float(i) for i in range(1, 11)]
    # One class with most instances: a mean weighted by instances (9.55) would differ from 5.50.
    a = write(tmp_path, "A", wseseg(a85, [v + 1 for v in a85], [1] * 9 + [91]))
    b85 = [v + 0.5 for v in a85]
    b85[0], b85[3] = 1.0, 3.0
    b = write(tmp_path, "B", wseseg(b85, [2.0] * 10, [10] * 10))
    c = write(tmp_path, "C", wseseg([20.0] * 10, [20.0] * 10, [10] * 10, skip=["yt_sports"]))
    code, out, err = tables(capsys, a, b, c, "--table", "1")
    assert code == 0
    assert out[2] == "| Model | " + " | ".join(f"{s} NoC@{t}" for s in SHORT + ["Average"] for t in (85, 90)) + " |"
    assert out[4:7] == [
        "| A | **1.00** | **2.00** | **2.00** | 3.00 | **3.00** | 4.00 | 4.00 | 5.00 | **5.00** | 6.00 | **6.00** | "
        "7.00 | **7.00** | 8.00 | **8.00** | 9.00 | **9.00** | 10.00 | **10.00** | 11.00 | **5.50** | 6.50 |",
        "| B | **1.00** | **2.00** | 2.50 | **2.00** | 3.50 | **2.00** | **3.00** | **2.00** | 5.50 | **2.00** | "
        "6.50 | **2.00** | 7.50 | **2.00** | 8.50 | **2.00** | 9.50 | **2.00** | 10.50 | **2.00** | 5.80 | **2.00** |",
        "| C | 20.00 | 20.00 | 20.00 | 20.00 | 20.00 | 20.00 | 20.00 | 20.00 | – | – | 20.00 | 20.00 | 20.00 | "
        "20.00 | 20.00 | 20.00 | 20.00 | 20.00 | 20.00 | 20.00 | – | – |"]
    assert err == ["note: Table 1: C lacks WSESeg_yt_sports"]


def latex_cells(line: str) -> int:
    """The columns a LaTeX table row spans (``\\multicolumn{k}`` counts k; ``\\&`` is text)."""
    cells = re.split(r"(?<!\\)&", line.removesuffix(r"\\").strip())
    return sum(int(m.group(1)) if (m := re.match(r"\s*\\multicolumn\{(\d+)\}", cell)) else 1 for cell in cells)


def check_latex(tex: str) -> Tuple[int, List[str]]:
    """Assert the booktabs skeleton holds together; the column count and the body rows."""
    marks = [r"\begin{table}", r"\begin{tabular}", r"\toprule", r"\midrule", r"\bottomrule", r"\end{tabular}",
             r"\end{table}"]
    assert all(tex.count(m) == 1 for m in marks)
    assert [tex.index(m) for m in marks] == sorted(tex.index(m) for m in marks)
    unescaped = tex.replace(r"\{", "").replace(r"\}", "")
    assert unescaped.count("{") == unescaped.count("}")
    n_columns = len(re.search(r"\\begin\{tabular\}\{(\w+)\}", tex).group(1))
    head = tex.split(r"\toprule")[1].split(r"\midrule")[0]
    body = tex.split(r"\midrule")[1].split(r"\bottomrule")[0]
    for line in [x for x in head.splitlines() + body.splitlines() if x.strip().endswith(r"\\")]:
        assert latex_cells(line) == n_columns, line
    return n_columns, [x for x in body.splitlines() if x.strip()]


def test_latex_is_booktabs_with_bold_best_and_escaped_labels(standard, capsys):
    code, out, _ = tables(capsys, *standard, "--table", "5", "4", "--format", "latex", "--labels", "Skip_Click",
                          "R&D 50%")
    assert code == 0
    text = "\n".join(out)
    table5, table4 = text.split(r"\end{table}")[:2]
    n_columns, rows = check_latex(table5 + r"\end{table}")
    assert n_columns == 7 and r"\cmidrule(lr){2-4} \cmidrule(lr){5-7}" in table5
    assert r"Model & NoC@90 & NoC@95 & $\geq$20@95 & NoC@90 & NoC@95 & $\geq$20@95 \\" in table5
    assert rows == [r"Skip\_Click & \textbf{5.10} & 8.50 & 30 & \textbf{6.00} & \textbf{9.89} & \textbf{120} \\",
                    r"R\&D 50\% & 5.20 & \textbf{8.25} & \textbf{25} & \textbf{6.00} & 10.20 & \textbf{120} \\"]
    n_columns, rows = check_latex(table4 + r"\end{table}")
    assert n_columns == 6 and r"Model & GrabCut & Berkeley & DAVIS & SBD & HQSeg-44k \\" in table4
    assert rows[1] == r"R\&D 50\% & \textbf{1.40} & \textbf{1.90} & 5.20 & -- & \textbf{6.00} \\"


def test_wide_latex_table1_counts_its_columns(tmp_path, capsys):
    a = write(tmp_path, "A", wseseg([3.0] * 10, [4.0] * 10, [5] * 10))
    b = write(tmp_path, "B", wseseg([2.0] * 10, [5.0] * 10, [5] * 10, skip=["flickr_snowboards"]))
    code, out, _ = tables(capsys, a, b, "--table", "1", "--format", "latex")
    assert code == 0
    n_columns, rows = check_latex("\n".join(out))
    assert n_columns == 1 + 2 * 11 and r"\resizebox{\linewidth}{!}{%" in out
    assert rows[0].endswith(r"3.00 & \textbf{4.00} & \textbf{3.00} & \textbf{4.00} & \textbf{3.00} & \textbf{4.00} \\")
    assert rows[1].endswith(r"\textbf{2.00} & 5.00 & -- & -- & -- & -- \\")


def test_files_with_one_label_fill_one_row(standard, tmp_path, capsys):
    extra = write(tmp_path, "SkipClick", {"SBD": run(4.0, 5.5)}, name="results_sbd.json")
    code, out, err = tables(capsys, standard[1], extra, "--table", "4", "--labels", "Mine", "Mine")
    assert code == 0 and out[4:] == ["| Mine | 1.40 | 1.90 | 5.20 | 5.50 | 6.00 |", ""]
    assert err == []
    code, _, err = tables(capsys, standard[0], extra, "--table", "4", "--labels", "Mine", "Mine")
    assert code == 2 and "SBD" in err[0] and str(standard[0]) in err[0] and str(extra) in err[0]


def test_checkpoints_of_one_run_become_rows(tmp_path, capsys):
    path = write(tmp_path, "depth6", {"DAVIS:depth6": run(4.0, 5.0), "DAVIS:depth2": run(4.0, 5.5),
                                      "GrabCut:depth6": run(1.0, 1.5), "GrabCut:depth2": run(1.0, 1.25)})
    code, out, err = tables(capsys, path, "--table", "6", "--datasets", "6=GrabCut,DAVIS")
    assert code == 0
    assert out == ["### Table 6: Fusion depth ablation: NoC@90", "", "| Model | GrabCut | DAVIS |",
                   "| :--- | ---: | ---: |", "| depth6 | 1.50 | **5.00** |", "| depth2 | **1.25** | 5.50 |", ""]
    assert err == []


def test_dataset_lists_and_left_out_rows_and_tables(standard, tmp_path, capsys):
    wse = write(tmp_path, "W", wseseg([3.0] * 10, [4.0] * 10, [5] * 10))
    code, out, err = tables(capsys, *standard, wse, "--table", "4", "5", "--datasets", "DAVIS", "5=SBD,Berkeley")
    assert code == 0
    assert [line for line in out if line.startswith("| Model")] == [
        "| Model | DAVIS |",
        "| Model | SBD NoC@90 | SBD NoC@95 | SBD ≥20@95 | Berkeley NoC@90 | Berkeley NoC@95 | Berkeley ≥20@95 |"]
    assert "| Other | – | – | – | **1.90** | **4.90** | **0** |" in out
    assert err == ["note: Table 4: W has none of its datasets; row left out", "note: Table 5: Other lacks SBD",
                   "note: Table 5: W has none of its datasets; row left out"]
    code, out, err = tables(capsys, *standard, "--table", "1")
    assert code == 0 and out == []
    assert err[-1].startswith("note: Table 1: no model has any of its datasets (WSESeg_flickr_bobsleighs, ")


def test_single_row_has_no_bold_and_missing_metrics_are_noted(tmp_path, capsys):
    davis = run(4.0, 5.0)
    del davis["noc"]["0.95"], davis["over_max"]["0.95"]   # a run with --target-iou 0.9
    path = write(tmp_path, "A", {"DAVIS": davis, "HQSeg": {"n_instances": 0, "n_clicks": 30, "skipped": {}}})
    code, out, err = tables(capsys, path, "--table", "5")
    assert code == 0
    assert out[2] == "| Model | DAVIS NoC@90 | DAVIS NoC@95 | DAVIS ≥max@95 | HQSeg-44k NoC@90 | HQSeg-44k NoC@95 " \
                     "| HQSeg-44k ≥max@95 |"
    assert out[4] == "| A | 5.00 | – | – | – | – | – |"
    assert err == ["note: Table 5 compares runs with different click limits (20, 30)",
                   "note: Table 5: A has no NoC@95 for DAVIS", "note: Table 5: A has no ≥max@95 for DAVIS",
                   "note: Table 5: A has no instances of HQSeg"]


def test_out_folder_gets_one_file_per_table_and_format(standard, tmp_path, capsys):
    code, out, _ = tables(capsys, *standard, "--table", "4", "--format", "md", "latex", "--out", tmp_path / "tables")
    assert code == 0
    assert out == [f"wrote {tmp_path / 'tables' / 'table4.md'}", f"wrote {tmp_path / 'tables' / 'table4.tex'}"]
    assert (tmp_path / "tables" / "table4.md").read_text().splitlines()[4] == \
        "| SkipClick | **1.40** | 2.00 | **5.10** | **6.00** | **6.00** |"
    assert (tmp_path / "tables" / "table4.tex").read_text().startswith(r"% needs \usepackage{booktabs}")


@pytest.mark.parametrize("content, message", [
    ("not json {", "not a JSON file"),
    ('{"model": "x", "results": {}}', "not a results JSON"),
    ('{"model": "x", "datasets": {"DAVIS": {"noc": {"0.90": "5"}}}}', "'noc' is not a map"),
])
def test_a_bad_file_is_named(standard, tmp_path, capsys, content, message):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    code, out, err = tables(capsys, standard[0], bad)
    assert code == 2 and out == []
    assert err[0].startswith(f"error: {bad}: ") and message in err[0]


def test_argument_errors(standard, tmp_path, capsys):
    code, _, err = tables(capsys, tmp_path / "missing.json")
    assert code == 2 and err[0].startswith(f"error: {tmp_path / 'missing.json'}: cannot be read")
    with pytest.raises(SystemExit):
        make_tables.main([str(standard[0]), "--labels", "a", "b"])
    with pytest.raises(SystemExit):
        make_tables.main([str(standard[0]), "--table", "4", "--datasets", "5=DAVIS"])
    assert "5=DAVIS" in capsys.readouterr().err


def test_miou_plot_draws_one_curve_per_row_and_dataset(standard, tmp_path, capsys, monkeypatch):
    drawn = {}
    monkeypatch.setattr(make_tables, "plot_miou_curves", lambda curves, path, title: drawn.update(curves, path=path))
    code, out, _ = tables(capsys, *standard, "--table", "4", "--miou-plot", tmp_path / "m.png")
    assert code == 0 and out[-1] == f"wrote {tmp_path / 'm.png'}" and drawn.pop("path") == tmp_path / "m.png"
    assert len(drawn) == 9 and drawn["SkipClick: DAVIS"] == [0.5, 0.7] + [0.9] * 18
    empty = write(tmp_path, "Empty", {})
    code, _, err = tables(capsys, empty, "--table", "4", "--miou-plot", tmp_path / "n.png")
    assert code == 2 and "no results file holds an mIoU curve" in err[0]
