"""The RClicks benchmark protocol (Antonov et al., NeurIPS 2024 Datasets & Benchmarks,
github.com/emb-ai/rclicks): NoC under clicks that vary the way people's clicks do.

The protocol's idealised user (``Clicker``) always clicks the centre of the largest error. Here
the click's sign is still decided by that rule, but its location is drawn from a *candidate map*:
clickability x the error mask of that sign x the pixels not clicked yet. RClicks sorts the map's
values ascending, keeps a slice ``[lo, hi)`` of the probability mass (thresholds at the values
where the cumulative sum crosses ``lo`` and ``hi``; both kept inclusively, as RClicks does) and
draws one pixel with probability proportional to its value. Ten *clicking groups* G1 .. G10
are the ten 10 % mass slices: G1 clicks the least likely locations, G10 the most likely.

Clickability maps: ``uniform`` (the error mask: every error pixel alike), ``dt`` (the distance
transform of the error mask, normalised: central pixels are likelier) and plug-ins: a callable
``(image, gt_mask, error_mask) -> map`` such as RClicks' trained clickability model, or a folder
of precomputed maps. Results are named after the map, "RClicks protocol with DT clickability":
only RClicks' trained model makes them RClicks' numbers.

Every draw comes from a generator seeded by ``(seed, sample index, object id, group, click
index)``: runs are reproducible, whatever the batching, the shards or a resume.

Metrics (NoC@90 with at most 20 clicks, as RClicks reports): per instance, the NoC of each group
(averaged over seeds when there are several) and of the baseline clicker;

* Sample NoC = mean over instances of the mean over groups, +- the mean over instances of the
  std over groups (population std);
* dSB = mean over instances of (mean group NoC - baseline NoC) / baseline NoC, in %;
* dGR = mean over instances of (NoC in G1 - NoC in G10) / NoC in G10, in %;
* dHH = mean over instances and k = 1..5 of (NoC in G_k - NoC in G_{k+5}) / NoC in G_{k+5}, in %
  (the halves H1 = G1..G5 and H2 = G6..G10, paired group by group as RClicks computes it);
* IoU@20 as RClicks defines it: the area under the IoU-per-click curve over the 20 clicks,
  ``trapz(ious) / 19``; exact without early stop (``--iou-analysis``), otherwise an instance
  keeps its last IoU after it stopped (``iou20_exact`` says which);
* NoF (``>=20``): instances whose NoC is the click limit, per group (mean +- std over groups).
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..utils.masks import padded_distance
from .clicker import Clicker
from .evaluation import ClickerFactory, DatasetResult, baseline_clicker, run_dataset
from .metrics import instance_noc

RCLICKS_IOU_THR = 0.9      # RClicks reports NoC@90
DEFAULT_GROUPS = 10

# (image, gt_mask, error_mask) -> clickability map (H x W, finite, >= 0); see ``Clickability``.
ClickabilityFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


# --------------------------------------------------------------------------- clickability maps

def uniform_clickability(image: np.ndarray, gt_mask: np.ndarray, error_mask: np.ndarray) -> np.ndarray:
    """Every error pixel alike: the error mask as float32 (H x W)."""
    return error_mask.astype(np.float32)


def dt_clickability(image: np.ndarray, gt_mask: np.ndarray, error_mask: np.ndarray) -> np.ndarray:
    """The error mask's distance transform (the baseline clicker's, image border counting as
    correct), divided by its maximum (float32, H x W, in [0, 1])."""
    dist = padded_distance(error_mask)
    peak = float(dist.max())
    return dist / peak if peak > 0 else dist


class Clickability:
    """A clickability map source, named for reports. ``for_instance`` binds it to one instance
    and returns ``error_mask -> map``. A plain callable ``fn(image, gt_mask, error_mask)`` is
    called at every click with the sample's image (H x W x 3, as the dataset gives it), the
    object mask (bool, H x W) and the error mask of the click's sign (bool, H x W)."""

    def __init__(self, name: str, fn: Optional[ClickabilityFn] = None) -> None:
        self.name, self.fn = name, fn

    def for_instance(self, image: np.ndarray, gt_mask: np.ndarray, sample_index: int, object_id: int
                     ) -> Callable[[np.ndarray], np.ndarray]:
        fn = self.fn
        return lambda error_mask: fn(image, gt_mask, error_mask)


class MapFolder(Clickability):
    """Precomputed per-instance maps: ``<folder>/<sample index>_<object id>.npy`` (a float array)
    or ``.png`` (8- or 16-bit grey), of the image's size. The map does not depend on the click;
    the protocol multiplies it by each click's error mask."""

    def __init__(self, folder: Path, name: Optional[str] = None) -> None:
        super().__init__(name or Path(folder).name)
        self.folder = Path(folder)

    def path(self, sample_index: int, object_id: int) -> Path:
        stem = f"{sample_index}_{object_id}"
        for suffix in (".npy", ".png"):
            if (self.folder / (stem + suffix)).is_file():
                return self.folder / (stem + suffix)
        raise FileNotFoundError(f"clickability map {self.folder / stem}.npy (or .png) is missing: a map folder "
                                "holds one map per instance, named <sample index>_<object id>.npy or .png")

    def for_instance(self, image: np.ndarray, gt_mask: np.ndarray, sample_index: int, object_id: int
                     ) -> Callable[[np.ndarray], np.ndarray]:
        path = self.path(sample_index, object_id)
        if path.suffix == ".npy":
            values = np.load(path)
        else:
            values = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if values is None:
                raise ValueError(f"clickability map {path} cannot be read as an image")
        values = np.asarray(values, dtype=np.float32)
        if values.shape != gt_mask.shape:
            raise ValueError(f"clickability map {path} has shape {values.shape}, the instance's image "
                             f"{gt_mask.shape}: save the maps at the image's size (H x W, one channel)")
        return lambda error_mask: values


BUILTIN_CLICKABILITY = {"dt": Clickability("DT", dt_clickability),
                        "uniform": Clickability("uniform", uniform_clickability)}


@functools.lru_cache(maxsize=None)
def _module_from_file(path: str) -> ModuleType:
    """A plug-in file imported once (a model it loads is loaded once for every dataset)."""
    module_spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def load_clickability(spec: str, dataset_name: str = "") -> Clickability:
    """``dt``, ``uniform``, a folder of maps (its ``<dataset_name>/`` sub-folder when there is
    one), or a plug-in ``module:function`` / ``path/to/file.py:function`` naming a callable
    ``(image, gt_mask, error_mask) -> map``."""
    if spec in BUILTIN_CLICKABILITY:
        return BUILTIN_CLICKABILITY[spec]
    folder = Path(spec)
    if folder.is_dir():
        sub = folder / dataset_name
        return MapFolder(sub if dataset_name and sub.is_dir() else folder, name=folder.name)
    module_name, _, attr = spec.rpartition(":")
    if not (module_name and attr):
        raise ValueError(f"clickability {spec!r}: expected dt, uniform, a folder of maps, or a plug-in "
                         "'module:function' / 'file.py:function'")
    if module_name.endswith(".py"):
        if not Path(module_name).is_file():
            raise FileNotFoundError(f"clickability plug-in {spec!r}: file {module_name} does not exist")
        module = _module_from_file(str(Path(module_name).resolve()))
    else:
        module = importlib.import_module(module_name)
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValueError(f"clickability plug-in {spec!r}: {module_name} has no callable {attr!r}; it must be a "
                         "function (image, gt_mask, error_mask) -> map")
    return Clickability(f"{Path(module_name).stem}:{attr}", fn)


def clickability_tag(name: str) -> str:
    """A file-name-safe form of a clickability name (``DT`` -> ``dt``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-").lower() or "plugin"


def protocol_name(clickability: Clickability) -> str:
    """The honest name of results: "RClicks protocol with DT clickability"."""
    return f"RClicks protocol with {clickability.name} clickability"


# --------------------------------------------------------------------------- slice sampling

def slice_thresholds(values: np.ndarray, lo: float, hi: float) -> Tuple[float, float]:
    """RClicks' thresholds of the probability-mass slice ``[lo, hi)`` of ``values`` (>= 0, any
    shape): the values sorted ascending, their cumulative sum ``c`` (float64), then the value at
    the first index with ``c >= lo * sum`` and at the first index with ``c > hi * sum`` (the last
    value when there is none). Pixels with ``thr_lo <= value <= thr_hi`` form the slice."""
    ordered = np.sort(np.asarray(values, dtype=np.float64).ravel())
    if ordered.size == 0:
        raise ValueError("slice_thresholds needs at least one value")
    cumulative = np.cumsum(ordered)
    total = cumulative[-1]
    low = int(np.searchsorted(cumulative, lo * total, side="left"))
    high = min(int(np.searchsorted(cumulative, hi * total, side="right")), ordered.size - 1)
    return float(ordered[min(low, ordered.size - 1)]), float(ordered[high])


def sample_from_slice(weights: np.ndarray, lo: float, hi: float, rng: np.random.Generator
                      ) -> Optional[Tuple[int, int]]:
    """One pixel ``(y, x)`` of the mass slice ``[lo, hi)`` of ``weights`` (H x W, >= 0), drawn with
    probability proportional to its weight: ``u = rng.random() * total`` picks the first pixel, in
    row-major order, whose cumulative weight exceeds ``u``. None when no weight is positive."""
    flat = np.asarray(weights, dtype=np.float64).ravel()
    candidates = np.flatnonzero(flat > 0)
    if candidates.size == 0:
        return None
    values = flat[candidates]
    thr_lo, thr_hi = slice_thresholds(values, lo, hi)
    keep = (values >= thr_lo) & (values <= thr_hi)
    candidates, values = candidates[keep], values[keep]
    cumulative = np.cumsum(values)
    if candidates.size == 0 or not np.isfinite(cumulative[-1]) or cumulative[-1] <= 0:
        return None
    k = min(int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right")), candidates.size - 1)
    y, x = divmod(int(candidates[k]), weights.shape[1])
    return y, x


class RClicksSampler:
    """The RClicks click location for one instance (a ``ClickSampler``): candidate map =
    clickability x error mask x not-yet-clicked, mass slice ``[lo, hi)``, one weighted draw from
    ``np.random.default_rng([*seed_key, click_index])``; None (the baseline click) when the
    candidate map or the slice is empty or not finite."""

    def __init__(self, clickability: Callable[[np.ndarray], np.ndarray], lo: float, hi: float,
                 seed_key: Sequence[int], name: str = "clickability") -> None:
        if not 0 <= lo < hi <= 1:
            raise ValueError(f"mass slice [{lo}, {hi}): expected 0 <= lo < hi <= 1")
        self.clickability, self.lo, self.hi, self.seed_key, self.name = clickability, lo, hi, list(seed_key), name

    def __call__(self, error_mask: np.ndarray, not_clicked: np.ndarray, click_index: int
                 ) -> Optional[Tuple[int, int]]:
        if not error_mask.any():
            return None
        values = np.asarray(self.clickability(error_mask))
        if values.shape != error_mask.shape:
            raise ValueError(f"clickability {self.name!r} returned a map of shape {values.shape} for an instance of "
                             f"{error_mask.shape}: return one value per pixel (H x W)")
        bad = ~np.isfinite(values) | (values < 0)
        if bad.any():
            raise ValueError(f"clickability {self.name!r} returned negative, NaN or infinite values ({int(bad.sum())} "
                             f"of {bad.size} pixels); return a non-negative finite map, e.g. a normalised score")
        weights = values.astype(np.float64) * error_mask * not_clicked
        rng = np.random.default_rng([*self.seed_key, click_index])
        return sample_from_slice(weights, self.lo, self.hi, rng)


# --------------------------------------------------------------------------- the group protocol

@dataclass(frozen=True)
class ProtocolRun:
    """One evaluation run of the protocol: the baseline clicker (``group`` None) or clicking
    group ``group`` (1-based) with trajectory seed ``seed`` and mass slice ``[lo, hi)``."""

    label: str
    group: Optional[int] = None
    seed: int = 0
    lo: float = 0.0
    hi: float = 1.0


def group_bounds(n_groups: int = DEFAULT_GROUPS) -> List[Tuple[float, float]]:
    """The mass slices of the groups: ``[(0, 0.1), (0.1, 0.2), ..., (0.9, 1.0)]`` for 10."""
    if n_groups < 1:
        raise ValueError(f"the number of clicking groups must be at least 1, got {n_groups}")
    return [(g / n_groups, (g + 1) / n_groups) for g in range(n_groups)]


def protocol_runs(n_groups: int = DEFAULT_GROUPS, seeds: int = 1) -> List[ProtocolRun]:
    """The baseline run, then every group (G1 = least likely locations) with every seed."""
    if seeds < 1:
        raise ValueError(f"the number of seeds must be at least 1, got {seeds}")
    runs = [ProtocolRun("baseline")]
    for group, (lo, hi) in enumerate(group_bounds(n_groups), 1):
        runs += [ProtocolRun(f"G{group}" if seeds == 1 else f"G{group}s{seed}", group, seed, lo, hi)
                 for seed in range(seeds)]
    return runs


class RClicksClickers:
    """The ``ClickerFactory`` of one group run: each instance's ``Clicker`` with an
    ``RClicksSampler`` seeded by ``(seed, sample index, object id, group)``."""

    def __init__(self, clickability: Clickability, run: ProtocolRun) -> None:
        if run.group is None:
            raise ValueError(f"run {run.label!r} is the baseline run; use the baseline clicker")
        self.clickability, self.run = clickability, run

    def __call__(self, image: np.ndarray, gt_mask: np.ndarray, sample_index: int, object_id: int) -> Clicker:
        is_object = np.asarray(gt_mask) == 1
        sampler = RClicksSampler(self.clickability.for_instance(image, is_object, sample_index, object_id),
                                 self.run.lo, self.run.hi,
                                 (self.run.seed, sample_index, object_id, self.run.group), self.clickability.name)
        return Clicker(gt_mask=gt_mask, sampler=sampler)


def clicker_factory(run: ProtocolRun, clickability: Clickability) -> ClickerFactory:
    """The simulated users of ``run``: the baseline clicker, or the group's RClicks clickers."""
    return baseline_clicker if run.group is None else RClicksClickers(clickability, run)


def evaluate_rclicks(dataset: Any, predictor: Any, clickability: Clickability, n_groups: int = DEFAULT_GROUPS,
                     seeds: int = 1, runner: Optional[Callable[[ProtocolRun, ClickerFactory], DatasetResult]] = None,
                     **kwargs: Any) -> Dict[str, DatasetResult]:
    """Every run of the protocol on ``dataset``, keyed by run label. ``runner(run, factory)``
    evaluates one run (default: ``run_dataset(dataset, predictor, clicker_factory=factory,
    **kwargs)``, so batching and shards work as there). Score with ``robustness_metrics``."""
    if runner is None:
        def runner(run: ProtocolRun, factory: ClickerFactory) -> DatasetResult:
            return run_dataset(dataset, predictor, clicker_factory=factory, **kwargs)
    return {run.label: runner(run, clicker_factory(run, clickability)) for run in protocol_runs(n_groups, seeds)}


# --------------------------------------------------------------------------- metrics

def iou_at_20(ious: np.ndarray, max_clicks: int = 20) -> float:
    """RClicks' IoU@20: the area under the IoU-per-click curve over ``max_clicks`` clicks,
    ``trapz(ious) / (max_clicks - 1)``; an array cut short by early stopping keeps its last IoU."""
    ious = np.asarray(ious, dtype=np.float64)[:max_clicks]
    curve = np.pad(ious, (0, max_clicks - len(ious)), mode="edge")
    if max_clicks == 1:
        return float(curve[0])
    return float((curve.sum() - (curve[0] + curve[-1]) / 2) / (max_clicks - 1))


def noc_statistics(base_noc: np.ndarray, group_noc: np.ndarray) -> Dict[str, Any]:
    """The protocol's NoC figures from a NoC table: ``base_noc`` (N,) of the baseline clicker and
    ``group_noc`` (G, N), one row per group (G1 first). Percentages are in %; ``delta_hh_pct`` is
    None for an odd number of groups, ``delta_gr_pct`` for a single group."""
    base = np.asarray(base_noc, dtype=np.float64)
    groups = np.asarray(group_noc, dtype=np.float64)
    if groups.ndim != 2 or groups.shape[1] != base.shape[0] or base.ndim != 1 or base.size == 0:
        raise ValueError(f"expected base_noc (N,) and group_noc (G, N) with N > 0, got {base.shape} and {groups.shape}")
    per_instance = groups.mean(axis=0)
    n = len(groups)
    half = n // 2
    return {
        "base_noc": float(base.mean()),
        "sample_noc": float(per_instance.mean()),
        "sample_noc_std": float(groups.std(axis=0).mean()),
        "delta_sb_pct": float(((per_instance - base) / base).mean() * 100),
        "delta_gr_pct": float(((groups[0] - groups[-1]) / groups[-1]).mean() * 100) if n > 1 else None,
        "delta_hh_pct": float(((groups[:half] - groups[half:]) / groups[half:]).mean() * 100)
        if n % 2 == 0 else None,
        "group_noc": groups.mean(axis=1).tolist(),
    }


def robustness_metrics(results: Mapping[str, DatasetResult], runs: Sequence[ProtocolRun],
                       iou_thr: float = RCLICKS_IOU_THR, max_clicks: int = 20) -> Dict[str, Any]:
    """Every figure of the protocol for one dataset from its runs' results (``evaluate_rclicks``):
    ``noc_statistics`` at ``iou_thr``, IoU@20 and NoF of the baseline and the groups, and per
    instance its baseline NoC and group NoCs. A group's NoC of an instance is the mean over seeds."""
    base_run = next(run for run in runs if run.group is None)
    base = results[base_run.label]
    keys = [(r.sample_index, r.object_id) for r in base.instances]
    groups = sorted({run.group for run in runs if run.group is not None})
    seeds = sorted({run.seed for run in runs if run.group is not None})

    def table(result: DatasetResult, label: str) -> Tuple[np.ndarray, np.ndarray, bool]:
        by_key = {(r.sample_index, r.object_id): r.ious for r in result.instances}
        if set(by_key) != set(keys):
            raise ValueError(f"run {label!r} has {len(by_key)} instances, the baseline run {len(keys)} (or other "
                             "ones): every run of the protocol must evaluate the same instances; finish the run "
                             "(--resume)")
        nocs = np.array([instance_noc(by_key[k], iou_thr, max_clicks) for k in keys], dtype=np.float64)
        aucs = np.array([iou_at_20(by_key[k], max_clicks) for k in keys])
        return nocs, aucs, all(len(by_key[k]) >= max_clicks for k in keys)

    base_noc, base_auc, exact = table(base, base_run.label)
    group_noc = np.zeros((len(groups), len(keys)))
    group_auc = np.zeros((len(groups), len(keys)))
    group_nof = np.zeros(len(groups))
    for i, group in enumerate(groups):
        for run in (r for r in runs if r.group == group):
            nocs, aucs, full = table(results[run.label], run.label)
            group_noc[i] += nocs / len(seeds)
            group_auc[i] += aucs / len(seeds)
            group_nof[i] += float((nocs == max_clicks).sum()) / len(seeds)
            exact = exact and full
    metrics: Dict[str, Any] = {"n_instances": len(keys), "iou_thr": iou_thr, "max_clicks": max_clicks,
                               "n_groups": len(groups), "seeds": len(seeds)}
    if not keys:
        return metrics
    metrics.update(noc_statistics(base_noc, group_noc))
    metrics.update({
        "base_iou20": float(base_auc.mean()),
        "sample_iou20": float(group_auc.mean(axis=0).mean()),
        "sample_iou20_std": float(group_auc.std(axis=0).mean()),
        "iou20_exact": exact,
        "base_nof": int((base_noc == max_clicks).sum()),
        "sample_nof": float(group_nof.mean()),
        "sample_nof_std": float(group_nof.std()),
        "group_nof": group_nof.tolist(),
        "instances": [{"sample_index": k[0], "object_id": k[1], "base_noc": int(b), "group_noc": g.tolist()}
                      for k, b, g in zip(keys, base_noc, group_noc.T)],
    })
    return metrics


# --------------------------------------------------------------------------- tables

Rows = Sequence[Tuple[str, Mapping[str, Mapping[str, Any]]]]


def _pct(value: Optional[float]) -> str:
    return "–" if value is None else f"{value:.2f}"


def _limits(rows: Rows) -> Tuple[str, int]:
    """The NoC name (``NoC@90``) and click limit of the runs in ``rows``."""
    found = [m for _, metrics in rows for m in metrics.values() if m.get("n_instances")]
    if not found:
        return f"NoC@{RCLICKS_IOU_THR * 100:.0f}", 20
    return f"NoC@{found[0]['iou_thr'] * 100:.0f}", found[0]["max_clicks"]


def benchmark_table(rows: Rows, datasets: Sequence[str]) -> str:
    """RClicks' benchmark table (their Table 4) in Markdown: one row per method, per dataset the
    Sample NoC@90 +- std, dSB and dGR (in %). ``rows``: (label, dataset -> ``robustness_metrics``)."""
    noc, _ = _limits(rows)
    header = ["Method"] + [f"{d} {c}" for d in datasets for c in (f"Sample {noc}", "ΔSB, %", "ΔGR, %")]
    lines = ["| " + " | ".join(header) + " |", "|:---|" + "---:|" * (len(header) - 1)]
    for label, metrics in rows:
        cells = [label.replace("|", r"\|")]
        for dataset in datasets:
            m = metrics.get(dataset)
            if not m or not m.get("n_instances"):
                cells += ["–"] * 3
                continue
            cells += [f"{m['sample_noc']:.2f} ± {m['sample_noc_std']:.2f}", _pct(m["delta_sb_pct"]),
                      _pct(m["delta_gr_pct"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def details_table(rows: Rows, datasets: Sequence[str]) -> str:
    """Every figure per method and dataset in Markdown: instances, baseline and Sample NoC@90,
    dSB, dGR, dHH, IoU@20 (``*``: early-stopped runs, an instance keeping its last IoU) and NoF
    (``≥20``: instances at the click limit; the limit and threshold are those of the runs)."""
    noc, n = _limits(rows)
    header = ["Method", "Dataset", "n", f"Base {noc}", f"Sample {noc}", "ΔSB, %", "ΔGR, %", "ΔHH, %",
              f"Base IoU@{n}", f"Sample IoU@{n}", f"Base ≥{n}", f"Sample ≥{n}"]
    lines = ["| " + " | ".join(header) + " |", "|:---|:---|" + "---:|" * (len(header) - 2)]
    for label, metrics in rows:
        for dataset in datasets:
            m = metrics.get(dataset)
            if not m or not m.get("n_instances"):
                continue
            star = "" if m["iou20_exact"] else "*"
            lines.append("| " + " | ".join([
                label.replace("|", r"\|"), dataset, str(m["n_instances"]), f"{m['base_noc']:.2f}",
                f"{m['sample_noc']:.2f} ± {m['sample_noc_std']:.2f}", _pct(m["delta_sb_pct"]),
                _pct(m["delta_gr_pct"]), _pct(m["delta_hh_pct"]), f"{100 * m['base_iou20']:.2f}{star}",
                f"{100 * m['sample_iou20']:.2f} ± {100 * m['sample_iou20_std']:.2f}{star}", str(m["base_nof"]),
                f"{m['sample_nof']:.1f} ± {m['sample_nof_std']:.2f}"]) + " |")
    return "\n".join(lines)
