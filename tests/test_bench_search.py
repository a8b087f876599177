"""benchmarks/bench_search.py's analysis on a hand-made recording and replay (no Ray, no database):
the compute to reach the grid's best, the best at a budget, the pick and the hypervolume are the
numbers its table reports, so they are checked against values worked out by hand."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pandas as pd
import pytest

_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_search.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_search", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def recording(bench):
    """Three trials of two epochs: a (cheap, 80%), b (the best, 95%), c (costly, 90%)."""
    trials = pd.DataFrame({
        "trial_key": ["a", "b", "c"], "flops": [100, 200, 400], "train_images": [10, 10, 10],
        "best_val_acc": [0.80, 0.95, 0.90], "test_acc": [0.79, 0.93, 0.91]})
    epochs = pd.DataFrame({
        "trial_key": ["a", "a", "b", "b", "c", "c"], "epoch": [1, 2, 1, 2, 1, 2],
        "val_acc": [0.70, 0.80, 0.60, 0.95, 0.85, 0.90], "seconds": [1.0, 1.0, 2.0, 2.0, 2.0, 2.0]})
    return bench.Recording.of(trials, epochs)


def test_replay_measures(bench):
    rec = recording(bench)
    assert rec.total_seconds == 10.0 and rec.best_val == 0.95
    assert rec.total_flops == 2 * 3 * 10 * (100 + 200 + 400)
    # a replay that tries c, then a (pruned after one epoch), then b
    epochs = pd.DataFrame({"trial_key": ["c", "c", "a", "b", "b"], "epoch": [1, 2, 1, 1, 2],
                           "val_acc": [0.85, 0.90, 0.70, 0.60, 0.95]})
    trials = pd.DataFrame({"trial_key": ["c", "a", "b"], "best_val_acc": [0.90, 0.70, 0.95],
                           "test_acc": [0.91, math.nan, 0.93]})
    c = bench.curve(epochs, rec)
    assert list(c.compute) == pytest.approx([0.2, 0.4, 0.5, 0.7, 0.9])
    assert list(c.trials) == [1, 1, 2, 3, 3]
    hit = bench.first_reach(c, rec.best_val)
    assert hit.compute == pytest.approx(0.9) and hit.trials == 3
    assert bench.best_at(c, 0.1) != bench.best_at(c, 0.1)  # NaN: not one epoch fits in 10%
    assert bench.best_at(c, 0.5) == 0.90
    m = bench.measure(trials, epochs, rec)
    assert m["reach"] == pytest.approx(0.9) and m["picked_test"] == 0.93 and m["trained"] == 3
    # within half a point: 0.95 reaches a target of 0.954, not one of 0.956
    assert bench.first_reach(c, 0.954) is not None and bench.first_reach(c, 0.956) is None


def test_pick_is_on_validation(bench):
    """The pick is the best validation accuracy even when another trial tests better."""
    trials = pd.DataFrame({"trial_key": ["x", "y"], "best_val_acc": [0.9, 0.8], "test_acc": [0.7, 0.99]})
    assert bench.picked(trials).trial_key == "x"


def test_hypervolume(bench):
    assert bench.hypervolume([(0.8, 50.0)], 100.0) == pytest.approx(0.4)
    # the 0.9 point costs the reference: it adds nothing; a dominated point adds nothing either
    assert bench.hypervolume([(0.5, 25.0), (0.9, 100.0), (0.4, 50.0)], 100.0) == pytest.approx(0.375)
    assert bench.hypervolume([], 100.0) == 0.0
    rec = recording(bench)
    # the grid: a 0.8 at 1/4 of the largest FLOPs, b 0.95 at 1/2: 0.8 x 1/4 + 0.95 x 1/2
    assert rec.hypervolume == pytest.approx(0.8 * 0.25 + 0.95 * 0.5)


def test_never_reaching_is_the_median_when_most_never_do(bench):
    assert bench.median_reach(pd.Series([0.3, math.nan, math.nan])) == math.inf
    assert bench.median_reach(pd.Series([0.3, 0.5, math.nan])) == 0.5


def test_the_chosen_asha_defaults_fit_short_studies() -> None:
    """bench_search chose grace_period 4 (reduction 3); a study training fewer epochs gets them
    all as its grace period rather than a Ray assertion, and one that sets more is refused."""
    from rksearch.search.loader import StudyError, loads

    text = "name: s\ndata: {dataset: digits}\ntrain: {epochs: %d}\nspace: {stages: [1, 2]}\nscheduler: %s\n"
    study, _ = loads(text % (8, "{type: asha}"), source="<s>")
    assert (study.scheduler.grace_period, study.scheduler.reduction_factor) == (4, 3)
    assert loads(text % (3, "{type: asha}"), source="<s>")[0].scheduler.grace_period == 3
    with pytest.raises(StudyError, match="grace_period: 5 epochs, but trials train at most 3"):
        loads(text % (3, "{type: asha, grace_period: 5}"), source="<s>")


def test_rank_agreement(bench):
    """Epoch 2 ranks the trials exactly as the last epoch does, epoch 1 exactly backwards."""
    epochs = pd.DataFrame({"trial_key": list("aaabbbccc"), "epoch": [1, 2, 3] * 3,
                           "val_acc": [0.3, 0.5, 0.9, 0.2, 0.4, 0.8, 0.1, 0.3, 0.7]})
    epochs.loc[epochs.epoch == 1, "val_acc"] = [0.1, 0.2, 0.3]
    agreement = bench.rank_agreement(epochs)
    assert agreement[1] == pytest.approx(-1.0) and agreement[2] == pytest.approx(1.0) and agreement[3] == 1.0
