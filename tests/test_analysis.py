"""Tables and ablation statistics: exact text for tiny frames, statistics with known answers."""

from __future__ import annotations

import io
import logging
import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from studyframes import (
    GRID_SEED_EFFECT,
    OFAT_BASE,
    OFAT_EFFECTS,
    figure4_frame,
    grid_frame,
    ofat_frame,
    set_acc,
    store_frame,
    trial_row,
)

from rksearch import results
from rksearch.analysis import (
    BOOTSTRAP_MIN_N,
    RESAMPLING_SEED,
    Paired,
    ablation,
    ablation_markdown,
    amount_text,
    dimension_columns,
    families,
    family,
    holm,
    mean_ci,
    paired,
    paper_table,
    replicates,
    table_csv,
    table_latex,
    table_markdown,
)

T_975 = {1: 12.706204736174707, 2: 4.302652729911275, 3: 3.182446305284263}  # scipy.stats.t.ppf(0.975, df)

# ------------------------------------------------------------------ mean_ci


def test_mean_ci_of_three_seeds_is_the_student_t_interval() -> None:
    mean, low, high = mean_ci([0.93, 0.94, 0.95])
    assert (round(mean, 4), round(low, 4), round(high, 4)) == (0.94, 0.9152, 0.9648)
    half = T_975[2] * 0.01 / math.sqrt(3)  # s = 0.01
    assert low == pytest.approx(0.94 - half, abs=1e-12) and high == pytest.approx(0.94 + half, abs=1e-12)
    # wider than the sample's range: three seeds cannot pin the mean down to min..max
    assert low < 0.93 and high > 0.95


def test_mean_ci_never_invents_an_interval() -> None:
    mean, low, high = mean_ci([0.7])
    assert mean == 0.7 and math.isnan(low) and math.isnan(high)
    assert all(math.isnan(v) for v in mean_ci([]))
    assert all(math.isnan(v) for v in mean_ci([math.nan, math.nan]))
    assert mean_ci([0.93, math.nan, 0.94, 0.95]) == mean_ci([0.93, 0.94, 0.95])  # NaNs dropped
    assert mean_ci([0.83] * 3) == (pytest.approx(0.83), pytest.approx(0.83), pytest.approx(0.83))


def test_mean_ci_level_and_the_bootstrap_line() -> None:
    narrow, wide = mean_ci([0.1, 0.2, 0.3], level=0.5), mean_ci([0.1, 0.2, 0.3], level=0.99)
    assert wide[1] < narrow[1] and narrow[2] < wide[2]
    below = np.random.default_rng(5).normal(size=BOOTSTRAP_MIN_N - 1)
    half = scipy.stats.t.ppf(0.975, below.size - 1) * below.std(ddof=1) / math.sqrt(below.size)
    assert mean_ci(below)[1:] == pytest.approx((below.mean() - half, below.mean() + half))


@pytest.mark.parametrize("n", [BOOTSTRAP_MIN_N, 200])
def test_mean_ci_at_large_n_is_scipys_seeded_bca_bootstrap(n: int) -> None:
    sample = np.random.default_rng(n).exponential(size=n)
    expected = scipy.stats.bootstrap(
        (sample,), np.mean, method="BCa", confidence_level=0.9, random_state=np.random.default_rng(RESAMPLING_SEED)
    ).confidence_interval
    mean, low, high = mean_ci(sample, level=0.9)
    assert mean == pytest.approx(sample.mean())
    assert (low, high) == pytest.approx((expected.low, expected.high), rel=1e-12)
    assert mean_ci(sample, level=0.9) == (mean, low, high)  # seeded: reproducible
    assert mean_ci([2.5] * n) == (2.5, 2.5, 2.5)  # constant data: no BCa (undefined), zero width


def test_mean_ci_covers_the_true_mean_about_as_often_as_it_claims_at_three_seeds() -> None:
    rng = np.random.default_rng(7)
    reps = 2000
    hits = sum(low < 0.0 < high for _, low, high in (mean_ci(rng.normal(0.0, 1.0, 3)) for _ in range(reps)))
    assert 0.93 <= hits / reps <= 0.97  # a percentile bootstrap covers ~75% here


# ------------------------------------------------------------------ paired comparisons and Holm


def test_paired_statistics_of_a_constructed_case() -> None:
    base = np.array([0.80, 0.83, 0.78, 0.81])
    diffs = np.array([0.01, 0.02, 0.03, 0.04])
    result = paired(base + diffs, base)
    assert isinstance(result, Paired) and result.n == 4
    assert result.diff == pytest.approx(0.025)
    sd = math.sqrt(0.0005 / 3)  # deviations -1.5, -0.5, 0.5, 1.5 hundredths
    half = T_975[3] * sd / 2
    assert (result.low, result.high) == pytest.approx((0.025 - half, 0.025 + half))
    assert result.low == pytest.approx(0.004457, abs=1e-6)
    # exact sign flips: only all-plus and all-minus reach |mean| >= 0.025 -> 2 of 16
    assert result.p_value == 0.125
    assert result.effect_size == pytest.approx(math.sqrt(15) / 2)  # d_z = 0.025 / sd
    assert result.verdict == "higher"  # the t interval excludes 0 (the permutation p is 0.125)
    assert paired(base, base + diffs).verdict == "lower"
    assert paired(base, base + diffs).effect_size == pytest.approx(-math.sqrt(15) / 2)


def test_paired_interval_crossing_zero_is_inconclusive() -> None:
    result = paired([0.01, -0.02, 0.03, -0.01], [0.0, 0.0, 0.0, 0.0])
    assert result.diff == pytest.approx(0.0025)
    assert result.low < 0 < result.high
    assert result.verdict == "inconclusive"
    # |±1 ±2 ±3 ±1| (hundredths) is odd, never 0: every sign vector reaches the observed 1
    assert result.p_value == 1.0


def test_paired_edge_cases() -> None:
    one = paired([0.9], [0.8])
    assert one.n == 1 and one.diff == pytest.approx(0.1) and one.verdict == "inconclusive"
    assert math.isnan(one.low) and math.isnan(one.high) and math.isnan(one.effect_size)
    assert one.p_value == 1.0
    none = paired([math.nan], [0.8])
    assert none.n == 0 and math.isnan(none.diff) and math.isnan(none.p_value) and none.verdict == "inconclusive"
    same = paired([0.82, 0.86, 0.83], [0.80, 0.84, 0.81])  # +0.02 each, up to rounding
    assert math.isnan(same.effect_size)  # not +inf
    # every difference the same: a zero-width interval, no spread to test against - not a verdict
    assert same.low == pytest.approx(0.02) and same.high == pytest.approx(0.02) and same.verdict == "inconclusive"
    assert math.isnan(same.p_t)
    assert same.p_value == 0.25  # 2 of 8
    assert paired([0.9, math.nan, 0.7], [0.8, 0.5, 0.6]).n == 2  # pairs with a NaN dropped
    with pytest.raises(ValueError, match="same length"):
        paired([0.1, 0.2], [0.1])


def test_exact_sign_flip_p_matches_scipy_and_the_random_branch_is_seeded() -> None:
    d = np.random.default_rng(3).normal(0.4, 1.0, 10)
    exact = scipy.stats.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=np.inf)
    assert paired(d, np.zeros(10)).p_value == pytest.approx(exact.pvalue)
    d = np.random.default_rng(4).normal(0.4, 1.0, 20)
    sampled = scipy.stats.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=9999,
                                           random_state=np.random.default_rng(RESAMPLING_SEED))  # fmt: skip
    assert paired(d, np.zeros(20)).p_value == pytest.approx(sampled.pvalue)


def test_holm_step_down() -> None:
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.06
    assert holm([0.01, 0.04, 0.03, math.nan, 0.005]) == pytest.approx([0.03, 0.06, 0.06, math.nan, 0.02], nan_ok=True)
    assert holm([0.5, 0.6]) == [1.0, 1.0]  # capped
    assert holm([0.2]) == [0.2] and holm([]) == []


# ------------------------------------------------------------------ ablation: one factor at a time


def test_ofat_ablation_levels_pairs_and_flags() -> None:
    stats = ablation(ofat_frame()).set_index(["factor", "level"])
    assert stats.attrs["metric"] == "test_acc"
    assert set(stats["design"]) == {"ofat"}
    assert set(stats.index.get_level_values("factor")) == {"attention", "multiscale", "growth"}
    # the base is inferred: the most common level of each factor
    assert stats.loc[("attention", False), "is_base"]
    assert stats.loc[("multiscale", True), "is_base"]
    assert stats.loc[("growth", 12), "is_base"]
    assert stats.loc[("attention", True), "base_level"] == False  # noqa: E712

    base = stats.loc[("attention", False)]
    assert base["seeds"] == 3 and base["verdict"] == "base" and math.isnan(base["p_value"])
    assert base["mean"] == pytest.approx(np.mean(list(OFAT_BASE.values())))  # 0.81, s = 0.03
    half = T_975[2] * 0.03 / math.sqrt(3)
    assert (base["ci_low"], base["ci_high"]) == pytest.approx((0.81 - half, 0.81 + half))

    # +0.02 on every seed: the level means' CIs overlap, the paired difference does not cover 0
    attention = stats.loc[("attention", True)]
    assert attention["pairs"] == 3
    assert attention["diff"] == pytest.approx(0.02)
    assert attention["diff_low"] == pytest.approx(0.02) and attention["diff_high"] == pytest.approx(0.02)
    assert attention["excludes_zero"] == True  # noqa: E712 (pandas boolean)
    assert attention["verdict"] == "inconclusive"  # the same +0.02 on every seed: no spread, no test
    assert attention["p_value"] == 0.25  # exact: 2 of 2**3 sign vectors
    assert math.isnan(attention["effect_size"])  # the differences do not vary: d_z would be inf
    assert attention["ci_low"] < base["ci_high"]

    multiscale = stats.loc[("multiscale", False)]
    assert multiscale["diff"] == pytest.approx(np.mean(list(OFAT_EFFECTS[("multiscale", False)].values())))
    assert multiscale["diff_low"] < 0 < multiscale["diff_high"]
    assert multiscale["excludes_zero"] == False  # noqa: E712
    assert multiscale["verdict"] == "inconclusive" and multiscale["p_value"] == 1.0
    assert multiscale["effect_size"] == pytest.approx(0.0, abs=1e-9)

    growth = stats.loc[("growth", 24)]
    assert growth["seeds"] == 1 and growth["pairs"] == 1
    assert growth["diff"] == pytest.approx(0.03)
    assert math.isnan(growth["ci_low"]) and math.isnan(growth["diff_low"])
    assert pd.isna(growth["excludes_zero"]) and growth["verdict"] == "inconclusive"
    assert "fewer than 2 seeds" in growth["note"]
    assert stats.loc[("attention", True), "note"] == ""

    # Holm across the three compared levels: p = 0.25, 1, 1 -> 0.75, 1, 1
    compared = stats[~stats["is_base"]]
    assert list(compared["p_holm"]) == pytest.approx(holm(list(compared["p_value"])))
    assert stats.loc[("attention", True), "p_holm"] == pytest.approx(0.75)
    assert stats.loc[("growth", 24), "p_holm"] == 1.0


def test_ablation_compares_the_test_metric_by_default() -> None:
    df = ofat_frame()
    attention = df["attention"] == True  # noqa: E712
    df.loc[attention, "best_val_acc"] += 0.1  # validation numbers differ; test ones do not
    stats = ablation(df).set_index(["factor", "level"])
    assert stats.loc[("attention", True), "diff"] == pytest.approx(0.02)
    on_val = ablation(df, metric="best_val_acc").set_index(["factor", "level"])
    assert on_val.loc[("attention", True), "diff"] == pytest.approx(0.12)
    old = ofat_frame().assign(test_acc=math.nan)  # a database from before test metrics
    with pytest.raises(ValueError, match="test_acc.*validation metric 'best_val_acc'"):
        ablation(old)


def test_ablation_warns_and_markdown_spells_out_verdicts(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="rksearch.analysis"):
        stats = ablation(ofat_frame())
    assert any("growth=24" in r.getMessage() and "fewer than 2 seeds" in r.getMessage() for r in caplog.records)
    text = ablation_markdown(stats)
    assert text.splitlines()[0] == (
        "| factor | level | seeds | mean (%) | 95% CI | diff vs base (pp) | 95% CI | t p (Holm) | sign-flip p (Holm) "
        "| d_z | verdict |"
    )
    growth_line = next(line for line in text.splitlines() if line.startswith("| growth | 24 "))
    assert "1 ⚠" in growth_line and "n<2: none" in growth_line and "+3.00" in growth_line
    assert growth_line.endswith("| — | 1 (1) | — | inconclusive |")
    attention_line = next(line for line in text.splitlines() if line.startswith("| attention | True "))
    assert attention_line.endswith("| +2.00 | [2.00, 2.00] | — | 0.25 (0.75) | — | inconclusive |")
    multiscale_line = next(line for line in text.splitlines() if line.startswith("| multiscale | False "))
    assert multiscale_line.endswith("| 1 (1) | 1 (1) | +0.00 | inconclusive |")
    assert "| attention | False (base) | 3 | 81.00 | [73.55, 88.45] | 0 | — | — | — | — | base |" in text
    assert "a verdict needs the interval to exclude zero and the Holm-adjusted t p" in text
    assert "fewer than 2 seeds" in text.splitlines()[-1]


def test_ablation_with_explicit_base_and_bad_base() -> None:
    stats = ablation(ofat_frame(), factors=["attention"], base={"attention": True})
    flipped = stats.set_index("level").loc[False]
    # with attention=True as base, the multiscale/growth rows still sit at their mode -> ofat
    assert flipped["diff"] == pytest.approx(-0.02) and flipped["verdict"] == "inconclusive"  # constant
    assert flipped["p_holm"] == flipped["p_value"] == 0.25  # one comparison: Holm changes nothing
    with pytest.raises(ValueError, match="base level 'yes'"):
        ablation(ofat_frame(), base={"attention": "yes"})
    with pytest.raises(KeyError, match="nope"):
        ablation(ofat_frame(), factors=["nope"])


def test_ablation_ignores_unfinished_trials() -> None:
    df = ofat_frame()
    extra = trial_row(99, "RKCNN-E-3_3_3", None, "explicit", 1, 1, 0, 90.0, status="pruned")
    extra.update({"attention": True, "multiscale": True, "growth": 12, "test_acc": 0.10})
    both = pd.concat([df, pd.DataFrame([extra])])
    stats = ablation(both, dims=df.attrs["dims"]).set_index(["factor", "level"])
    assert stats.loc[("attention", True), "diff"] == pytest.approx(0.02)


# ------------------------------------------------------------------ ablation: grid main effects


def test_grid_main_effects_are_marginal_and_paired() -> None:
    df = grid_frame()
    stats = ablation(df, base={"depth": "shallow", "lr": 0.1}).set_index(["factor", "level"])
    assert set(stats["design"]) == {"grid"}
    deep = stats.loc[("depth", "deep")]
    assert deep["diff"] == pytest.approx(0.05) and deep["excludes_zero"] == True  # noqa: E712
    assert deep["verdict"] == "inconclusive" and deep["p_value"] == 0.25  # +0.05 on every seed
    assert deep["diff_high"] - deep["diff_low"] == pytest.approx(0.0, abs=1e-12)
    assert stats.loc[("lr", 0.05), "diff"] == pytest.approx(0.01)
    # marginal mean of 'shallow' averages over both lr values and the seeds
    seed_mean = np.mean(list(GRID_SEED_EFFECT.values()))
    assert stats.loc[("depth", "shallow"), "mean"] == pytest.approx(0.7 + 0.005 + seed_mean)
    assert stats.loc[("depth", "shallow"), "seeds"] == 3


def test_grid_default_base_is_the_first_sorted_level() -> None:
    stats = ablation(grid_frame()).set_index(["factor", "level"])
    assert stats.loc[("depth", "deep"), "is_base"]  # 'deep' < 'shallow'
    assert stats.loc[("depth", "shallow"), "diff"] == pytest.approx(-0.05)
    assert stats.loc[("lr", 0.1), "diff"] == pytest.approx(-0.01)


def test_grid_pairs_only_cells_present_at_both_levels() -> None:
    df = grid_frame()
    # drop (deep, lr=0.05, seed 1): its seed-1 difference must come from the lr=0.1 cell alone
    drop = (df["depth"] == "deep") & (df["lr"] == 0.05) & (df["seed"] == 1)
    stats = ablation(df[~drop], base={"depth": "shallow", "lr": 0.1})
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


def test_replicates_summarise_seeds_of_completed_trials() -> None:
    df = figure4_frame()
    reps = replicates(df)
    assert list(reps.columns) == [
        "family", "model_name", "canonical", "stages", "growth", "form", "params", "flops", "validation",
        "mean", "sd", "n", "ci_low", "ci_high", "half_width",
    ]  # fmt: skip
    # sorted by family in paper order, then FLOPs
    assert list(reps["family"]) == ["ERKNet"] * 4 + ["IRKNet"] * 3 + ["DenseNet"]
    assert list(reps["flops"][:4]) == sorted(reps["flops"][:4])
    reps = reps.set_index("model_name")
    assert "ERKNet-8x1 8x1 8x1" not in reps.index  # failed
    assert "IRKNet-2x1 2x1 2x1" not in reps.index  # pruned
    six = reps.loc["ERKNet-6x1 6x1 6x1"]
    assert six["family"] == "ERKNet" and six["validation"] == "holdout" and six["stages"] == (6, 6, 6)
    assert six["mean"] == pytest.approx(0.062)  # test errors 6.0 and 6.4 %
    assert six["sd"] == pytest.approx(math.sqrt(0.08) / 100)
    assert six["n"] == 2
    half = T_975[1] * six["sd"] / math.sqrt(2)  # t(0.975, 1) = 12.7: two seeds say little
    assert six["half_width"] == pytest.approx(half)
    assert (six["ci_low"], six["ci_high"]) == pytest.approx((0.062 - half, 0.062 + half))
    dense = reps.loc["DenseNet-BC-100"]
    assert dense["n"] == 1 and math.isnan(dense["sd"]) and math.isnan(dense["half_width"])
    assert len(reps) == 8


def test_replicates_drop_trials_without_the_metric_and_read_any_metric() -> None:
    df = figure4_frame()
    df.loc[df["model_name"].eq("ERKNet-6x1 6x1 6x1") & df["seed"].eq(1), "test_error"] = math.nan
    reps = replicates(df).set_index("model_name")
    assert reps.loc["ERKNet-6x1 6x1 6x1", "n"] == 1
    assert reps.loc["ERKNet-6x1 6x1 6x1", "mean"] == pytest.approx(0.060)
    final = replicates(df, metric="final_val_error").set_index("model_name")
    assert final.loc["ERKNet-6x1 6x1 6x1", "n"] == 2
    assert final.loc["ERKNet-6x1 6x1 6x1", "mean"] == pytest.approx(0.063)
    assert replicates(df.iloc[:0]).empty


def test_a_frame_without_test_numbers_says_which_metric_to_use() -> None:
    old = figure4_frame().assign(test_error=math.nan, test_acc=math.nan)  # an older database
    with pytest.raises(ValueError, match="test_error.*validation metric 'best_val_error'"):
        paper_table(old)
    with pytest.raises(ValueError, match="test_error.*validation metric 'best_val_error'"):
        replicates(old.drop(columns="test_error"))
    table = paper_table(old, metric="best_val_error")
    assert table.attrs["metric"] == "best_val_error"
    assert "best_val_error reported" in table_markdown(table)
    with pytest.raises(ValueError, match="not an error column"):
        paper_table(figure4_frame(), metric="test_acc")


def test_a_stored_study_tabulates_like_its_frame(tmp_path) -> None:
    """`store_frame(with_test=True)` round-trips the columns the tables read, through `results.load`."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    frame = figure4_frame()
    store_frame(url, "fig4", frame, with_test=True)
    stored = results.load(url, "fig4", status=None)
    assert list(stored.columns) == list(frame.columns)
    assert table_markdown(paper_table(stored)) == table_markdown(paper_table(frame))
    assert set(stored["validation"]) == {"holdout"}
    store_frame(url, "old", frame)  # no test numbers, as an older database
    with pytest.raises(ValueError, match="validation metric 'best_val_error'"):
        paper_table(results.load(url, "old"))


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
HOLDOUT = ("Error (%): test_error, mean ± half-width of its 95% CI over seeds (n seeds); "
           "selected on a validation holdout; test error reported.")  # fmt: skip


def test_table_markdown_exact() -> None:
    text = table_markdown(paper_table(_tiny(TINY)))
    assert text == (
        "| ERKNet | GFLOPs | params (M) | error (%) | IRKNet | GFLOPs | params (M) | error (%) |\n"
        "|---|---:|---:|---:|---|---:|---:|---:|\n"
        "| ERKNet-6x1 6x1 6x1 | 0.66 | 0.74 | 5.12 (1) | IRKNet-3x1 3x1 3x1 | 0.40 | 0.45 | 5.43 (1) |\n"
        "| ERKNet-7x1 7x1 7x1 | 0.88 | 0.99 | 4.87 (1) |  |  |  |  |\n"
        f"\n{HOLDOUT}\n"
    )


def test_table_latex_exact() -> None:
    text = table_latex(paper_table(_tiny(TINY)))
    assert text == (
        f"% {HOLDOUT}\n"
        "\\begin{tabular}{lrrrlrrr}\n"
        "\\toprule\n"
        "\\multicolumn{4}{c}{ERKNet} & \\multicolumn{4}{c}{IRKNet} \\\\\n"
        "\\cmidrule(lr){1-4} \\cmidrule(lr){5-8}\n"
        "Model & GFLOPs & Params (M) & Error (\\%) & Model & GFLOPs & Params (M) & Error (\\%) \\\\\n"
        "\\midrule\n"
        "ERKNet-6x1 6x1 6x1 & 0.66 & 0.74 & 5.12 (1) & IRKNet-3x1 3x1 3x1 & 0.40 & 0.45 & 5.43 (1) \\\\\n"
        "ERKNet-7x1 7x1 7x1 & 0.88 & 0.99 & 4.87 (1) &  &  &  &  \\\\\n"
        "\\bottomrule\n"
        "\\end{tabular}\n"
    )


def test_table_with_seeds_shows_mean_half_width_and_n() -> None:
    errors = dict(TINY, **{"IRKNet-3x1 3x1 3x1": [5.0, 5.2, 5.4], "ERKNet-7x1 7x1 7x1": [4.8, 5.0]})
    table = paper_table(_tiny(errors))
    md = table_markdown(table)
    # s = 0.2, half-width t(0.975, 2) * 0.2 / sqrt(3) = 0.497; two seeds: 12.7 * 0.1414 / sqrt(2) = 1.27
    assert "| IRKNet-3x1 3x1 3x1 | 0.40 | 0.45 | 5.20 ± 0.50 (3) |" in md
    assert "| ERKNet-7x1 7x1 7x1 | 0.88 | 0.99 | 4.90 ± 1.27 (2) |" in md
    assert "| ERKNet-6x1 6x1 6x1 | 0.66 | 0.74 | 5.12 (1) |" in md
    assert "$5.20 \\pm 0.50$ (3)" in table_latex(table)
    assert table[("IRKNet", "± (%)")].iloc[0] == pytest.approx(T_975[2] * 0.2 / math.sqrt(3))
    assert table[("IRKNet", "n")].iloc[0] == 3


def test_tables_of_studies_selected_on_test_say_so() -> None:
    paper = _tiny(TINY).assign(validation="test")
    md, tex = table_markdown(paper_table(paper)), table_latex(paper_table(paper))
    assert md.endswith("(n seeds); selected on test (the paper's protocol).\n")
    assert tex.splitlines()[0].endswith("selected on test (the paper's protocol).")
    assert tex.startswith("% ")
    mixed = _tiny(TINY)
    mixed.loc[mixed["model_name"] == "IRKNet-3x1 3x1 3x1", "validation"] = "test"
    assert "some configurations selected on test (the paper's protocol)" in table_markdown(paper_table(mixed))
    assert "selected on a validation holdout" in table_markdown(paper_table(_tiny(TINY)))
    assert "selection split not recorded" in table_markdown(paper_table(_tiny(TINY).drop(columns="validation")))


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
    assert "| ERKNet-1x1 1x1 1x1 (growth=4) | 0.00065 | 0.00075 | 14.00 (1) |" in md
    assert "| ERKNet-1x1 1x1 1x1 (growth=8) | 0.0022 | 0.0023 | 18.00 (1) |" in md
    assert "| ERKNet-3x1 3x1 3x1 | 0.0026 | 0.0030 | 9.70 (1) |" in md  # unique: no suffix
    assert "IRKNet-2x1 2x1 2x1 (growth=8)" in md


def test_table_warns_when_rows_differ_only_in_fixed_knobs(caplog: pytest.LogCaptureFixture) -> None:
    df = _tiny(TINY)
    twin = df[df["model_name"] == "IRKNet-3x1 3x1 3x1"].assign(canonical="IRKNet-3x1 3x1 3x1 (k=36, m=2)",
                                                                trial_key="twin", test_error=0.06)
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
    assert back.loc[0, "clique n"] == 1
    assert "clique ± (%)" in back.columns
    with pytest.raises(KeyError, match="no such column"):
        paper_table(df, by="neck")


def test_ablation_verdicts_survive_holm_or_say_inconclusive() -> None:
    """Three factors, four seeds, differences that vary: a clear effect keeps its verdict after
    Holm; two marginal ones (intervals just above 0, unadjusted) are downgraded to inconclusive."""
    rows, dims = [], ["a", "b", "c"]
    clear = {0: 0.050, 1: 0.061, 2: 0.055, 3: 0.058}
    marginal = {0: 0.010, 1: 0.030, 2: 0.012, 3: 0.028}  # t = 3.8 at 3 df: p = 0.03
    marginal_too = {0: 0.009, 1: 0.031, 2: 0.011, 3: 0.029}  # t = 3.4: p = 0.04
    for seed in range(4):
        base = 0.80 + 0.01 * seed
        for a, b, c, acc in ((0, 0, 0, base), (1, 0, 0, base + clear[seed]), (0, 1, 0, base + marginal[seed]),
                             (0, 0, 1, base + marginal_too[seed])):
            row = trial_row(len(rows) + 1, "RKCNN-E-3_3_3", None, "explicit", 1, 1, seed, 100 * (1 - acc))
            row.update(a=a, b=b, c=c)
            rows.append(set_acc(row, acc))
    frame = pd.DataFrame(rows)
    frame.attrs["dims"] = dims
    stats = ablation(frame, base={"a": 0, "b": 0, "c": 0}).set_index(["factor", "level"])
    strong = stats.loc[("a", 1)]
    assert strong["verdict"] == "higher" and strong["p_t_holm"] < 0.05
    for weak in (stats.loc[("b", 1)], stats.loc[("c", 1)]):
        assert weak["diff_low"] > 0 and weak["p_t"] < 0.05  # unadjusted, the interval excludes 0
        assert weak["p_t_holm"] >= 0.05 and weak["verdict"] == "inconclusive"
        assert "not after Holm across 3 comparisons" in weak["note"]


def test_old_names_and_bad_levels() -> None:
    from rksearch import analysis

    with pytest.warns(DeprecationWarning, match="mean_ci"):
        assert analysis.bootstrap_ci([0.93, 0.94, 0.95]) == analysis.mean_ci([0.93, 0.94, 0.95])
    for level in (95, 0.0, 1.0):
        with pytest.raises(ValueError, match="level must be a fraction"):
            analysis.mean_ci([0.1, 0.2], level)
    with pytest.raises(ValueError, match="level must be a fraction"):
        analysis.paired([0.1, 0.2], [0.2, 0.3], level=95)


def test_a_csv_table_says_how_its_models_were_selected() -> None:
    from rksearch.analysis import table_csv

    paper = figure4_frame().assign(validation="test")
    paper.attrs = figure4_frame().attrs
    text = table_csv(paper_table(paper))
    header, first = text.splitlines()[:2]
    assert header.endswith(",selection") and first.endswith("selected on test (the paper's protocol)")


def test_every_public_name_resolves_after_its_submodules_are_imported() -> None:
    """A submodule named like a public name would hide it once imported (rksearch.analysis.ablation
    the module instead of the function): no public name may resolve to a module."""
    import importlib
    import pkgutil
    import types

    from rksearch import analysis

    for module in pkgutil.iter_modules(analysis.__path__):
        importlib.import_module(f"rksearch.analysis.{module.name}")
    assert not [name for name in analysis.__all__ if isinstance(getattr(analysis, name), types.ModuleType)]
    assert callable(analysis.ablation) and callable(analysis.paper_table) and callable(analysis.mean_ci)


#: names a submodule exports that `rksearch.analysis` keeps beside their module's name only
MODULE_ONLY = {"pareto", "load", "spec", "normalisation"}


def test_every_exported_name_but_the_module_only_ones_is_a_package_name() -> None:
    """``rksearch.analysis.<name>`` is the submodule's own object for every name a submodule
    exports (STATS, CONFIG_KEY, Design, Verdict, figure4, ... were lost once), and the map holds
    no name that nothing exports."""
    import importlib
    import pkgutil

    from rksearch import analysis

    exported = set()
    for module in pkgutil.iter_modules(analysis.__path__):
        submodule = importlib.import_module(f"rksearch.analysis.{module.name}")
        exported |= set(submodule.__all__)
        for name in set(submodule.__all__) - MODULE_ONLY:
            assert getattr(analysis, name) is getattr(submodule, name), name
    assert analysis.__all__ == sorted(exported - MODULE_ONLY)
    assert MODULE_ONLY <= exported  # each exception still names something


def test_a_package_name_imports_only_what_its_own_submodule_needs() -> None:
    import subprocess
    import sys

    heavy = "sorted(m for m in ('scipy', 'matplotlib', 'torch') if m in sys.modules)"
    code = (f"import sys, rksearch.analysis as a; a.missing; print({heavy}); a.STATS; print({heavy}); "
            f"a.mean_ci([1.0]); print({heavy}); a.mean_ci([1.0, 2.0]); print({heavy})")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    # values needs pandas alone, frames no more; scipy (1.7 s) only once an interval is computed,
    # so a summary of one-seed configurations never imports it
    assert done.stdout.splitlines() == ["[]", "[]", "[]", "['scipy']"]


@pytest.mark.parametrize("value, expected", [(None, True), (math.nan, True), (np.float64("nan"), True),
                                             (pd.NA, True), (0.0, False), ("<NA>", False), ((2, 2), False)])
def test_one_definition_of_a_missing_cell(value: object, expected: bool) -> None:
    from rksearch.analysis.values import missing

    assert missing(value) is expected
