"""Iterative training of click models (RITM's scheme; SkipClick's and EMC-Click's recipes).

Per batch: draw how many clicks to simulate (0 to ``max_num_next_clicks``); the model family's
click-training step (``isegm.engine.steps``, chosen by the model's class) makes them without
gradients, each from the previous prediction, then predicts with gradients; the loss takes the
step's outputs. For SkipClick the image encoding does not depend on the clicks, so it is computed
once per batch and reused across the click iterations (twice for a backbone random in train
mode, DINOv3: in eval mode for the simulated clicks, in train mode for the prediction). The authors'
trainer re-runs the whole network, backbone included, for every iteration; ``reuse_features=False``
does that too, for comparison. A loss with several terms (``MultiTermLoss``) is logged term by term.

Reproducible: data draws are keyed by (seed, epoch, index) and click draws by (seed, epoch,
step, rank), so a resumed run (``Trainer.resume``) gives the weights of an uninterrupted one.
Checkpoints are written atomically; the state of the epoch before the last is kept as
``last_checkpoint.pth.previous``, which ``resume`` falls back to when ``last_checkpoint.pth``
cannot be read. Multi-GPU / multi-node runs use torchrun (DistributedDataParallel, one process
per GPU).
"""
from __future__ import annotations

import contextlib
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, DistributedSampler

from ..model.checkpoint import CheckpointError, read_checkpoint_file, save_checkpoint
from ..model.state_dict import load_strict
from ..utils import distributed as dist_utils
from ..utils.files import keep_previous, remove_stale_temp_files
from ..utils.vis import draw_prediction
from .click_simulation import PRED_THRESHOLD, draw_num_clicks
from .steps import ClickTraining, click_step_for

__all__ = ["ClickTraining", "ScalarLog", "Trainer", "TrainerConfig"]   # ClickTraining lives in .steps

# Validation's click draws use this in place of the epoch, apart from every training stream.
VALIDATION_STREAM = 2 ** 31 - 1
# The checkpoints holding the training state: the last epoch's, and the one before it.
LAST_CHECKPOINT = "last_checkpoint.pth"
PREVIOUS_CHECKPOINT = "last_checkpoint.pth.previous"  # not *.pth: never evaluated or listed as a model


@dataclass
class TrainerConfig:
    """How one run trains (the recipe's numbers plus the command line's choices).

    ``batch_size`` is the global batch (split over processes); ``grad_accumulation`` micro
    batches make one optimizer step. ``checkpoint_interval``: ``[(from_epoch, every_n)]``, the
    family's schedule; ``last_checkpoint.pth`` is written after every epoch (the one before it
    kept as ``last_checkpoint.pth.previous``).
    ``next_clicks_gamma``: None draws the number of simulated clicks uniformly from
    ``0 .. max_num_next_clicks`` (SkipClick), a value ``P(k) ∝ gamma ** k`` (EMC-Click, 0.8).
    ``click_polarity``: the simulated clicks' rule (``add_next_clicks``).
    """

    exp_path: Path
    epochs: int
    batch_size: int
    max_num_next_clicks: int = 3
    next_clicks_gamma: Optional[float] = None
    click_polarity: str = "larger"
    workers: int = 4
    seed: int = 0
    reuse_features: bool = True
    bf16: bool = False
    grad_accumulation: int = 1
    checkpoint_interval: Sequence[Tuple[int, int]] = ((0, 20), (50, 1))
    image_dump_interval: int = 300
    log_interval: int = 25
    device: str = "cpu"

    @property
    def checkpoints_path(self) -> Path:
        return Path(self.exp_path) / "checkpoints"

    @property
    def logs_path(self) -> Path:
        return Path(self.exp_path) / "logs"

    @property
    def vis_path(self) -> Path:
        return Path(self.exp_path) / "vis"


class ScalarLog:
    """Training scalars: JSON lines in ``logs/scalars.jsonl`` (always) and TensorBoard event files
    when the ``tensorboard`` package is installed."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "scalars.jsonl"
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(log_dir=str(folder), flush_secs=10)
        except ImportError:
            self.writer = None
            print("note: TensorBoard logs need the tensorboard package (pip install tensorboard); "
                  f"scalars go to {self.path} only")

    def add(self, tag: str, value: float, step: int) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"tag": tag, "value": value, "step": step}) + "\n")
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class Trainer:
    """Trains ``model`` on ``trainset`` (a ``TrainingDataset``) with ``loss``, ``optimizer`` and an
    epoch-wise ``scheduler``; ``valset`` is evaluated after each epoch when given (loss and IoU of
    the final prediction).

    ``loss``: per-sample losses ``[B]`` of the step's logits, or, for a step with named outputs,
    a ``MultiTermLoss`` (per-sample total and terms). Under DDP on GPUs, BatchNorm layers become
    SyncBatchNorm (as the RITM family's trainers do; SkipClick has none).
    """

    def __init__(self, model: nn.Module, config: TrainerConfig, trainset: Any, loss: nn.Module,
                 optimizer: torch.optim.Optimizer, scheduler: Optional[Any] = None,
                 valset: Optional[Any] = None) -> None:
        self.config = config
        self.process = dist_utils.init_from_env("nccl" if config.device.startswith("cuda") else "gloo")
        if config.batch_size % (self.process.world_size * config.grad_accumulation):
            raise ValueError(f"batch size {config.batch_size} must be a multiple of processes x accumulation "
                             f"steps ({self.process.world_size} x {config.grad_accumulation})")
        self.device = torch.device(config.device)
        if self.process.world_size > 1 and self.device.type == "cuda":
            # the same parameter objects, so an optimizer built beforehand still holds them
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model.to(self.device)
        self.step_module: nn.Module = click_step_for(self.model, config)
        if self.process.world_size > 1:
            # Unused parameters exist by design (e.g. the head's up-convs with upsample x1).
            self.step_module = nn.parallel.DistributedDataParallel(
                self.step_module, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True)
        self.trainset, self.valset, self.loss = trainset, valset, loss
        self.optimizer, self.scheduler = optimizer, scheduler
        self.micro_batch = config.batch_size // (self.process.world_size * config.grad_accumulation)
        self.start_epoch = 0
        self.log: Optional[ScalarLog] = None
        # set when resume fell back to last_checkpoint.pth.previous: the next save keeps that one
        self._last_unreadable = False

    # --- data -------------------------------------------------------------------------------

    def _loader(self, dataset: Any, shuffle: bool) -> DataLoader:
        sampler = DistributedSampler(dataset, num_replicas=self.process.world_size, rank=self.process.rank,
                                     shuffle=shuffle, seed=self.config.seed, drop_last=True)
        return DataLoader(dataset, batch_size=self.micro_batch, sampler=sampler, drop_last=True,
                          num_workers=self.config.workers, pin_memory=self.device.type == "cuda",
                          persistent_workers=False)

    # --- the loop ---------------------------------------------------------------------------

    def run(self) -> None:
        """Train from ``start_epoch`` (0, or where ``resume`` left) to ``config.epochs``."""
        if self.process.is_main:
            self.log = ScalarLog(self.config.logs_path)
            self.config.checkpoints_path.mkdir(parents=True, exist_ok=True)
            removed = remove_stale_temp_files(self.config.checkpoints_path)
            if removed:
                print(f"note: removed {len(removed)} temporary files of interrupted checkpoint writes: "
                      f"{', '.join(p.name for p in removed)}", file=sys.stderr)
        try:
            for epoch in range(self.start_epoch, self.config.epochs):
                self.train_epoch(epoch)
                if self.valset is not None:
                    self.validate(epoch)
                if self.scheduler is not None:
                    self.scheduler.step()
                self.save(epoch)
        finally:
            if self.log is not None:
                self.log.close()

    def _autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.config.bf16 \
            else contextlib.nullcontext()

    def _forward(self, batch: Dict[str, Tensor], rng: np.random.Generator
                 ) -> Tuple[Tensor, Dict[str, Tensor], Tensor, Tensor]:
        """Per-sample losses, the loss terms (per sample; empty for a one-term loss), the final
        logits and the points of one micro batch."""
        images, points, gt = (batch[k].to(self.device, non_blocking=True) for k in ("images", "points", "instances"))
        num_clicks = draw_num_clicks(rng, self.config.max_num_next_clicks, self.config.next_clicks_gamma)
        with self._autocast():
            outputs, points = self.step_module(images, points, gt, num_clicks, rng)
        if isinstance(outputs, Tensor):
            return self.loss(outputs.float(), gt), {}, outputs, points
        losses, terms = self.loss(outputs, gt)
        return losses, terms, outputs["instances"], points

    def train_epoch(self, epoch: int) -> float:
        """One pass over the training loader; returns the mean loss (this process's batches)."""
        self.trainset.set_epoch(epoch)
        loader = self._loader(self.trainset, shuffle=True)
        loader.sampler.set_epoch(epoch)
        self.model.train()
        steps = len(loader) // self.config.grad_accumulation
        progress = _progress(loader, f"epoch {epoch}", self.process.is_main)
        total, count, window, term_windows, start = 0.0, 0, [], {}, time.time()
        self.optimizer.zero_grad(set_to_none=True)
        for i, batch in enumerate(progress):
            if i >= steps * self.config.grad_accumulation:
                break
            rng = np.random.default_rng([self.config.seed, epoch, i, self.process.rank])
            last_micro = (i + 1) % self.config.grad_accumulation == 0
            sync = contextlib.nullcontext() if last_micro or self.process.world_size == 1 \
                else self.step_module.no_sync()
            with sync:
                losses, terms, logits, points = self._forward(batch, rng)
                loss = losses.mean()
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"epoch {epoch}, batch {i}: the loss is {loss.item()}; lower the "
                                             "learning rate or check the data")
                (loss / self.config.grad_accumulation).backward()
            if last_micro:
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            # one device sync for the loss and its terms
            value, *term_values = torch.stack([loss.detach(), *(t.detach().mean() for t in terms.values())]).tolist()
            total, count = total + value, count + 1
            window.append(value)
            for name, term_value in zip(terms, term_values):
                term_windows.setdefault(name, []).append(term_value)
            step = epoch * steps + i // self.config.grad_accumulation
            if self.process.is_main and last_micro:
                if hasattr(progress, "set_postfix"):
                    progress.set_postfix(loss=f"{total / count:.4f}")
                if len(window) >= self.config.log_interval * self.config.grad_accumulation:
                    self._log_train(window, term_windows, step, start)
                    window, term_windows, start = [], {}, time.time()
                if self.config.image_dump_interval > 0 and step % self.config.image_dump_interval == 0:
                    self._dump_images(batch, logits, points, step)
        if self.process.is_main and window:
            self._log_train(window, term_windows, epoch * steps + steps - 1, start)
        return total / max(count, 1)

    def _log_train(self, losses: List[float], terms: Dict[str, List[float]], step: int, start: float) -> None:
        self.log.add("Train/loss", float(np.mean(losses)), step)
        for name, values in terms.items():
            self.log.add(f"Train/loss_{name}", float(np.mean(values)), step)
        self.log.add("Train/learning_rate", self.optimizer.param_groups[0]["lr"], step)
        self.log.add("Train/samples_per_second",
                     len(losses) * self.micro_batch * self.process.world_size / max(time.time() - start, 1e-9), step)
        if hasattr(self.loss, "k_sum"):
            self.log.add("Train/nfl_k", self.loss.k_sum, step)
            self.log.add("Train/nfl_m", self.loss.m_max, step)

    @torch.no_grad()
    def validate(self, epoch: int) -> Dict[str, float]:
        """Mean loss and mean IoU (prediction > 0.49 against the target, ignore pixels left out)
        over the validation set, gathered from every process."""
        self.valset.set_epoch(0)   # the same validation samples every epoch
        loader = self._loader(self.valset, shuffle=False)
        self.model.eval()
        sums = torch.zeros(3, dtype=torch.float64)
        for i, batch in enumerate(loader):
            rng = np.random.default_rng([self.config.seed, VALIDATION_STREAM, i, self.process.rank])
            losses, _, logits, _ = self._forward(batch, rng)
            gt = batch["instances"].to(self.device)
            pred, valid = torch.sigmoid(logits.float()) > PRED_THRESHOLD, gt != -1
            obj = gt > 0.5
            inter = (pred & obj & valid).flatten(1).sum(1).double()
            union = ((pred | obj) & valid).flatten(1).sum(1).double()
            ious = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
            sums += torch.stack([losses.double().sum().cpu(), ious.sum().cpu(), torch.tensor(float(len(ious)))])
        sums = sum(dist_utils.all_gather_object(sums))
        metrics = {"loss": (sums[0] / sums[2]).item(), "iou": (sums[1] / sums[2]).item()} if sums[2] else {}
        if self.process.is_main:
            for name, value in metrics.items():
                self.log.add(f"Val/{name}", value, epoch)
        self.model.train()
        return metrics

    def _dump_images(self, batch: Dict[str, Tensor], logits: Tensor, points: Tensor, step: int) -> None:
        """``vis/train/<step>.jpg``: the first sample's image with its clicks and predicted mask,
        the probability map, and the target."""
        image = (batch["images"][0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        probs = torch.sigmoid(logits[0, 0].detach().float()).cpu().numpy()
        half = points.shape[1] // 2
        clicks = [(y, x, row < half) for row, (y, x, _) in enumerate(points[0].tolist()) if x >= 0]
        target = batch["instances"][0, 0].numpy()
        target_rgb = np.repeat(np.where(target < 0, 64, target * 255).astype(np.uint8)[..., None], 3, axis=2)
        picture = np.hstack([draw_prediction(image, probs, clicks, PRED_THRESHOLD), target_rgb])
        folder = self.config.vis_path / "train"
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{step:06d}.jpg"), picture[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 85])

    # --- checkpoints ------------------------------------------------------------------------

    def training_state(self, epoch: int) -> Dict[str, Any]:
        """Everything besides the weights that the next epoch depends on."""
        state = {"epoch": epoch, "optimizer": self.optimizer.state_dict(), "torch_rng": torch.get_rng_state(),
                 "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self.config).items()}}
        state["config"]["checkpoint_interval"] = [list(x) for x in self.config.checkpoint_interval]
        if self.scheduler is not None:
            state["scheduler"] = {k: (dict(v) if isinstance(v, dict) else v)
                                  for k, v in self.scheduler.state_dict().items()}
        if torch.cuda.is_available() and self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def save(self, epoch: int) -> None:
        """``last_checkpoint.pth`` (weights and training state) every epoch, the one it replaces
        kept as ``last_checkpoint.pth.previous``; ``<epoch>.pth`` (weights) on the checkpoint
        schedule; rank 0 writes, atomically."""
        if self.process.is_main:
            folder = self.config.checkpoints_path
            if not self._last_unreadable:
                keep_previous(folder / LAST_CHECKPOINT, folder / PREVIOUS_CHECKPOINT)
            self._last_unreadable = False
            save_checkpoint(self.model, folder / LAST_CHECKPOINT, epoch=epoch,
                            training_state=self.training_state(epoch))
            every = [n for start, n in self.config.checkpoint_interval if start <= epoch][-1:] or [0]
            if every[0] > 0 and epoch % every[0] == 0 or epoch == self.config.epochs - 1:
                save_checkpoint(self.model, folder / f"{epoch:03d}.pth", epoch=epoch)
        dist_utils.barrier()

    def resume(self, path: Path) -> None:
        """Continue from a ``last_checkpoint.pth``: weights, optimizer, scheduler, RNG and the
        next epoch, so the run goes on as if it had never stopped. When ``last_checkpoint.pth``
        cannot be read (a damaged disk, a copy cut short), ``last_checkpoint.pth.previous`` beside
        it is used, with a warning naming both; errors are ``CheckpointError`` naming the file."""
        path = Path(path)
        source, state = self._read_resume_state(path)
        training = state["training_state"]
        load_strict(self.model, state["state_dict"], source, "the model this run builds")
        try:
            self.optimizer.load_state_dict(training["optimizer"])
            if self.scheduler is not None and "scheduler" in training:
                self.scheduler.load_state_dict(training["scheduler"])
            torch.set_rng_state(training["torch_rng"])
            if "cuda_rng" in training and self.device.type == "cuda":
                torch.cuda.set_rng_state(training["cuda_rng"], self.device)
            self.start_epoch = int(training["epoch"]) + 1
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise CheckpointError(source, f"its training state does not fit this run's optimizer or scheduler "
                                          f"({type(err).__name__}: {err})",
                                  "resume with the model file and settings the run started with") from err

    def _read_resume_state(self, path: Path) -> Tuple[str, Dict[str, Any]]:
        """The file ``resume`` continues from and its content: ``path``, or for a
        ``last_checkpoint.pth`` that cannot be read, the previous one."""
        candidates = [path] + ([path.with_name(PREVIOUS_CHECKPOINT)] if path.name == LAST_CHECKPOINT else [])
        failed: Optional[CheckpointError] = None
        for candidate in candidates:
            if failed is not None and not candidate.is_file():
                break
            try:
                state = read_checkpoint_file(candidate)
            except CheckpointError as err:
                failed = failed or err
                continue
            if not (isinstance(state, dict) and isinstance(state.get("state_dict"), dict)):
                raise CheckpointError(candidate, "holds no model state dict", "resume from an experiment's "
                                      "checkpoints/last_checkpoint.pth")
            if "training_state" not in state:
                raise CheckpointError(candidate, "holds weights only (no training state)",
                                      "start a new run from it with --weights instead of resuming")
            self._last_unreadable = failed is not None
            if failed is not None and self.process.is_main:
                print(f"warning: cannot resume from {failed.path} ({failed.problem}); resuming from the previous "
                      f"checkpoint {candidate} instead", file=sys.stderr)
            return str(candidate), state
        raise failed


def _progress(iterable: Any, desc: str, show: bool) -> Any:
    if not show:
        return iterable
    from tqdm import tqdm
    return tqdm(iterable, desc=desc, unit="batch", dynamic_ncols=True)
