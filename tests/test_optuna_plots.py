"""`rksearch plot importance|parallel|contour|history`: Optuna's own plots of a study's Optuna mirror.

The studies are built with Optuna's public API in a SQLite file (`optuna.create_study` and
`add_trial`: no sampling, no training), so each check knows exactly what the study holds.
Importances are compared with `optuna.importance` called directly: the command adds nothing to
Optuna's numbers.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.importance import FanovaImportanceEvaluator, get_param_importances
from optuna.trial import TrialState, create_trial

from rksearch import plot
from rksearch.analysis import optuna_plots

SPACE = {
    "form": CategoricalDistribution(["explicit", "clique"]),
    "stages": IntDistribution(1, 3),
    "growth": CategoricalDistribution([4, 8]),
}
#: (form, stages, growth) -> validation accuracy: stages matter most, growth a little, form hardly
GRID = [(form, stages, growth) for form in ("explicit", "clique") for stages in (1, 2, 3) for growth in (4, 8)]


def _accuracy(form: str, stages: int, growth: int) -> float:
    return 0.5 + 0.12 * stages + 0.01 * growth + (0.005 if form == "clique" else 0.0)


def _add(study: optuna.Study, params: dict, values: list[float] | None, state: TrialState = TrialState.COMPLETE,
         space: dict = SPACE) -> None:  # fmt: skip
    distributions = {name: space[name] for name in params}
    curve = {epoch: (values or [0.0])[0] * (epoch + 1) / 3 for epoch in range(3)}
    study.add_trial(create_trial(params=params, distributions=distributions, values=values, state=state,
                                 intermediate_values=curve))  # fmt: skip


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A plain Optuna database: 'grid' (12 completed, 1 pruned; val_acc), 'pareto' (two
    objectives: val_acc, flops), 'young' (one completed trial), 'flat' (one dimension)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('optuna') / 'optuna.db'}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    grid = optuna.create_study(study_name="grid", storage=url, direction="maximize")
    pareto = optuna.create_study(study_name="pareto", storage=url, directions=["maximize", "minimize"])
    for study, names in ((grid, ["val_acc"]), (pareto, ["val_acc", "flops"])):
        with pytest.warns(optuna.exceptions.ExperimentalWarning):
            study.set_metric_names(names)
    for form, stages, growth in GRID:
        params = {"form": form, "stages": stages, "growth": growth}
        _add(grid, params, [_accuracy(form, stages, growth)])
        _add(pareto, params, [_accuracy(form, stages, growth), 1e6 * stages * growth**2])
    _add(grid, {"form": "clique", "stages": 3, "growth": 8}, None, TrialState.PRUNED)
    young = optuna.create_study(study_name="young", storage=url, direction="maximize")
    _add(young, {"form": "clique", "stages": 1, "growth": 4}, [0.6])
    flat = optuna.create_study(study_name="flat", storage=url, direction="maximize")
    for stages in (1, 2, 3):
        _add(flat, {"stages": stages}, [0.5 + 0.1 * stages])
    return url


def _plot(capsys, url: str, *argv: str) -> tuple[int, str, str]:
    code = plot.main([*argv, "--storage", url])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("kind", plot.OPTUNA_KINDS)
def test_each_kind_writes_a_png_and_a_pdf(url: str, tmp_path: Path, capsys, kind: str) -> None:
    for suffix, magic in ((".png", b"\x89PNG\r\n\x1a\n"), (".pdf", b"%PDF")):
        out = tmp_path / f"{kind}{suffix}"
        code, printed, err = _plot(capsys, url, kind, "--study", "grid", "-o", str(out))
        assert (code, err) == (0, ""), err
        assert printed.endswith(f"wrote {out}\n")
        assert out.read_bytes().startswith(magic) and out.stat().st_size > 5_000


def test_importances_are_optunas_fanova_and_the_chart_draws_them(url: str) -> None:
    study = optuna_plots.optuna_study(url, "grid")
    expected = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=optuna_plots.FANOVA_SEED))
    found = optuna_plots.param_importances(study, optuna_plots.study_objective(study))
    assert found == pytest.approx(dict(expected)) and list(found) == list(expected)
    assert next(iter(found)) == "stages" and sum(found.values()) == pytest.approx(1.0)
    figure = optuna_plots.optuna_figure(study, "importance")
    bars = {bar.get_y(): bar.get_width() for bar in figure.axes[0].patches}
    assert sorted(bars.values()) == pytest.approx(sorted(found.values()), abs=0.006)  # Optuna rounds to 2 places
    assert "grid: val_acc" in figure.axes[0].get_title(loc="left")


def test_the_command_prints_the_importances_it_drew(url: str, tmp_path: Path, capsys) -> None:
    code, printed, _ = _plot(capsys, url, "importance", "--study", "grid", "-o", str(tmp_path / "i.png"))
    study = optuna_plots.optuna_study(url, "grid")
    ranked = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=optuna_plots.FANOVA_SEED))
    assert code == 0
    assert printed.splitlines()[0] == "importance (fANOVA): " + ", ".join(
        f"{name} {value:.3f}" for name, value in ranked.items())  # fmt: skip


def test_a_multi_objective_study_plots_the_objective_asked_for_and_says_so(url: str, tmp_path: Path,
                                                                           capsys) -> None:  # fmt: skip
    code, printed, _ = _plot(capsys, url, "history", "--study", "pareto", "-o", str(tmp_path / "h.png"))
    assert code == 0
    assert printed.splitlines()[0] == "objective: val_acc (objective 0 of 2); --objective N picks another"
    study = optuna_plots.optuna_study(url, "pareto")
    flops = optuna_plots.study_objective(study, 1)
    assert (flops.name, flops.describe()) == ("flops", "flops (objective 1 of 2)")
    drawn = optuna_plots.optuna_figure(study, "history", flops).axes[0]
    assert max(drawn.collections[0].get_offsets()[:, 1]) == pytest.approx(1e6 * 3 * 64)
    ranked = optuna_plots.param_importances(study, flops)
    assert ranked == pytest.approx(dict(get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0),
                                                              target=lambda trial: trial.values[1])))  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["importance", "--study", "nope"], "no Optuna study named 'nope' in sqlite:///"),
        (["history", "--study", "pareto", "--objective", "2"], "has 2 objective(s), numbered 0 to 1"),
        (["history", "--study", "grid", "--objective", "1"], "has 1 objective(s), numbered 0 to 0"),
        (["figure4", "--study", "grid", "--objective", "1"], "--objective only applies to importance, parallel"),
        (["importance", "--study", "young"], "has 1 completed trial(s); importance needs 2: let it run longer"),
        (["contour", "--study", "flat"], "searches 1 dimension(s) that every completed trial has; contour needs 2"),
    ],
)
def test_errors_are_one_line_and_exit_2(url: str, tmp_path: Path, capsys, argv: list[str], message: str) -> None:
    code, _, err = _plot(capsys, url, *argv, "-o", str(tmp_path / "x.png"))
    assert code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not list(tmp_path.iterdir())


def test_a_database_without_optuna_tables_is_refused_untouched(tmp_path: Path, capsys) -> None:
    """An rksearch database from before the Optuna mirror has its own `studies` and `trials`:
    Optuna's `load_study(storage=URL)` would add its tables to it before failing; here nothing is
    written and the message names the command that mirrors its studies."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.executescript("CREATE TABLE studies (id INTEGER PRIMARY KEY, name TEXT);"
                           "CREATE TABLE trials (id INTEGER PRIMARY KEY, study_id INTEGER);")  # fmt: skip
    tables = "SELECT name FROM sqlite_master ORDER BY name"
    before = sqlite3.connect(path).execute(tables).fetchall()
    code, _, err = _plot(capsys, f"sqlite:///{path}", "importance", "--study", "quickstart",
                         "-o", str(tmp_path / "x.png"))  # fmt: skip
    assert code == 2 and err.count("\n") == 1
    assert "has no Optuna studies" in err and "'rksearch run STUDY.yaml --storage URL --resume' adds it" in err
    assert sqlite3.connect(path).execute(tables).fetchall() == before


def test_a_missing_database_is_not_created(tmp_path: Path, capsys) -> None:
    code, _, err = _plot(capsys, f"sqlite:///{tmp_path / 'none.db'}", "history", "--study", "s",
                         "-o", str(tmp_path / "x.png"))  # fmt: skip
    assert code == 2 and err.startswith("error: no database at ") and not (tmp_path / "none.db").exists()


def test_optunas_style_does_not_leak_into_other_plots(url: str) -> None:
    import matplotlib

    before = dict(matplotlib.rcParams)
    optuna_plots.optuna_figure(optuna_plots.optuna_study(url, "grid"), "parallel")
    assert dict(matplotlib.rcParams) == before
