"""The paper's two claims, tested on one study's test errors (seeds are the replicates).

    python analysis/claims.py --study digits_trends [--level 0.95] [--detail] [--storage URL]

prints one line per claim,

    claim N (<short text>): supported|not supported|inconclusive — <estimate> [<low>, <high>] (n=<seeds>)

and exits 0; 2 with one `error:` line for a missing database or study, a study without the
columns a claim needs, or fewer than 2 seeds.  A claim whose estimator gives a value for fewer
than 2 seeds (claim 2 where no seed's fronts share an error range) is inconclusive, n < 2.
`--detail` adds, under each claim, one indented line per sub-test (per form; params and FLOPs)
and the pooled estimate.

What is measured is `test_error` (the reporting metric: the test set on the checkpoint the
validation split chose); where any trial selected on test, the line says "selected on test".

Claim 1: within a form, more stages (per period) give lower error.
    For each seed s, form f and growth rate g: the OLS slope of test_error on stages (stages per
    period; the mean over periods if they differ), from that seed's trials of (f, g) with at
    least 2 distinct stage counts.  b(s, f) = the mean of those slopes over the growth rates.
    Sub-test per form: the b(s, f) over seeds (a change in test error, a fraction, per added stage).
Claim 2: the implicit form reaches a given error with fewer params and FLOPs than the explicit one.
    For each seed s and cost c in (params, flops): each form's Pareto front of that seed's trials
    (lower cost, lower test error).  C_f(e) = the cost of the cheapest trained model of form f
    whose error is <= e (a model that exists: no interpolation between front points).  Target
    errors e: 101 evenly spaced points of [max of the forms' best errors, min of the errors of
    the forms' cheapest front models] - the errors both fronts reach and where neither is
    already at its smallest model (a seed whose fronts share no such range gives no value).
    r(s, c) = the mean over e of log C_implicit(e) - log C_explicit(e).
    Sub-test per cost: the r(s, c) over seeds, printed as the ratio exp(mean r) with exp of its
    interval's bounds: the implicit form's cost at equal error over the explicit one's (the
    geometric mean over targets and seeds); below 1 means the implicit form needs less.

Verdicts (alpha = 1 - level).  Each sub-test gives its per-seed values' mean and `mean_ci`
interval (Student-t below 30 seeds) and a two-sided one-sample t-test p-value against 0 (the same
t distribution, so below 30 seeds p < alpha exactly when the interval excludes 0).  The claimed sign is
negative (slope < 0, log cost ratio < 0).  The claim is
    supported       when every sub-test's interval lies below 0.  The claim speaks of each form
                    (of both costs), so it is a conjunction, tested as an intersection-union test:
                    each part at level alpha gives the whole level alpha, with no multiplicity
                    correction (Berger 1982; a Holm correction here would only lose power);
    not supported   when some sub-test contradicts it: its mean is positive and its p-value,
                    Holm-corrected across the claim's sub-tests (`rksearch.analysis.holm`), is
                    below alpha.  "Some part is false" is a union of the sub-tests, so it is the
                    side that needs the correction;
    inconclusive    otherwise (an interval crosses 0, or a sub-test has fewer than 2 values).
The line shows one sub-test, named in its text: the contradicting one with the smallest Holm p
when the claim is not supported, otherwise the weakest (highest upper bound), so "supported"
and "inconclusive" can be read off its interval.  (One corner: a sub-test whose interval lies
above 0 but whose Holm p is not below alpha reads "inconclusive".)  `--detail` lists every
sub-test with its raw and Holm p, and the pooled estimate (per seed the mean over sub-tests).
The exact sign-flip permutation p of `rksearch.analysis.paired` is not used: at n = 3 seeds its
smallest two-sided p is 2/8 = 0.25, so it could never decide at 5%.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.stats

from rksearch import analysis, cli, results
from rksearch.analysis.pareto import pareto
from rksearch.errors import RksearchError

#: how many target errors claim 2 averages the log cost ratio over (evenly spaced, ends included)
TARGETS = 101
#: model families of each form, for studies whose form is fixed by a name rather than searched
EXPLICIT_FAMILIES = ("ERKNet", "RKCNN-E")
IMPLICIT_FAMILIES = ("IRKNet", "RKCNN-I", "RKCNN-R")
IMPLICIT_FORMS = ("clique", "update")

CLAIM1 = "more stages give lower error in each form; error change per stage"
CLAIM2 = "implicit reaches an error with fewer params and FLOPs; implicit/explicit cost ratio"
#: how the line names the sub-test it shows
LABELS = {"explicit": "explicit form", "implicit": "implicit form", "params": "params", "flops": "FLOPs"}


class ClaimError(RksearchError, ValueError):
    """The study cannot test a claim (one line, said as `error:`)."""


@dataclass(frozen=True)
class SubTest:
    name: str
    n: int
    mean: float
    low: float
    high: float
    p_value: float
    p_holm: float = math.nan


@dataclass(frozen=True)
class Claim:
    """A claim's verdict, its sub-tests, the one shown on its line (`shown`) and the pooled estimate."""

    number: int
    text: str
    verdict: str
    subtests: tuple[SubTest, ...]
    shown: int
    pooled: SubTest
    ratio: bool = False  # print exp(value): claim 2's log cost ratios
    note: str = ""  # "; selected on test" where the study selected on the test set

    @property
    def deciding(self) -> SubTest:
        return self.subtests[self.shown]

    # the shown sub-test's numbers, as printed on the line (log values for claim 2)
    estimate = property(lambda self: self.deciding.mean)
    low = property(lambda self: self.deciding.low)
    high = property(lambda self: self.deciding.high)
    n = property(lambda self: self.deciding.n)

    def _cells(self, t: SubTest) -> str:
        fmt = "{:.3f}" if self.ratio else "{:+.4f}"
        a, b, c = (_num(math.exp(v) if self.ratio and not math.isnan(v) else v, fmt) for v in (t.mean, t.low, t.high))
        return f"{a} [{b}, {c}] (n={t.n})"

    def line(self) -> str:
        label = LABELS.get(self.deciding.name, self.deciding.name)
        return f"claim {self.number} ({self.text}, {label}{self.note}): {self.verdict} — {self._cells(self.deciding)}"

    def detail(self) -> list[str]:
        out = [f"  {LABELS.get(t.name, t.name)}: {self._cells(t)}, t-test p = {_num(t.p_value, '{:.3g}')}, "
               f"Holm p = {_num(t.p_holm, '{:.3g}')}" for t in self.subtests]
        return out + [f"  pooled (per seed the mean of the above): {self._cells(self.pooled)}"]


def _num(value: float, fmt: str) -> str:
    return "nan" if value is None or math.isnan(value) else fmt.format(value)


# --------------------------------------------------------------------------- reading the frame


def forms(df: pd.DataFrame) -> pd.Series:
    """Each trial's form, 'explicit' or 'implicit': the `form` dimension, else the model family."""
    if "form" in df.columns and df["form"].notna().all():
        raw = df["form"].astype(str)
        return raw.map(lambda f: "implicit" if f in IMPLICIT_FORMS else "explicit" if f == "explicit" else f)
    fam = analysis.families(df)
    return fam.map(lambda f: "explicit" if f in EXPLICIT_FAMILIES else "implicit" if f in IMPLICIT_FAMILIES else f)


def stages(df: pd.DataFrame) -> pd.Series:
    """Stages per period of each trial (the mean over periods where they differ)."""
    if "stages" in df.columns:
        return df["stages"].map(lambda v: float(np.mean(v)) if isinstance(v, (list, tuple)) else float(v))
    split = sorted((c for c in df.columns if str(c).startswith("stages.")), key=lambda c: int(str(c).split(".")[1]))
    if split:
        return df[split].astype(float).mean(axis=1)
    raise ClaimError("claim 1 needs the stages of each trial; the study has no 'stages' dimension")


def prepared(df: pd.DataFrame) -> pd.DataFrame:
    """The completed RKCNN trials with a test error, and the columns the claims read."""
    for column in ("test_error", "seed", "params", "flops", "model_name"):
        if column not in df.columns:
            raise ClaimError(f"the study's rows have no '{column}' column")
    df = analysis.completed(df)
    df = df[df["test_error"].notna()]
    if df.empty:
        raise ClaimError("no completed trial has a test error (trials recorded before rksearch kept a test "
                         "set apart have none; re-run the study)")
    out = pd.DataFrame({
        "form": forms(df).to_numpy(),
        "seed": df["seed"].to_numpy(),
        "error": df["test_error"].astype(float).to_numpy(),
        "params": df["params"].astype(float).to_numpy(),
        "flops": df["flops"].astype(float).to_numpy(),
        "growth": (df["growth"].astype(str) if "growth" in df.columns else pd.Series("-", index=df.index)).to_numpy(),
    })  # fmt: skip
    try:
        out["stages"] = stages(df).to_numpy()
    except ClaimError:
        out["stages"] = math.nan
    out = out[out["form"].isin(("explicit", "implicit"))]
    missing = {"explicit", "implicit"} - set(out["form"])
    if missing:
        raise ClaimError(f"the study has no {' or '.join(sorted(missing))} RKCNN with a test error; both forms are needed")
    return out.reset_index(drop=True)


# --------------------------------------------------------------------------- estimators


def ols_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of y on x (NaN with fewer than 2 distinct x)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if np.unique(x).size < 2:
        return math.nan
    dx = x - x.mean()
    return float((dx * (y - y.mean())).sum() / (dx * dx).sum())


def stage_slopes(rows: pd.DataFrame) -> pd.DataFrame:
    """b(s, f): per seed (index) and form (columns) the slope of error on stages, averaged over growth."""
    if rows["stages"].isna().all():
        raise ClaimError("claim 1 needs the stages of each trial; the study has no 'stages' dimension")
    per_growth = (rows.groupby(["seed", "form", "growth"])[["stages", "error"]]
                  .apply(lambda g: ols_slope(g["stages"], g["error"])).rename("slope").reset_index())  # fmt: skip
    table = per_growth.groupby(["seed", "form"])["slope"].mean().unstack("form")
    return table.reindex(columns=["explicit", "implicit"])


def front(cost: np.ndarray, error: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Pareto front (lower cost, lower error) of `rksearch.analysis.pareto`, exact duplicates of a front
    point kept once: its costs ascending, its errors strictly descending."""
    best = pareto(pd.DataFrame({"cost": cost, "error": error}), x="cost", y="error")
    best = best.drop_duplicates(["cost", "error"])
    return best["cost"].to_numpy(dtype=float), best["error"].to_numpy(dtype=float)


def cost_to_reach(front_cost: np.ndarray, front_error: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """For each target error, the cost of the cheapest front model with error <= it (NaN: none)."""
    out = np.full(targets.shape, math.nan)
    for i, e in enumerate(targets):
        reach = np.flatnonzero(front_error <= e + 1e-12)
        if reach.size:
            out[i] = front_cost[reach[0]]
    return out


def log_cost_ratio(explicit: pd.DataFrame, implicit: pd.DataFrame, cost: str, targets: int = TARGETS) -> float:
    """r: the mean over common target errors of log C_implicit(e) - log C_explicit(e) (NaN: no overlap)."""
    fronts = [front(rows[cost].to_numpy(float), rows["error"].to_numpy(float)) for rows in (explicit, implicit)]
    if any(c.size == 0 for c, _ in fronts):
        return math.nan
    low = max(e.min() for _, e in fronts)  # both reach it
    high = min(e[0] for _, e in fronts)  # neither has its cheapest front model already below it
    if low > high:
        return math.nan
    grid = np.linspace(low, high, targets) if high > low else np.array([low])
    c_explicit, c_implicit = (cost_to_reach(c, e, grid) for c, e in fronts)
    return float(np.mean(np.log(c_implicit) - np.log(c_explicit)))


def cost_ratios(rows: pd.DataFrame, targets: int = TARGETS) -> pd.DataFrame:
    """r(s, c): per seed (index) the log cost ratio implicit / explicit, for params and flops (columns)."""
    out = {}
    for seed, group in rows.groupby("seed"):
        explicit, implicit = (group[group["form"] == f] for f in ("explicit", "implicit"))
        out[seed] = {c: log_cost_ratio(explicit, implicit, c, targets) for c in ("params", "flops")}
    return pd.DataFrame.from_dict(out, orient="index").reindex(columns=["params", "flops"])


# --------------------------------------------------------------------------- tests and verdicts


def t_test(values: Sequence[float] | np.ndarray, name: str, level: float) -> SubTest:
    """Mean, `mean_ci` interval and two-sided one-sample t-test p-value against 0."""
    data = np.asarray(values, dtype=float)
    data = data[~np.isnan(data)]
    mean, low, high = analysis.mean_ci(data, level)
    if data.size < 2:
        p = math.nan
    elif np.all(data == data[0]):
        p = 1.0 if data[0] == 0 else 0.0  # no spread: the sign is certain (the interval has zero width)
    else:
        p = float(scipy.stats.ttest_1samp(data, 0.0).pvalue)
    return SubTest(name, int(data.size), mean, low, high, p)


def decide(per_seed: pd.DataFrame, number: int, text: str, level: float, ratio: bool = False,
           note: str = "") -> Claim:
    """The claim's verdict from its sub-tests (columns of `per_seed`; the claimed sign is negative)."""
    per_seed = per_seed.dropna(how="all")
    tests = [t_test(per_seed[c].to_numpy(), str(c), level) for c in per_seed.columns]
    adjusted = analysis.holm([t.p_value for t in tests])
    tests = [SubTest(t.name, t.n, t.mean, t.low, t.high, t.p_value, p) for t, p in zip(tests, adjusted)]
    alpha = 1.0 - level
    # against the claim: a sub-test of the other sign whose Holm-adjusted p is below alpha
    against = [i for i, t in enumerate(tests) if t.mean > 0 and t.p_holm < alpha]
    if against:
        verdict, shown = "not supported", min(against, key=lambda i: tests[i].p_holm)
    else:
        # for the claim: every sub-test's interval below zero (an intersection-union test); the
        # sub-test shown is the weakest, the one with the highest upper bound (NaN counts highest)
        shown = max(range(len(tests)), key=lambda i: math.inf if math.isnan(tests[i].high) else tests[i].high)
        verdict = "supported" if tests[shown].high < 0 else "inconclusive"
    pooled = t_test(per_seed.mean(axis=1, skipna=False).to_numpy(), "pooled", level)
    return Claim(number, text, verdict, tuple(tests), shown, pooled, ratio, note)


def claims(df: pd.DataFrame, level: float = 0.95, targets: int = TARGETS) -> list[Claim]:
    """Both claims from a `results.load` frame (ClaimError when the study cannot test them)."""
    rows = prepared(df)
    seeds = rows["seed"].nunique()
    if seeds < 2:
        raise ClaimError(f"the study has {seeds} seed with a test error; the claims need at least 2 "
                         "(replicates), e.g. seeds: [0, 1, 2]")
    note = "; selected on test" if "validation" in df.columns and (df["validation"] == "test").any() else ""
    first = decide(stage_slopes(rows), 1, CLAIM1, level, note=note)
    second = decide(cost_ratios(rows, targets), 2, CLAIM2, level, ratio=True, note=note)
    return [first, second]


@cli.exits_on_error()
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Test the paper's two claims on a study's test errors.")
    cli.add_storage(parser)
    parser.add_argument("--study", required=True)
    parser.add_argument("--level", type=float, default=0.95, help="confidence level (default 0.95)")
    parser.add_argument("--detail", action="store_true", help="also print each sub-test, with its Holm-adjusted p")
    args = parser.parse_args(argv)
    if not 0 < args.level < 1:
        return cli.fail(f"--level {args.level}: a confidence level is between 0 and 1, e.g. 0.95")
    for claim in claims(results.load(args.storage, args.study), args.level):
        print(claim.line())
        if args.detail:
            print("\n".join(claim.detail()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
