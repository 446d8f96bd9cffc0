"""NoC evaluation with the RITM / SimpleClick / SkipClick command line (``skipclick-evaluate``,
or ``python scripts/evaluate_model.py`` in a clone).

The authors' documented command works unchanged (paths come from the config, see ``--config``)::

    skipclick-evaluate NoBRS --checkpoint=skipclick_dinov2.pth --eval-mode=cvpr \
        --datasets=GrabCut,Berkeley,DAVIS,SBD,HQSeg --eval-fvit --suppress-zoom

Model-free baselines run through the same loop: ``--baseline grabcut`` or ``random_walker``.
Besides the family's table and log file, each run writes ``results_<eval_mode>_<mode>_<n>.json``
/ ``.csv`` (every metric, per-instance IoUs and clicks), per-instance records as they are made
(``instances/*.jsonl``, continued by ``--resume``) and a mIoU-versus-clicks plot; a WSESeg run
also writes the per-class NoC radar chart.

Before the first click every dataset folder, checkpoint and the output folder are checked (all
problems listed at once, nothing run). A truncated or corrupt image is an error naming it (or a
skipped sample with ``--skip-bad``). Results, CSV and plots are replaced atomically after each
dataset; ``--resume`` continues only records made with the same settings (the first line of each
record file) and rebuilds the summary of every dataset from them.

Faster, with the same numbers: ``--batch-size 16`` clicks on 16 instances at once (one network
call per click for all), and torchrun shards the images over processes (one per GPU)::

    torchrun --nproc-per-node=8 --no-python skipclick-evaluate NoBRS --checkpoint=... --batch-size 16

Robustness to how people click: ``--clicker rclicks`` runs the RClicks benchmark protocol
(``isegm/inference/rclicks.py``): the baseline clicker and ten clicking groups G1..G10 that draw
click locations from a clickability map (``--clickability dt``, ``uniform``, a folder of maps or
a plug-in ``module:function``), and writes ``rclicks_<clickability>_<eval_mode>_<mode>_<n>.json``
/ ``.md`` (Sample NoC@90 +- std, dSB, dGR per dataset, in RClicks' table layout) and a plot of
NoC per group::

    skipclick-evaluate NoBRS --baseline grabcut --datasets GrabCut --clicker rclicks \
        --clickability dt --groups 10 --seeds 1
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import json
import os
import pickle
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Dict, List, Optional, Tuple

import cv2
import torch

from ..data import DATASET_NAMES, DatasetError, FirstSamples, get_dataset
from ..data.datasets import WSESEG_CLASSES
from ..inference.evaluation import (PRED_THRESHOLD, ClickerFactory, DatasetResult, baseline_clicker, merge_results,
                                    run_dataset)
from ..inference.metrics import results_row
from ..inference.plots import plot_miou_curves, plot_noc_per_group, plot_radar
from ..inference.predictor import get_predictor
from ..inference.rclicks import (DEFAULT_GROUPS, RCLICKS_IOU_THR, ProtocolRun, benchmark_table, clickability_tag,
                                 details_table, evaluate_rclicks, load_clickability, protocol_name, protocol_runs,
                                 robustness_metrics)
from ..inference.report import InstanceLog, OutputError, append_log, dataset_metrics, output_file, write_results
from ..utils.config import add_config_argument, config_source, load_config
from ..utils.device import add_device_arguments, device_from_args, precision, select_dtype
from ..utils.distributed import Process, all_gather_object, barrier, init_from_env, shutdown
from ..utils.files import atomic_write, file_sha256
from ..utils.vis import draw_prediction
from .common import HelpFormatter, add_debug_argument, exit_error, main_entry, process_device

MODES = ["NoBRS", "RGB-BRS", "DistMap-BRS", "f-BRS-A", "f-BRS-B", "f-BRS-C"]
# The original's default also lists BraTS and OAIZIB (medical sets without a loader here).
DEFAULT_DATASETS = "GrabCut,Berkeley,DAVIS,SBD,HQSeg"
BASELINE_NAMES = ("grabcut", "random_walker")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="skipclick-evaluate", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("mode", choices=MODES, help="the family's refinement mode; only NoBRS is implemented "
                        "(SkipClick, EMC-Click and the baselines use no backpropagating refinement)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", default="", help="checkpoint file: absolute, relative to the current "
                        "folder, or a name under CHECKPOINTS_PATH (the .pth extension can be omitted)")
    source.add_argument("--exp-path", default="", help="experiment under EXPS_PATH; evaluates its "
                        "checkpoints/*.pth ('exp:prefix' picks those starting with prefix)")
    source.add_argument("--baseline", choices=BASELINE_NAMES, help="a model-free baseline instead of a model "
                        "(runs on the CPU)")
    parser.add_argument("--datasets", default=DEFAULT_DATASETS, help=f"comma-separated dataset names, of "
                        f"{', '.join(n for n in DATASET_NAMES if not n.startswith('WSESeg_'))}, WSESeg_<class>")
    parser.add_argument("--wseseg-eval", action="store_true", help="the ten WSESeg classes, one dataset each "
                        "(replaces --datasets)")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--target-iou", type=float, default=0.95, help="early-stop IoU (at least 0.8)")
    target.add_argument("--iou-analysis", action="store_true", help="no early stop; plot mIoU per click")
    parser.add_argument("--n-clicks", type=int, default=20, help="click limit per instance")
    parser.add_argument("--min-n-clicks", type=int, default=1, help="clicks made before the early stop may apply")
    parser.add_argument("--thresh", type=float, default=PRED_THRESHOLD, help="mask = probability > thresh")
    parser.add_argument("--clicks-limit", type=int, default=None, help="the network sees only the first N clicks "
                        "(default: all)")
    parser.add_argument("--eval-mode", default="cvpr", help="cvpr (each dataset's size), fixed<N> or "
                        "fixed<H>,<W>")
    parser.add_argument("--eval-ritm", action="store_true", help="RITM zoom-in settings")
    parser.add_argument("--suppress-zoom", action="store_true", help="never crop (SkipClick's official setting)")
    parser.add_argument("--eval-fvit", action="store_true",
                        help="accepted for compatibility: our models resize their position tables themselves")
    parser.add_argument("--eval-cmx", action="store_true", help="accepted for compatibility; no effect")
    parser.add_argument("--save-ious", action="store_true", help="also pickle the IoU arrays (family format)")
    parser.add_argument("--print-ious", action="store_true", help="append mIoU@1..20 to each table row")
    parser.add_argument("--vis-preds", action="store_true", help="save an image per click: mask, clicks, probabilities")
    parser.add_argument("--model-name", default=None, help="name in the table and plots (default: the checkpoint's "
                        "file name or the baseline's)")
    add_config_argument(parser)
    parser.add_argument("--logs-path", default="", help="output folder (default: EXPS_PATH/evaluation_logs)")
    parser.add_argument("--skip-bad", action="store_true", help="skip unreadable (truncated, corrupt) samples and "
                        "list them in the report")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run from its instance records "
                        "(refused when they were made with other settings)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N samples of each dataset "
                        "(default: all)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--batch-size", type=int, default=1, help="instances clicked on at once, one network call "
                        "per click for all of them (same results; pays off on GPUs). Under torchrun each process "
                        "evaluates every n-th image")
    add_device_arguments(parser, legacy=True)
    rclicks = parser.add_argument_group("robustness to how people click (the RClicks benchmark protocol)")
    rclicks.add_argument("--clicker", choices=("baseline", "rclicks"), default="baseline",
                         help="baseline: the protocol's clicker (centre of the largest error); rclicks: the baseline "
                         "run plus --groups clicking groups drawing click locations from a clickability map")
    rclicks.add_argument("--clickability", default="dt", help="dt (distance transform of the error, normalised), "
                         "uniform (the error mask), a folder of maps (<sample index>_<object id>.npy or .png, in "
                         "<folder>/<dataset>/ or <folder>/), or a plug-in module:function / file.py:function, "
                         "a callable (image, gt_mask, error_mask) -> map")
    rclicks.add_argument("--groups", type=int, default=DEFAULT_GROUPS,
                         help="clicking groups, equal slices of probability mass (G1: the least likely locations)")
    rclicks.add_argument("--seeds", type=int, default=1, help="trajectories per instance and group")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    if args.clicker == "rclicks":
        if args.groups < 2 or args.seeds < 1:
            parser.error(f"--groups must be at least 2 and --seeds at least 1, got {args.groups} and {args.seeds}")
        if args.save_ious:
            parser.error("--save-ious applies to --clicker baseline; the RClicks protocol writes its own JSON")
        try:
            load_clickability(args.clickability)
        except (ValueError, OSError, ImportError) as err:
            parser.error(f"--clickability: {err}")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.baseline and args.batch_size > 1:
        parser.error("--batch-size applies to models; the baselines evaluate one instance at a time")
    if args.mode != "NoBRS":
        parser.error(f"mode {args.mode} (backpropagating refinement) is not implemented; use NoBRS")
    if args.wseseg_eval:
        args.datasets = ",".join(f"WSESeg_{name}" for name in WSESEG_CLASSES)
    if (args.iou_analysis or args.print_ious) and args.min_n_clicks <= 1:
        args.target_iou = 1.01
    else:
        args.target_iou = max(0.8, args.target_iou)
    if args.clicker == "rclicks" and args.target_iou < RCLICKS_IOU_THR:
        parser.error(f"--target-iou {args.target_iou:g} stops before the protocol's NoC@{RCLICKS_IOU_THR * 100:.0f} "
                     f"is reached; use at least {RCLICKS_IOU_THR}")
    return args


def find_checkpoint(folder: Path, name: str) -> Path:
    """The checkpoint ``name``: an existing path, else a file under ``folder`` (``.pth`` optional)."""
    if Path(name).is_file():
        return Path(name)
    if (folder / name).is_file():
        return folder / name
    candidates = sorted(folder.rglob(f"{Path(name).stem}*.pth")) if folder.is_dir() else []
    if len(candidates) != 1:
        found = f"found {', '.join(map(str, candidates))}" if candidates else "found none"
        raise FileNotFoundError(f"checkpoint {name!r}: not a file, and not exactly one '{Path(name).stem}*.pth' "
                                f"under CHECKPOINTS_PATH={str(folder)!r} ({found}); pass a path or set "
                                "CHECKPOINTS_PATH in the config")
    return candidates[0]


def config_path(config: Dict[str, Any], key: str) -> Path:
    """A folder from the config, or an error saying which key to set."""
    if not config.get(key):
        raise ValueError(f"config key {key} is not set: add '{key}: <folder>' to the config file (--config) "
                         f"or set SKIPCLICK_{key}")
    return Path(config[key])


def logs_root(args: argparse.Namespace, config: Dict[str, Any]) -> Path:
    """The output folder: ``--logs-path``, else ``EXPS_PATH/evaluation_logs``."""
    return Path(args.logs_path) if args.logs_path else config_path(config, "EXPS_PATH") / "evaluation_logs"


def checkpoints_and_logs(args: argparse.Namespace, config: Dict[str, Any]) -> Tuple[List[Optional[Path]], Path, str]:
    """What to evaluate, its folder under the logs folder and the log-name prefix, as the original
    names them."""
    if args.baseline:
        return [None], Path("others") / args.baseline, ""
    if args.exp_path:
        exp, _, prefix = args.exp_path.partition(":")
        exp_dir = config_path(config, "EXPS_PATH") / exp
        checkpoints = sorted((exp_dir / "checkpoints").glob(prefix + "*.pth"), reverse=True)
        if not checkpoints:
            raise FileNotFoundError(f"no checkpoints matching {str(exp_dir / 'checkpoints' / (prefix + '*.pth'))!r}")
        logs_prefix = (checkpoints[0].stem if len(checkpoints) == 1 else f"all_{prefix}") if prefix \
            else "all_checkpoints"
        return checkpoints, Path(exp), logs_prefix
    checkpoint = find_checkpoint(Path(config.get("CHECKPOINTS_PATH") or "."), args.checkpoint)
    return [checkpoint], Path("others") / checkpoint.stem, ""


@functools.lru_cache(maxsize=1)
def load_model(checkpoint: Path, device: torch.device) -> torch.nn.Module:
    """The model of a checkpoint, kept while consecutive datasets use it."""
    from ..model import load_checkpoint
    return load_checkpoint(checkpoint, device=device).eval()


def make_predictor(args: argparse.Namespace, checkpoint: Optional[Path], dataset_name: str,
                   device: torch.device, model: Optional[torch.nn.Module] = None) -> Any:
    """The baseline, or the checkpoint's model (``model`` when already loaded) behind the
    authors' predictor chain for this dataset."""
    if checkpoint is None:
        from ..inference.baselines import get_baseline
        return get_baseline(args.baseline)
    model = model if model is not None else load_model(checkpoint, device)
    return get_predictor(model, args.eval_mode, dataset_name, "ritm" if args.eval_ritm else "skipclick",
                         suppress_zoom=args.suppress_zoom, clicks_limit=args.clicks_limit, device=device)


def vis_callback(folder: Path, threshold: float) -> Callable:
    """Save, per click, the mask and clicks over the image beside the probability map."""
    folder.mkdir(parents=True, exist_ok=True)

    def callback(image, gt_mask, probs, sample_id, click_index, clicks):
        picture = draw_prediction(image, probs, [(*c.coords, c.is_positive) for c in clicks], threshold)
        cv2.imwrite(str(folder / f"{sample_id:05d}_{click_index + 1:02d}.jpg"), picture[:, :, ::-1])

    return callback


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command; 0 on success. A known problem (a missing or unreadable file, a wrong
    setting, records of other settings, a failed write) stops it with one ``error:`` line per
    problem and status 2."""
    args = parse_args(argv)
    process = init_from_env()
    try:
        return evaluate(args, process)
    except (FileNotFoundError, ValueError) as err:
        exit_error(str(err))
    except OutputError as err:
        exit_error(f"{err}; the file keeps its previous content and every finished instance is kept in the "
                   "instance records: free space (or fix the folder) and rerun with --resume")
    finally:
        shutdown()


def device_and_precision(args: argparse.Namespace, process: Process
                         ) -> Tuple[torch.device, Callable[[], ContextManager]]:
    """This process's device and the context the predictor runs in (autocast for bf16 / fp16).
    The baselines compute on the CPU in numpy: device flags do not apply to them."""
    if args.baseline:
        if process.is_main and (args.device not in (None, "cpu") or args.gpus or args.dtype != "fp32"):
            print(f"note: --device, --gpus and --dtype apply to models; the {args.baseline} baseline runs on the CPU",
                  file=sys.stderr)
        return torch.device("cpu"), contextlib.nullcontext
    device = process_device(device_from_args(args), process)
    context, notice = precision(device, select_dtype(args.dtype))
    if notice and process.is_main:
        print(f"note: {notice}", file=sys.stderr)
    return device, context


class RunFailed(Exception):
    """A dataset run stopped on an unreadable sample; ``folder`` holds the records made so far."""

    def __init__(self, message: str, folder: Path) -> None:
        super().__init__(message)
        self.folder = folder


def run_with_records(args: argparse.Namespace, process: Process, dataset: Any, predictor: Any, records: InstanceLog,
                     callback: Optional[Callable], clicker_factory: ClickerFactory = baseline_clicker
                     ) -> Optional[DatasetResult]:
    """One run over a dataset: instance records started fresh (or kept with ``--resume``), this
    process's shard evaluated, the shards gathered. Rank 0 gets the merged result, the others
    None; an unreadable sample on any rank raises ``RunFailed`` on every rank."""
    if not args.resume and process.is_main:
        records.remove_all()
    barrier()
    done = records.start(keep=args.resume)
    shard, error = None, None
    try:
        shard = run_dataset(dataset, predictor, skip_bad=args.skip_bad, done=done, on_instance=records.append,
                            progress=not args.no_progress and process.is_main, batch_size=args.batch_size,
                            shard=(process.rank, process.world_size), max_iou_thr=args.target_iou,
                            pred_thr=args.thresh, min_clicks=args.min_n_clicks, max_clicks=args.n_clicks,
                            callback=callback, clicker_factory=clicker_factory)
    except DatasetError as err:
        error = str(err)
    gathered = all_gather_object((shard, error))
    errors = [e for _, e in gathered if e is not None]
    if errors:
        raise RunFailed(errors[0], records.base.parent)
    return merge_results([r for r, _ in gathered]) if process.is_main else None


def evaluate(args: argparse.Namespace, process: Process) -> int:
    """Every dataset x checkpoint; under torchrun each process takes its shard of the images and
    rank 0 merges the shards and writes the outputs."""
    try:
        return _evaluate(args, process)
    except RunFailed as err:
        if not process.is_main:
            raise SystemExit(2) from None   # rank 0 says why
        exit_error(f"{err}. The instances evaluated so far are kept in {err.folder}: fix or remove the file and "
                   "rerun with --resume, or rerun with --skip-bad to skip such samples")


@dataclass
class Plan:
    """A run, checked before its first click: the datasets (name, loader with ``--limit``
    applied, full size), the checkpoints (None for a baseline) with their SHA-256, the output
    folder and the log-name prefix. ``model``: the one checkpoint's model as the check loaded
    it, for every dataset (several checkpoints are loaded again when their turn comes, so that
    only one is in memory)."""

    datasets: List[Tuple[str, Any, int]]
    checkpoints: List[Optional[Path]]
    digests: Dict[Path, str]
    logs_path: Path
    logs_prefix: str
    model: Optional[torch.nn.Module] = None


def one_line(message: str) -> str:
    """A multi-line message (a dataset's expected layout) as its first and last lines."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return lines[0] if len(lines) < 2 else f"{lines[0]} {lines[-1]}"


def writable_problem(folder: Path) -> Optional[str]:
    """Why files cannot be written in ``folder`` (or in its nearest existing parent, when it is
    still to be made), tried by creating and removing a file; None when they can."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "not a folder")
        handle, name = tempfile.mkstemp(dir=existing, prefix=".skipclick-write-test-")
        os.close(handle)
        os.unlink(name)
    except OSError as err:
        where = "" if existing == folder else f" (its parent {str(existing)!r})"
        return (f"output folder {str(folder)!r}{where} is not writable: {err.strerror or err}; choose another "
                "with --logs-path")
    return None


def run_settings(args: argparse.Namespace, plan: Plan, checkpoint: Optional[Path], dataset_name: str,
                 dataset_size: int) -> Dict[str, Any]:
    """Whatever decides a run's numbers, stored at the head of its instance records: ``--resume``
    takes records only from a run with the same settings."""
    settings: Dict[str, Any] = {
        "model": args.baseline if checkpoint is None else str(checkpoint.resolve()),
        "checkpoint_sha256": None if checkpoint is None else plan.digests[checkpoint],
        "dataset": dataset_name, "dataset_size": dataset_size, "target_iou": args.target_iou,
        "pred_thr": args.thresh, "min_clicks": args.min_n_clicks, "max_clicks": args.n_clicks,
        "clicks_limit": args.clicks_limit, "eval_mode": args.eval_mode,
        "protocol": "ritm" if args.eval_ritm else "skipclick", "zoom_in": not args.suppress_zoom,
        "dtype": "fp32" if args.baseline else args.dtype, "clicker": args.clicker}
    if args.clicker == "rclicks":
        settings.update({"clickability": args.clickability, "groups": args.groups})
    return settings


def name_prefix(plan: Plan, dataset_name: str) -> str:
    """The start of a dataset's file names: the log-name prefix, and the dataset when several
    checkpoints share the log file."""
    if not plan.logs_prefix:
        return ""
    return plan.logs_prefix + "_" + ("" if len(plan.checkpoints) == 1 else f"{dataset_name}_")


def records_stem(args: argparse.Namespace, plan: Plan, dataset_name: str, checkpoint: Optional[Path]) -> str:
    """The name of the records of one dataset and checkpoint under ``instances/``, without
    extension (each checkpoint of an experiment has its own)."""
    run = f"{dataset_name}_{args.eval_mode}_{args.mode}_{args.n_clicks}"
    if len(plan.checkpoints) > 1 and checkpoint is not None:
        return f"{plan.logs_prefix}_{checkpoint.stem}_{run}"
    return f"{name_prefix(plan, dataset_name)}{run}"


def rclicks_records(args: argparse.Namespace, logs_path: Path, stem: str, dataset_name: str, run: ProtocolRun
                    ) -> Path:
    """The records of one run of the RClicks protocol."""
    tag = clickability_tag(load_clickability(args.clickability, dataset_name).name)
    return logs_path / "instances" / f"{stem}_rclicks_{tag}_{run.label}.jsonl"


def preflight(args: argparse.Namespace, config: Dict[str, Any], device: torch.device) -> Tuple[Plan, List[str]]:
    """Check everything a run needs before its first click: every dataset folder, every
    checkpoint (loaded), the output folder (written to) and, with ``--resume``, the settings of
    the records to continue. Returns the plan and every problem found, one line each."""
    problems: List[str] = []
    checkpoints: List[Optional[Path]] = []
    folder, logs_prefix, root = Path("."), "", None
    try:
        root = logs_root(args, config)
    except ValueError as err:
        problems.append(str(err))
    try:
        checkpoints, folder, logs_prefix = checkpoints_and_logs(args, config)
    except (FileNotFoundError, ValueError) as err:
        problems.append(str(err))
    digests: Dict[Path, str] = {}
    model = None
    for checkpoint in checkpoints:
        if checkpoint is None:
            continue
        try:
            loaded = load_model(checkpoint, device)
            if len(checkpoints) == 1:
                model = loaded
            del loaded   # several checkpoints: one model in memory at a time
            digests[checkpoint] = file_sha256(checkpoint)
        except (ValueError, OSError, RuntimeError) as err:
            message = one_line(str(err))
            problems.append(message if str(checkpoint) in message else f"checkpoint {str(checkpoint)!r}: {message}")
    datasets: List[Tuple[str, Any, int]] = []
    for name in args.datasets.split(","):
        try:
            dataset = get_dataset(name, config, config_source(args.config))
            if args.clicker == "rclicks":
                load_clickability(args.clickability, name)
        except (ValueError, OSError, ImportError) as err:
            problems.append(one_line(str(err)))
            continue
        size = len(dataset)
        datasets.append((name, dataset if args.limit is None else FirstSamples(dataset, args.limit), size))
    if root is not None:
        problems += filter(None, [writable_problem(root / folder)])
    plan = Plan(datasets, checkpoints, digests, (root or Path(".")) / folder, logs_prefix, model)
    if args.resume and not problems:
        problems += resume_problems(args, plan)
    return plan, list(dict.fromkeys(problems))


def resume_problems(args: argparse.Namespace, plan: Plan) -> List[str]:
    """For ``--resume``: every record file of the run made with other settings, one line each."""
    problems = []
    for name, _, size in plan.datasets:
        for checkpoint in plan.checkpoints:
            settings = run_settings(args, plan, checkpoint, name, size)
            stem = records_stem(args, plan, name, checkpoint)
            paths = [rclicks_records(args, plan.logs_path, stem, name, run)
                     for run in protocol_runs(args.groups, args.seeds)] if args.clicker == "rclicks" \
                else [plan.logs_path / "instances" / f"{stem}.jsonl"]
            for path in paths:
                try:
                    InstanceLog(path, settings=settings).check()
                except ValueError as err:   # RecordsMismatch, or a file that is not records
                    problems.append(str(err))
    return problems


def _evaluate(args: argparse.Namespace, process: Process) -> int:
    config = load_config(args.config)
    device, context = device_and_precision(args, process)
    plan, problems = preflight(args, config, device)
    if problems:   # all of them at once, and nothing runs
        if not process.is_main:
            raise SystemExit(2)   # rank 0 says why
        exit_error(*problems)
    logs_path, single = plan.logs_path, len(plan.checkpoints) == 1
    run_name = f"{args.eval_mode}_{args.mode}_{args.n_clicks}"
    print_header = single
    all_metrics: Dict[str, Dict[str, Any]] = {}
    model_name = ""
    for dataset_name, dataset, size in plan.datasets:
        for checkpoint in plan.checkpoints:
            model_name = args.model_name or (args.baseline if checkpoint is None else checkpoint.stem)
            predictor = make_predictor(args, checkpoint, dataset_name, device, plan.model)
            settings = run_settings(args, plan, checkpoint, dataset_name, size)
            stem = records_stem(args, plan, dataset_name, checkpoint)
            key = dataset_name if single else f"{dataset_name}:{checkpoint.stem}"
            if args.clicker == "rclicks":
                with context():
                    metrics = evaluate_rclicks_dataset(args, process, dataset, dataset_name, predictor, logs_path,
                                                       stem, settings)
                if process.is_main:
                    all_metrics[key] = metrics
                continue
            records = InstanceLog(logs_path / "instances" / f"{stem}.jsonl", shard=(process.rank, process.world_size),
                                  settings=settings)
            callback = vis_callback(logs_path / "predictions_vis" / dataset_name, args.thresh) if args.vis_preds else None
            with context():
                result = run_with_records(args, process, dataset, predictor, records, callback)
            if not process.is_main:
                continue
            row_name = args.mode if single else checkpoint.stem
            header, row = results_row(result.all_ious, result.elapsed, row_name, dataset_name, args.target_iou,
                                      args.n_clicks, print_ious=args.print_ious, model_name=model_name)
            if print_header:
                print(header)
            print(row)
            append_log(logs_path / f"{name_prefix(plan, dataset_name)}{run_name}.txt",
                       header if print_header else None, row)
            print_header = False
            if result.skipped:
                print(f"  {dataset_name}: {len(result.skipped)} of {len(dataset)} samples skipped as unreadable "
                      "(--skip-bad; listed in the results JSON):")
            for index, error in result.skipped.items():
                print(f"  skipped sample {index}: {error}")
            if args.save_ious and single:
                path = logs_path / "ious" / f"{dataset_name}_{run_name}.pkl"
                with output_file(path):
                    atomic_write(path, pickle.dumps(result.all_ious))
            all_metrics[key] = dataset_metrics(result, args.n_clicks, args.target_iou)
        # Each finished dataset's figures are on disk before the next dataset starts.
        if process.is_main:
            write_outputs(args, process, all_metrics, logs_path, plan.logs_prefix, run_name, model_name)
    if not process.is_main:
        return 0
    if args.clicker == "rclicks":
        print(rclicks_text(args, all_metrics, model_name), end="")
    print(f"results: {logs_path}")
    return 0


def write_outputs(args: argparse.Namespace, process: Process, all_metrics: Dict[str, Dict[str, Any]],
                  logs_path: Path, logs_prefix: str, run_name: str, model_name: str) -> None:
    """The results of the datasets finished so far: JSON, CSV and plots (or the RClicks
    protocol's files), each replaced atomically."""
    settings = {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, type(None)))}
    settings["processes"] = process.world_size
    prefix = f"{logs_prefix + '_' if logs_prefix else ''}"
    if args.clicker == "rclicks":
        write_rclicks(args, all_metrics, logs_path, prefix, run_name, model_name, settings)
        return
    write_results(logs_path / f"{prefix}results_{run_name}", model_name, settings, all_metrics)
    curves = {k: m["miou_curve"] for k, m in all_metrics.items() if m["n_instances"]}
    if curves:
        stop = "no early stop" if args.target_iou > 1 else \
            f"stopped at IoU {args.target_iou:g}: an instance keeps its last IoU"
        path = logs_path / "plots" / f"miou_{run_name}.png"
        with output_file(path):
            plot_miou_curves(curves, path, f"{model_name} ({stop})")
    wseseg = {k[len("WSESeg_"):]: m for k, m in all_metrics.items() if k.startswith("WSESeg_") and m["n_instances"]}
    if len(wseseg) >= 3:
        series = {f"NoC@{t}": {c: m["noc"][f"0.{t}"] for c, m in wseseg.items()} for t in (85, 90)}
        path = logs_path / "plots" / f"wseseg_radar_{run_name}.png"
        with output_file(path):
            plot_radar(series, path, f"{model_name}: NoC per WSESeg class")


def evaluate_rclicks_dataset(args: argparse.Namespace, process: Process, dataset: Any, dataset_name: str,
                             predictor: Any, logs_path: Path, stem: str, settings: Dict[str, Any]
                             ) -> Optional[Dict[str, Any]]:
    """The RClicks protocol on one dataset: the baseline run and every group (and seed) run, each
    with its own instance records (``instances/<stem>_rclicks_<clickability>_<run>.jsonl``, so
    ``--resume`` continues any of them). Rank 0 gets ``robustness_metrics``, the others None."""
    clickability = load_clickability(args.clickability, dataset_name)
    tag = clickability_tag(clickability.name)
    runs = protocol_runs(args.groups, args.seeds)
    start = time.time()

    def runner(run: ProtocolRun, factory: ClickerFactory) -> Optional[DatasetResult]:
        if process.is_main and not args.no_progress:
            print(f"{dataset_name}: {protocol_name(clickability)}, run {run.label} "
                  f"({runs.index(run) + 1} of {len(runs)})", file=sys.stderr)
        records = InstanceLog(rclicks_records(args, logs_path, stem, dataset_name, run),
                              shard=(process.rank, process.world_size), settings=settings)
        callback = vis_callback(logs_path / "predictions_vis" / dataset_name / f"rclicks_{tag}_{run.label}",
                                args.thresh) if args.vis_preds else None
        return run_with_records(args, process, dataset, predictor, records, callback, factory)

    results = evaluate_rclicks(dataset, predictor, clickability, args.groups, args.seeds, runner=runner)
    if not process.is_main:
        return None
    metrics = robustness_metrics(results, runs, RCLICKS_IOU_THR, args.n_clicks)
    skipped = {str(k): v for k, v in sorted(results[runs[0].label].skipped.items())}
    metrics.update({"protocol": protocol_name(clickability), "clickability": args.clickability,
                    "elapsed_s": time.time() - start, "n_skipped": len(skipped), "skipped": skipped})
    return metrics


def rclicks_text(args: argparse.Namespace, all_metrics: Dict[str, Dict[str, Any]], model_name: str) -> str:
    """The protocol's report: RClicks' benchmark table and the details table."""
    rows: Dict[str, Dict[str, Any]] = {}
    for key, metrics in all_metrics.items():
        dataset, _, checkpoint = key.partition(":")
        rows.setdefault(checkpoint or model_name, {})[dataset] = metrics
    datasets = list(dict.fromkeys(key.partition(":")[0] for key in all_metrics))
    stop = "no early stop" if args.target_iou > 1 else f"early stop at IoU {args.target_iou:g}"
    name = protocol_name(load_clickability(args.clickability))
    return (f"{name}: {args.groups} groups, {args.seeds} seed(s), NoC@{RCLICKS_IOU_THR * 100:.0f} with at most "
            f"{args.n_clicks} clicks, {stop}\n\n" + benchmark_table(list(rows.items()), datasets) + "\n\n"
            + details_table(list(rows.items()), datasets) + "\n")


def write_rclicks(args: argparse.Namespace, all_metrics: Dict[str, Dict[str, Any]], logs_path: Path, prefix: str,
                  run_name: str, model_name: str, settings: Dict[str, Any]) -> None:
    """The protocol's outputs: ``rclicks_<clickability>_<run>.json`` (every figure, per instance
    too), ``.md`` (``rclicks_text``) and the plot of NoC per group, each replaced atomically."""
    clickability = load_clickability(args.clickability)
    name = protocol_name(clickability)
    stem = f"{prefix}rclicks_{clickability_tag(clickability.name)}_{run_name}"
    document = json.dumps({"model": model_name, "protocol": name, "clickability": args.clickability,
                           "settings": settings, "datasets": all_metrics}, indent=1)
    for path, data in ((logs_path / f"{stem}.md", rclicks_text(args, all_metrics, model_name)),
                       (logs_path / f"{stem}.json", document)):
        with output_file(path):
            atomic_write(path, data.encode())
    curves = {k: m["group_noc"] for k, m in all_metrics.items() if m.get("n_instances")}
    if curves:
        baselines = {k: m["base_noc"] for k, m in all_metrics.items() if m.get("n_instances")}
        path = logs_path / "plots" / f"{stem}.png"
        with output_file(path):
            plot_noc_per_group(curves, baselines, path, f"{model_name}: {name}")


if __name__ == "__main__":
    main_entry(main)
