"""Ctrl-C and SIGTERM while Ray Tune runs a study: they stop it, always.

The signal's handler raises `KeyboardInterrupt` (run.py's SIGTERM handler a subclass of it) out
of `Tuner.fit`, which the engine turns into an interrupted study.  Python cannot promise that
exception arrives: raised while the main thread runs a finaliser (an object's ``__del__``, a
weakref callback: Ray's handles and SQLAlchemy's pooled connections have them), it is printed as
"Exception ignored" and dropped, and the study would train on as if nothing had been asked.  So
each signal also sets `Interrupt.requested`, which the study's stopper (`StopStudy`) reads at
Tune's next result: the trials are stopped then, left unfinished for a resume, and the run ends
interrupted all the same.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any


class Interrupt:
    """Whether the user asked the running study to stop.  A plain flag, not a `threading.Event`:
    Ray pickles the stopper that holds it."""

    def __init__(self) -> None:
        self.requested = False

    @contextlib.contextmanager
    def catching(self) -> Iterator[None]:
        """While Tune runs: Ctrl-C (and SIGTERM, where the caller handles it) set `requested`
        and then do what they did before, which raises; Tune's own SIGINT handler is kept out,
        since it would end the trials and return as if the run were over, and its end
        callbacks would record them as finished."""
        previous_env = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        restore = self._wrap_handlers() if threading.current_thread() is threading.main_thread() else {}
        try:
            yield
        finally:
            for signum, (handler, wrapper) in restore.items():
                if signal.getsignal(signum) is wrapper:  # not replaced meanwhile (run.py's SIGTERM: by SIG_IGN)
                    signal.signal(signum, handler)
            if previous_env is None:
                os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
            else:
                os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = previous_env

    def _wrap_handlers(self) -> dict[int, tuple[Any, Any]]:
        """Put a flag-setting wrapper around each signal's Python handler; per signal, the
        handler to restore and its wrapper.  A signal left to the system (SIGTERM's default
        kills the process) is left alone."""
        restore = {}
        for signum in (signal.SIGINT, signal.SIGTERM):
            handler = signal.getsignal(signum)
            if callable(handler):
                wrapper = self._flagging(handler)
                signal.signal(signum, wrapper)
                restore[signum] = (handler, wrapper)
        return restore

    def _flagging(self, handler: Any) -> Any:
        def on_signal(signum: int, frame: Any) -> None:
            self.requested = True
            handler(signum, frame)
        return on_signal
