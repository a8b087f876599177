"""Paper-style tables and honest statistics over replicate seeds from a study's trial DataFrame.

Everything here works on the frame `rksearch.results.load` returns (one row per trial, errors
as fractions, the search-dimension columns listed in `df.attrs["dims"]`), so it runs the same
on a SQLite file, PostgreSQL, or a frame built by hand (which passes `dims=` instead).
Validation selects, test reports: tables and summaries default to `test_error` / `test_acc`
(the test set on the checkpoint the validation metric chose), and say on which split the
models were selected.  Replicate seeds are first-class: `mean_ci` gives a Student-t interval
of the mean over seeds (a bootstrap only where there are enough of them to resample), `paired`
compares two configurations seed by seed, and none of them invents an interval from one seed.
"""

from __future__ import annotations

import inspect
import io
import itertools
import logging
import math
import re
import warnings
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.stats

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

#: the fields of each group of a Table-1-style table, in column order.
#: 'error (%)' is the mean over seeds, '± (%)' the half-width of its confidence interval (NaN
#: for one seed), 'n' the number of seeds.
TABLE_FIELDS: tuple[str, ...] = ("model", "GFLOPs", "params (M)", "error (%)", "± (%)", "n")

#: where `mean_ci` switches from the Student-t interval to a BCa bootstrap (see `mean_ci`)
BOOTSTRAP_MIN_N = 30

#: the seed of every resampling here (BCa bootstrap, random sign flips), so reports reproduce
RESAMPLING_SEED = 0

#: the most differences whose 2**n sign vectors `paired` enumerates for an exact p-value
EXACT_SIGN_FLIP_MAX_N = 16

#: the validation counterpart of each reporting metric, offered when a frame has no test numbers
_VALIDATION_ALTERNATIVE = {
    "test_error": "best_val_error", "test_acc": "best_val_acc",
    "test_error_final": "final_val_error", "test_acc_final": "final_val_acc",
}  # fmt: skip

Design = Literal["auto", "ofat", "grid"]


# --------------------------------------------------------------------------- selection


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
    return df[df["status"] == "completed"]


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
    distinct = list(dict.fromkeys(v for v in values if not _missing(v)))
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
    keys += selected
    stats = ["mean", "sd", "n", "ci_low", "ci_high", "half_width"]
    done = completed(df).dropna(subset=[metric])
    rows = []
    if len(done):
        codes = [pd.Series(_codes(done[k])[0], index=done.index) for k in keys]
        for _, group in done.groupby(codes, sort=False):
            values = group[metric].to_numpy(dtype=float)
            mean, low, high = mean_ci(values, level)
            first = group.iloc[0]
            if "seed" in group.columns and group["seed"].duplicated().any():
                log.warning("%s: seed(s) %s appear more than once in one configuration (trials of two code "
                            "versions?); its %d values are not independent replicates", first["model_name"],
                            sorted(set(group["seed"][group["seed"].duplicated()])), len(values))
            rows.append(
                {k: first[k] for k in firsts}
                | {
                    "mean": mean,
                    "sd": float(np.std(values, ddof=1)) if len(values) > 1 else math.nan,
                    "n": len(values),
                    "ci_low": low,
                    "ci_high": high,
                    "half_width": (high - low) / 2.0,
                }
            )
    out = pd.DataFrame(rows, columns=[*firsts, *stats])
    out["n"] = out["n"].astype(int)
    out.insert(0, "family", families(out) if len(out) else pd.Series(dtype=object))
    if len(out):
        rank = {g: i for i, g in enumerate(ordered_groups(out["family"]))}
        order = pd.DataFrame({
            "rank": out["family"].map(rank),
            "flops": out["flops"].astype(float),
            "params": out["params"].astype(float),
        })  # fmt: skip
        out = out.loc[order.sort_values(["rank", "flops", "params"], kind="mergesort").index].reset_index(drop=True)
    out.attrs.update(metric=metric, level=level)
    return out


#: the column that tells the configurations apart in `per_configuration` (a text key, so that
#: list-valued dimensions such as stages and missing values join like any other value)
CONFIG_KEY = "_configuration"

#: the statistics columns `analysis.replicates` gives for its metric
STATS = ("mean", "sd", "n", "ci_low", "ci_high", "half_width")

#: the header phrases of each selection protocol
SELECTED_ON_TEST = "selected on test (the paper's protocol)"
SELECTED_ON_HOLDOUT = "selected on validation holdout; test reported once per trial"


def selection_splits(df: pd.DataFrame) -> set[str]:
    """The splits that selected the rows' checkpoints ('holdout', 'test'); empty when the frame
    does not record them (no `validation` column, or none filled in)."""
    if "validation" not in df.columns:
        return set()
    return {str(v) for v in df["validation"] if not _missing(v)}


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


def pm_cell(mean: float, half_width: float, n: int, scale: float = 100.0, digits: int = 2) -> str:
    """'mean ± half-width (n)' in the units of `scale` (percent); '-' for no value, and
    'mean (1)' when one replicate leaves no interval to give."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    text = f"{mean * scale:.{digits}f}"
    if half_width is not None and not (isinstance(half_width, float) and math.isnan(half_width)):
        text += f" ± {half_width * scale:.{digits}f}"
    return f"{text} ({int(n)})"


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
    if "status" in df.columns:  # pruned, failed or running trials have no comparable result
        df = df[df["status"] == "completed"]
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


# --------------------------------------------------------------------------- Table 1


def paper_table(
    df: pd.DataFrame,
    by: str = "family",
    metric: str = "test_error",
    dims: Sequence[str] | None = None,
    level: float = 0.95,
) -> pd.DataFrame:
    """A Table-1-style table: per `by` group (family or form) model, GFLOPs, params, error.

    Groups sit side by side as in the paper's Table 1 (ERKNets left, IRKNets right); each
    group's models are sorted by FLOPs and the groups' rows are aligned by rank, shorter groups
    padded with empty cells.  A model name that several rows share gets the search dimensions
    telling them apart (`model_labels`).  Columns are a MultiIndex (group, field) over
    `TABLE_FIELDS`: the error (`metric`, an error column, in percent from the frame's
    fractions) is the mean over seeds, '± (%)' the half-width of its `level` confidence interval
    (`mean_ci`; NaN for one seed) and 'n' the number of seeds (`replicates`).

    `attrs` records metric, level and selection (`selection_text`: on which split the
    checkpoints were chosen), which `table_markdown` and `table_latex` print as a caption.
    A frame without values of `metric` (an older database has no test error) raises
    ValueError suggesting metric="best_val_error".
    """
    if "error" not in metric:
        raise ValueError(f"a Table-1-style table lists errors: {metric!r} is not an error column")
    rows = replicates(df, metric, dims, level)
    if by not in rows.columns:
        raise KeyError(f"cannot group the table by {by!r}: the study has no such column")
    dims = [d for d in dimension_columns(df, dims) if d not in ("seed", by)]
    blocks = []
    for group in ordered_groups(rows[by]):
        part = rows[rows[by] == group].sort_values(["flops", "params"], kind="mergesort")
        labels = model_labels(part, dims)
        if labels.duplicated().any():
            log.warning(
                "table group %s has several configurations with the same model name and search "
                "dimensions (they differ in fixed knobs); tell those rows apart by hand", group
            )
        block = pd.DataFrame(
            {
                "model": labels.to_numpy(dtype=object),
                "GFLOPs": part["flops"].to_numpy(dtype=float) / 1e9,
                "params (M)": part["params"].to_numpy(dtype=float) / 1e6,
                "error (%)": 100.0 * part["mean"].to_numpy(dtype=float),
                "± (%)": 100.0 * part["half_width"].to_numpy(dtype=float),
                "n": part["n"].to_numpy(dtype=int),
            }
        )
        block.columns = pd.MultiIndex.from_product([[str(group)], TABLE_FIELDS])
        blocks.append(block)
    if blocks:
        table = pd.concat(blocks, axis=1)
    else:
        table = pd.DataFrame(columns=pd.MultiIndex.from_product([[], TABLE_FIELDS]))
    table.attrs.update(metric=metric, level=level, selection=selection_text(rows, metric))
    return table


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


def model_labels(rows: pd.DataFrame, dims: Sequence[str]) -> pd.Series:
    """Each row's model name, with the search dimensions that tell apart rows sharing it.

    A model name does not carry every dimension (the growth rate, for one), so a study that
    varies k lists 'ERKNet-2x1 2x1 2x1' once per k; those rows read
    'ERKNet-2x1 2x1 2x1 (growth=4)' and '... (growth=8)'.  Unique names stay as they are.
    """
    labels = rows["model_name"].astype(object).copy()
    for _, same in rows.groupby("model_name", sort=False):
        if len(same) < 2:
            continue
        varying = [d for d in dims if d in same.columns and len({level_text(v) for v in same[d]}) > 1]
        if not varying:
            continue
        for index, row in same.iterrows():
            labels[index] = f"{row['model_name']} ({', '.join(f'{d}={level_text(row[d])}' for d in varying)})"
    return labels


def amount_text(value: float, digits: int) -> str:
    """`digits` decimals, more where needed for two significant digits (0.0014 GFLOPs, not 0.00);
    a missing value reads '-'."""
    if _missing(value):
        return "-"

    def decimals(x: float) -> int:
        return digits if not math.isfinite(x) or x == 0 else max(digits, 1 - math.floor(math.log10(abs(x))))

    # once more on the rounded value: 0.0996 rounds to 0.100, which needs one decimal less
    return f"{value:.{decimals(round(value, decimals(value)))}f}"


def _table_cells(
    table: pd.DataFrame, digits: int, cell: Callable[[str, str | None, int], str]
) -> tuple[list[str], list[list[str]]]:
    """Formatted cells per row; the error cell is `cell(mean, half_width or None, n)`."""
    groups = list(dict.fromkeys(table.columns.get_level_values(0)))
    rows: list[list[str]] = []
    for _, row in table.iterrows():
        cells: list[str] = []
        for group in groups:
            model = row[(group, "model")]
            if _missing(model):
                cells += [""] * 4
                continue
            half = row[(group, "± (%)")]
            err = cell(
                f"{row[(group, 'error (%)')]:.{digits}f}",
                None if _missing(half) else f"{half:.{digits}f}",
                int(row[(group, "n")]),
            )
            cells += [
                str(model),
                amount_text(row[(group, "GFLOPs")], digits),
                amount_text(row[(group, "params (M)")], digits),
                err,
            ]
        rows.append(cells)
    return groups, rows


def table_caption(table: pd.DataFrame) -> str:
    """What a table's error cells mean and how its models were selected (from `paper_table`'s attrs)."""
    level = f"{100 * table.attrs.get('level', 0.95):g}%"
    metric = table.attrs.get("metric", "test_error")
    selection = table.attrs.get("selection", "selection split not recorded")
    return f"Error (%): {metric}, mean ± half-width of its {level} CI over seeds (n seeds); {selection}."


def table_markdown(table: pd.DataFrame, digits: int = 2) -> str:
    """The table as GitHub Markdown, cells 'mean ± half-width (n)', then the caption line.

    Each group's model column is headed by the group name; a model with one seed reads
    'mean (1)'.  The caption (`table_caption`) says what the error is and on which split the
    models were selected ('selected on test (the paper's protocol)' when they were).
    """
    groups, rows = _table_cells(table, digits, lambda m, h, n: f"{m} ({n})" if h is None else f"{m} ± {h} ({n})")
    head = [h for g in groups for h in (g, "GFLOPs", "params (M)", "error (%)")]
    align = ["---", "---:", "---:", "---:"] * len(groups)
    lines = [_md_row(head), _md_rule(align)] + [_md_row(r) for r in rows]
    return "\n".join(lines) + f"\n\n{table_caption(table)}\n"


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _md_rule(align: Sequence[str]) -> str:
    return "|" + "|".join(align) + "|"


def table_latex(table: pd.DataFrame, digits: int = 2) -> str:
    """The table as a booktabs LaTeX tabular, one multicolumn header per group.

    Cells read '$mean \\pm half-width$ (n)' ('mean (1)' for one seed); the first line is the
    caption (`table_caption`, with how the models were selected) as a LaTeX comment.
    """
    groups, rows = _table_cells(
        table, digits, lambda m, h, n: f"{m} ({n})" if h is None else f"${m} \\pm {h}$ ({n})"
    )
    error_head = "Error (\\%)"
    out = [f"% {table_caption(table)}", f"\\begin{{tabular}}{{{'lrrr' * len(groups)}}}", "\\toprule"]
    out.append(
        " & ".join(f"\\multicolumn{{4}}{{c}}{{{_latex_escape(g)}}}" for g in groups) + " \\\\"
    )
    out.append(" ".join(f"\\cmidrule(lr){{{4 * i + 1}-{4 * i + 4}}}" for i in range(len(groups))))
    out.append(" & ".join(["Model", "GFLOPs", "Params (M)", error_head] * len(groups)) + " \\\\")
    out.append("\\midrule")
    for r in rows:
        cells = [_latex_escape(c) if i % 4 == 0 else c for i, c in enumerate(r)]
        out.append(" & ".join(cells) + " \\\\")
    out += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(out) + "\n"


_LATEX_SPECIAL = {c: "\\" + c for c in "&%$#_{}"} | {
    "~": "\\textasciitilde{}",
    "^": "\\textasciicircum{}",
    "\\": "\\textbackslash{}",
}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(c, c) for c in text)


def table_csv(table: pd.DataFrame) -> str:
    """The table as CSV with one header row ('<group> <field>'), numbers unrounded, and a last
    column `selection` (how the models were selected, from `paper_table`) so that a CSV of a
    study selected on test says so as the Markdown and LaTeX captions do."""
    flat = table.copy()
    flat.columns = [f"{group} {field}" for group, field in table.columns]
    flat["selection"] = table.attrs.get("selection", "selection split not recorded")
    buffer = io.StringIO()
    flat.to_csv(buffer, index=False)
    return buffer.getvalue()


# --------------------------------------------------------------------------- statistics


def _seeded(function: Callable[..., Any]) -> dict[str, Any]:
    """The seeded-generator keyword of a scipy resampling function (`rng` from scipy 1.15 on)."""
    name = "rng" if "rng" in inspect.signature(function).parameters else "random_state"
    return {name: np.random.default_rng(RESAMPLING_SEED)}


def _finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    data = np.asarray(values, dtype=float).ravel()
    return data[~np.isnan(data)]


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be a fraction in (0, 1), e.g. 0.95, not {level!r}")


def _t_interval(data: np.ndarray, level: float) -> tuple[float, float]:
    """Student-t interval of the mean of `data` (n >= 2): mean -/+ t(1 - alpha/2, n-1) * s / sqrt(n)."""
    n = data.size
    mean = float(data.mean())
    half = float(scipy.stats.t.ppf(0.5 + level / 2.0, n - 1)) * float(data.std(ddof=1)) / math.sqrt(n)
    return mean - half, mean + half


def mean_ci(values: Sequence[float] | np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Mean of `values` and a `level` confidence interval for it: (mean, low, high).

    NaNs are dropped.  No value gives (nan, nan, nan); one value gives (x, nan, nan): one seed
    says nothing about seed-to-seed spread, so no interval is invented (never a zero width).

    From 2 to BOOTSTRAP_MIN_N - 1 values (the usual 3-5 seeds): the Student-t interval,
    mean +/- t(1 - alpha/2, n - 1) * s / sqrt(n), which is exact for normal replicates and
    keeps its width honest at tiny n (mean_ci([0.93, 0.94, 0.95]) = (0.94, 0.9152, 0.9648):
    t(0.975, 2) = 4.303, s / sqrt(3) = 0.00577).

    From BOOTSTRAP_MIN_N = 30 values on: a BCa bootstrap (`scipy.stats.bootstrap`,
    method='BCa', 9999 resamples, seeded with RESAMPLING_SEED so a report reproduces), which
    no longer assumes normality.  The line sits at 30 because below it the bootstrap's
    resampling distribution is too coarse and too narrow to mean anything: with n = 3 there
    are only 10 distinct resample means, the percentile interval is about the sample's
    min..max and covers the mean far less often than it claims; the t interval is both
    better calibrated and reproducible there.  Constant data has a zero-width interval at any
    n >= 2 (the BCa acceleration is undefined for it, so it is not asked).
    """
    _check_level(level)
    data = _finite(values)
    if data.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(data.mean())
    if data.size < 2:
        return mean, math.nan, math.nan
    if data.size < BOOTSTRAP_MIN_N or np.all(data == data[0]):
        low, high = _t_interval(data, level)
        return mean, low, high
    result = scipy.stats.bootstrap(
        (data,), np.mean, confidence_level=level, method="BCa", vectorized=True, axis=-1,
        **_seeded(scipy.stats.bootstrap),
    )  # fmt: skip
    return mean, float(result.confidence_interval.low), float(result.confidence_interval.high)


def bootstrap_ci(values: Sequence[float] | np.ndarray, confidence: float = 0.95, n_boot: int = 10_000,
                 seed: int = 0) -> tuple[float, float, float]:
    """Deprecated: use `mean_ci`, which this now returns (`n_boot` and `seed` are ignored).

    Its percentile bootstrap over three seeds returned their min and max, not a confidence
    interval; kept so that old analysis scripts run, and say why their intervals widened.
    """
    warnings.warn("rksearch.analysis.bootstrap_ci is deprecated: it is mean_ci now (a Student-t interval "
                  "below 30 values, BCa from 30 on)", DeprecationWarning, stacklevel=2)
    return mean_ci(values, confidence)


Verdict = Literal["higher", "lower", "inconclusive"]


@dataclass(frozen=True)
class Paired:
    """`paired`'s comparison of a against b over matched replicates (seeds).

    n            pairs with both values present
    diff         mean of a - b
    low, high    paired Student-t interval of diff (NaN for n < 2)
    p_value      two-sided sign-flip permutation p-value of diff (NaN for n = 0): exact, and
                 free of the normality the t interval assumes; at n seeds it is never below
                 2 / 2**n (0.25 at n = 3), so few seeds cannot make it small
    p_t          two-sided paired t-test p-value, the test of the interval (NaN for n < 2 or
                 differences that do not vary)
    effect_size  Cohen's d_z = mean(a - b) / sd(a - b) (NaN for n < 2 or sd = 0)
    verdict      'higher' (a > b: the interval lies above 0), 'lower' (below 0), else
                 'inconclusive' (the interval crosses 0, n < 2, or every difference is the
                 same: a zero-width interval is no evidence of a spread-free effect)
    """

    n: int
    diff: float
    low: float
    high: float
    p_value: float
    effect_size: float
    verdict: Verdict
    p_t: float = math.nan


def paired(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, level: float = 0.95
) -> Paired:
    """Compare `a` with `b` pair by pair (a[i] and b[i] share seed i): the differences a - b.

    Pairs where either value is NaN are dropped.  The interval is the paired Student-t one
    (`mean_ci`'s t interval on the differences, at any n); the p-value is the two-sided
    sign-flip permutation test of the mean difference: under 'no difference' each difference
    is as likely positive as negative, so p is the share of sign vectors whose |mean| is at
    least the observed one.  For n <= EXACT_SIGN_FLIP_MAX_N (16) all 2**n sign vectors are
    enumerated (exact: four differences of one sign give p = 2/16 = 0.125, the smallest p four
    seeds can give); above that, `scipy.stats.permutation_test` (permutation_type='samples',
    9999 random sign flips, seeded with RESAMPLING_SEED) estimates it.

    The effect size is Cohen's d_z (mean over s.d. of the differences).  Where the differences
    are all equal (s.d. 0 up to rounding) d_z would be +/-inf, which no table can use: it is
    NaN, and the zero-width interval carries the information instead.
    """
    _check_level(level)
    x = np.asarray(a, dtype=float).ravel()
    y = np.asarray(b, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"paired samples must have the same length, not {x.size} and {y.size}")
    d = (x - y)[~(np.isnan(x) | np.isnan(y))]
    return _paired_differences(d, level)


def _paired_differences(d: np.ndarray, level: float) -> Paired:
    n = int(d.size)
    if n == 0:
        return Paired(0, math.nan, math.nan, math.nan, math.nan, math.nan, "inconclusive")
    diff = float(d.mean())
    p_value = _sign_flip_p(d)
    if n < 2:
        return Paired(n, diff, math.nan, math.nan, p_value, math.nan, "inconclusive")
    low, high = _t_interval(d, level)
    sd = float(d.std(ddof=1))
    degenerate = sd <= 1e-9 * float(np.abs(d).max()) or sd == 0.0  # all equal, up to rounding
    effect = math.nan if degenerate else diff / sd
    p_t = math.nan if degenerate else float(2.0 * scipy.stats.t.sf(abs(diff) / (sd / math.sqrt(n)), n - 1))
    verdict: Verdict = "inconclusive" if degenerate else "higher" if low > 0 else "lower" if high < 0 else "inconclusive"
    return Paired(n, diff, low, high, p_value, effect, verdict, p_t)


def _sign_flip_p(d: np.ndarray) -> float:
    """Two-sided sign-flip permutation p-value of mean(d) (exact up to EXACT_SIGN_FLIP_MAX_N)."""
    observed = abs(float(d.mean()))
    tolerance = 1e-12 * max(1.0, float(np.abs(d).max()))  # sign vectors tying the observed mean count
    if d.size <= EXACT_SIGN_FLIP_MAX_N:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=d.size)))
        means = np.abs(signs @ d) / d.size
        return float(np.mean(means >= observed - tolerance))
    result = scipy.stats.permutation_test(
        (d,), np.mean, permutation_type="samples", alternative="two-sided", vectorized=True, axis=-1,
        n_resamples=9999, **_seeded(scipy.stats.permutation_test),
    )  # fmt: skip
    return float(result.pvalue)


def holm(p_values: Sequence[float] | np.ndarray) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given (NaN passes through, uncounted).

    With m non-NaN p-values sorted ascending, the i-th smallest becomes
    max over j <= i of min(1, (m - j + 1) * p_(j)): monotone in p and capped at 1.  An adjusted
    p below alpha controls the family-wise error rate at alpha across the family.
    """
    p = np.asarray(p_values, dtype=float).ravel()
    out = np.full(p.shape, math.nan)
    present = np.flatnonzero(~np.isnan(p))
    m = present.size
    running = 0.0
    for rank, index in enumerate(present[np.argsort(p[present], kind="mergesort")]):
        running = max(running, min(1.0, (m - rank) * float(p[index])))
        out[index] = running
    return [float(v) for v in out]


def ablation(
    df: pd.DataFrame,
    factors: Sequence[str] | None = None,
    base: Mapping[str, Any] | None = None,
    metric: str = "test_acc",
    design: Design = "auto",
    confidence: float = 0.95,
    dims: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Per factor and level: mean of `metric` over seeds with its CI, and the paired
    difference against the factor's base level (matched by seed) with its t interval,
    sign-flip p-value (Holm-corrected), effect size and verdict.

    metric   the trial column compared (default test_acc, the reporting number: validation
             selected the checkpoint, test reports it)
    factors  search dimensions to analyse (default: every dimension with >= 2 levels)
    base     the base configuration, factor -> level (default per factor: its most common
             level, which in a one-factor-at-a-time study is exactly the base; ties, as in a
             full grid, go to the first level in sorted order -- pass `base` to choose)
    design   'ofat': each factor is read off the trials whose other factors sit at base;
             'grid': marginal main effects -- a level's value for a seed is its mean over the
             other factors' cells, and the paired difference is averaged over the cells present
             at both levels for that seed; 'auto': 'ofat' when no trial differs from the base
             in more than one factor, else 'grid'.
    dims     the frame's search dimensions (default `df.attrs["dims"]`, see
             `dimension_columns`)

    Returns one row per (factor, level) with columns factor, level, base_level, is_base,
    design, seeds, mean, ci_low, ci_high (`mean_ci`), pairs, diff, diff_low, diff_high,
    excludes_zero (the unadjusted interval), p_value (the exact sign-flip one of `paired`),
    p_holm (its Holm adjustment across every non-base row of this call, i.e. across the
    compared factors' levels), p_t and p_t_holm (the paired t-test of the interval, and its
    Holm adjustment), effect_size (d_z), verdict ('higher' or 'lower' only where the interval
    excludes zero and p_t_holm < 1 - confidence; else 'inconclusive', also where fewer than 2
    seeds pair up or the differences do not vary; 'base' on the base rows) and note (`attrs["confidence"]` keeps `confidence`).  A level with fewer
    than 2 seeds (or 2 paired seeds) gets NaN bounds, excludes_zero NA and a note saying why,
    and a warning is logged.
    """
    dimensions = dimension_columns(df, dims)
    require_metric(df, metric)
    done = completed(df).dropna(subset=[metric])
    varying = [c for c in dimensions if c != "seed" and len(_codes(done[c])[1]) > 1]
    factors = varying if factors is None else list(factors)
    if not factors:
        raise ValueError("no factor to analyse: the study varies no search dimension")
    # The design is read off every varying dimension, analysed or not: an OFAT factor's
    # levels are compared with all the other dimensions at base.
    analysed = list(dict.fromkeys([*factors, *varying]))
    codes: dict[str, np.ndarray] = {}
    levels: dict[str, list[Any]] = {}
    base_code: dict[str, int] = {}
    for dim in analysed:
        if dim not in done.columns:
            raise KeyError(f"factor {dim!r} is not a column of the study")
        codes[dim], levels[dim] = _codes(done[dim])
        base_code[dim] = _base_code(dim, codes[dim], levels[dim], base)
    off_base = sum((codes[d] != base_code[d]).astype(int) for d in analysed)
    if design == "auto":
        design = "ofat" if int(np.max(off_base)) <= 1 else "grid"
    frame = pd.DataFrame({d: codes[d] for d in analysed}, index=done.index)
    frame["seed"] = done["seed"].to_numpy() if "seed" in done.columns else 0
    frame["value"] = done[metric].to_numpy(dtype=float)

    rows = []
    for factor in factors:
        others = [d for d in analysed if d != factor]
        sub = frame
        if design == "ofat" and others:
            sub = frame[np.all([frame[o] == base_code[o] for o in others], axis=0)]
        cells = sub.groupby([factor, "seed", *others], dropna=False)["value"].mean()
        base_cells = _level_cells(cells, base_code[factor])
        for code, level in enumerate(levels[factor]):
            is_base = code == base_code[factor]
            level_cells = _level_cells(cells, code)
            per_seed = level_cells.groupby(level="seed", dropna=False).mean()
            mean, low, high = mean_ci(per_seed.to_numpy(), confidence)
            common = level_cells.index.intersection(base_cells.index)
            diffs = (level_cells[common] - base_cells[common]).groupby(level="seed", dropna=False).mean()
            compared = _paired_differences(diffs.to_numpy(dtype=float), confidence)
            notes = []
            if len(per_seed) < 2:
                notes.append(f"fewer than 2 seeds (n={len(per_seed)}): no CI")
            if not is_base and compared.n < 2:
                notes.append(f"fewer than 2 paired seeds (n={compared.n}): no CI for the difference")
            if notes:
                log.warning("ablation %s=%r: %s", factor, level, "; ".join(notes))
            excludes = pd.NA if math.isnan(compared.low) else bool(compared.low > 0 or compared.high < 0)
            rows.append(
                {
                    "factor": factor,
                    "level": level,
                    "base_level": levels[factor][base_code[factor]],
                    "is_base": is_base,
                    "design": design,
                    "seeds": len(per_seed),
                    "mean": mean,
                    "ci_low": low,
                    "ci_high": high,
                    "pairs": compared.n,
                    "diff": compared.diff,
                    "diff_low": compared.low,
                    "diff_high": compared.high,
                    "excludes_zero": excludes,
                    "p_value": math.nan if is_base else compared.p_value,
                    "p_t": math.nan if is_base else compared.p_t,
                    "effect_size": math.nan if is_base else compared.effect_size,
                    "verdict": "base" if is_base else compared.verdict,
                    "note": "; ".join(notes),
                }
            )
    out = pd.DataFrame(rows)
    out["excludes_zero"] = out["excludes_zero"].astype("boolean")
    out.insert(out.columns.get_loc("p_value") + 1, "p_holm", holm(out["p_value"].to_numpy(dtype=float)))
    out.insert(out.columns.get_loc("p_t") + 1, "p_t_holm", holm(out["p_t"].to_numpy(dtype=float)))
    # a verdict must survive the multiplicity of the comparisons: Holm on the interval's own test
    alpha = 1.0 - confidence
    downgraded = out["verdict"].isin(["higher", "lower"]).to_numpy() & ~(out["p_t_holm"].to_numpy() < alpha)
    out.loc[downgraded, "verdict"] = "inconclusive"
    compared_rows = int((~out["is_base"]).sum())
    out.loc[downgraded, "note"] = [
        "; ".join(filter(None, [note, f"the interval excludes 0 but not after Holm across {compared_rows} comparisons"]))
        for note in out.loc[downgraded, "note"]
    ]
    out.attrs["confidence"] = confidence  # for the labels of tables and charts
    out.attrs["metric"] = metric
    return out


def _level_cells(cells: pd.Series, code: int) -> pd.Series:
    """The cells of one level, indexed by (seed, other factors) so levels can be paired."""
    if code not in cells.index.get_level_values(0):
        return cells.iloc[:0].droplevel(0)
    return cells.xs(code, level=0, drop_level=True)


def _base_code(
    factor: str, codes: np.ndarray, levels: list[Any], base: Mapping[str, Any] | None
) -> int:
    if base is not None and factor in base:
        wanted = base[factor]
        for code, level in enumerate(levels):
            if _same(level, wanted):
                return code
        raise ValueError(f"base level {wanted!r} of {factor!r} is not among its levels {levels}")
    counts = np.bincount(codes, minlength=len(levels))
    return int(np.argmax(counts))  # first of the most common levels, in sorted order


def ablation_markdown(stats: pd.DataFrame, percent: bool = True, digits: int = 2) -> str:
    """The ablation statistics as a Markdown table; missing CIs spelled out, not left blank.

    Per level: seeds, mean with its CI, and against the base the paired difference with its
    t interval, 't p (Holm)' (the interval's paired t-test, Holm-adjusted in parentheses: what
    the verdict rests on), 'sign-flip p (Holm)' (the exact, distribution-free test), d_z and the
    verdict -- 'higher', 'lower' or 'inconclusive' (the interval crosses zero, not after Holm,
    differences that do not vary, or fewer than 2 paired seeds), spelled out.  With `percent`, accuracy-like fractions are shown as percent
    (differences in points).
    """
    scale = 100.0 if percent else 1.0
    unit = " (%)" if percent else ""
    diff_unit = " (pp)" if percent else ""
    ci_head = f"{confidence_label(stats)} CI"
    head = ["factor", "level", "seeds", f"mean{unit}", ci_head, f"diff vs base{diff_unit}", ci_head,
            "t p (Holm)", "sign-flip p (Holm)", "d_z", "verdict"]  # fmt: skip
    align = ["---", "---", "---:", "---:", "---", "---:", "---", "---:", "---:", "---:", "---"]
    lines = [_md_row(head), _md_rule(align)]
    flagged = False
    for _, r in stats.iterrows():
        level = f"{level_text(r['level'])} (base)" if r["is_base"] else level_text(r["level"])
        ci = _fmt_ci(r["ci_low"], r["ci_high"], scale, digits)
        if r["is_base"]:
            diff, diff_ci, p_t, p, d_z, verdict = "0", "—", "—", "—", "—", "base"
        else:
            diff = "—" if math.isnan(r["diff"]) else f"{r['diff'] * scale:+.{digits}f}"
            diff_ci = _fmt_ci(r["diff_low"], r["diff_high"], scale, digits)
            p_t = "—" if math.isnan(r["p_t"]) else f"{r['p_t']:.3g} ({r['p_t_holm']:.3g})"
            p = "—" if math.isnan(r["p_value"]) else f"{r['p_value']:.3g} ({r['p_holm']:.3g})"
            d_z = "—" if math.isnan(r["effect_size"]) else f"{r['effect_size']:+.2f}"
            verdict = str(r["verdict"])
        seeds = str(r["seeds"])
        if r["note"]:
            seeds += " ⚠"
            flagged = True
        cells = [str(r["factor"]), level, seeds, f"{r['mean'] * scale:.{digits}f}", ci, diff, diff_ci, p_t, p, d_z,
                 verdict]
        lines.append(_md_row(cells))
    text = "\n".join(lines) + "\n"
    text += (
        f"\n{stats.attrs.get('metric', 'metric')} over seeds; difference = level - base, paired by seed "
        "(t interval); t p: its paired t-test, sign-flip p: the exact permutation test (never below "
        "2 / 2^n with n seeds), each Holm-adjusted across the compared levels in parentheses; d_z: mean / "
        "s.d. of the paired differences (— where they do not vary); a verdict needs the interval to "
        "exclude zero and the Holm-adjusted t p below 1 - the confidence level, else: inconclusive.\n"
    )
    if flagged:
        text += "\n⚠ fewer than 2 seeds (or paired seeds): no confidence interval can be given.\n"
    return text


def _fmt_ci(low: float, high: float, scale: float, digits: int) -> str:
    if math.isnan(low):
        return "n<2: none"
    return f"[{low * scale:.{digits}f}, {high * scale:.{digits}f}]"


def confidence_label(stats: pd.DataFrame) -> str:
    """The confidence level `ablation` recorded in the stats' attrs, as text ('95%')."""
    return f"{100 * stats.attrs.get('confidence', 0.95):g}%"


def level_text(level: Any) -> str:
    """A dimension level as text for tables, legends and ticks (stages as '(2, 2, 2)').

    A missing level (a dimension a model does not have, e.g. the stages of a DenseNet) reads
    'none', whether the frame holds it as None or NaN.
    """
    if isinstance(level, (list, tuple)):
        return "(" + ", ".join(map(str, level)) + ")"
    if _missing(level):
        return "none"
    return str(level)


# --------------------------------------------------------------------------- helpers


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def _same(a: Any, b: Any) -> bool:
    if _missing(a) or _missing(b):
        return _missing(a) and _missing(b)
    if isinstance(b, list):
        b = tuple(b)
    return bool(a == b)


def _codes(series: pd.Series) -> tuple[np.ndarray, list[Any]]:
    """Integer codes for a column's values and the sorted distinct values (missing last).

    Codes make tuple-valued dimensions (stages) and missing values safe to group and pair on:
    pandas would read a tuple key as several index levels, and NaN as no key at all.
    """
    values = [tuple(v) if isinstance(v, list) else v for v in series.tolist()]
    present = list(dict.fromkeys(v for v in values if not _missing(v)))
    try:
        present.sort()
    except TypeError:
        present.sort(key=str)
    levels = present + ([None] if any(_missing(v) for v in values) else [])
    index = {v: i for i, v in enumerate(present)}
    missing_code = len(present)
    codes = np.array([missing_code if _missing(v) else index[v] for v in values], dtype=int)
    return codes, levels


__all__ = [
    "FAMILIES",
    "family",
    "families",
    "TABLE_FIELDS",
    "completed",
    "dimension_columns",
    "ordered_groups",
    "level_text",
    "BOOTSTRAP_MIN_N",
    "require_metric",
    "replicates",
    "paper_table",
    "selection_text",
    "selection",
    "selection_splits",
    "selection_note",
    "pm_cell",
    "per_configuration",
    "SELECTED_ON_TEST",
    "SELECTED_ON_HOLDOUT",
    "table_caption",
    "table_markdown",
    "table_latex",
    "table_csv",
    "mean_ci",
    "Paired",
    "paired",
    "holm",
    "ablation",
    "ablation_markdown",
]
