"""The Ray Tune callback that records every trial event through the one `Store` writer.

It runs on the driver, so the workers never talk to the database: one writer, no credentials
shipped to the cluster.  A database hiccup must not kill a study that has been training for
hours, so a failed write is retried with backoff and then logged, never raised into Ray; the
writes are idempotent, so a retry that did reach the database does no harm.

Ray pickles the callback with the experiment (``tuner.pkl``, for `Tuner.restore`).  The pickle
holds the database URL *without* its password and reconnects on first use, so credentials are
never written to the experiment directory; a restored run against a password-protected server
takes the password from ``PGPASSWORD`` or ``~/.pgpass`` as libpq does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy.exc
from sqlalchemy.engine import URL
from ray import tune

from rksearch.store.db import StoreError
from rksearch.store.writer import Store, TrialInfo, open_store

log = logging.getLogger(__name__)

#: seconds to wait before each retry of a failed write (then give up and log)
RETRY_DELAYS_S = (0.1, 0.5, 2.0)

#: how much of a failed trial's error text to keep (its tail: the exception is at the end)
ERROR_CHARS = 4000


class StoreCallback(tune.Callback):
    """Start, epochs, completion, pruning and failure of each Tune trial, into the store.

    `describe(trial.config)` gives the trial's TrialInfo (its key and costs); results whose
    `trial_status` is 'skipped' are the engine's to record and are ignored here.
    """

    def __init__(self, store: Store, study_id: int, describe: Callable[[dict], TrialInfo]) -> None:
        self.store: Store | None = store
        self._url = _without_password(store.engine.url)
        self.study_id = study_id
        self.describe = describe
        self._infos: dict[str, TrialInfo] = {}
        self._started: dict[str, float] = {}

    def __getstate__(self) -> dict[str, Any]:
        # no engine, no password; start times are per-process clocks and mean nothing elsewhere
        return {**self.__dict__, "store": None, "_infos": {}, "_started": {}}

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
        """Run one Store write, retrying database errors with backoff, never raising them."""
        for attempt, delay in enumerate((*RETRY_DELAYS_S, None)):
            try:
                getattr(self._store(), method)(*args)
                return
            except (sqlalchemy.exc.DBAPIError, StoreError) as exc:
                if delay is None:
                    log.error("results store: giving up on %s after %d attempts: %s", what, attempt + 1, exc)
                    return
                log.warning("results store: %s failed (%s); retrying in %.1f s", what, exc, delay)
                time.sleep(delay)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._started[trial.trial_id] = time.monotonic()
        # no node yet: Tune often does not know it at start; each epoch reports its node id
        self._write("trial start", "trial_started", self.study_id, self._info(trial))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if result.get("trial_status") == "skipped" or "epoch" not in result:
            return
        key = self._info(trial).trial_key
        self._write("epoch", "record_epoch", self.study_id, key, result)

    def _finish(self, trial: Any, status: str, error: str | None) -> None:
        started = self._started.pop(trial.trial_id, None)
        wall = None if started is None else time.monotonic() - started
        key = self._info(trial).trial_key
        self._write("trial end", "trial_finished", self.study_id, key, status, error, wall)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        last = trial.last_result or {}
        reported = last.get("trial_status")
        if reported == "skipped":
            return
        if reported == "completed":
            self._finish(trial, "completed", None)
        elif reported == "failed":
            self._finish(trial, "failed", _tail(str(last.get("error") or "failed without an error text")))
        else:  # stopped by the scheduler while still running: early-stopped
            self._finish(trial, "pruned", None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, "failed", _tail(_error_text(trial)))


def _without_password(url: URL) -> str:
    """`url` with no password at all (`URL.set(password=None)` would keep the old one)."""
    bare = URL.create(url.drivername, url.username, None, url.host, url.port, url.database, url.query)
    return bare.render_as_string(hide_password=False)


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
