"""One file per trial, ``checkpoint.pt``: everything needed to continue at the next epoch.

Only tensors and plain Python values go in, so the file loads with
``torch.load(weights_only=True)`` (no arbitrary unpickling of files from shared storage).
The random states of Python, NumPy and torch (CPU and every CUDA device) are saved with
it: together with the epoch-seeded batch order, a resumed trial replays exactly the
random draws (dropout, augmentation) an uninterrupted one makes.

A checkpoint is only worth anything if it loads, and the one that does not (a driver killed
mid-copy, a full disk, a file truncated by hand) must cost a trial some epochs, never the trial:
`save` writes atomically and durably, `load` checks the whole file before trusting it and says
why it cannot (`UnreadableCheckpoint`), and `first_loadable` picks the newest of several that
does, so that resuming falls back instead of failing on the same file at every retry.
"""

from __future__ import annotations

import os
import random
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

CHECKPOINT_NAME = "checkpoint.pt"
#: 2: with the best epoch and its weights (format 1 had neither, so a trial cannot be told
#: from it which epoch validation chose: it is not resumed from, it starts again)
FORMAT = 2
#: what a format-2 checkpoint holds besides ``format``: `train._Trainer.state` writes these and
#: `train._Trainer.restore` needs every one, so a file without one of them cannot be resumed from
KEYS = frozenset({"epoch", "best_val_acc", "best_epoch", "best_model", "metrics", "model", "optimizer",
                  "scheduler", "scaler", "rng"})
#: how a zip archive (what `torch.save` writes) begins
ZIP_MAGIC = b"PK\x03\x04"


class UnreadableCheckpoint(ValueError):
    """A ``checkpoint.pt`` that exists but cannot be resumed from; `reason` says why, in words."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"checkpoint {path} is unreadable ({reason})")
        self.path, self.reason = path, reason


class Loadable(NamedTuple):
    """What `first_loadable` found: the directory and state to resume from (both ``None`` when no
    candidate loads) and every newer candidate it passed over, with the reason."""

    directory: Path | None
    state: dict[str, Any] | None
    rejected: list[UnreadableCheckpoint]

    def note(self) -> str | None:
        """One line for whoever resumes: the checkpoints passed over and why, then what the
        trial resumes from instead; ``None`` when the first candidate loaded (nothing to say)."""
        if not self.rejected:
            return None
        then = ("no readable checkpoint, restarting from epoch 0" if self.state is None
                else f"resuming from epoch {self.state['epoch']} ({self.directory})")
        return "; ".join([*map(str, self.rejected), then])


def rng_state() -> dict[str, Any]:
    """Random states of Python, NumPy and torch in weights_only-loadable form."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(mt), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(directory: Path, state: dict[str, Any], *, durable: bool = True) -> Path:
    """Write ``directory/checkpoint.pt`` atomically and durably.

    The state goes to a temporary file in the same directory, is fsynced, renamed over the old
    checkpoint, and the directory is fsynced: a crash or a full disk at any point leaves either
    the old checkpoint or the new one, whole, and never a temporary file behind (an exception
    removes it; only a killed process can leave one, which nothing ever reads).

    ``durable=False`` leaves out the two fsyncs (5-50 ms a save on the 2-core test VM), for a
    staging file that is copied elsewhere and then thrown away: Tune copies each reported
    checkpoint into the trial's directory, and that copy is what the store records and a resume
    reads.  The write is still atomic and whole when `save` returns; only a power cut could
    lose it, and the staging file is never read after one.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CHECKPOINT_NAME
    # named by process, opened like any file (mkstemp's 0600 would outlive the rename)
    tmp = directory / f".{CHECKPOINT_NAME}.{os.getpid()}.tmp"
    try:
        with tmp.open("wb") as file:
            torch.save({"format": FORMAT, **state}, file)
            if durable:
                file.flush()
                os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        _fsync_directory(directory)  # the rename itself survives a power cut only once this is done
    return path


def load(directory: Path, map_location: torch.device | str = "cpu") -> dict[str, Any]:
    """Read ``directory/checkpoint.pt`` (weights_only) after checking that it is whole.

    Raises `FileNotFoundError` when there is no checkpoint, and `UnreadableCheckpoint` when it
    is truncated, corrupt, not a torch archive, of another format or missing a key: the whole
    archive's CRCs are verified first, because `torch.load` alone accepts flipped bytes in a
    tensor and reports a truncated file as a bare ``OSError: Invalid argument``.
    """
    path = Path(directory) / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {CHECKPOINT_NAME} in {directory} to resume from")
    damage = _damage(path)
    if damage is not None:
        raise UnreadableCheckpoint(path, damage)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # whatever the unpickler raises on an archive it cannot take
        raise UnreadableCheckpoint(path, f"not loadable: {type(exc).__name__}: {_first_line(exc)}") from exc
    found = state.get("format") if isinstance(state, dict) else type(state).__name__
    if found != FORMAT:
        raise UnreadableCheckpoint(path, f"wrong format: {found!r}, expected {FORMAT}")
    missing = KEYS - state.keys()
    if missing:
        raise UnreadableCheckpoint(path, f"missing keys: {', '.join(sorted(missing))}")
    return state


def first_loadable(directories: Iterable[Path], map_location: torch.device | str = "cpu") -> Loadable:
    """The first of `directories` (best first: newest first) whose checkpoint loads, and the
    ones before it that did not; it stops there, so older candidates are never read for nothing."""
    rejected: list[UnreadableCheckpoint] = []
    for directory in directories:
        try:
            return Loadable(Path(directory), load(directory, map_location), rejected)
        except FileNotFoundError:
            rejected.append(UnreadableCheckpoint(Path(directory) / CHECKPOINT_NAME, "missing"))
        except UnreadableCheckpoint as exc:
            rejected.append(exc)
    return Loadable(None, None, rejected)


def _damage(path: Path) -> str | None:
    """Why `path` is not a whole zip archive, or ``None``: the end record and every CRC checked."""
    size = path.stat().st_size
    if size == 0:
        return "empty: 0 bytes"
    if not zipfile.is_zipfile(path):
        with path.open("rb") as file:
            starts_as_zip = file.read(len(ZIP_MAGIC)) == ZIP_MAGIC
        # a zip's directory is written last: a zip start without one is a write cut short
        return (f"truncated: {size} bytes, the zip directory at its end is missing" if starts_as_zip
                else f"not a zip archive ({size} bytes), which torch.save always writes")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        return f"corrupt: {_first_line(exc)}"
    return None if bad is None else f"corrupt: CRC mismatch in {bad}"


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:200]


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
