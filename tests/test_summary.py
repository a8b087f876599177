"""The end-of-study summary, read back from a real SQLite database written through the store.

The numbers are worked out by hand (see `_CONFIGURATIONS`): validation accuracy ranks the
configurations, test accuracy is reported beside it as mean ± the Student-t half-width (n).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from studyframes import store_frame, trial_row

from rksearch import analysis, results
from rksearch.analysis import report as summary

DIMS = ["stages", "growth", "form"]

# model name, stages, growth, form, params, flops, {seed: (best validation error %, test error %)}
_CONFIGURATIONS = [
    # val acc 95.0, 94.8, 94.6 -> 94.8; test 94.0, 93.8, 93.6: 93.8 -/+ 4.303 * 0.2 / sqrt(3) = 0.50
    ("ERKNet-2x1 2x1 2x1", (2, 2, 2), 12, "explicit", 200_000, 50_000_000, {0: (5.0, 6.0), 1: (5.2, 6.2), 2: (5.4, 6.4)}),
    # same name, growth 24: val 95.9 (the best); test 94.5, 94.1: 94.3 -/+ 12.706 * 0.2828 / sqrt(2) = 2.54
    ("ERKNet-2x1 2x1 2x1", (2, 2, 2), 24, "explicit", 700_000, 180_000_000, {0: (4.0, 5.5), 1: (4.2, 5.9)}),
    # one seed: no interval
    ("IRKNet-3x1 3x1 3x1", (3, 3, 3), 12, "clique", 300_000, 90_000_000, {0: (6.0, 7.0)}),
    # val 91.9 (last): test 91.5, 91.1 -> 91.3 -/+ 2.54
    ("DenseNet-BC-100", None, 12, None, 800_000, 290_000_000, {0: (8.0, 8.5), 1: (8.2, 8.9)}),
]


def study_frame(validation: str = "holdout", tested: bool = True) -> pd.DataFrame:
    """The configurations above (8 completed trials), plus a pruned trial whose validation
    accuracy (99 %) beats them all, a failed one and a skipped one; `tested=False` is a study
    without test numbers (a database from before they were recorded)."""
    rows = []
    for name, stages, growth, form, params, flops, seeds in _CONFIGURATIONS:
        for seed, (val_error, test_error) in seeds.items():
            row = trial_row(len(rows) + 1, name, stages, form, params, flops, seed, val_error)
            test = (1.0 - test_error / 100.0) if tested else None
            row.update(growth=growth, test_acc=test, test_acc_final=None if test is None else test - 0.001)
            rows.append(row)
    rows.append(trial_row(len(rows) + 1, "IRKNet-4x1 4x1 4x1", (4, 4, 4), "clique", 400_000, 120_000_000, 0, 1.0,
                          status="pruned"))  # fmt: skip
    rows.append(trial_row(len(rows) + 1, "ERKNet-8x1 8x1 8x1", (8, 8, 8), "explicit", 1_200_000, 1_100_000_000, 0,
                          None, status="failed"))  # fmt: skip
    rows.append(trial_row(len(rows) + 1, "ERKNet-9x1 9x1 9x1", (9, 9, 9), "explicit", 9_000_000, 9_000_000_000, 0,
                          None, status="skipped"))  # fmt: skip
    frame = pd.DataFrame(rows)
    frame["validation"] = validation
    frame.attrs["dims"] = DIMS
    return frame


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('summary') / 'study.db'}"
    store_frame(url, "holdout", study_frame("holdout"), with_test=True)
    store_frame(url, "paper", study_frame("test"), with_test=True)
    store_frame(url, "old", study_frame("holdout", tested=False), with_test=True)
    return url


def _cells(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


def test_summary_ranks_configurations_by_validation_and_reports_test(url: str) -> None:
    text = summary.study_summary(url, "holdout")
    lines = text.splitlines()
    assert lines[0] == ("study holdout: 8 completed, 1 pruned, 1 failed, 1 skipped; "
                        "selected on validation holdout; test reported once per trial")  # fmt: skip
    assert "selected on test" not in text
    assert lines[1].startswith("top 4 of 4 configurations by mean validation accuracy")
    assert _cells(lines[2]) == ["#", "model", "params (M)", "GFLOPs", "val acc %", "test acc %"]
    assert [[cells[i] for i in (0, 1, 4, 5)] for cells in map(_cells, lines[3:])] == [
        ["1", "ERKNet-2x1 2x1 2x1 (growth=24)", "95.90", "94.30 ± 2.54 (2)"],
        ["2", "ERKNet-2x1 2x1 2x1 (growth=12)", "94.80", "93.80 ± 0.50 (3)"],
        ["3", "IRKNet-3x1 3x1 3x1", "94.00", "93.00 (1)"],  # one seed: no interval
        ["4", "DenseNet-BC-100", "91.90", "91.30 ± 2.54 (2)"],
    ]
    # the pruned trial's 99 % is not a result: it is counted, never ranked
    assert "IRKNet-4x1" not in text


def test_summary_half_widths_are_the_t_intervals_of_mean_ci(url: str) -> None:
    mean, low, high = analysis.mean_ci([0.940, 0.938, 0.936])
    assert f"{100 * mean:.2f} ± {100 * (high - low) / 2:.2f} (3)" == "93.80 ± 0.50 (3)"
    mean, low, high = analysis.mean_ci([0.945, 0.941])
    assert f"{100 * mean:.2f} ± {100 * (high - low) / 2:.2f} (2)" == "94.30 ± 2.54 (2)"


def test_summary_top_and_selected_on_test(url: str) -> None:
    text = summary.study_summary(url, "paper", top=2)
    lines = text.splitlines()
    assert lines[0].endswith("; selected on test (the paper's protocol)")
    assert "holdout" not in text
    assert _cells(lines[2])[-2:] == ["val acc (test set) %", "test acc %"]
    assert [_cells(line)[1] for line in lines[3:]] == ["ERKNet-2x1 2x1 2x1 (growth=24)",
                                                       "ERKNet-2x1 2x1 2x1 (growth=12)"]  # fmt: skip
    assert lines[1].startswith("top 2 of 4 configurations")


def test_summary_without_test_numbers_or_completed_trials(url: str, tmp_path: Path) -> None:
    lines = summary.study_summary(url, "old").splitlines()
    assert [_cells(line)[4:] for line in lines[3:]] == [["95.90", "-"], ["94.80", "-"], ["94.00", "-"],
                                                        ["91.90", "-"]]  # fmt: skip

    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    frame = study_frame()
    store_frame(empty, "nothing yet", frame[frame["status"] != "completed"], with_test=True)
    assert summary.study_summary(empty, "nothing yet").splitlines() == [
        "study nothing yet: 0 completed, 1 pruned, 1 failed, 1 skipped; "
        "selected on validation holdout; test reported once per trial",
        "no completed trial with a validation accuracy yet",
    ]


def test_per_configuration_joins_a_second_metric_by_configuration() -> None:
    frame = study_frame()
    frame["test_error"] = 1.0 - frame["test_acc"]
    rows = analysis.per_configuration(frame, ["best_val_acc", "test_error", "macs"])
    assert len(rows) == 4 and sorted(rows["n"]) == [1, 2, 2, 3]
    by_growth = rows[rows["model_name"] == "ERKNet-2x1 2x1 2x1"].set_index("growth")
    assert by_growth.loc[24, "mean"] == pytest.approx(0.959)
    assert by_growth.loc[24, "test_error_mean"] == pytest.approx(0.057)
    assert by_growth.loc[12, "test_error_n"] == 3
    assert by_growth.loc[12, "macs_mean"] == 25_000_000
    _, low, high = analysis.mean_ci([0.06, 0.062, 0.064])
    bounds = (by_growth.loc[12, "test_error_ci_low"], by_growth.loc[12, "test_error_ci_high"])
    assert bounds == pytest.approx((low, high))
    single = rows[rows["model_name"] == "IRKNet-3x1 3x1 3x1"].iloc[0]
    assert single["test_error_n"] == 1 and np.isnan(single["test_error_half_width"])


@pytest.mark.parametrize(
    ("values", "expected"),
    [(["test", "holdout"], "test"), (["holdout", None], "holdout"), ([None, None], None)],
)
def test_selection_reads_the_validation_column(values: list, expected: str | None) -> None:
    assert analysis.selection(pd.DataFrame({"validation": values})) == expected
    assert analysis.selection(pd.DataFrame({"x": [1]})) is None
    assert analysis.selection_note(pd.DataFrame({"validation": ["test"]})) == "selected on test"


def test_pm_cell() -> None:
    assert analysis.pm_cell(0.943, 0.0254, 2) == "94.30 ± 2.54 (2)"
    assert analysis.pm_cell(0.93, float("nan"), 1) == "93.00 (1)"
    assert analysis.pm_cell(float("nan"), float("nan"), 0) == "-"


def test_trials_selected_on_test_and_on_the_holdout_are_never_pooled(tmp_path: Path, caplog) -> None:
    """A study begun before the holdout default and resumed after it holds both protocols."""
    url = f"sqlite:///{tmp_path / 'mixed.db'}"
    old, new = study_frame("test"), study_frame("holdout")
    new["trial_key"] = new["trial_key"] + "-new"
    frame = pd.concat([old, new], ignore_index=True)
    frame.attrs["dims"] = old.attrs["dims"]
    store_frame(url, "mixed", frame, with_test=True)
    lines = summary.study_summary(url, "mixed", top=20).splitlines()
    assert "mixed: some trials selected on test" in lines[0]
    ranked = [_cells(line)[1] for line in lines[3:]]
    assert ranked.count("ERKNet-2x1 2x1 2x1 (growth=12)") == 1 and ranked.count("ERKNet-2x1 2x1 2x1 (growth=12) [test]") == 1
    rows = analysis.replicates(results.load(url, "mixed"), "test_acc")
    assert rows.groupby("validation")["n"].sum().to_dict() == {"holdout": 8, "test": 8}
    # the same seeds twice in one configuration: said, not silently pooled
    twice = results.load(url, "mixed").assign(validation="holdout")
    with caplog.at_level("WARNING"):
        analysis.replicates(twice, "test_acc")
    assert "appear more than once in one configuration" in caplog.text
