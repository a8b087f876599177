"""Paper-style tables and honest ablation statistics from a study's trial DataFrame.

Everything here works on the frame `rksearch.results.load` returns (one row per trial, errors
as fractions, the search-dimension columns listed in `df.attrs["dims"]`), so it runs the same
on a SQLite file, PostgreSQL, or a frame built by hand (which passes `dims=` instead).
Replicate seeds are first-class: tables and figures average over them and say how many there
were, and the ablation statistics give bootstrap confidence intervals over seeds -- and refuse
to invent one from a single seed.
"""

from __future__ import annotations

import io
import logging
import math
import re
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

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
TABLE_FIELDS: tuple[str, ...] = ("model", "GFLOPs", "params (M)", "error (%)", "error sd (%)", "seeds")

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


def replicates(df: pd.DataFrame, error: str = "val_error", dims: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per configuration of the completed trials, averaged over replicate seeds.

    A configuration is everything but the seed: model name, canonical architecture and every
    search dimension.  Columns: family, those keys, params, flops, error (mean of `error` over
    seeds, a fraction), error_sd (sample s.d., NaN for one seed) and seeds (how many).
    """
    keys = ["model_name"] + [k for k in ("canonical",) if k in df.columns]
    keys += [c for c in dimension_columns(df, dims) if c not in ("seed", *keys)]
    done = completed(df).dropna(subset=[error])
    codes = [pd.Series(_codes(done[k])[0], index=done.index) for k in keys]
    aggregations: dict[str, tuple[str, str]] = {k: (k, "first") for k in keys}
    aggregations |= {
        "params": ("params", "first"),
        "flops": ("flops", "first"),
        "error": (error, "mean"),
        "error_sd": (error, "std"),
        "seeds": (error, "size"),
    }
    if done.empty:
        out = pd.DataFrame(columns=list(aggregations))
    else:
        out = done.groupby(codes, sort=False).agg(**aggregations).reset_index(drop=True)
    out.insert(0, "family", families(out) if len(out) else pd.Series(dtype=object))
    return out


# --------------------------------------------------------------------------- Table 1


def paper_table(
    df: pd.DataFrame, by: str = "family", error: str = "val_error", dims: Sequence[str] | None = None
) -> pd.DataFrame:
    """A Table-1-style table: per `by` group (family or form) model, GFLOPs, params, error.

    Groups sit side by side as in the paper's Table 1 (ERKNets left, IRKNets right); each
    group's models are sorted by FLOPs and the groups' rows are aligned by rank, shorter groups
    padded with empty cells.  A model name that several rows share gets the search dimensions
    telling them apart (`model_labels`).  Columns are a MultiIndex (group, field) over `TABLE_FIELDS`;
    error (in percent, from the frame's fractions) is the mean over seeds with its s.d. and
    the number of seeds kept beside it.
    """
    rows = replicates(df, error, dims)
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
                "error (%)": 100.0 * part["error"].to_numpy(dtype=float),
                "error sd (%)": 100.0 * part["error_sd"].to_numpy(dtype=float),
                "seeds": part["seeds"].to_numpy(dtype=int),
            }
        )
        block.columns = pd.MultiIndex.from_product([[str(group)], TABLE_FIELDS])
        blocks.append(block)
    if not blocks:
        return pd.DataFrame(columns=pd.MultiIndex.from_product([[], TABLE_FIELDS]))
    return pd.concat(blocks, axis=1)


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
    table: pd.DataFrame, digits: int, pm: str
) -> tuple[list[str], list[list[str]], bool]:
    """Formatted cells per row; errors as `pm` (mean, s.d.) when any model has >= 2 seeds."""
    groups = list(dict.fromkeys(table.columns.get_level_values(0)))
    with_sd = bool(table.xs("error sd (%)", axis=1, level=1).notna().to_numpy().any()) if groups else False
    rows: list[list[str]] = []
    for _, row in table.iterrows():
        cells: list[str] = []
        for group in groups:
            model = row[(group, "model")]
            if _missing(model):
                cells += [""] * 4
                continue
            err = f"{row[(group, 'error (%)')]:.{digits}f}"
            sd = row[(group, "error sd (%)")]
            if with_sd:
                err = f"{err} (1 seed)" if _missing(sd) else pm.format(err=err, sd=f"{sd:.{digits}f}")
            cells += [
                str(model),
                amount_text(row[(group, "GFLOPs")], digits),
                amount_text(row[(group, "params (M)")], digits),
                err,
            ]
        rows.append(cells)
    return groups, rows, with_sd


def table_markdown(table: pd.DataFrame, digits: int = 2) -> str:
    """The table as GitHub Markdown: each group's model column is headed by the group name."""
    groups, rows, with_sd = _table_cells(table, digits, "{err} ± {sd}")
    error_head = "error (%, mean ± s.d.)" if with_sd else "error (%)"
    head = [h for g in groups for h in (g, "GFLOPs", "params (M)", error_head)]
    align = ["---", "---:", "---:", "---:"] * len(groups)
    lines = [_md_row(head), _md_rule(align)] + [_md_row(r) for r in rows]
    return "\n".join(lines) + "\n"


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _md_rule(align: Sequence[str]) -> str:
    return "|" + "|".join(align) + "|"


def table_latex(table: pd.DataFrame, digits: int = 2) -> str:
    """The table as a booktabs LaTeX tabular, one multicolumn header per group."""
    groups, rows, with_sd = _table_cells(table, digits, "${err} \\pm {sd}$")
    error_head = "Error (\\%, mean $\\pm$ s.d.)" if with_sd else "Error (\\%)"
    out = [f"\\begin{{tabular}}{{{'lrrr' * len(groups)}}}", "\\toprule"]
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
    """The table as CSV with one header row ('<group> <field>'), numbers unrounded."""
    flat = table.copy()
    flat.columns = [f"{group} {field}" for group, field in table.columns]
    buffer = io.StringIO()
    flat.to_csv(buffer, index=False)
    return buffer.getvalue()


# --------------------------------------------------------------------------- statistics


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
    n_boot: int = 10_000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap confidence interval of the mean of `values`.

    Seeded, so a report is reproducible.  With fewer than two values there is no sampling
    distribution to speak of: the interval is (NaN, NaN) and callers must say so.
    """
    data = np.asarray(values, dtype=float)
    data = data[~np.isnan(data)]
    if data.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(data.mean())
    if data.size < 2:
        return mean, math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(n_boot, data.size))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return mean, float(low), float(high)


def ablation(
    df: pd.DataFrame,
    factors: Sequence[str] | None = None,
    base: Mapping[str, Any] | None = None,
    metric: str = "val_acc",
    design: Design = "auto",
    confidence: float = 0.95,
    n_boot: int = 10_000,
    seed: int = 0,
    dims: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Per factor and level: mean of `metric` over seeds with a bootstrap CI, and the paired
    difference against the factor's base level (matched by seed) with its CI.

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
    design, seeds, mean, ci_low, ci_high, pairs, diff, diff_low, diff_high, excludes_zero,
    note (`attrs["confidence"]` keeps `confidence`).  A level with fewer than 2 seeds (or 2
    paired seeds) gets NaN bounds, excludes_zero NA and a note saying why, and a warning is
    logged.
    """
    dimensions = dimension_columns(df, dims)
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
            level_cells = _level_cells(cells, code)
            per_seed = level_cells.groupby(level="seed", dropna=False).mean()
            mean, low, high = bootstrap_ci(per_seed.to_numpy(), confidence, n_boot, seed)
            common = level_cells.index.intersection(base_cells.index)
            diffs = (level_cells[common] - base_cells[common]).groupby(level="seed", dropna=False).mean()
            diff, diff_low, diff_high = bootstrap_ci(diffs.to_numpy(), confidence, n_boot, seed)
            notes = []
            if len(per_seed) < 2:
                notes.append(f"fewer than 2 seeds (n={len(per_seed)}): no CI")
            if code != base_code[factor] and len(diffs) < 2:
                notes.append(f"fewer than 2 paired seeds (n={len(diffs)}): no CI for the difference")
            if notes:
                log.warning("ablation %s=%r: %s", factor, level, "; ".join(notes))
            excludes = pd.NA if math.isnan(diff_low) else bool(diff_low > 0 or diff_high < 0)
            rows.append(
                {
                    "factor": factor,
                    "level": level,
                    "base_level": levels[factor][base_code[factor]],
                    "is_base": code == base_code[factor],
                    "design": design,
                    "seeds": len(per_seed),
                    "mean": mean,
                    "ci_low": low,
                    "ci_high": high,
                    "pairs": len(diffs),
                    "diff": diff,
                    "diff_low": diff_low,
                    "diff_high": diff_high,
                    "excludes_zero": excludes,
                    "note": "; ".join(notes),
                }
            )
    out = pd.DataFrame(rows)
    out["excludes_zero"] = out["excludes_zero"].astype("boolean")
    out.attrs["confidence"] = confidence  # for the labels of tables and charts
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

    With `percent`, accuracy-like fractions are shown as percent (differences in points).
    """
    scale = 100.0 if percent else 1.0
    unit = " (%)" if percent else ""
    diff_unit = " (pp)" if percent else ""
    ci_head = f"{confidence_label(stats)} CI"
    head = ["factor", "level", "seeds", f"mean{unit}", ci_head, f"diff vs base{diff_unit}", ci_head, "excludes 0"]
    lines = [_md_row(head), _md_rule(["---", "---", "---:", "---:", "---", "---:", "---", "---"])]
    flagged = False
    for _, r in stats.iterrows():
        level = f"{level_text(r['level'])} (base)" if r["is_base"] else level_text(r["level"])
        ci = _fmt_ci(r["ci_low"], r["ci_high"], scale, digits)
        if r["is_base"]:
            diff, diff_ci, excl = "0", "—", "—"
        else:
            diff = "—" if math.isnan(r["diff"]) else f"{r['diff'] * scale:+.{digits}f}"
            diff_ci = _fmt_ci(r["diff_low"], r["diff_high"], scale, digits)
            excl = "n/a" if pd.isna(r["excludes_zero"]) else ("yes" if r["excludes_zero"] else "no")
        seeds = str(r["seeds"])
        if r["note"]:
            seeds += " ⚠"
            flagged = True
        lines.append(
            _md_row([str(r["factor"]), level, seeds, f"{r['mean'] * scale:.{digits}f}", ci, diff, diff_ci, excl])
        )
    text = "\n".join(lines) + "\n"
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
    "replicates",
    "paper_table",
    "table_markdown",
    "table_latex",
    "table_csv",
    "bootstrap_ci",
    "ablation",
    "ablation_markdown",
]
