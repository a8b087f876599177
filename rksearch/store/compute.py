"""Compute accounting: what a study spent, and what ASHA's pruning saved, from its stored rows.

Conventions (the README states them too):

- **training FLOPs** of a trial = epochs trained x training images per epoch x 3 x forward
  FLOPs per image: the usual "3x forward" rule (the backward pass costs about twice the
  forward one).  Validation and test passes are not counted.  Forward FLOPs are the trial's
  `flops` (`rksearch.models.cost`), the images what its worker trained on (`train_images`).
- **CPU hours / GPU hours**: the trial's recorded epoch seconds x the CPUs (GPUs) the study
  reserves per trial (`resources.cpu` / `resources.gpu`), so they are *reserved* hours, not
  measured utilisation.  A replay's seconds are the recording's: its hours are simulated.
- **saved**, for trials ASHA pruned: the epochs each did not train up to its planned last
  epoch, and those epochs' training FLOPs: the saving against training every trial to the end.

Only trials this study trained count: a trial reused from another study (`reuse`) cost
nothing here.  A trial without its forward FLOPs or image count (recorded before revision 0006)
makes the study's FLOPs unknown (NULL), never a guess.  Epochs a retried trial trained twice
are counted once (the store keeps one row per epoch).

Computed once, when the study finishes (`Store.record_compute`), never on the per-epoch path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from rksearch.training.status import TrialStatus

#: the 3x-forward convention: one training image costs a forward and a backward (about 2x) pass
TRAIN_FLOPS_PER_FORWARD = 3


@dataclass(frozen=True)
class TrialWork:
    """What one trained trial's rows say about its compute."""

    status: str
    #: forward FLOPs per image (None: unknown)
    flops: int | None
    #: training images per epoch (None: unknown)
    train_images: int | None
    #: epochs recorded
    epochs: int
    #: the epochs its config plans (`optim.epochs`)
    planned_epochs: int
    #: the recorded epoch seconds, summed
    seconds: float

    def flops_for(self, epochs: int) -> float | None:
        if self.flops is None or self.train_images is None:
            return None
        return float(epochs) * self.train_images * TRAIN_FLOPS_PER_FORWARD * self.flops


@dataclass(frozen=True)
class Compute:
    """A study's compute, as stored on its `rks_studies` row (the field names are the columns)."""

    epochs_trained: int
    train_flops: float | None
    cpu_hours: float
    gpu_hours: float
    epochs_saved: int
    flops_saved: float | None

    def columns(self) -> dict[str, Any]:
        return asdict(self)


def _total(values: Iterable[float | None]) -> float | None:
    """The sum, or None when any term is unknown."""
    total = 0.0
    for value in values:
        if value is None:
            return None
        total += value
    return total


def account(trials: Iterable[TrialWork], cpus: float, gpus: float) -> Compute:
    """The compute of `trials` (those the study trained), each reserving `cpus` and `gpus`."""
    trained = [t for t in trials if t.epochs > 0]
    pruned = [t for t in trained if t.status == TrialStatus.PRUNED]
    seconds = sum(t.seconds for t in trained)
    left = [(t, max(t.planned_epochs - t.epochs, 0)) for t in pruned]
    return Compute(
        epochs_trained=sum(t.epochs for t in trained),
        train_flops=_total(t.flops_for(t.epochs) for t in trained),
        cpu_hours=seconds * cpus / 3600.0,
        gpu_hours=seconds * gpus / 3600.0,
        epochs_saved=sum(n for _, n in left),
        flops_saved=_total(t.flops_for(n) for t, n in left),
    )


def _flops_text(flops: float) -> str:
    for scale, unit in ((1e18, "EFLOPs"), (1e15, "PFLOPs"), (1e12, "TFLOPs"), (1e9, "GFLOPs")):
        if flops >= scale:
            return f"{flops / scale:.3g} {unit}"
    return f"{flops:.3g} FLOPs"


def describe(row: Mapping[str, Any]) -> str | None:
    """A study's stored compute (a `rks_studies` row, or `queries.studies`'s) in one line; None
    when it has none yet (running, or recorded before revision 0006)."""
    import pandas as pd  # here: the writer imports this module, and pandas only reads need

    def known(name: str) -> Any:
        value = row.get(name)
        return None if value is None or pd.isna(value) else value  # NaN from pandas: unknown

    epochs = known("epochs_trained")
    if epochs is None:
        return None
    flops, saved_flops = known("train_flops"), known("flops_saved")
    gpu = known("gpu_hours") or 0.0
    hours = f"{gpu:.3g} GPU hours" if gpu else f"{known('cpu_hours') or 0.0:.3g} CPU hours"
    parts = [f"{int(epochs)} epochs trained",
             f"{_flops_text(flops)} training (epochs x images x 3 x forward FLOPs)" if flops is not None
             else "training FLOPs unknown",
             f"{hours} (epoch seconds x reserved {'GPUs' if gpu else 'CPUs'})"]
    simulated = " (simulated: replay of " + str(row["replay_of"]) + ")" if known("replay_of") else ""
    line = "compute" + simulated + ": " + ", ".join(parts)
    saved = known("epochs_saved")
    if saved:
        line += f"; ASHA pruning saved {int(saved)} epochs"
        if saved_flops is not None and flops is not None and flops + saved_flops > 0:
            line += f", {_flops_text(saved_flops)} ({100 * saved_flops / (flops + saved_flops):.0f}% of training " \
                    "every trial to the end)"
    return line


__all__ = ["TRAIN_FLOPS_PER_FORWARD", "Compute", "TrialWork", "account", "describe"]
