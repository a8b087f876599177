"""What a person watching a study sees: a live status (the summary at the end is
`rksearch.analysis.report`, read from the database).

Ray Tune's own tables are switched off (``verbose=0``) and Ray's logs go to a file; this view
counts trials by state, shows the best so far, the epochs done of those planned with an ETA, and
each running trial's epoch.  On a terminal it redraws in place about once a second, in as many
lines as its width needs (a line the terminal wrapped could not be drawn over); on
anything else (a CI log, ``nohup``, a file) it prints a plain line every `every` seconds
(``$RKSEARCH_PROGRESS_EVERY``, default 30) and one per finished trial, never a carriage return.

The ETA counts epochs, not trials, so it means something after the first epochs of the first
trials (a Table-1 sweep may not finish a trial for hours):
  - planned: each trial Tune has created plans its own epochs (its ``epochs`` search value, else
    the study's ``train.epochs``); one not yet created plans the mean of those seen so far;
  - done: epochs reported in this run (a resumed trial's earlier epochs are not counted);
  - left: planned minus reached for trials still to finish; a trial that ended early (stopped by
    ASHA, failed) leaves nothing, so the remaining work shrinks when the scheduler prunes;
  - rate: epochs per second over the last `window` seconds (since the first trial started,
    while the study is younger than that), so it follows the cluster as it fills or drains.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from ray import tune

from rksearch.training.status import TrialStatus

log = logging.getLogger(__name__)

#: seconds between plain lines when the output is not a terminal
EVERY_ENV = "RKSEARCH_PROGRESS_EVERY"
#: running trials shown by name before "+N more"
SHOWN = 3
#: characters of a model name shown before ".."
NAME_WIDTH = 12


class ProgressView(tune.Callback):
    """Live counts: done / running / pending / failed, best so far, epochs, elapsed and ETA.

    A trial is done when it reached its end: completed, failed for good, or stopped by the
    scheduler.  One that Tune ended because the study stopped (Ctrl-C, a fault) is not done,
    it is waiting for the resume; and the best is taken over trials that have not failed.
    `clock` is injectable so that tests drive time instead of sleeping.
    """

    def __init__(self, study: str, metric: str, total: int, already_done: int = 0,
                 stream: TextIO | None = None, pruned: Callable[[str], bool] | None = None, *,
                 epochs: int = 1, every: float | None = None, window: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.study, self.metric, self.total, self.already_done = study, metric, total, already_done
        self.pruned = pruned  # None (no scheduler): nothing is ever pruned
        self.epochs = epochs  # a trial's planned epochs when its config does not search them
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.every = _every_from_env() if every is None else every
        self.window, self.clock = window, clock
        self.started = clock()
        #: Tune trial id -> (best value, model name) of every trial that has not failed
        self.bests: dict[str, tuple[float, str]] = {}
        #: Tune trial id -> (epoch it started this run from, epoch reached, model name)
        self.reached: dict[str, tuple[int, int, str]] = {}
        #: (time, epochs done) samples for the rate; the first is the window's start
        self._samples: collections.deque[tuple[float, int]] = collections.deque()
        self._last_draw = -math.inf
        self._drawn = 0  # lines of the last redraw on a terminal
        self._trials: list = []
        self.label = "val acc"

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "stream": None, "_trials": [], "clock": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.stream, self.clock = sys.stdout, time.monotonic

    @property
    def best(self) -> tuple[float, str] | None:
        return max(self.bests.values(), default=None)

    @property
    def epochs_done(self) -> int:
        return sum(reached - start for start, reached, _ in self.reached.values())

    # ---- Tune's events -------------------------------------------------------------------
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if not self._samples:  # the rate counts from the first trial's start, not Ray's
            self._samples.append((self.clock(), 0))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self._trials = trials
        value = result.get(self.metric)
        if result.get("trial_status") == TrialStatus.FAILED:
            self.bests.pop(trial.trial_id, None)
        elif isinstance(value, (int, float)) and math.isfinite(value):
            known = self.bests.get(trial.trial_id)
            if known is None or value > known[0]:
                self.bests[trial.trial_id] = (float(value), str(result.get("model_name", trial.trial_id)))
        self._count_epoch(trial, result)
        self._tick(trials)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        """Tune's loop turns many times a second: the clock between results."""
        self._trials = trials
        self._tick(trials)

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

    # ---- what is shown -------------------------------------------------------------------
    def line(self, trials: list) -> str:
        return " | ".join(self._segments(trials))

    def _segments(self, trials: list) -> list[str]:
        """Counts, epochs and ETA, elapsed, best: the best last, where a narrow terminal cuts."""
        outcomes = [_outcome(t, self.pruned) for t in trials]
        running, done = outcomes.count("running"), outcomes.count("done") + outcomes.count("failed")
        failed = outcomes.count("failed")
        waiting = max(self.total - done - running, 0)
        elapsed = self.clock() - self.started
        best = f"best {self.best[0]:.4f} {self.label} ({self.best[1]})" if self.best else f"best {self.label} -"
        counts = (f"[{self.study}] {done + self.already_done}/{self.total + self.already_done} done, "
                  f"{running} running, {waiting} pending, {failed} failed")
        return [counts, self._epochs(trials, outcomes), f"elapsed {_clock(elapsed)}", best]

    def running(self, trials: list) -> str:
        """Each running trial's epoch, e.g. ``ERKNet-6x1.. 37/300``, the first `SHOWN` of them."""
        shown = []
        for trial in trials:
            if _outcome(trial, self.pruned) == "running":
                _, reached, name = self.reached.get(trial.trial_id, (0, 0, str(trial)))
                shown.append(f"{_short(name)} {reached}/{self._planned(trial)}")
        more = f" +{len(shown) - SHOWN} more" if len(shown) > SHOWN else ""
        return "running: " + (", ".join(shown[:SHOWN]) + more if shown else "-")

    def _epochs(self, trials: list, outcomes: list[str]) -> str:
        """``epochs 17/60, 0.42/s, eta 1:42``: done in this run of those it plans, rate and ETA."""
        seen = {t.trial_id: self._planned(t) for t in trials}
        mean = sum(seen.values()) / len(seen) if seen else self.epochs
        unseen = max(self.total - len(trials), 0)
        left = unseen * mean + sum(max(seen[t.trial_id] - self.reached.get(t.trial_id, (0, 0))[1], 0)
                                   for t, outcome in zip(trials, outcomes) if outcome in ("running", "waiting"))
        done = self.epochs_done
        rate = self._rate(done)
        eta = "?" if rate is None else _clock(left / rate)
        speed = "-" if rate is None else (f"{rate:.2f}/s" if rate >= 0.1 else f"{rate * 3600:.0f}/h")
        return f"epochs {done}/{done + round(left)}, {speed}, eta {eta}"

    def _planned(self, trial: Any) -> int:
        """A trial's planned epochs: its ``epochs`` search value, else the study's."""
        spec = (getattr(trial, "config", None) or {}).get("trial") or {}
        return int(spec.get("assignment", {}).get("epochs", self.epochs))

    def _count_epoch(self, trial: Any, result: dict) -> None:
        epoch = result.get("epoch")
        if not isinstance(epoch, int):
            return
        name = str(result.get("model_name", trial))
        start, reached, _ = self.reached.get(trial.trial_id, (epoch - 1, epoch - 1, name))
        self.reached[trial.trial_id] = (start, max(reached, epoch), name)
        now = self.clock()
        if not self._samples:
            self._samples.append((self.started, 0))
        self._samples.append((now, self.epochs_done))

    def _rate(self, done: int) -> float | None:
        """Epochs per second since the newest sample at least `window` seconds old (or the start)."""
        now = self.clock()
        while len(self._samples) > 1 and self._samples[1][0] <= now - self.window:
            self._samples.popleft()
        if not self._samples:
            return None
        since, then = self._samples[0]
        return (done - then) / (now - since) if done > then and now > since else None

    def _tick(self, trials: list) -> None:
        """Redraw a terminal about once a second; a plain line every `every` seconds elsewhere."""
        if self.clock() - self._last_draw >= (1.0 if self.tty else self.every):
            self._draw(trials, final=not self.tty)

    def _draw(self, trials: list, final: bool) -> None:
        self._last_draw = self.clock()
        parts = [*self._segments(trials), self.running(trials)]
        if self.tty:
            width = max(shutil.get_terminal_size().columns - 1, 20)  # a wrapped line could not be redrawn
            lines = _wrap(parts, width)
            up = "\033[F" * max(self._drawn - 1, 0)  # back to the first line of the last redraw
            self.stream.write(f"\r{up}\033[J" + "\n".join(lines))
            self._drawn = len(lines)
        elif final:
            self.stream.write(" | ".join(parts) + "\n")
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


def _wrap(parts: list[str], width: int) -> list[str]:
    """`parts` joined by " | " into lines of at most `width` characters (a part longer than
    that is cut), so a terminal never wraps a line the next redraw could not go back over."""
    lines = [parts[0]]
    for part in parts[1:]:
        if len(lines[-1]) + 3 + len(part) <= width:
            lines[-1] += " | " + part
        else:
            lines.append("  " + part)
    return [line[:width] for line in lines]


def _every_from_env() -> float:
    """Seconds between plain lines: ``$RKSEARCH_PROGRESS_EVERY``, else 30 (also when it is not a
    positive number: a typo in it must not stop a study that has begun, so it is only logged)."""
    text = os.environ.get(EVERY_ENV, "30")
    try:
        every = float(text)
    except ValueError:
        every = -1.0
    if not every > 0:
        log.warning("%s=%r is not a positive number of seconds; printing every 30 s", EVERY_ENV, text)
        return 30.0
    return every


def _short(name: str) -> str:
    return name if len(name) <= NAME_WIDTH else name[:NAME_WIDTH - 2] + ".."


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"
