"""Study files and the plan they make, without Ray: errors say file:line, field and what is allowed;
a bad file or a dry run writes nothing; budgets, dedup and search counts shape the plan."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rksearch import run
from rksearch.space import Planner
from rksearch.study import StudyError, loads

#: a small valid study; the line numbers below are counted in this text
TINY = """\
name: tiny
data:
  dataset: digits
  batch_size: 32
  limit_train: 64
  limit_val: 64
train:
  epochs: 1
model:
  periods: 2
  steps: 1
space:
  stages: [1, 2]
  growth: [4]
resources:
  cpu: 1
seeds: [0]
"""


def problems(text: str, overrides: list[str] | None = None) -> list[str]:
    with pytest.raises(StudyError) as info:
        loads(text, source="s.yaml", overrides=overrides)
    return info.value.problems


def plan(text: str, overrides: list[str] | None = None) -> list:
    return Planner(loads(text, overrides=overrides)[0]).plan()


# ---- errors -------------------------------------------------------------------------------------

def test_unknown_key_names_its_line_and_the_allowed_keys() -> None:
    [line] = problems(TINY.replace("  epochs: 1\n", "  epochs: 1\n  epoch: 3\n"))
    assert line.startswith("s.yaml:9: train.epoch: unknown field 'epoch'; allowed: ")
    allowed = line.split("allowed: ")[1].split(", ")
    assert {"lr", "epochs", "schedule", "weight_decay"} <= set(allowed) and "epoch" not in allowed


def test_wrong_type_and_impossible_values_each_get_their_own_line() -> None:
    text = TINY.replace("batch_size: 32", "batch_size: many").replace("cpu: 1", "cpu: 0")
    lines = problems(text)
    assert len(lines) == 2
    assert lines[0].startswith("s.yaml:4: data.batch_size: ") and "integer" in lines[0]
    assert lines[1].startswith("s.yaml:16: resources.cpu: ") and "greater than 0" in lines[1]


@pytest.mark.parametrize("replace, expected", [
    (("stages: [1, 2]", "stages: {range: [3, 1]}"), "s.yaml:13: space.stages"),
    (("growth: [4]", "depth: [4]"), "s.yaml:12: space: 'depth' is not a search dimension; allowed: "),
    (("seeds: [0]", "seeds: [0]\nsearch:\n  algorithm: optuna"),
     "s.yaml:19: search.algorithm: 'optuna' is not allowed; allowed: 'grid', 'random', 'tpe', 'multi_objective'"),
    (("seeds: [0]", "seeds: [0]\nbudgets:\n  max_params: lots"), "s.yaml:19: budgets.max_params: 'lots' is not a count"),
    (("seeds: [0]", "seeds: [0]\nsearch:\n  algorithm: random"), "num_samples: required for algorithm random"),
])
def test_impossible_values(replace: tuple[str, str], expected: str) -> None:
    [line] = problems(TINY.replace(*replace))
    assert expected in line and line.startswith("s.yaml:")


@pytest.mark.parametrize("override, expected", [
    ("train.epochs", "--set train.epochs: write key.path=value"),
    ("train.epochs=abc", "--set train.epochs: train.epochs: "),
    ("name.x=1", "--set name.x: name is not a section"),
    ("train.epoch=2", "--set train.epoch: train.epoch: unknown field 'epoch'; allowed: "),
])
def test_bad_set_is_blamed_on_the_option(override: str, expected: str) -> None:
    [line] = problems(TINY, [override])
    assert line.startswith(expected)


def test_set_overrides_the_file_and_is_kept_in_the_text() -> None:
    study, text = loads(TINY, overrides=["train.epochs=3", "data.batch_size=16"])
    assert study.train.epochs == 3 and study.data.batch_size == 16
    assert text.startswith(TINY) and "--set train.epochs=3 --set data.batch_size=16" in text


def test_bad_file_prints_error_lines_and_writes_no_database(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)  # the study's default storage is sqlite:///rksearch.db in the cwd
    path = tmp_path / "bad.yaml"
    path.write_text(TINY.replace("  epochs: 1\n", "  epochs: 1\n  epoch: 3\n").replace("cpu: 1", "cpu: -1"))
    db = tmp_path / "x.db"
    assert run.main([str(path), "--storage", f"sqlite:///{db}"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"error: {path}:9: train.epoch: " + err[0].split(": train.epoch: ")[1]
    assert err[1].startswith(f"error: {path}:17: resources.cpu: ")  # one line lower: epoch: was added
    assert len(err) == 2 and "Traceback" not in capsys.readouterr().err
    assert not db.exists() and not (tmp_path / "rksearch.db").exists()
    assert run.main([str(tmp_path / "missing.yaml")]) == 2
    assert list(tmp_path.iterdir()) == [path]


def test_dry_run_prints_every_trial_and_creates_no_database(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "study.yaml"
    path.write_text(TINY.replace("growth: [4]", "growth: [4, 6]"))
    assert run.main([str(path), "--dry-run", "--storage", f"sqlite:///{tmp_path / 'x.db'}"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [line for line in out if line.strip()[:1].isdigit() and "ERKNet" in line]
    assert len(rows) == 4  # stages x growth
    for stages in ("1x1 1x1", "2x1 2x1"):
        for k in (4, 6):
            [row] = [r for r in rows if f"ERKNet-{stages} " in r and f"growth={k} " in r]
            params, gflops = row.split(f"growth={k}")[-1].split()[1:3]
            assert params.endswith("M") and float(params[:-1]) > 0 and float(gflops) > 0
    assert out[-1] == "4 trials planned: 4 to train, 0 skipped"
    assert list(tmp_path.iterdir()) == [path]


# ---- the plan -----------------------------------------------------------------------------------

def test_budget_skips_trials_over_max_params_but_keeps_their_cost() -> None:
    small, large = sorted(plan(TINY), key=lambda t: t.assignment["stages"])
    assert small.cost.params < large.cost.params  # two stages per period have more weights than one
    budget = (small.cost.params + large.cost.params) // 2
    kept, skipped = sorted(plan(TINY + f"budgets:\n  max_params: {budget}\n"), key=lambda t: t.assignment["stages"])
    assert kept.runnable and kept.key == small.key
    assert not skipped.runnable and "max_params" in skipped.problem
    assert skipped.cost == large.cost and skipped.key == large.key


def test_budget_suffixes_read_as_counts() -> None:
    assert all(t.runnable for t in plan(TINY + "budgets:\n  max_params: 1M\n  max_flops: 2G\n"))
    assert not any(t.runnable for t in plan(TINY + "budgets:\n  max_params: 0.1k\n"))


def test_repeated_values_give_one_trial() -> None:
    assert len(plan(TINY.replace("growth: [4]", "growth: [4, 4]"))) == 2
    assert len(plan(TINY, ["seeds=[0, 0]"])) == 2


def test_a_name_and_the_equivalent_fields_are_the_same_trial() -> None:
    [by_fields] = plan(TINY.replace("stages: [1, 2]", "stages: [2]"))
    named = TINY.replace("model:\n  periods: 2\n  steps: 1\n", "").replace("stages: [1, 2]", "name: ['ERKNet-2x1 2x1']")
    [by_name] = plan(named)
    assert by_name.runnable and by_name.key == by_fields.key and by_name.cost == by_fields.cost
    [other_seed] = plan(named, ["seeds=[1]"])
    assert other_seed.key != by_name.key  # the seed changes the result, so it is a different trial


def test_grid_is_the_product_times_seeds() -> None:
    trials = plan(TINY.replace("growth: [4]", "growth: [4, 6, 8]"), ["seeds=[0, 1]"])
    assert len(trials) == 2 * 3 * 2
    assert {(t.assignment["stages"], t.assignment["growth"], t.seed) for t in trials} == {
        (s, k, seed) for s in (1, 2) for k in (4, 6, 8) for seed in (0, 1)}


def test_random_draws_num_samples() -> None:
    text = TINY.replace("growth: [4]", "growth: [4]\n  lr: {loguniform: [0.001, 0.1]}")
    trials = plan(text, ["search.algorithm=random", "search.num_samples=5"])
    assert len(trials) == 5 and len({t.key for t in trials}) == 5
    assert all(0.001 <= t.assignment["lr"] <= 0.1 and t.config["optim"]["lr"] == t.assignment["lr"] for t in trials)
    assert problems(text) == [problems(text)[0]] and "continuous" in problems(text)[0]  # a grid cannot


# ---- never a traceback --------------------------------------------------------------------------

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 40), st.floats(-2, 2, allow_nan=False),
                     st.sampled_from(["", "x", "grid", "asha", "1.5M", "explicit", "digits", "synthetic", "[1"]))
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                           st.dictionaries(st.sampled_from(
                                                               ["values", "range", "type", "x", "uniform"]),
                                                               inner, max_size=2)), max_leaves=6)


def _paths(node: object, prefix: tuple = ()) -> list[tuple]:
    """Every key path of a parsed document (list items by index)."""
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            found += _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found += _paths(v, prefix + (i,))
    return found


@st.composite
def mutated(draw: st.DrawFn) -> str:
    doc = yaml.safe_load(TINY)
    doc["search"] = {"algorithm": "grid"}
    doc["scheduler"] = {"type": "fifo"}
    doc["budgets"] = {"max_params": "1M"}
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["delete", "change", "add"]))
        if action == "delete":
            del parent[path[-1]]
        elif action == "change":
            parent[path[-1]] = draw(_values)
        elif isinstance(parent, dict):
            parent[draw(st.sampled_from(["bogus", "epochs", "per_period", "seed"]))] = draw(_values)
        doc = copy.deepcopy(doc)
    return yaml.safe_dump(doc, sort_keys=False)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=mutated())
def test_mutated_studies_load_or_fail_cleanly(text: str, tmp_path: Path, capsys) -> None:
    try:
        loads(text, source="m.yaml")
    except StudyError as exc:
        assert exc.problems and all(p.startswith(("m.yaml", "--set")) for p in exc.problems)
    path = tmp_path / "m.yaml"
    path.write_text(text)
    db = tmp_path / "m.db"
    assert run.main([str(path), "--dry-run", "--storage", f"sqlite:///{db}"]) in (0, 2)
    assert not db.exists()
    err = capsys.readouterr().err
    assert "Traceback" not in err and all(line.startswith("error: ") for line in err.splitlines())
