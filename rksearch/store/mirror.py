"""Every rksearch study as an Optuna study in the same database, for Optuna's own tools.

Optuna's RDB schema lives beside ours (revision 0005), so ``optuna.load_study(study_name=NAME,
storage=URL)`` and optuna-dashboard open any study, whatever its algorithm.  For grid and random
studies this mirror writes the Optuna trials; TPE and multi-objective studies are searched by
an Optuna study in that same storage (`search.searcher`), which is their mirror.

Our tables are the record and this is derived from them: `OptunaMirror.sync` reads a study's
ended trials from our rows and adds, through Optuna's public API, those Optuna lacks.  Each
Optuna trial carries its trial key (user attribute `KEY_ATTR`), so a sync is idempotent and a
resumed study, a replayed journal or reused trials never duplicate one.  The driver syncs
trials as their ends are recorded (together, at most every `callback.MIRROR_EVERY_S`) and the
whole study at the end of every run; a sync that fails is logged as a warning and repaired by
the next one, never at the cost of our own rows.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from rksearch.store import db
from rksearch.store.schema import epochs, trials
from rksearch.store.writer import Store
from rksearch.training.status import TrialStatus

log = logging.getLogger(__name__)

#: the user attribute that names an Optuna trial's rksearch trial key
KEY_ATTR = "trial_key"
#: our end statuses as Optuna trial states; a skipped trial is no Optuna trial
STATES = {TrialStatus.COMPLETED: TrialState.COMPLETE, TrialStatus.PRUNED: TrialState.PRUNED,
          TrialStatus.FAILED: TrialState.FAIL}
#: an objective (`search.metric`, `search.cost`) -> the trial column holding its value
OBJECTIVE_COLUMNS = {"best_val_acc": "best_val_acc", "val_acc": "final_val_acc", "flops": "flops", "params": "params"}


def objective_values(row: Any, objectives: Iterable[str]) -> list[float | None]:
    """A trial row's value of each objective, by attribute (a result row, a DataFrame tuple)."""
    values = [getattr(row, OBJECTIVE_COLUMNS[name]) for name in objectives]
    return [None if value is None else float(value) for value in values]


def user_attrs(trial_key: str, model_name: str, params: int | None, flops: int | None) -> dict[str, Any]:
    """What an Optuna trial of ours says beside its params: the model, its costs, its key."""
    return {KEY_ATTR: trial_key, "model_name": model_name, "params": params, "flops": flops}


def optuna_storage(url: str | sa.URL) -> optuna.storages.RDBStorage:
    """Optuna's storage on our database.  On SQLite it waits for our writers' lock as long as
    they wait for each other (Optuna's default is sqlite3's 5 s)."""
    url = sa.make_url(url)
    sqlite = url.get_backend_name() == "sqlite"
    kwargs = {"connect_args": {"timeout": db.SQLITE_BUSY_TIMEOUT_S}} if sqlite else {}
    return optuna.storages.RDBStorage(url.render_as_string(hide_password=False), engine_kwargs=kwargs)


@dataclass
class OptunaMirror:
    """The Optuna side of one study: its name, objectives and search space as Optuna sees them.

    `indexed` names list-valued choices, which Optuna cannot hold as values: their params are
    indices into those lists (as `search.searcher.optuna_space` gives Optuna searches).
    """

    study_name: str
    objectives: list[str]
    directions: list[str]
    distributions: dict[str, BaseDistribution]
    indexed: dict[str, list] = field(default_factory=dict)

    def sync(self, store: Store, study_id: int, keys: Iterable[str] | None = None) -> int:
        """Add to Optuna the ended trials of `study_id` (only `keys`, if given) it lacks; how
        many were added.  Never raises: a failure is a warning, and the next sync repairs it."""
        try:
            return self._sync(store, study_id, None if keys is None else set(keys))
        except Exception as exc:  # Optuna's or the database's: the mirror must not stop a study
            log.warning("Optuna mirror of study %r not updated (%s: %s); the next sync retries",
                        self.study_name, type(exc).__name__, db.driver_error(exc, store.engine.url))
            return 0

    def _sync(self, store: Store, study_id: int, keys: set[str] | None) -> int:
        rows, curves = _ended_trials(store, study_id, keys)
        if not rows:
            return 0
        # a storage per sync, disposed after it: a SQLite file is left with no connection of
        # Optuna's open between syncs (so it checkpoints its WAL), and nothing holds the URL
        storage = optuna_storage(store.engine.url)
        try:
            study = self._study(storage)
            have = {(t.user_attrs.get(KEY_ATTR), t.state) for t in study.get_trials(deepcopy=False)}
            added = 0
            for row in rows:
                frozen = self._frozen(row, curves.get(row.id, {}))
                if frozen is not None and (row.trial_key, frozen.state) not in have:
                    study.add_trial(frozen)
                    added += 1
            return added
        finally:
            storage.engine.dispose()

    def _study(self, storage: optuna.storages.RDBStorage) -> optuna.Study:
        """The Optuna study, created by the study's first sync."""
        try:
            return optuna.load_study(study_name=self.study_name, storage=storage)
        except KeyError:
            study = optuna.create_study(storage=storage, study_name=self.study_name, directions=self.directions)
            name_objectives(study, self.objectives)
            return study

    def _frozen(self, row: Any, curve: dict[int, float]) -> FrozenTrial | None:
        """Our trial row as a finished Optuna trial; None when Optuna cannot hold it (a completed
        trial without its objective values: it is logged, not forced into another state)."""
        state = STATES[TrialStatus(row.status)]
        values = objective_values(row, self.objectives) if state == TrialState.COMPLETE else None
        if values is not None and None in values:
            log.warning("Optuna mirror: trial %s completed without %s; not mirrored", row.trial_key, self.objectives)
            return None
        params = {name: self._param(name, value) for name, value in row.dims.items() if name in self.distributions}
        return FrozenTrial(
            number=0, trial_id=0, state=state, value=None, values=values,
            datetime_start=row.started_at or row.finished_at, datetime_complete=row.finished_at,
            params=params, distributions={name: self.distributions[name] for name in params},
            user_attrs=user_attrs(row.trial_key, row.model_name, row.params, row.flops), system_attrs={},
            intermediate_values=curve,
        )  # fmt: skip

    def _param(self, name: str, value: Any) -> Any:
        choices = self.indexed.get(name)
        return choices.index(value) if choices is not None else value


def _ended_trials(store: Store, study_id: int, keys: set[str] | None) -> tuple[list[Any], dict[int, dict[int, float]]]:
    """The study's trials in an Optuna state, and each one's validation accuracy by epoch."""
    query = sa.select(trials).where(trials.c.study_id == study_id, trials.c.status.in_(list(STATES)))
    if keys is not None:
        query = query.where(trials.c.trial_key.in_(sorted(keys)))
    curve_query = (sa.select(epochs.c.trial_id, epochs.c.epoch, epochs.c.val_acc)
                   .where(epochs.c.trial_id.in_(query.with_only_columns(trials.c.id).scalar_subquery()),
                          epochs.c.val_acc.is_not(None)))  # fmt: skip
    with db.reading(store.engine) as conn:
        rows = conn.execute(query.order_by(trials.c.id)).all()
        curves: dict[int, dict[int, float]] = {}
        for trial_id, epoch, val_acc in conn.execute(curve_query):
            curves.setdefault(trial_id, {})[epoch] = val_acc
    return rows, curves


def name_objectives(study: optuna.Study, objectives: list[str]) -> None:
    """Give the Optuna study's values our metric names, so optuna-dashboard and Optuna's plots
    say ``best_val_acc`` rather than "Objective 0" (an experimental Optuna API: its warning is
    about Optuna's stability, not the user's study, so it is not shown)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(objectives))


__all__ = ["KEY_ATTR", "STATES", "OBJECTIVE_COLUMNS", "OptunaMirror", "name_objectives", "optuna_storage",
           "objective_values", "user_attrs"]
