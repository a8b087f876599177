"""Ablation statistics: what each level of each factor changes, paired by seed, Holm-adjusted.

`ablation` reads a one-factor-at-a-time study (or a full grid, as marginal main effects) off a
trial frame: per level the mean over seeds with its interval, and against the factor's base
level the paired difference with its t interval, sign-flip p-value, effect size and a verdict
that must survive Holm's correction across every compared level.  `ablation_markdown` prints
it with missing intervals spelled out rather than left blank.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from rksearch.analysis.frames import completed, dimension_columns, level_text, require_metric
from rksearch.analysis.stats import holm, mean_ci, paired_differences
from rksearch.analysis.tables import markdown_row, markdown_rule
from rksearch.analysis.values import codes, missing

log = logging.getLogger(__name__)

Design = Literal["auto", "ofat", "grid"]


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
    seeds pair up or the differences do not vary; 'base' on the base rows) and note
    (`attrs["confidence"]` keeps `confidence`).  A level with fewer than 2 seeds (or 2 paired
    seeds) gets NaN bounds, excludes_zero NA and a note saying why, and a warning is logged.
    """
    dimensions = dimension_columns(df, dims)
    require_metric(df, metric)
    done = completed(df).dropna(subset=[metric])
    varying = [c for c in dimensions if c != "seed" and len(codes(done[c])[1]) > 1]
    factors = varying if factors is None else list(factors)
    if not factors:
        raise ValueError("no factor to analyse: the study varies no search dimension")
    # The design is read off every varying dimension, analysed or not: an OFAT factor's
    # levels are compared with all the other dimensions at base.
    coded = _coded(done, list(dict.fromkeys([*factors, *varying])), base)
    if design == "auto":
        off_base = sum((coded.codes[d] != coded.base[d]).astype(int) for d in coded.codes)
        design = "ofat" if int(np.max(off_base)) <= 1 else "grid"
    frame = pd.DataFrame(coded.codes, index=done.index)
    frame["seed"] = done["seed"].to_numpy() if "seed" in done.columns else 0
    frame["value"] = done[metric].to_numpy(dtype=float)
    rows = [row for factor in factors for row in _factor_rows(frame, factor, coded, design, confidence)]
    out = _holm_adjusted(pd.DataFrame(rows), confidence)
    out.attrs["confidence"] = confidence  # for the labels of tables and charts
    out.attrs["metric"] = metric
    return out


@dataclass(frozen=True)
class _Coded:
    """The analysed dimensions as integer codes (`values.codes`), with their levels and base codes."""

    codes: dict[str, np.ndarray]
    levels: dict[str, list[Any]]
    base: dict[str, int]


def _coded(done: pd.DataFrame, analysed: Sequence[str], base: Mapping[str, Any] | None) -> _Coded:
    coded = _Coded({}, {}, {})
    for dim in analysed:
        if dim not in done.columns:
            raise KeyError(f"factor {dim!r} is not a column of the study")
        coded.codes[dim], coded.levels[dim] = codes(done[dim])
        coded.base[dim] = _base_code(dim, coded.codes[dim], coded.levels[dim], base)
    return coded


def _factor_rows(frame: pd.DataFrame, factor: str, coded: _Coded, design: str, confidence: float) -> list[dict]:
    """One factor's rows: each level's cells (mean per seed and other factors' levels) against the base's.

    In an OFAT design only the trials whose other factors sit at base count; in a grid every
    cell does, and a level's per-seed value is its mean over the other factors' cells.
    """
    others = [d for d in coded.codes if d != factor]
    sub = frame
    if design == "ofat" and others:
        sub = frame[np.all([frame[o] == coded.base[o] for o in others], axis=0)]
    cells = sub.groupby([factor, "seed", *others], dropna=False)["value"].mean()
    base_code = coded.base[factor]
    base_cells = _level_cells(cells, base_code)
    rows = []
    for code, level in enumerate(coded.levels[factor]):
        is_base = code == base_code
        row = {"factor": factor, "level": level, "base_level": coded.levels[factor][base_code], "is_base": is_base,
               "design": design}
        row |= _level_stats(_level_cells(cells, code), base_cells, is_base, confidence)
        if row["note"]:
            log.warning("ablation %s=%r: %s", factor, level, row["note"])
        rows.append(row)
    return rows


def _level_stats(level_cells: pd.Series, base_cells: pd.Series, is_base: bool, confidence: float) -> dict:
    """A level's mean over seeds with its interval, and its seed-paired difference from the base."""
    per_seed = level_cells.groupby(level="seed", dropna=False).mean()
    mean, low, high = mean_ci(per_seed.to_numpy(), confidence)
    common = level_cells.index.intersection(base_cells.index)
    diffs = (level_cells[common] - base_cells[common]).groupby(level="seed", dropna=False).mean()
    compared = paired_differences(diffs.to_numpy(dtype=float), confidence)
    notes = []
    if len(per_seed) < 2:
        notes.append(f"fewer than 2 seeds (n={len(per_seed)}): no CI")
    if not is_base and compared.n < 2:
        notes.append(f"fewer than 2 paired seeds (n={compared.n}): no CI for the difference")
    return {
        "seeds": len(per_seed),
        "mean": mean,
        "ci_low": low,
        "ci_high": high,
        "pairs": compared.n,
        "diff": compared.diff,
        "diff_low": compared.low,
        "diff_high": compared.high,
        "excludes_zero": pd.NA if math.isnan(compared.low) else bool(compared.low > 0 or compared.high < 0),
        "p_value": math.nan if is_base else compared.p_value,
        "p_t": math.nan if is_base else compared.p_t,
        "effect_size": math.nan if is_base else compared.effect_size,
        "verdict": "base" if is_base else compared.verdict,
        "note": "; ".join(notes),
    }


def _holm_adjusted(out: pd.DataFrame, confidence: float) -> pd.DataFrame:
    """Add the Holm-adjusted p-values beside the raw ones, and take back every verdict that
    does not survive them: a verdict must hold across the multiplicity of the comparisons."""
    out["excludes_zero"] = out["excludes_zero"].astype("boolean")
    out.insert(out.columns.get_loc("p_value") + 1, "p_holm", holm(out["p_value"].to_numpy(dtype=float)))
    out.insert(out.columns.get_loc("p_t") + 1, "p_t_holm", holm(out["p_t"].to_numpy(dtype=float)))
    alpha = 1.0 - confidence
    downgraded = out["verdict"].isin(["higher", "lower"]).to_numpy() & ~(out["p_t_holm"].to_numpy() < alpha)
    out.loc[downgraded, "verdict"] = "inconclusive"
    compared_rows = int((~out["is_base"]).sum())
    out.loc[downgraded, "note"] = [
        "; ".join(filter(None, [note, f"the interval excludes 0 but not after Holm across {compared_rows} comparisons"]))
        for note in out.loc[downgraded, "note"]
    ]
    return out


def _level_cells(cells: pd.Series, code: int) -> pd.Series:
    """The cells of one level, indexed by (seed, other factors) so levels can be paired."""
    if code not in cells.index.get_level_values(0):
        return cells.iloc[:0].droplevel(0)
    return cells.xs(code, level=0, drop_level=True)


def _base_code(
    factor: str, level_codes: np.ndarray, levels: list[Any], base: Mapping[str, Any] | None
) -> int:
    """The code of `factor`'s base level: the one `base` names, else its most common level."""
    if base is not None and factor in base:
        wanted = base[factor]
        for code, level in enumerate(levels):
            if _same(level, wanted):
                return code
        raise ValueError(f"base level {wanted!r} of {factor!r} is not among its levels {levels}")
    counts = np.bincount(level_codes, minlength=len(levels))
    return int(np.argmax(counts))  # first of the most common levels, in sorted order


def ablation_markdown(stats: pd.DataFrame, percent: bool = True, digits: int = 2) -> str:
    """The ablation statistics as a Markdown table; missing CIs spelled out, not left blank.

    Per level: seeds, mean with its CI, and against the base the paired difference with its
    t interval, 't p (Holm)' (the interval's paired t-test, Holm-adjusted in parentheses: what
    the verdict rests on), 'sign-flip p (Holm)' (the exact, distribution-free test), d_z and the
    verdict -- 'higher', 'lower' or 'inconclusive' (the interval crosses zero, not after Holm,
    differences that do not vary, or fewer than 2 paired seeds), spelled out.  With `percent`,
    accuracy-like fractions are shown as percent (differences in points).
    """
    scale = 100.0 if percent else 1.0
    unit = " (%)" if percent else ""
    diff_unit = " (pp)" if percent else ""
    ci_head = f"{confidence_label(stats)} CI"
    head = ["factor", "level", "seeds", f"mean{unit}", ci_head, f"diff vs base{diff_unit}", ci_head,
            "t p (Holm)", "sign-flip p (Holm)", "d_z", "verdict"]  # fmt: skip
    align = ["---", "---", "---:", "---:", "---", "---:", "---", "---:", "---:", "---:", "---"]
    lines = [markdown_row(head), markdown_rule(align)]
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
        lines.append(markdown_row(cells))
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


def _same(a: Any, b: Any) -> bool:
    """A level equals a base given by hand: missing matches missing, and a list its tuple."""
    if missing(a) or missing(b):
        return missing(a) and missing(b)
    if isinstance(b, list):
        b = tuple(b)
    return bool(a == b)


__all__ = ["Design", "ablation", "ablation_markdown", "confidence_label"]
