"""Replay: a recorded study as a tabular benchmark (``rksearch run STUDY.yaml --replay RECORDED``).

A replay runs the study file's search (grid, random, TPE, multi-objective), scheduler (ASHA),
budgets and dedup for real, through the same engine (`engine.run_study`), but its trainable
does not train: `replay_planned` reports, epoch by epoch, what the trial with the same trial
key reported when study RECORDED trained it (its per-epoch metrics and seconds; with the last
epoch its test accuracies, as the real trainable's last report carries them).  So a search
strategy is compared on a recorded space in seconds, and its compute is the recording's
(simulated: the recorded seconds and the trials' FLOPs, `store.compute`).

What the recording lacks is never invented: a planned point with no completed trial of that key
in RECORDED, or with fewer recorded epochs than the trial plans, is skipped with the reason
`NOT_RECORDED` by the driver (`ReplayPlanner`), under Optuna as the point is drawn.

The recording is read on the driver once (one query, `load_recording`) and handed to the
workers with ``tune.with_parameters``; there are no checkpoints, so an interrupted replay
replays its trials again from their first epoch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ray
from ray import tune

from rksearch.errors import RksearchError
from rksearch.search.planner import PlannedTrial, Planner, planned_trial
from rksearch.search.schema import Study
from rksearch.training.status import TrialStatus

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

#: the skip reason of a planned point the recording lacks
NOT_RECORDED = "not in the recording"

#: per-epoch metrics a replayed epoch reports, named as the real trainable reports them
EPOCH_FIELDS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s")
#: what every report of the real trainable carries that the trial's row keeps (not its epochs)
TRIAL_FIELDS = ("device", "train_images")
#: what the real trainable's last report adds, from the recorded trial's row
LAST_FIELDS = ("test_acc", "test_acc_final")


@dataclass(frozen=True)
class Recording:
    """The completed trials of a recorded study, as the reports a replay makes."""

    study: str
    #: trial key -> one report per recorded epoch, in epoch order (`reports`)
    trials: dict[str, list[dict[str, Any]]]

    def covers(self, trial: PlannedTrial) -> bool:
        """Whether the epochs `trial` plans (1..optim.epochs) are exactly those recorded for its key
        (the key hashes the epochs, so a completed recording holds no more of them)."""
        reports = self.trials.get(trial.key)
        planned = int(trial.config.get("optim", {}).get("epochs", 0))
        return reports is not None and [r["epoch"] for r in reports] == list(range(1, planned + 1))


def reports(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The reports the real trainable made for these recorded epochs of one trial (`rows`, in
    epoch order, each also holding its trial's `TRIAL_FIELDS` and `LAST_FIELDS`): each epoch's
    metrics and the trial's fields (so a trial ASHA stops early still says what it trained on),
    with the running best validation accuracy and its epoch (the later of equal scores, as
    `training.loop` chooses), `trial_status` running; on the last epoch completed, with the
    test accuracies."""
    out = []
    best, best_epoch = -math.inf, 0
    for row in rows:
        val = row.get("val_acc")
        if val is not None and not val < best:
            best, best_epoch = val, row["epoch"]
        out.append({**{name: row.get(name) for name in EPOCH_FIELDS},
                    **{name: row[name] for name in TRIAL_FIELDS if row.get(name) is not None},
                    "epoch": row["epoch"], "best_val_acc": best if best_epoch else math.nan, "best_epoch": best_epoch,
                    "trial_status": TrialStatus.RUNNING.value})  # fmt: skip
    if out:
        out[-1].update({name: rows[-1][name] for name in LAST_FIELDS if rows[-1].get(name) is not None},
                       trial_status=TrialStatus.COMPLETED.value)
    return out


class NoRecording(RksearchError, LookupError):
    """``--replay`` names no study this replay can read (none of that name, or the replay
    itself): refused before the replay's own study begins, so there is nothing to continue
    and the command line prints no resume command."""


def load_recording(engine: Engine, study: str) -> Recording:
    """Study `study`'s completed trials in the database of `engine`, read in one query;
    NoRecording when no study of that name is there.  (The store is imported here, not at the
    top: workers import this module for `replay_planned` and never touch the database.)"""
    import sqlalchemy as sa

    from rksearch.store import db
    from rksearch.store.schema import epochs, studies, trials
    from rksearch.store.urls import redact

    query = (
        sa.select(trials.c.trial_key, *(trials.c[name] for name in (*TRIAL_FIELDS, *LAST_FIELDS)), epochs.c.epoch,
                  *(epochs.c[name] for name in EPOCH_FIELDS))
        .join(trials, trials.c.id == epochs.c.trial_id)
        .join(studies, studies.c.id == trials.c.study_id)
        .where(studies.c.name == study, trials.c.status == TrialStatus.COMPLETED)
        .order_by(trials.c.id, epochs.c.epoch)
    )  # fmt: skip
    with db.reading(engine) as conn:
        rows = conn.execute(query).mappings().all()
        if not rows and conn.execute(sa.select(studies.c.id).where(studies.c.name == study)).first() is None:
            raise NoRecording(f"--replay {study}: no study named {study!r} in {redact(engine.url)}")
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(row["trial_key"], []).append(dict(row))
    return Recording(study, {key: reports(epoch_rows) for key, epoch_rows in grouped.items()})


class ReplayPlanner(Planner):
    """The study's planner, but a runnable trial the recording does not cover carries the
    problem `NOT_RECORDED`: grid and random plans and Optuna's draws all skip it, recorded
    with that reason, as they skip an over-budget one."""

    def __init__(self, study: Study, recording: Recording) -> None:
        super().__init__(study)  # no node: the recording's machine priced (and fitted) its trials
        self.recording = recording
        #: keys of the runnable points resolved so far, found in the recording or not
        self.found: set[str] = set()
        self.missing: set[str] = set()

    def resolve(self, assignment: dict[str, Any], seed: int) -> PlannedTrial:
        trial = super().resolve(assignment, seed)
        if not trial.runnable:
            return trial
        if self.recording.covers(trial):
            self.found.add(trial.key)
            return trial
        self.missing.add(trial.key)
        return dataclasses.replace(trial, problem=NOT_RECORDED)

    def mismatch(self) -> str | None:
        """A warning when no point this replay asked for was recorded although the recording
        holds trials: every key differs, which is another study file, runtime or key scheme,
        not a sparse recording."""
        if self.found or not self.missing or not self.recording.trials:
            return None
        return (f"none of the {len(self.missing)} points this study asked for is in the recording "
                f"{self.recording.study!r}, which holds {len(self.recording.trials)} completed trials under "
                f"other keys: was it recorded from another study file (recipe, data, epochs), runtime "
                f"(device, precision) or rksearch version?")


def replay_planned(config: dict[str, Any], study_json: str, recording: dict[str, list[dict[str, Any]]]) -> None:
    """Tune trainable: report the recorded epochs of the trial `config["trial"]` names, as
    `trainable.train_planned` reported them when it trained (one `tune.report` per epoch, the
    same extra fields), without training, reading data or writing checkpoints."""
    trial = planned_trial(study_json, config)
    c = trial.cost
    extra = {"trial_key": trial.key, "model_name": trial.model_name, "params": c and c.params,
             "flops": c and c.flops, "node_id": ray.get_runtime_context().get_node_id()}
    for report in recording[trial.key]:
        tune.report({**report, **extra})


__all__ = ["NOT_RECORDED", "NoRecording", "Recording", "ReplayPlanner", "load_recording", "replay_planned", "reports"]
