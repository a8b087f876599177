"""`TrialStatus`: the one list of what a trial's row can say it is.

A `StrEnum`, so a status compares equal to the plain string the database, Ray's results and
pandas frames hold (``TrialStatus.COMPLETED == "completed"``) and is written as that string.
It lives beside the training loop because a worker reports the first two end states itself;
the store, the engine and the analysis all import it from here.
"""

from __future__ import annotations

from enum import StrEnum


class TrialStatus(StrEnum):
    """In the order a trial can pass through them."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    PRUNED = "pruned"
    FAILED = "failed"
    #: never trained: over a budget, invalid, or (on a replay) not in the recording
    SKIPPED = "skipped"


__all__ = ["TrialStatus"]
