"""Trials that cannot fit in the memory one trial may use are skipped before training, with the
estimate, the limit and where the limit comes from (budgets.max_memory, resources.memory, or the
node's memory shared by the trials running on it at once); the dry run shows every estimate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rksearch.cost import human_bytes, training_memory
from rksearch.models import parse
from rksearch.search.loader import StudyError, loads
from rksearch.search.planner import Node, Planner, memory_limit, memory_per_trial, trials_at_once

QUICKSTART = Path(__file__).resolve().parent.parent / "studies" / "quickstart.yaml"
#: the quickstart's ERKNets, k = 4: 1, 2 and 3 stages per period (the sizes are the estimates' order)
SMALL = """\
name: memory
data: {dataset: digits, batch_size: 32}
model: {periods: 3, steps: 1, growth: 4}
space:
  stages: [1, 2, 3]
resources: {cpu: 1}
"""


def estimate(stages: int, batch: int = 32) -> int:
    return training_memory(parse(f"ERKNet-{stages}x1 {stages}x1 {stages}x1", k=4), batch, 32).total


def planned(text: str, node: Node | None = None) -> dict[int, object]:
    study, _ = loads(text)
    return {t.assignment["stages"]: t for t in Planner(study, node=node).plan()}


def test_max_memory_skips_the_trials_that_need_more_with_the_reason() -> None:
    budget = (estimate(2) + estimate(3)) // 2
    trials = planned(SMALL + f"budgets: {{max_memory: {budget}}}\n")
    assert [trials[s].runnable for s in (1, 2, 3)] == [True, True, False]
    assert [trials[s].memory.total for s in (1, 2, 3)] == [estimate(1), estimate(2), estimate(3)]
    assert trials[3].problem == (
        f"over memory: needs ~{human_bytes(estimate(3))} to train (batch 32, 32x32), more than the "
        f"{human_bytes(budget)} one trial may use (budgets.max_memory); set budgets.max_memory to change this")


def test_memory_figures_read_with_suffixes_and_max_memory_wins_over_resources() -> None:
    study, _ = loads(SMALL + "budgets: {max_memory: 4G}\n", overrides=["resources.memory=8G"])
    assert study.budgets.max_memory == 4_000_000_000 and study.resources.memory == 8_000_000_000
    assert memory_limit(study, Node(memory=1, cpus=1)).source == "budgets.max_memory"
    with pytest.raises(StudyError, match="resources.memory: .*'lots' is not a count"):
        loads(SMALL, overrides=["resources.memory=lots"])


def test_resources_memory_is_the_limit_when_no_budget_is_set() -> None:
    trials = planned(SMALL.replace("resources: {cpu: 1}", f"resources: {{cpu: 1, memory: {estimate(2) - 1}}}"))
    assert [trials[s].runnable for s in (1, 2, 3)] == [True, False, False]
    assert "(resources.memory); set budgets.max_memory or resources.memory to change this" in trials[2].problem


def test_node_memory_is_shared_by_the_trials_that_run_at_once() -> None:
    node = Node(memory=4 * estimate(2), cpus=4)  # cpu: 1 a trial -> 4 at once -> estimate(2) each
    trials = planned(SMALL, node)
    assert [trials[s].runnable for s in (1, 2, 3)] == [True, True, False]
    assert f"(node memory {human_bytes(node.memory)} / 4 trials at once)" in trials[3].problem
    assert all(t.runnable for t in planned(SMALL).values())  # no node, no figure: nothing to check

    study, _ = loads(SMALL, overrides=["search.max_concurrent=2", "resources.cpu=0.5"])
    assert trials_at_once(study, Node(memory=1, cpus=4)) == 2  # 8 CPU shares, but at most 2
    assert memory_per_trial(study, Node(memory=10, cpus=4)).bytes == 5
    study, _ = loads(SMALL, overrides=["resources.cpu=0.3"])
    assert trials_at_once(study, Node(memory=1, cpus=0.9)) == 3
    assert trials_at_once(study, Node(memory=1, cpus=0.2)) == 1  # never 0, even on a node too small


def test_gpu_trials_are_checked_only_against_an_explicit_figure() -> None:
    node = Node(memory=estimate(1), cpus=8, gpus=2)  # host memory that no trial fits in
    gpu_study, _ = loads(SMALL, overrides=["resources.gpu=0.5"])
    assert trials_at_once(gpu_study, node) == 4
    assert memory_limit(gpu_study, node) is None
    assert all(t.runnable for t in Planner(gpu_study, node=node).plan())
    gpu_study, _ = loads(SMALL, overrides=["resources.gpu=0.5", f"budgets.max_memory={estimate(2) - 1}"])
    assert sum(t.runnable for t in Planner(gpu_study, node=node).plan()) == 1


def test_a_searched_batch_size_prices_each_trial_at_its_own_batch() -> None:
    study, _ = loads(SMALL.replace("  stages: [1, 2, 3]", "  stages: [3]\n  batch_size: [8, 64]"),
                     overrides=[f"budgets.max_memory={estimate(3, 32)}"])
    small, large = sorted(Planner(study).plan(), key=lambda t: t.assignment["batch_size"])
    assert (small.memory.total, large.memory.total) == (estimate(3, 8), estimate(3, 64))
    assert small.runnable and "(batch 64, 32x32)" in large.problem
    assert large.memory.activations > 7 * small.memory.activations


def test_momentum_off_leaves_out_the_optimizer_state() -> None:
    study, _ = loads(SMALL, overrides=["train.momentum=0", "train.nesterov=false"])
    assert all(t.memory.optimizer == 0 < t.memory.gradients for t in Planner(study).plan())
    assert all(t.memory.optimizer == t.memory.gradients for t in planned(SMALL).values())


def test_memory_limits_leave_the_trial_keys_alone() -> None:
    """Keys identify trials in existing databases: these are the quickstart's.  They changed once
    on purpose, when the default validation became a holdout and the key began hashing the
    resolved runtime (precision, device type); a machine's memory must never change them."""
    study, _ = loads(QUICKSTART.read_text())
    keys = {t.key for t in Planner(study, node=Node(memory=1, cpus=1)).plan()}
    assert {"023753880b3f12b5a0840db3592c6651", "cb84f47d0e1a6cc14fb962b3e4012233",
            "5e2d188674d7300c335d7e2e591ed3f3"} <= keys
    budgeted, _ = loads(QUICKSTART.read_text(), overrides=["budgets.max_memory=1k", "resources.memory=1k"])
    assert {t.key for t in Planner(budgeted).plan()} == keys


def test_largest_ray_node_reads_ray_nodes() -> None:
    nodes = [{"Alive": True, "Resources": {"CPU": 4.0, "memory": 8e9}},
             {"Alive": True, "Resources": {"CPU": 16.0, "GPU": 2.0, "memory": 6.4e10}},
             {"Alive": False, "Resources": {"CPU": 64.0, "memory": 1e12}}]
    assert Node.largest_ray_node(nodes) == Node(memory=64_000_000_000, cpus=16.0, gpus=2.0)
    with pytest.raises(ValueError, match="no live Ray node"):
        Node.largest_ray_node(nodes[2:])
    here = Node.this_machine()
    assert here.memory > 2**28 and here.cpus >= 1


def test_dry_run_shows_the_memory_column_and_skips_what_this_machine_cannot_train() -> None:
    """The issue's study: ERKNet-60x1 x3, k = 64 (203 M params, 42.8 GB at batch 32) on digits,
    whose worker was killed; skipped on any machine with less than 42.8 GB per CPU."""
    override = "space={stages: [60], growth: [64]}"
    out = subprocess.run([sys.executable, "-m", "rksearch.run", str(QUICKSTART), "--dry-run", "--set", override],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0].split()[-3:] == ["GFLOPs", "memory", "plan"]
    seed, params, gflops, memory, plan = out[1].split("growth=64")[1].split(maxsplit=4)
    assert memory == human_bytes(training_memory(parse("ERKNet-60x1 60x1 60x1", k=64), 32, 32).total,
                                 compact=True) == "42.8G"
    study, _ = loads(QUICKSTART.read_text(), overrides=[override])
    limit = memory_per_trial(study, Node.this_machine())
    if limit.bytes >= training_memory(parse("ERKNet-60x1 60x1 60x1", k=64), 32, 32).total:  # a big machine
        assert out[-1] == "1 trials planned: 1 to train, 0 skipped"
        return
    assert plan == ("over memory: needs ~42.8 GB to train (batch 32, 32x32), more than the "
                    f"{human_bytes(limit.bytes)} one trial may use ({limit.source}); "
                    "set budgets.max_memory or resources.memory to change this")
    assert out[-1] == "1 trials planned: 0 to train, 1 skipped"
