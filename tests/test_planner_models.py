"""The planner asks the model families, not its own copy of them: a study's unset architecture
fields mean what they mean beside a model name, and baselines plan like RKCNNs."""

from __future__ import annotations

from rksearch.models import build, model_spec, parse
from rksearch.search.dryrun import describe
from rksearch.search.loader import loads
from rksearch.search.planner import Planner

STUDY = """\
name: defaults
data: {dataset: digits, batch_size: 32}
train: {epochs: 1}
model: {periods: 3}
space:
  stages: [2]
seeds: [0]
"""


def test_unset_growth_and_groups_mean_what_they_mean_beside_a_name() -> None:
    [trial] = Planner(loads(STUDY)[0]).plan()
    spec = parse("ERKNet-2x1 2x1 2x1", dataset="digits")
    assert trial.canonical == spec.canonical and "k=36, m=1" in trial.canonical
    named = STUDY.replace("model: {periods: 3}\n", "").replace("stages: [2]", "name: ['ERKNet-2x1 2x1 2x1']")
    assert [t.key for t in Planner(loads(named)[0]).plan()] == [trial.key]  # one trial, however written


def test_a_named_baseline_is_planned_from_its_canonical_string() -> None:
    text = STUDY.replace("model: {periods: 3}\n", "").replace("stages: [2]", "name: [DenseNet-BC-40]\n  growth: [6]")
    [trial] = Planner(loads(text)[0]).plan()
    assert trial.runnable and trial.model_name == "DenseNet-BC-40"
    assert trial.config["model"] == {"name": trial.canonical, "knobs": {}}
    spec = model_spec(trial.canonical)
    assert spec == model_spec("DenseNet-BC-40", k=6) and trial.cost.params == sum(
        p.numel() for p in build(trial.canonical).parameters())
    [header, row] = describe([trial])
    assert row.split()[1] == "DenseNet-BC-40" and row.endswith("train")


def test_a_study_can_search_update_counts_with_an_explicit_period() -> None:
    text = STUDY.replace("stages: [2]", "stages: [2]\n  form: [update]\n  iterations: [0, 1]")
    trials = Planner(loads(text.replace("model: {periods: 3}", "model: {periods: 3, growth: 4}"))[0]).plan()
    assert [t.problem for t in trials][0].startswith("invalid architecture: iterations: u = 0 in every period")
    mixed = Planner(loads(text.replace("[0, 1]", "{values: [0, 1], per_period: true}"))[0]).plan()
    assert any("u=0,1,1" in t.canonical and t.runnable for t in mixed)


def test_an_invalid_named_model_is_labelled_by_its_name() -> None:
    """A study whose fixed `model: {name: ...}` is refused shows that name in the dry run, with
    the family's reason, not an anonymous 'RKCNN (...)'; a neck given in channels is refused there
    as beside a name."""
    base = STUDY.replace("model: {periods: 3}\n", "").replace("space:\n  stages: [2]\n", "")
    for model, reason in (("{name: Foo-1}", "unknown model name 'Foo-1'"),
                          ("{name: DenseNet-BC-41}", "depth 41 is not 6n + 4"),
                          ("{name: 'ERKNet-2x1 2x1 2x1', neck: 128}", "neck: 128 is a multiple of k, at most 8")):
        [trial] = Planner(loads(base.replace("seeds:", f"model: {model}\nseeds:"))[0]).plan()
        name = model.split("name: ")[1].split(",")[0].rstrip("}").strip("'")
        assert trial.model_name == trial.canonical == name and not trial.runnable
        assert trial.problem.startswith("invalid architecture: ") and reason in trial.problem
        [header, row] = describe([trial])
        assert f" {name} " in row and reason in row
