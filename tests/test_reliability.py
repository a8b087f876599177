"""Faults injected for real: full disks, a terminated driver, missing data, diverging trials.

Each fault test runs what a user runs (a real driver, or `run_study` on a real Ray) against a
real fault: a small tmpfs filled to the brim for a full disk (skipped, with the reason, where
``mount`` is refused), SQLite's ``max_page_count`` for a database that cannot grow, SIGTERM to
the driver, a data set whose files are not there yet, a learning rate that makes the loss
infinite.  What each one shows is tabulated in docs/reliability.md.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import driver
import pandas as pd
import pytest
import sqlalchemy as sa
from raycluster import ray_cluster  # noqa: F401  (the module fixture)
from storeload import describe, epoch_result
from test_data import write_cifar10

from rksearch import results
from rksearch.search.engine import run_study
from rksearch.search.loader import loads
from rksearch.search.planner import Planner
from rksearch.search.progress import ProgressView
from rksearch.store import StoreError, open_store
from rksearch.store.journal import JOURNAL_NAME

pytestmark = pytest.mark.timeout(400)

TINY = """\
name: {name}
data: {{dataset: digits, batch_size: 32, limit_train: 64, limit_val: 64}}
train: {{epochs: 3}}
model: {{periods: 2, steps: 1}}
space: {{stages: [1, 2], growth: [4, 6]}}
resources: {{cpu: 1}}
failure: {{max_failures: 0}}
"""


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MB tmpfs of this test's own: a disk that can really be filled."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill ({done.stderr.strip() or 'mount refused'}); run as root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(disk: Path, leave_bytes: int) -> Path:
    """Fill `disk` until `leave_bytes` are free; the filler file, to delete for 'space freed'."""
    filler = disk / "filler"
    free = shutil.disk_usage(disk).free
    with open(filler, "wb") as out:
        out.write(b"\0" * max(free - leave_bytes, 0))
    return filler


def assert_all_trained(db: Path, name: str, trials: int, epochs: int) -> None:
    status, rows, pairs = driver.state(db, name)
    assert status == "completed"
    assert [r["status"] for r in rows] == ["completed"] * trials, [(r["status"], r["error"]) for r in rows]
    assert len(pairs) == len(set(pairs)) == trials * epochs  # every epoch exactly once
    assert all(r["epochs_done"] == epochs for r in rows)


# ---- 1. the database on a full disk ----------------------------------------------------------

def test_a_trial_id_is_cached_only_once_its_row_is_committed(tmp_path: Path) -> None:
    """The write that fails on a full database must not leave a phantom trial id behind."""
    url = f"sqlite:///{tmp_path / 'full.db'}"
    store = open_store(url)
    study = store.begin_study("s", "x")
    limit = {"pages": 0}

    @sa.event.listens_for(store.engine, "begin")
    def _no_growth(conn: sa.Connection) -> None:  # the database may not grow past `limit`
        if limit["pages"]:
            conn.exec_driver_sql(f"PRAGMA max_page_count = {limit['pages']}")

    with store.engine.connect() as conn:
        limit["pages"] = conn.exec_driver_sql("PRAGMA page_count").scalar()
    info = describe({"key": "k" * 64, "k": 12, "big": "x" * 50_000})  # a row larger than any free page
    with pytest.raises(sa.exc.OperationalError, match="full"):
        store.trial_started(study, info)
    # before the fix the id of the rolled-back row stayed cached, and this failed on FOREIGN KEY
    with pytest.raises(StoreError, match="trial_started must come first"):
        store.record_epoch(study, info.trial_key, epoch_result(0, 1))
    limit["pages"] = 0
    store.engine.dispose()  # new connections: no page limit
    store.trial_started(study, info)
    store.record_epoch(study, info.trial_key, epoch_result(0, 1))
    assert store.trial_statuses(study) == {info.trial_key: "running"}
    store.close()


@pytest.mark.ray
def test_a_database_on_a_full_disk_loses_nothing_and_resumes(tmp_path: Path, small_disk: Path) -> None:
    text = TINY.format(name="full-db")
    (tmp_path / "s.yaml").write_text(text)
    db = small_disk / "r.db"
    store = open_store(f"sqlite:///{db}")  # the schema and the study row fit; the results will not
    store.begin_study("full-db", text)
    store.close()
    filler = fill(small_disk, leave_bytes=60_000)
    cmd = driver.command(tmp_path / "s.yaml", db, tmp_path / "ck", "--resume")
    first = driver.run(cmd, tmp_path)
    assert first.returncode == 1, first.stderr[-3000:]
    assert "Traceback" not in first.stderr, first.stderr[-3000:]
    [line] = driver.error_lines(first.stderr)
    assert "cannot be recorded yet" in line and "continue with" in line, line
    journal = tmp_path / "ck" / "full-db" / JOURNAL_NAME
    assert journal.stat().st_size > 0  # the results are there, durably, not in the database
    status, rows, _ = driver.state(db, "full-db")
    assert status != "completed" and sum(r["status"] == "completed" for r in rows) < 4

    filler.unlink()  # space freed: the resume records the journal, then finishes the study
    again = driver.run(cmd, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert_all_trained(db, "full-db", trials=4, epochs=3)
    assert not journal.exists()


# ---- 7. checkpoint storage full --------------------------------------------------------------

@pytest.mark.ray
def test_full_checkpoint_storage_interrupts_the_study_in_one_line_and_resumes(tmp_path: Path,
                                                                               small_disk: Path) -> None:
    (tmp_path / "s.yaml").write_text(TINY.format(name="full-ck"))
    db = tmp_path / "r.db"
    filler = fill(small_disk, leave_bytes=150_000)  # Tune's first files fit, the checkpoints do not
    cmd = driver.command(tmp_path / "s.yaml", db, small_disk / "ck")
    first = driver.run(cmd, tmp_path)
    assert first.returncode == 1, first.stderr[-3000:]
    assert "Traceback" not in first.stderr, first.stderr[-3000:]
    [line] = driver.error_lines(first.stderr)
    assert "storage full" in line and "No space left on device" in line and "--resume" in line, line
    assert driver.state(db, "full-ck")[0] == "interrupted"

    filler.unlink()
    again = driver.run(cmd + ["--resume"], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert_all_trained(db, "full-ck", trials=4, epochs=3)


# ---- 6. the driver ends: never a study left running ------------------------------------------

@pytest.mark.ray
def test_sigterm_leaves_the_study_interrupted_with_the_resume_command(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(TINY.format(name="term"))
    db = tmp_path / "r.db"
    cmd = driver.command(tmp_path / "s.yaml", db, tmp_path / "ck", "--set", "train.epochs=200")
    returncode, err = driver.stop_when(cmd, tmp_path, ready=lambda: bool(driver.state(db, "term")[2]),  # training
                                       stop=lambda proc: proc.send_signal(signal.SIGTERM))
    assert returncode == 130 and "Traceback" not in err, err[-3000:]
    assert "continue with" in err and "--resume" in err
    assert driver.state(db, "term")[0] == "interrupted"


@pytest.mark.ray
def test_workers_killed_for_memory_are_failed_out_of_memory_and_resume_trains_them(tmp_path: Path) -> None:
    """Ray's memory monitor kills the workers for real: with its threshold at 2 % of the node's
    memory every trial's worker is over it, so the kill comes without using any memory."""
    (tmp_path / "s.yaml").write_text(TINY.format(name="oom"))
    db = tmp_path / "r.db"
    cmd = driver.command(tmp_path / "s.yaml", db, tmp_path / "ck")
    first = driver.run(cmd, tmp_path, RAY_memory_usage_threshold="0.02", RAY_memory_monitor_refresh_ms="100")
    assert first.returncode == 0 and "Traceback" not in first.stderr, first.stderr[-3000:]
    status, rows, _ = driver.state(db, "oom")
    assert status == "completed"  # the study went on to its end, every trial recorded
    assert [(r["status"], r["failure"]) for r in rows] == [("failed", "out_of_memory")] * 4
    assert "4 failed" in first.stdout

    again = driver.run(cmd + ["--resume"], tmp_path)  # enough memory now: out of memory is retried
    assert again.returncode == 0, again.stderr[-3000:]
    assert_all_trained(db, "oom", trials=4, epochs=3)


# ---- 3. failed trials: infrastructure faults retried, diverged ones only when asked ------------

def _run(tmp: Path, text: str, **kw):
    study, study_text = loads(text)
    return run_study(study, study_text, storage_url=f"sqlite:///{tmp / 'r.db'}", storage_path=str(tmp / "ck"),
                     preflight=False, stream=io.StringIO(), **kw)


CIFAR = """\
name: cifar-later
data: {{dataset: cifar10, root: {root}, batch_size: 4, validation: test}}
train: {{epochs: 1}}
model: {{periods: 1, steps: 1, stages: 1, growth: 4}}
resources: {{cpu: 1}}
failure: {{max_failures: 0}}
"""


@pytest.mark.ray
def test_a_trial_whose_data_was_missing_trains_on_resume(tmp_path: Path, ray_cluster: None) -> None:  # noqa: F811
    text = CIFAR.format(root=tmp_path / "data")
    first = _run(tmp_path, text)
    [row] = results.load(f"sqlite:///{tmp_path / 'r.db'}", "cifar-later", status=None).to_dict("records")
    assert (row["status"], row["failure"]) == ("failed", "data_missing")
    assert pd.isna(row["best_val_acc"]) and pd.isna(row["best_val_error"])  # nothing measured: no accuracy
    assert first.complete and first.trained == 1  # the study ran to its end; the trial failed

    write_cifar10(tmp_path / "data")  # the files arrive
    again = _run(tmp_path, text, resume=True)
    assert (again.trained, again.already_done, again.skipped) == (1, 0, 0)
    [row] = results.load(f"sqlite:///{tmp_path / 'r.db'}", "cifar-later", status=None).to_dict("records")
    assert (row["status"], row["failure"], row["error"]) == ("completed", None, None)


@pytest.mark.ray
def test_a_diverged_trial_stays_failed_unless_retry_failed(tmp_path: Path, ray_cluster: None) -> None:  # noqa: F811
    text = TINY.format(name="nan").replace("train: {epochs: 3}", "train: {epochs: 2, lr: 1.0e30}").replace(
        "space: {stages: [1, 2], growth: [4, 6]}", "space: {stages: [1]}")
    first = _run(tmp_path, text)
    url = f"sqlite:///{tmp_path / 'r.db'}"
    [row] = results.load(url, "nan", status=None).to_dict("records")
    assert (row["status"], row["failure"]) == ("failed", "diverged") and pd.isna(row["best_val_acc"])
    assert first.trained == 1

    resumed = _run(tmp_path, text, resume=True)
    assert (resumed.trained, resumed.already_done) == (0, 1)  # not the machine's fault: not re-run
    retried = _run(tmp_path, text, resume=True, retry_failed=True)
    assert (retried.trained, retried.already_done) == (1, 0)
    [again] = results.load(url, "nan", status=None).to_dict("records")
    assert again["finished_at"] > row["finished_at"] and again["failure"] == "diverged"

    shown = subprocess.run([os.sys.executable, "-m", "rksearch.results", "show", "nan", "--storage", url],
                           capture_output=True, text=True, env=driver.env(), timeout=120)
    assert shown.returncode == 0 and "diverged" in shown.stdout and "training loss became" in shown.stdout


@pytest.mark.ray
def test_an_optuna_trial_cut_short_ends_interrupted_and_the_resumed_search_completes(
        tmp_path: Path, ray_cluster: None) -> None:  # noqa: F811
    text = TINY.format(name="tpe") + "search: {algorithm: tpe, num_samples: 2}\n"
    study, study_text = loads(text)
    store = open_store(f"sqlite:///{tmp_path / 'r.db'}")  # what a SIGKILLed Optuna driver leaves
    study_id = store.begin_study("tpe", study_text)
    left = Planner(study).resolve({"stages": 2, "growth": 6}, 0)
    store.trial_started(study_id, left.info())
    store.close()
    run = _run(tmp_path, text, resume=True)
    assert run.complete and (run.trained, run.already_done) == (2, 0), run
    rows = results.load(f"sqlite:///{tmp_path / 'r.db'}", "tpe", status=None)
    assert "running" not in set(rows["status"]) and (rows["status"] == "completed").sum() == 2
    abandoned = rows[rows["trial_key"] == left.key]
    assert abandoned["status"].iloc[0] == "completed" or abandoned["failure"].iloc[0] == "interrupted"


# ---- 9. counts -------------------------------------------------------------------------------

@pytest.mark.ray
def test_counts_after_a_resume_are_exact(tmp_path: Path, ray_cluster: None) -> None:  # noqa: F811
    text = TINY.format(name="counts") + "budgets: {max_params: 2000}\n"  # stages 2, growth 6 is over
    first = _run(tmp_path, text)
    assert (first.trained, first.skipped, first.reused, first.already_done) == (3, 1, 0, 0)
    again = _run(tmp_path, text, resume=True)
    # before: already_done counted the skip too, and trained came out as 3 - 4 = -1
    assert (again.trained, again.skipped, again.reused, again.already_done) == (0, 1, 0, 3)
    assert again.complete


@pytest.mark.ray
def test_a_trial_skipped_for_memory_trains_once_it_fits(tmp_path: Path, ray_cluster: None) -> None:  # noqa: F811
    """Memory skips depend on the machine: a resume with room re-prices them instead of keeping the skip."""
    text = TINY.format(name="mem").replace("space: {stages: [1, 2], growth: [4, 6]}", "space: {stages: [1]}")
    first = _run(tmp_path, text + "budgets: {max_memory: 1k}\n")
    assert (first.trained, first.skipped) == (0, 1)
    [row] = results.load(f"sqlite:///{tmp_path / 'r.db'}", "mem", status=None).to_dict("records")
    assert row["status"] == "skipped" and "over memory" in row["error"]
    again = _run(tmp_path, text + "budgets: {max_memory: 10G}\n", resume=True)
    assert (again.trained, again.skipped, again.already_done) == (1, 0, 0) and again.complete
    [row] = results.load(f"sqlite:///{tmp_path / 'r.db'}", "mem", status=None).to_dict("records")
    assert (row["status"], row["error"], row["epochs"]) == ("completed", None, 3)


# ---- 10. the live view ignores failed trials ------------------------------------------------

class _Trial:
    def __init__(self, trial_id: str, status: str, last: dict) -> None:
        self.trial_id, self.status, self.last_result = trial_id, status, last


def test_the_live_best_ignores_failed_trials_and_stopped_trials_are_not_done() -> None:
    view = ProgressView("s", "best_val_acc", total=3, stream=io.StringIO())
    good = _Trial("a", "RUNNING", {})
    bad = _Trial("b", "RUNNING", {})
    view.on_trial_result(0, [good, bad], good, {"best_val_acc": 0.6, "model_name": "good", "trial_status": "running"})
    view.on_trial_result(0, [good, bad], bad, {"best_val_acc": 0.9, "model_name": "bad", "trial_status": "running"})
    assert view.best == (0.9, "bad")
    bad.status, bad.last_result = "TERMINATED", {"trial_status": "failed"}
    view.on_trial_result(0, [good, bad], bad, {"best_val_acc": 0.9, "model_name": "bad", "trial_status": "failed"})
    assert view.best == (0.6, "good")
    # a trial Tune ended while still running (the study stopped) is waiting for the resume, not done
    good.status, good.last_result = "TERMINATED", {"trial_status": "running"}
    line = view.line([good, bad, _Trial("c", "PENDING", {})])
    assert "1/3 done, 0 running, 2 pending, 1 failed" in line and "(good)" in line
