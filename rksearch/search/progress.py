"""What a person watching a study sees: one live status line (the summary at the end is
`rksearch.analysis.report`, read from the database).

Ray Tune's own tables are switched off (``verbose=0``) and Ray's logs go to a file; this view
counts trials by state, shows the best so far and a rough ETA, and redraws in place on a
terminal (one line per finished trial when the output is a file or a CI log).
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, Callable, TextIO

from ray import tune

from rksearch.training.status import TrialStatus


class ProgressView(tune.Callback):
    """Live counts: done / running / pending / failed, best so far, elapsed and ETA.

    A trial is done when it reached its end: completed, failed for good, or stopped by the
    scheduler.  One that Tune ended because the study stopped (Ctrl-C, a fault) is not done,
    it is waiting for the resume; and the best is taken over trials that have not failed.
    """

    def __init__(self, study: str, metric: str, total: int, already_done: int = 0,
                 stream: TextIO | None = None, pruned: Callable[[str], bool] | None = None) -> None:
        self.study, self.metric, self.total, self.already_done = study, metric, total, already_done
        self.pruned = pruned  # None (no scheduler): nothing is ever pruned
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        #: Tune trial id -> (best value, model name) of every trial that has not failed
        self.bests: dict[str, tuple[float, str]] = {}
        self._last_draw = 0.0
        self._trials: list = []
        self.label = "val acc"

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "stream": None, "_trials": []}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.stream = sys.stdout

    @property
    def best(self) -> tuple[float, str] | None:
        return max(self.bests.values(), default=None)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self._trials = trials
        value = result.get(self.metric)
        if result.get("trial_status") == TrialStatus.FAILED:
            self.bests.pop(trial.trial_id, None)
        elif isinstance(value, (int, float)) and math.isfinite(value):
            known = self.bests.get(trial.trial_id)
            if known is None or value > known[0]:
                self.bests[trial.trial_id] = (float(value), str(result.get("model_name", trial.trial_id)))
        if self.tty and time.monotonic() - self._last_draw > 1.0:
            self._draw(trials, final=False)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._trials = trials
        self._draw(trials, final=True)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._trials = trials
        self.bests.pop(trial.trial_id, None)
        self._draw(trials, final=True)

    def finish(self) -> None:
        """The last line, once Tune has returned (also after Ctrl-C, when Tune sends no end)."""
        self._draw(self._trials, final=True)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def line(self, trials: list) -> str:
        outcomes = [_outcome(t, self.pruned) for t in trials]
        running, done = outcomes.count("running"), outcomes.count("done") + outcomes.count("failed")
        failed = outcomes.count("failed")
        waiting = max(self.total - done - running, 0)
        elapsed = time.monotonic() - self.started
        eta = "?"
        if done:
            eta = _clock(elapsed / done * (self.total - done))
        best = f"best {self.best[0]:.4f} {self.label} ({self.best[1]})" if self.best else f"best {self.label} -"
        return (f"[{self.study}] {done + self.already_done}/{self.total + self.already_done} done, "
                f"{running} running, {waiting} pending, {failed} failed | {best} | "
                f"elapsed {_clock(elapsed)}, eta {eta}")

    def _draw(self, trials: list, final: bool) -> None:
        self._last_draw = time.monotonic()
        text = self.line(trials)
        if self.tty:
            self.stream.write("\r\033[K" + text)
        elif final:
            self.stream.write(text + "\n")
        self.stream.flush()


def _outcome(trial: Any, pruned: Callable[[str], bool] | None) -> str:
    """'done', 'failed', 'running' or 'waiting' (pending, paused, or ended by a stopped study)."""
    last = (trial.last_result or {}).get("trial_status")
    if trial.status == "ERROR" or (trial.status == "TERMINATED" and last == TrialStatus.FAILED):
        return "failed"
    ended = last in (TrialStatus.COMPLETED, TrialStatus.SKIPPED) or (pruned is not None and pruned(trial.trial_id))
    if trial.status == "TERMINATED" and ended:
        return "done"
    return "running" if trial.status == "RUNNING" else "waiting"


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"
