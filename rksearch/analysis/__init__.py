"""Analysis of recorded studies: frames, statistics over seeds, tables, Pareto fronts, plots.

The public names (``rksearch.analysis.mean_ci``, ``.ablation``, ``.paper_table``, ...) resolve
lazily, so importing one submodule (``rksearch.analysis.pareto`` from `rksearch.results`) does
not import scipy or matplotlib.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

#: public name -> the submodule that defines it
_PUBLIC: dict[str, str] = {name: "frames" for name in (
    "FAMILIES", "family", "families", "completed", "dimension_columns", "ordered_groups", "level_text",
    "BOOTSTRAP_MIN_N", "require_metric", "replicates", "paper_table", "selection_text", "selection",
    "selection_splits", "selection_note", "pm_cell", "per_configuration", "SELECTED_ON_TEST",
    "SELECTED_ON_HOLDOUT", "table_caption", "table_markdown", "table_latex", "table_csv", "mean_ci",
    "bootstrap_ci", "Paired", "paired", "holm", "ablation", "ablation_markdown", "model_labels",
    "amount_text", "confidence_label", "TABLE_FIELDS", "RESAMPLING_SEED", "EXACT_SIGN_FLIP_MAX_N",
)}


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'rksearch.analysis' has no attribute {name!r}")
    return getattr(import_module(f"rksearch.analysis.{module}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))


__all__ = sorted(_PUBLIC)
