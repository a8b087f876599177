"""What a cell of a study frame holds: missing values and integer codes for grouping.

A study frame mixes None (a dimension a model does not have), NaN (a metric not recorded) and
pandas' NA (a nullable integer column), and list-valued dimensions such as stages.  These two
functions are the one place that decides what counts as missing and how such values group,
so tables, ablations and a trial's reloaded model agree.  Only numpy is imported: the light
`rksearch.analysis.trained` uses `missing` too.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd


def missing(value: Any) -> bool:
    """None, NaN or pandas' NA (recognised by its type's name, so pandas need not be imported)."""
    return (value is None or (isinstance(value, float) and math.isnan(value))
            or type(value).__name__ == "NAType")


def codes(series: pd.Series) -> tuple[np.ndarray, list[Any]]:
    """Integer codes for a column's values and the sorted distinct values (missing last).

    Codes make tuple-valued dimensions (stages) and missing values safe to group and pair on:
    pandas would read a tuple key as several index levels, and NaN as no key at all.
    """
    values = [tuple(v) if isinstance(v, list) else v for v in series.tolist()]
    present = list(dict.fromkeys(v for v in values if not missing(v)))
    try:
        present.sort()
    except TypeError:
        present.sort(key=str)
    levels = present + ([None] if any(missing(v) for v in values) else [])
    index = {v: i for i, v in enumerate(present)}
    missing_code = len(present)
    return np.array([missing_code if missing(v) else index[v] for v in values], dtype=int), levels


__all__ = ["codes", "missing"]
