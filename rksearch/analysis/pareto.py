"""Pareto fronts of study results: the one implementation the plots and `results` share.

A study trades accuracy against cost (FLOPs or params), so the interesting trials are the
non-dominated ones.  The direction of the y objective is read from its column name, so the
same call works on `test_acc` (maximised, the default: the reporting metric of
`results.load`), `test_error` or `best_val_error` (minimised), or any other column.
"""

from __future__ import annotations

import pandas as pd

#: y columns with one of these words in their name (words split at '_') are minimised; every
#: other y is maximised.  A word, not a suffix: `test_error_final` is an error too.
MINIMISED_WORDS: tuple[str, ...] = ("error", "loss")
#: the old name of MINIMISED_WORDS
MINIMISED_SUFFIXES = MINIMISED_WORDS


def minimises(y: str) -> bool:
    """Whether objective `y` is better when smaller: errors and losses are (test_error,
    test_error_final, best_val_error, val_loss); accuracies are not."""
    return any(word in MINIMISED_WORDS for word in str(y).lower().split("_"))


def pareto(df: pd.DataFrame, x: str = "flops", y: str = "test_acc") -> pd.DataFrame:
    """The rows of `df` that no other row dominates, sorted by `x` (ties: better y first).

    `x` is always minimised; `y` is minimised when its name has the word 'error' or 'loss'
    (`minimises`) and maximised otherwise (default `test_acc`, the reporting metric; pass
    `y="best_val_acc"` for the selection one).  Row a dominates row b when a is at least as
    good in both and strictly better in one, so exact duplicates of a front point are all kept (neither dominates the
    other).  Rows with a missing x or y cannot be compared and are left out.  The original index
    is kept so callers can join the front back to their frame.  Rows of which not one has a `y`
    (a database from before test metrics were recorded, read for `test_acc`) are an error, not
    an empty front.
    """
    if len(df) and df[y].isna().all():
        hint = "best_val_error" if minimises(y) else "best_val_acc"
        raise ValueError(f"no row has a {y!r} value (trials recorded before test metrics were?); "
                         f"pass y={hint!r} for the validation metric")
    data = df.dropna(subset=[x, y])
    if data.empty:
        return data
    better_first = minimises(y)
    ordered = data.sort_values([x, y], ascending=[True, better_first], kind="mergesort")
    xs = ordered[x].to_numpy()
    ys = ordered[y].to_numpy() if better_first else -ordered[y].to_numpy()
    keep = []
    best_y = None
    last_x = None
    for position, (xv, yv) in enumerate(zip(xs, ys)):
        # Sweeping in x order, a row joins the front iff no cheaper-or-equal row has a y as
        # good as its own -- except an exact duplicate of the last front point.
        if best_y is None or yv < best_y:
            keep.append(position)
            best_y, last_x = yv, xv
        elif yv == best_y and xv == last_x:
            keep.append(position)
    return ordered.iloc[keep]


__all__ = ["pareto", "minimises", "MINIMISED_WORDS", "MINIMISED_SUFFIXES"]
