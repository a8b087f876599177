"""Study frames: families, completed trials, search dimensions, replicates and selection.

Everything here works on the frame `rksearch.results.load` returns (one row per trial, errors
as fractions, the search-dimension columns listed in `df.attrs["dims"]`), so it runs the same
on a SQLite file, PostgreSQL, or a frame built by hand (which passes `dims=` instead).
Validation selects, test reports: summaries default to `test_error` / `test_acc` (the test
set on the checkpoint the validation metric chose) and say on which split the models were
selected.  Replicate seeds are first-class: `replicates` summarises each configuration over
its seeds with `rksearch.analysis.stats.mean_ci`, which invents no interval from one seed.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from rksearch.analysis.stats import mean_ci
from rksearch.analysis.values import codes, missing
from rksearch.training.status import TrialStatus

log = logging.getLogger(__name__)

#: model families in the order tables and legends list them (others follow alphabetically).
FAMILIES: tuple[str, ...] = (
    "ERKNet", "IRKNet", "RKCNN-E", "RKCNN-I", "RKCNN-R",
    "DenseNet", "CliqueNet", "PreActResNet", "LM-ResNet",
)  # fmt: skip

#: a known family name at the start of a model name, followed by '-', a space, '(' or the end
_FAMILY_RE = re.compile(
    "^(" + "|".join(re.escape(f) for f in sorted(FAMILIES, key=len, reverse=True)) + r")(?=[-\s(]|$)"
)

#: the validation counterpart of each reporting metric, offered when a frame has no test numbers
_VALIDATION_ALTERNATIVE = {
    "test_error": "best_val_error", "test_acc": "best_val_acc",
    "test_error_final": "final_val_error", "test_acc_final": "final_val_acc",
}  # fmt: skip

#: the column that tells the configurations apart in `per_configuration` (a text key, so that
#: list-valued dimensions such as stages and missing values join like any other value)
CONFIG_KEY = "_configuration"

#: the statistics columns `analysis.replicates` gives for its metric
STATS = ("mean", "sd", "n", "ci_low", "ci_high", "half_width")

#: the header phrases of each selection protocol
SELECTED_ON_TEST = "selected on test (the paper's protocol)"
SELECTED_ON_HOLDOUT = "selected on validation holdout; test reported once per trial"


def family(model_name: str) -> str:
    """The family a model belongs to, from its name: what plots draw as one series.

    'ERKNet-7x1 7x1 7x1' -> 'ERKNet', 'RKCNN-E-3_3_3' -> 'RKCNN-E', 'DenseNet-BC-100' ->
    'DenseNet'.  An unknown name keeps its text before the first '-' so that a new family
    still forms its own series instead of vanishing into an 'other' bucket.
    """
    name = str(model_name).strip()
    known = _FAMILY_RE.match(name)
    if known:
        return known.group(1)
    return re.split(r"[-\s(]", name, maxsplit=1)[0] or name


def families(df: pd.DataFrame) -> pd.Series:
    """`family` of every row's model_name, aligned with `df`."""
    return df["model_name"].map(family).astype(object)


def completed(df: pd.DataFrame) -> pd.DataFrame:
    """Only trials that finished: pruned/failed/running ones have no comparable accuracy."""
    if "status" not in df.columns:
        return df
    return df[df["status"] == TrialStatus.COMPLETED]


def dimension_columns(df: pd.DataFrame, dims: Sequence[str] | None = None) -> list[str]:
    """The search-dimension columns of a trial frame: `dims` if given, else `df.attrs["dims"]`.

    `results.load` records the dimensions in the frame's attrs; a frame built by hand (or one
    whose attrs a pandas operation dropped) must name them, because a column's name alone
    cannot tell a search dimension from any other column.
    """
    if dims is None:
        dims = df.attrs.get("dims")
        if dims is None:
            raise ValueError(
                "the frame does not list its search dimensions (df.attrs['dims'], set by "
                "rksearch.results.load): pass dims=[...]"
            )
    missing = [d for d in dims if d not in df.columns]
    if missing:
        raise KeyError(f"search dimension(s) {missing} are not columns of the frame")
    return list(dims)


def ordered_groups(values: Iterable[Hashable]) -> list[Hashable]:
    """Distinct group values, known families first in paper order, then the rest sorted."""
    distinct = list(dict.fromkeys(v for v in values if not missing(v)))
    known = [f for f in FAMILIES if f in distinct]
    return known + sorted((v for v in distinct if v not in FAMILIES), key=str)


def require_metric(df: pd.DataFrame, metric: str) -> None:
    """Refuse a metric the frame cannot report: no such column, or no completed trial with a value.

    A database from before test metrics were recorded loads with `test_error` / `test_acc`
    all NaN; a table or summary of it would be silently empty, so this says what to pass
    instead (the validation counterpart, e.g. metric="best_val_error").  An empty frame, or one
    without completed trials, passes: there is nothing to misreport yet.
    """
    alternative = _VALIDATION_ALTERNATIVE.get(metric)
    hint = (f"; report the validation metric {alternative!r} instead (metric= in Python, --metric or --y "
            f"on the command line)" if alternative else "")
    if metric not in df.columns:
        raise ValueError(f"the study has no {metric!r} column{hint}")
    done = completed(df)
    if len(done) and done[metric].isna().all():
        raise ValueError(
            f"no completed trial has a {metric!r} value (a database from before test metrics were "
            f"recorded?){hint}"
        )


def replicates(
    df: pd.DataFrame, metric: str = "test_error", dims: Sequence[str] | None = None, level: float = 0.95
) -> pd.DataFrame:
    """One row per configuration of the completed trials, summarised over its replicate seeds.

    A configuration is everything but the seed: model name, canonical architecture, every
    search dimension and, where the frame has it, `validation` (the split that selected the
    checkpoint: trials selected on test are never pooled with holdout-selected ones, as when a
    study begun before the holdout default is resumed).  Trials whose `metric` is NaN are left
    out.  Columns: family, model_name, canonical (if the frame has it), the dimensions except
    seed, params, flops, validation (if present), then over the seeds' `metric` values: mean,
    sd (sample s.d., NaN for one seed), n, ci_low, ci_high (`mean_ci` at `level`) and
    half_width ((ci_high - ci_low) / 2, NaN for one seed).  A seed that appears twice in one
    configuration (the same trial recorded under two keys, by two code versions) is logged:
    the replicates are then not independent.

    Rows are sorted stably by family (paper order, `ordered_groups`), then FLOPs and params;
    configurations that tie keep the frame's order.  `attrs` keeps metric and level.
    A `metric` the frame cannot report raises ValueError (`require_metric`).
    """
    require_metric(df, metric)
    keys = ["model_name"] + [k for k in ("canonical",) if k in df.columns]
    keys += [c for c in dimension_columns(df, dims) if c not in ("seed", *keys)]
    selected = [c for c in ("validation",) if c in df.columns and c not in keys]
    firsts = [*keys, "params", "flops", *selected]
    done = completed(df).dropna(subset=[metric])
    rows = [_over_seeds(group, metric, firsts, level) for group in _configurations(done, [*keys, *selected])]
    out = pd.DataFrame(rows, columns=[*firsts, *STATS])
    out["n"] = out["n"].astype(int)
    out.insert(0, "family", families(out) if len(out) else pd.Series(dtype=object))
    out = _in_family_order(out)
    out.attrs.update(metric=metric, level=level)
    return out


def _configurations(done: pd.DataFrame, keys: Sequence[str]) -> list[pd.DataFrame]:
    """The trials of each configuration (equal `keys`), in the frame's order of first appearance."""
    if not len(done):
        return []
    keyed = [pd.Series(codes(done[k])[0], index=done.index) for k in keys]
    return [group for _, group in done.groupby(keyed, sort=False)]


def _over_seeds(group: pd.DataFrame, metric: str, firsts: Sequence[str], level: float) -> dict[str, Any]:
    """One configuration's row: its `firsts` columns, then `metric`'s statistics over its seeds."""
    values = group[metric].to_numpy(dtype=float)
    mean, low, high = mean_ci(values, level)
    first = group.iloc[0]
    if "seed" in group.columns and group["seed"].duplicated().any():
        log.warning("%s: seed(s) %s appear more than once in one configuration (trials of two code "
                    "versions?); its %d values are not independent replicates", first["model_name"],
                    sorted(set(group["seed"][group["seed"].duplicated()])), len(values))
    return {k: first[k] for k in firsts} | {
        "mean": mean,
        "sd": float(np.std(values, ddof=1)) if len(values) > 1 else math.nan,
        "n": len(values),
        "ci_low": low,
        "ci_high": high,
        "half_width": (high - low) / 2.0,
    }


def _in_family_order(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows sorted stably by family (paper order), then FLOPs and params."""
    if not len(rows):
        return rows
    rank = {g: i for i, g in enumerate(ordered_groups(rows["family"]))}
    order = pd.DataFrame({
        "rank": rows["family"].map(rank),
        "flops": rows["flops"].astype(float),
        "params": rows["params"].astype(float),
    })  # fmt: skip
    return rows.loc[order.sort_values(["rank", "flops", "params"], kind="mergesort").index].reset_index(drop=True)


def selection_splits(df: pd.DataFrame) -> set[str]:
    """The splits that selected the rows' checkpoints ('holdout', 'test'); empty when the frame
    does not record them (no `validation` column, or none filled in)."""
    if "validation" not in df.columns:
        return set()
    return {str(v) for v in df["validation"] if not missing(v)}


def selection(df: pd.DataFrame) -> str | None:
    """'test' when any row was selected on the test set, 'holdout' when rows say so, else None.

    One row selected on test is enough to make a table, plot or summary of the frame say so.
    A frame without a `validation` column (or with it empty) does not say: None.
    """
    splits = selection_splits(df)
    return "test" if "test" in splits else "holdout" if splits else None


def selection_note(df: pd.DataFrame) -> str | None:
    """The short note plots carry: 'selected on test', 'selected on validation' or None."""
    return {"test": "selected on test", "holdout": "selected on validation"}.get(selection(df) or "")


def selection_text(rows: pd.DataFrame, metric: str = "test_error") -> str:
    """On which split the checkpoints of `rows` (trials or `replicates`) were selected, as text.

    Any row with validation == 'test' makes it 'selected on test (the paper's protocol)' (with
    'some configurations' when others used the holdout): those test numbers were also what
    chose the checkpoint, so they are optimistic.  Otherwise 'selected on a validation holdout;
    test error reported' (or '...; validation error reported' for a validation metric).  A
    frame that does not record the split says so.
    """
    splits = selection_splits(rows)
    reported = "test error reported" if metric.startswith("test_") else f"{metric} reported"
    if "test" in splits:
        if splits == {"test"}:
            return "selected on test (the paper's protocol)"
        return "some configurations selected on test (the paper's protocol), the others on a validation holdout"
    if splits == {"holdout"}:
        return f"selected on a validation holdout; {reported}"
    if not splits:
        return f"selection split not recorded; {reported}"
    return f"selected on {', '.join(sorted(splits))}; {reported}"



def per_configuration(
    df: pd.DataFrame, metrics: Sequence[str], dims: Sequence[str] | None = None, level: float = 0.95
) -> pd.DataFrame:
    """`replicates` of `metrics[0]` over the completed trials, with the statistics of
    the other metrics beside.

    The rows and their columns are those of `replicates(df, metrics[0])`; each further metric
    m adds m_mean, m_sd, m_n, m_ci_low, m_ci_high and m_half_width of the same configuration
    (NaN, n = 0 where none of its trials has m, e.g. no test accuracy on an older database).
    """
    first, *others = metrics
    dims = dimension_columns(df, dims)
    df = completed(df)
    keyed = df.assign(**{CONFIG_KEY: _config_keys(df, [d for d in dims if d != "seed"])})
    keyed.attrs = {**df.attrs, "dims": [*dims, CONFIG_KEY]}
    rows = replicates(keyed, first, [*dims, CONFIG_KEY], level)
    for metric in others:
        if metric in keyed.columns and keyed[metric].notna().any():
            more = replicates(keyed, metric, [*dims, CONFIG_KEY], level).set_index(CONFIG_KEY)
        else:  # e.g. no test numbers in a database from before they were recorded
            more = pd.DataFrame(columns=[*STATS], dtype=float)
        for stat in STATS:
            rows[f"{metric}_{stat}"] = rows[CONFIG_KEY].map(more[stat]).to_numpy(dtype=float)
        rows[f"{metric}_n"] = rows[f"{metric}_n"].fillna(0).astype(int)
    return rows.drop(columns=CONFIG_KEY)


def _config_keys(df: pd.DataFrame, dims: Sequence[str]) -> pd.Series:
    """One text per configuration: model name, canonical architecture and search dimensions."""
    columns = ["model_name", *[c for c in ("canonical",) if c in df.columns], *dims,
               *[c for c in ("validation",) if c in df.columns]]
    columns = list(dict.fromkeys(columns))
    return df[columns].apply(lambda row: repr(tuple(level_text(v) for v in row)), axis=1) \
        if len(df) else pd.Series([], index=df.index, dtype=object)


def level_text(level: Any) -> str:
    """A dimension level as text for tables, legends and ticks (stages as '(2, 2, 2)').

    A missing level (a dimension a model does not have, e.g. the stages of a DenseNet) reads
    'none', whether the frame holds it as None or NaN.
    """
    if isinstance(level, (list, tuple)):
        return "(" + ", ".join(map(str, level)) + ")"
    if missing(level):
        return "none"
    return str(level)


__all__ = [
    "CONFIG_KEY",
    "FAMILIES",
    "SELECTED_ON_HOLDOUT",
    "SELECTED_ON_TEST",
    "STATS",
    "completed",
    "dimension_columns",
    "families",
    "family",
    "level_text",
    "ordered_groups",
    "per_configuration",
    "replicates",
    "require_metric",
    "selection",
    "selection_note",
    "selection_splits",
    "selection_text",
]
