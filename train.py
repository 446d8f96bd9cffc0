"""Train a model file of ``models/`` with the RITM / SimpleClick / SkipClick command line.

    python train.py models/iter_mask/skipclick.py --batch-size=32 --ngpus=1 --exp-name=first
    torchrun --nproc-per-node=8 train.py models/iter_mask/skipclick.py --exp-name=8gpu
    python train.py models/iter_mask/skipclick.py --resume-exp=000 --resume-prefix=last

The model file's ``main(cfg)`` builds the model and trains it with its recipe; ``cfg`` holds
config.yml's keys (dataset and weight paths) and this command line's settings.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from isegm.engine.experiment import family_tree, find_experiment, init_experiment, load_model_file  # noqa: E402
from isegm.utils import distributed as dist_utils  # noqa: E402
from isegm.utils.config import load_config  # noqa: E402


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_path", type=Path, help="the model file (models/iter_mask/<variant>.py)")
    p.add_argument("--exp-name", default="", help="suffix of the experiment folder's name")
    p.add_argument("--workers", type=int, default=4, help="data-loading processes per training process")
    p.add_argument("--batch-size", type=int, default=-1, help="global batch size (default: the recipe's)")
    p.add_argument("--ngpus", type=int, default=1, help="GPUs: more than one needs torchrun (see above)")
    p.add_argument("--gpus", default="", help="GPU id for a single-process run (default 0)")
    p.add_argument("--resume-exp", default=None, help="continue the experiment whose folder name starts so")
    p.add_argument("--resume-prefix", default="last", help="checkpoint to continue from (last = last_checkpoint)")
    p.add_argument("--start-epoch", type=int, default=0, help="with --weights: the epoch to start at (for the "
                   "learning-rate schedule and logs)")
    p.add_argument("--weights", default=None, help="start from these weights (any checkpoint load_checkpoint reads)")
    p.add_argument("--temp-model-path", default="", help="accepted for compatibility; not used")
    p.add_argument("--local_rank", "--local-rank", type=int, default=0, help="set by older launchers; "
                   "torchrun's LOCAL_RANK is used")
    p.add_argument("--layerwise-decay", action="store_true", help="layer-wise learning-rate decay in the fusion stack")
    p.add_argument("--upsample", default="x1", choices=["x1", "x2", "x4"], help="head upsampling")
    p.add_argument("--random-split", action="store_true", help="accepted for compatibility; no effect here")
    p.add_argument("--epochs", type=int, default=None, help="override the recipe's number of epochs")
    p.add_argument("--epoch-len", type=int, default=None, help="override the recipe's samples per epoch")
    p.add_argument("--lr", type=float, default=None, help="override the recipe's learning rate")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (GPUs, and CPUs with AMX / AVX512-BF16)")
    p.add_argument("--grad-accumulation", type=int, default=1, help="micro batches per optimizer step")
    p.add_argument("--no-feature-reuse", dest="reuse_features", action="store_false",
                   help="re-run the backbone for every simulated click, as the authors' trainer does")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw (data, clicks, init)")
    p.add_argument("--cpu", action="store_true", help="train on the CPU")
    p.add_argument("--config-path", default=None, help="config.yml (default: the repository's)")
    args = p.parse_args(argv)
    if not args.model_path.is_file():
        p.error(f"model file {str(args.model_path)!r} not found")
    if args.ngpus > 1 and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        p.error(f"--ngpus {args.ngpus}: run one process per GPU with torchrun: "
                f"torchrun --nproc-per-node={args.ngpus} train.py {args.model_path} ...")
    if args.grad_accumulation < 1:
        p.error("--grad-accumulation must be at least 1")
    return args


def resume_checkpoint(exp_path: Path, prefix: str) -> Path:
    """The checkpoint ``--resume-prefix`` names in the experiment (``last``/``latest``: the last one)."""
    prefix = "last_checkpoint" if prefix in ("last", "latest") else prefix
    found = sorted((exp_path / "checkpoints").glob(f"{prefix}*.pth"))
    if len(found) != 1:
        raise SystemExit(f"--resume-prefix {prefix!r}: expected one checkpoint in {exp_path / 'checkpoints'}, "
                         f"found {[p.name for p in found] or 'none'}")
    return found[0]


def settings(args: argparse.Namespace, config: Dict[str, Any]) -> Dict[str, Any]:
    process = dist_utils.init_from_env("gloo" if args.cpu or not torch.cuda.is_available() else "nccl")
    device = dist_utils.device_for(process, cpu=args.cpu, gpu=int(args.gpus.split(",")[0] or 0))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    elif not args.cpu and process.is_main:
        print("CUDA is not available: training on the CPU (pass --cpu to say so)", file=sys.stderr)
    if args.random_split:
        warnings.warn("--random-split has no effect on SkipClick models")
    torch.manual_seed(args.seed)
    cfg = {**config, **{k: v for k, v in vars(args).items() if k != "model_path"}}
    cfg.update(model_path=str(args.model_path), device=str(device), world_size=process.world_size)
    return cfg


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    model_file = load_model_file(args.model_path)
    cfg = settings(args, load_config(args.config_path))
    exps_path = Path(cfg.get("EXPS_PATH") or "experiments")
    model_name = getattr(model_file, "MODEL_NAME", None)
    if args.resume_exp is not None:
        exp_path = find_experiment(exps_path.joinpath(*family_tree(args.model_path, model_name)), args.resume_exp)
        cfg["resume_from"] = str(resume_checkpoint(exp_path, args.resume_prefix))
    exp_path = init_experiment(args.model_path, model_name, exps_path, args.exp_name, args.resume_exp, cfg)
    cfg["EXP_PATH"] = str(exp_path)
    if dist_utils.init_from_env().is_main:
        print(f"experiment: {exp_path}")
    try:
        model_file.main(cfg)
    finally:
        dist_utils.shutdown()


if __name__ == "__main__":
    main()
