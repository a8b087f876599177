"""Every shipped study loads, dry-runs with exit status 0 and plans the trials its comments promise;
the Table-1 study prices the paper's ERKNet rows at the paper's numbers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rksearch.run import main
from rksearch.search.loader import load
from rksearch.search.planner import Planner

STUDIES = Path(__file__).resolve().parent.parent / "studies"
#: trials each study plans (dry run): independent of the code, counted from the study files
#: (the quickstart's clique points with s = 1 are invalid: skipped with the reason, not trained)
SKIPPED_INVALID = {"quickstart.yaml": 2, "digits_trends.yaml": 6}  # the clique form needs s >= 2
PLANNED = {
    "quickstart.yaml": 12,          # 2 forms x 3 stage counts x 2 growth rates
    "stage_sweep.yaml": 8,          # Table 1: 4 ERKNet + 4 IRKNet rows
    "table2.yaml": 12,              # 3 names x 4 growth rates
    "table3_imagenet.yaml": 3,      # 3 ImageNet ERKNets
    "ablation_components.yaml": 96,  # (2 x 8 + 16) configurations x 3 seeds
    "pareto_search.yaml": 64,       # num_samples
    "digits_trends.yaml": 48,       # 2 forms x 4 stage counts x 2 growth rates x 3 seeds
}
#: paper Table 1, ERKNets at k = 36, m = 1, multiscale, CIFAR-10: exact closed-form counts of the
#: printed 0.74M/0.66G, 0.83M/0.83G, 0.91M/0.87G, 0.99M/0.88G (docs/models.md, "Counting")
TABLE1_ERKNETS = {
    "ERKNet-6x1 6x1 6x1": (744_382, 663_720_048),
    "ERKNet-7x1 6x1 6x1": (826_534, 830_935_152),
    "ERKNet-7x1 7x1 6x1": (908_686, 872_738_928),
    "ERKNet-7x1 7x1 7x1": (990_838, 883_189_872),
}


def test_every_study_file_is_covered() -> None:
    assert sorted(p.name for p in STUDIES.glob("*.yaml")) == sorted(PLANNED)


@pytest.mark.parametrize("name", sorted(PLANNED))
def test_dry_run_plans_the_promised_trials(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = STUDIES / name
    study, _ = load(path)
    assert main([str(path), "--dry-run"]) == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    match = re.fullmatch(r"(\d+) trials planned: (\d+) to train, (\d+) skipped", summary)
    assert match, summary
    assert int(match.group(1)) == PLANNED[name]
    if study.budgets.max_params is None and study.budgets.max_flops is None:
        # only a budget or a documented invalid point may skip a trial in the shipped studies
        assert int(match.group(3)) == SKIPPED_INVALID.get(name, 0)


def _priced(path: Path, overrides: list[str] | None = None) -> dict[str, tuple[int, int]]:
    study, _ = load(path, overrides)
    return {t.model_name: (t.cost.params, t.cost.flops) for t in Planner(study).plan() if t.cost}


def test_stage_sweep_prices_table1_erknets_exactly() -> None:
    priced = _priced(STUDIES / "stage_sweep.yaml")
    assert {n: priced[n] for n in TABLE1_ERKNETS} == TABLE1_ERKNETS
    assert sum(n.startswith("IRKNet-") for n in priced) == 4


def test_stage_sweep_per_period_grid_override_contains_the_table1_rows() -> None:
    """The override its comment documents: every 6/7 combination, the paper's rows among them."""
    priced = _priced(STUDIES / "stage_sweep.yaml", ["name=stage-grid", "model.form=explicit",
                                                    "space={stages: {values: [6, 7], per_period: true}}"])
    assert len(priced) == 8
    assert {n: priced[n] for n in TABLE1_ERKNETS} == TABLE1_ERKNETS


def test_table3_models_follow_the_imagenet_recipe() -> None:
    study, _ = load(STUDIES / "table3_imagenet.yaml")
    trials = Planner(study).plan()
    for t in trials:
        knobs = t.canonical
        assert "k=32" in knobs and "m=2,4,8,16" in knobs.replace(" ", "") and "multiscale=false" in knobs, knobs
        assert t.config["optim"]["epochs"] == 90 and t.config["data"]["batch_size"] == 256
        assert [round(f * 90) for f in t.config["optim"]["milestones"]] == [30, 60]
