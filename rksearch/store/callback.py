"""The Ray Tune callback that records every trial event through the one `Store` writer.

It runs on the driver, so the workers never talk to the database: one writer, no credentials
shipped to the cluster.  A database hiccup must not kill a study that has been training for
hours, so a failed write is retried with backoff; one that still fails (a full disk, a server
gone for good) goes to the study's `Journal`, durably, and every later write queues behind it
until the database takes them again (`Store.replay` at the end of the run, or on resume).  The
writes are idempotent, so a retry or a replay that did reach the database does no harm.  Only
when the journal cannot be written either does the callback give up, and then it stops the
study (`fatal`, read by the engine's stopper) instead of training on with results nowhere.

Ray pickles the callback with the experiment (``tuner.pkl``, for `Tuner.restore`).  The pickle
holds the database URL *without* its password and reconnects on first use, so credentials are
never written to the experiment directory; a restored run against a password-protected server
takes the password from ``PGPASSWORD`` or ``~/.pgpass`` as libpq does.

With a `mirror` (grid and random studies), each trial's end, once written to our tables, is
also added to the study's Optuna study in the same database (`store.mirror`): best effort,
after our own write, so a mirror failure costs a warning and never a row of ours.  The first
end is synced at once, later ones together at most every `MIRROR_EVERY_S`: a sync opens
Optuna's storage (a tenth of a second to half a second here), and on Tune's loop that holds
up the next trial's start and every running trial's report, which waits for the driver; the
engine's sync at the end of the run adds whatever is still waiting.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy.exc
from ray import tune
from sqlalchemy.engine import make_url

from rksearch.store.db import StoreError, driver_error
from rksearch.store.journal import Journal, JournalError
from rksearch.store.mirror import OptunaMirror
from rksearch.store.urls import redact
from rksearch.store.writer import Store, TrialInfo, open_store
from rksearch.training import failures
from rksearch.training.status import TrialStatus

log = logging.getLogger(__name__)

#: seconds to wait before each retry of a failed write (then give up and log)
RETRY_DELAYS_S = (0.1, 0.5, 2.0)

#: how much of a failed trial's error text to keep (its tail: the exception is at the end)
ERROR_CHARS = 4000

#: seconds between two syncs of the Optuna mirror (the dashboard lags the study by at most this)
MIRROR_EVERY_S = 30.0


class StoreCallback(tune.Callback):
    """Start, epochs, completion, pruning and failure of each Tune trial, into the store.

    `describe(trial.config)` gives the trial's TrialInfo (its key and costs); results whose
    `trial_status` is 'skipped' are the engine's to record and are ignored here.  A trial that
    ends while still running was stopped early: it is recorded as pruned only when `pruned`
    (the scheduler's own record of the trials it stopped) says so, never when the study itself
    is being stopped; otherwise it stays unfinished and a resume continues it.  `clock` times
    the mirror's syncs (injectable, so that tests drive time instead of sleeping).
    """

    def __init__(self, store: Store, study_id: int, describe: Callable[[dict], TrialInfo],
                 journal: Journal | None = None, pruned: Callable[[str], bool] | None = None,
                 mirror: OptunaMirror | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.store: Store | None = store
        self._url = redact(store.engine.url, connectable=True)
        self.study_id = study_id
        self.describe = describe
        self.journal = journal
        self.pruned = pruned  # None (no scheduler): nothing is ever pruned
        self.mirror = mirror
        #: why the study must stop now (results can be kept nowhere, storage is full); None: go on
        self.fatal: str | None = None
        #: trial key -> the end status recorded for it by this callback (what this run finished)
        self.ended: dict[str, str] = {}
        self._infos: dict[str, TrialInfo] = {}
        self._started: dict[str, float] = {}
        self.clock = clock
        #: ended trials not yet synced to the mirror, and when it was last synced
        self._unmirrored: list[str] = []
        self._mirrored_at = -math.inf

    def __getstate__(self) -> dict[str, Any]:
        # no engine, no password; start times are per-process clocks and mean nothing elsewhere
        return {**self.__dict__, "store": None, "_infos": {}, "_started": {}, "ended": {}, "_unmirrored": [],
                "_mirrored_at": -math.inf}

    def stop(self, reason: str) -> None:
        """Ask the engine's stopper to end the study (the first reason is the one shown)."""
        if self.fatal is None:
            log.info("stopping the study: %s", reason)  # the caller reports it (run.py: one error line)
            self.fatal = reason

    def _store(self) -> Store:
        if self.store is None:
            self.store = open_store(self._url)
        return self.store

    def _info(self, trial: Any) -> TrialInfo:
        info = self._infos.get(trial.trial_id)
        if info is None:
            info = self._infos[trial.trial_id] = self.describe(trial.config)
        return info

    def _write(self, what: str, method: str, *args: Any) -> None:
        """One Store write: to the database if it takes it, else to the journal; never raises.

        While the journal holds anything, the write goes behind it (after one attempt to empty
        it), so the database always receives writes in the order they happened.
        """
        journal = self.journal
        if journal is not None and journal.pending():
            try:
                self._store().replay(journal)
            except (sqlalchemy.exc.SQLAlchemyError, StoreError):
                pass
        error = "earlier writes are still waiting in the journal"
        if journal is None or not journal.pending():
            error = self._commit(what, method, args)
            if error is None:
                return
        if journal is None:
            self.stop(f"results store: cannot record the {what} of a trial ({error}) and there is no "
                      f"journal to keep it in; stopping the study")  # fmt: skip
            return
        first = not journal.pending()
        try:
            journal.append(self._store().journal_entry(method, *args))
        except JournalError as exc:
            self.stop(f"results store: cannot record the {what} of a trial: the database refused it ({error}) "
                      f"and {exc}; stopping the study")  # fmt: skip
            return
        if first:
            log.warning("results store: the database refuses writes (%s); keeping results in %s "
                        "until it takes them again", error, journal.path)  # fmt: skip

    def _commit(self, what: str, method: str, args: tuple) -> str | None:
        """Make the write, retrying with backoff; None when done, else the last error's line."""
        for delay in RETRY_DELAYS_S:
            error = self._attempt(method, args)
            if error is None:
                return None
            log.info("results store: %s failed (%s); retrying in %.1f s", what, error, delay)
            time.sleep(delay)
        return self._attempt(method, args)

    def _attempt(self, method: str, args: tuple) -> str | None:
        """One try at the write: None when it is in, else the database's error in one line."""
        try:
            getattr(self._store(), method)(*args)
            return None
        except (sqlalchemy.exc.SQLAlchemyError, StoreError) as exc:
            # the live engine's URL holds the password to scrub; without one there is none to leak
            return driver_error(exc, self.store.engine.url if self.store is not None else make_url(self._url))

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._started[trial.trial_id] = time.monotonic()
        # no node yet: Tune often does not know it at start; each epoch reports its node id
        self._write("trial start", "trial_started", self.study_id, self._info(trial))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if result.get("trial_status") == TrialStatus.SKIPPED or "epoch" not in result:
            return
        key = self._info(trial).trial_key
        self._write("epoch", "record_epoch", self.study_id, key, result)

    def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any, **info: Any) -> None:
        """Tune has persisted the checkpoint of the trial's latest result (`trial.last_result`
        is that result: a trial waits for its save): keep where it is, and whether it is the
        best epoch's.  Tune keeps the best by `val_acc` and the last (`engine.run_study`)."""
        result = trial.last_result or {}
        if "epoch" not in result:
            return
        best = result.get("best_epoch") == result["epoch"]
        self._write("checkpoint", "record_checkpoint", self.study_id, self._info(trial).trial_key,
                    str(checkpoint.path), best)

    def _finish(self, trial: Any, status: TrialStatus, error: str | None = None, failure: str | None = None) -> None:
        if trial.trial_id not in self._started:  # its worker died before it started: give it a row
            self.on_trial_start(0, [], trial)
        started = self._started.pop(trial.trial_id)
        wall = time.monotonic() - started
        key = self._info(trial).trial_key
        self.ended[key] = status
        self._write("trial end", "trial_finished", self.study_id, key, status, error, wall, failure)
        if self.mirror is not None:
            self._unmirrored.append(key)
            self._sync_mirror()

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        """Tune's loop turns many times a second: ends waiting for the mirror go once it is time."""
        if self._unmirrored:
            self._sync_mirror()

    def _sync_mirror(self) -> None:
        """Add the waiting ends to the Optuna mirror, unless it was synced under `MIRROR_EVERY_S` ago.
        An end still in the journal is not in our tables yet: the run's last sync adds it."""
        if self.mirror is None or self.store is None or self.clock() - self._mirrored_at < MIRROR_EVERY_S:
            return
        keys, self._unmirrored = self._unmirrored, []
        self.mirror.sync(self.store, self.study_id, keys)
        self._mirrored_at = self.clock()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        last = trial.last_result or {}
        reported = last.get("trial_status")
        if reported == TrialStatus.SKIPPED:
            return
        if reported == TrialStatus.COMPLETED:
            self._finish(trial, TrialStatus.COMPLETED)
        elif reported == TrialStatus.FAILED:  # the trainer's own verdict (it names the category: diverged)
            error = _tail(str(last.get("error") or "failed without an error text"))
            self._finish(trial, TrialStatus.FAILED, error, last.get("failure") or failures.classify(error))
        elif self.fatal is None and self.pruned is not None and self.pruned(trial.trial_id):
            self._finish(trial, TrialStatus.PRUNED)
        # else: stopped with the study (interrupted); it stays unfinished and a resume continues it

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A worker died and Tune will retry the trial: nothing to record, unless it cannot help."""
        self._stop_if_storage_full(_error_text(trial))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        text = _error_text(trial)
        self._stop_if_storage_full(text)
        self._finish(trial, TrialStatus.FAILED, _tail(text), failures.classify(text))

    def _stop_if_storage_full(self, error_text: str) -> None:
        """A full disk fails every trial the same way: stop the study (resumable) at the first."""
        if failures.classify(error_text) == failures.STORAGE_FULL:
            self.stop(storage_full(error_text))


def _error_text(trial: Any) -> str:
    """The traceback Ray saved for the trial: the local error file, else its storage copy."""
    path = trial.error_file
    if path:
        try:
            return Path(path).read_text(errors="replace")
        except OSError:
            pass
    error = trial.get_error()
    return str(error) if error else "trial errored; Ray recorded no error text"


def _tail(text: str) -> str:
    return text if len(text) <= ERROR_CHARS else "..." + text[-ERROR_CHARS:]


def storage_full(error_text: str) -> str:
    """The one line for a study stopped by a full disk, quoting the line of `error_text` that says so."""
    return (f"storage full: a trial could not write its checkpoint or results ({_full_line(error_text)}); "
            f"study interrupted: free space, then resume it")


def _full_line(error_text: str) -> str:
    """The line of a traceback that says the disk is full (or its last line)."""
    lines = [line.strip() for line in error_text.splitlines() if line.strip()]
    for line in lines:
        if failures.classify(line) == failures.STORAGE_FULL:
            return line[:300]
    return failures.last_line(error_text) or "no error text"

