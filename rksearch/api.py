"""``rksearch.run_study``: run a study from Python (a notebook, a script) and get its trials back.

The command line (`rksearch.run`) and this function share one path: `load_study` (a file or a
`Study`, with ``--set``-style overrides), `planned` (what a dry run shows) and `execute` (the
database URL chosen the same way, then `engine.run_study`).  The command line turns errors into
exit statuses; here they are raised: every `RksearchError`, and `StudyIncomplete` when the study
ran but did not finish (it is resumable with ``resume=True``).

Calling it again in the same process is safe: a Ray this function started is shut down before it
returns (one the caller started is used and left running), Ray's log handlers are replaced, not
added to, and no signal handler is left changed.  Nothing heavy is imported until it is called.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from rksearch.errors import RksearchError

if TYPE_CHECKING:
    import pandas as pd

    from rksearch.search.engine import StudyRun
    from rksearch.search.planner import PlannedTrial
    from rksearch.search.schema import Study


class StudyIncomplete(RksearchError, RuntimeError):
    """The study ran but not every trial's results are in the database (interrupted, or a fault);
    `run` says what it did, and the same call with ``resume=True`` continues it."""

    def __init__(self, message: str, run: StudyRun) -> None:
        super().__init__(message)
        self.run = run


def run_study(path_or_study: str | Path | Study, overrides: Sequence[str] = (), storage: str | None = None,
              resume: bool = False, dry_run: bool = False, *, retry_failed: bool = False,
              storage_path: str | None = None, address: str | None = None, preflight: bool = True,
              stream: TextIO | None = None, replay: str | None = None) -> pd.DataFrame:
    """Run (or with `resume`, continue) a study and return its completed trials, exactly as
    ``rksearch.results.load(url, study=name)`` reads them from the database.

    `overrides` are the command line's ``--set`` items (``"train.epochs=1"``); `storage` is the
    database URL (default ``$RKSEARCH_STORAGE``, else the study's ``storage.url``).  With
    `dry_run` nothing trains: the planned trials come back (`planned`'s columns).  The live
    view goes to `stream` (default stdout).  With `replay` (the name of a study in the same
    database) nothing trains: the study's search runs on what that study recorded
    (`rksearch.search.replay`) and lands as a study marked as its replay.  Raises `RksearchError`
    (a bad study, database, cluster) and `StudyIncomplete`.
    """
    study, text = load_study(path_or_study, overrides)
    if dry_run:
        return planned(study)
    from rksearch.results import load

    run, url = execute(study, text, storage=storage, storage_path=storage_path, address=address,
                       resume=resume, retry_failed=retry_failed, preflight=preflight, stream=stream, replay=replay)
    if not run.complete:
        why = "interrupted" if run.interrupted else run.fatal or "; ".join(run.problems[:3])
        raise StudyIncomplete(f"study {study.name} is not complete ({why}); continue it with "
                              "run_study(..., resume=True)", run)
    return load(url, study=study.name)


def load_study(path_or_study: str | Path | Study, overrides: Sequence[str] = ()) -> tuple[Study, str]:
    """The validated study and the text the database keeps for it, from a file or a `Study`
    (written out as YAML, so overrides apply to it as to a file)."""
    from rksearch.search.loader import load, loads
    from rksearch.search.schema import Study

    if isinstance(path_or_study, Study):
        import yaml

        text = yaml.safe_dump(path_or_study.model_dump(mode="json", exclude_unset=True), sort_keys=False)
        return loads(text, source=f"<study {path_or_study.name}>", overrides=list(overrides))
    return load(path_or_study, list(overrides))


def planned_trials(study: Study) -> list[PlannedTrial]:
    """Every trial the study would train, priced on this machine; for an Optuna search (which
    draws its points while it runs) a sample of its space, as many points as the space lists."""
    from rksearch.search.planner import Node, Planner

    planner = Planner(study, node=Node.this_machine())
    if study.search.algorithm in ("grid", "random"):
        return planner.plan()
    return [planner.resolve(a, study.seeds[0]) for a in planner.points()]


def planned(study: Study) -> pd.DataFrame:
    """The dry run as a DataFrame, one row per planned trial, named as in `results.load`:
    study, trial_key, model_name, canonical, one column per search dimension (listed in
    ``attrs["dims"]``), seed, params, flops, macs, memory (bytes to train, an estimate),
    status ("planned", or "skipped" with the reason in error)."""
    import pandas as pd

    trials = planned_trials(study)
    dims = pd.DataFrame([t.assignment for t in trials])
    head = pd.DataFrame({"study": study.name, "trial_key": [t.key for t in trials],
                         "model_name": [t.model_name for t in trials], "canonical": [t.canonical for t in trials]})
    tail = pd.DataFrame({
        "seed": [t.seed for t in trials],
        "params": [t.cost.params if t.cost else None for t in trials],
        "flops": [t.cost.flops if t.cost else None for t in trials],
        "macs": [t.cost.macs if t.cost else None for t in trials],
        "memory": [t.memory.total if t.memory else None for t in trials],
        "status": ["planned" if t.runnable else "skipped" for t in trials],
        "error": [t.problem for t in trials],
    })
    frame = pd.concat([head, dims.rename(columns={c: f"{c}_dim" for c in dims.columns if c in head or c in tail}),
                       tail], axis=1)
    frame.attrs["dims"] = [str(c) for c in frame.columns[len(head.columns):-len(tail.columns)]]
    return frame


def storage_url(study: Study, storage: str | None = None) -> str:
    """The database a study runs in: `storage`, else ``$RKSEARCH_STORAGE``, else its ``storage.url``."""
    from rksearch.cli import STORAGE_ENV

    return storage or os.environ.get(STORAGE_ENV) or study.storage.url


def execute(study: Study, text: str, *, storage: str | None = None, storage_path: str | None = None,
            address: str | None = None, resume: bool = False, retry_failed: bool = False,
            preflight: bool = True, stream: TextIO | None = None, replay: str | None = None) -> tuple[StudyRun, str]:
    """Run (or with `replay`, replay) the study in its database (`storage_url`) on the Ray at
    `address` (default ``$RAY_ADDRESS``, else a local one); what the engine did, and the URL it
    wrote to."""
    from rksearch.search.engine import run_study as run_on_ray

    url = storage_url(study, storage)
    run = run_on_ray(study, text, storage_url=url, storage_path=storage_path,
                     address=address or os.environ.get("RAY_ADDRESS"), resume=resume,
                     retry_failed=retry_failed, stream=stream, preflight=preflight, replay=replay)
    return run, url
