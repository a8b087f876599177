"""Ray Tune + Optuna execution of a validated study.

Data flow (architecture.md): the `Planner` prices every trial on the driver; budgets, invalid
architectures and trials already in the database are settled there and recorded as skipped /
reused / done; what is left goes to Ray Tune.  Grid and random studies hand Tune the exact list
of planned trials; Optuna studies go through `PlannedSearcher`, which prices each suggestion on
the driver and never lets an over-budget or duplicate point reach a worker.  Workers run
`rksearch.trainable.train_planned`, which re-derives the trial from its assignment and calls
`train.run_trial`, reporting every epoch with its checkpoint; the driver's `StoreCallback` is
the only writer.

Fault tolerance: Tune's `FailureConfig` retries a trial whose worker died from its last reported
checkpoint (`tune.get_checkpoint`); a study whose driver died is continued with ``resume=True``:
the database says what finished, and an unfinished trial restarts from the newest checkpoint
any earlier run left for its key under the study's checkpoint directory.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TextIO

import optuna
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from . import progress
from .space import PlannedTrial, Planner
from .store import Store, StoreCallback, TrialInfo, open_store
from .study import Choice, Continuous, IntRange, Study
from .trainable import planned_trial, train_planned

log = logging.getLogger(__name__)

#: statuses that a resumed study does not train again (pruned only counts under ASHA: without a
#: scheduler the only way to stop early is an interrupted run)
FINAL = {"completed", "skipped", "failed"}
#: suggestions in a row an Optuna search may draw that are over budget or already trained
MAX_REDRAWS = 200


@dataclass
class StudyRun:
    """What `run_study` did, for the CLI's summary and for tests."""

    study_id: int
    planned: int
    trained: int
    skipped: int
    reused: int
    already_done: int
    interrupted: bool
    seconds: float


# ---- driver-side helpers that Ray pickles ---------------------------------------------------

class Describe:
    """Picklable ``trial.config -> TrialInfo`` for the store callback (Ray pickles callbacks)."""

    def __init__(self, study_json: str) -> None:
        self.study_json = study_json

    def __call__(self, config: dict[str, Any]) -> TrialInfo:
        return planned_trial(self.study_json, config).info()


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
            self.inner.on_trial_result(self.running[trial_id][0], result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        inner_id, key = self.running.pop(trial_id, (None, None))
        if inner_id is None:
            return
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
              address: str | None = None, resume: bool = False, stream: TextIO | None = None,
              preflight: bool = True) -> StudyRun:
    """Run (or continue) a study to the end; every trial lands in the database at `storage_url`."""
    started = time.monotonic()
    study = _absolute_paths(study)
    planner = Planner(study)
    store = open_store(storage_url)
    root = Path(storage_path or study.storage.checkpoints).expanduser().resolve() / study.name
    own_ray = not ray.is_initialized()
    if own_ray:
        _start_ray(address, root)
    try:
        if preflight:
            from .preflight import raise_for_problems, run_preflight

            raise_for_problems(run_preflight(
                resources_per_trial={"CPU": study.resources.cpu, "GPU": study.resources.gpu},
                checkpoint_path=str(root), storage_url=storage_url, open_db=open_store))
        study_id = store.begin_study(study.name, study_text, resume=resume)
        run = _execute(study, planner, store, storage_url, study_id, root, stream)
        run.seconds = time.monotonic() - started
        store.finish_study(study_id, "interrupted" if run.interrupted else "completed")
        return run
    finally:
        if own_ray:
            ray.shutdown()


def _execute(study: Study, planner: Planner, store: Store, storage_url: str, study_id: int, root: Path,
             stream: TextIO | None) -> StudyRun:
    statuses = store.trial_statuses(study_id)
    final = FINAL | ({"pruned"} if study.scheduler.type == "asha" else set())
    already = sum(1 for s in statuses.values() if s in final)
    counts = {"skipped": 0, "reused": 0}

    def settle(trial: PlannedTrial) -> bool:
        """Record what needs no training; True when the trial must train."""
        if statuses.get(trial.key) in final:
            return False
        if not trial.runnable:
            store.record_skipped(study_id, trial.info(), trial.problem or "")
            statuses[trial.key] = "skipped"
            counts["skipped"] += 1
            return False
        if study.reuse and trial.key not in statuses:
            source = store.find_completed(trial.key)
            if source is not None:
                store.link_reused(study_id, trial.info(), source)
                statuses[trial.key] = "completed"
                counts["reused"] += 1
                return False
        return True

    study_json = study.model_dump_json()
    search = study.search
    if search.algorithm in ("grid", "random"):
        planned = planner.plan()
        todo = [t for t in planned if settle(t)]
        if not todo:
            return StudyRun(study_id, len(planned), 0, counts["skipped"], counts["reused"], already, False, 0.0)
        left = _latest_checkpoints(root) if any(t.key in statuses for t in todo) else {}
        entries = [{"assignment": t.assignment, "seed": t.seed,
                    "resume_from": left.get(t.key[:16]) if t.key in statuses else None}
                   for t in todo]
        param_space = {"trial": tune.grid_search(entries)}
        searcher, num_samples, total = None, 1, len(todo)
    else:
        trained = sum(1 for s in statuses.values() if s in final - {"skipped"})
        total = max(search.num_samples - trained, 0)  # type: ignore[operator]
        planned = []
        if total == 0:
            return StudyRun(study_id, 0, 0, 0, 0, already, False, 0.0)
        searcher = _optuna(study, planner, settle, storage_url)
        param_space, num_samples = {}, total

    scheduler = None
    if study.scheduler.type == "asha":
        scheduler = ASHAScheduler(time_attr="training_iteration", metric=search.metric, mode=search.mode,
                                  max_t=_max_epochs(study), grace_period=study.scheduler.grace_period,
                                  reduction_factor=study.scheduler.reduction_factor)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no Tune tables, our view only
    resources_line = ray.cluster_resources()
    print(f"[{study.name}] {total} trials to train ({counts['skipped']} skipped, {counts['reused']} reused, "
          f"{already} done before) on {resources_line.get('CPU', 0):g} CPUs / {resources_line.get('GPU', 0):g} GPUs; "
          f"checkpoints and Ray logs under {root}", file=stream or sys.stdout, flush=True)
    view = progress.ProgressView(study.name, "best_val_acc", total, already, stream)
    resources = {"cpu": study.resources.cpu, "gpu": study.resources.gpu}
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
            callbacks=[StoreCallback(store, study_id, Describe(study_json)), view],
            failure_config=tune.FailureConfig(max_failures=study.failure.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=study.storage.keep_checkpoints),
        ),
    )
    interrupted = False
    try:
        grid = tuner.fit()
        interrupted = any(t.metrics.get("trial_status") == "running" for t in grid) and scheduler is None
    except KeyboardInterrupt:
        interrupted = True
    trained = sum(1 for s in store.trial_statuses(study_id).values() if s != "skipped") - already
    return StudyRun(study_id, len(planned) or total, trained, counts["skipped"], counts["reused"], already,
                    interrupted, 0.0)


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
    from . import results

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


def _latest_checkpoints(root: Path) -> dict[str, str]:
    """Per trial key prefix (a trial directory's name, see `_TrialName`): the newest checkpoint
    directory earlier runs of this study left under `root`; one walk for all trials."""
    found = sorted(root.glob("run-*/*_*/checkpoint_*/checkpoint.pt"), key=lambda p: p.stat().st_mtime)
    return {p.parent.parent.name.split("_", 1)[0]: str(p.parent) for p in found}  # newest last: wins


def _max_epochs(study: Study) -> int:
    domain = study.space.get("epochs")
    if domain is None:
        return study.train.epochs
    return int(max(domain.values if isinstance(domain, (Choice, IntRange)) else domain.bounds))


def _absolute_paths(study: Study) -> Study:
    """Relative data roots mean the driver's working directory, wherever a trial runs."""
    data = study.data.model_copy(update={"root": study.data.root.expanduser().resolve()})
    return study.model_copy(update={"data": data})


def _start_ray(address: str | None, root: Path) -> None:
    """A local Ray sized to the machine (or the cluster at `address`), its logs in a file."""
    root.mkdir(parents=True, exist_ok=True)
    log_file = root / "ray-driver.log"
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("ray", "ray.tune", "ray.train"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.propagate = False
    # no address: always a fresh local Ray ("local"), never whichever cluster happens to be
    # running on this machine; "auto" or an address joins one deliberately
    ray.init(address=address or "local", include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
             configure_logging=False)
    log.info("Ray logs: %s", log_file)

