"""The results store: every study, trial and epoch in one SQL database (SQLite or PostgreSQL).

`open_store(url)` gives the writer; `StoreCallback` feeds it from Ray Tune; `mirror` makes each
study an Optuna study in the same database; `urls.redact` is how a database URL is shown.  Every name is imported on first use: reading results
(`rksearch.results`) never imports Ray, and preflight reaches `rksearch.store.urls` without
loading SQLAlchemy and Alembic.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rksearch.store.callback import StoreCallback
    from rksearch.store.db import StoreError
    from rksearch.store.writer import Store, TrialInfo, open_store

#: public name -> the module that defines it
_HOMES = {"open_store": "writer", "Store": "writer", "TrialInfo": "writer", "StoreError": "db",
          "StoreCallback": "callback"}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_HOMES[name]}"), name)


__all__ = ["open_store", "Store", "StoreError", "TrialInfo", "StoreCallback"]
