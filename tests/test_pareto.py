"""Pareto fronts on hand-made points, and against the definition of dominance."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rksearch.analysis.pareto import minimises, pareto


def _points(rows: list[tuple[str, float, float]], y: str = "test_acc") -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["name", "flops", y])


def test_maximised_accuracy_front_on_hand_made_points() -> None:
    df = _points(
        [
            ("a", 1.0, 0.80),  # cheapest: always on the front
            ("b", 2.0, 0.78),  # dearer and worse than a
            ("c", 2.0, 0.85),  # better than a at a higher cost
            ("d", 3.0, 0.85),  # as good as c but dearer: dominated
            ("e", 4.0, 0.90),
            ("f", 0.5, 0.60),  # cheapest of all, worst: still non-dominated
        ]
    )
    front = pareto(df, x="flops", y="test_acc")
    assert list(front["name"]) == ["f", "a", "c", "e"]
    assert list(front.index) == [5, 0, 2, 4]  # original index kept for joins


def test_error_is_minimised_by_its_name() -> None:
    for y in ("test_error", "best_val_error"):
        df = _points([("a", 1.0, 20.0), ("b", 2.0, 25.0), ("c", 3.0, 10.0), ("d", 2.5, 10.0)], y=y)
        front = pareto(df, x="flops", y=y)
        assert list(front["name"]) == ["a", "d"]
    assert minimises("test_error") and minimises("test_error_final") and minimises("final_val_error")
    assert minimises("val_loss")
    assert not minimises("test_acc") and not minimises("best_val_acc") and not minimises("test_acc_final")
    assert not minimises("errors_seen") and not minimises("terror")  # words, not substrings


def test_default_objective_is_the_test_accuracy() -> None:
    """`results.load` has no val_acc column any more: the default y is test_acc, maximised."""
    df = _points([("a", 1.0, 0.90), ("b", 2.0, 0.95), ("c", 3.0, 0.93)]).assign(best_val_acc=[0.99, 0.5, 0.5])
    assert list(pareto(df)["name"]) == ["a", "b"]  # by test_acc, not by the validation column
    assert list(pareto(df, y="best_val_acc")["name"]) == ["a"]
    assert list(pareto(df, x="best_val_acc", y="test_acc")["name"]) == ["b"]  # any two columns


def test_duplicates_and_missing_values() -> None:
    df = _points([("a", 1.0, 0.9), ("b", 1.0, 0.9), ("c", None, 0.99), ("d", 0.5, None)])
    front = pareto(df)
    assert list(front["name"]) == ["a", "b"]
    assert pareto(df.iloc[2:]).empty


def test_equal_cost_keeps_only_the_best() -> None:
    df = _points([("a", 1.0, 0.7), ("b", 1.0, 0.9), ("c", 1.0, 0.8)])
    assert list(pareto(df)["name"]) == ["b"]


def _dominated(i: int, xs: list[float], ys: list[float]) -> bool:
    return any(
        xs[j] <= xs[i] and ys[j] >= ys[i] and (xs[j] < xs[i] or ys[j] > ys[i])
        for j in range(len(xs))
    )


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 6), st.integers(0, 6)),  # small grid: many ties
        min_size=1,
        max_size=25,
    )
)
def test_front_is_exactly_the_non_dominated_set(points: list[tuple[int, int]]) -> None:
    xs = [float(p[0]) for p in points]
    ys = [float(p[1]) for p in points]
    df = pd.DataFrame({"flops": xs, "test_acc": ys})
    front = pareto(df)
    expected = {i for i in range(len(xs)) if not _dominated(i, xs, ys)}
    assert set(front.index) == expected
    assert list(front["flops"]) == sorted(front["flops"])


def test_a_front_of_a_metric_no_row_has_is_an_error_not_empty() -> None:
    old = pd.DataFrame({"flops": [1, 2], "test_acc": [float("nan")] * 2, "best_val_acc": [0.5, 0.6]})
    with pytest.raises(ValueError, match="pass y='best_val_acc'"):
        pareto(old)
    assert len(pareto(old, y="best_val_acc")) == 2
    assert pareto(old.iloc[:0]).empty  # no rows at all: an empty front
