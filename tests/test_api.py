"""`rksearch.run_study` from Python: twice in one process, errors raised, the dry run as a frame.

The first call starts its own Ray and shuts it down; the second starts another, as a notebook
cell run again would.  Two trials of one epoch on 64 digits images: the time is Ray's start-up.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import ray

import rksearch
from rksearch import results
from rksearch.errors import RksearchError

QUICKSTART = Path(__file__).parents[1] / "studies" / "quickstart.yaml"

pytestmark = pytest.mark.timeout(300)

TINY = """\
name: api-twice
data: {{dataset: digits, batch_size: 32, limit_train: 64, limit_val: 64}}
train: {{epochs: 1}}
model: {{periods: 1, steps: 1, stages: 1}}
space: {{growth: [4, 6]}}
resources: {{cpu: 1}}
storage: {{checkpoints: {checkpoints}}}
seeds: [0]
"""


@pytest.fixture
def study_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY.format(checkpoints=tmp_path / "runs"))
    return path


def test_import_rksearch_stays_cheap() -> None:
    code = "import sys, rksearch; assert not {'torch', 'ray', 'pandas'} & set(sys.modules), sys.modules.keys()"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_run_study_twice_in_one_process_returns_what_results_load_reads(study_file: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'api.db'}"
    on_sigterm = signal.getsignal(signal.SIGTERM)
    first = rksearch.run_study(study_file, storage=url, preflight=False)
    assert not ray.is_initialized()  # the Ray it started is gone, so a second call starts its own
    pd.testing.assert_frame_equal(first, results.load(url, study="api-twice"))
    assert len(first) == 2 and set(first["status"]) == {"completed"} and set(first["epochs"]) == {1}

    renamed = rksearch.run_study(study_file, ["name=api-again", "space.growth=[4]"], storage=url, preflight=False)
    assert list(renamed["study"]) == ["api-again"] and list(renamed["growth"]) == [4]

    # Ray's log file is replaced on each call, never added to the last one's
    assert all(len(logging.getLogger(name).handlers) <= 1 for name in ("ray", "ray.tune", "ray.train"))
    assert signal.getsignal(signal.SIGTERM) == on_sigterm
    with pytest.raises(RksearchError, match="already exists"):  # the same name again needs resume
        rksearch.run_study(study_file, storage=url, preflight=False, storage_path=str(tmp_path / "refused"))
    assert not ray.is_initialized()
    assert not (tmp_path / "refused").exists()  # refused before Ray started (its log goes there)


def test_errors_are_raised_not_exits(tmp_path: Path) -> None:
    with pytest.raises(RksearchError, match="cannot read the study file"):
        rksearch.run_study(tmp_path / "missing.yaml")
    with pytest.raises(RksearchError, match="epochs"):
        rksearch.run_study(QUICKSTART, ["train.epochs=0"], dry_run=True)


def test_the_dry_run_is_the_plan_as_a_frame() -> None:
    plan = rksearch.run_study(QUICKSTART, ["train.epochs=1"], dry_run=True)
    assert plan.attrs["dims"] == ["form", "stages", "growth"]
    assert list(plan.columns) == ["study", "trial_key", "model_name", "canonical", "form", "stages", "growth",
                                  "seed", "params", "flops", "macs", "memory", "status", "error"]
    assert (plan["status"] == "planned").sum() == 10 and (plan["status"] == "skipped").sum() == 2
    assert plan.loc[plan["status"] == "skipped", "error"].str.contains("clique form needs s >= 2").all()
