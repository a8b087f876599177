"""The searcher adaptor: Optuna's suggestions, priced and deduplicated before Tune runs them.

Ray Tune's `OptunaSearch` would hand every suggestion straight to a worker.  `PlannedSearcher`
sits between the two: it resolves each suggestion with the study's `Planner` on the driver,
records over-budget and invalid points as skipped, answers points already trained from what is
known, and lets only new, runnable trials through.  `optuna_searcher` builds it for a study,
with the results of an earlier run of the same study, so a resumed search goes on where it was.

The Optuna study lives in the results database (Optuna's RDB schema beside ours, named as our
study): a resumed search's sampler is told every earlier trial, and that study is also the
study's Optuna mirror (`store.mirror`), so each trial there carries the same user attributes and
per-epoch validation accuracy as a grid study's mirrored trials.  `optuna_mirror` builds the
mirror of a grid or random study.
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
from rksearch.store.mirror import OptunaMirror, name_objectives, objective_values, optuna_storage, user_attrs

log = logging.getLogger(__name__)

#: suggestions in a row an Optuna search may draw that are over budget or already trained
MAX_REDRAWS = 200


class PlannedSearcher(Searcher):
    """Optuna (TPE, single or multi-objective) with the study's budgets and dedup applied first.

    Each Optuna suggestion is resolved and priced on the driver.  Over-budget or invalid points
    are recorded as skipped and told to Optuna as failed (user attribute ``skipped``: why);
    points whose trial key already trained or is training in this study are told to Optuna with
    the known result, or as failed while it trains (user attribute ``repeat_of``: that key).
    None costs a Tune trial, so `num_samples` counts trainings.  Categorical values that Optuna
    cannot hold (lists) travel as indices and are decoded here.  A trial that trains carries the
    mirror's user attributes (`store.mirror.user_attrs`) and its validation accuracy per epoch.
    """

    def __init__(self, planner: Planner, inner: OptunaSearch, record_skip: Callable[[PlannedTrial], Any],
                 objectives: list[str], known: dict[str, dict[str, float]] | None = None,
                 storage: optuna.storages.BaseStorage | None = None) -> None:
        super().__init__(metric=inner.metric, mode=inner.mode)
        self.planner, self.inner, self.record_skip, self.objectives = planner, inner, record_skip, objectives
        self.known = dict(known or {})  # trial key -> objective values
        self.running: dict[str, tuple[str, str]] = {}  # tune trial id -> (inner id, key)
        self.storage = storage  # where `inner` keeps its study: per-epoch values are written there
        self._storage_ids: dict[str, int] = {}  # inner id -> the Optuna storage's trial id

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles the searcher into its experiment state; `record_skip` holds the store's
        # engine (unpicklable) and the Optuna study and storage the database URL with its
        # password.  A pickled copy is never used: a resumed study reloads the sampler's state
        # from that storage (`optuna_searcher`).
        return {**self.__dict__, "record_skip": None, "inner": None, "storage": None}

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
            drawn = self.inner._ot_trials[inner_id]  # OptunaSearch's only handle on the Optuna trial
            if not trial.runnable:
                self.record_skip(trial)
                drawn.set_user_attr("skipped", trial.problem or "not runnable")
                self.inner.on_trial_complete(inner_id, error=True)
            elif trial.key in self.known or trial.key in busy:
                drawn.set_user_attr("repeat_of", trial.key)
                self.inner.on_trial_complete(inner_id, result=self.known.get(trial.key), error=True)
            else:
                c = trial.cost
                for name, value in user_attrs(trial.key, trial.model_name, c and c.params, c and c.flops).items():
                    drawn.set_user_attr(name, value)
                self.running[trial_id] = (inner_id, trial.key)
                return {"trial": {"assignment": assignment, "seed": seed}}
        log.warning("Optuna drew %d points in a row that were over budget or already trained; "
                    "ending the search early", MAX_REDRAWS)
        return Searcher.FINISHED

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """The epoch's validation accuracy as the Optuna trial's intermediate value at that epoch
        (what a grid study's mirror holds); Tune's schedulers prune, not Optuna, so the sampler
        reads none of these."""
        if trial_id not in self.running or self.storage is None or "epoch" not in result:
            return
        inner_id = self.running[trial_id][0]
        if not _measured(result.get("val_acc")):
            return
        try:
            self.storage.set_trial_intermediate_value(self._storage_id(inner_id), int(result["epoch"]),
                                                      float(result["val_acc"]))  # fmt: skip
        except Exception as exc:  # a curve point lost in Optuna only; our epochs row holds it
            log.warning("Optuna: epoch %s of trial %s not recorded (%s)", result["epoch"], inner_id, type(exc).__name__)

    def _storage_id(self, inner_id: str) -> int:
        if inner_id not in self._storage_ids:
            study_id = self.storage.get_study_id_from_name(self.planner.study.name)
            number = self.inner._ot_trials[inner_id].number
            self._storage_ids[inner_id] = self.storage.get_trial_id_from_study_id_trial_number(study_id, number)
        return self._storage_ids[inner_id]

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
        """Nothing to save: the sampler's state is its Optuna study in the results database."""

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore: `optuna_searcher` loads the study from the results database."""


def objectives_of(study: Study) -> tuple[list[str], list[str]]:
    """The study's objectives and their modes: its metric (max), and for ``multi_objective``
    also its cost (min)."""
    search = study.search
    if search.algorithm == "multi_objective":
        return [search.metric, search.cost], [search.mode, "min"]
    return [search.metric], [search.mode]


def _directions(modes: list[str]) -> list[str]:
    return ["maximize" if mode == "max" else "minimize" for mode in modes]


def optuna_searcher(study: Study, planner: Planner, record_skip: Callable[[PlannedTrial], Any],
                    storage_url: str) -> PlannedSearcher:
    """The study's Optuna search (TPE, or TPE on accuracy and cost for ``multi_objective``) in
    the database at `storage_url`, as the Optuna study named like ours.

    A resumed search loads that study, so TPE is told every earlier trial; a trial an earlier
    driver left running there (it was killed) is failed first, as our own row is (`abandon`).
    """
    objectives, modes = objectives_of(study)
    storage = optuna_storage(storage_url)
    earlier = optuna.create_study(storage=storage, study_name=study.name, directions=_directions(modes),
                                  load_if_exists=True)  # fmt: skip
    name_objectives(earlier, objectives)
    for stale in earlier.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        earlier.tell(stale.number, state=optuna.trial.TrialState.FAIL)
    single = len(objectives) == 1
    inner = OptunaSearch(space=optuna_space(planner), metric=objectives[0] if single else objectives,
                         mode=modes[0] if single else modes, sampler=optuna.samplers.TPESampler(seed=study.search.seed),
                         storage=storage, study_name=study.name)  # fmt: skip
    known = known_results(storage_url, study.name, objectives)
    return PlannedSearcher(planner, inner, record_skip, objectives, known, storage)


def optuna_mirror(study: Study, planner: Planner) -> OptunaMirror | None:
    """The Optuna mirror of a grid or random study; None for an Optuna search, whose own study
    in the same storage is its mirror."""
    if study.search.algorithm not in ("grid", "random"):
        return None
    objectives, modes = objectives_of(study)
    indexed = {name: list(domain.values) for name, domain in planner.axes.items()
               if isinstance(domain, Choice) and not all(_optuna_scalar(v) for v in domain.values)}  # fmt: skip
    return OptunaMirror(study.name, objectives, _directions(modes), optuna_space(planner), indexed)


def known_results(storage_url: str, study: str, objectives: list[str]) -> dict[str, dict]:
    """Objective values of trials this study already trained (a resumed Optuna search)."""
    from rksearch.store import queries

    done = queries.load(storage_url, study=study)
    return {row.trial_key: dict(zip(objectives, objective_values(row, objectives)))
            for row in done.itertuples(index=False)}  # fmt: skip


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


__all__ = ["MAX_REDRAWS", "PlannedSearcher", "optuna_searcher", "optuna_mirror", "objectives_of", "known_results",
           "optuna_space", "decode"]
