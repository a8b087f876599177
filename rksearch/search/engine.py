"""Ray Tune + Optuna execution of a validated study.

The driver's data flow: the `Planner` prices every trial on the driver; budgets, invalid
architectures and trials already in the database are settled there and recorded as skipped /
reused / done; what is left goes to Ray Tune.  Grid and random studies hand Tune the exact list
of planned trials; Optuna studies go through `rksearch.search.searcher.PlannedSearcher`, which
prices each suggestion on the driver and never lets an over-budget or duplicate point reach a
worker.  Workers run
`rksearch.search.trainable.train_planned`, which re-derives the trial from its assignment and calls
`rksearch.training.loop.run_trial`, reporting every epoch with its checkpoint; the driver's
`StoreCallback` is the only writer.

Fault tolerance: Tune's `FailureConfig` retries a trial whose worker died from its last reported
checkpoint (`tune.get_checkpoint`); a study whose driver died is continued with ``resume=True``:
the database says what finished, and an unfinished trial restarts from the newest checkpoint
that loads among those earlier runs left for its key under the study's checkpoint directory.
Trials that failed from an infrastructure fault (`failures.INFRASTRUCTURE`) train again on
resume, every failed one with ``retry_failed``.  Results the database refused wait in the
study's journal (`store.journal`) and are replayed first.  A study is marked completed only when the database
holds every trial's end and every epoch (`Store.missing_results`); otherwise it is interrupted,
`StudyRun.problems` says why, and a resume finishes it.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import ray
from ray import tune

from rksearch.search import progress, tracking
from rksearch.search.interrupts import Interrupt
from rksearch.search.planner import Node, PlannedTrial, Planner, planned_trial
from rksearch.search.preload import import_in_background
from rksearch.search.replay import (
    NoRecording,
    Recording,
    ReplayPlanner,
    load_recording,
    replay_planned,
)
from rksearch.search.schedulers import RecordingASHA, StopStudy
from rksearch.search.schema import Study
from rksearch.search.searcher import PlannedSearcher, optuna_mirror, optuna_searcher
from rksearch.search.trainable import train_planned
from rksearch.store import Store, StoreCallback, StoreError, TrialInfo, open_store
from rksearch.store.callback import storage_full
from rksearch.store.db import driver_error
from rksearch.store.journal import Journal
from rksearch.training import environment, failures
from rksearch.training.checkpoint import first_loadable
from rksearch.training.status import TrialStatus

log = logging.getLogger(__name__)

#: statuses that a resumed study does not train again (pruned only under ASHA, failed only when
#: the failure is not the machine's: see `_final_keys`)
FINAL = {TrialStatus.COMPLETED, TrialStatus.SKIPPED, TrialStatus.FAILED}


@dataclass
class StudyRun:
    """What `run_study` did, for the CLI's summary and for tests."""

    study_id: int
    planned: int
    #: trials that reached their end (completed, pruned or failed) in this run
    trained: int
    #: every skipped trial of the study (over budget, invalid), this run's and earlier ones
    skipped: int
    reused: int
    #: trials that had reached their end in earlier runs (skips not included)
    already_done: int
    #: stopped by the user (Ctrl-C / SIGINT)
    interrupted: bool
    seconds: float
    #: why the study is not complete (one line each; empty when it is)
    problems: list[str] = field(default_factory=list)
    #: the one-line reason the study was stopped by a fault, if it was
    fatal: str | None = None
    #: of `trained`, those that failed
    failed: int = 0
    #: the directory `tensorboard --logdir` reads, when the study's `tracking.tensorboard` asks
    tensorboard: str | None = None
    #: the recorded study this run replayed (`rksearch.search.replay`), if it was a replay
    replay_of: str | None = None

    @property
    def complete(self) -> bool:
        """Every trial has its end and every epoch in the database: the study is done."""
        return not (self.interrupted or self.problems or self.fatal)


# ---- driver-side helpers that Ray pickles ---------------------------------------------------

class Describe:
    """Picklable ``trial.config -> TrialInfo`` for the store callback (Ray pickles callbacks)."""

    def __init__(self, study_json: str) -> None:
        self.study_json = study_json

    def __call__(self, config: dict[str, Any]) -> TrialInfo:
        return planned_trial(self.study_json, config).info()


# ---- the driver ------------------------------------------------------------------------------

def run_study(study: Study, study_text: str, *, storage_url: str, storage_path: str | None = None,
              address: str | None = None, resume: bool = False, retry_failed: bool = False,
              stream: TextIO | None = None, preflight: bool = True, replay: str | None = None) -> StudyRun:
    """Run (or continue) a study to the end; every trial lands in the database at `storage_url`.

    The study row ends `completed` only when every trial has its results in the database,
    else `interrupted` (also when this function raises or is interrupted): never `running`
    once it returns.  Either way its compute is recorded on its row (`Store.record_compute`).
    With `replay` (a study's name in the same database) nothing trains: the search runs for
    real on what that study recorded (`rksearch.search.replay`), and the study is marked as
    its replay.
    """
    started = time.monotonic()
    tracking.check(study)  # a tracker that cannot work here is refused before anything runs
    study = _absolute_paths(study)
    store = open_store(storage_url)
    root = Path(storage_path or study.storage.checkpoints).expanduser().resolve() / study.name
    own_ray = not ray.is_initialized()
    study_id = None
    try:
        recording = _recording(store, study, replay)
        if recording is not None:  # every point comes from the recording: one linked from another
            study = study.model_copy(update={"reuse": False})  # study would be copied, not replayed
        store.check_begin(study.name, resume=resume, replay_of=replay)  # refused before Ray starts
        if own_ray:
            _start_ray(address, root)
        # priced against the largest node's memory: a trial that cannot fit anywhere is skipped (a
        # replay's trials were priced on the machine that recorded them, and train nothing here)
        planner = (Planner(study, node=Node.largest_ray_node(ray.nodes())) if recording is None
                   else ReplayPlanner(study, recording))
        if preflight:
            from rksearch.search.preflight import raise_for_problems, run_preflight

            raise_for_problems(run_preflight(
                resources_per_trial=_ray_resources(study, replaying=recording is not None),
                checkpoint_path=str(root), storage_url=storage_url, open_db=open_store))
        study_id = store.begin_study(study.name, study_text, resume=resume, replay_of=replay)
        journal = Journal.beside(root)
        _replay(store, journal)
        run, expected = _execute(study, planner, store, storage_url, study_id, root, journal, stream, retry_failed,
                                 recording)  # fmt: skip
        run.seconds = time.monotonic() - started
        run.tensorboard = str(root) if study.tracking.tensorboard else None
        run.replay_of = replay
        if isinstance(planner, ReplayPlanner) and (mismatch := planner.mismatch()):
            print(f"[{study.name}] warning: {mismatch}", file=stream or sys.stdout, flush=True)
        try:
            _replay(store, journal)
            run.problems = list(store.missing_results(study_id, expected).values())
        except StoreError as exc:  # the database still refuses: the journal keeps everything
            run.fatal = run.fatal or str(exc)
        mirror = optuna_mirror(study, planner)
        if mirror is not None:  # what a trial's own sync missed: reused, journaled, a failed sync
            mirror.sync(store, study_id)
        _finish_quietly(store, study_id, study, "completed" if run.complete else "interrupted")
        study_id = None  # its end is recorded
        return run
    finally:
        if study_id is not None:  # an exception or Ctrl-C on the way out: never left running
            _finish_quietly(store, study_id, study)
        store.close()
        if own_ray:
            ray.shutdown()


def _replay(store: Store, journal: Journal) -> None:
    """Record what an earlier run (or this one) kept in the journal; StoreError if it cannot."""
    if not journal.pending():
        return
    try:
        count = store.replay(journal)
    except StoreError:
        raise
    except Exception as exc:  # the database is still unavailable
        raise StoreError(f"{len(journal)} results kept in {journal.path} cannot be recorded yet "
                         f"({type(exc).__name__}: {driver_error(exc, store.engine.url)}); "
                         f"once the database takes writes again, resume") from None  # fmt: skip
    log.warning("results store: recorded %d results kept in %s", count, journal.path)


def _recording(store: Store, study: Study, replay: str | None) -> Recording | None:
    """The recording a replay reports from (None: not a replay), read before Ray starts, so a
    misnamed one is refused at once."""
    if replay is None:
        return None
    if replay == study.name:
        raise NoRecording(f"--replay {replay}: a study cannot replay itself; give the replay its own name "
                         f"(--set name=...)")  # fmt: skip
    return load_recording(store.engine, replay)


def _finish_quietly(store: Store, study_id: int, study: Study, status: str = "interrupted") -> None:
    """Record the study's compute and mark its end; a database that refuses even this is
    reported, not raised (the journal and the checkpoints still hold everything, and a resume
    sets the status and the compute right)."""
    try:
        store.record_compute(study_id, study.resources.cpu, study.resources.gpu)
    except Exception as exc:  # derived from the rows: recomputed whenever the study next finishes
        log.warning("results store: compute of study %d not recorded: %s", study_id,
                    driver_error(exc, store.engine.url))
    try:
        store.finish_study(study_id, status)
    except Exception as exc:
        log.error("results store: cannot mark study %d %s: %s", study_id, status, driver_error(exc, store.engine.url))


def _final_keys(statuses: dict[str, str], failed: dict[str, str | None], incomplete: set[str], study: Study,
                retry_failed: bool) -> set[str]:
    """Trial keys a resumed study does not train again: completed (with all its epochs), skipped,
    pruned under ASHA (without a scheduler only an interrupted run stops a trial early), and
    failed unless the failure was the machine's (or `retry_failed`)."""
    final = FINAL | ({TrialStatus.PRUNED} if study.scheduler.type == "asha" else set())
    return {key for key, status in statuses.items()
            if status in final and key not in incomplete
            and not (status == TrialStatus.FAILED
                     and failures.retried_on_resume(failed.get(key), retry_failed=retry_failed))}


@dataclass
class _Plan:
    """What this run hands Ray Tune, and how it counts against the study."""

    #: every planned trial of a grid or random study; empty for Optuna, which draws as it goes
    planned: list[PlannedTrial]
    #: trials to train in this run
    total: int
    #: trials that reached their end in earlier runs (skips not included)
    already: int
    param_space: dict[str, Any] = field(default_factory=dict)
    searcher: PlannedSearcher | None = None
    num_samples: int = 1


class _Ledger:
    """What the database says of each of the study's trial keys, and what this run settles there
    without training: skips, skips that fit now, results reused from other studies."""

    def __init__(self, study: Study, store: Store, study_id: int, retry_failed: bool) -> None:
        self.study, self.store, self.study_id = study, store, study_id
        self.statuses = store.trial_statuses(study_id)
        # a completed trial short of an epoch (a write lost before the journal existed): retrain it
        self.incomplete = {key for key in store.missing_results(study_id)
                           if self.statuses.get(key) == TrialStatus.COMPLETED}
        self.done_before = _final_keys(self.statuses, store.trial_failures(study_id), self.incomplete, study,
                                       retry_failed)
        self.skipped = {key for key in self.done_before if self.statuses[key] == TrialStatus.SKIPPED}
        self.reused: set[str] = set()
        self.other_code: set[str] = set()  # reuse: completed elsewhere, but by another code version
        self.code = environment.code_version()[:50]

    def done_count(self, keys: set[str] | None = None) -> int:
        """Trials (of `keys`, if given) that reached their end in earlier runs, skips not counted."""
        return sum(1 for key in self.done_before
                   if (keys is None or key in keys) and self.statuses[key] != TrialStatus.SKIPPED)

    def settle(self, trial: PlannedTrial) -> bool:
        """Record what needs no training; True when the trial must train."""
        key = trial.key
        if key in self.done_before and self.statuses[key] == TrialStatus.SKIPPED and trial.runnable:
            # skipped before, fits now (memory skips depend on the machine the study runs on)
            self.store.reopen_skipped(self.study_id, key)
            self.statuses[key] = TrialStatus.PENDING
            self.skipped.discard(key)
        elif key in self.done_before:
            return False
        if not trial.runnable:
            self.store.record_skipped(self.study_id, trial.info(), trial.problem or "")
            self.statuses[key] = TrialStatus.SKIPPED
            self.skipped.add(key)
            return False
        return not (self.study.reuse and key not in self.statuses and self._reuse(trial))

    def _reuse(self, trial: PlannedTrial) -> bool:
        """Link a completed result of the same trial key that `reuse` allows; True when linked."""
        source = self.store.find_completed(trial.key, None if self.study.reuse == "any" else self.code)
        if source is not None:
            self.store.link_reused(self.study_id, trial.info(), source)
            self.statuses[trial.key] = TrialStatus.COMPLETED
            self.reused.add(trial.key)
            return True
        if self.study.reuse != "any" and self.store.find_completed(trial.key) is not None:
            self.other_code.add(trial.key)
        return False

    def abandon(self, keep: set[str]) -> None:
        """Trials an earlier run left unfinished that this run will not continue (an Optuna search
        draws new points; a grid whose study file no longer plans them) end as failed, interrupted:
        a row may not claim `running` with nothing running it, nor keep the study from completing."""
        for key, status in self.statuses.items():
            if status in (TrialStatus.RUNNING, TrialStatus.PENDING) and key not in keep:
                self.store.trial_finished(self.study_id, key, TrialStatus.FAILED,
                                          "cut short when its study stopped, and not continued",
                                          failure=failures.INTERRUPTED)
                self.statuses[key] = TrialStatus.FAILED

    def say_reused(self, out: TextIO) -> None:
        if self.study.reuse:
            print(f"[{self.study.name}] reuse: linked {len(self.reused)} completed trials"
                  + (f"; left {len(self.other_code)} trained by another code version than {self.code} "
                     "(reuse: any links them)" if self.other_code else ""), file=out, flush=True)

    def run(self, plan: _Plan, trained: int = 0, failed: int = 0, interrupted: bool = False,
            fatal: str | None = None) -> StudyRun:
        """This run's counts, its skips and reuses as settled so far."""
        return StudyRun(self.study_id, len(plan.planned) or plan.total, trained, len(self.skipped),
                        len(self.reused), plan.already, interrupted, 0.0, fatal=fatal, failed=failed)


def _execute(study: Study, planner: Planner, store: Store, storage_url: str, study_id: int, root: Path,
             journal: Journal, stream: TextIO | None, retry_failed: bool = False,
             recording: Recording | None = None) -> tuple[StudyRun, list[str]]:
    """Train (or with `recording`, replay) what the study still needs; the run's counts and the
    trial keys that must have rows."""
    out = stream or sys.stdout
    ledger = _Ledger(study, store, study_id, retry_failed)
    if study.search.algorithm in ("grid", "random"):
        plan = _plan_grid(study, planner, ledger, root, out)
    else:
        plan = _plan_optuna(study, planner, ledger, storage_url)
    if plan.total == 0:
        return ledger.run(plan), []
    scheduler = _scheduler(study)
    resources = ray.cluster_resources()
    print(f"[{study.name}] {plan.total} trials to train ({len(ledger.skipped)} skipped, {len(ledger.reused)} "
          f"reused, {plan.already} done before) on {resources.get('CPU', 0):g} CPUs / {resources.get('GPU', 0):g} "
          f"GPUs; checkpoints and Ray logs under {root}", file=out, flush=True)
    pruned = scheduler.stopped_trial if scheduler is not None else None
    view = progress.ProgressView(study.name, "best_val_acc", plan.total, plan.already, stream, pruned=pruned,
                                 epochs=study.train.epochs)
    study_json = study.model_dump_json()
    recorder = StoreCallback(store, study_id, Describe(study_json), journal, pruned=pruned,
                             mirror=optuna_mirror(study, planner))
    if recording is None:
        trainable = tune.with_parameters(train_planned, study_json=study_json)
    else:  # the recording goes to Ray's object store once, not with every trial
        trainable = tune.with_parameters(replay_planned, study_json=study_json, recording=recording.trials)
    reserved = _ray_resources(study, replaying=recording is not None)
    trainable = tune.with_resources(trainable, {name.lower(): amount for name, amount in reserved.items()})
    interrupt = Interrupt()
    tuner = _tuner(study, study_json, trainable, plan, root, scheduler, recorder, view, interrupt)
    interrupted = _fit(tuner, recorder, interrupt)
    view.finish()
    if plan.searcher is not None:  # Optuna's points were settled (and reused) as it drew them
        ledger.say_reused(out)
    ended = list(recorder.ended.values())
    return (ledger.run(plan, len(ended), ended.count(TrialStatus.FAILED), interrupted, recorder.fatal),
            [t.key for t in plan.planned])


def _plan_grid(study: Study, planner: Planner, ledger: _Ledger, root: Path, out: TextIO) -> _Plan:
    """A grid or random study's planned trials that still need training, each handed the
    checkpoints earlier runs left for it."""
    planned = planner.plan()
    keys = {t.key for t in planned}
    already = ledger.done_count(keys)
    stale = sum(1 for key, status in ledger.statuses.items() if key not in keys and status == TrialStatus.COMPLETED)
    if stale:  # their keys are not this plan's: another study file, protocol or key scheme
        print(f"[{study.name}] {stale} completed trials of this study are not in its plan any more (the "
              f"study file or rksearch changed what they compute); they stay in the database and are not "
              f"counted as done (see `results show`)", file=out, flush=True)
    todo = [t for t in planned if ledger.settle(t)]
    ledger.say_reused(out)
    ledger.abandon(keep={t.key for t in todo})
    if not todo:
        return _Plan(planned, 0, already)
    # a trial to retrain for missing epochs starts again from epoch 0: its checkpoints are past them
    left, notes = _latest_checkpoints(
        root, [t for t in todo if t.key in ledger.statuses and t.key not in ledger.incomplete])
    for note in notes:
        print(f"[{study.name}] {note}", file=out, flush=True)
    entries = [{"assignment": t.assignment, "seed": t.seed, "resume_candidates": left.get(t.key[:16], [])}
               for t in todo]
    return _Plan(planned, len(todo), already, param_space={"trial": tune.grid_search(entries)})


def _plan_optuna(study: Study, planner: Planner, ledger: _Ledger, storage_url: str) -> _Plan:
    """An Optuna study's draws still to make: every point drawn before counts as done, and a
    trial an earlier run left unfinished is not continued (Optuna draws new points)."""
    ledger.abandon(keep=set())
    already = ledger.done_count()
    total = max(study.search.num_samples - already, 0)  # type: ignore[operator]
    if total == 0:
        return _Plan([], 0, already)
    searcher = optuna_searcher(study, planner, ledger.settle, storage_url)
    return _Plan([], total, already, searcher=searcher, num_samples=total)


def _scheduler(study: Study) -> RecordingASHA | None:
    """ASHA on the study's metric when `scheduler.type` asks for it; None: every trial runs to the end."""
    if study.scheduler.type != "asha":
        return None
    return RecordingASHA(time_attr="training_iteration", metric=study.search.metric, mode=study.search.mode,
                         max_t=study.max_epochs, grace_period=study.scheduler.grace_period,
                         reduction_factor=study.scheduler.reduction_factor)


def _tuner(study: Study, study_json: str, trainable: Any, plan: _Plan, root: Path, scheduler: RecordingASHA | None,
           recorder: StoreCallback, view: progress.ProgressView, interrupt: Interrupt) -> tune.Tuner:
    """The Tuner for `plan`: `trainable` (with each trial's resources), our callbacks and stopper,
    retries from the last checkpoint, and the checkpoints worth keeping."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no Tune tables, our view only
    return tune.Tuner(
        trainable,
        param_space=plan.param_space,
        tune_config=tune.TuneConfig(
            search_alg=plan.searcher, scheduler=scheduler, num_samples=plan.num_samples,
            max_concurrent_trials=study.search.max_concurrent, reuse_actors=True,
            trial_name_creator=_TrialName(study_json), trial_dirname_creator=_TrialName(study_json, unique=True),
        ),
        run_config=tune.RunConfig(
            name=time.strftime("run-%Y%m%d-%H%M%S"), storage_path=str(root), verbose=0,
            callbacks=[recorder, view, *tracking.callbacks(study)], stop=StopStudy(recorder, interrupt),
            failure_config=tune.FailureConfig(max_failures=study.failure.max_failures),
            # the best epochs by validation accuracy (ties: the later, as `training.loop` chooses) and the last
            checkpoint_config=tune.CheckpointConfig(num_to_keep=study.storage.keep_checkpoints,
                                                    checkpoint_score_attribute="val_acc", checkpoint_score_order="max"),
        ),
    )


def _fit(tuner: tune.Tuner, recorder: StoreCallback, interrupt: Interrupt) -> bool:
    """Run the trials; True when the user interrupted them (Ctrl-C, SIGTERM: `interrupt`).  Tune
    failing itself (its state on a full disk, a lost head node) stops the study through
    `recorder`, with one line saying why."""
    try:
        with interrupt.catching():
            tuner.fit()  # its ResultGrid is not read: the database says what finished
    except KeyboardInterrupt:
        return True
    except Exception as exc:
        log.debug("Tune stopped", exc_info=True)
        text = f"{type(exc).__name__}: {failures.last_line(str(exc)) or 'no message'}"
        recorder.stop(storage_full(text) if failures.classify(text) == failures.STORAGE_FULL
                      else f"Ray Tune stopped: {text}")
    return interrupt.requested  # a Ctrl-C whose KeyboardInterrupt was lost: the stopper ended the run


class _TrialName:
    """Tune trial names (and directory names) that say which model and key a trial is."""

    def __init__(self, study_json: str, unique: bool = False) -> None:
        self.study_json, self.unique = study_json, unique

    def __call__(self, trial: Any) -> str:
        planned = planned_trial(self.study_json, trial.config)
        if self.unique:
            return f"{planned.key[:16]}_{trial.trial_id}"
        short = "".join(c if c.isalnum() or c in "-_" else "_" for c in planned.model_name)[:40]
        return f"{short}_s{planned.seed}_{planned.key[:8]}"


def _latest_checkpoints(root: Path, resumed: list[PlannedTrial]) -> tuple[dict[str, list[str]], list[str]]:
    """Where each of `resumed` (unfinished trials an earlier run started) continues: per trial
    key prefix (a trial directory's name, see `_TrialName`), the checkpoint directories earlier
    runs of this study left under `root`, newest first; and one line per trial whose newest
    checkpoint does not load, saying why and what the trial resumes from instead.

    The list starts at the newest checkpoint that loads (`checkpoint.first_loadable`, read here
    on the driver), so neither the worker nor Tune's retries of it are handed a file already
    known to be unreadable; the older ones follow unread, for the worker to fall back on (it
    checks each before use).  A trial with no readable checkpoint gets none: epoch 0.  Newest
    is by run (its name is its start time), then by Tune's checkpoint index, never by file
    times, which a copy or a damaged file's last write reorders.  One walk for all trials.
    """
    wanted = {t.key[:16]: t for t in resumed}
    found: dict[str, list[Path]] = {}
    for directory in root.glob("run-*/*_*/checkpoint_*/"):
        prefix = directory.parent.name.split("_", 1)[0]
        if prefix in wanted:
            found.setdefault(prefix, []).append(directory)
    left: dict[str, list[str]] = {}
    notes = []
    for prefix, directories in found.items():
        directories.sort(key=lambda d: (d.parent.parent.name, d.name), reverse=True)
        pick = first_loadable(directories)
        if pick.directory is not None:
            left[prefix] = [str(d) for d in directories[len(pick.rejected):]]
        note = pick.note()
        if note:
            trial = wanted[prefix]
            notes.append(f"trial {trial.model_name} ({trial.key[:8]}): {note}")
    return left, notes


#: what a replayed trial reserves, whatever its recorded trial did: it only reports numbers, so a
#: study recorded on GPUs replays on a machine without one (its keys and compute keep `resources`)
REPLAY_RESOURCES = {"CPU": 1.0}


def _ray_resources(study: Study, replaying: bool = False) -> dict[str, float]:
    """What one trial reserves in Ray: CPUs, GPUs, and memory when `resources.memory` says."""
    if replaying:
        return dict(REPLAY_RESOURCES)
    reserved = {"CPU": study.resources.cpu, "GPU": study.resources.gpu}
    if study.resources.memory is not None:
        reserved["memory"] = study.resources.memory
    return reserved


def _absolute_paths(study: Study) -> Study:
    """Relative data roots mean the driver's working directory, wherever a trial runs."""
    data = study.data.model_copy(update={"root": study.data.root.expanduser().resolve()})
    return study.model_copy(update={"data": data})


class _LogFile(logging.FileHandler):
    """Ray's log file.  On a full disk every record fails to write, and logging's default is a
    traceback on stderr per record: the study's own one-line error says it instead."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass


#: what Ray Tune imports on the driver at every `fit()` before it starts a trial, only to count
#: which of its integrations the study's callbacks are (`ray.air._internal.usage.tag_callbacks`):
#: mlflow, wandb and comet wherever they are installed (and Aim's Tune logger), 1.5-1.9 s on an
#: idle 2-core machine.  `_start_ray` imports them while Ray starts; Ray's own modules they share
#: (`ray.tune`, `ray.air`) are imported with this module, before the thread runs, so the two
#: threads do not import one module cycle from both ends.
TUNE_TELEMETRY_IMPORTS = ("ray.air.integrations.comet", "ray.air.integrations.mlflow",
                          "ray.air.integrations.wandb", "ray.tune.logger.aim")


def _start_ray(address: str | None, root: Path) -> None:
    """A local Ray sized to the machine (or the cluster at `address`), its logs in a file."""
    root.mkdir(parents=True, exist_ok=True)
    log_file = root / "ray-driver.log"
    handler = _LogFile(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("ray", "ray.tune", "ray.train"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.propagate = False
    # a failed trial's error reaches the store callback; Ray's "unhandled error" dump of the same
    # traceback at shutdown would only flood the terminal
    os.environ.setdefault("RAY_IGNORE_UNHANDLED_ERRORS", "1")
    # no address: always a fresh local Ray ("local"), never whichever cluster happens to be
    # running on this machine; "auto" or an address joins one deliberately
    on_sigterm = signal.getsignal(signal.SIGTERM)
    import_in_background(*TUNE_TELEMETRY_IMPORTS)
    ray.init(address=address or "local", include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
             configure_logging=False)
    # Ray installs a SIGTERM handler that exits at once (sys.exit from a C++ hook, before any
    # cleanup of ours); put back the caller's own (run.py's marks the study interrupted; a
    # notebook's default, so that a second `rksearch.run_study` finds signals as they were)
    if on_sigterm is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_sigterm)
    log.info("Ray logs: %s", log_file)

