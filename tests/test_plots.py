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
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from studyframes import FIGURE4_DIMS, epoch_acc, figure4_frame, ofat_frame, store_frame

from rksearch import analysis, plot, plots, results

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite file with the Figure-4 study ('fig4') and the one-factor-at-a-time study."""
    url = f"sqlite:///{tmp_path_factory.mktemp('plots') / 'study.db'}"
    store_frame(url, "fig4", figure4_frame())
    store_frame(url, "ofat", ofat_frame())
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


def test_load_lists_the_search_dimensions(url: str) -> None:
    assert results.load(url, "fig4").attrs["dims"] == ["stages", "growth", "form"]
    assert results.load_epochs(url, "fig4").attrs["dims"] == ["stages", "growth", "form"]


def test_figure4_series_fronts_and_labels(url: str, tmp_path: Path) -> None:
    fig = plots.figure4(results.load(url, "fig4"), title="fig4")
    _png(fig, tmp_path / "fig4.png")
    by_params, by_flops = fig.axes[:2]
    assert by_params.get_xlabel() == "params (M)" and by_flops.get_xlabel() == "FLOPs (G)"
    assert by_params.get_ylabel() == "validation error (%)"
    assert by_params.get_xscale() == "log" and by_params.get_yscale() == "linear"

    # ERKNet seeds averaged (6.2, 5.7, 5.8, 5.1 %), joined in order of params
    assert _xy(_line(by_params, "series:ERKNet")) == [(0.74, 6.2), (0.83, 5.7), (0.91, 5.8), (0.99, 5.1)]
    assert _xy(_line(by_params, "series:DenseNet")) == [(0.8, 6.9)]  # its one seed
    # ERKNet 7x1 7x1 6x1 is worse and dearer than 7x1 6x1 6x1: hollow in its series
    assert _xy(_line(by_params, "dominated:ERKNet")) == [(0.91, 5.8)]
    assert _xy(_line(by_params, "dominated:IRKNet")) == [(1.0, 5.7)]
    assert _xy(_line(by_params, "dominated:DenseNet")) == []
    # the study's front over all families: IRKNet 3, IRKNet 4, ERKNet 7-7-7
    assert _xy(_line(by_params, "pareto")) == [(0.45, 6.6), (0.7, 5.5), (0.99, 5.1)]
    assert _xy(_line(by_flops, "pareto")) == [(0.4, 6.6), (0.65, 5.5), (0.88, 5.1)]
    assert _line(by_flops, "pareto").get_drawstyle() == "steps-post"

    names = set(results.load(url, "fig4")["model_name"])
    assert len(names) == 8  # the failed 8x1 and the pruned 2x1 are not drawn
    assert sorted(_texts(by_params)) == sorted(names) and sorted(_texts(by_flops)) == sorted(names)
    legend = [t.get_text() for t in by_flops.get_legend().get_texts()]
    assert legend == ["ERKNet", "IRKNet", "DenseNet", "Pareto front", "dominated within its series"]
    assert fig.get_suptitle() == "fig4"


def test_figure4_linear_axes_other_series_and_no_names(url: str) -> None:
    fig = plots.figure4(results.load(url, "fig4"), by="form", log=False, names=False)
    ax = fig.axes[0]
    assert ax.get_xscale() == "linear" and _texts(ax) == []
    gids = {line.get_gid() for line in ax.get_lines()}
    assert {"series:explicit", "series:clique", "series:none"} <= gids
    with pytest.raises(KeyError, match="neck"):
        plots.figure4(results.load(url, "fig4"), by="neck")


def test_figure4_draws_published_reference_points(url: str, tmp_path: Path) -> None:
    csv = tmp_path / "ref.csv"
    csv.write_text("family,name,params,flops,error\nDenseNet,DenseNet-BC (k=12),0.8,0.29,5.92\n"
                   "CliqueNet,CliqueNet (k=36),0.94,1.2,5.06\nDenseNet,DenseNet-BC (k=24),15.3,9.3,5.19\n")  # fmt: skip
    fig = plots.figure4(results.load(url, "fig4"), reference=plots.read_reference(csv))
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


def test_pareto_plot_front_over_trials_not_seed_means(url: str, tmp_path: Path) -> None:
    everything = results.load(url, "fig4", status=None)  # the pruned 0.25 G / 1 % trial must not count
    fig = plots.pareto_plot(everything)
    _png(fig, tmp_path / "pareto.png")
    ax = fig.axes[0]
    assert _xy(_line(ax, "pareto")) == [(0.4, 6.5), (0.65, 5.4), (0.88, 5.0)]
    assert _texts(ax) == ["IRKNet-3x1 3x1 3x1", "IRKNet-4x1 4x1 4x1", "ERKNet-7x1 7x1 7x1"]
    assert ax.get_xscale() == "log"
    erk = next(c for c in ax.collections if c.get_gid() == "series:ERKNet")
    assert len(erk.get_offsets()) == 8  # every completed ERKNet trial, both seeds

    accuracy = plots.pareto_plot(everything, x="params", y="val_acc", log=False).axes[0]
    assert _xy(_line(accuracy, "pareto")) == [(0.45, 93.5), (0.7, 94.6), (0.99, 95.0)]  # maximised
    assert accuracy.get_ylabel() == "validation accuracy (%)" and accuracy.get_xscale() == "linear"


# ------------------------------------------------------------------ ablation chart


def test_ablation_chart_effects_intervals_and_missing_ci(url: str, tmp_path: Path) -> None:
    stats = analysis.ablation(results.load(url, "ofat"), n_boot=1000)
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
    assert "95% bootstrap CI" in ax.get_xlabel()
    with pytest.raises(ValueError, match="besides the base"):
        plots.ablation_chart(stats[stats["is_base"]])


# ------------------------------------------------------------------ CLI


@pytest.mark.parametrize(
    ("argv", "suffix", "magic"),
    [
        (["figure4", "--study", "fig4", "--linear"], ".png", b"\x89PNG"),
        (["curves", "--study", "fig4", "--by", "stages"], ".svg", b"<?xml"),
        (["pareto", "--study", "fig4", "--x", "params"], ".pdf", b"%PDF"),
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


def test_figure4_needs_completed_trials() -> None:
    df = figure4_frame()
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
    assert _script("figure4", ["--storage", url, "--study", "fig4", "-o", str(tmp_path / "img" / "f4.png")]) == 0
    assert (tmp_path / "img" / "f4.png").read_bytes()[:4] == b"\x89PNG"
    out = capsys.readouterr().out
    front = [line.split("|")[2].strip() for line in out.splitlines() if line.startswith("| ") and "Net" in line]
    assert front == ["IRKNet-3x1 3x1 3x1", "IRKNet-4x1 4x1 4x1", "ERKNet-7x1 7x1 7x1"]

    tex = tmp_path / "t1.tex"
    assert _script("table1", ["--storage", url, "--study", "fig4", "-o", str(tex)]) == 0
    assert "\\multicolumn{4}{c}{ERKNet} & \\multicolumn{4}{c}{IRKNet} & \\multicolumn{4}{c}{DenseNet}" in tex.read_text()
    capsys.readouterr()
    assert _script("table1", ["--storage", url, "--study", "fig4"]) == 0
    assert "| ERKNet-7x1 7x1 7x1 | 0.88 | 0.99 | 5.10 ± 0.14 |" in capsys.readouterr().out
    assert _script("table1", ["--storage", url, "--study", "fig4", "-o", str(tmp_path / "t.xls")]) == 2
    assert "must end in one of .md, .tex, .csv" in capsys.readouterr().err

    assert _script("ablation", ["--storage", url, "--study", "ofat"]) == 0
    # 3 seeds: each all-equal resample has chance 1/27 > 2.5%, so the 95% bounds are min and max
    assert "| attention | True | 3 | 83.00 | [80.00, 86.00] | +2.00 | [2.00, 2.00] | yes |" in capsys.readouterr().out
