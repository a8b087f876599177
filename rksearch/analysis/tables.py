"""Paper-style tables of a study: Table 1's side-by-side groups as Markdown, LaTeX or CSV.

`paper_table` lays the `replicates` of a study out as the paper's Table 1 (one block of model,
GFLOPs, params and error per family, ERKNets left, IRKNets right); the writers turn it into
text whose every error cell reads "mean ± half-width (n)" and whose caption says on which split
the models were selected, so a table selected on test cannot pass for a holdout-selected one.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Callable, Sequence

import pandas as pd

from rksearch.analysis.frames import dimension_columns, level_text, ordered_groups, replicates, selection_text
from rksearch.analysis.values import missing

log = logging.getLogger(__name__)

#: the fields of each group of a Table-1-style table, in column order.
#: 'error (%)' is the mean over seeds, '± (%)' the half-width of its confidence interval (NaN
#: for one seed), 'n' the number of seeds.
TABLE_FIELDS: tuple[str, ...] = ("model", "GFLOPs", "params (M)", "error (%)", "± (%)", "n")


def pm_cell(mean: float, half_width: float, n: int, scale: float = 100.0, digits: int = 2) -> str:
    """'mean ± half-width (n)' in the units of `scale` (percent); '-' for no value, and
    'mean (1)' when one replicate leaves no interval to give."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    text = f"{mean * scale:.{digits}f}"
    if half_width is not None and not (isinstance(half_width, float) and math.isnan(half_width)):
        text += f" ± {half_width * scale:.{digits}f}"
    return f"{text} ({int(n)})"



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
    if missing(value):
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
            if missing(model):
                cells += [""] * 4
                continue
            half = row[(group, "± (%)")]
            err = cell(
                f"{row[(group, 'error (%)')]:.{digits}f}",
                None if missing(half) else f"{half:.{digits}f}",
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
    lines = [markdown_row(head), markdown_rule(align)] + [markdown_row(r) for r in rows]
    return "\n".join(lines) + f"\n\n{table_caption(table)}\n"


def markdown_row(cells: Sequence[str]) -> str:
    """One row of a GitHub Markdown table."""
    return "| " + " | ".join(cells) + " |"


def markdown_rule(align: Sequence[str]) -> str:
    """The rule under a Markdown header: one of '---' (left) or '---:' (right) per column."""
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


__all__ = [
    "TABLE_FIELDS",
    "amount_text",
    "markdown_row",
    "markdown_rule",
    "model_labels",
    "paper_table",
    "pm_cell",
    "table_caption",
    "table_csv",
    "table_latex",
    "table_markdown",
]
