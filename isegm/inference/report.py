"""What an evaluation run leaves on disk: per-instance records (written as they are made, so
an interrupted run loses nothing and ``--resume`` continues it; each file starts with the
settings that made it), per-dataset metrics as JSON and CSV, and the family's log text. Every
file but the appended records is written atomically: a failed write leaves the previous file."""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from ..utils.files import atomic_write
from .evaluation import DatasetResult, InstanceResult


class OutputError(Exception):
    """An output file could not be written (full disk, lost permission); the message names it."""


@contextlib.contextmanager
def output_file(path: Path) -> Iterator[None]:
    """Turn an ``OSError`` while writing ``path`` into an ``OutputError`` naming it (a failed
    write() carries no file name of its own)."""
    try:
        yield
    except OSError as err:
        raise OutputError(f"cannot write {str(path)!r}: {err.strerror or err}") from None


class RecordsMismatch(ValueError):
    """Instance records of an earlier run were made with other settings than the run resuming them."""
from .metrics import TABLE_THRESHOLDS, compute_noc_metric, get_time_metrics, miou_at_k, miou_curve, noc_thresholds


class InstanceLog:
    """Append-only JSON-lines file of ``InstanceResult`` records, one line per evaluated object,
    after a first line ``{"settings": {...}}``: whatever decides the numbers (checkpoint,
    protocol, thresholds, dataset), so that a resumed run takes records only from a run like it.

    ``shard = (rank, world_size)``: a sharded run writes one file per process
    (``<stem>.rank<r>of<n>.jsonl`` beside ``path``); reading takes the records of every shard
    file of the run, so a run resumes with any number of processes.
    """

    def __init__(self, path: Path, shard: Tuple[int, int] = (0, 1), settings: Optional[Dict[str, Any]] = None
                 ) -> None:
        self.base = Path(path)
        self.settings = settings or {}
        rank, world_size = shard
        self.path = self.base if world_size == 1 else \
            self.base.with_name(f"{self.base.stem}.rank{rank}of{world_size}{self.base.suffix}")

    def files(self) -> List[Path]:
        """The record files of this run that exist: the single-process one and every shard's."""
        shards = sorted(self.base.parent.glob(f"{self.base.stem}.rank*of*{self.base.suffix}"))
        return ([self.base] if self.base.is_file() else []) + shards

    def read(self) -> Dict[Tuple[int, int], InstanceResult]:
        """The records so far of every file of the run, keyed by ``(sample_index, object_id)``."""
        done: Dict[Tuple[int, int], InstanceResult] = {}
        for path in self.files():
            done.update(_read_records(path)[1])
        return done

    def check(self) -> None:
        """Raise ``RecordsMismatch`` unless every record file of the run holds records made with
        this run's settings, naming each setting that differs (stored -> now) and the ways out."""
        for path in self.files():
            stored = _read_records(path)[0]
            if stored is None:
                problem = "holds records without the settings that made them (written by an earlier version)"
            else:
                keys = list(dict.fromkeys([*self.settings, *stored]))
                changed = [f"{key} {stored.get(key, '(none)')} -> {self.settings.get(key, '(none)')}" for key in keys
                           if stored.get(key) != self.settings.get(key)]
                if not changed:
                    continue
                problem = f"was made with other settings ({'; '.join(changed)})"
            raise RecordsMismatch(f"--resume: the record file {str(path)!r} {problem}: rerun without --resume to start "
                                  "again, or write to another --logs-path, or delete the file")

    def remove_all(self) -> None:
        """Delete every record file of the run (a fresh start; in a sharded run, rank 0 before the others start)."""
        for path in self.files():
            path.unlink()

    def start(self, keep: bool) -> Dict[Tuple[int, int], InstanceResult]:
        """Open this process's file for a run: keep the run's records (``--resume``, all of them
        returned, after ``check``) or start it empty."""
        if keep:
            self.check()
        own = _read_records(self.path)[1] if keep and self.path.is_file() else {}
        # Rewritten without a cut-off last line, so new records start on a line of their own.
        lines = [json.dumps({"settings": self.settings})] + [json.dumps(r.to_dict()) for r in own.values()]
        with output_file(self.path):
            atomic_write(self.path, "".join(line + "\n" for line in lines).encode())
        return self.read() if keep else {}

    def append(self, record: InstanceResult) -> None:
        with output_file(self.path), open(self.path, "a") as f:
            f.write(json.dumps(record.to_dict()) + "\n")
            f.flush()
            os.fsync(f.fileno())


def _read_records(path: Path) -> Tuple[Optional[Dict[str, Any]], Dict[Tuple[int, int], InstanceResult]]:
    """The settings line (None when the file has none) and the records of one file. A last line
    cut off by an interruption is dropped (that instance is evaluated again)."""
    settings: Optional[Dict[str, Any]] = None
    done: Dict[Tuple[int, int], InstanceResult] = {}
    with open(path) as f:
        lines = f.read().split("\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            if number == 1 and isinstance(entry, dict) and set(entry) == {"settings"}:
                settings = entry["settings"]
                continue
            record = InstanceResult.from_dict(entry)
        except (ValueError, KeyError, TypeError) as err:
            if number == len(lines):   # the line being written when the run stopped
                break
            raise ValueError(f"{path}: line {number} is not an instance record ({err}); delete the file "
                             "to start this dataset again") from None
        done[record.sample_index, record.object_id] = record
    return settings, done


def dataset_metrics(result: DatasetResult, n_clicks: int, target_iou: float) -> Dict[str, Any]:
    """Every score of one dataset run as plain JSON values: NoC, std and over-max at 0.80 ... 0.95
    (and at the target IoU), mIoU@k (the original's, up to the shortest IoU array) and the mIoU
    curve over all clicks, seconds per click / instance, skipped samples, and the per-instance
    IoU arrays and clicks."""
    all_ious = result.all_ious
    metrics: Dict[str, Any] = {"n_instances": len(all_ious), "n_clicks": n_clicks, "target_iou": target_iou,
                               "elapsed_s": result.elapsed, "n_skipped": len(result.skipped),
                               "skipped": {str(k): v for k, v in sorted(result.skipped.items())}}
    if not all_ious:
        return metrics
    # The original's float thresholds (0.8500000000000001, ...); the IoUs are compared in float32.
    thresholds = noc_thresholds(0.95)
    if target_iou <= 1 and int(target_iou * 100) not in (80, 85, 90, 95):
        thresholds.append(target_iou)
    noc, std, over_max = compute_noc_metric(all_ious, thresholds, n_clicks)
    spc, spi = get_time_metrics(all_ious, result.elapsed)
    metrics.update({
        "noc": {f"{t:.2f}": v for t, v in zip(thresholds, noc)},
        "noc_std": {f"{t:.2f}": v for t, v in zip(thresholds, std)},
        "over_max": {f"{t:.2f}": v for t, v in zip(thresholds, over_max)},
        "miou_at_k": [float(v) for v in miou_at_k(all_ious)],
        "miou_curve": [float(v) for v in miou_curve(all_ious, n_clicks)],
        "seconds_per_click": spc, "seconds_per_instance": spi,
        "total_clicks": int(sum(len(ious) for ious in all_ious)),
        "instances": [r.to_dict() for r in result.instances],
    })
    return metrics


CSV_FIELDS = ["dataset", "n_instances", "skipped"] + [f"{kind}@{t:.2f}" for t in TABLE_THRESHOLDS
                                                      for kind in ("noc", "noc_std", "over_max")] + \
             ["miou@1", "miou@5", "seconds_per_click", "seconds_per_instance", "elapsed_s"]


def write_results(path: Path, model_name: str, settings: Dict[str, Any], datasets: Dict[str, Dict[str, Any]]) -> None:
    """``<path>.json`` with everything and ``<path>.csv`` with one summary row per dataset, each
    replaced atomically (``OutputError`` names a file that could not be written)."""
    path = Path(path)
    document = json.dumps({"model": model_name, "settings": settings, "datasets": datasets}, indent=1)
    with output_file(path.with_suffix(".json")):
        atomic_write(path.with_suffix(".json"), document.encode())
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=CSV_FIELDS)
    writer.writeheader()
    for name, m in datasets.items():
        row: Dict[str, Any] = {"dataset": name, "n_instances": m["n_instances"], "skipped": len(m["skipped"]),
                               "elapsed_s": round(m["elapsed_s"], 3)}
        if m["n_instances"]:
            for t in TABLE_THRESHOLDS:
                key = f"{t:.2f}"
                row.update({f"noc@{key}": m["noc"][key], f"noc_std@{key}": round(m["noc_std"][key], 4),
                            f"over_max@{key}": m["over_max"][key]})
            mious: Sequence[float] = m["miou_curve"]
            row.update({"miou@1": round(mious[0], 4), "miou@5": round(mious[4], 4) if len(mious) > 4 else "",
                        "seconds_per_click": round(m["seconds_per_click"], 4),
                        "seconds_per_instance": round(m["seconds_per_instance"], 4)})
        writer.writerow(row)
    with output_file(path.with_suffix(".csv")):
        atomic_write(path.with_suffix(".csv"), table.getvalue().encode())


def append_log(path: Path, header: Optional[str], row: str) -> None:
    """The family's log file: the header only when the file is created (and a header is due),
    then one row per dataset, appended across runs (the file is replaced atomically, so a failed
    write keeps the rows it had)."""
    path = Path(path)
    with output_file(path):
        before = path.read_text() if path.exists() else (header + "\n" if header else "")
        atomic_write(path, (before + row + "\n").encode())
