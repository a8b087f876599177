"""The imports a driver makes while it waits (`rksearch.search.preload`)."""

from __future__ import annotations

import logging
import sys

from rksearch.search import engine, preload


def test_a_module_that_fails_to_import_in_the_background_is_logged_and_the_rest_still_load(caplog, monkeypatch) -> None:
    caplog.set_level(logging.DEBUG, logger=preload.__name__)
    monkeypatch.delitem(sys.modules, "colorsys", raising=False)  # so that this import is seen
    preload.import_in_background("rksearch_no_such_module", "colorsys").join(30)
    assert "colorsys" in sys.modules
    [record] = [r for r in caplog.records if "rksearch_no_such_module" in r.getMessage()]
    assert record.exc_info is not None and record.exc_info[0] is ModuleNotFoundError


def test_what_the_engine_preloads_names_modules_that_exist() -> None:
    """A renamed module would make the preload a silent no-op (it only logs at debug level)."""
    import importlib.util

    for name in engine.TUNE_TELEMETRY_IMPORTS:
        assert importlib.util.find_spec(name) is not None, name
