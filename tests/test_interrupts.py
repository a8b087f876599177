"""Ctrl-C stops a study even when its KeyboardInterrupt is lost on the way (`search.interrupts`).

Real signals to this process; the lost exception is Python's own behaviour for an exception
raised inside a finaliser, not a mock of it.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import time
from collections.abc import Iterator

import pytest

from rksearch.search.interrupts import Interrupt
from rksearch.search.schedulers import StopStudy


class _Finaliser:
    """Receives SIGINT while its ``__del__`` runs, as a Ray handle or a pooled connection might."""

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # the handler runs between these bytecodes
            pass


class _Callback:
    fatal = None


@pytest.fixture(autouse=True)
def _python_handles_ctrl_c() -> Iterator[None]:
    """SIGINT as a fresh Python process has it (an earlier test in this process may have left it ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_ctrl_c_lost_in_a_finaliser_still_stops_the_study(monkeypatch: pytest.MonkeyPatch) -> None:
    lost = []
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: lost.append(unraisable.exc_type))
    interrupt = Interrupt()
    stopper = StopStudy(_Callback(), interrupt)  # type: ignore[arg-type]
    with interrupt.catching():
        assert not stopper.stop_all()
        _Finaliser()  # dropped at once: __del__ runs, the KeyboardInterrupt it gets is printed and lost
        gc.collect()
    assert lost == [KeyboardInterrupt]  # what Python does with it: "Exception ignored in ..."
    assert interrupt.requested and stopper.stop_all()


def test_ctrl_c_still_raises_and_the_handlers_come_back_unchanged() -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    env_before = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    interrupt = Interrupt()
    with pytest.raises(KeyboardInterrupt), interrupt.catching():
        assert os.environ["TUNE_DISABLE_SIGINT_HANDLER"] == "1"  # Tune's own handler stays out
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
    assert interrupt.requested
    assert {s: signal.getsignal(s) for s in before} == before
    assert os.environ.get("TUNE_DISABLE_SIGINT_HANDLER") == env_before


def test_a_handler_replaced_while_running_is_not_put_back() -> None:
    """run.py's SIGTERM handler ignores a second SIGTERM from the first on; leaving the engine
    must not re-arm it for the clean-up."""
    calls = []

    def once(signum: int, frame: object) -> None:
        calls.append(signum)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    previous = signal.signal(signal.SIGTERM, once)
    try:
        interrupt = Interrupt()
        with interrupt.catching():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)
        assert calls == [signal.SIGTERM] and interrupt.requested
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)
