"""The read queries behind `rksearch.results`: studies, trials and epochs as pandas DataFrames.

Every read runs in one read-only transaction on an existing database (`_snapshot`), so a
running study is neither blocked nor seen half-written, and a mistyped path never leaves an
empty database behind.  Everything is a SQLAlchemy expression over `rksearch.store.schema`;
nothing here imports Ray or Optuna, so results are read a year later with only the file.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from rksearch.store import db
from rksearch.store.compute import Compute
from rksearch.store.db import StoreError
from rksearch.store.schema import epochs, trials
from rksearch.store.schema import studies as studies_table
from rksearch.store.urls import DEFAULT_URL
from rksearch.training.status import TrialStatus

#: the per-trial columns before the search dimensions, and after them
_TRIAL_HEAD = ("study", "trial_id", "trial_key", "model_name", "canonical")
_TRIAL_TAIL = (
    "seed", "params", "flops", "macs", "validation", "best_epoch", "best_val_acc", "best_val_error",
    "final_val_acc", "final_val_error", "test_acc", "test_error", "test_acc_final", "test_error_final",
    "epochs", "wall_seconds", "status", "failure", "error", "device", "node", "code_version",
    "started_at", "finished_at", "reused_from", "best_checkpoint", "last_checkpoint",
)  # fmt: skip
#: what `load(detail=True)` adds at the end
_TRIAL_DETAIL = ("config", "environment")
#: `data.validation` of a trial whose config does not say: the default before revision 0004
_OLD_DEFAULT_VALIDATION = "test"
_EPOCH_TAIL = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_error", "lr", "seconds",
               "images_per_s")  # fmt: skip


@contextlib.contextmanager
def _snapshot(url: str) -> Iterator[Connection]:
    """A read-only snapshot of an existing database (never creates one for a mistyped path)."""
    engine = db.connect(url, create=False)
    try:
        with db.reading(engine) as conn:
            yield conn
    finally:
        engine.dispose()


def _study_filter(conn: Connection, study: str | None) -> sa.ColumnElement[bool]:
    """WHERE clause for one study by name (StoreError if it does not exist) or for all."""
    if study is None:
        return sa.true()
    found = conn.execute(sa.select(studies_table.c.id).where(studies_table.c.name == study)).scalar()
    if found is None:
        raise StoreError(f"no study named {study!r}")
    return trials.c.study_id == found


def _with_dims(frame: pd.DataFrame, head: tuple[str, ...], tail: tuple[str, ...]) -> pd.DataFrame:
    """Spread each trial's `dims` JSON into one column per search dimension, between head and tail.

    A dimension named like a fixed column (say `seed`) keeps its value under `<name>_dim`, so
    neither overwrites the other.  The dimension columns are listed in `attrs["dims"]`: which
    columns are search dimensions is known here and nowhere else, so analysis reads it from
    the frame instead of guessing from column names.
    """
    dims = pd.DataFrame(list(frame.pop("dims")), index=frame.index)
    dims = dims.rename(columns={c: f"{c}_dim" for c in dims.columns if c in head + tail})
    out = pd.concat([frame[list(head)], dims, frame[list(tail)]], axis=1)
    out.attrs["dims"] = [str(c) for c in dims.columns]
    return out


def _utc(frame: pd.DataFrame, columns: tuple[str, ...]) -> None:
    """Timestamps as UTC-aware (SQLite hands them back naive, PostgreSQL aware)."""
    for column in columns:
        frame[column] = pd.to_datetime(frame[column], utc=True)


def load(url: str = DEFAULT_URL, study: str | None = None, status: str | None = TrialStatus.COMPLETED,
         detail: bool = False) -> pd.DataFrame:
    """One row per trial of `study` (all studies if None) with `status` (all statuses if None).

    Validation selects, test reports, and each has its own name:
      - `validation`: the split that selected, "holdout" (of the training set) or "test"
        (the paper's protocol; trials recorded before rksearch kept a test set apart say "test");
      - `best_val_acc` (the selection metric, at `best_epoch`) and `final_val_acc` (the last epoch's);
      - `test_acc` (the test set on the best epoch's weights: the number to report) and
        `test_acc_final` (on the final weights), NaN for a trial that did not complete;
      - each `*_acc` has its `*_error` (1 - accuracy, a fraction).
    `failure` is a failed trial's category (`rksearch.training.failures`), `error` its error text or a
    skipped trial's reason; `best_checkpoint`/`last_checkpoint` the kept checkpoint directories
    (`load_model`).  With `detail`, `config` (the trial's full config) and `environment` (what its
    worker ran: code version, torch, CUDA, cuDNN, device, node) are added as dict columns.
    `attrs["dims"]` lists the search-dimension columns.
    """
    query = (
        sa.select(
            studies_table.c.name.label("study"), trials.c.id.label("trial_id"), trials.c.trial_key,
            trials.c.model_name, trials.c.canonical, trials.c.dims, trials.c.config, trials.c.seed,
            trials.c.params, trials.c.flops, trials.c.macs, trials.c.best_epoch, trials.c.best_val_acc,
            trials.c.final_val_acc, trials.c.test_acc, trials.c.test_acc_final,
            trials.c.epochs_done.label("epochs"), trials.c.wall_seconds, trials.c.status, trials.c.failure,
            trials.c.error, trials.c.device, trials.c.node, trials.c.code_version, trials.c.started_at,
            trials.c.finished_at, trials.c.reused_from_id.label("reused_from"), trials.c.best_checkpoint,
            trials.c.last_checkpoint, trials.c.environment,
        )
        .join(studies_table, studies_table.c.id == trials.c.study_id)
        .order_by(trials.c.id)
    )  # fmt: skip
    with _snapshot(url) as conn:
        query = query.where(_study_filter(conn, study))
        if status is not None:
            query = query.where(trials.c.status == status)
        frame = pd.DataFrame(conn.execute(query).mappings().all(), columns=list(query.selected_columns.keys()))
    for accuracy in ("best_val_acc", "final_val_acc", "test_acc", "test_acc_final"):
        frame[accuracy] = frame[accuracy].astype(float)
        frame[accuracy.replace("_acc", "_error")] = 1.0 - frame[accuracy]
    frame["validation"] = [config["data"].get("validation", _OLD_DEFAULT_VALIDATION)
                           if isinstance(config, dict) and config.get("data") else None
                           for config in frame["config"]]
    for column in ("params", "flops", "macs", "reused_from", "best_epoch"):
        frame[column] = frame[column].astype("Int64")
    _utc(frame, ("started_at", "finished_at"))
    return _with_dims(frame, _TRIAL_HEAD, _TRIAL_TAIL + (_TRIAL_DETAIL if detail else ()))


def load_epochs(url: str = DEFAULT_URL, study: str | None = None) -> pd.DataFrame:
    """One row per recorded epoch of every trial of `study` (all studies if None).

    `attrs["dims"]` lists the search-dimension columns, as in `load`.
    """
    query = (
        sa.select(
            studies_table.c.name.label("study"), trials.c.id.label("trial_id"), trials.c.trial_key,
            trials.c.model_name, trials.c.dims, epochs.c.epoch, epochs.c.train_loss, epochs.c.train_acc,
            epochs.c.val_loss, epochs.c.val_acc, epochs.c.lr, epochs.c.seconds, epochs.c.images_per_s,
        )
        .join(trials, trials.c.id == epochs.c.trial_id)
        .join(studies_table, studies_table.c.id == trials.c.study_id)
        .order_by(trials.c.id, epochs.c.epoch)
    )  # fmt: skip
    with _snapshot(url) as conn:
        query = query.where(_study_filter(conn, study))
        frame = pd.DataFrame(conn.execute(query).mappings().all(), columns=list(query.selected_columns.keys()))
    frame["val_error"] = 1.0 - frame["val_acc"].astype(float)
    return _with_dims(frame, ("study", "trial_id", "trial_key", "model_name"), _EPOCH_TAIL)


#: a study's compute columns (revision 0006, `store.compute`), as `studies` and `study_compute` name them
COMPUTE_COLUMNS = tuple(f.name for f in dataclasses.fields(Compute))


def studies(url: str = DEFAULT_URL) -> pd.DataFrame:
    """One row per study: name, status, times, code version, trial counts by status, the study
    it replayed (`replay_of`, None for a study that trained) and its compute (`COMPUTE_COLUMNS`,
    stored when it finished; `store.compute` says how each is counted)."""
    counts = {
        status: sa.func.count(trials.c.id).filter(trials.c.status == status).label(status.value)
        for status in (TrialStatus.COMPLETED, TrialStatus.PRUNED, TrialStatus.FAILED, TrialStatus.SKIPPED,
                       TrialStatus.RUNNING)
    }
    query = (
        sa.select(
            studies_table.c.name.label("study"), studies_table.c.id, studies_table.c.status,
            studies_table.c.created_at, studies_table.c.finished_at, studies_table.c.code_version,
            sa.func.count(trials.c.id).label("trials"), *counts.values(), studies_table.c.replay_of,
            *(studies_table.c[name] for name in COMPUTE_COLUMNS),
        )
        .outerjoin(trials, trials.c.study_id == studies_table.c.id)
        .group_by(studies_table.c.id)
        .order_by(studies_table.c.id)
    )  # fmt: skip
    with _snapshot(url) as conn:
        frame = pd.DataFrame(conn.execute(query).mappings().all(), columns=list(query.selected_columns.keys()))
    _utc(frame, ("created_at", "finished_at"))
    for name in ("epochs_trained", "epochs_saved"):
        frame[name] = frame[name].astype("Int64")
    return frame


def study_compute(url: str, study: str) -> dict:
    """Study `study`'s stored compute (`COMPUTE_COLUMNS`) and `replay_of`; StoreError if there is
    no such study.  Values are None until the study first finishes (or for one before 0006)."""
    columns = [studies_table.c.replay_of, *(studies_table.c[name] for name in COMPUTE_COLUMNS)]
    with _snapshot(url) as conn:
        row = conn.execute(sa.select(*columns).where(studies_table.c.name == study)).mappings().first()
    if row is None:
        raise StoreError(f"no study named {study!r}")
    return dict(row)


__all__ = ["COMPUTE_COLUMNS", "load", "load_epochs", "studies", "study_compute"]
