"""Honest statistics over replicate seeds: intervals of a mean, paired comparisons, Holm.

None of them invents an interval from one seed.  `mean_ci` gives a Student-t interval of the
mean over seeds (a bootstrap only where there are enough of them to resample); `paired`
compares two configurations seed by seed with a t interval and an exact sign-flip p-value;
`holm` adjusts a family of p-values.  Every resampling is seeded, so a report reproduces.

scipy.stats is imported where an interval or a test needs it, not with this module: importing
it takes 1.7 s, which every study's end-of-run summary (`analysis.report`) would otherwise pay
even when every configuration has one seed and there is nothing to compute.
"""

from __future__ import annotations

import inspect
import itertools
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

#: where `mean_ci` switches from the Student-t interval to a BCa bootstrap (see `mean_ci`)
BOOTSTRAP_MIN_N = 30

#: the seed of every resampling here (BCa bootstrap, random sign flips), so reports reproduce
RESAMPLING_SEED = 0

#: the most differences whose 2**n sign vectors `paired` enumerates for an exact p-value
EXACT_SIGN_FLIP_MAX_N = 16


def _seeded(function: Callable[..., Any]) -> dict[str, Any]:
    """The seeded-generator keyword of a scipy resampling function (`rng` from scipy 1.15 on)."""
    name = "rng" if "rng" in inspect.signature(function).parameters else "random_state"
    return {name: np.random.default_rng(RESAMPLING_SEED)}


def _finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    data = np.asarray(values, dtype=float).ravel()
    return data[~np.isnan(data)]


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be a fraction in (0, 1), e.g. 0.95, not {level!r}")


def _t_interval(data: np.ndarray, level: float) -> tuple[float, float]:
    """Student-t interval of the mean of `data` (n >= 2): mean -/+ t(1 - alpha/2, n-1) * s / sqrt(n)."""
    import scipy.stats

    n = data.size
    mean = float(data.mean())
    half = float(scipy.stats.t.ppf(0.5 + level / 2.0, n - 1)) * float(data.std(ddof=1)) / math.sqrt(n)
    return mean - half, mean + half


def mean_ci(values: Sequence[float] | np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Mean of `values` and a `level` confidence interval for it: (mean, low, high).

    NaNs are dropped.  No value gives (nan, nan, nan); one value gives (x, nan, nan): one seed
    says nothing about seed-to-seed spread, so no interval is invented (never a zero width).

    From 2 to BOOTSTRAP_MIN_N - 1 values (the usual 3-5 seeds): the Student-t interval,
    mean +/- t(1 - alpha/2, n - 1) * s / sqrt(n), which is exact for normal replicates and
    keeps its width honest at tiny n (mean_ci([0.93, 0.94, 0.95]) = (0.94, 0.9152, 0.9648):
    t(0.975, 2) = 4.303, s / sqrt(3) = 0.00577).

    From BOOTSTRAP_MIN_N = 30 values on: a BCa bootstrap (`scipy.stats.bootstrap`,
    method='BCa', 9999 resamples, seeded with RESAMPLING_SEED so a report reproduces), which
    no longer assumes normality.  The line sits at 30 because below it the bootstrap's
    resampling distribution is too coarse and too narrow to mean anything: with n = 3 there
    are only 10 distinct resample means, the percentile interval is about the sample's
    min..max and covers the mean far less often than it claims; the t interval is both
    better calibrated and reproducible there.  Constant data has a zero-width interval at any
    n >= 2 (the BCa acceleration is undefined for it, so it is not asked).
    """
    _check_level(level)
    data = _finite(values)
    if data.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(data.mean())
    if data.size < 2:
        return mean, math.nan, math.nan
    if data.size < BOOTSTRAP_MIN_N or np.all(data == data[0]):
        low, high = _t_interval(data, level)
        return mean, low, high
    import scipy.stats

    result = scipy.stats.bootstrap(
        (data,), np.mean, confidence_level=level, method="BCa", vectorized=True, axis=-1,
        **_seeded(scipy.stats.bootstrap),
    )  # fmt: skip
    return mean, float(result.confidence_interval.low), float(result.confidence_interval.high)


def bootstrap_ci(values: Sequence[float] | np.ndarray, confidence: float = 0.95, n_boot: int = 10_000,
                 seed: int = 0) -> tuple[float, float, float]:
    """Deprecated: use `mean_ci`, which this now returns (`n_boot` and `seed` are ignored).

    Its percentile bootstrap over three seeds returned their min and max, not a confidence
    interval; kept so that old analysis scripts run, and say why their intervals widened.
    """
    warnings.warn("rksearch.analysis.bootstrap_ci is deprecated: it is mean_ci now (a Student-t interval "
                  "below 30 values, BCa from 30 on)", DeprecationWarning, stacklevel=2)
    return mean_ci(values, confidence)


Verdict = Literal["higher", "lower", "inconclusive"]


@dataclass(frozen=True)
class Paired:
    """`paired`'s comparison of a against b over matched replicates (seeds).

    n            pairs with both values present
    diff         mean of a - b
    low, high    paired Student-t interval of diff (NaN for n < 2)
    p_value      two-sided sign-flip permutation p-value of diff (NaN for n = 0): exact, and
                 free of the normality the t interval assumes; at n seeds it is never below
                 2 / 2**n (0.25 at n = 3), so few seeds cannot make it small
    p_t          two-sided paired t-test p-value, the test of the interval (NaN for n < 2 or
                 differences that do not vary)
    effect_size  Cohen's d_z = mean(a - b) / sd(a - b) (NaN for n < 2 or sd = 0)
    verdict      'higher' (a > b: the interval lies above 0), 'lower' (below 0), else
                 'inconclusive' (the interval crosses 0, n < 2, or every difference is the
                 same: a zero-width interval is no evidence of a spread-free effect)
    """

    n: int
    diff: float
    low: float
    high: float
    p_value: float
    effect_size: float
    verdict: Verdict
    p_t: float = math.nan


def paired(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, level: float = 0.95
) -> Paired:
    """Compare `a` with `b` pair by pair (a[i] and b[i] share seed i): the differences a - b.

    Pairs where either value is NaN are dropped.  The interval is the paired Student-t one
    (`mean_ci`'s t interval on the differences, at any n); the p-value is the two-sided
    sign-flip permutation test of the mean difference: under 'no difference' each difference
    is as likely positive as negative, so p is the share of sign vectors whose |mean| is at
    least the observed one.  For n <= EXACT_SIGN_FLIP_MAX_N (16) all 2**n sign vectors are
    enumerated (exact: four differences of one sign give p = 2/16 = 0.125, the smallest p four
    seeds can give); above that, `scipy.stats.permutation_test` (permutation_type='samples',
    9999 random sign flips, seeded with RESAMPLING_SEED) estimates it.

    The effect size is Cohen's d_z (mean over s.d. of the differences).  Where the differences
    are all equal (s.d. 0 up to rounding) d_z would be +/-inf, which no table can use: it is
    NaN, and the zero-width interval carries the information instead.
    """
    _check_level(level)
    x = np.asarray(a, dtype=float).ravel()
    y = np.asarray(b, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"paired samples must have the same length, not {x.size} and {y.size}")
    d = (x - y)[~(np.isnan(x) | np.isnan(y))]
    return paired_differences(d, level)


def paired_differences(d: np.ndarray, level: float) -> Paired:
    """`paired` on differences already taken (no NaN): what `ablation` compares, cell by cell."""
    n = int(d.size)
    if n == 0:
        return Paired(0, math.nan, math.nan, math.nan, math.nan, math.nan, "inconclusive")
    diff = float(d.mean())
    p_value = _sign_flip_p(d)
    if n < 2:
        return Paired(n, diff, math.nan, math.nan, p_value, math.nan, "inconclusive")
    low, high = _t_interval(d, level)
    sd = float(d.std(ddof=1))
    degenerate = sd <= 1e-9 * float(np.abs(d).max()) or sd == 0.0  # all equal, up to rounding
    effect = math.nan if degenerate else diff / sd
    import scipy.stats

    p_t = math.nan if degenerate else float(2.0 * scipy.stats.t.sf(abs(diff) / (sd / math.sqrt(n)), n - 1))
    verdict: Verdict = "inconclusive" if degenerate else "higher" if low > 0 else "lower" if high < 0 else "inconclusive"
    return Paired(n, diff, low, high, p_value, effect, verdict, p_t)


def _sign_flip_p(d: np.ndarray) -> float:
    """Two-sided sign-flip permutation p-value of mean(d) (exact up to EXACT_SIGN_FLIP_MAX_N)."""
    observed = abs(float(d.mean()))
    tolerance = 1e-12 * max(1.0, float(np.abs(d).max()))  # sign vectors tying the observed mean count
    if d.size <= EXACT_SIGN_FLIP_MAX_N:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=d.size)))
        means = np.abs(signs @ d) / d.size
        return float(np.mean(means >= observed - tolerance))
    import scipy.stats

    result = scipy.stats.permutation_test(
        (d,), np.mean, permutation_type="samples", alternative="two-sided", vectorized=True, axis=-1,
        n_resamples=9999, **_seeded(scipy.stats.permutation_test),
    )  # fmt: skip
    return float(result.pvalue)


def holm(p_values: Sequence[float] | np.ndarray) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given (NaN passes through, uncounted).

    With m non-NaN p-values sorted ascending, the i-th smallest becomes
    max over j <= i of min(1, (m - j + 1) * p_(j)): monotone in p and capped at 1.  An adjusted
    p below alpha controls the family-wise error rate at alpha across the family.
    """
    p = np.asarray(p_values, dtype=float).ravel()
    out = np.full(p.shape, math.nan)
    present = np.flatnonzero(~np.isnan(p))
    m = present.size
    running = 0.0
    for rank, index in enumerate(present[np.argsort(p[present], kind="mergesort")]):
        running = max(running, min(1.0, (m - rank) * float(p[index])))
        out[index] = running
    return [float(v) for v in out]


__all__ = [
    "BOOTSTRAP_MIN_N",
    "EXACT_SIGN_FLIP_MAX_N",
    "RESAMPLING_SEED",
    "Paired",
    "Verdict",
    "bootstrap_ci",
    "holm",
    "mean_ci",
    "paired",
    "paired_differences",
]
