"""Tables and ablation statistics: exact text for tiny frames, statistics with known answers."""

from __future__ import annotations

import io
import logging
import math

import numpy as np
import pandas as pd
import pytest
from studyframes import (
    GRID_SEED_EFFECT,
    OFAT_BASE,
    OFAT_EFFECTS,
    figure4_frame,
    grid_frame,
    ofat_frame,
    trial_row,
)

from rksearch.analysis import (
    ablation,
    families,
    family,
    ablation_markdown,
    amount_text,
    bootstrap_ci,
    dimension_columns,
    paper_table,
    replicates,
    table_csv,
    table_latex,
    table_markdown,
)

# ------------------------------------------------------------------ bootstrap


def test_bootstrap_of_constant_data_has_zero_width() -> None:
    mean, low, high = bootstrap_ci([0.83] * 7)
    assert mean == pytest.approx(0.83)
    assert high - low == 0.0
    assert low == pytest.approx(0.83)


def test_bootstrap_of_a_large_normal_sample_matches_the_normal_interval() -> None:
    rng = np.random.default_rng(123)
    mu, sigma, n = 5.0, 2.0, 400
    sample = rng.normal(mu, sigma, n)
    mean, low, high = bootstrap_ci(sample, n_boot=4000, seed=1)
    assert mean == pytest.approx(sample.mean())
    assert low < mu < high
    assert low < mean < high
    expected_width = 2 * 1.96 * sigma / math.sqrt(n)  # 0.392
    assert high - low == pytest.approx(expected_width, rel=0.12)


def test_bootstrap_interval_covers_the_true_mean_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(7)
    hits = 0
    reps = 200
    for rep in range(reps):
        _, low, high = bootstrap_ci(rng.normal(0.0, 1.0, 40), n_boot=1000, seed=rep)
        hits += low < 0.0 < high
    assert 0.88 <= hits / reps <= 0.99


def test_bootstrap_is_seeded_and_honest_about_one_value() -> None:
    data = np.random.default_rng(0).uniform(size=10)  # continuous: quantiles move with the draws
    assert bootstrap_ci(data, seed=3) == bootstrap_ci(data, seed=3)
    assert bootstrap_ci(data, seed=3) != bootstrap_ci(data, seed=4)
    mean, low, high = bootstrap_ci([0.7])
    assert mean == 0.7 and math.isnan(low) and math.isnan(high)
    assert all(math.isnan(v) for v in bootstrap_ci([]))
    a = bootstrap_ci([0.1, 0.2, 0.3], confidence=0.5)
    b = bootstrap_ci([0.1, 0.2, 0.3], confidence=0.99)
    assert b[1] <= a[1] and a[2] <= b[2]  # a wider confidence gives a wider interval


# ------------------------------------------------------------------ ablation: one factor at a time


def test_ofat_ablation_levels_pairs_and_flags() -> None:
    stats = ablation(ofat_frame(), n_boot=2000).set_index(["factor", "level"])
    assert set(stats["design"]) == {"ofat"}
    assert set(stats.index.get_level_values("factor")) == {"attention", "multiscale", "growth"}
    # the base is inferred: the most common level of each factor
    assert stats.loc[("attention", False), "is_base"]
    assert stats.loc[("multiscale", True), "is_base"]
    assert stats.loc[("growth", 12), "is_base"]
    assert stats.loc[("attention", True), "base_level"] == False  # noqa: E712

    base = stats.loc[("attention", False)]
    assert base["seeds"] == 3
    assert base["mean"] == pytest.approx(np.mean(list(OFAT_BASE.values())))
    assert min(OFAT_BASE.values()) - 1e-12 <= base["ci_low"] < base["ci_high"] <= max(OFAT_BASE.values()) + 1e-12

    # +0.02 on every seed: the level means' CIs overlap, the paired difference does not cover 0
    attention = stats.loc[("attention", True)]
    assert attention["pairs"] == 3
    assert attention["diff"] == pytest.approx(0.02)
    assert attention["diff_low"] == pytest.approx(0.02) and attention["diff_high"] == pytest.approx(0.02)
    assert attention["excludes_zero"] == True  # noqa: E712 (pandas boolean)
    assert attention["ci_low"] < base["ci_high"]

    multiscale = stats.loc[("multiscale", False)]
    assert multiscale["diff"] == pytest.approx(np.mean(list(OFAT_EFFECTS[("multiscale", False)].values())))
    assert multiscale["diff_low"] < 0 < multiscale["diff_high"]
    assert multiscale["excludes_zero"] == False  # noqa: E712

    growth = stats.loc[("growth", 24)]
    assert growth["seeds"] == 1 and growth["pairs"] == 1
    assert growth["diff"] == pytest.approx(0.03)
    assert math.isnan(growth["ci_low"]) and math.isnan(growth["diff_low"])
    assert pd.isna(growth["excludes_zero"])
    assert "fewer than 2 seeds" in growth["note"]
    assert stats.loc[("attention", True), "note"] == ""


def test_ablation_warns_and_markdown_spells_out_missing_intervals(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="rksearch.analysis"):
        stats = ablation(ofat_frame(), n_boot=500)
    assert any("growth=24" in r.getMessage() and "fewer than 2 seeds" in r.getMessage() for r in caplog.records)
    text = ablation_markdown(stats)
    growth_line = next(line for line in text.splitlines() if line.startswith("| growth | 24 "))
    assert "1 ⚠" in growth_line and "n<2: none" in growth_line and "+3.00" in growth_line
    attention_line = next(line for line in text.splitlines() if line.startswith("| attention | True "))
    assert "| +2.00 | [2.00, 2.00] | yes |" in attention_line
    assert "| attention | False (base) | 3 | 81.00 |" in text
    assert "fewer than 2 seeds" in text.splitlines()[-1]


def test_ablation_with_explicit_base_and_bad_base() -> None:
    stats = ablation(ofat_frame(), factors=["attention"], base={"attention": True}, n_boot=500)
    flipped = stats.set_index("level").loc[False]
    # with attention=True as base, the multiscale/growth rows still sit at their mode -> ofat
    assert flipped["diff"] == pytest.approx(-0.02)
    with pytest.raises(ValueError, match="base level 'yes'"):
        ablation(ofat_frame(), base={"attention": "yes"})
    with pytest.raises(KeyError, match="nope"):
        ablation(ofat_frame(), factors=["nope"])


def test_ablation_ignores_unfinished_trials() -> None:
    df = ofat_frame()
    extra = trial_row(99, "RKCNN-E-3_3_3", None, "explicit", 1, 1, 0, 90.0, status="pruned")
    extra.update({"attention": True, "multiscale": True, "growth": 12, "val_acc": 0.10})
    both = pd.concat([df, pd.DataFrame([extra])])
    stats = ablation(both, n_boot=500, dims=df.attrs["dims"]).set_index(["factor", "level"])
    assert stats.loc[("attention", True), "diff"] == pytest.approx(0.02)


# ------------------------------------------------------------------ ablation: grid main effects


def test_grid_main_effects_are_marginal_and_paired() -> None:
    df = grid_frame()
    stats = ablation(df, base={"depth": "shallow", "lr": 0.1}, n_boot=1000).set_index(["factor", "level"])
    assert set(stats["design"]) == {"grid"}
    deep = stats.loc[("depth", "deep")]
    assert deep["diff"] == pytest.approx(0.05) and deep["excludes_zero"] == True  # noqa: E712
    assert deep["diff_high"] - deep["diff_low"] == pytest.approx(0.0, abs=1e-12)
    assert stats.loc[("lr", 0.05), "diff"] == pytest.approx(0.01)
    # marginal mean of 'shallow' averages over both lr values and the seeds
    seed_mean = np.mean(list(GRID_SEED_EFFECT.values()))
    assert stats.loc[("depth", "shallow"), "mean"] == pytest.approx(0.7 + 0.005 + seed_mean)
    assert stats.loc[("depth", "shallow"), "seeds"] == 3


def test_grid_default_base_is_the_first_sorted_level() -> None:
    stats = ablation(grid_frame(), n_boot=500).set_index(["factor", "level"])
    assert stats.loc[("depth", "deep"), "is_base"]  # 'deep' < 'shallow'
    assert stats.loc[("depth", "shallow"), "diff"] == pytest.approx(-0.05)
    assert stats.loc[("lr", 0.1), "diff"] == pytest.approx(-0.01)


def test_grid_pairs_only_cells_present_at_both_levels() -> None:
    df = grid_frame()
    # drop (deep, lr=0.05, seed 1): its seed-1 difference must come from the lr=0.1 cell alone
    drop = (df["depth"] == "deep") & (df["lr"] == 0.05) & (df["seed"] == 1)
    stats = ablation(df[~drop], base={"depth": "shallow", "lr": 0.1}, n_boot=500)
    deep = stats.set_index(["factor", "level"]).loc[("depth", "deep")]
    assert deep["diff"] == pytest.approx(0.05)


# ------------------------------------------------------------------ replicates and tables


def test_family_from_model_name() -> None:
    cases = {
        "ERKNet-7x1 7x1 7x1": "ERKNet", "IRKNet-3x1 3x1 3x1-AB": "IRKNet", "RKCNN-E-3_3_3": "RKCNN-E",
        "RKCNN-I-2_2": "RKCNN-I", "RKCNN-R-4_4_4 (k=12)": "RKCNN-R", "DenseNet-BC-100": "DenseNet",
        "DenseNet-121": "DenseNet", "CliqueNet-T12-ABC": "CliqueNet", "PreActResNet-56": "PreActResNet",
        "LM-ResNet-56": "LM-ResNet", "ERKNet": "ERKNet", "VGG-16": "VGG", "ERKNetX-1": "ERKNetX",
    }  # fmt: skip
    assert {name: family(name) for name in cases} == cases
    assert families(figure4_frame()).value_counts().to_dict() == {"ERKNet": 9, "IRKNet": 7, "DenseNet": 1}


def test_dimensions_come_from_attrs_or_an_explicit_list() -> None:
    df = figure4_frame()
    assert dimension_columns(df) == ["stages", "growth", "form"]
    assert dimension_columns(df, dims=["growth"]) == ["growth"]
    bare = pd.DataFrame(df)  # a copy without attrs, as a hand-built frame would be
    bare.attrs = {}
    with pytest.raises(ValueError, match="pass dims="):
        dimension_columns(bare)
    with pytest.raises(KeyError, match="neck"):
        dimension_columns(df, dims=["neck"])
    # only the listed dimensions tell configurations apart: 'device' is not one
    bare["device"] = [f"cuda:{i}" for i in range(len(bare))]
    assert len(replicates(bare, dims=["stages", "growth", "form"])) == 8


def test_replicates_average_seeds_of_completed_trials() -> None:
    df = figure4_frame()
    reps = replicates(df).set_index("model_name")
    assert "ERKNet-8x1 8x1 8x1" not in reps.index  # failed
    assert "IRKNet-2x1 2x1 2x1" not in reps.index  # pruned
    assert reps.loc["ERKNet-6x1 6x1 6x1", "family"] == "ERKNet"
    assert reps.loc["ERKNet-6x1 6x1 6x1", "error"] == pytest.approx(0.062)
    assert reps.loc["ERKNet-6x1 6x1 6x1", "error_sd"] == pytest.approx(math.sqrt(0.08) / 100)
    assert reps.loc["ERKNet-6x1 6x1 6x1", "seeds"] == 2
    assert reps.loc["DenseNet-BC-100", "seeds"] == 1 and math.isnan(reps.loc["DenseNet-BC-100", "error_sd"])
    assert reps.loc["ERKNet-6x1 6x1 6x1", "stages"] == (6, 6, 6)
    assert len(reps) == 8


def _tiny(errors: dict[str, list[float]]) -> pd.DataFrame:
    models = {  # listed largest first: the table must sort by FLOPs itself
        "ERKNet-7x1 7x1 7x1": ("explicit", 990_000, 880_000_000),
        "ERKNet-6x1 6x1 6x1": ("explicit", 740_000, 660_000_000),
        "IRKNet-3x1 3x1 3x1": ("clique", 450_000, 400_000_000),
    }
    rows = []
    for name, (form, params, flops) in models.items():
        for seed, error in enumerate(errors[name]):
            rows.append(trial_row(len(rows), name, None, form, params, flops, seed, error))
    frame = pd.DataFrame(rows)
    frame.attrs["dims"] = ["form"]
    return frame


TINY = {"ERKNet-7x1 7x1 7x1": [4.87], "ERKNet-6x1 6x1 6x1": [5.12], "IRKNet-3x1 3x1 3x1": [5.43]}


def test_table_markdown_exact() -> None:
    text = table_markdown(paper_table(_tiny(TINY)))
    assert text == (
        "| ERKNet | GFLOPs | params (M) | error (%) | IRKNet | GFLOPs | params (M) | error (%) |\n"
        "|---|---:|---:|---:|---|---:|---:|---:|\n"
        "| ERKNet-6x1 6x1 6x1 | 0.66 | 0.74 | 5.12 | IRKNet-3x1 3x1 3x1 | 0.40 | 0.45 | 5.43 |\n"
        "| ERKNet-7x1 7x1 7x1 | 0.88 | 0.99 | 4.87 |  |  |  |  |\n"
    )


def test_table_latex_exact() -> None:
    text = table_latex(paper_table(_tiny(TINY)))
    assert text == (
        "\\begin{tabular}{lrrrlrrr}\n"
        "\\toprule\n"
        "\\multicolumn{4}{c}{ERKNet} & \\multicolumn{4}{c}{IRKNet} \\\\\n"
        "\\cmidrule(lr){1-4} \\cmidrule(lr){5-8}\n"
        "Model & GFLOPs & Params (M) & Error (\\%) & Model & GFLOPs & Params (M) & Error (\\%) \\\\\n"
        "\\midrule\n"
        "ERKNet-6x1 6x1 6x1 & 0.66 & 0.74 & 5.12 & IRKNet-3x1 3x1 3x1 & 0.40 & 0.45 & 5.43 \\\\\n"
        "ERKNet-7x1 7x1 7x1 & 0.88 & 0.99 & 4.87 &  &  &  &  \\\\\n"
        "\\bottomrule\n"
        "\\end{tabular}\n"
    )


def test_table_with_seeds_shows_mean_and_sd() -> None:
    errors = dict(TINY, **{"IRKNet-3x1 3x1 3x1": [5.4, 5.6]})
    table = paper_table(_tiny(errors))
    md = table_markdown(table)
    assert md.splitlines()[0].endswith("| IRKNet | GFLOPs | params (M) | error (%, mean ± s.d.) |")
    assert "| IRKNet-3x1 3x1 3x1 | 0.40 | 0.45 | 5.50 ± 0.14 |" in md
    assert "| ERKNet-6x1 6x1 6x1 | 0.66 | 0.74 | 5.12 (1 seed) |" in md
    assert "$5.50 \\pm 0.14$" in table_latex(table)


def test_table_tells_apart_rows_of_one_model_name_by_the_dimensions_that_differ() -> None:
    """A name carries no growth rate: a study over k lists each name once per k."""
    rows = []
    for growth, flops in ((4, 650_000), (8, 2_200_000)):
        for name, form in (("ERKNet-1x1 1x1 1x1", "explicit"), ("IRKNet-2x1 2x1 2x1", "clique")):
            row = trial_row(len(rows), name, (1, 1, 1), form, flops // 1000 + 100, flops, 0, 10.0 + growth)
            rows.append(row | {"growth": growth, "canonical": f"{name} (k={growth})"})
    rows.append(trial_row(len(rows), "ERKNet-3x1 3x1 3x1", (3, 3, 3), "explicit", 3_000, 2_600_000, 0, 9.7)
                | {"growth": 4, "canonical": "ERKNet-3x1 3x1 3x1 (k=4)"})
    frame = pd.DataFrame(rows)
    frame.attrs["dims"] = ["form", "stages", "growth"]
    md = table_markdown(paper_table(frame))
    assert "| ERKNet-1x1 1x1 1x1 (growth=4) | 0.00065 | 0.00075 | 14.00 |" in md
    assert "| ERKNet-1x1 1x1 1x1 (growth=8) | 0.0022 | 0.0023 | 18.00 |" in md
    assert "| ERKNet-3x1 3x1 3x1 | 0.0026 | 0.0030 | 9.70 |" in md  # unique: no suffix
    assert "IRKNet-2x1 2x1 2x1 (growth=8)" in md


def test_table_warns_when_rows_differ_only_in_fixed_knobs(caplog: pytest.LogCaptureFixture) -> None:
    df = _tiny(TINY)
    twin = df[df["model_name"] == "IRKNet-3x1 3x1 3x1"].assign(canonical="IRKNet-3x1 3x1 3x1 (k=36, m=2)",
                                                                trial_key="twin", val_error=0.06)
    both = pd.concat([df, twin])
    both.attrs = df.attrs
    with caplog.at_level(logging.WARNING, logger="rksearch.analysis"):
        table = paper_table(both)
    assert list(table[("IRKNet", "model")].dropna()) == ["IRKNet-3x1 3x1 3x1"] * 2
    assert any("group IRKNet" in r.getMessage() and "fixed knobs" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("value", "text"), [(0.66, "0.66"), (12.345, "12.35"), (0.019, "0.019"),
                                             (0.00065, "0.00065"), (0.0, "0.00"), (-0.004, "-0.0040"),
                                             (0.0996, "0.10"), (0.00999, "0.010"), (None, "-"),
                                             (float("nan"), "-")])
def test_small_amounts_keep_two_significant_digits(value: float | None, text: str) -> None:
    assert amount_text(value, 2) == text


def test_table_by_form_escapes_latex_and_round_trips_csv() -> None:
    df = _tiny(TINY)
    df.loc[df["form"] == "explicit", "model_name"] = "RKCNN-E-5_5_5"
    df = df[df["canonical"] != "ERKNet-7x1 7x1 7x1 (k=36)"]
    table = paper_table(df, by="form")
    assert list(dict.fromkeys(table.columns.get_level_values(0))) == ["clique", "explicit"]
    assert "RKCNN-E-5\\_5\\_5 & 0.66" in table_latex(table)
    back = pd.read_csv(io.StringIO(table_csv(table)))
    assert list(back.columns[:4]) == ["clique model", "clique GFLOPs", "clique params (M)", "clique error (%)"]
    assert back.loc[0, "explicit GFLOPs"] == pytest.approx(0.66)
    assert back.loc[0, "explicit params (M)"] == pytest.approx(0.74)
    assert back.loc[0, "clique seeds"] == 1
    with pytest.raises(KeyError, match="no such column"):
        paper_table(df, by="neck")
