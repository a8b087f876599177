"""Why a trial failed, as a category: what decides whether a resumed study tries it again.

A trial's error text (Ray's saved traceback, or the trainer's own message) is kept in full in
``trials.error``; the category in ``trials.failure`` is what code acts on.  Infrastructure
faults (the machine, not the model) are retried by ``--resume``: the same trial on a healthy
machine is expected to succeed.  A diverged training (NaN loss) or an error in the code is not:
running it again gives the same result, so it stays failed unless ``--retry-failed`` asks.

Ray wraps a worker's exception in its own (``RayTaskError(MemoryError)``, ``ActorDiedError``
...) and the callback only sees the text of the traceback, so classification reads the text.
The patterns are checked in order: a worker killed for memory is also an ``ActorDiedError``,
and must be reported as out of memory, not as a crash.
"""

from __future__ import annotations

import re

DIVERGED = "diverged"
OUT_OF_MEMORY = "out_of_memory"
STORAGE_FULL = "storage_full"
CHECKPOINT = "checkpoint"
DATA_MISSING = "data_missing"
NODE_LOST = "node_lost"
WORKER_CRASH = "worker_crash"
#: cut short when its study stopped and not continued by the next run (an Optuna search draws
#: new points instead; a grid whose study file no longer plans it)
INTERRUPTED = "interrupted"
ERROR = "error"

#: failures of the machine rather than of the trial: ``--resume`` runs these again
INFRASTRUCTURE = frozenset({OUT_OF_MEMORY, STORAGE_FULL, CHECKPOINT, DATA_MISSING, NODE_LOST, WORKER_CRASH,
                            INTERRUPTED})
CATEGORIES = (DIVERGED, *sorted(INFRASTRUCTURE), ERROR)

#: (category, pattern over the error text), first match wins
_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (category, re.compile(pattern, re.IGNORECASE))
    for category, pattern in (
        (OUT_OF_MEMORY, r"OutOfMemoryError|\bMemoryError\b|out of memory|low on memory|memory pressure|"
                        r"Cannot allocate memory|DefaultCPUAllocator: can't allocate"),
        (STORAGE_FULL, r"No space left on device|ENOSPC|Disk quota exceeded|database or disk is full"),
        (CHECKPOINT, r"PytorchStreamReader|UnpicklingError|UnreadableCheckpoint|checkpoint \S+ is unreadable|"
                     r"no checkpoint\.pt in"),
        (DATA_MISSING, r"\bDataError\b|FileNotFoundError|not found under|download into .{0,300} failed"),
        (NODE_LOST, r"NodeDiedError|node .{0,80}(died|was terminated|is dead)|"
                    r"ActorUnavailableError|raylet .{0,40}died"),
        (WORKER_CRASH, r"ActorDiedError|WorkerCrashedError|RayActorError|(worker|actor) .{0,40}died|"
                       r"SIGKILL|SIGSEGV|Segmentation fault|exit code -?9\b"),
    )
)  # fmt: skip


def classify(error_text: str | None) -> str:
    """The category of a failure from its error text (a diverged trainer names its own)."""
    text = error_text or ""
    for category, pattern in _PATTERNS:
        if pattern.search(text):
            return category
    return ERROR


def last_line(text: str, width: int = 300) -> str:
    """The last non-empty line of an error text, cut to `width` ('' when there is none): a
    traceback, and the errors Ray wraps, end with what actually happened."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    return lines[-1] if len(lines[-1]) <= width else lines[-1][: width - 3] + "..."


def retried_on_resume(failure: str | None, *, retry_failed: bool = False) -> bool:
    """Whether a failed trial with this category trains again when the study is resumed.

    A failure recorded before categories existed (None) is treated as infrastructure: the old
    default skipped them forever, which is the behaviour this replaces.
    """
    return retry_failed or failure is None or failure in INFRASTRUCTURE
