"""The whole loop on a laptop, nothing to download: train the tiny SkipClick on generated
winter-sports scenes, evaluate it with the papers' protocol on held-out scenes beside the same
model untrained and the two classical baselines, and write a report.

    python scripts/quickstart.py --out quickstart

Each step is the library's own command line, printed before it runs, so every step can be rerun
or changed by hand: ``train.py`` with ``models/quickstart/tiny.py``, ``scripts/evaluate_model.py``
for each method, ``scripts/make_tables.py --miou-plot``. The report folder gets ``README.md``
(the NoC table and what was run), ``miou.png`` (mIoU after k clicks), ``examples.png`` (clicks
and masks of the trained model) and every run's results JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from isegm.data import get_dataset  # noqa: E402
from isegm.engine.experiment import load_model_file  # noqa: E402
from isegm.inference.evaluation import evaluate_sample  # noqa: E402
from isegm.inference.predictor import get_predictor  # noqa: E402
from isegm.model import load_checkpoint, save_checkpoint  # noqa: E402
from isegm.utils.device import native_reduced_precision  # noqa: E402
from isegm.utils.vis import draw_prediction  # noqa: E402

MODEL_FILE = REPO / "models" / "quickstart" / "tiny.py"
EVAL_DATASET = "WinterSportsCloseup"   # held-out close-ups of skiers and snowboarders
EVAL_MODE = "fixed112"                 # the whole 224 px scene seen at the 112 px the model trained on
METHODS = ("trained", "untrained", "grabcut", "random_walker")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "quickstart", help="folder for everything the run makes")
    p.add_argument("--instances", type=int, default=24, help="held-out instances to evaluate (scene by scene)")
    p.add_argument("--n-clicks", type=int, default=20)
    p.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs (a shorter run)")
    p.add_argument("--epoch-len", type=int, default=None, help="override the recipe's samples per epoch")
    p.add_argument("--workers", type=int, default=1, help="data-loading processes while training")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="training precision; auto: bf16 autocast where the CPU multiplies bf16 natively "
                        "(AMX / AVX512-BF16: about 1.4x faster here), else fp32")
    return p.parse_args(argv)


def show(cmd: List[str], suffix: str = "") -> None:
    """Print a step's command line, so it can be rerun by hand."""
    print("\n$ " + " ".join(shlex.quote(str(c)) for c in cmd) + suffix, flush=True)


def run(cmd: List[str]) -> None:
    """Run one step, showing its command line (and its own output)."""
    show(cmd)
    subprocess.run([str(c) for c in cmd], check=True, cwd=REPO)


def training_precision(choice: str) -> str:
    """``choice``, with ``auto`` resolved for this CPU (bf16 GEMMs without hardware support are
    many times slower than fp32)."""
    if choice != "auto":
        return choice
    return "bf16" if native_reduced_precision(torch.device("cpu"), torch.bfloat16) else "fp32"


def evaluate(args: argparse.Namespace, config: Path, sources: Dict[str, List[str]]) -> Dict[str, Path]:
    """``evaluate_model.py`` for each method, all at once, one thread each (the baselines are
    single-threaded anyway), each one's output in ``evaluation/<method>/log.txt``; returns each
    method's results JSON."""
    jobs, env = {}, {**os.environ, "OMP_NUM_THREADS": "1"}
    for method, source in sources.items():
        logs = args.out / "evaluation" / method
        logs.mkdir(parents=True)
        cmd = [str(c) for c in (
            sys.executable, "scripts/evaluate_model.py", "NoBRS", *source, "--datasets", EVAL_DATASET,
            "--eval-mode", EVAL_MODE, "--suppress-zoom", "--cpu", "--n-clicks", args.n_clicks, "--limit",
            args.instances, "--model-name", method, "--config-path", config, "--logs-path", logs, "--no-progress")]
        show(cmd, f"  > {logs / 'log.txt'}")
        with open(logs / "log.txt", "w") as log:
            jobs[method] = (subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT), logs)
    failed = [method for method, (job, _) in jobs.items() if job.wait() != 0]
    for method in failed:
        print(f"\nevaluation of {method} failed:\n{(jobs[method][1] / 'log.txt').read_text()}", file=sys.stderr)
    if failed:
        raise SystemExit(f"the evaluation of {', '.join(failed)} failed (logs above)")
    return {method: next(logs.rglob("results_*.json")) for method, (_, logs) in jobs.items()}


def summary_table(results: Dict[str, Path], n_clicks: int) -> str:
    """NoC@85/90/95, instances still below 90 % at the click limit, and mIoU after 1 / 5 clicks."""
    lines = ["| method | NoC@85 | NoC@90 | NoC@95 | >=%d@90 | mIoU@1 | mIoU@5 |" % n_clicks,
             "|---|---|---|---|---|---|---|"]
    for method, path in results.items():
        m = json.loads(path.read_text())["datasets"][EVAL_DATASET]
        curve = m["miou_curve"]
        lines.append(f"| {method} | {m['noc']['0.85']:.2f} | {m['noc']['0.90']:.2f} | {m['noc']['0.95']:.2f} | "
                     f"{m['over_max']['0.90']} | {curve[0]:.3f} | {curve[min(4, len(curve) - 1)]:.3f} |")
    return "\n".join(lines)


def examples(checkpoint: Path, path: Path, n: int = 4, shown=(1, 3, 5)) -> None:
    """A grid: for ``n`` held-out instances, the trained model's mask and clicks after 1, 3 and 5
    clicks (the evaluation's simulated user), then the target."""
    dataset = get_dataset(EVAL_DATASET, {})
    predictor = get_predictor(load_checkpoint(checkpoint), EVAL_MODE, EVAL_DATASET, suppress_zoom=True)
    rows = []
    for index in range(n):
        sample = dataset.get_sample(int(index))
        tiles: Dict[int, np.ndarray] = {}

        def keep(image, gt, probs, sample_id, click_index, clicks):
            if click_index + 1 in shown:
                picture = draw_prediction(image, probs, [(*c.coords, c.is_positive) for c in clicks], 0.49)
                tiles[click_index + 1] = picture[:, : image.shape[1]]

        evaluate_sample(sample.image, sample.gt_mask(0), predictor, max_iou_thr=1.01, max_clicks=max(shown),
                        callback=keep)
        target = np.repeat((sample.gt_mask(0) == 1).astype(np.uint8)[..., None] * 255, 3, axis=2)
        rows.append(np.hstack([tiles[k] for k in shown] + [target]))
    cv2.imwrite(str(path), np.vstack(rows)[:, :, ::-1])


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    start = time.time()
    out = args.out.resolve()
    args.out = out
    if out.exists():
        shutil.rmtree(out)
    (out / "report").mkdir(parents=True)
    config = out / "config.yml"
    config.write_text(f"EXPS_PATH: {out / 'experiments'}\nCHECKPOINTS_PATH: {out / 'checkpoints'}\n")

    # The untrained model: the weights training starts from (train.py seeds the same way).
    torch.manual_seed(args.seed)
    untrained = out / "checkpoints" / "untrained.pth"
    untrained.parent.mkdir(parents=True)
    save_checkpoint(load_model_file(MODEL_FILE).init_model({}), untrained)

    train = [sys.executable, "train.py", MODEL_FILE, "--cpu", "--exp-name", "quickstart", "--config-path", config,
             "--workers", args.workers, "--seed", args.seed]
    for flag, value in (("--epochs", args.epochs), ("--epoch-len", args.epoch_len)):
        if value is not None:
            train += [flag, value]
    precision = training_precision(args.precision)
    if precision == "bf16":
        train.append("--bf16")
    run(train)
    trained = next((out / "experiments").rglob("last_checkpoint.pth"))
    train_seconds = time.time() - start

    results = evaluate(args, config, {"trained": ["--checkpoint", trained], "untrained": ["--checkpoint", untrained],
                                      "grabcut": ["--baseline", "grabcut"],
                                      "random_walker": ["--baseline", "random_walker"]})
    report = out / "report"
    run([sys.executable, "scripts/make_tables.py", *results.values(), "--labels", *results, "--table", "4",
         "--datasets", f"4={EVAL_DATASET}", "--miou-plot", report / "miou.png"])
    examples(trained, report / "examples.png")
    for method, path in results.items():
        shutil.copy(path, report / f"results_{method}.json")

    table = summary_table(results, args.n_clicks)
    total = time.time() - start
    (report / "README.md").write_text(
        "# Quickstart report\n\n"
        f"Tiny SkipClick (`{MODEL_FILE.relative_to(REPO)}`) trained from scratch on generated winter-sports "
        f"scenes in {train_seconds / 60:.1f} min ({precision} on the CPU), then evaluated with the papers' "
        f"protocol (RITM click simulator, up to {args.n_clicks} clicks, flip TTA, probability fed back) on the first {args.instances} held-out "
        f"instances of `{EVAL_DATASET}`, beside the same model untrained and two classical baselines. "
        f"Whole run: {total / 60:.1f} min.\n\n"
        f"{table}\n\n![mIoU after k clicks](miou.png)\n\n"
        "Examples (trained model after 1, 3 and 5 clicks, then the target):\n\n![examples](examples.png)\n\n"
        f"Checkpoint: `{trained}`\n")
    print(f"\n{table}\n\nreport: {report} ({total / 60:.1f} min in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
