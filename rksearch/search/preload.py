"""Imports made on a thread while the process waits, so that they are not made later in line.

A study's driver spends seconds waiting: for Ray to start (`ray.init` mostly sleeps while the
raylet registers), then for its trials.  Modules it is sure to need after such a wait (those Ray
Tune imports at `fit()`) cost less imported meanwhile.
Should the main thread reach one first, Python's per-module import lock makes it wait for the
import under way instead of importing twice.
"""

from __future__ import annotations

import importlib
import logging
import threading

log = logging.getLogger(__name__)


def import_in_background(*modules: str) -> threading.Thread:
    """Import `modules`, in order, on a daemon thread (returned, already started).  A module
    that fails to import is logged at debug level and skipped: the import where it is needed
    raises the same error, in the place that can report it."""

    def load() -> None:
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:
                log.debug("background import of %s failed", name, exc_info=True)

    thread = threading.Thread(target=load, name="rksearch-preload", daemon=True)
    thread.start()
    return thread


__all__ = ["import_in_background"]
