"""Optuna's own plots of a study, read from the Optuna study rksearch keeps in the same database.

Every rksearch study is also an Optuna study in its database (params are the search dimensions,
values the objectives), so the plots Optuna users know come from Optuna itself rather than a copy
here: parameter importances through `optuna.importance` (fANOVA, seeded, so the numbers and the
chart agree run after run) and the parallel-coordinate, contour and history plots of
`optuna.visualization.matplotlib`.  This module only loads the study safely, picks the objective
of a multi-objective study, refuses what Optuna would draw as an empty chart, and hands back a
`matplotlib.figure.Figure`.

Loading never writes: a database without Optuna's tables (one written before rksearch mirrored
its studies) is refused before Optuna could create its tables in it, as
``optuna.load_study(storage=URL)`` would, with the command that mirrors its studies.  Optuna and its plotting are imported only here, so
`rksearch plot figure4` never imports them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import matplotlib
import numpy as np
import optuna
import sqlalchemy as sa
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from optuna.importance import FanovaImportanceEvaluator, get_param_importances
from optuna.search_space import intersection_search_space
from optuna.trial import FrozenTrial, TrialState
from optuna.visualization import matplotlib as optuna_matplotlib

from rksearch.store import db
from rksearch.store.urls import redact

#: the table Optuna's RDB schema always has: a database without it holds no Optuna study
OPTUNA_MARKER_TABLE = "version_info"

#: how a study recorded before the Optuna mirror gets one: a resumed run retrains nothing and
#: mirrors every recorded trial at its end
_MIRROR_HINT = "'rksearch run STUDY.yaml --storage URL --resume' adds it from the recorded trials, training nothing"

#: completed trials a plot needs: fANOVA and the contour need two, and one point shows nothing
MIN_COMPLETE = 2

#: search dimensions each kind needs (a contour is drawn over a pair of them)
MIN_PARAMS = {"importance": 1, "parallel": 1, "contour": 2, "history": 0}

#: the seed of the fANOVA forest, so the printed importances and the chart are the same numbers
FANOVA_SEED = 0

#: figure size per kind, inches: the contour grid needs room for every pair of dimensions
_SIZES = {"importance": (7.0, 4.0), "parallel": (9.0, 5.0), "contour": (10.0, 8.0), "history": (8.0, 4.5)}


@dataclass(frozen=True)
class StudyObjective:
    """The value a plot shows: objective `index` of a study with `count` of them, named `name`."""

    index: int
    name: str
    count: int

    @property
    def target(self) -> Callable[[FrozenTrial], float] | None:
        """What Optuna's functions take as `target`: None for a single objective (so the history
        plot draws the best so far in the study's direction), else the chosen value."""
        if self.count == 1:
            return None
        index = self.index
        return lambda trial: trial.values[index]

    def describe(self) -> str:
        """'val_acc' for a single objective, 'val_acc (objective 0 of 2)' for one of several."""
        if self.count == 1:
            return self.name
        return f"{self.name} (objective {self.index} of {self.count})"


def optuna_study(url: str, name: str) -> optuna.Study:
    """The Optuna study `name` in the database at `url`, read without writing anything.

    Raises StoreError for a bad URL or missing file, ValueError (one line, what to do) for a
    database without Optuna's tables or without that study.
    """
    engine = db.create_engine(url, create=False)
    try:
        tables = set(sa.inspect(engine).get_table_names())
    except sa.exc.SQLAlchemyError as exc:
        raise db.StoreError(f"cannot open {redact(engine.url)}: {db.driver_error(exc, engine.url)}") from None
    finally:
        engine.dispose()
    if OPTUNA_MARKER_TABLE not in tables:
        raise ValueError(f"{redact(url)} has no Optuna studies (recorded before rksearch kept one per study): "
                         f"{_MIRROR_HINT}")  # fmt: skip
    try:
        storage = optuna.storages.RDBStorage(url, skip_table_creation=True)
    except RuntimeError as exc:  # Optuna's schema check: a database of another Optuna version
        raise ValueError(f"Optuna cannot read {redact(url)}: {str(exc).splitlines()[0]}") from None
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        known = ", ".join(optuna.get_all_study_names(storage)) or "none"
        raise ValueError(f"no Optuna study named {name!r} in {redact(url)} (studies there: {known}); "
                         f"if rksearch recorded it before keeping Optuna studies, {_MIRROR_HINT}") from None


def study_objective(study: optuna.Study, index: int | None = None) -> StudyObjective:
    """Objective `index` of `study` (default the first), named as the study names its metrics."""
    count = len(study.directions)
    chosen = 0 if index is None else index
    if not 0 <= chosen < count:
        raise ValueError(f"--objective {index}: study {study.study_name!r} has {count} objective(s), "
                         f"numbered 0 to {count - 1}")  # fmt: skip
    names = study.metric_names
    name = names[chosen] if names else ("Objective Value" if count == 1 else f"objective {chosen}")
    return StudyObjective(chosen, name, count)


def _check_drawable(study: optuna.Study, kind: str) -> None:
    """Refuse a study Optuna would draw as an empty chart (it only logs a warning), saying why."""
    if kind not in MIN_PARAMS:
        raise ValueError(f"unknown Optuna plot {kind!r}: choose one of {', '.join(MIN_PARAMS)}")
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < MIN_COMPLETE:
        raise ValueError(f"study {study.study_name!r} has {len(complete)} completed trial(s); {kind} needs "
                         f"{MIN_COMPLETE}: let it run longer (or --resume it) and plot again")  # fmt: skip
    shared = intersection_search_space(complete)
    if len(shared) < MIN_PARAMS[kind]:
        raise ValueError(f"study {study.study_name!r} searches {len(shared)} dimension(s) that every completed "
                         f"trial has; {kind} needs {MIN_PARAMS[kind]}")  # fmt: skip


def param_importances(study: optuna.Study, objective: StudyObjective) -> dict[str, float]:
    """Each search dimension's share of the objective's variance, from `optuna.importance`
    (fANOVA with a fixed seed), largest first, summing to 1."""
    _check_drawable(study, "importance")
    importances = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=FANOVA_SEED),
                                        target=objective.target)  # fmt: skip
    return {name: float(value) for name, value in importances.items()}


def _draw(study: optuna.Study, kind: str, objective: StudyObjective):
    """Call Optuna's matplotlib function for `kind`; its Axes (or grid of Axes for a contour)."""
    common = {"target": objective.target, "target_name": objective.name}
    if kind == "importance":
        evaluator = FanovaImportanceEvaluator(seed=FANOVA_SEED)
        return optuna_matplotlib.plot_param_importances(study, evaluator=evaluator, **common)
    if kind == "parallel":
        return optuna_matplotlib.plot_parallel_coordinate(study, **common)
    if kind == "contour":
        return optuna_matplotlib.plot_contour(study, **common)
    return optuna_matplotlib.plot_optimization_history(study, **common)


def _title(figure: Figure, axes: Axes, heading: str) -> None:
    """Add the study and objective under Optuna's own title: the figure's (a contour grid), else
    the axes', wherever Optuna put it (the importance chart's is on the left)."""
    if figure.get_suptitle():
        figure.suptitle(f"{figure.get_suptitle()}\n{heading}")
        return
    loc = next((loc for loc in ("center", "left", "right") if axes.get_title(loc)), "center")
    axes.set_title(f"{axes.get_title(loc)}\n{heading}".strip(), loc=loc)


def optuna_figure(study: optuna.Study, kind: str, objective: StudyObjective | None = None) -> Figure:
    """Optuna's `kind` plot ('importance', 'parallel', 'contour', 'history') of `objective`
    (default the first), titled with the study and objective.

    Optuna draws through pyplot and sets its own style: both are contained here (its rcParams
    are restored afterwards, the figure is released from pyplot), so the caller gets a plain
    Figure and no global state changes.  ValueError when the study is too small to draw.
    """
    objective = objective or study_objective(study)
    _check_drawable(study, kind)
    from matplotlib import pyplot

    with matplotlib.rc_context({"figure.figsize": _SIZES[kind]}), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        first = np.ravel(_draw(study, kind, objective))[0]
        figure = first.get_figure()
        pyplot.close(figure)
        _title(figure, first, f"{study.study_name}: {objective.describe()}")
    return figure


__all__ = ["FANOVA_SEED", "MIN_COMPLETE", "OPTUNA_MARKER_TABLE", "StudyObjective", "optuna_figure", "optuna_study",
           "param_importances", "study_objective"]  # fmt: skip
