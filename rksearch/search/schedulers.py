"""What decides for Tune beside the searcher: the ASHA scheduler and the study's stopper.

Both see results through `blind`, as the searcher does (`rksearch.search.searcher`): the test
metrics a completed trial's last report carries must never steer which trial runs or stops.
"""

from __future__ import annotations

from typing import Any

from ray import tune
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from rksearch.search.interrupts import Interrupt
from rksearch.store.callback import StoreCallback
from rksearch.training.status import TrialStatus


def blind(result: dict) -> dict:
    """A trial's result without its test metrics: what the searcher and the scheduler may see.

    Only the last report of a completed trial carries them (`rksearch.training.loop`), and Tune would
    hand it to both; selecting on them would make the test set a second validation set.
    """
    return {name: value for name, value in result.items() if not name.startswith("test_")}


class RecordingASHA(ASHAScheduler):
    """ASHA that remembers the trials it stopped: only those are pruned, not ones a stopped
    study ended (which a resume must continue)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stopped: set[str] = set()

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, blind(result))
        if decision == TrialScheduler.STOP and result.get("trial_status") == TrialStatus.RUNNING:
            self.stopped.add(trial.trial_id)
        return decision

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        super().on_trial_complete(tune_controller, trial, blind(result))

    def stopped_trial(self, trial_id: str) -> bool:
        return trial_id in self.stopped


class StopStudy(tune.Stopper):
    """Ends the whole study as soon as the store callback says it cannot go on (`fatal`), or
    the user asked it to stop (`interrupt`: a Ctrl-C whose KeyboardInterrupt never reached
    `Tuner.fit`, see `rksearch.search.interrupts`).  Either way the running trials stay
    unfinished (the callback records no end for them) and a resume continues them."""

    def __init__(self, callback: StoreCallback, interrupt: Interrupt) -> None:
        self.callback, self.interrupt = callback, interrupt

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.callback.fatal is not None or self.interrupt.requested


__all__ = ["blind", "RecordingASHA", "StopStudy"]
