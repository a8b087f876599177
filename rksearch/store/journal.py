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

A line cut short by a crash during its append is ended by the next append and skipped when
read: the write it held was never acknowledged, and its trial is re-reported on resume.
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
    """An append-only file of store writes, one JSON object a line.

    Each entry is ``{"db": redacted URL, "method": ..., "args": [...], "at": ISO time}``: the
    database it was meant for (a journal is never replayed into another one), the `Store`
    method and its JSON arguments, and when the write first happened (kept as the row's time).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @classmethod
    def beside(cls, checkpoint_root: Path) -> Journal:
        return cls(Path(checkpoint_root) / JOURNAL_NAME)

    @property
    def rejected_path(self) -> Path:
        return self.path.with_suffix(".rejected.jsonl")

    def append(self, entry: dict[str, Any]) -> None:
        """Add one write, durably (flushed and fsynced) before returning; JournalError if not.

        A failed append is cut back off, and a line left unfinished by a crash is ended first,
        so a partial line can never swallow the next write.
        """
        line = json.dumps(entry, allow_nan=True).encode() + b"\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # unbuffered, so that what reached the file is known and can be cut back exactly
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                size = os.fstat(fd).st_size
                data = line if size == 0 or self._ends_a_line(size) else b"\n" + line
                try:
                    while data:
                        data = data[os.write(fd, data):]
                    os.fsync(fd)
                except OSError:
                    os.ftruncate(fd, size)
                    raise
            finally:
                os.close(fd)
        except OSError as exc:
            raise JournalError(exc.errno, f"cannot write the results journal {self.path}: "
                                          f"{exc.strerror or exc}") from exc  # fmt: skip

    def _ends_a_line(self, size: int) -> bool:
        with open(self.path, "rb") as f:
            f.seek(size - 1)
            return f.read(1) == b"\n"

    def entries(self) -> list[dict[str, Any]]:
        """The writes in the order they were appended.

        A line that does not parse is what a crash mid-append left: that write was never
        acknowledged (its trial is re-reported on resume), so it is skipped with a warning.
        """
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return []
        out = []
        for number, line in enumerate(text.splitlines(), 1):
            try:
                entry = json.loads(line)
                if not isinstance(entry, dict) or not {"db", "method", "args"} <= set(entry):
                    raise ValueError("not a journal entry")
                out.append(entry)
            except ValueError:
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

    def reject(self, entry: dict[str, Any], reason: str) -> None:
        """Set aside an entry the database will never take (a bug, not an outage), with why,
        so it neither blocks the entries after it nor disappears."""
        with open(self.rejected_path, "a", encoding="utf-8") as out:
            out.write(json.dumps({**entry, "rejected": reason}, allow_nan=True) + "\n")
            out.flush()
            os.fsync(out.fileno())

    def clear(self) -> None:
        """Forget every entry: they are all in the database now."""
        self.path.unlink(missing_ok=True)
