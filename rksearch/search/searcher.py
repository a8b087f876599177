"""The searcher adaptor: Optuna's suggestions, priced and deduplicated before Tune runs them.

Ray Tune's `OptunaSearch` would hand every suggestion straight to a worker.  `PlannedSearcher`
sits between the two: it resolves each suggestion with the study's `Planner` on the driver,
records over-budget and invalid points as skipped, answers points already trained from what is
known, and lets only new, runnable trials through.  `optuna_searcher` builds it for a study,
with the results of an earlier run of the same study, so a resumed search goes on where it was.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable

import optuna
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from rksearch.search.planner import PlannedTrial, Planner
from rksearch.search.schedulers import blind
from rksearch.search.schema import Choice, Continuous, IntRange, Study

log = logging.getLogger(__name__)

#: suggestions in a row an Optuna search may draw that are over budget or already trained
MAX_REDRAWS = 200


class PlannedSearcher(Searcher):
    """Optuna (TPE, single or multi-objective) with the study's budgets and dedup applied first.

    Each Optuna suggestion is resolved and priced on the driver.  Over-budget or invalid points
    are recorded as skipped and told to Optuna as failed; points whose trial key already trained
    in this study are told to Optuna with the known result.  Neither costs a Tune trial, so
    `num_samples` counts trainings.  Categorical values that Optuna cannot hold (lists) travel
    as indices and are decoded here.
    """

    def __init__(self, planner: Planner, inner: OptunaSearch, record_skip: Callable[[PlannedTrial], Any],
                 objectives: list[str], known: dict[str, dict[str, float]] | None = None) -> None:
        super().__init__(metric=inner.metric, mode=inner.mode)
        self.planner, self.inner, self.record_skip, self.objectives = planner, inner, record_skip, objectives
        self.known = dict(known or {})  # trial key -> objective values
        self.running: dict[str, tuple[str, str]] = {}  # tune trial id -> (inner id, key)

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
        if result and not error and all(_measured(result.get(m)) for m in self.objectives):
            self.known[key] = {m: result[m] for m in self.objectives}
            self.inner.on_trial_complete(inner_id, result=result)
        else:
            self.inner.on_trial_complete(inner_id, error=True)

    def save(self, checkpoint_path: str) -> None:
        self.inner.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.inner.restore(checkpoint_path)


def optuna_searcher(study: Study, planner: Planner, record_skip: Callable[[PlannedTrial], Any],
                    storage_url: str) -> PlannedSearcher:
    """The study's Optuna search (TPE, or TPE on accuracy and cost for ``multi_objective``),
    knowing what the study already trained in the database at `storage_url`."""
    search = study.search
    metric: str | list[str] = search.metric
    mode: str | list[str] = search.mode
    objectives = [search.metric]
    if search.algorithm == "multi_objective":
        metric, mode, objectives = [search.metric, search.cost], [search.mode, "min"], [search.metric, search.cost]
    inner = OptunaSearch(space=optuna_space(planner), metric=metric, mode=mode,
                         sampler=optuna.samplers.TPESampler(seed=search.seed))
    known = known_results(storage_url, study.name, objectives)
    return PlannedSearcher(planner, inner, record_skip, objectives, known)


def known_results(storage_url: str, study: str, objectives: list[str]) -> dict[str, dict]:
    """Objective values of trials this study already trained (a resumed Optuna search)."""
    from rksearch.store import queries

    done = queries.load(storage_url, study=study)
    metric_column = {"best_val_acc": "best_val_acc", "val_acc": "final_val_acc"}
    known = {}
    for row in done.itertuples(index=False):
        values = {objectives[0]: getattr(row, metric_column[objectives[0]])}
        for extra in objectives[1:]:
            values[extra] = getattr(row, extra)
        known[row.trial_key] = values
    return known


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
    """Whether Optuna can hold `value` as a categorical choice itself (else it travels as an index)."""
    return value is None or isinstance(value, (bool, int, float, str))


def _measured(value: Any) -> bool:
    """Whether an objective came back as a finite number Optuna can learn from (not NaN, not missing)."""
    return isinstance(value, (int, float)) and math.isfinite(value)


__all__ = ["MAX_REDRAWS", "PlannedSearcher", "optuna_searcher", "known_results", "optuna_space", "decode"]
