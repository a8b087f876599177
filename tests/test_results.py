"""Reading study results into pandas and the `python -m rksearch.results` CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from pgfixture import db_url, pg_server, pg_url  # noqa: F401  (fixtures)
from storeload import FakeTrial, describe, epoch_result, val_acc

import rksearch.analysis.pareto
from rksearch import results
from rksearch.store import StoreCallback, StoreError, open_store


def _fill(url: str) -> None:
    """Study 'fig' with trials 0-2 completed (3 epochs), 3 failed, 4 pruned; study 'other' with 1."""
    store = open_store(url)
    study = store.begin_study("fig", "search: grid\n")
    callback = StoreCallback(store, study, describe, pruned=lambda trial_id: trial_id == "t4")  # ASHA stopped t4
    outcomes = ["completed"] * 3 + ["failed", "running"]
    for number, outcome in enumerate(outcomes):
        trial = FakeTrial(f"t{number}", {"key": f"key{number:04d}", "k": 12 + number})
        callback.on_trial_start(0, [], trial)
        for epoch in range(1, 4 if outcome == "completed" else 2):
            callback.on_trial_result(0, [], trial, epoch_result(number, epoch))
        trial.last_result = {"trial_status": outcome, "error": "diverged" if outcome == "failed" else None}
        callback.on_trial_complete(0, [], trial)
    other = store.begin_study("other", "x")
    store.trial_started(other, describe({"key": "key9999", "k": 40}))
    store.finish_study(study, "completed")
    store.close()


@pytest.fixture
def filled(db_url: str) -> str:  # noqa: F811
    _fill(db_url)
    return db_url


def test_load_one_row_per_completed_trial_with_dims_as_columns(filled: str) -> None:
    df = results.load(filled, "fig")
    assert df["trial_key"].tolist() == ["key0000", "key0001", "key0002"]
    columns = list(df.columns)
    assert columns[:5] == ["study", "trial_id", "trial_key", "model_name", "canonical"]
    assert columns[5:7] == ["k", "stages"]  # the search dimensions, then the fixed columns
    assert df["k"].tolist() == [12, 13, 14] and df["stages"].iloc[0] == [2, 2, 2]
    assert df["params"].tolist() == [12_000, 13_000, 14_000]
    assert df["best_val_acc"].tolist() == pytest.approx([val_acc(n, 3) for n in range(3)])
    assert (df["best_val_error"] + df["best_val_acc"]).tolist() == pytest.approx([1.0] * 3)
    assert df["final_val_error"].tolist() == pytest.approx([1 - val_acc(n, 3) for n in range(3)])
    assert (df["epochs"] == 3).all() and (df["device"] == "cpu").all()
    assert str(df["started_at"].dt.tz) == "UTC"


def test_load_status_and_study_filters(filled: str) -> None:
    everything = results.load(filled, status=None)
    assert len(everything) == 6 and set(everything["study"]) == {"fig", "other"}
    assert results.load(filled, "fig", status="failed")["error"].tolist() == ["diverged"]
    assert results.load(filled, "fig", status="pruned")["trial_key"].tolist() == ["key0004"]
    with pytest.raises(StoreError, match="no study named 'nope'"):
        results.load(filled, "nope")


def test_load_epochs(filled: str) -> None:
    epochs = results.load_epochs(filled, "fig")
    assert len(epochs) == 3 * 3 + 2
    assert {"study", "trial_id", "trial_key", "model_name", "k", "epoch", "val_error", "images_per_s"} <= set(
        epochs.columns
    )
    first = epochs[epochs["trial_key"] == "key0000"]
    assert first["epoch"].tolist() == [1, 2, 3]
    assert first["val_error"].tolist() == pytest.approx([1 - val_acc(0, e) for e in (1, 2, 3)])


def test_pareto_is_the_shared_implementation_and_fits_load(filled: str) -> None:
    assert results.pareto is rksearch.analysis.pareto.pareto
    df = results.load(filled, "fig")
    # flops grow with k and so does accuracy: every completed trial is on the front
    assert results.pareto(df, y="best_val_acc")["trial_key"].tolist() == ["key0000", "key0001", "key0002"]
    assert len(results.pareto(df, x="flops", y="best_val_error")) == 3


def test_studies(filled: str) -> None:
    ls = results.studies(filled).set_index("study")
    assert ls.loc["fig", ["trials", "completed", "failed", "pruned"]].tolist() == [5, 3, 1, 1]
    assert ls.loc["fig", "status"] == "completed" and ls.loc["other", "status"] == "running"
    assert ls.loc["other", "running"] == 1


def test_end_of_study_summary_reads_the_database(filled: str) -> None:
    """The report `rksearch.run` prints last: counts, best configurations with costs, next commands."""
    from rksearch.analysis.report import study_summary

    lines = study_summary(filled, "fig", display_url="sqlite:///shown.db").splitlines()
    assert lines[0] == "study fig: 3 completed, 1 pruned, 1 failed, 0 skipped"
    best = lines[3].split()
    # the best by validation accuracy first; small models keep two significant digits (0.014, not 0.01)
    assert best[:6] == ["1", "ERKNet-2x1", "2x1", "2x1", "(k=14)", "0.014"]
    assert best[-2:] == [f"{100 * val_acc(2, 3):.2f}", "-"]  # no test accuracy was stored here
    assert "  python -m rksearch.results show fig --storage sqlite:///shown.db" in lines


def test_results_does_not_import_ray() -> None:
    code = "import sys, rksearch.results; sys.exit('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent.parent).returncode == 0


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def sqlite_filled(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    _fill(url)
    return url


def test_cli_ls_and_show(sqlite_filled: str, capsys) -> None:
    assert results.main(["ls", "--storage", sqlite_filled]) == 0
    out = capsys.readouterr().out
    assert "fig" in out and "other" in out
    assert results.main(["show", "fig", "--storage", sqlite_filled]) == 0
    out = capsys.readouterr().out
    assert "pruned" in out and "failed" in out and out.count("ERKNet-2x1 2x1 2x1") == 5


@pytest.mark.parametrize("fmt", ["csv", "parquet", "markdown"])
def test_cli_export(sqlite_filled: str, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"fig.{fmt}"
    assert results.main(["export", "fig", "--format", fmt, "-o", str(out), "--storage", sqlite_filled]) == 0
    expected = results.load(sqlite_filled, "fig", status=None)
    if fmt == "csv":
        back = pd.read_csv(out)
        assert back["trial_key"].tolist() == expected["trial_key"].tolist()
        assert back["best_val_acc"].tolist() == pytest.approx(expected["best_val_acc"].tolist())
    elif fmt == "parquet":
        back = pd.read_parquet(out)
        assert back["status"].tolist() == expected["status"].tolist()
    else:
        lines = out.read_text().splitlines()
        assert len(lines) == 2 + len(expected) and "trial_key" in lines[0]


@pytest.mark.parametrize(
    "argv, says",
    [
        (["show", "nope"], "no study named 'nope'"),
        (["export", "fig", "--format", "parquet"], "give an output file"),
    ],
)
def test_cli_errors_exit_2_with_one_line(sqlite_filled: str, capsys, argv: list[str], says: str) -> None:
    assert results.main([*argv, "--storage", sqlite_filled]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1


def test_cli_bad_storage_hides_password(tmp_path: Path, capsys) -> None:
    assert results.main(["ls", "--storage", f"sqlite:///{tmp_path / 'missing.db'}"]) == 2
    assert "no database at" in capsys.readouterr().err
    assert not (tmp_path / "missing.db").exists()  # a reader never creates a database
    assert results.main(["ls", "--storage", "postgresql+psycopg://ada:Secr3tPw@127.0.0.1:1/rk"]) == 2
    err = capsys.readouterr().err
    assert "cannot open" in err and "Secr3tPw" not in err and err.count("\n") == 1
