"""Train a model file of ``models/`` with the RITM / SimpleClick / SkipClick command line
(``skipclick-train``, or ``python train.py`` in a clone)::

    skipclick-train models/iter_mask/skipclick.py --batch-size=32 --exp-name=first
    torchrun --nproc-per-node=8 --no-python skipclick-train models/iter_mask/skipclick.py --exp-name=8gpu
    skipclick-train models/iter_mask/skipclick.py --resume-exp=000 --resume-prefix=last

The model file's ``main(cfg)`` builds the model and trains it with its recipe; ``cfg`` holds the
config's keys (dataset and weight paths) and this command line's settings.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from ..engine.experiment import family_tree, find_experiment, init_experiment, load_model_file
from ..engine.trainer import LAST_CHECKPOINT, PREVIOUS_CHECKPOINT
from ..utils import distributed as dist_utils
from ..utils.config import add_config_argument, load_config
from ..utils.device import add_device_arguments, device_from_args, precision, select_dtype
from .common import HelpFormatter, add_debug_argument, exit_error, main_entry, process_device


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="skipclick-train", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("model_path", type=Path, help="the model file (models/iter_mask/<variant>.py)")
    p.add_argument("--exp-name", default="", help="suffix of the experiment folder's name (default: none)")
    p.add_argument("--workers", type=int, default=4, help="data-loading processes per training process")
    p.add_argument("--batch-size", type=int, default=-1, help="global batch size (default: the recipe's)")
    p.add_argument("--ngpus", type=int, default=1, help="GPUs: more than one needs torchrun (see above)")
    p.add_argument("--resume-exp", default=None, help="continue the experiment whose folder name starts so "
                   "(default: start a new one)")
    p.add_argument("--resume-prefix", default="last", help="checkpoint to continue from (last = last_checkpoint)")
    p.add_argument("--start-epoch", type=int, default=0, help="with --weights: the epoch to start at (for the "
                   "learning-rate schedule and logs)")
    p.add_argument("--weights", default=None, help="start from these weights (any checkpoint load_checkpoint reads; "
                   "default: the model file's initialisation)")
    p.add_argument("--from-scratch", action="store_true", help="start every weight random, the backbone's too "
                   "(default: the pretrained backbone named in config.yml; without it the run stops; a model file may "
                   "set FROM_SCRATCH = True)")
    p.add_argument("--temp-model-path", default="", help="accepted for compatibility; no effect")
    p.add_argument("--local_rank", "--local-rank", type=int, default=0, help="accepted for compatibility (older "
                   "launchers set it); no effect: torchrun's LOCAL_RANK is used")
    p.add_argument("--layerwise-decay", action="store_true", help="layer-wise learning-rate decay in the fusion stack")
    p.add_argument("--upsample", default="x1", choices=["x1", "x2", "x4"], help="head upsampling")
    p.add_argument("--random-split", action="store_true", help="accepted for compatibility; no effect")
    p.add_argument("--epochs", type=int, default=None, help="number of epochs (default: the recipe's)")
    p.add_argument("--epoch-len", type=int, default=None, help="samples per epoch (default: the recipe's)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the recipe's)")
    p.add_argument("--grad-accumulation", type=int, default=1, help="micro batches per optimizer step")
    p.add_argument("--no-feature-reuse", dest="reuse_features", action="store_false",
                   help="re-run the backbone for every simulated click, as the authors' trainer does "
                        "(default: the features of the first pass are reused)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw (data, clicks, init)")
    add_config_argument(p)
    add_debug_argument(p)
    add_device_arguments(p, legacy=True)
    p.add_argument("--bf16", dest="dtype", action="store_const", const="bf16", help="alias of --dtype bf16")
    return p


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    if not args.model_path.is_file():
        p.error(f"model file {str(args.model_path)!r} not found")
    if args.ngpus > 1 and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        p.error(f"--ngpus {args.ngpus}: run one process per GPU with torchrun: "
                f"torchrun --nproc-per-node={args.ngpus} --no-python skipclick-train {args.model_path} ...")
    if args.grad_accumulation < 1:
        p.error("--grad-accumulation must be at least 1")
    if args.from_scratch and args.weights:
        p.error("--from-scratch and --weights exclude each other: choose random or given starting weights")
    if args.dtype == "fp16":
        p.error("--dtype fp16: training runs in fp32 or bf16 (fp16 would need loss scaling); use --dtype bf16")
    return args


def resume_checkpoint(exp_path: Path, prefix: str) -> Path:
    """The checkpoint ``--resume-prefix`` names in the experiment (``last``/``latest``: the last one)."""
    prefix = "last_checkpoint" if prefix in ("last", "latest") else prefix
    folder = exp_path / "checkpoints"
    found = sorted(folder.glob(f"{prefix}*.pth"))
    if not found and prefix == "last_checkpoint" and (folder / PREVIOUS_CHECKPOINT).is_file():
        return folder / LAST_CHECKPOINT   # Trainer.resume falls back to the previous one, with a warning
    if len(found) != 1:
        exit_error(f"--resume-prefix {prefix!r}: expected one checkpoint in {folder}, "
                   f"found {[p.name for p in found] or 'none'}")
    return found[0]


def settings(args: argparse.Namespace, config: Dict[str, Any]) -> Dict[str, Any]:
    """The model file's ``cfg``: the config's keys, this command line's settings, the device."""
    device = device_from_args(args)
    process = dist_utils.init_from_env("nccl" if device.type == "cuda" else "gloo")
    device = process_device(device, process)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    _, notice = precision(device, select_dtype(args.dtype))
    if notice and process.is_main:
        print(f"note: {notice}", file=sys.stderr)
    if args.random_split:
        warnings.warn("--random-split has no effect on SkipClick models")
    torch.manual_seed(args.seed)
    cfg = {**config, **{k: v for k, v in vars(args).items() if k != "model_path"}}
    cfg.update(model_path=str(args.model_path), device=str(device), world_size=process.world_size,
               bf16=args.dtype == "bf16")
    return cfg


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    try:
        model_file = load_model_file(args.model_path)
        cfg = settings(args, load_config(args.config))
        exps_path = Path(cfg.get("EXPS_PATH") or "experiments")
        model_name = getattr(model_file, "MODEL_NAME", None)
        if args.resume_exp is not None:
            exp_path = find_experiment(exps_path.joinpath(*family_tree(args.model_path, model_name)), args.resume_exp)
            cfg["resume_from"] = str(resume_checkpoint(exp_path, args.resume_prefix))
    except (FileNotFoundError, ValueError) as err:
        exit_error(str(err))
    exp_path = init_experiment(args.model_path, model_name, exps_path, args.exp_name, args.resume_exp, cfg)
    cfg["EXP_PATH"] = str(exp_path)
    if dist_utils.init_from_env().is_main:
        print(f"experiment: {exp_path}")
    try:
        model_file.main(cfg)
    except FileNotFoundError as err:   # a missing weights file or dataset: its message says the fix
        exit_error(str(err))
    finally:
        dist_utils.shutdown()


if __name__ == "__main__":
    main_entry(main)
