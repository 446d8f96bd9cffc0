"""The whole loop on a laptop, nothing to download: train the tiny SkipClick on generated
winter-sports scenes for a fixed time, evaluate it with the papers' protocol on held-out scenes
beside the same model untrained and a classical baseline, and write a report.

    python scripts/quickstart.py --out quickstart

Training gets a time budget (``--train-seconds``, 3 minutes by default): a few training steps are
timed first, and the recipe's epochs are sized so that the run fits the budget on this machine
(``--epoch-len`` fixes the size instead). The precision follows the CPU: bf16 autocast where it
multiplies bf16 natively, else fp32.

Each step is the library's own command line, printed before it runs, so every step can be rerun
or changed by hand: ``train.py`` with ``models/quickstart/tiny.py``, ``scripts/evaluate_model.py``
for each method, ``scripts/make_tables.py --miou-plot``. The report folder gets ``README.md``
(the NoC table, the precision and budget chosen, what was run), ``miou.png`` (mIoU after k
clicks), ``examples.png`` (clicks and masks of the trained model) and every run's results JSON.
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
from typing import Dict, List, NamedTuple, Optional

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from isegm.data import get_dataset  # noqa: E402
from isegm.engine.experiment import load_model_file  # noqa: E402
from isegm.engine.recipes import Recipe, build_datasets, build_loss  # noqa: E402
from isegm.engine.steps import click_step_for  # noqa: E402
from isegm.engine.trainer import TrainerConfig  # noqa: E402
from isegm.inference.evaluation import evaluate_sample  # noqa: E402
from isegm.inference.predictor import get_predictor  # noqa: E402
from isegm.model import load_checkpoint, save_checkpoint  # noqa: E402
from isegm.utils.device import native_reduced_precision  # noqa: E402
from isegm.utils.vis import draw_prediction  # noqa: E402

MODEL_FILE = REPO / "models" / "quickstart" / "tiny.py"
EVAL_DATASET = "WinterSportsCloseup"   # held-out close-ups of skiers and snowboarders
EVAL_MODE = "fixed112"                 # the whole 224 px scene seen at the 112 px the model trained on
MODELS = ("trained", "untrained")
BASELINES = ("grabcut", "random_walker")
TRAIN_SECONDS = 180.0                  # the default budget: the whole run in about 6 min on 2 cores
# Fewer samples per epoch did not learn to segment (9 x 32: empty masks; 9 x 128: mIoU@5 0.57),
# so a budget never buys less, on a slow or busy machine the run takes longer instead.
MIN_EPOCH_LEN = 128


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "quickstart", help="folder for everything the run makes "
                   "(default: %(default)s)")
    p.add_argument("--train-seconds", type=float, default=TRAIN_SECONDS,
                   help="training budget in wall-clock seconds; the epochs are sized from a few timed training "
                        "steps to fit it (default: %(default)s; longer trains a better model)")
    p.add_argument("--epoch-len", type=int, default=None,
                   help="samples per epoch, fixed instead of sized from --train-seconds (the recipe's: 512)")
    p.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs (default: the recipe's)")
    p.add_argument("--instances", type=int, default=24, help="held-out instances to evaluate (default: %(default)s)")
    p.add_argument("--n-clicks", type=int, default=20, help="click limit per instance (default: %(default)s)")
    p.add_argument("--baselines", nargs="*", choices=BASELINES, default=["grabcut"],
                   help="model-free methods evaluated beside the models (default: grabcut; random_walker needs "
                        "scikit-image and takes about 2 more CPU minutes)")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                   help="compute threads while training (default: this machine's cores, %(default)s)")
    p.add_argument("--workers", type=int, default=1,
                   help="data-loading processes while training (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights and every draw (default: 0)")
    p.add_argument("--dtype", choices=("auto", "fp32", "bf16"), default="auto",
                   help="training precision; auto: bf16 autocast where the CPU multiplies bf16 natively "
                        "(AMX / AVX512-BF16: about 1.4x faster there), else fp32 (default: auto)")
    return p.parse_args(argv)


def show(cmd: List[str], env: Optional[Dict[str, str]] = None, suffix: str = "") -> None:
    """Print a step's command line (with the environment it sets), so it can be rerun by hand."""
    prefix = "".join(f"{k}={shlex.quote(v)} " for k, v in (env or {}).items())
    print("\n$ " + prefix + " ".join(shlex.quote(str(c)) for c in cmd) + suffix, flush=True)


def run(cmd: List[str], env: Optional[Dict[str, str]] = None) -> None:
    """Run one step, showing its command line (and its own output)."""
    show(cmd, env)
    subprocess.run([str(c) for c in cmd], check=True, cwd=REPO, env={**os.environ, **(env or {})})


def training_precision(choice: str) -> str:
    """``choice``, with ``auto`` resolved for this CPU (bf16 GEMMs without hardware support are
    many times slower than fp32)."""
    if choice != "auto":
        return choice
    return "bf16" if native_reduced_precision(torch.device("cpu"), torch.bfloat16) else "fp32"


class Budget(NamedTuple):
    """How much the run trains: ``epochs`` of ``epoch_len`` samples, and why."""

    epochs: int
    epoch_len: int
    seconds_per_sample: Optional[float]   # measured here (None when --epoch-len fixed the size)
    reason: str

    @property
    def samples(self) -> int:
        return self.epochs * self.epoch_len


def seconds_per_sample(recipe: Recipe, precision: str, threads: int, seed: int = 0, steps: int = 6) -> float:
    """Wall-clock seconds per training sample on this machine: the median of ``steps`` of the
    recipe's training steps (its batch, loss, backward, Adam, data rendering included; 1 and 2
    simulated clicks in turn, the mean of training's draw from 0 to 3) after one warm-up step,
    with ``threads`` threads. The median ignores a step slowed by a passing load."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        model = load_model_file(MODEL_FILE).init_model({}).train()
        trainset, _ = build_datasets(recipe, {}, seed=seed)
        trainset.set_epoch(0)
        batches = iter(DataLoader(trainset, batch_size=recipe.batch_size, shuffle=True, num_workers=0))
        config = TrainerConfig(exp_path=Path("."), epochs=1, batch_size=recipe.batch_size,
                               max_num_next_clicks=recipe.max_num_next_clicks, click_polarity=recipe.click_polarity)
        step, loss = click_step_for(model, config), build_loss(recipe)
        optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr)
        rng = np.random.default_rng(seed)
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
        times = []
        for i in range(steps + 1):
            start = time.perf_counter()
            batch = next(batches)
            with autocast:
                logits, _ = step(batch["images"], batch["points"], batch["instances"], 1 + i % 2, rng)
            loss(logits.float(), batch["instances"]).mean().backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - start)
        return float(np.median(times[1:])) / recipe.batch_size
    finally:
        torch.set_num_threads(previous)


def choose_budget(args: argparse.Namespace, recipe: Recipe, precision: str) -> Budget:
    """The training size: ``--epoch-len`` when given, else as many whole batches per epoch as
    fit ``--train-seconds`` at the measured speed, and at least ``MIN_EPOCH_LEN`` (the recipe's
    epochs and schedule kept, so a longer budget means more samples per epoch)."""
    epochs = args.epochs or recipe.epochs
    if args.epoch_len is not None:
        return Budget(epochs, args.epoch_len, None, f"--epoch-len {args.epoch_len} fixed the size")
    seconds = seconds_per_sample(recipe, precision, args.threads, args.seed)
    fits = int(args.train_seconds / seconds / epochs / recipe.batch_size) * recipe.batch_size
    reason = f"{args.train_seconds:.0f} s of training at the {seconds:.3f} s per sample measured here"
    if fits < MIN_EPOCH_LEN:
        reason += (f", raised to the {MIN_EPOCH_LEN} samples per epoch below which the model does not learn to "
                   f"segment (about {epochs * MIN_EPOCH_LEN * seconds:.0f} s)")
    return Budget(epochs, max(fits, MIN_EPOCH_LEN), seconds, reason)


def evaluate(args: argparse.Namespace, env: Dict[str, str], sources: Dict[str, List[str]]) -> Dict[str, Path]:
    """``evaluate_model.py`` for each method, all at once, one thread each (the baselines are
    single-threaded anyway), each one's output in ``evaluation/<method>/log.txt``; returns each
    method's results JSON."""
    jobs, env = {}, {**env, "OMP_NUM_THREADS": "1"}
    for method, source in sources.items():
        logs = args.out / "evaluation" / method
        logs.mkdir(parents=True)
        cmd = [str(c) for c in (
            sys.executable, "scripts/evaluate_model.py", "NoBRS", *source, "--datasets", EVAL_DATASET,
            "--eval-mode", EVAL_MODE, "--suppress-zoom", "--device", "cpu", "--n-clicks", args.n_clicks, "--limit",
            args.instances, "--model-name", method, "--logs-path", logs, "--no-progress")]
        show(cmd, env, f"  > {logs / 'log.txt'}")
        with open(logs / "log.txt", "w") as log:
            jobs[method] = (subprocess.Popen(cmd, cwd=REPO, env={**os.environ, **env}, stdout=log,
                                             stderr=subprocess.STDOUT), logs)
    failed = [method for method, (job, _) in jobs.items() if job.wait() != 0]
    for method in failed:
        print(f"\nevaluation of {method} failed:\n{(jobs[method][1] / 'log.txt').read_text()}", file=sys.stderr)
    if failed:
        raise SystemExit(f"the evaluation of {', '.join(failed)} failed (logs above)")
    return {method: next(logs.rglob("results_*.json")) for method, (_, logs) in jobs.items()}


def metrics(path: Path) -> Dict:
    """The evaluation dataset's metrics in a results JSON."""
    return json.loads(path.read_text())["datasets"][EVAL_DATASET]


def summary_table(results: Dict[str, Path], n_clicks: int) -> str:
    """NoC@85/90/95, instances still below 90 % at the click limit, and mIoU after 1 / 5 clicks."""
    lines = ["| method | NoC@85 | NoC@90 | NoC@95 | >=%d@90 | mIoU@1 | mIoU@5 |" % n_clicks,
             "|---|---|---|---|---|---|---|"]
    for method, path in results.items():
        m = metrics(path)
        curve = m["miou_curve"]
        lines.append(f"| {method} | {m['noc']['0.85']:.2f} | {m['noc']['0.90']:.2f} | {m['noc']['0.95']:.2f} | "
                     f"{m['over_max']['0.90']} | {curve[0]:.3f} | {curve[min(4, len(curve) - 1)]:.3f} |")
    return "\n".join(lines)


def gain(results: Dict[str, Path]) -> str:
    """One sentence: how far training moved NoC@85 and mIoU@5 from the untrained weights."""
    trained, untrained = metrics(results["trained"]), metrics(results["untrained"])
    k = min(5, len(trained["miou_curve"])) - 1
    return (f"Training moved NoC@85 from {untrained['noc']['0.85']:.2f} to {trained['noc']['0.85']:.2f} clicks and "
            f"mIoU after {k + 1} clicks from {untrained['miou_curve'][k]:.3f} to {trained['miou_curve'][k]:.3f}.")


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


def precision_reason(precision: str, choice: str) -> str:
    """Why the run trains in ``precision``."""
    if choice != "auto":
        return f"--dtype {choice}"
    if precision == "bf16":
        return "this CPU multiplies bf16 natively (AMX / AVX512-BF16), where bf16 autocast trains faster"
    return "this CPU has no bf16 units (AMX / AVX512-BF16), so bf16 would be emulated and many times slower"


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    start = time.time()
    out = args.out.resolve()
    args.out = out
    if out.exists():
        shutil.rmtree(out)
    (out / "report").mkdir(parents=True)
    # Outputs go under --out whatever config.yml says (config keys from the environment).
    env = {"SKIPCLICK_EXPS_PATH": str(out / "experiments"), "SKIPCLICK_CHECKPOINTS_PATH": str(out / "checkpoints")}
    recipe = load_model_file(MODEL_FILE).RECIPE
    precision = training_precision(args.dtype)

    # The untrained model: the weights training starts from (train.py seeds the same way).
    torch.manual_seed(args.seed)
    untrained = out / "checkpoints" / "untrained.pth"
    untrained.parent.mkdir(parents=True)
    save_checkpoint(load_model_file(MODEL_FILE).init_model({}), untrained)

    budget = choose_budget(args, recipe, precision)
    print(f"training budget: {budget.epochs} epochs of {budget.epoch_len} samples ({budget.reason}); "
          f"precision {precision} ({precision_reason(precision, args.dtype)})", flush=True)
    train = [sys.executable, "train.py", MODEL_FILE, "--device", "cpu", "--dtype", precision, "--exp-name", "quickstart",
             "--workers", args.workers, "--seed", args.seed, "--epochs", budget.epochs, "--epoch-len", budget.epoch_len]
    train_start = time.time()
    run(train, {**env, "OMP_NUM_THREADS": str(args.threads)})
    train_seconds = time.time() - train_start
    trained = next((out / "experiments").rglob("last_checkpoint.pth"))

    sources = {"trained": ["--checkpoint", trained], "untrained": ["--checkpoint", untrained],
               **{name: ["--baseline", name] for name in args.baselines}}
    results = evaluate(args, env, sources)
    report = out / "report"
    run([sys.executable, "scripts/make_tables.py", *results.values(), "--labels", *results, "--table", "4",
         "--datasets", f"4={EVAL_DATASET}", "--miou-plot", report / "miou.png"])
    examples(trained, report / "examples.png")
    for method, path in results.items():
        shutil.copy(path, report / f"results_{method}.json")

    table = summary_table(results, args.n_clicks)
    total = time.time() - start
    speed = f", {budget.seconds_per_sample:.3f} s per sample measured before training" \
        if budget.seconds_per_sample else ""
    (report / "README.md").write_text(
        "# Quickstart report\n\n"
        f"Tiny SkipClick (`{MODEL_FILE.relative_to(REPO)}`) trained from scratch on generated winter-sports "
        f"scenes, then evaluated with the papers' protocol (RITM click simulator, up to {args.n_clicks} clicks, "
        f"flip TTA, probability fed back) on the first {args.instances} held-out instances of `{EVAL_DATASET}`, "
        f"beside the same model untrained and {len(args.baselines)} classical baseline(s).\n\n"
        f"- Precision: {precision}, because {precision_reason(precision, args.dtype)}.\n"
        f"- Training budget: {budget.epochs} epochs of {budget.epoch_len} samples ({budget.samples} samples, "
        f"batch {recipe.batch_size}, {args.threads} threads), chosen from {budget.reason}; training took "
        f"{train_seconds / 60:.1f} min{speed}.\n"
        f"- Whole run: {total / 60:.1f} min. A longer `--train-seconds` trains a better model.\n\n"
        f"{gain(results)}\n\n{table}\n\n![mIoU after k clicks](miou.png)\n\n"
        "Examples (trained model after 1, 3 and 5 clicks, then the target):\n\n![examples](examples.png)\n\n"
        f"Checkpoint: `{trained}`\n")
    print(f"\n{gain(results)}\n\n{table}\n\nreport: {report} ({total / 60:.1f} min in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
