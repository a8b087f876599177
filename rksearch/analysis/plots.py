"""Publication plots from study DataFrames: Figure-4-style panels, learning curves, Pareto
plots and ablation charts.

Every function takes DataFrames (the shapes `rksearch.results.load` / `load_epochs` /
`rksearch.analysis.ablation` return) and gives back a `matplotlib.figure.Figure` built without
pyplot, so nothing here touches a GUI backend, global state or Ray, and a caller (the
`python -m rksearch.plot` CLI, a notebook, a test) decides where it goes.  Errors are fractions
in the frames and percent on the axes.  Each drawn series carries a `gid` ("series:ERKNet",
"pareto", "dominated:IRKNet", "ci:ERKNet", "reference:DenseNet", "trial:7", "effect", "ci") so a
figure can be checked object by object rather than pixel by pixel.

Figure 4 and the Pareto plot report the test metric (`test_error` by default: the validation
split selects, the test set reports) as per-configuration means over seeds
(`analysis.replicates`), with a vertical error bar of the confidence interval where a
configuration has two seeds or more and none where it has one.  Their title says how the
models were selected: "selected on test" when any trial of the frame has `validation ==
"test"` (a paper study), else "selected on validation".
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator

from rksearch.analysis.ablations import confidence_label
from rksearch.analysis.frames import FAMILIES, families, ordered_groups, per_configuration, selection_note
from rksearch.analysis.frames import level_text as label
from rksearch.analysis.pareto import minimises, pareto

#: per-family colour and marker, fixed so a family looks the same in every figure
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#ff7f0e", "#17becf", "#7f7f7f", "#bcbd22")
_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "<", ">")

#: how a column of a trial frame (`results.load`) is shown on an axis: (label, factor from
#: the frame's unit).  test_* is the reporting metric, best_val_* / final_val_* the selection one.
AXES: dict[str, tuple[str, float]] = {
    "params": ("params (M)", 1e-6),
    "flops": ("FLOPs (G)", 1e-9),
    "macs": ("MACs (G)", 1e-9),
    "test_error": ("test error (%)", 100.0),
    "test_acc": ("test accuracy (%)", 100.0),
    "test_error_final": ("test error, final weights (%)", 100.0),
    "test_acc_final": ("test accuracy, final weights (%)", 100.0),
    "best_val_error": ("best validation error (%)", 100.0),
    "final_val_error": ("final validation error (%)", 100.0),
    "best_val_acc": ("best validation accuracy (%)", 100.0),
    "final_val_acc": ("final validation accuracy (%)", 100.0),
}

#: how a column of an epoch frame (`results.load_epochs`: that epoch's numbers) is shown
EPOCH_AXES: dict[str, tuple[str, float]] = {
    "val_error": ("validation error (%)", 100.0),
    "val_acc": ("validation accuracy (%)", 100.0),
    "train_acc": ("training accuracy (%)", 100.0),
    "val_loss": ("validation loss", 1.0),
    "train_loss": ("training loss", 1.0),
    "lr": ("learning rate", 1.0),
}

#: the metric Figure 4 and the Pareto plot show by default: the reporting one
DEFAULT_METRIC = "test_error"

#: columns a reference CSV must have (published numbers in the units the axes show)
REFERENCE_COLUMNS: tuple[str, ...] = ("family", "name", "params", "flops", "error")


def axis(column: str, *, per_epoch: bool = False) -> tuple[str, float]:
    """Label and unit factor for a column of a trial frame, or of an epoch frame with
    `per_epoch` (unknown columns: their name, unscaled)."""
    return (EPOCH_AXES if per_epoch else AXES).get(column, (column, 1.0))


def _titled(title: str | None, note: str | None) -> str | None:
    """The title with the selection note after it ('fig4 (selected on test)'), or either alone."""
    if title and note:
        return f"{title} ({note})"
    return title or note


def _error_bars(ax: Axes, part: pd.DataFrame, x: str, y: str, colour: str, name: str) -> None:
    """Vertical CI bars (columns low/high, plotted units) of the rows of `part` with n > 1.

    A configuration with one seed has no interval (NaN bounds) and gets no bar: an invented
    zero-width one would read as certainty.  The bars' LineCollection carries gid 'ci:NAME'.
    """
    shown = part[(part["n"] > 1) & part["low"].notna() & part["high"].notna()]
    if shown.empty:
        return
    ys = shown[y].to_numpy(dtype=float)
    spread = np.vstack([ys - shown["low"].to_numpy(dtype=float), shown["high"].to_numpy(dtype=float) - ys])
    bars = ax.errorbar(shown[x].to_numpy(dtype=float), ys, yerr=spread, fmt="none", ecolor=colour,
                       elinewidth=1.0, capsize=2.5, alpha=0.8, zorder=1.5)  # fmt: skip
    for collection in bars.lines[2]:
        collection.set_gid(f"ci:{name}")
    for cap in bars.lines[1]:
        cap.set_gid(f"ci-cap:{name}")


def _plotted(rows: pd.DataFrame, x: str, x_unit: float, y: str, y_unit: float) -> pd.DataFrame:
    """Per-configuration rows in plotted units: px, the mean as column `plotted_<y>` (named so
    `pareto` reads y's direction from it), and its CI as low/high.  An accuracy or error is a
    fraction: its t interval, which knows no bounds, is drawn clipped to [0, 1] (0-100%)."""
    low, high = rows["ci_low"].astype(float), rows["ci_high"].astype(float)
    if any(word in y.split("_") for word in ("acc", "error")):
        low, high = low.clip(0.0, 1.0), high.clip(0.0, 1.0)
    return rows.assign(
        px=rows[x].astype(float) * x_unit,
        **{f"plotted_{y}": rows["mean"].astype(float) * y_unit},
        low=low * y_unit,
        high=high * y_unit,
    )


def _ci_handle(level: float) -> tuple[Line2D, str]:
    """The legend entry explaining the error bars."""
    return Line2D([], [], color="0.35", marker="|", ms=10, ls="none"), f"{100 * level:g}% CI over seeds (n > 1)"


def style(group: Hashable, groups: Sequence[Hashable]) -> tuple[str, str]:
    """Colour and marker of a series: known families by their fixed slot, others by position."""
    slot = FAMILIES.index(group) if group in FAMILIES else len(FAMILIES) + list(groups).index(group)
    return _COLOURS[slot % len(_COLOURS)], _MARKERS[slot % len(_MARKERS)]


def _groups(df: pd.DataFrame, by: str | None) -> pd.Series:
    """The series each row belongs to: the model's family, or the value of column `by`."""
    if by is None or by == "family":
        return families(df)
    if by not in df.columns:
        raise KeyError(f"cannot colour by {by!r}: the study has no such column")
    return df[by].map(label).astype(object)


def _finish(ax: Axes, x_label: str, y_label: str, by: str | None, title: str | None) -> None:
    """Axis labels, grid, the legend titled by the grouping column, and the title if any."""
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.grid(True, alpha=0.3)
    ax.legend(title=by or "family", fontsize=8)
    if title:
        ax.set_title(title)


def _scale(ax: Axes, which: str, log: bool) -> None:
    """Log or linear axis; log ticks read as plain numbers (0.5, 2), not 5x10^-1."""
    target = ax.xaxis if which == "x" else ax.yaxis
    (ax.set_xscale if which == "x" else ax.set_yscale)("log" if log else "linear")
    if log:
        target.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        target.set_minor_formatter(FuncFormatter(lambda value, _: _minor_label(target.get_view_interval(), value)))


def _minor_label(view: Sequence[float], value: float) -> str:
    """Label a log axis' minor ticks only when it spans about a decade or less (else crowded)."""
    low, high = sorted(view)
    return f"{value:g}" if low > 0 and high / low < 15 else ""


# --------------------------------------------------------------------------- Figure 4


def read_reference(path: str | Path) -> pd.DataFrame:
    """Published results to draw beside a study: CSV with family, name, params, flops, error.

    Units are those of the figure, as papers print them: params in millions, FLOPs in G,
    error in percent.  A value that can only be a raw count or a fraction is refused rather
    than drawn off the chart.
    """
    ref = pd.read_csv(path)
    missing = [c for c in REFERENCE_COLUMNS if c not in ref.columns]
    if missing:
        raise ValueError(f"reference CSV {path} lacks column(s) {missing}; it needs {list(REFERENCE_COLUMNS)}")
    numbers = ref[["params", "flops", "error"]].apply(pd.to_numeric, errors="coerce")
    if numbers.isna().any().any():
        raise ValueError(f"reference CSV {path}: params, flops and error must all be numbers")
    if (numbers["params"] > 1e4).any() or (numbers["flops"] > 1e4).any():
        raise ValueError(f"reference CSV {path}: params are in millions and flops in G, not raw counts")
    if ((numbers["error"] < 0) | (numbers["error"] > 100)).any():
        raise ValueError(f"reference CSV {path}: error is in percent (0-100)")
    ref[["params", "flops", "error"]] = numbers
    return ref


def figure4(
    df: pd.DataFrame,
    *,
    by: str | None = None,
    error: str = DEFAULT_METRIC,
    log: bool | None = None,
    names: bool = True,
    reference: pd.DataFrame | None = None,
    dims: Sequence[str] | None = None,
    title: str | None = None,
    level: float = 0.95,
) -> Figure:
    """The paper's Figure 4 from a study: test error (%) vs params (M) left, vs FLOPs (G) right.

    One point per configuration: the mean of `error` (default `test_error`, the reporting
    metric) over its seeds (`analysis.replicates`), with a vertical error bar of its `level`
    confidence interval when it has two seeds or more (none for one seed).  One series per
    family (or per value of column `by`), points joined in order of the panel's x and labelled
    with their model name (`names`).  Points on their own series' Pareto front are filled and
    the others hollow, and the study's overall front is a dashed staircase.  `log` (default
    True) puts the cost axes on a log scale.  `reference` (see `read_reference`) adds
    published points with their own marker.  The title ends in "(selected on test)" when any
    trial was selected on the test set, else "(selected on validation)".
    """
    rows = per_configuration(df, [error], dims, level)
    if rows.empty:
        raise ValueError(f"no completed trial with a {error} to plot")
    rows["group"] = _groups(rows, by).to_numpy()
    groups = ordered_groups(rows["group"])
    ref_groups = [] if reference is None else ordered_groups(reference["family"])
    every = list(dict.fromkeys([*groups, *ref_groups]))
    fig = Figure(figsize=(11, 4.6), layout="constrained")
    panels = fig.subplots(1, 2, sharey=True)
    with_bars = False
    for ax, x in zip(panels, ("params", "flops")):
        with_bars |= _figure4_panel(ax, _plotted(rows, x, axis(x)[1], error, axis(error)[1]), x, error, groups, every,
                                    names)
        if reference is not None:
            _draw_reference(ax, reference, x, every, names)
        _scale(ax, "x", True if log is None else log)
        ax.set_xlabel(axis(x)[0])
        ax.grid(True, which="major", alpha=0.3)
    panels[0].set_ylabel(axis(error)[0])
    panels[1].tick_params(labelleft=True)
    _figure4_legend(panels, with_bars, level)
    heading = _titled(title, selection_note(df))
    if heading:
        fig.suptitle(heading)
    return fig


def _figure4_panel(ax: Axes, points: pd.DataFrame, x: str, error: str, groups: list[Hashable],
                   every: list[Hashable], names: bool) -> bool:
    """One panel of Figure 4 (`points` from `_plotted`): a series per group, its dominated points
    hollow, and the study's front as a staircase.  True when some point has an error bar."""
    py = f"plotted_{error}"  # named after `error` so `pareto` reads its direction from it
    with_bars = False
    for group in groups:
        colour, marker = style(group, every)
        part = points[points["group"] == group].sort_values("px", kind="mergesort")
        ax.plot(part["px"], part[py], color=colour, marker=marker, lw=1.4, ms=6,
                label=label(group), gid=f"series:{label(group)}")  # fmt: skip
        _error_bars(ax, part, "px", py, colour, label(group))
        with_bars |= bool((part["n"] > 1).any())
        dominated = part.drop(pareto(part, x="px", y=py).index)
        ax.plot(dominated["px"], dominated[py], ls="none", marker=marker, ms=6, mfc="white",
                mec=colour, gid=f"dominated:{label(group)}")  # fmt: skip
        if names:
            for _, point in part.iterrows():
                ax.annotate(str(point["model_name"]), (point["px"], point[py]), xytext=(4, 3),
                            textcoords="offset points", fontsize=7, color=colour)  # fmt: skip
    front = pareto(points, x="px", y=py)
    ax.plot(front["px"], front[py], ls="--", color="0.25", lw=1.0, drawstyle="steps-post",
            label="Pareto front", gid="pareto", zorder=1)  # fmt: skip
    return with_bars


def _figure4_legend(panels: Sequence[Axes], with_bars: bool, level: float) -> None:
    """The left panel's series, the hollow marker's meaning and (where drawn) the CI bar's, on the right."""
    handles, labels = panels[0].get_legend_handles_labels()
    handles.append(Line2D([], [], ls="none", marker="o", mfc="white", mec="0.25"))
    labels.append("dominated within its series")
    if with_bars:
        handle, text = _ci_handle(level)
        handles.append(handle)
        labels.append(text)
    panels[1].legend(handles, labels, fontsize=8, loc="best")


def _draw_reference(ax: Axes, ref: pd.DataFrame, x: str, every: list[Hashable], names: bool) -> None:
    """Published points: a star in the family's colour, named, joined like the study's."""
    for group in ordered_groups(ref["family"]):
        colour, _ = style(group, every)
        part = ref[ref["family"] == group].sort_values(x, kind="mergesort")
        ax.plot(part[x], part["error"], color=colour, marker="*", ms=10, ls=":", lw=1.0,
                label=f"{label(group)} (published)", gid=f"reference:{label(group)}")  # fmt: skip
        if names:
            for _, point in part.iterrows():
                ax.annotate(str(point["name"]), (point[x], point["error"]), xytext=(4, -9),
                            textcoords="offset points", fontsize=7, color=colour, style="italic")  # fmt: skip


# --------------------------------------------------------------------------- learning curves


def curves(
    epochs: pd.DataFrame,
    *,
    by: str | None = None,
    metric: str = "val_error",
    log: bool | None = None,
    title: str | None = None,
) -> Figure:
    """Validation error (%) per epoch, one line per trial, coloured by `by` (default family).

    `metric` is a column of `results.load_epochs` (that epoch's numbers: val_error, val_acc,
    train_acc, val_loss, ...).  Lines of one colour share one legend entry, so a study of a
    hundred trials still has a legend as long as its number of levels.  `log` puts the metric
    axis on a log scale (default linear).  When the frame says its trials validated on the
    test set (a `validation` column), the title says "selected on test".
    """
    if epochs.empty:
        raise ValueError("no epochs recorded to plot")
    data = epochs.assign(group=_groups(epochs, by).to_numpy())
    groups = ordered_groups(data["group"])
    if metric not in data.columns:
        raise KeyError(f"cannot plot {metric!r} per epoch: the epochs have no such column")
    y_label, y_unit = axis(metric, per_epoch=True)
    fig = Figure(figsize=(7, 4.6), layout="constrained")
    ax = fig.subplots()
    seen: set[Hashable] = set()
    for trial_id, trial in data.groupby("trial_id", sort=True):
        trial = trial.sort_values("epoch")
        group = trial["group"].iloc[0]
        colour, _ = style(group, groups)
        ax.plot(trial["epoch"], trial[metric].astype(float) * y_unit, color=colour, lw=1.2, alpha=0.85,
                label=None if group in seen else label(group), gid=f"trial:{trial_id}")  # fmt: skip
        seen.add(group)
    _scale(ax, "y", bool(log))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _finish(ax, "epoch", y_label, by, _titled(title, selection_note(epochs)))
    return fig


# --------------------------------------------------------------------------- Pareto plot


def pareto_plot(
    df: pd.DataFrame,
    *,
    x: str = "flops",
    y: str = DEFAULT_METRIC,
    by: str | None = None,
    log: bool | None = None,
    title: str | None = None,
    dims: Sequence[str] | None = None,
    level: float = 0.95,
) -> Figure:
    """Every configuration of the completed trials as a point (coloured by `by`, default
    family): the mean of `y` (default `test_error`) over its seeds, with a vertical error bar
    of its `level` confidence interval when it has two seeds or more; the Pareto front of `x`
    (minimised) against `y` (direction from its name, see `pareto.minimises`) as a staircase,
    and the front's configurations named.  `x` is params, flops or any other column (a cost
    that differs between seeds is averaged).  `log` (default True) is for the x axis.  The
    title says "selected on test" or "selected on validation" (see `figure4`).
    """
    rows = per_configuration(df, [y] if x in ("params", "flops") else [y, x], dims, level)
    if x not in ("params", "flops"):
        rows[x] = rows[f"{x}_mean"]
    rows = rows.dropna(subset=[x, "mean"])
    if rows.empty:
        raise ValueError(f"no completed trial with a {x} and a {y} to plot")
    x_label, x_unit = axis(x)
    y_label, y_unit = axis(y)
    py = f"plotted_{y}"  # named after `y` so that `pareto` reads the same direction from it
    points = _plotted(rows, x, x_unit, y, y_unit).assign(group=_groups(rows, by).to_numpy())
    groups = ordered_groups(points["group"])
    fig = Figure(figsize=(7, 4.6), layout="constrained")
    ax = fig.subplots()
    for group in groups:
        colour, marker = style(group, groups)
        part = points[points["group"] == group]
        ax.scatter(part["px"], part[py], color=colour, marker=marker, s=28, alpha=0.8, zorder=2,
                   label=label(group), gid=f"series:{label(group)}")  # fmt: skip
        _error_bars(ax, part, "px", py, colour, label(group))
    front = pareto(points, x="px", y=py)
    ax.plot(front["px"], front[py], ls="--", color="0.2", lw=1.2, drawstyle="steps-post",
            label="Pareto front", gid="pareto")  # fmt: skip
    for _, point in front.iterrows():
        ax.annotate(str(point["model_name"]), (point["px"], point[py]), xytext=(4, 3 if minimises(y) else -9),
                    textcoords="offset points", fontsize=7)  # fmt: skip
    _scale(ax, "x", True if log is None else log)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.grid(True, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if (points["n"] > 1).any():
        handle, text = _ci_handle(level)
        handles.append(handle)
        labels.append(text)
    ax.legend(handles, labels, title=by or "family", fontsize=8)
    heading = _titled(title, selection_note(df))
    if heading:
        ax.set_title(heading)
    return fig


# --------------------------------------------------------------------------- ablation chart


def ablation_chart(stats: pd.DataFrame, *, percent: bool = True, title: str | None = None) -> Figure:
    """The effect of each factor's levels against its base, with confidence intervals.

    One row per non-base level of `analysis.ablation`'s output: the paired difference (points
    of accuracy with `percent`) and its CI as a bar; filled when the CI excludes zero, hollow
    when it does not, and a level whose CI could not be given (fewer than 2 paired seeds) is
    drawn as a lone grey point annotated 'n<2: no CI' instead of an invented interval.
    """
    effects = stats[~stats["is_base"].astype(bool)].reset_index(drop=True)
    if effects.empty:
        raise ValueError("no factor level besides the base to chart")
    scale = 100.0 if percent else 1.0
    ticks = [f"{r.factor} = {label(r.level)}  (vs {label(r.base_level)})" for r in effects.itertuples()]
    position = np.arange(len(effects))[::-1].astype(float)  # first factor at the top
    fig = Figure(figsize=(7, 0.8 + 0.45 * len(effects)), layout="constrained")
    ax = fig.subplots()
    diff = effects["diff"].to_numpy(dtype=float) * scale
    low = effects["diff_low"].to_numpy(dtype=float) * scale
    high = effects["diff_high"].to_numpy(dtype=float) * scale
    has_ci = ~np.isnan(low)
    excludes = effects["excludes_zero"].fillna(False).to_numpy(dtype=bool)
    ax.axvline(0.0, color="0.4", lw=0.8)
    ax.hlines(position[has_ci], low[has_ci], high[has_ci], color="C0", lw=2.2, gid="ci")
    filled = has_ci & excludes
    ax.plot(diff[filled], position[filled], ls="none", marker="o", color="C0", ms=7,
            label="CI excludes 0", gid="effect")  # fmt: skip
    hollow = has_ci & ~excludes
    ax.plot(diff[hollow], position[hollow], ls="none", marker="o", mfc="white", mec="C0", ms=7,
            label="CI covers 0", gid="no-effect")  # fmt: skip
    ax.plot(diff[~has_ci], position[~has_ci], ls="none", marker="o", color="0.6", ms=7,
            label="fewer than 2 seeds", gid="no-ci")  # fmt: skip
    for where, value in zip(position[~has_ci], diff[~has_ci]):
        ax.annotate("n<2: no CI", (value, where), xytext=(6, -3), textcoords="offset points", fontsize=8)
    ax.set_yticks(position, ticks)
    ax.set_ylim(-0.7, len(effects) - 0.3)
    metric_unit = "points" if percent else "difference"
    confidence = confidence_label(stats)
    ax.set_xlabel(f"paired difference vs base ({metric_unit}), {confidence} paired t CI over seeds")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    if title:
        ax.set_title(title)
    return fig


__all__ = [
    "AXES",
    "EPOCH_AXES",
    "DEFAULT_METRIC",
    "REFERENCE_COLUMNS",
    "axis",
    "style",
    "read_reference",
    "figure4",
    "curves",
    "pareto_plot",
    "ablation_chart",
]
