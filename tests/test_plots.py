"""Plots drawn from a small study stored in SQLite, checked through matplotlib's objects.

The expected coordinates are worked out by hand from the numbers in `studyframes` (errors in
percent there, params in M, FLOPs in G), not read back from the plotting code.
"""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.text import Text
from studyframes import FIGURE4_DIMS, epoch_acc, figure4_frame, ofat_frame, store_frame

from rksearch import analysis, plot, results
from rksearch.analysis import plots

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite file with the Figure-4 study as `store_frame` writes it ('fig4': no test
    numbers, no validation split recorded), the same with the test errors of `reported` and
    their holdout split ('reported', as a real study stores them), and the one-factor-at-a-time
    study with its test accuracies ('ofat')."""
    url = f"sqlite:///{tmp_path_factory.mktemp('plots') / 'study.db'}"
    store_frame(url, "fig4", figure4_frame())
    store_frame(url, "reported", reported(), with_test=True)
    store_frame(url, "ofat", ofat_frame(), with_test=True)
    return url


def _line(ax: Axes, gid: str) -> Line2D:
    found = [line for line in ax.get_lines() if line.get_gid() == gid]
    assert len(found) == 1, f"{gid}: {[line.get_gid() for line in ax.get_lines()]}"
    return found[0]


def _xy(line: Line2D) -> list[tuple[float, float]]:
    return [(round(float(x), 6), round(float(y), 6)) for x, y in zip(line.get_xdata(), line.get_ydata())]


def _texts(ax: Axes) -> list[str]:
    return [t.get_text() for t in ax.texts]


def _png(fig: Figure, path: Path) -> None:
    fig.savefig(path, dpi=60)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------ Figure 4

#: test error (%) per model and seed: not the validation errors of `figure4_frame`, so a plot
#: of these numbers shows the reporting metric.  Means: ERKNet 6.5, 6.0, 6.1, 5.4 (three seeds);
#: IRKNet 6.9, 5.8, 6.0; DenseNet 7.2 (one seed: no interval).  The pruned 2x1 (1 %) must not count.
TEST_ERRORS = {
    "ERKNet-6x1 6x1 6x1": {0: 6.3, 1: 6.7},
    "ERKNet-7x1 6x1 6x1": {0: 5.8, 1: 6.2},
    "ERKNet-7x1 7x1 6x1": {0: 6.0, 1: 6.2},
    "ERKNet-7x1 7x1 7x1": {0: 5.3, 1: 5.5, 2: 5.4},
    "IRKNet-3x1 3x1 3x1": {0: 6.8, 1: 7.0},
    "IRKNet-4x1 4x1 4x1": {0: 5.9, 1: 5.7},
    "IRKNet-5x1 5x1 5x1": {0: 5.9, 1: 6.1},
    "DenseNet-BC-100": {0: 7.2},
    "IRKNet-2x1 2x1 2x1": {0: 1.0},
}


def reported(validation: str | None = "holdout") -> pd.DataFrame:
    """`figure4_frame` with the test errors above, a third seed for ERKNet-7x1 7x1 7x1, and
    every trial's `validation` split (no such column with None)."""
    frame = figure4_frame()
    third = frame[(frame["model_name"] == "ERKNet-7x1 7x1 7x1") & (frame["seed"] == 0)].assign(
        seed=2, trial_id=99, trial_key="key99")  # fmt: skip
    frame = pd.concat([frame, third], ignore_index=True)
    errors = [TEST_ERRORS.get(name, {}).get(seed) for name, seed in zip(frame["model_name"], frame["seed"])]
    frame["test_error"] = [np.nan if e is None else e / 100.0 for e in errors]
    frame["test_acc"] = 1.0 - frame["test_error"]
    if validation is None:
        frame = frame.drop(columns="validation")
    else:
        frame["validation"] = validation
    frame.attrs["dims"] = FIGURE4_DIMS
    return frame


def _strings(fig: Figure) -> list[str]:
    """Every text the figure shows: titles, labels, legend entries, annotations."""
    return [t.get_text() for t in fig.findobj(Text) if t.get_text()]


def _bars(ax: Axes, gid: str) -> dict[float, tuple[float, float]]:
    """The error bars of LineCollection `gid`: x -> (low, high), rounded."""
    found = [c for c in ax.collections if c.get_gid() == gid]
    assert len(found) <= 1, gid
    if not found:
        return {}
    return {round(float(s[0, 0]), 6): (round(float(s[0, 1]), 6), round(float(s[1, 1]), 6))
            for s in found[0].get_segments()}  # fmt: skip


def _expected_bars(frame: pd.DataFrame, family: str, x: str, unit: float) -> dict[float, tuple[float, float]]:
    """The CI of every configuration of `family` with n > 1, from `analysis.mean_ci`, in percent."""
    done = frame[(frame["status"] == "completed") & frame["model_name"].str.startswith(family)]
    out = {}
    for _, trials in done.groupby("model_name"):
        if trials["test_error"].notna().sum() > 1:
            _, low, high = analysis.mean_ci(trials["test_error"].to_numpy())
            out[round(float(trials[x].iloc[0]) * unit, 6)] = (round(100 * low, 6), round(100 * high, 6))
    return out


def _same_bars(drawn: dict[float, tuple[float, float]], expected: dict[float, tuple[float, float]]) -> bool:
    return drawn.keys() == expected.keys() and all(drawn[x] == pytest.approx(expected[x], abs=1e-6) for x in drawn)


def test_load_lists_the_search_dimensions(url: str) -> None:
    assert results.load(url, "fig4").attrs["dims"] == ["stages", "growth", "form"]
    assert results.load_epochs(url, "fig4").attrs["dims"] == ["stages", "growth", "form"]


def test_figure4_plots_test_error_means_over_seeds(tmp_path: Path) -> None:
    fig = plots.figure4(reported(), title="fig4")
    _png(fig, tmp_path / "fig4.png")
    by_params, by_flops = fig.axes[:2]
    assert by_params.get_xlabel() == "params (M)" and by_flops.get_xlabel() == "FLOPs (G)"
    assert by_params.get_ylabel() == "test error (%)"
    assert by_params.get_xscale() == "log" and by_params.get_yscale() == "linear"

    # ERKNet test errors averaged over seeds, joined in order of params
    assert _xy(_line(by_params, "series:ERKNet")) == [(0.74, 6.5), (0.83, 6.0), (0.91, 6.1), (0.99, 5.4)]
    assert _xy(_line(by_params, "series:DenseNet")) == [(0.8, 7.2)]  # its one seed
    # ERKNet 7x1 7x1 6x1 is worse and dearer than 7x1 6x1 6x1: hollow in its series
    assert _xy(_line(by_params, "dominated:ERKNet")) == [(0.91, 6.1)]
    assert _xy(_line(by_params, "dominated:IRKNet")) == [(1.0, 6.0)]
    assert _xy(_line(by_params, "dominated:DenseNet")) == []
    # the study's front over all families: IRKNet 3, IRKNet 4, ERKNet 7-7-7
    assert _xy(_line(by_params, "pareto")) == [(0.45, 6.9), (0.7, 5.8), (0.99, 5.4)]
    assert _xy(_line(by_flops, "pareto")) == [(0.4, 6.9), (0.65, 5.8), (0.88, 5.4)]
    assert _line(by_flops, "pareto").get_drawstyle() == "steps-post"

    names = set(reported().query("status == 'completed'")["model_name"])
    assert len(names) == 8  # the failed 8x1 and the pruned 2x1 are not drawn
    assert sorted(_texts(by_params)) == sorted(names) and sorted(_texts(by_flops)) == sorted(names)
    legend = [t.get_text() for t in by_flops.get_legend().get_texts()]
    assert legend == ["ERKNet", "IRKNet", "DenseNet", "Pareto front", "dominated within its series",
                      "95% CI over seeds (n > 1)"]  # fmt: skip
    assert fig.get_suptitle() == "fig4 (selected on validation)"


def test_figure4_error_bars_are_the_ci_of_configurations_with_several_seeds() -> None:
    frame = reported()
    fig = plots.figure4(frame)
    for ax, x, unit in zip(fig.axes[:2], ("params", "flops"), (1e-6, 1e-9)):
        for family, configurations in (("ERKNet", 4), ("IRKNet", 3)):
            bars = _bars(ax, f"ci:{family}")
            assert len(bars) == configurations  # every one of them has two seeds or more
            assert _same_bars(bars, _expected_bars(frame, family, x, unit))
        assert _bars(ax, "ci:DenseNet") == {}  # one seed: no bar, not a zero-width one
        containers = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
        assert len(containers) == 2 and all(c.has_yerr and not c.has_xerr for c in containers)
    # three seeds 5.3, 5.5, 5.4: 5.4 -/+ t(0.975, 2) * 0.1 / sqrt(3) = 5.4 -/+ 0.2484
    assert _bars(fig.axes[0], "ci:ERKNet")[0.99] == pytest.approx((5.1516, 5.6484), abs=1e-4)
    # two seeds 5.9, 5.7: 5.8 -/+ 12.706 * 0.1414 / sqrt(2) = 5.8 -/+ 1.2706
    assert _bars(fig.axes[0], "ci:IRKNet")[0.7] == pytest.approx((4.5294, 7.0706), abs=1e-4)

    single = reported()
    single = single[single["seed"] == 0]  # one seed everywhere: no bar at all, no CI legend entry
    fig = plots.figure4(single)
    assert not [c for ax in fig.axes for c in ax.collections if str(c.get_gid()).startswith("ci:")]
    assert not any(isinstance(c, ErrorbarContainer) for ax in fig.axes for c in ax.containers)
    assert "95% CI over seeds (n > 1)" not in [t.get_text() for t in fig.axes[1].get_legend().get_texts()]


def test_figure4_and_pareto_plot_say_on_which_split_models_were_selected() -> None:
    on_test = reported()
    on_test.loc[on_test.index[0], "validation"] = "test"  # one trial selected on test is enough
    for draw in (plots.figure4, plots.pareto_plot):
        texts = _strings(draw(on_test, title="fig4"))
        assert "fig4 (selected on test)" in texts
        assert not any("selected on validation" in t for t in texts)

        texts = _strings(draw(reported("holdout"), title="fig4"))
        assert "fig4 (selected on validation)" in texts
        assert not any("selected on test" in t for t in texts)

        texts = _strings(draw(reported("test")))
        assert "selected on test" in texts  # the note alone when there is no title

        texts = _strings(draw(reported(None), title="fig4"))  # a frame that does not record the split
        assert "fig4" in texts and not any("selected on" in t for t in texts)


def test_figure4_needs_the_metric_and_reads_other_metrics(url: str) -> None:
    stored = results.load(url, "fig4")  # store_frame writes no test numbers
    with pytest.raises(ValueError, match="best_val_error"):
        plots.figure4(stored)
    fig = plots.figure4(stored, error="best_val_error")  # the frame's errors: 6.2, 5.7, 5.8, 5.1
    assert fig.axes[0].get_ylabel() == "best validation error (%)"
    assert _xy(_line(fig.axes[0], "series:ERKNet")) == [(0.74, 6.2), (0.83, 5.7), (0.91, 5.8), (0.99, 5.1)]


def test_figure4_linear_axes_other_series_and_no_names() -> None:
    fig = plots.figure4(reported(), by="form", log=False, names=False)
    ax = fig.axes[0]
    assert ax.get_xscale() == "linear" and _texts(ax) == []
    gids = {line.get_gid() for line in ax.get_lines()}
    assert {"series:explicit", "series:clique", "series:none"} <= gids
    assert set(_bars(ax, "ci:explicit")) == {0.74, 0.83, 0.91, 0.99} and _bars(ax, "ci:none") == {}
    with pytest.raises(KeyError, match="neck"):
        plots.figure4(reported(), by="neck")


def test_figure4_draws_published_reference_points(tmp_path: Path) -> None:
    csv = tmp_path / "ref.csv"
    csv.write_text("family,name,params,flops,error\nDenseNet,DenseNet-BC (k=12),0.8,0.29,5.92\n"
                   "CliqueNet,CliqueNet (k=36),0.94,1.2,5.06\nDenseNet,DenseNet-BC (k=24),15.3,9.3,5.19\n")  # fmt: skip
    fig = plots.figure4(reported(), reference=plots.read_reference(csv))
    by_params, by_flops = fig.axes[:2]
    dense = _line(by_params, "reference:DenseNet")
    assert _xy(dense) == [(0.8, 5.92), (15.3, 5.19)]
    assert _xy(_line(by_flops, "reference:CliqueNet")) == [(1.2, 5.06)]
    assert dense.get_marker() == "*"
    assert dense.get_color() == _line(by_params, "series:DenseNet").get_color()  # one colour per family
    assert {"DenseNet-BC (k=12)", "CliqueNet (k=36)"} <= set(_texts(by_flops))
    assert "DenseNet (published)" in [t.get_text() for t in by_flops.get_legend().get_texts()]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("family,name,params,flops\nA,a,1,1\n", "lacks column"),
        ("family,name,params,flops,error\nA,a,800000,0.5,5\n", "not raw counts"),
        ("family,name,params,flops,error\nA,a,0.8,0.5,0.05x\n", "must all be numbers"),
        ("family,name,params,flops,error\nA,a,0.8,0.5,120\n", "percent"),
    ],
)
def test_reference_csv_is_checked(tmp_path: Path, text: str, message: str) -> None:
    csv = tmp_path / "ref.csv"
    csv.write_text(text)
    with pytest.raises(ValueError, match=message):
        plots.read_reference(csv)


# ------------------------------------------------------------------ curves and Pareto plot


def test_learning_curves_one_line_per_trial_coloured_by_dimension(url: str, tmp_path: Path) -> None:
    epochs = results.load_epochs(url, "fig4")
    fig = plots.curves(epochs, by="form")
    _png(fig, tmp_path / "curves.png")
    ax = fig.axes[0]
    lines = [line for line in ax.get_lines() if str(line.get_gid()).startswith("trial:")]
    assert len(lines) == epochs["trial_id"].nunique() == 16  # 15 completed + the pruned one
    frame = results.load(url, "fig4", status=None)
    first = frame[frame["model_name"] == "ERKNet-6x1 6x1 6x1"].iloc[0]
    line = _line(ax, f"trial:{first['trial_id']}")
    assert list(line.get_xdata()) == [1, 2, 3, 4]
    expected = [100 * (1 - epoch_acc(0.94, e, 4)) for e in (1, 2, 3, 4)]  # 6.0 % at the end
    assert np.allclose(line.get_ydata(), expected)
    colours = {}
    for line in lines:
        trial = frame[frame["trial_id"] == int(line.get_gid().split(":")[1])].iloc[0]
        colours.setdefault(str(trial["form"]), set()).add(line.get_color())
    assert all(len(c) == 1 for c in colours.values()) and len(set().union(*colours.values())) == 3
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == ["clique", "explicit", "none"]
    assert ax.get_ylabel() == "validation error (%)" and ax.get_xlabel() == "epoch"
    assert plots.curves(epochs, log=True).axes[0].get_yscale() == "log"


def test_pareto_plot_front_over_configuration_means_with_error_bars(tmp_path: Path) -> None:
    frame = reported()  # the pruned 0.25 G / 1 % trial must not count
    fig = plots.pareto_plot(frame)
    _png(fig, tmp_path / "pareto.png")
    ax = fig.axes[0]
    assert ax.get_ylabel() == "test error (%)" and ax.get_xlabel() == "FLOPs (G)"
    assert _xy(_line(ax, "pareto")) == [(0.4, 6.9), (0.65, 5.8), (0.88, 5.4)]
    assert _texts(ax) == ["IRKNet-3x1 3x1 3x1", "IRKNet-4x1 4x1 4x1", "ERKNet-7x1 7x1 7x1"]
    assert ax.get_xscale() == "log"
    erk = next(c for c in ax.collections if c.get_gid() == "series:ERKNet")
    assert len(erk.get_offsets()) == 4  # one point per configuration, not per seed
    assert sorted(map(tuple, np.round(erk.get_offsets(), 6).tolist())) == [
        (0.66, 6.5), (0.83, 6.0), (0.87, 6.1), (0.88, 5.4)]  # fmt: skip
    for family in ("ERKNet", "IRKNet"):
        assert _same_bars(_bars(ax, f"ci:{family}"), _expected_bars(frame, family, "flops", 1e-9))
    assert _bars(ax, "ci:DenseNet") == {}
    assert "95% CI over seeds (n > 1)" in [t.get_text() for t in ax.get_legend().get_texts()]

    accuracy = plots.pareto_plot(frame, x="params", y="test_acc", log=False).axes[0]
    assert _xy(_line(accuracy, "pareto")) == [(0.45, 93.1), (0.7, 94.2), (0.99, 94.6)]  # maximised
    assert accuracy.get_ylabel() == "test accuracy (%)" and accuracy.get_xscale() == "linear"
    assert _bars(accuracy, "ci:ERKNet")[0.99] == pytest.approx((100 - 5.6484, 100 - 5.1516), abs=1e-4)

    macs = plots.pareto_plot(frame, x="macs").axes[0]  # a cost `replicates` does not carry
    assert _xy(_line(macs, "pareto")) == [(0.2, 6.9), (0.325, 5.8), (0.44, 5.4)]
    assert macs.get_xlabel() == "MACs (G)"
    with pytest.raises(ValueError, match="pass dims="):
        plots.pareto_plot(pd.DataFrame(frame))
    assert isinstance(plots.pareto_plot(pd.DataFrame(frame), dims=FIGURE4_DIMS), Figure)


# ------------------------------------------------------------------ ablation chart


def test_ablation_chart_effects_intervals_and_missing_ci(tmp_path: Path) -> None:
    stats = analysis.ablation(ofat_frame())  # test accuracy, paired by seed
    fig = plots.ablation_chart(stats, title="ofat")
    _png(fig, tmp_path / "ablation.png")
    ax = fig.axes[0]
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert ticks == ["attention = True  (vs False)", "multiscale = False  (vs True)", "growth = 24  (vs 12)"]
    ys = dict(zip(ticks, ax.get_yticks()))
    assert _xy(_line(ax, "effect")) == [(2.0, ys["attention = True  (vs False)"])]  # +2 points on every seed
    assert _xy(_line(ax, "no-effect")) == [(0.0, ys["multiscale = False  (vs True)"])]
    assert _xy(_line(ax, "no-ci")) == [(3.0, ys["growth = 24  (vs 12)"])]  # one seed: no interval
    assert _texts(ax) == ["n<2: no CI"]
    (intervals,) = [c for c in ax.collections if c.get_gid() == "ci"]
    segments = {round(float(s[0, 1]), 6): (s[0, 0], s[1, 0]) for s in intervals.get_segments()}
    assert len(segments) == 2  # none for growth
    low, high = segments[round(float(ys["multiscale = False  (vs True)"]), 6)]
    assert low < 0 < high
    assert segments[round(float(ys["attention = True  (vs False)"]), 6)] == pytest.approx((2.0, 2.0))
    assert "95% paired t CI" in ax.get_xlabel()
    with pytest.raises(ValueError, match="besides the base"):
        plots.ablation_chart(stats[stats["is_base"]])


# ------------------------------------------------------------------ CLI


@pytest.mark.parametrize(
    ("argv", "suffix", "magic"),
    [
        (["figure4", "--study", "reported", "--linear"], ".png", b"\x89PNG"),
        (["figure4", "--study", "fig4", "--y", "best_val_error"], ".png", b"\x89PNG"),
        (["curves", "--study", "fig4", "--by", "stages"], ".svg", b"<?xml"),
        (["pareto", "--study", "reported", "--x", "params"], ".pdf", b"%PDF"),
        (["pareto", "--study", "reported", "--y", "test_acc", "--x", "macs"], ".png", b"\x89PNG"),
        (["ablation", "--study", "ofat"], ".png", b"\x89PNG"),
    ],
)
def test_cli_writes_each_plot(url: str, tmp_path: Path, argv: list[str], suffix: str, magic: bytes) -> None:
    out = tmp_path / "sub" / f"plot{suffix}"
    assert plot.main([*argv, "--storage", url, "-o", str(out)]) == 0
    assert out.read_bytes().startswith(magic)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["figure4", "--study", "nope", "-o", "x.png"], "no study named 'nope'"),
        (["figure4", "--study", "fig4", "-o", "x.jpg"], "must end in one of .png, .pdf, .svg"),
        (["curves", "--study", "fig4", "--by", "neck", "-o", "x.png"], "neck"),
        (["pareto", "--study", "fig4", "--reference", "r.csv", "-o", "x.png"], "only applies to figure4"),
        (["figure4", "--study", "fig4", "-o", "x.png"],  # no test numbers
         "validation metric 'best_val_error' instead (metric= in Python, --metric or --y"),
        (["pareto", "--study", "reported", "--y", "val_acc", "-o", "x.png"], "no 'val_acc' column"),
        (["figure4", "--study", "fig4", "--reference", "missing.csv", "-o", "x.png"], "missing.csv"),
    ],
)
def test_cli_errors_are_one_line_and_exit_2(url: str, tmp_path: Path, capsys, argv: list[str],
                                            message: str) -> None:  # fmt: skip
    argv = [a if not a.endswith((".png", ".jpg", ".csv")) else str(tmp_path / a) for a in argv]
    assert plot.main([*argv, "--storage", url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not list(tmp_path.glob("x.*"))


def test_cli_missing_database_and_no_ray_import(tmp_path: Path) -> None:
    code = (
        "import sys; from rksearch import plot; "
        f"rc = plot.main(['figure4', '--storage', 'sqlite:///{tmp_path}/none.db', '--study', 's', "
        f"'-o', '{tmp_path}/x.png']); "
        "assert 'ray' not in sys.modules, 'ray imported'; sys.exit(rc)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=60)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1


def test_cli_figure4_imports_neither_optuna_nor_ray(url: str, tmp_path: Path) -> None:
    """Only the Optuna kinds (importance, parallel, ...) import Optuna, through optuna_plots."""
    code = (
        "import sys; from rksearch import plot; "
        f"rc = plot.main(['figure4', '--storage', {url!r}, '--study', 'reported', '-o', '{tmp_path}/x.png']); "
        "print(sorted(m for m in ('ray', 'optuna', 'rksearch.analysis.optuna_plots') if m in sys.modules)); "
        "sys.exit(rc)"
    )
    done = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[]"


def test_cli_help_lists_every_kind_with_an_example(capsys) -> None:
    with pytest.raises(SystemExit):
        plot.main(["--help"], prog="rksearch plot")
    text = capsys.readouterr().out
    for kind in plot.KINDS:
        assert f"\n  {kind} " in text and f"rksearch plot {kind} --study " in text, kind


def test_cli_default_plots_are_test_error_means_selected_on_validation(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn: list[Figure] = []
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: drawn.append(self))
    assert plot.main(["figure4", "--study", "reported", "--storage", url, "-o", str(tmp_path / "f.png")]) == 0
    assert plot.main(["pareto", "--study", "reported", "--storage", url, "-o", str(tmp_path / "p.png")]) == 0
    figure4, pareto_plot = drawn
    assert figure4.get_suptitle() == "reported (selected on validation)"
    assert figure4.axes[0].get_ylabel() == "test error (%)"
    assert _xy(_line(figure4.axes[0], "pareto")) == [(0.45, 6.9), (0.7, 5.8), (0.99, 5.4)]
    assert _same_bars(_bars(figure4.axes[0], "ci:ERKNet"), _expected_bars(reported(), "ERKNet", "params", 1e-6))
    assert pareto_plot.axes[0].get_title() == "reported (selected on validation)"
    assert _xy(_line(pareto_plot.axes[0], "pareto")) == [(0.4, 6.9), (0.65, 5.8), (0.88, 5.4)]


def test_figure4_needs_completed_trials() -> None:
    df = reported()
    with pytest.raises(ValueError, match="no completed trial"):
        plots.figure4(df[df["status"] != "completed"])
    bare = pd.DataFrame(df)  # a hand-built frame: no attrs, so the dimensions must be named
    with pytest.raises(ValueError, match="pass dims="):
        plots.figure4(bare)
    assert isinstance(plots.figure4(bare, dims=FIGURE4_DIMS), Figure)


# ------------------------------------------------------------------ analysis/ scripts


def _script(name: str, argv: list[str]) -> int:
    """Run analysis/<name>.py's main in-process (its one-command entry point)."""
    namespace = runpy.run_path(str(ROOT / "analysis" / f"{name}.py"))
    return namespace["main"](argv)


def test_analysis_scripts_regenerate_figure_table_and_ablation(url: str, tmp_path: Path, capsys) -> None:
    assert _script("figure4", ["--storage", url, "--study", "reported", "-o", str(tmp_path / "img" / "f4.png")]) == 0
    assert (tmp_path / "img" / "f4.png").read_bytes()[:4] == b"\x89PNG"
    out = capsys.readouterr().out
    assert "Pareto front by FLOPs (test error over seeds, selected on validation)" in out
    front = [[c.strip() for c in line.split("|")[1:-1]]
             for line in out.splitlines() if line.startswith("| ") and "Net" in line]  # fmt: skip
    assert [row[1] for row in front] == ["IRKNet-3x1 3x1 3x1", "IRKNet-4x1 4x1 4x1", "ERKNet-7x1 7x1 7x1"]
    assert front[2][4] == "5.40 ± 0.25 (3)"  # three seeds: mean ± t half-width (n)
    assert _script("figure4", ["--storage", url, "--study", "fig4", "--metric", "best_val_error",
                               "-o", str(tmp_path / "v.png")]) == 0  # fmt: skip
    assert "(best_val_error over seeds, selection not recorded)" in capsys.readouterr().out

    tex = tmp_path / "t1.tex"
    assert _script("table1", ["--storage", url, "--study", "reported", "-o", str(tex)]) == 0
    assert "\\multicolumn{4}{c}{ERKNet} & \\multicolumn{4}{c}{IRKNet} & \\multicolumn{4}{c}{DenseNet}" in tex.read_text()
    capsys.readouterr()
    assert _script("table1", ["--storage", url, "--study", "reported"]) == 0
    assert "| ERKNet-7x1 7x1 7x1 | 0.88 | 0.99 | 5.40 ± 0.25 (3) |" in capsys.readouterr().out
    assert _script("table1", ["--storage", url, "--study", "reported", "-o", str(tmp_path / "t.xls")]) == 2
    assert "must end in one of .md, .tex, .csv" in capsys.readouterr().err

    assert _script("ablation", ["--storage", url, "--study", "ofat"]) == 0
    # +2 points on each of 3 seeds: a zero-width paired t interval
    assert "| attention | True | 3 | 83.00 | [75.55, 90.45] | +2.00 | [2.00, 2.00] |" in capsys.readouterr().out
