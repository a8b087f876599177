"""Real `python -m rksearch.run` drivers for fault tests: the command, its environment, its rows.

Each driver starts its own local Ray (``RAY_ADDRESS=local``: never the test's or anyone else's)
in its own session, so a test can signal the driver alone or kill its whole process group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from rksearch.store.schema import epochs, studies, trials

REPO = Path(__file__).resolve().parents[1]


def env(**extra: str) -> dict[str, str]:
    # PYTHONFAULTHANDLER: a driver that hangs is sent SIGABRT and prints where every thread was
    return {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_ADDRESS": "local", "PYTHONFAULTHANDLER": "1",
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), **extra}


def command(study: Path, db: Path, checkpoints: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "rksearch.run", str(study), "--storage", f"sqlite:///{db}",
            "--storage-path", str(checkpoints), "--no-preflight", *extra]


def run(cmd: list[str], cwd: Path, timeout: float = 300, **extra_env: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env(**extra_env), cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          start_new_session=True)


def start(cmd: list[str], cwd: Path, stderr: Path) -> subprocess.Popen:
    """A driver in the background; its stderr to a file (a pipe nobody reads would stall it)."""
    with stderr.open("w") as err:  # the child keeps its own copy of the file
        return subprocess.Popen(cmd, env=env(), cwd=cwd, stdout=subprocess.DEVNULL, stderr=err, text=True,
                                start_new_session=True)


def stop_when(cmd: list[str], cwd: Path, ready: Callable[[], bool], stop: Callable[[subprocess.Popen], None],
              timeout: float = 120) -> tuple[int, str]:
    """Start a driver, wait until `ready()` (polled; the test's own timeout bounds the wait, and a
    driver that exits first fails the test), `stop` it (a signal, a kill) and wait for it to end.
    Its exit status and stderr; whatever is left of it is SIGKILLed on the way out."""
    log = cwd / "driver.err"
    proc = start(cmd, cwd, log)
    try:
        while not ready():
            assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
            time.sleep(0.05)
        stop(proc)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGABRT)  # its threads' stacks to the log, for the failure below
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
            raise AssertionError(f"the driver did not end {timeout:g} s after it was stopped; its stderr:\n"
                                 + log.read_text(errors="replace")[-6000:]) from None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, log.read_text(errors="replace")


def state(db: Path, name: str) -> tuple[str | None, list[dict], list[tuple[int, int]]]:
    """Study `name`'s status, its trial rows and its (trial id, epoch) pairs; (None, [], []) before any."""
    if not db.exists():
        return None, [], []
    engine = sa.create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            row = conn.execute(sa.select(studies.c.id, studies.c.status).where(studies.c.name == name)).first()
            if row is None:
                return None, [], []
            rows = [r._asdict() for r in conn.execute(sa.select(trials).where(trials.c.study_id == row.id))]
            pairs = conn.execute(sa.select(epochs.c.trial_id, epochs.c.epoch)
                                 .join(trials, epochs.c.trial_id == trials.c.id)
                                 .where(trials.c.study_id == row.id)).all()
            return row.status, rows, [tuple(p) for p in pairs]
    except sa.exc.OperationalError:  # tables not created yet, or briefly locked
        return None, [], []
    finally:
        engine.dispose()


def error_lines(stderr: str) -> list[str]:
    """The lines a person is meant to read: no traceback, no log records."""
    return [line for line in stderr.splitlines() if line.startswith("error:")]
