"""The results store: every study, trial and epoch in one SQL database (SQLite or PostgreSQL).

`open_store(url)` gives the writer; `StoreCallback` feeds it from Ray Tune.  The callback is
imported lazily so that reading results (`rksearch.results`) never imports Ray.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rksearch.store.db import StoreError
from rksearch.store.writer import Store, TrialInfo, open_store

if TYPE_CHECKING:
    from rksearch.store.callback import StoreCallback


def __getattr__(name: str) -> Any:
    if name == "StoreCallback":
        from rksearch.store.callback import StoreCallback

        return StoreCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["open_store", "Store", "StoreError", "TrialInfo", "StoreCallback"]
