"""The one writer of study results: idempotent upserts in short transactions.

Every method is safe to call again with the same arguments (a retried callback, a resumed
study, a re-delivered Ray result): trials are keyed by (study, trial key) and epochs by (trial,
epoch), and each write is an `INSERT ... ON CONFLICT DO UPDATE`, so repeating it rewrites the
same row instead of adding one.  Each call is its own transaction, so a reader (a notebook, the
plot command) sees either all of one epoch's effects or none of them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import numbers
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from rksearch.store import compute, db
from rksearch.store.journal import Journal
from rksearch.store.schema import epochs, studies, trials
from rksearch.store.urls import redact
from rksearch.training import environment, failures
from rksearch.training.status import TrialStatus

log = logging.getLogger(__name__)

STUDY_END_STATUSES = ("completed", "failed", "interrupted")
TRIAL_END_STATUSES = (TrialStatus.COMPLETED, TrialStatus.PRUNED, TrialStatus.FAILED)

#: metrics-dict keys stored as columns of `epochs`
EPOCH_METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s")
#: the code version of a trial that runs of two code versions trained (never reused as either)
MIXED = "mixed"
#: metrics-dict keys that refresh the trial row when a report carries them (the test ones only
#: come with a completed trial's last epoch)
TRIAL_METRICS = ("best_val_acc", "best_epoch", "test_acc", "test_acc_final")
#: the writes a StoreCallback makes, which the journal may hold
JOURNALED = ("trial_started", "record_epoch", "record_checkpoint", "trial_finished")

#: trial columns that describe *what* was trained (from TrialInfo), as opposed to its outcome
_IDENTITY = ("trial_key", "model_name", "canonical", "dims", "config", "params", "flops", "macs", "seed")

#: trial columns holding a trained trial's outcome, copied when a study reuses it
_OUTCOME = ("best_val_acc", "final_val_acc", "best_epoch", "test_acc", "test_acc_final", "epochs_done",
            "wall_seconds", "device", "node", "started_at", "finished_at", "best_checkpoint", "last_checkpoint",
            "code_version", "environment", "train_images")  # fmt: skip


@dataclass(frozen=True)
class TrialInfo:
    """What identifies and describes one trial; the engine derives it from the trial's config."""

    trial_key: str
    model_name: str
    canonical: str
    dims: dict
    config: dict
    params: int | None
    flops: int | None
    macs: int | None
    seed: int

    def row(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _IDENTITY}


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _number(value: Any) -> float | None:
    """A metric as a plain float; NaN, infinities and missing values become NULL."""
    if value is None or isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class Store:
    """Writes studies, trials and epochs to an already migrated database (see `open_store`)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        # (study id, trial key) -> trial id: trial ids never change, so one lookup per trial
        self._trial_ids: dict[tuple[int, str], int] = {}
        self._epoch_sql: tuple[sa.Insert, sa.Update] | None = None

    @property
    def display_url(self) -> str:
        """The database URL with the password masked, for logs and summaries."""
        return redact(self.engine.url)

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------ studies

    def begin_study(self, name: str, study_text: str, *, resume: bool = False, replay_of: str | None = None) -> int:
        """The id of study `name`: a new row, or with `resume` the existing one set running.

        Without `resume` an existing name is an error: silently adding trials to an old study
        would mix two experiments' results under one name.  `replay_of` marks the study as a
        replay of that recorded study; a resume must say the same (a replay's trials continued
        by training, or the reverse, would mix real and simulated compute).
        """
        with self.engine.begin() as conn:
            row = self._existing(conn, name, resume, replay_of)
            if row is not None:
                if row.study_hash != _hash(study_text):
                    log.warning("study %r is resumed with a different study file; the stored one is kept", name)
                conn.execute(studies.update().where(studies.c.id == row.id)
                             .values(status="running", finished_at=None))  # fmt: skip
                return row.id
            return conn.execute(
                studies.insert().returning(studies.c.id).values(
                    name=name,
                    study_text=study_text,
                    study_hash=_hash(study_text),
                    status="running",
                    code_version=environment.code_version()[:50],
                    environment=environment.capture(),
                    created_at=_now(),
                    replay_of=replay_of,
                )
            ).scalar_one()

    def check_begin(self, name: str, *, resume: bool = False, replay_of: str | None = None) -> None:
        """Raise the StoreError `begin_study` would for these arguments (an existing name without
        `resume`, a replay resumed as training or the reverse), without writing: the engine asks
        before it starts Ray, so that a refusal takes a moment instead of Ray's start and stop."""
        with db.reading(self.engine) as conn:
            self._existing(conn, name, resume, replay_of)

    def _existing(self, conn: sa.Connection, name: str, resume: bool, replay_of: str | None) -> Any:
        """Study `name`'s row (id, hash, replay_of), or None; StoreError where it may not begin."""
        row = conn.execute(sa.select(studies.c.id, studies.c.study_hash, studies.c.replay_of)
                           .where(studies.c.name == name)).first()  # fmt: skip
        if row is None:
            return None
        if not resume:
            raise db.StoreError(f"study {name!r} already exists in {self.display_url}: "
                                f"use --resume to continue it, or another name")  # fmt: skip
        if row.replay_of != replay_of:
            was = f"a replay of {row.replay_of!r}" if row.replay_of else "not a replay"
            raise db.StoreError(f"study {name!r} was {was}: resume it " + (
                f"with --replay {row.replay_of}" if row.replay_of else "without --replay"))
        return row

    def finish_study(self, study_id: int, status: str) -> None:
        if status not in STUDY_END_STATUSES:
            raise ValueError(f"study status must be one of {STUDY_END_STATUSES}, not {status!r}")
        with self.engine.begin() as conn:
            conn.execute(studies.update().where(studies.c.id == study_id)
                         .values(status=status, finished_at=_now()))  # fmt: skip

    def record_compute(self, study_id: int, cpus: float, gpus: float) -> compute.Compute:
        """Compute the study's spent (and saved) compute from its stored rows and store it on
        its row (`store.compute`: the conventions); trials reserved `cpus` and `gpus` each.
        Once per study run, when it finishes: one grouped read and one update."""
        of_trial = epochs.c.trial_id == trials.c.id
        query = (
            sa.select(trials.c.status, trials.c.flops, trials.c.train_images, trials.c.config,
                      sa.func.count(epochs.c.id).label("epochs"),
                      sa.func.coalesce(sa.func.sum(epochs.c.seconds), 0.0).label("seconds"))
            .outerjoin(epochs, of_trial)
            .where(trials.c.study_id == study_id, trials.c.reused_from_id.is_(None))
            .group_by(trials.c.id)
        )  # fmt: skip
        with self.engine.begin() as conn:
            work = [compute.TrialWork(row.status, row.flops, row.train_images, int(row.epochs),
                                      int((row.config or {}).get("optim", {}).get("epochs", 0)), float(row.seconds))
                    for row in conn.execute(query)]  # fmt: skip
            spent = compute.account(work, cpus, gpus)
            conn.execute(studies.update().where(studies.c.id == study_id).values(**spent.columns()))
        return spent

    # ------------------------------------------------------------------ trials

    def _upsert_trial(self, conn: Connection, study_id: int, info: TrialInfo,
                      values: dict[str, Any], update: dict[str, Any]) -> int:  # fmt: skip
        """Insert-or-update the trial row (identity columns always refreshed); its id."""
        statement = self._insert(trials).values(study_id=study_id, **info.row(), **values)
        refresh = {name: statement.excluded[name] for name in _IDENTITY if name != "trial_key"}
        statement = statement.on_conflict_do_update(
            index_elements=[trials.c.study_id, trials.c.trial_key], set_={**refresh, **update}
        ).returning(trials.c.id)
        # not cached here: the id is only real once the caller's transaction commits
        return conn.execute(statement).scalar_one()

    def record_skipped(self, study_id: int, info: TrialInfo, reason: str) -> None:
        """A trial the engine decided not to train (too large, ...), with its costs and why."""
        values = {"status": TrialStatus.SKIPPED, "error": reason, "finished_at": _now()}
        with self.engine.begin() as conn:
            self._upsert_trial(conn, study_id, info, values, values)

    def reopen_skipped(self, study_id: int, trial_key: str) -> None:
        """A skipped trial that now fits (a skip for memory depends on the machine): pending again."""
        with self.engine.begin() as conn:
            conn.execute(trials.update()
                         .where(trials.c.study_id == study_id, trials.c.trial_key == trial_key,
                                trials.c.status == TrialStatus.SKIPPED)
                         .values(status=TrialStatus.PENDING, error=None, finished_at=None))  # fmt: skip

    def trial_started(self, study_id: int, info: TrialInfo, node: str | None = None,
                      at: datetime | None = None) -> None:
        """Mark the trial running; a retry keeps its first start time and a recorded skip."""
        started = at or _now()
        skipped = trials.c.status == TrialStatus.SKIPPED
        keep_skip = sa.case((skipped, TrialStatus.SKIPPED), else_=TrialStatus.RUNNING)
        with self.engine.begin() as conn:
            trial_id = self._upsert_trial(
                conn, study_id, info,
                {"status": TrialStatus.RUNNING, "node": node, "started_at": started},
                {"status": keep_skip, "node": sa.func.coalesce(node, trials.c.node), "finished_at": None,
                 "started_at": sa.func.coalesce(trials.c.started_at, started),
                 # a failed trial run again: its old error no longer describes it
                 "error": sa.case((skipped, trials.c.error), else_=None), "failure": None},
            )  # fmt: skip
        self._trial_ids[(study_id, info.trial_key)] = trial_id

    def _trial_id(self, conn: Connection, study_id: int, trial_key: str) -> int:
        cached = self._trial_ids.get((study_id, trial_key))
        if cached is not None:
            return cached
        trial_id = conn.execute(
            sa.select(trials.c.id).where(trials.c.study_id == study_id, trials.c.trial_key == trial_key)
        ).scalar_one_or_none()
        if trial_id is None:
            raise db.StoreError(f"no trial {trial_key!r} in study {study_id}: trial_started must come first")
        self._trial_ids[(study_id, trial_key)] = trial_id
        return trial_id

    def record_epoch(self, study_id: int, trial_key: str, metrics: dict, at: datetime | None = None) -> None:
        """Store one epoch's metrics and refresh the trial's summary in the same transaction.

        The summary (epochs done, best and final accuracy) is recomputed from the stored epochs
        rather than incremented, so a re-delivered or out-of-order epoch cannot skew it.  Both
        statements are built once (`_epoch_statements`): at one call per epoch, building them
        per call cost more than the database work.
        """
        upsert, summary = self._epoch_statements()
        row = {name: _number(metrics.get(name)) for name in EPOCH_METRICS}
        device, node = metrics.get("device"), metrics.get("node_id")
        best_epoch, images = _number(metrics.get("best_epoch")), _number(metrics.get("train_images"))
        env = metrics.get("environment")
        with self.engine.begin() as conn:
            trial_id = self._trial_id(conn, study_id, trial_key)
            conn.execute(upsert, {"trial_id": trial_id, "epoch": int(metrics["epoch"]), "recorded_at": at or _now(), **row})
            conn.execute(summary, {
                "tid": trial_id,
                "reported_best": _number(metrics.get("best_val_acc")),
                "reported_best_epoch": None if best_epoch is None else int(best_epoch),
                "reported_test": _number(metrics.get("test_acc")),
                "reported_test_final": _number(metrics.get("test_acc_final")),
                "reported_device": None if device is None else str(device)[:100],
                "reported_node": None if node is None else str(node)[:200],
                "reported_images": None if images is None else int(images),
            })  # fmt: skip
            if isinstance(env, dict):  # the first report of each run of the trial: its worker's environment
                self._record_environment(conn, trial_id, env)

    def _record_environment(self, conn: Connection, trial_id: int, env: dict) -> None:
        """A run's worker environment on the trial row.  A trial continued by other code than
        began it (a study resumed after an upgrade) has code version MIXED and keeps the
        earlier environment under "earlier": `reuse` must not take it for either version's."""
        before = conn.execute(sa.select(trials.c.code_version, trials.c.environment)
                              .where(trials.c.id == trial_id)).first()  # fmt: skip
        code = str(env.get("code_version") or "")[:50] or None
        if before is not None and before.code_version not in (None, code):
            code = MIXED
            env = {**env, "earlier": before.environment}
        conn.execute(trials.update().where(trials.c.id == trial_id).values(environment=env, code_version=code))

    def _epoch_statements(self) -> tuple[sa.Insert, sa.Update]:
        if self._epoch_sql is None:
            insert = self._insert(epochs)
            upsert = insert.on_conflict_do_update(
                index_elements=[epochs.c.trial_id, epochs.c.epoch],
                set_={name: insert.excluded[name] for name in (*EPOCH_METRICS, "recorded_at")},
            )
            of_trial = epochs.c.trial_id == trials.c.id
            stored_best = sa.select(sa.func.max(epochs.c.val_acc)).where(of_trial).scalar_subquery()
            # epochs trained before a restore may predate this database: trust a higher report
            reported = sa.bindparam("reported_best", type_=sa.Float)
            best = sa.case((reported > sa.func.coalesce(stored_best, -1.0), reported), else_=stored_best)
            summary = (
                trials.update()
                .where(trials.c.id == sa.bindparam("tid"))
                .values(
                    epochs_done=sa.select(sa.func.count()).where(of_trial).scalar_subquery(),
                    best_val_acc=best,
                    final_val_acc=sa.select(epochs.c.val_acc).where(of_trial)
                    .order_by(epochs.c.epoch.desc()).limit(1).scalar_subquery(),
                    best_epoch=sa.func.coalesce(sa.bindparam("reported_best_epoch", type_=sa.Integer),
                                                trials.c.best_epoch),
                    test_acc=sa.func.coalesce(sa.bindparam("reported_test", type_=sa.Float), trials.c.test_acc),
                    test_acc_final=sa.func.coalesce(sa.bindparam("reported_test_final", type_=sa.Float),
                                                    trials.c.test_acc_final),
                    device=sa.func.coalesce(sa.bindparam("reported_device", type_=sa.String), trials.c.device),
                    # with every epoch, not only at the end: a trial interrupted or abandoned before
                    # its end still has the images its trained epochs cost (`store.compute`)
                    train_images=sa.func.coalesce(sa.bindparam("reported_images", type_=sa.Integer),
                                                  trials.c.train_images),
                    # the Ray node of the latest epoch: after a failover, the node that finished it
                    node=sa.func.coalesce(sa.bindparam("reported_node", type_=sa.String), trials.c.node),
                )
            )  # fmt: skip
            self._epoch_sql = (upsert, summary)
        return self._epoch_sql

    def record_checkpoint(self, study_id: int, trial_key: str, path: str, best: bool,
                          at: datetime | None = None) -> None:
        """Where the trial's latest checkpoint is kept, and with `best` that it is the best epoch's."""
        values = {"last_checkpoint": path, **({"best_checkpoint": path} if best else {})}
        with self.engine.begin() as conn:
            trial_id = self._trial_id(conn, study_id, trial_key)
            conn.execute(trials.update().where(trials.c.id == trial_id).values(**values))

    def trial_finished(self, study_id: int, trial_key: str, status: str, error: str | None = None,
                       wall_seconds: float | None = None, failure: str | None = None,
                       at: datetime | None = None) -> None:  # fmt: skip
        """The trial's end; a failed one carries its error text and its `failures` category."""
        if status not in TRIAL_END_STATUSES:
            raise ValueError(f"trial status must be one of {', '.join(TRIAL_END_STATUSES)}, not {status!r}")
        if failure is not None and failure not in failures.CATEGORIES:
            raise ValueError(f"failure must be one of {failures.CATEGORIES}, not {failure!r}")
        with self.engine.begin() as conn:
            trial_id = self._trial_id(conn, study_id, trial_key)
            conn.execute(trials.update().where(trials.c.id == trial_id).values(
                status=status, error=error, failure=failure if status == TrialStatus.FAILED else None,
                wall_seconds=_number(wall_seconds), finished_at=at or _now()
            ))  # fmt: skip

    # ------------------------------------------------------------------ the journal

    def journal_entry(self, method: str, *args: Any) -> dict[str, Any]:
        """A write as a journal entry: JSON arguments, this database's (redacted) URL, the time."""
        if method not in JOURNALED:
            raise ValueError(f"{method!r} is not a write the journal keeps; those are {JOURNALED}")
        values = list(args)
        if method == "trial_started":
            values[1] = dataclasses.asdict(values[1])
        elif method == "record_epoch":
            metrics = values[2]  # a whole Tune result: keep what record_epoch reads, as JSON values
            values[2] = {**{name: _number(metrics.get(name)) for name in (*EPOCH_METRICS, *TRIAL_METRICS)},
                         "epoch": int(metrics["epoch"]),
                         **{name: str(metrics[name]) for name in ("device", "node_id") if metrics.get(name) is not None},
                         **({"environment": metrics["environment"]} if isinstance(metrics.get("environment"), dict)
                            else {})}
        return {"db": self.display_url, "method": method, "args": values, "at": _now().isoformat()}

    def apply(self, entry: dict[str, Any]) -> None:
        """Make one journaled write (`journal_entry` made it), at its original time."""
        method, args = entry["method"], list(entry["args"])
        if method not in JOURNALED:
            raise db.StoreError(f"the results journal names an unknown write {method!r}")
        if method == "trial_started":
            args[1] = TrialInfo(**args[1])
        getattr(self, method)(*args, at=datetime.fromisoformat(entry["at"]) if entry.get("at") else None)

    def replay(self, journal: Journal) -> int:
        """Apply the journal's writes in order, then empty it; how many it held.

        The database being unavailable (a full disk, a lost connection: `OperationalError`)
        stops the replay and keeps the journal whole; the writes already made are idempotent
        and are simply made again next time.  An entry the database refuses for any other
        reason (it never will take it) is set aside in the rejected file with the reason, so
        one bad entry cannot block a study forever.  A journal written for another database
        is refused whole: replaying it here would write into the wrong study.
        """
        entries = journal.entries()
        foreign = {entry["db"] for entry in entries} - {self.display_url}
        if foreign:
            raise db.StoreError(f"{journal.path} holds results for {sorted(foreign)[0]}, not {self.display_url}: "
                                f"resume with the --storage the study ran with")  # fmt: skip
        for entry in entries:
            try:
                self.apply(entry)
            except (sa.exc.OperationalError, sa.exc.InterfaceError):
                raise
            except Exception as exc:
                reason = f"{type(exc).__name__}: {db.driver_error(exc, self.engine.url)}"
                journal.reject(entry, reason)
                log.error("results store: a journaled %s cannot be recorded (%s); set aside in %s",
                          entry["method"], reason, journal.rejected_path)  # fmt: skip
        journal.clear()
        if entries:
            log.info("results store: %d journaled writes recorded from %s", len(entries), journal.path)
        return len(entries)

    def trial_statuses(self, study_id: int) -> dict[str, str]:
        """trial key -> status for every trial of the study (what a resume must not redo)."""
        with db.reading(self.engine) as conn:
            rows = conn.execute(sa.select(trials.c.trial_key, trials.c.status).where(trials.c.study_id == study_id))
            return {key: status for key, status in rows}

    def trial_failures(self, study_id: int) -> dict[str, str | None]:
        """trial key -> failure category of every failed trial of the study (None: unknown)."""
        with db.reading(self.engine) as conn:
            failed = trials.c.study_id == study_id, trials.c.status == TrialStatus.FAILED
            rows = conn.execute(sa.select(trials.c.trial_key, trials.c.failure).where(*failed))
            return {key: failure for key, failure in rows}

    def missing_results(self, study_id: int, expected: Iterable[str] = ()) -> dict[str, str]:
        """What keeps the study from being complete: trial key -> one line (empty: complete).

        A trial is complete when it has reached an end status and, if it completed, holds
        exactly the epochs 1..epochs of its config, each once (the unique key makes "once" a
        given; the count and the last epoch number prove none is missing).  `expected` are
        trial keys the plan says must have a row at all.
        """
        epoch_count = sa.func.count(epochs.c.id)
        query = (
            sa.select(trials.c.trial_key, trials.c.model_name, trials.c.status, trials.c.config,
                      epoch_count.label("recorded"), sa.func.max(epochs.c.epoch).label("last"))
            .outerjoin(epochs, epochs.c.trial_id == trials.c.id)
            .where(trials.c.study_id == study_id)
            .group_by(trials.c.id)
        )  # fmt: skip
        with db.reading(self.engine) as conn:
            rows = conn.execute(query).all()
        problems: dict[str, str] = {}
        for row in rows:
            name = f"{row.model_name} ({row.trial_key[:8]})"
            if row.status not in (*TRIAL_END_STATUSES, TrialStatus.SKIPPED):
                problems[row.trial_key] = f"{name}: {row.status}, not finished"
            elif row.status == TrialStatus.COMPLETED:
                planned = int((row.config or {}).get("optim", {}).get("epochs", 0))
                if not row.recorded == (row.last or 0) == planned:
                    problems[row.trial_key] = f"{name}: {row.recorded} of {planned} epochs recorded"
        seen = {row.trial_key for row in rows}
        problems.update({key: f"trial {key[:8]}: no row" for key in expected if key not in seen})
        return problems

    # ------------------------------------------------------------------ reuse

    def find_completed(self, trial_key: str, code_version: str | None = None) -> int | None:
        """A completed trial with this key in any study but a replay, trained ones before reused
        copies; with `code_version`, only one trained by that code (an unknown version never matches)."""
        # a replay's trials were never trained: simulated results are not reused as real ones
        trained = sa.select(studies.c.id).where(studies.c.replay_of.is_(None))
        query = sa.select(trials.c.id).where(trials.c.trial_key == trial_key, trials.c.status == TrialStatus.COMPLETED,
                                             trials.c.study_id.in_(trained))  # fmt: skip
        if code_version is not None:
            query = query.where(trials.c.code_version == code_version)
        with db.reading(self.engine) as conn:
            return conn.execute(query.order_by(trials.c.reused_from_id.is_not(None), trials.c.id).limit(1)).scalar()

    def link_reused(self, study_id: int, info: TrialInfo, source_trial_id: int) -> None:
        """Copy a completed trial and its epochs into this study instead of training it again.

        `reused_from_id` names the trial that was actually trained, also when the source is
        itself a copy, so provenance never goes through a chain of copies.
        """
        with self.engine.begin() as conn:
            source = conn.execute(sa.select(trials).where(trials.c.id == source_trial_id)).mappings().first()
            if source is None or source["status"] != TrialStatus.COMPLETED:
                raise db.StoreError(f"trial {source_trial_id} is not a completed trial to reuse")
            outcome = {name: source[name] for name in _OUTCOME}
            outcome.update(status=TrialStatus.COMPLETED, error=None,
                           reused_from_id=source["reused_from_id"] or source["id"])  # fmt: skip
            trial_id = self._upsert_trial(conn, study_id, info, outcome, outcome)
            rows = conn.execute(sa.select(epochs).where(epochs.c.trial_id == source_trial_id)).mappings().all()
            if rows:
                copies = [{**{k: v for k, v in row.items() if k != "id"}, "trial_id": trial_id} for row in rows]
                conn.execute(self._insert(epochs).on_conflict_do_nothing(
                    index_elements=[epochs.c.trial_id, epochs.c.epoch]), copies)  # fmt: skip


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def open_store(url: str) -> Store:
    """A Store on `url`, its schema migrated to this code's revision; StoreError if unusable."""
    store = Store(db.connect(url))
    log.info("results store: %s", store.display_url)
    return store
