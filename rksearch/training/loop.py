"""One trial: seed, build the model by name, train with the paper's recipe, evaluate every
epoch, checkpoint, report; at the end, evaluate the test set once.

Validation selects, test reports.  Every epoch is scored on the validation split only; that
score is all the search and the scheduler see (`best_val_acc`, `val_acc`) and it picks the best
epoch (the latest of equals: the same one Tune keeps by `checkpoint_score_attribute`).  The
test split is read once, after the last epoch, on the best epoch's weights (`test_acc`) and on
the final ones (`test_acc_final`), and only the last report carries those.

`run_trial` is a plain function: the engine wraps it for Ray Tune (its `report` callback
forwards to ``tune.report``), and a notebook calls it directly.  Per epoch it writes the
checkpoint *before* reporting, so whatever the reporter does next (Tune persisting the
checkpoint, a scheduler stopping the trial) the checkpoint is complete.

    >>> result = run_trial({"model": {"name": "ERKNet-1x1 1x1 1x1", "knobs": {"k": 8}},
    ...                     "data": {"dataset": "digits"}, "optim": {"epochs": 2}})
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rksearch.models import build
from rksearch.training import checkpoint as ckpt
from rksearch.training import failures
from rksearch.training.config import TrialConfig
from rksearch.training.data import BatchSource, TrialData
from rksearch.training.data import load as load_data
from rksearch.training.runtime import (
    Runtime,
    activated,
    compiles,
    resolve,
    seed_everything,
)
from rksearch.training.status import TrialStatus

log = logging.getLogger(__name__)

Reporter = Callable[[dict[str, Any], "Path | None"], None]
#: steps between checks of the running loss for NaN/inf (each check syncs a GPU)
DIVERGENCE_CHECK_EVERY = 20


@dataclass
class TrialResult:
    #: COMPLETED, or FAILED (diverged)
    status: TrialStatus
    error: str | None
    epochs: int
    final: dict[str, Any]
    best_val_acc: float
    device: str
    params: int = 0
    history: list[dict[str, Any]] = field(default_factory=list, repr=False)
    best_epoch: int = 0
    test_acc: float = math.nan
    test_acc_final: float = math.nan


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


def run_trial(config: TrialConfig | dict[str, Any], report: Reporter | None = None,
              checkpoint_dir: Path | None = None, resume_from: Path | None = None, *,
              durable: bool = True) -> TrialResult:
    """Train and evaluate one model; see the module docstring.

    `report(metrics, checkpoint_dir)` is called after every epoch, once that epoch's
    checkpoint is on disk (``None`` when no `checkpoint_dir` is given or the trial failed).
    ``durable=False``: `checkpoint_dir` only stages each checkpoint for `report` to copy
    elsewhere, so it is not fsynced (`checkpoint.save`).  `resume_from` is a directory holding
    a ``checkpoint.pt``: training goes on at the next epoch.  A diverging trial reports once
    with ``trial_status: "failed"`` and returns.
    """
    cfg = config if isinstance(config, TrialConfig) else TrialConfig.model_validate(config)
    runtime = resolve(cfg.runtime)
    with activated(runtime):
        seed_everything(cfg.seed)
        data = load_data(cfg.data, seed=cfg.seed, device=runtime.device)
        trainer = _Trainer(cfg, runtime, data)
        if resume_from is not None:
            trainer.restore(ckpt.load(Path(resume_from)))
        return trainer.run(report, Path(checkpoint_dir) if checkpoint_dir is not None else None, durable)


def build_model(cfg: TrialConfig, data: TrialData) -> nn.Module:
    """The trial's model, with the data set's stem and classes unless the knobs say otherwise."""
    knobs = {"stem": data.stem, "num_classes": data.num_classes, **cfg.model.knobs}
    return build(cfg.model.name, memory_efficient=cfg.runtime.memory_efficient, **knobs)


class _Trainer:
    """The state of one trial between epochs: model, optimiser, schedule, scaler, progress."""

    def __init__(self, cfg: TrialConfig, runtime: Runtime, data: TrialData) -> None:
        self.cfg, self.runtime, self.data = cfg, runtime, data
        self.model = build_model(cfg, data).to(runtime.device, memory_format=runtime.memory_format)
        if compiles(cfg.runtime, runtime, cfg.optim.epochs):
            self.model.compile()  # in place: the state dict keeps its names, so checkpoints do not change
        self.params = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        o = cfg.optim
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=o.lr, momentum=o.momentum,
                                         nesterov=o.nesterov, weight_decay=o.weight_decay)
        self.scheduler: torch.optim.lr_scheduler.LRScheduler = (
            torch.optim.lr_scheduler.MultiStepLR(self.optimizer, o.milestone_epochs(), o.gamma)
            if o.schedule == "step" else torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, o.epochs)
        )
        self.scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.amp_dtype == torch.float16)
        # NaN until an epoch is evaluated: a trial that never measured anything has no accuracy
        self.epoch, self.best_val_acc, self.best_epoch = 0, math.nan, 0
        # the best epoch's weights (on the CPU) once a later epoch has replaced the model's
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.last: dict[str, Any] = {}
        log.info("trial: %s (%d params) on %s", cfg.model.name, self.params, runtime.describe())

    # ---- checkpoints ---------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch, "best_val_acc": self.best_val_acc, "metrics": self.last,
            # the best epoch's weights, unless they are the model's own (the last epoch was best)
            "best_epoch": self.best_epoch, "best_model": None if self.best_epoch == self.epoch else self.best_weights,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "rng": ckpt.rng_state(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        ckpt.set_rng_state(state["rng"])
        self.epoch, self.best_val_acc, self.last = state["epoch"], state["best_val_acc"], state["metrics"]
        self.best_epoch = state["best_epoch"]
        self.best_weights = state["best_model"] or _cpu_copy(self.model.state_dict())
        log.info("resumed after epoch %d (best val acc %.4f)", self.epoch, self.best_val_acc)

    # ---- the loop ------------------------------------------------------------------------
    def run(self, report: Reporter | None, checkpoint_dir: Path | None, durable: bool = True) -> TrialResult:
        history: list[dict[str, Any]] = []
        for epoch in range(self.epoch + 1, self.cfg.optim.epochs + 1):
            started = time.perf_counter()
            lr = self.optimizer.param_groups[0]["lr"]
            try:
                train_loss, train_acc, train_seconds = self._train_epoch(epoch)
                val_loss, val_acc = evaluate(self.model, self.data.val, self.runtime)
                if not math.isfinite(val_loss):
                    raise Diverged(f"validation loss is {val_loss} after epoch {epoch}")
            except Diverged as exc:
                metrics = self._metrics(epoch, lr, started, status=TrialStatus.FAILED, error=str(exc),
                                        failure=failures.DIVERGED)
                log.warning("trial failed: %s", exc)
                if report is not None:
                    report(metrics, None)
                return self._result(TrialStatus.FAILED, str(exc), history + [metrics])
            self.scheduler.step()
            self._select(epoch, val_acc)
            status = TrialStatus.COMPLETED if epoch == self.cfg.optim.epochs else TrialStatus.RUNNING
            self.last = self._metrics(epoch, lr, started, status=status, train_loss=train_loss,
                                      train_acc=train_acc, val_loss=val_loss, val_acc=val_acc,
                                      images_per_s=self.data.train.num_samples / train_seconds)
            if status == TrialStatus.COMPLETED:
                self.last.update(self._test())
            history.append(self.last)
            log.info("epoch %d: train loss %.4f acc %.4f, val loss %.4f acc %.4f, %.1f s", epoch,
                     train_loss, train_acc, val_loss, val_acc, self.last["seconds"])
            if checkpoint_dir is not None:
                ckpt.save(checkpoint_dir, self.state(), durable=durable)
            if report is not None:
                report(dict(self.last), checkpoint_dir)
        return self._result(TrialStatus.COMPLETED, None, history)

    def _select(self, epoch: int, val_acc: float) -> None:
        """Epoch `epoch` is done: it becomes the best if no earlier one scored higher (the latest
        of equal scores, as Tune's checkpoint ranking), and its weights are copied to the CPU,
        because training the next epoch overwrites them."""
        self.epoch = epoch
        if not val_acc < self.best_val_acc:  # the first epoch, a better one, or an equal one
            self.best_val_acc, self.best_epoch = val_acc, epoch
            self.best_weights = _cpu_copy(self.model.state_dict())

    def _test(self) -> dict[str, float]:
        """The test set, read once per trial: on the best epoch's weights and on the final ones."""
        _, final = evaluate(self.model, self.data.test, self.runtime)
        chosen = final
        if self.best_epoch != self.epoch and self.best_weights is not None:
            final_weights = _cpu_copy(self.model.state_dict())
            self.model.load_state_dict(self.best_weights)
            _, chosen = evaluate(self.model, self.data.test, self.runtime)
            self.model.load_state_dict(final_weights)
        log.info("test: acc %.4f on the best epoch (%d), %.4f on the final weights", chosen, self.best_epoch, final)
        return {"test_acc": chosen, "test_acc_final": final}

    def _metrics(self, epoch: int, lr: float, started: float, *, status: TrialStatus,
                 **values: Any) -> dict[str, Any]:
        """One epoch's report; quantities a failed epoch did not measure are NaN.

        The status goes in as its plain string: the report is saved in the checkpoint, which
        ``torch.load(weights_only=True)`` reads back, and that refuses any class it does not know.
        """
        nan = float("nan")
        metrics = {"epoch": epoch, "train_loss": nan, "train_acc": nan, "val_loss": nan, "val_acc": nan,
                   "lr": lr, "seconds": time.perf_counter() - started, "images_per_s": nan}
        metrics.update(values)
        metrics.update(best_val_acc=self.best_val_acc, best_epoch=self.best_epoch, trial_status=status.value,
                       device=self.runtime.describe(), train_images=self.data.train.num_samples)
        return metrics

    def _result(self, status: TrialStatus, error: str | None,
                history: list[dict[str, Any]]) -> TrialResult:
        final = history[-1] if history else dict(self.last)
        return TrialResult(status, error, self.epoch, final, self.best_val_acc, self.runtime.describe(),
                           self.params, history, self.best_epoch, final.get("test_acc", math.nan),
                           final.get("test_acc_final", math.nan))

    def _train_epoch(self, epoch: int) -> tuple[float, float, float]:
        """(mean loss, accuracy, seconds) of one pass over the training data."""
        model, opt, rt = self.model, self.optimizer, self.runtime
        model.train()
        started = time.perf_counter()
        loss_sum = torch.zeros((), dtype=torch.float64, device=rt.device)
        correct = torch.zeros((), dtype=torch.int64, device=rt.device)
        seen = 0
        for step, (images, labels) in enumerate(self.data.train.batches(epoch), 1):
            images = images.contiguous(memory_format=rt.memory_format)
            with rt.autocast():
                logits = model(images)
                loss = F.cross_entropy(logits, labels)
            opt.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(opt)
            self.scaler.update()
            loss_sum += loss.detach().double() * len(labels)
            correct += (logits.argmax(1) == labels).sum()
            seen += len(labels)
            if step % DIVERGENCE_CHECK_EVERY == 0:
                _check_finite(loss_sum, epoch, step)
        _check_finite(loss_sum, epoch, step)
        return loss_sum.item() / seen, correct.item() / seen, time.perf_counter() - started


def evaluate(model: nn.Module, source: BatchSource, runtime: Runtime) -> tuple[float, float]:
    """(mean loss, accuracy) of `model` on every batch of `source`, in eval mode."""
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=runtime.device)
    correct = torch.zeros((), dtype=torch.int64, device=runtime.device)
    with torch.no_grad():
        for images, labels in source.batches(0):
            with runtime.autocast():
                logits = model(images.contiguous(memory_format=runtime.memory_format))
            loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum").double()
            correct += (logits.argmax(1) == labels).sum()
    return loss_sum.item() / source.num_samples, correct.item() / source.num_samples


def _cpu_copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in state.items()}


def _check_finite(loss_sum: torch.Tensor, epoch: int, step: int) -> None:
    if not torch.isfinite(loss_sum):
        raise Diverged(f"training loss became {loss_sum.item()} in epoch {epoch} by step {step}")
