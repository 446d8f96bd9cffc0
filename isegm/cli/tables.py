"""The SkipClick paper's result tables (arXiv 2501.07960, numbered as there) from the results
JSONs that ``skipclick-evaluate`` writes, as Markdown and LaTeX (booktabs) (``skipclick-tables``,
or ``python scripts/make_tables.py`` in a clone)::

    skipclick-tables results_a.json results_b.json --table 1 4 5 --format md latex \
        --labels SkipClick DINOv3 --out tables/

1. WSESeg per class: NoC@85 and NoC@90 of each of the ten classes, and their plain means over the classes;
4. NoC@90 on GrabCut, Berkeley, DAVIS, SBD and HQSeg-44k;
5. DAVIS and HQSeg-44k: NoC@90, NoC@95 and >=20@95 (instances still below 95% IoU at the click limit);
6. fusion-depth ablation: the columns of table 4, one row per model (``--labels "depth 2" "depth 3" ...``).

One row per model. Files with the same label (``--labels``, else each JSON's ``model``) fill one
row, so a model's ``--wseseg-eval`` run and its standard run can be passed side by side; a JSON
of several checkpoints (``--exp-path``, datasets keyed ``<dataset>:<checkpoint>``) gives a row per
checkpoint. A dataset or metric a model lacks prints "–" and a note on stderr. The lowest value of
a column is bold (all of them on a tie). Without ``--out`` the tables go to stdout.
``--miou-plot curves.png`` also draws each row's mIoU-versus-clicks curve on each of its datasets.

``--rclicks`` reads the ``rclicks_*.json`` files of ``skipclick-evaluate --clicker rclicks`` instead
and prints RClicks' benchmark table (Sample NoC@90 +- std, dSB, dGR per dataset) and the details
table, in Markdown; ``--group-plot groups.png`` draws each row's NoC per clicking group::

    skipclick-tables grabcut/rclicks_dt_cvpr_NoBRS_20.json rw/rclicks_dt_cvpr_NoBRS_20.json \
        --rclicks --labels GrabCut "random walker" --group-plot groups.png
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..data.datasets import WSESEG_CLASSES
from ..inference.plots import plot_miou_curves, plot_noc_per_group
from ..inference.rclicks import benchmark_table, details_table
from .common import HelpFormatter, add_debug_argument, main_entry

MISSING = "–"
WSESEG_LABELS = {
    "flickr_bobsleighs": "Bobsleighs", "flickr_curling_stone": "Curl. stones", "flickr_ski_helmets": "Helmets",
    "flickr_snow_kites": "Kites", "yt_sports": "Ski jump", "flickr_curling_brooms": "Curl. brooms",
    "flickr_ski_goggles": "Goggles", "flickr_ski_misc": "Ski misc", "flickr_slalom_obstacles": "Slalom",
    "flickr_snowboards": "Snowboards",
}
DISPLAY_NAMES = {"HQSeg": "HQSeg-44k", **{f"WSESeg_{c}": label for c, label in WSESEG_LABELS.items()}}
LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                 "≥": r"$\geq$", "–": "--"}
WIDE = 8   # LaTeX tables with more value columns are scaled to the line width


class ResultsError(ValueError):
    """A file that is not a results JSON, or results that cannot be combined."""


@dataclass(frozen=True)
class Metric:
    """``run[key][threshold]`` of a dataset run; ``{n}`` in the header is the click limit."""

    key: str
    threshold: str
    header: str


NOC85 = Metric("noc", "0.85", "NoC@85")
NOC90 = Metric("noc", "0.90", "NoC@90")
NOC95 = Metric("noc", "0.95", "NoC@95")
OVER_MAX95 = Metric("over_max", "0.95", "≥{n}@95")


@dataclass(frozen=True)
class TableSpec:
    """A paper table: its datasets (columns, each with every metric) and whether to add averages."""

    title: str
    datasets: Tuple[str, ...]
    metrics: Tuple[Metric, ...]
    average: bool = False


STANDARD = ("GrabCut", "Berkeley", "DAVIS", "SBD", "HQSeg")
TABLES = {
    1: TableSpec("WSESeg per class: NoC@85 and NoC@90, and their means over the classes",
                 tuple(f"WSESeg_{c}" for c in WSESEG_CLASSES), (NOC85, NOC90), average=True),
    4: TableSpec("Standard benchmarks: NoC@90", STANDARD, (NOC90,)),
    5: TableSpec("High-quality masks: NoC@90, NoC@95 and the instances below 95% IoU at the click limit",
                 ("DAVIS", "HQSeg"), (NOC90, NOC95, OVER_MAX95)),
    6: TableSpec("Fusion depth ablation: NoC@90", STANDARD, (NOC90,)),
}


@dataclass
class Model:
    """A table row: its label and dataset runs (name -> the JSON's metrics), with the file of each."""

    label: str
    runs: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    sources: Dict[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class Column:
    """A value column: ``group`` (the dataset, or "Average") over ``sub`` (the metric; empty when
    the table has one metric, which its title names)."""

    group: str
    sub: str
    integer: bool


@dataclass
class Table:
    """A built table: its columns and, per row, the label and one value per column (None: missing)."""

    number: int
    title: str
    columns: List[Column]
    rows: List[Tuple[str, List[Optional[float]]]]


def load_results(path: Path) -> Dict[str, Any]:
    """The JSON of ``path``, checked to be a results file of ``skipclick-evaluate``."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as err:
        raise ResultsError(f"{path}: cannot be read ({err.strerror})") from None
    except ValueError as err:
        raise ResultsError(f"{path}: not a JSON file ({err})") from None
    if not (isinstance(data, dict) and isinstance(data.get("model"), str) and isinstance(data.get("datasets"), dict)):
        raise ResultsError(f"{path}: not a results JSON of skipclick-evaluate (expected an object with "
                           "'model' and 'datasets')")
    for name, run in data["datasets"].items():
        if not isinstance(run, dict):
            raise ResultsError(f"{path}: dataset {name!r} is not an object of metrics")
        for key in ("noc", "over_max"):
            values = run.get(key, {})
            if not (isinstance(values, dict) and all(isinstance(v, (int, float)) for v in values.values())):
                raise ResultsError(f"{path}: {name!r}: {key!r} is not a map of threshold to number")
    return data


def collect_models(paths: Sequence[Path], labels: Optional[Sequence[str]]) -> List[Model]:
    """The rows, in order of first appearance. A file's label is ``labels[i]`` or its ``model``; a
    file of several checkpoints gives one row per checkpoint (named by it, after the label if one
    is given). Rows with the same label are merged; a dataset given twice for one row is an error."""
    models: Dict[str, Model] = {}
    for index, path in enumerate(paths):
        data = load_results(path)
        for key, run in data["datasets"].items():
            dataset, _, checkpoint = key.partition(":")
            if not checkpoint:
                label = labels[index] if labels else data["model"]
            else:
                label = f"{labels[index]} ({checkpoint})" if labels else checkpoint
            model = models.setdefault(label, Model(label))
            if dataset in model.runs:
                raise ResultsError(f"{label}: {dataset} is in both {model.sources[dataset]} and {path}; pass one of "
                                   "them, or give the files different --labels")
            model.runs[dataset], model.sources[dataset] = run, Path(path)
        if not data["datasets"]:
            label = labels[index] if labels else data["model"]
            models.setdefault(label, Model(label))
    return list(models.values())


def display_name(dataset: str) -> str:
    return DISPLAY_NAMES.get(dataset, dataset)


def build_table(number: int, spec: TableSpec, models: Sequence[Model], notes: List[str]) -> Optional[Table]:
    """Table ``number`` over ``models``; None (with a note) when no model has any of its datasets.
    The averages are plain means over the datasets of the per-dataset values (the paper averages
    the per-class NoC, not the instances), and only for models that have every dataset."""
    limits = sorted({m.runs[d]["n_clicks"] for m in models for d in spec.datasets
                     if d in m.runs and "n_clicks" in m.runs[d]})
    if len(limits) > 1:
        notes.append(f"Table {number} compares runs with different click limits ({', '.join(map(str, limits))})")
    limit = str(limits[0]) if len(limits) == 1 else "max"
    single = len(spec.metrics) == 1
    headers = [metric.header.format(n=limit) for metric in spec.metrics]
    columns = [Column(display_name(d), "" if single else header, metric.key == "over_max")
               for d in spec.datasets for metric, header in zip(spec.metrics, headers)]
    if spec.average:
        columns += [Column("Average", header, metric.key == "over_max")
                    for metric, header in zip(spec.metrics, headers)]
    rows = []
    for model in models:
        absent = [d for d in spec.datasets if d not in model.runs]
        if len(absent) == len(spec.datasets):
            notes.append(f"Table {number}: {model.label} has none of its datasets; row left out")
            continue
        if absent:
            notes.append(f"Table {number}: {model.label} lacks {', '.join(absent)}")
        per_dataset = []
        for dataset in spec.datasets:
            run = model.runs.get(dataset)
            found = [None if run is None else run.get(m.key, {}).get(m.threshold) for m in spec.metrics]
            if run is not None and run.get("n_instances") == 0:
                notes.append(f"Table {number}: {model.label} has no instances of {dataset}")
            elif run is not None:
                notes += [f"Table {number}: {model.label} has no {header} for {dataset}"
                          for value, header in zip(found, headers) if value is None]
            per_dataset.append(found)
        values = [value for found in per_dataset for value in found]
        if spec.average:
            values += [None if None in column else sum(column) / len(column) for column in zip(*per_dataset)]
        rows.append((model.label, values))
    if not rows:
        notes.append(f"Table {number}: no model has any of its datasets ({', '.join(spec.datasets)}); left out")
        return None
    return Table(number, spec.title, columns, rows)


def cell_texts(table: Table) -> List[List[Tuple[str, bool]]]:
    """Each row's cells as ``(text, best)``: NoC with 2 decimals, counts as integers. The best is
    the lowest value as printed, so values that print alike are all bold; a table of one row has
    no best."""
    texts = [[None if v is None else (str(round(v)) if column.integer else f"{v:.2f}")
              for v, column in zip(values, table.columns)] for _, values in table.rows]
    best = []
    for j in range(len(table.columns)):
        shown = [float(row[j]) for row in texts if row[j] is not None]
        best.append(min(shown) if shown and len(table.rows) > 1 else None)
    return [[(MISSING, False) if text is None else (text, float(text) == best[j]) for j, text in enumerate(row)]
            for row in texts]


def to_markdown(table: Table) -> str:
    """A heading and a pipe table, one header row ("<dataset> <metric>")."""
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    header = ["Model"] + [f"{c.group} {c.sub}".strip() for c in table.columns]
    lines = [f"### Table {table.number}: {table.title}", "", line(header),
             line([":---"] + ["---:"] * len(table.columns))]
    for (label, _), cells in zip(table.rows, cell_texts(table)):
        lines.append(line([label.replace("|", r"\|")] + [f"**{t}**" if b else t for t, b in cells]))
    return "\n".join(lines)


def latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIAL.get(c, c) for c in text)


def to_latex(table: Table) -> str:
    """A booktabs ``table`` environment; tables with several metrics get a second header row with
    the metric under each dataset."""
    n = len(table.columns)
    wide = n > WIDE
    lines = [r"% needs \usepackage{booktabs}" + (r" and \usepackage{graphicx}" if wide else ""),
             r"\begin{table}[t]", r"\centering", rf"\caption{{{latex_escape(table.title)}}}",
             rf"\label{{tab:table{table.number}}}"]
    if wide:
        lines.append(r"\resizebox{\linewidth}{!}{%")
    lines += [rf"\begin{{tabular}}{{l{'c' * n}}}", r"\toprule"]
    if any(c.sub for c in table.columns):
        groups, rules, start = [""], [], 2
        for group, members in itertools.groupby(table.columns, key=lambda c: c.group):
            k = len(list(members))
            groups.append(rf"\multicolumn{{{k}}}{{c}}{{{latex_escape(group)}}}")
            rules.append(rf"\cmidrule(lr){{{start}-{start + k - 1}}}")
            start += k
        lines += [" & ".join(groups) + r" \\", " ".join(rules),
                  " & ".join(["Model"] + [latex_escape(c.sub) for c in table.columns]) + r" \\"]
    else:
        lines.append(" & ".join(["Model"] + [latex_escape(c.group) for c in table.columns]) + r" \\")
    lines.append(r"\midrule")
    for (label, _), cells in zip(table.rows, cell_texts(table)):
        values = [rf"\textbf{{{latex_escape(t)}}}" if b else latex_escape(t) for t, b in cells]
        lines.append(" & ".join([latex_escape(label)] + values) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"] + (["}"] if wide else []) + [r"\end{table}"]
    return "\n".join(lines)


FORMATS = {"md": (to_markdown, ".md"), "latex": (to_latex, ".tex")}


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="skipclick-tables", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("results", nargs="+", type=Path, help="results_*.json files of skipclick-evaluate")
    parser.add_argument("--table", type=int, nargs="+", choices=sorted(TABLES), default=[1, 4, 5],
                        help="paper table numbers (default: 1 4 5)")
    parser.add_argument("--format", nargs="+", choices=sorted(FORMATS), default=["md"],
                        help="md (Markdown) and / or latex (booktabs) (default: md)")
    parser.add_argument("--labels", nargs="+", help="one row label per results file (default: its 'model')")
    parser.add_argument("--datasets", nargs="+", default=[], metavar="[TABLE=]NAME,NAME",
                        help="dataset list replacing a table's (e.g. 6=GrabCut,DAVIS,SBD); without TABLE= for "
                             "every table (default: each table's own)")
    parser.add_argument("--out", type=Path, help="folder for table<N>.md / .tex (default: print to stdout)")
    parser.add_argument("--miou-plot", type=Path, metavar="PNG",
                        help="also draw every row's mIoU-versus-clicks curve on each of its datasets into one PNG "
                             "(default: no plot)")
    parser.add_argument("--rclicks", action="store_true", help="the results are rclicks_*.json files (skipclick-"
                        "evaluate --clicker rclicks): print RClicks' benchmark table and the details table (Markdown)")
    parser.add_argument("--group-plot", type=Path, metavar="PNG",
                        help="with --rclicks: draw every row's NoC per clicking group on each of its datasets "
                             "(default: no plot)")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    if args.rclicks and args.format != ["md"]:
        parser.error("--rclicks tables are Markdown only (--format md)")
    if args.group_plot and not args.rclicks:
        parser.error("--group-plot needs --rclicks")
    if args.labels is not None and len(args.labels) != len(args.results):
        parser.error(f"--labels gives {len(args.labels)} labels for {len(args.results)} results files")
    overrides: Dict[int, Tuple[str, ...]] = {}
    for spec in sorted(args.datasets, key=lambda s: "=" in s):   # per-table lists win over the general one
        number, _, names = spec.rpartition("=")
        datasets = tuple(name for name in names.split(",") if name)
        if not datasets or (number and number not in map(str, args.table)):
            parser.error(f"--datasets {spec!r}: expected NAME,NAME,... with an optional TABLE= prefix naming "
                         f"one of the tables asked for ({' '.join(map(str, args.table))})")
        for table in ([int(number)] if number else args.table):
            overrides[table] = datasets
    args.datasets = overrides
    return args


def rclicks_tables(args: argparse.Namespace, models: Sequence[Model]) -> int:
    """``--rclicks``: RClicks' benchmark table and the details table of the rows, and the plot."""
    for model in models:
        for dataset, run in model.runs.items():
            if run.get("n_instances") and "sample_noc" not in run:
                print(f"error: {model.sources[dataset]}: {dataset!r} has no 'sample_noc': not an rclicks_*.json of "
                      "skipclick-evaluate --clicker rclicks", file=sys.stderr)
                return 2
    protocols = dict.fromkeys(run.get("protocol", "RClicks protocol") for m in models for run in m.runs.values())
    datasets = list(dict.fromkeys(d for m in models for d in m.runs))
    rows = [(m.label, m.runs) for m in models]
    text = (f"### {'; '.join(protocols)}\n\n" + benchmark_table(rows, datasets) + "\n\n"
            + details_table(rows, datasets) + "\n")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "rclicks.md").write_text(text)
        print(f"wrote {args.out / 'rclicks.md'}")
    else:
        print(text)
    if args.group_plot:
        curves = {f"{m.label}: {display_name(d)}": run["group_noc"] for m in models for d, run in m.runs.items()
                  if run.get("n_instances")}
        baselines = {f"{m.label}: {display_name(d)}": run["base_noc"] for m in models for d, run in m.runs.items()
                     if run.get("n_instances")}
        plot_noc_per_group(curves, baselines, args.group_plot, "; ".join(protocols))
        print(f"wrote {args.group_plot}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        models = collect_models(args.results, args.labels)
    except ResultsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.rclicks:
        return rclicks_tables(args, models)
    notes: List[str] = []
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    for number in dict.fromkeys(args.table):
        spec = TABLES[number]
        if number in args.datasets:
            spec = TableSpec(spec.title, args.datasets[number], spec.metrics, spec.average)
        table = build_table(number, spec, models, notes)
        if table is None:
            continue
        for name in dict.fromkeys(args.format):
            render, suffix = FORMATS[name]
            if args.out:
                path = args.out / f"table{number}{suffix}"
                path.write_text(render(table) + "\n")
                print(f"wrote {path}")
            else:
                print(render(table) + "\n")
    if args.miou_plot:
        curves = {f"{model.label}: {display_name(dataset)}": run["miou_curve"] for model in models
                  for dataset, run in model.runs.items() if run.get("miou_curve")}
        if not curves:
            print("error: --miou-plot: no results file holds an mIoU curve", file=sys.stderr)
            return 2
        plot_miou_curves(curves, args.miou_plot, "mIoU after k clicks")
        print(f"wrote {args.miou_plot}")
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    main_entry(main)
