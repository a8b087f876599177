"""analysis/claims.py on hand-made frames whose answer is known, and once through a real SQLite store.

The frames have the shape of `rksearch.results.load` (tests/studyframes.py's columns): ERKNets with
1-4 stages and IRKNets with 2-4, growth 4 or 8, three seeds.  Claim 1 reads the error's slope on
stages; claim 2 the implicit/explicit params and FLOPs at equal error.
"""

from __future__ import annotations

import math
import runpy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from studyframes import TRIAL_HEAD, TRIAL_TAIL, store_frame

ROOT = Path(__file__).resolve().parent.parent
claims = runpy.run_path(str(ROOT / "analysis" / "claims.py"))
SEEDS = (0, 1, 2)
DIMS = ["stages", "growth", "form"]


def frame(error, cost_factor=lambda seed: 1.0, seeds=SEEDS, validation="holdout") -> pd.DataFrame:
    """A study frame: `error(form, stages, growth, seed)` is each trial's test error; an explicit
    model costs 1000 * stages * (growth / 4)**2 params (FLOPs: 10x that) and an implicit one
    `cost_factor(seed)` times that."""
    rows = []
    for form, name, stage_values in (("explicit", "ERKNet", (1, 2, 3, 4)), ("clique", "IRKNet", (2, 3, 4))):
        for s in stage_values:
            for g in (4, 8):
                for seed in seeds:
                    factor = 1.0 if form == "explicit" else cost_factor(seed)
                    params = int(round(1000 * s * (g / 4) ** 2 * factor))
                    err = float(error(form, s, g, seed))
                    n = len(rows) + 1
                    rows.append({
                        "study": "trends", "trial_id": n, "trial_key": f"key{n}",
                        "model_name": f"{name}-{s}x1 {s}x1 {s}x1", "canonical": f"{name}-{s}x1 {s}x1 {s}x1 (k={g})",
                        "stages": s, "growth": g, "form": form,
                        "seed": seed, "params": params, "flops": 10 * params, "macs": 5 * params,
                        "validation": validation, "best_epoch": 5,
                        "best_val_acc": 1 - err, "best_val_error": err, "final_val_acc": 1 - err,
                        "final_val_error": err, "test_acc": 1 - err, "test_error": err,
                        "test_acc_final": 1 - err, "test_error_final": err, "epochs": 5, "wall_seconds": 10.0,
                        "status": "completed", "failure": None, "error": None, "device": "cpu", "node": "n1",
                        "code_version": "0.1.0", "started_at": pd.Timestamp("2024-01-01", tz="UTC"),
                        "finished_at": pd.Timestamp("2024-01-01", tz="UTC"), "reused_from": None,
                        "best_checkpoint": None, "last_checkpoint": None,
                    })  # fmt: skip
    out = pd.DataFrame(rows)[[*TRIAL_HEAD, *DIMS, *TRIAL_TAIL]]
    out.attrs["dims"] = DIMS
    return out


def jitter(form, s, g, seed) -> float:
    """Deterministic noise of +-0.01, different for every trial."""
    return 0.01 * math.sin(1.7 * s + 2.3 * g + 3.1 * seed + (0.5 if form == "clique" else 0.0))


def by_size(form, s, g, seed) -> float:
    """Error falls with log params (1000 * s * (g/4)**2 at cost factor 1): the same curve for both forms."""
    return 0.4 - 0.1 * math.log(s * (g / 4) ** 2)


def verdicts(df, **kw):
    return [c.verdict for c in claims["claims"](df, **kw)]


# ------------------------------------------------------------------------------- claim 1


def test_clear_downward_trend_is_supported():
    c1 = claims["claims"](frame(lambda f, s, g, seed: 0.30 - 0.05 * s + jitter(f, s, g, seed)))[0]
    assert c1.verdict == "supported"
    assert c1.n == 3
    assert c1.low < c1.estimate < c1.high < 0
    assert c1.estimate == pytest.approx(-0.05, abs=0.01)
    assert [t.name for t in c1.subtests] == ["explicit", "implicit"]
    assert all(t.high < 0 for t in c1.subtests)
    # the line shows the weakest form (highest upper bound), named in its text
    weakest = max(c1.subtests, key=lambda t: t.high)
    assert c1.high == weakest.high and f"{weakest.name} form): supported — " in c1.line()
    assert c1.pooled.mean == pytest.approx(np.mean([t.mean for t in c1.subtests]))


def test_flat_noise_is_inconclusive():
    # per seed a small slope of either sign: +0.01, -0.012, +0.003 (explicit), the reverse (implicit)
    slopes = {"explicit": (0.01, -0.012, 0.003), "clique": (-0.01, 0.011, -0.002)}
    c1 = claims["claims"](frame(lambda f, s, g, seed: 0.1 + slopes[f][seed] * s))[0]
    assert c1.verdict == "inconclusive"
    assert c1.low < 0 < c1.high
    assert all(t.low < 0 < t.high for t in c1.subtests)


def test_upward_trend_is_not_supported():
    c1 = claims["claims"](frame(lambda f, s, g, seed: 0.05 + 0.03 * s + jitter(f, s, g, seed)))[0]
    assert c1.verdict == "not supported"
    assert 0 < c1.low < c1.estimate < c1.high


def test_claim1_needs_every_form():
    # down in the explicit form, flat noise in the implicit one: not "supported" on one form
    slopes = (0.01, -0.012, 0.003)
    c1 = claims["claims"](frame(lambda f, s, g, seed: 0.3 - 0.05 * s + jitter(f, s, g, seed) if f == "explicit"
                                else 0.1 + slopes[seed] * s))[0]  # fmt: skip
    assert c1.verdict == "inconclusive"
    assert c1.subtests[0].high < 0 and "implicit form): inconclusive — " in c1.line()
    # down in one, clearly up in the other: any form that contradicts it makes it "not supported"
    c1 = claims["claims"](frame(lambda f, s, g, seed: 0.3 + (-0.05 if f == "explicit" else 0.05) * s
                                + jitter(f, s, g, seed)))[0]  # fmt: skip
    assert c1.verdict == "not supported"
    assert "implicit form): not supported — +0.04" in c1.line() and c1.deciding.p_holm < 0.05


def test_slope_is_averaged_over_growth_rates():
    # slope -0.02 at k=4 and -0.06 at k=8 for every seed and form: b = -0.04 exactly
    df = frame(lambda f, s, g, seed: 0.5 - (0.02 if g == 4 else 0.06) * s + 0.001 * seed)
    table = claims["stage_slopes"](claims["prepared"](df))
    np.testing.assert_allclose(table.to_numpy(), -0.04)
    assert claims["ols_slope"]([1, 2, 3], [3, 1, -1]) == pytest.approx(-2.0)
    assert math.isnan(claims["ols_slope"]([2, 2], [0.1, 0.2]))


# ------------------------------------------------------------------------------- claim 2


def test_implicit_needing_half_the_cost_is_supported():
    # implicit models reach each error at 0.5, 0.45, 0.55 x the explicit params (and FLOPs)
    c2 = claims["claims"](frame(by_size, cost_factor=lambda seed: (0.5, 0.45, 0.55)[seed]))[1]
    assert c2.verdict == "supported"
    expected = np.exp(np.mean(np.log([0.5, 0.45, 0.55])))
    assert math.exp(c2.estimate) == pytest.approx(expected, rel=1e-9)
    assert math.exp(c2.high) < 1
    assert [t.name for t in c2.subtests] == ["params", "flops"]
    line = c2.line()
    assert line.startswith("claim 2 (") and ": supported — 0.4" in line and line.endswith("(n=3)")


def test_implicit_needing_more_cost_is_not_supported():
    c2 = claims["claims"](frame(by_size, cost_factor=lambda seed: (2.0, 1.8, 2.2)[seed]))[1]
    assert c2.verdict == "not supported"
    assert 1 < math.exp(c2.low) < math.exp(c2.estimate) == pytest.approx(np.exp(np.mean(np.log([2, 1.8, 2.2]))))


def test_cost_ratio_around_one_is_inconclusive():
    c2 = claims["claims"](frame(by_size, cost_factor=lambda seed: (0.8, 1.25, 1.05)[seed]))[1]
    assert c2.verdict == "inconclusive"
    assert math.exp(c2.low) < 1 < math.exp(c2.high)


def test_cost_to_reach_uses_the_cheapest_front_model():
    cost, err = claims["front"](np.array([4.0, 1.0, 2.0, 3.0]), np.array([0.1, 0.5, 0.3, 0.35]))
    assert cost.tolist() == [1.0, 2.0, 4.0] and err.tolist() == [0.5, 0.3, 0.1]  # the 3.0 one is dominated
    reach = claims["cost_to_reach"](cost, err, np.array([0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05]))
    assert reach[:6].tolist() == [1.0, 1.0, 2.0, 2.0, 4.0, 4.0] and math.isnan(reach[6])


def test_fronts_without_common_range_give_no_value():
    # explicit errors 0.30-0.40, implicit 0.05-0.20: no error both reach without saturating
    explicit = pd.DataFrame({"params": [1.0, 2.0], "flops": [1.0, 2.0], "error": [0.4, 0.3]})
    implicit = pd.DataFrame({"params": [1.0, 2.0], "flops": [1.0, 2.0], "error": [0.2, 0.05]})
    assert math.isnan(claims["log_cost_ratio"](explicit, implicit, "params"))
    # no seed with a value: the claim cannot be decided, which is "inconclusive", never an error
    nothing = pd.DataFrame({"params": [math.nan] * 3, "flops": [math.nan] * 3})
    c2 = claims["decide"](nothing, 2, "text", 0.95, ratio=True)
    assert c2.verdict == "inconclusive" and c2.n == 0 and c2.line().endswith("nan [nan, nan] (n=0)")


# ------------------------------------------------------------------------------- output and errors


def test_selected_on_test_is_said():
    c1, c2 = claims["claims"](frame(lambda f, s, g, seed: 0.3 - 0.05 * s + jitter(f, s, g, seed),
                                    validation="test"))  # fmt: skip
    assert "selected on test" in c1.line() and "selected on test" in c2.line()


def test_too_few_seeds_is_an_error():
    with pytest.raises(claims["ClaimError"], match="1 seed .* at least 2"):
        claims["claims"](frame(lambda f, s, g, seed: 0.3 - 0.05 * s, seeds=(0,)))


def test_end_to_end_through_sqlite(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'claims.db'}"
    df = frame(lambda f, s, g, seed: by_size(f, s, g, seed) + jitter(f, s, g, seed) / 10,
               cost_factor=lambda seed: (0.5, 0.45, 0.55)[seed])  # fmt: skip
    store_frame(url, "trends", df, with_test=True)
    assert claims["main"](["--storage", url, "--study", "trends"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("claim 1 (") and lines[0].endswith("(n=3)")
    assert lines[1].startswith("claim 2 (") and ": supported — " in lines[1]
    assert all(" — " in line and "[" in line for line in lines)
    # a missing study or database: exit 2 with one error line
    assert claims["main"](["--storage", url, "--study", "nope"]) == 2
    assert claims["main"](["--storage", f"sqlite:///{tmp_path / 'absent.db'}", "--study", "trends"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(e.startswith("error: ") for e in err)
