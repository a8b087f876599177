"""Store writes that could not be committed, kept durably until the database takes them.

A trial that trained for hours must not lose its result because the database's disk filled up
or its server went away for a while.  When a write fails (after the callback's retries), it is
appended here, one JSON line per write, flushed and fsynced before the callback returns; from
then on every later write queues behind it, so the database receives the writes in the order
they happened (a trial's start before its epochs, its epochs before its end).  Each write is an
idempotent upsert, so replaying one that did reach the database before a crash does no harm.

The file lives beside the study's checkpoints (usually another disk than the database's, and
already the place a resumed study reads).  `Store.replay` empties it at the start of every run
of the study and at its end; a study is never marked completed while it holds anything.

A line cut short by a crash during its append is the last line and is ignored when read: the
write it held was never acknowledged, and the trial it belongs to is re-reported on resume.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

JOURNAL_NAME = "results-journal.jsonl"


class JournalError(OSError):
    """The journal itself cannot be written: the result exists only in memory now."""


class Journal:
    """An append-only file of ``{"method": ..., "args": [...]}`` store writes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @classmethod
    def beside(cls, checkpoint_root: Path) -> Journal:
        return cls(Path(checkpoint_root) / JOURNAL_NAME)

    def append(self, method: str, args: list[Any]) -> None:
        """Add one write, durably (flushed and fsynced) before returning; JournalError if not."""
        line = json.dumps({"method": method, "args": args}, allow_nan=True, default=str) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as out:
                out.write(line)
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            raise JournalError(exc.errno, f"cannot write the results journal {self.path}: "
                                          f"{exc.strerror or exc}") from exc  # fmt: skip

    def entries(self) -> list[tuple[str, list[Any]]]:
        """The writes in the order they were appended; a torn last line is left out."""
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return []
        out = []
        for number, line in enumerate(text.splitlines(), 1):
            try:
                entry = json.loads(line)
                out.append((str(entry["method"]), list(entry["args"])))
            except (ValueError, KeyError, TypeError):
                log.warning("%s:%d: not a complete journal entry (cut short by a crash?); ignored",
                            self.path, number)  # fmt: skip
        return out

    def __len__(self) -> int:
        return len(self.entries())

    def pending(self) -> bool:
        """Whether any write waits here (cheap: no parsing)."""
        try:
            return self.path.stat().st_size > 0
        except FileNotFoundError:
            return False

    def clear(self) -> None:
        """Forget every entry: they are all in the database now."""
        self.path.unlink(missing_ok=True)
