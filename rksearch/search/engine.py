"""Ray Tune + Optuna execution of a validated study.

Data flow (architecture.md): the `Planner` prices every trial on the driver; budgets, invalid
architectures and trials already in the database are settled there and recorded as skipped /
reused / done; what is left goes to Ray Tune.  Grid and random studies hand Tune the exact list
of planned trials; Optuna studies go through `PlannedSearcher`, which prices each suggestion on
the driver and never lets an over-budget or duplicate point reach a worker.  Workers run
`rksearch.search.trainable.train_planned`, which re-derives the trial from its assignment and calls
`train.run_trial`, reporting every epoch with its checkpoint; the driver's `StoreCallback` is
the only writer.

Fault tolerance: Tune's `FailureConfig` retries a trial whose worker died from its last reported
checkpoint (`tune.get_checkpoint`); a study whose driver died is continued with ``resume=True``:
the database says what finished, and an unfinished trial restarts from the newest checkpoint
that loads among those earlier runs left for its key under the study's checkpoint directory.  Trials that failed
from an infrastructure fault (`failures.INFRASTRUCTURE`) train again on resume, every failed one
with ``retry_failed``.  Results the database refused wait in the study's journal
(`store.journal`) and are replayed first.  A study is marked completed only when the database
holds every trial's end and every epoch (`Store.missing_results`); otherwise it is interrupted,
`StudyRun.problems` says why, and a resume finishes it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

import optuna
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from rksearch.search import progress
from rksearch.search.planner import Node, PlannedTrial, Planner
from rksearch.search.schema import Choice, Continuous, IntRange, Study
from rksearch.search.trainable import planned_trial, train_planned
from rksearch.store import Store, StoreCallback, StoreError, TrialInfo, open_store
from rksearch.store.callback import storage_full
from rksearch.store.db import error_line
from rksearch.store.journal import Journal
from rksearch.training import environment, failures
from rksearch.training.checkpoint import first_loadable

log = logging.getLogger(__name__)

#: statuses that a resumed study does not train again (pruned only under ASHA, failed only when
#: the failure is not the machine's: see `_final_keys`)
FINAL = {"completed", "skipped", "failed"}
#: suggestions in a row an Optuna search may draw that are over budget or already trained
MAX_REDRAWS = 200


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


def blind(result: dict) -> dict:
    """A trial's result without its test metrics: what the searcher and the scheduler may see.

    Only the last report of a completed trial carries them (`rksearch.training.loop`), and Tune would
    hand it to both; selecting on them would make the test set a second validation set.
    """
    return {name: value for name, value in result.items() if not name.startswith("test_")}


class RecordingASHA(ASHAScheduler):
    """ASHA that remembers the trials it stopped: only those are pruned, not ones a stopped
    study ended (which a resume must continue)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stopped: set[str] = set()

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, blind(result))
        if decision == TrialScheduler.STOP and result.get("trial_status") == "running":
            self.stopped.add(trial.trial_id)
        return decision

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        super().on_trial_complete(tune_controller, trial, blind(result))

    def stopped_trial(self, trial_id: str) -> bool:
        return trial_id in self.stopped


class StopOnFatal(tune.Stopper):
    """Ends the whole study as soon as the store callback says it cannot go on (`fatal`)."""

    def __init__(self, callback: StoreCallback) -> None:
        self.callback = callback

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.callback.fatal is not None


# ---- Optuna ----------------------------------------------------------------------------------

class PlannedSearcher(Searcher):
    """Optuna (TPE, single or multi-objective) with the study's budgets and dedup applied first.

    Each Optuna suggestion is resolved and priced on the driver.  Over-budget or invalid points
    are recorded as skipped and told to Optuna as failed; points whose trial key already trained
    in this study are told to Optuna with the known result.  Neither costs a Tune trial, so
    `num_samples` counts trainings.  Categorical values that Optuna cannot hold (lists) travel
    as indices and are decoded here.
    """

    def __init__(self, planner: Planner, inner: OptunaSearch, record_skip: Callable[[PlannedTrial], None],
                 objectives: list[str], known: dict[str, dict[str, float]] | None = None) -> None:
        super().__init__(metric=inner.metric, mode=inner.mode)
        self.planner, self.inner, self.record_skip, self.objectives = planner, inner, record_skip, objectives
        self.known = dict(known or {})  # trial key -> objective values
        self.running: dict[str, tuple[str, str]] = {}  # tune trial id -> (inner id, key)
        self._draws = 0

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles the searcher into its experiment state; `record_skip` holds the store's
        # engine (unpicklable) and is only needed by this live driver, never by a pickled copy.
        return {**self.__dict__, "record_skip": None}

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True  # the space and objectives are ours, fixed at construction

    def suggest(self, trial_id: str) -> dict | None:
        seed = self.planner.study.seeds[0]
        busy = {key for _, key in self.running.values()}
        for attempt in range(MAX_REDRAWS):
            inner_id = f"{trial_id}-{attempt}"
            params = self.inner.suggest(inner_id)
            if params is None or params == Searcher.FINISHED:
                return params
            assignment = decode(self.planner, params)
            trial = self.planner.resolve(assignment, seed)
            if not trial.runnable:
                self.record_skip(trial)
                self.inner.on_trial_complete(inner_id, error=True)
            elif trial.key in self.known:
                self.inner.on_trial_complete(inner_id, result=self.known[trial.key])
            elif trial.key in busy:
                self.inner.on_trial_complete(inner_id, error=True)
            else:
                self.running[trial_id] = (inner_id, trial.key)
                return {"trial": {"assignment": assignment, "seed": seed}}
        log.warning("Optuna drew %d points in a row that were over budget or already trained; "
                    "ending the search early", MAX_REDRAWS)
        return Searcher.FINISHED

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self.running:
            self.inner.on_trial_result(self.running[trial_id][0], blind(result))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        inner_id, key = self.running.pop(trial_id, (None, None))
        if inner_id is None:
            return
        result = blind(result) if result is not None else None
        if result and not error and all(_finite(result.get(m)) for m in self.objectives):
            self.known[key] = {m: result[m] for m in self.objectives}
            self.inner.on_trial_complete(inner_id, result=result)
        else:
            self.inner.on_trial_complete(inner_id, error=True)

    def save(self, checkpoint_path: str) -> None:
        self.inner.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.inner.restore(checkpoint_path)


def optuna_space(planner: Planner) -> dict[str, optuna.distributions.BaseDistribution]:
    """The study's axes as Optuna distributions (list-valued choices as indices)."""
    space: dict[str, optuna.distributions.BaseDistribution] = {}
    for name, domain in planner.axes.items():
        if isinstance(domain, Continuous):
            space[name] = optuna.distributions.FloatDistribution(*domain.bounds, log=domain.log)
        elif isinstance(domain, IntRange):
            space[name] = optuna.distributions.IntDistribution(*domain.range, step=domain.step)
        else:
            values = domain.values
            space[name] = optuna.distributions.CategoricalDistribution(
                values if all(_optuna_scalar(v) for v in values) else list(range(len(values))))
    return space


def decode(planner: Planner, params: dict[str, Any]) -> dict[str, Any]:
    """An Optuna suggestion as an assignment (indices of list-valued choices looked up)."""
    out = {}
    for name, value in params.items():
        domain = planner.axes[name]
        if isinstance(domain, Choice) and not all(_optuna_scalar(v) for v in domain.values):
            value = domain.values[value]
        out[name] = value
    return out


def _optuna_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and value == value and abs(value) != float("inf")


# ---- the driver ------------------------------------------------------------------------------

def run_study(study: Study, study_text: str, *, storage_url: str, storage_path: str | None = None,
              address: str | None = None, resume: bool = False, retry_failed: bool = False,
              stream: TextIO | None = None, preflight: bool = True) -> StudyRun:
    """Run (or continue) a study to the end; every trial lands in the database at `storage_url`.

    The study row ends `completed` only when every trial has its results in the database,
    else `interrupted` (also when this function raises or is interrupted): never `running`
    once it returns.
    """
    started = time.monotonic()
    study = _absolute_paths(study)
    store = open_store(storage_url)
    root = Path(storage_path or study.storage.checkpoints).expanduser().resolve() / study.name
    own_ray = not ray.is_initialized()
    study_id = None
    try:
        if own_ray:
            _start_ray(address, root)
        # priced against the largest node's memory: a trial that cannot fit anywhere is skipped
        planner = Planner(study, node=Node.largest_ray_node(ray.nodes()))
        if preflight:
            from rksearch.search.preflight import raise_for_problems, run_preflight

            raise_for_problems(run_preflight(
                resources_per_trial=_ray_resources(study),
                checkpoint_path=str(root), storage_url=storage_url, open_db=open_store))
        study_id = store.begin_study(study.name, study_text, resume=resume)
        journal = Journal.beside(root)
        _replay(store, journal)
        run, expected = _execute(study, planner, store, storage_url, study_id, root, journal, stream, retry_failed)
        run.seconds = time.monotonic() - started
        try:
            _replay(store, journal)
            run.problems = list(store.missing_results(study_id, expected).values())
        except StoreError as exc:  # the database still refuses: the journal keeps everything
            run.fatal = run.fatal or str(exc)
        _finish_quietly(store, study_id, "completed" if run.complete else "interrupted")
        study_id = None  # its end is recorded
        return run
    finally:
        if study_id is not None:  # an exception or Ctrl-C on the way out: never left running
            _finish_quietly(store, study_id)
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
                         f"({type(exc).__name__}: {error_line(exc, store.engine.url)}); "
                         f"once the database takes writes again, resume") from None  # fmt: skip
    log.warning("results store: recorded %d results kept in %s", count, journal.path)


def _finish_quietly(store: Store, study_id: int, status: str = "interrupted") -> None:
    """Mark the study's end; a database that refuses even this is reported, not raised (the
    journal and the checkpoints still hold everything, and a resume sets the status right)."""
    try:
        store.finish_study(study_id, status)
    except Exception as exc:
        log.error("results store: cannot mark study %d %s: %s", study_id, status, error_line(exc, store.engine.url))


def _final_keys(statuses: dict[str, str], failed: dict[str, str | None], incomplete: set[str], study: Study,
                retry_failed: bool) -> set[str]:
    """Trial keys a resumed study does not train again: completed (with all its epochs), skipped,
    pruned under ASHA (without a scheduler only an interrupted run stops a trial early), and
    failed unless the failure was the machine's (or `retry_failed`)."""
    final = FINAL | ({"pruned"} if study.scheduler.type == "asha" else set())
    return {key for key, status in statuses.items()
            if status in final and key not in incomplete
            and not (status == "failed" and failures.retried_on_resume(failed.get(key), retry_failed=retry_failed))}


def _execute(study: Study, planner: Planner, store: Store, storage_url: str, study_id: int, root: Path,
             journal: Journal, stream: TextIO | None, retry_failed: bool = False) -> tuple[StudyRun, list[str]]:
    """Train what the study still needs; the run's counts and the trial keys that must have rows."""
    statuses = store.trial_statuses(study_id)
    # a completed trial short of an epoch (a write lost before the journal existed): retrain it
    incomplete = {key for key in store.missing_results(study_id) if statuses.get(key) == "completed"}
    done_before = _final_keys(statuses, store.trial_failures(study_id), incomplete, study, retry_failed)
    skipped = {key for key in done_before if statuses[key] == "skipped"}
    reused: set[str] = set()
    other_code: set[str] = set()  # reuse: completed elsewhere, but by another code version
    code = environment.code_version()[:50]

    def settle(trial: PlannedTrial) -> bool:
        """Record what needs no training; True when the trial must train."""
        if trial.key in done_before and statuses[trial.key] == "skipped" and trial.runnable:
            # skipped before, fits now (memory skips depend on the machine the study runs on)
            store.reopen_skipped(study_id, trial.key)
            statuses[trial.key] = "pending"
            skipped.discard(trial.key)
        elif trial.key in done_before:
            return False
        if not trial.runnable:
            store.record_skipped(study_id, trial.info(), trial.problem or "")
            statuses[trial.key] = "skipped"
            skipped.add(trial.key)
            return False
        if study.reuse and trial.key not in statuses:
            source = store.find_completed(trial.key, None if study.reuse == "any" else code)
            if source is not None:
                store.link_reused(study_id, trial.info(), source)
                statuses[trial.key] = "completed"
                reused.add(trial.key)
                return False
            if study.reuse != "any" and store.find_completed(trial.key) is not None:
                other_code.add(trial.key)
        return True

    def say_reused() -> None:
        if study.reuse:
            print(f"[{study.name}] reuse: linked {len(reused)} completed trials"
                  + (f"; left {len(other_code)} trained by another code version than {code} (reuse: any links them)"
                     if other_code else ""), file=stream or sys.stdout, flush=True)

    def counts(trained: int = 0, failed: int = 0, interrupted: bool = False, fatal: str | None = None) -> StudyRun:
        return StudyRun(study_id, len(planned) or total, trained, len(skipped), len(reused), already, interrupted,
                        0.0, fatal=fatal, failed=failed)

    study_json = study.model_dump_json()
    search = study.search
    if search.algorithm in ("grid", "random"):
        planned = planner.plan()
        keys = {t.key for t in planned}
        already = sum(1 for key in done_before if key in keys and statuses[key] != "skipped")
        stale = sum(1 for key, status in statuses.items() if key not in keys and status == "completed")
        if stale:  # their keys are not this plan's: another study file, protocol or key scheme
            print(f"[{study.name}] {stale} completed trials of this study are not in its plan any more (the "
                  f"study file or rksearch changed what they compute); they stay in the database and are not "
                  f"counted as done (see `results show`)", file=stream or sys.stdout, flush=True)
        todo = [t for t in planned if settle(t)]
        say_reused()
        total = len(todo)
        _abandon(store, study_id, statuses, keep={t.key for t in todo})
        if not todo:
            return counts(), []
        # a trial to retrain for missing epochs starts again from epoch 0: its checkpoints are past them
        left, notes = _latest_checkpoints(root, [t for t in todo if t.key in statuses and t.key not in incomplete])
        for note in notes:
            print(f"[{study.name}] {note}", file=stream or sys.stdout, flush=True)
        entries = [{"assignment": t.assignment, "seed": t.seed, "resume_candidates": left.get(t.key[:16], [])}
                   for t in todo]
        param_space = {"trial": tune.grid_search(entries)}
        searcher, num_samples = None, 1
    else:
        planned = []
        _abandon(store, study_id, statuses, keep=set())  # Optuna does not continue a trial it drew before
        already = sum(1 for key in done_before if statuses[key] != "skipped")  # every point drawn counts
        total = max(search.num_samples - already, 0)  # type: ignore[operator]
        if total == 0:
            return counts(), []
        searcher = _optuna(study, planner, settle, storage_url)
        param_space, num_samples = {}, total

    scheduler = None
    if study.scheduler.type == "asha":
        scheduler = RecordingASHA(time_attr="training_iteration", metric=search.metric, mode=search.mode,
                                  max_t=_max_epochs(study), grace_period=study.scheduler.grace_period,
                                  reduction_factor=study.scheduler.reduction_factor)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no Tune tables, our view only
    resources_line = ray.cluster_resources()
    print(f"[{study.name}] {total} trials to train ({len(skipped)} skipped, {len(reused)} reused, "
          f"{already} done before) on {resources_line.get('CPU', 0):g} CPUs / {resources_line.get('GPU', 0):g} GPUs; "
          f"checkpoints and Ray logs under {root}", file=stream or sys.stdout, flush=True)
    pruned = scheduler.stopped_trial if scheduler is not None else None
    view = progress.ProgressView(study.name, "best_val_acc", total, already, stream, pruned=pruned)
    recorder = StoreCallback(store, study_id, Describe(study_json), journal, pruned=pruned)
    resources = {name.lower(): amount for name, amount in _ray_resources(study).items()}
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(train_planned, study_json=study_json), resources),
        param_space=param_space,
        tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=scheduler, num_samples=num_samples,
            max_concurrent_trials=search.max_concurrent, reuse_actors=True,
            trial_name_creator=_TrialName(study_json), trial_dirname_creator=_TrialName(study_json, unique=True),
        ),
        run_config=tune.RunConfig(
            name=time.strftime("run-%Y%m%d-%H%M%S"), storage_path=str(root), verbose=0,
            callbacks=[recorder, view], stop=StopOnFatal(recorder),
            failure_config=tune.FailureConfig(max_failures=study.failure.max_failures),
            # the best epochs by validation accuracy (ties: the later, as `train` chooses) and the last
            checkpoint_config=tune.CheckpointConfig(num_to_keep=study.storage.keep_checkpoints,
                                                    checkpoint_score_attribute="val_acc", checkpoint_score_order="max"),
        ),
    )
    interrupted = False
    try:
        with _ctrl_c_reaches_us():
            tuner.fit()  # its ResultGrid is not read: the database says what finished
    except KeyboardInterrupt:
        interrupted = True
    except Exception as exc:  # Tune itself failed (its state on a full disk, a lost head node)
        log.debug("Tune stopped", exc_info=True)
        text = f"{type(exc).__name__}: {failures.last_line(str(exc)) or 'no message'}"
        recorder.stop(storage_full(text) if failures.classify(text) == failures.STORAGE_FULL
                      else f"Ray Tune stopped: {text}")
    view.finish()
    if searcher is not None:  # Optuna's points were settled (and reused) as it drew them
        say_reused()
    ended = list(recorder.ended.values())
    return counts(len(ended), ended.count("failed"), interrupted, recorder.fatal), [t.key for t in planned]


def _abandon(store: Store, study_id: int, statuses: dict[str, str], keep: set[str]) -> None:
    """Trials an earlier run left unfinished that this run will not continue (an Optuna search
    draws new points; a grid whose study file no longer plans them) end as failed, interrupted:
    a row may not claim `running` with nothing running it, nor keep the study from completing."""
    for key, status in statuses.items():
        if status in ("running", "pending") and key not in keep:
            store.trial_finished(study_id, key, "failed", "cut short when its study stopped, and not continued",
                                 failure=failures.INTERRUPTED)
            statuses[key] = "failed"


@contextlib.contextmanager
def _ctrl_c_reaches_us() -> Iterator[None]:
    """Ctrl-C as KeyboardInterrupt out of `Tuner.fit`: Tune's own handler would end the trials
    and return as if the run were over, and its end callbacks would record them as finished."""
    previous = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = previous


def _optuna(study: Study, planner: Planner, record_skip: Callable[[PlannedTrial], Any],
            storage_url: str) -> PlannedSearcher:
    search = study.search
    metric: str | list[str] = search.metric
    mode: str | list[str] = search.mode
    objectives = [search.metric]
    if search.algorithm == "multi_objective":
        metric, mode, objectives = [search.metric, search.cost], [search.mode, "min"], [search.metric, search.cost]
    inner = OptunaSearch(space=optuna_space(planner), metric=metric, mode=mode,
                         sampler=optuna.samplers.TPESampler(seed=search.seed))
    known = _known_results(storage_url, study.name, objectives)
    return PlannedSearcher(planner, inner, record_skip, objectives, known)


def _known_results(storage_url: str, study: str, objectives: list[str]) -> dict[str, dict]:
    """Objective values of trials this study already trained (a resumed Optuna search)."""
    from rksearch import results

    done = results.load(storage_url, study=study)
    metric_column = {"best_val_acc": "best_val_acc", "val_acc": "final_val_acc"}
    known = {}
    for row in done.itertuples(index=False):
        values = {objectives[0]: getattr(row, metric_column[objectives[0]])}
        for extra in objectives[1:]:
            values[extra] = getattr(row, extra)
        known[row.trial_key] = values
    return known


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


def _ray_resources(study: Study) -> dict[str, float]:
    """What one trial reserves in Ray: CPUs, GPUs, and memory when `resources.memory` says."""
    reserved = {"CPU": study.resources.cpu, "GPU": study.resources.gpu}
    if study.resources.memory is not None:
        reserved["memory"] = study.resources.memory
    return reserved


def _max_epochs(study: Study) -> int:
    domain = study.space.get("epochs")
    if domain is None:
        return study.train.epochs
    return int(max(domain.values if isinstance(domain, (Choice, IntRange)) else domain.bounds))


def _absolute_paths(study: Study) -> Study:
    """Relative data roots mean the driver's working directory, wherever a trial runs."""
    data = study.data.model_copy(update={"root": study.data.root.expanduser().resolve()})
    return study.model_copy(update={"data": data})


class _LogFile(logging.FileHandler):
    """Ray's log file.  On a full disk every record fails to write, and logging's default is a
    traceback on stderr per record: the study's own one-line error says it instead."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass


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
    ray.init(address=address or "local", include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
             configure_logging=False)
    # Ray installs a SIGTERM handler that exits at once (sys.exit from a C++ hook, before any
    # cleanup of ours); put back the caller's own (run.py's marks the study interrupted)
    if callable(on_sigterm) and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_sigterm)
    log.info("Ray logs: %s", log_file)

