"""The engine end to end on CPU: tiny studies through Ray Tune into SQLite, read back from the database.

Every trial is a few-hundred-parameter RKCNN on 64 digits images for 1-3 epochs, so the time is
Ray's (worker start-up), not training.  One Ray (tests/raycluster.py) serves every test here but
the resume test, whose driver is a real subprocess with its own Ray that the test kills.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import driver
import optuna
import pytest
import ray
import sqlalchemy as sa
import yaml
from raycluster import ray_cluster  # noqa: F401  (the session fixture)

from rksearch import results
from rksearch.search.engine import run_study
from rksearch.search.loader import loads
from rksearch.search.planner import Planner
from rksearch.store.schema import epochs, studies, trials
from rksearch.training import checkpoint, environment

pytestmark = pytest.mark.timeout(300)

TINY = """\
name: {name}
data:
  dataset: digits
  batch_size: 32
  limit_train: 64
  limit_val: 64
train:
  epochs: 2
model:
  periods: 2
  steps: 1
space:
  stages: [1, 2]
  growth: [4, 6]
resources:
  cpu: 1
seeds: [0]
"""


def study_of(name: str, overrides: list[str] | None = None, extra: str = ""):
    return loads(TINY.format(name=name) + extra, overrides=overrides)


def run(url: str, tmp: Path, name: str, overrides: list[str] | None = None, extra: str = "", **kw):
    study, text = study_of(name, overrides, extra)
    return run_study(study, text, storage_url=url, storage_path=str(tmp / "ck"), preflight=False,
                     stream=io.StringIO(), **kw)


def rows(url: str, study: str) -> tuple[list[dict], list[dict]]:
    """This study's trial rows and epoch rows, straight from the tables."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            sid = conn.execute(sa.select(studies.c.id).where(studies.c.name == study)).scalar_one()
            t = [r._asdict() for r in conn.execute(sa.select(trials).where(trials.c.study_id == sid))]
            e = [r._asdict() for r in conn.execute(
                sa.select(epochs).join(trials, epochs.c.trial_id == trials.c.id).where(trials.c.study_id == sid))]
    finally:
        engine.dispose()
    return t, e


def assert_epochs_complete(trial_rows: list[dict], epoch_rows: list[dict]) -> None:
    """Each trained trial has exactly epochs 1..epochs_done, once each."""
    by_trial: dict[int, list[int]] = {}
    for e in epoch_rows:
        by_trial.setdefault(e["trial_id"], []).append(e["epoch"])
    for t in trial_rows:
        assert sorted(by_trial.get(t["id"], [])) == list(range(1, t["epochs_done"] + 1)), t["canonical"]


# ---- resume after the driver dies (first: no session Ray running beside it yet) --------------------

LONG = 100  # epochs of the second trial (~0.06 s each here): part-way through it is a state that holds for seconds


def _trial_rows(db: Path) -> list[dict]:
    """Every trial row in `db` ([] before the tables exist)."""
    if not db.exists():
        return []
    engine = sa.create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            return [r._asdict() for r in conn.execute(sa.select(trials))]
    except sa.exc.OperationalError:  # tables not created yet, or briefly locked
        return []
    finally:
        engine.dispose()


def _short_done_long_running(db: Path) -> bool:
    """True once the 2-epoch trial is completed and the LONG one is part-way (>= 1 epoch recorded)."""
    by_epochs = {t["dims"]["epochs"]: t for t in _trial_rows(db)}
    short, long = by_epochs.get(2), by_epochs.get(LONG)
    assert long is None or long["status"] != "completed", "the long trial finished before the kill"
    return (short is not None and short["status"] == "completed"
            and long is not None and long["status"] == "running" and long["epochs_done"] >= 1)


def test_resume_after_killing_the_driver(tmp_path: Path) -> None:
    path, db = tmp_path / "resume.yaml", tmp_path / "resume.db"
    doc = yaml.safe_load(TINY.format(name="resume"))
    # two trials, one at a time, in grid order: 2 epochs, then LONG; the kill falls inside the long one
    doc["space"] = {"stages": [1], "growth": [4], "epochs": [2, LONG]}
    doc["search"] = {"max_concurrent": 1}
    path.write_text(yaml.safe_dump(doc))
    cmd = driver.command(path, db, tmp_path / "ck")
    # its own session: killing the group ends the driver's Ray processes too, and nothing else
    driver.stop_when(cmd, tmp_path, ready=lambda: _short_done_long_running(db),
                     stop=lambda proc: os.killpg(proc.pid, signal.SIGKILL))
    before = {t["dims"]["epochs"]: t for t in _trial_rows(db)}
    assert before[2]["status"] == "completed" and before[LONG]["status"] == "running", before
    assert 1 <= before[LONG]["epochs_done"] < LONG

    again = driver.run(cmd + ["--resume"], tmp_path, timeout=200)
    assert again.returncode == 0, again.stderr[-3000:]
    assert re.search(r"\b1 done before\b", again.stdout), again.stdout[-3000:]
    trial_rows, epoch_rows = rows(f"sqlite:///{db}", "resume")
    after = {t["dims"]["epochs"]: t for t in trial_rows}
    assert len(trial_rows) == 2 and [after[2]["status"], after[LONG]["status"]] == ["completed"] * 2
    assert after[2] == before[2]  # the trial done before was left alone, not trained again
    assert after[LONG]["id"] == before[LONG]["id"] and after[LONG]["epochs_done"] == LONG
    assert len({(e["trial_id"], e["epoch"]) for e in epoch_rows}) == len(epoch_rows) == 2 + LONG
    assert_epochs_complete(trial_rows, epoch_rows)
    # the kept checkpoints the rows name exist and hold what they say, across the two runs
    for row in trial_rows:
        best, last = checkpoint.load(Path(row["best_checkpoint"])), checkpoint.load(Path(row["last_checkpoint"]))
        assert (best["epoch"], last["epoch"]) == (row["best_epoch"], row["epochs_done"])


# ---- with the session Ray ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, ray_cluster: None) -> tuple[str, Path, object, int]:  # noqa: F811
    """A 4-point grid with the largest point over max_params: 3 trained, 1 skipped."""
    tmp = tmp_path_factory.mktemp("e2e")
    url = f"sqlite:///{tmp / 'e2e.db'}"
    largest = max(t.cost.params for t in Planner(study_of("e2e")[0]).plan())
    out = run(url, tmp, "e2e", extra=f"budgets:\n  max_params: {largest - 1}\n")
    return url, tmp, out, largest


def test_grid_trains_into_sqlite_with_one_row_per_epoch(trained) -> None:
    url, _, out, largest = trained
    assert (out.planned, out.trained, out.skipped, out.reused, out.interrupted) == (4, 3, 1, 0, False)
    trial_rows, epoch_rows = rows(url, "e2e")
    done = [t for t in trial_rows if t["status"] == "completed"]
    assert len(trial_rows) == 4 and len(done) == 3
    assert all(t["epochs_done"] == 2 and 0 <= t["best_val_acc"] <= 1 and t["params"] < largest for t in done)
    assert len(epoch_rows) == 3 * 2
    assert len({(e["trial_id"], e["epoch"]) for e in epoch_rows}) == len(epoch_rows)
    assert_epochs_complete(trial_rows, epoch_rows)
    frame = results.load(url, "e2e")
    assert sorted(zip(frame.stages, frame.growth)) == [(1, 4), (1, 6), (2, 4)]
    assert set(frame.node) == {ray.get_runtime_context().get_node_id()}  # one local node ran them all


def optuna_trials(url: str, study: str) -> list[optuna.trial.FrozenTrial]:
    """The study's trials as Optuna's own API reads them from the same database."""
    storage = optuna.storages.RDBStorage(url)
    try:
        return optuna.load_study(study_name=study, storage=storage).get_trials()
    finally:
        storage.engine.dispose()


def test_a_grid_study_is_an_optuna_study_in_the_same_database(trained) -> None:
    url, _, _, _ = trained
    ours = {t["trial_key"]: t for t in rows(url, "e2e")[0] if t["status"] == "completed"}
    mirrored = optuna_trials(url, "e2e")  # the skipped trial is not one
    assert optuna.load_study(study_name="e2e", storage=url).metric_names == ["best_val_acc"]
    assert sorted(t.user_attrs["trial_key"] for t in mirrored) == sorted(ours)
    epoch_rows = rows(url, "e2e")[1]
    for t in mirrored:
        row = ours[t.user_attrs["trial_key"]]
        assert t.state == optuna.trial.TrialState.COMPLETE and t.value == row["best_val_acc"]
        assert t.params == row["dims"] and set(t.distributions) == {"stages", "growth"}
        assert t.user_attrs == {"trial_key": row["trial_key"], "model_name": row["model_name"],
                                "params": row["params"], "flops": row["flops"]}
        assert t.intermediate_values == {e["epoch"]: e["val_acc"] for e in epoch_rows if e["trial_id"] == row["id"]}


def test_over_budget_trial_is_recorded_as_skipped_with_its_cost_and_never_trained(trained) -> None:
    url, _, _, largest = trained
    trial_rows, epoch_rows = rows(url, "e2e")
    [skipped] = [t for t in trial_rows if t["status"] == "skipped"]
    assert skipped["dims"] == {"stages": 2, "growth": 6}
    assert skipped["params"] == largest and skipped["flops"] > 0 and "max_params" in skipped["error"]
    assert skipped["epochs_done"] == 0 and skipped["started_at"] is None
    assert not [e for e in epoch_rows if e["trial_id"] == skipped["id"]]


def test_reuse_links_earlier_results_instead_of_training(trained) -> None:
    url, tmp, _, _ = trained
    out = run(url, tmp, "e2e-again", extra="reuse: true\n", overrides=["space.growth=[4]"])
    assert (out.trained, out.reused, out.skipped) == (0, 2, 0)
    source_rows, source_epochs = rows(url, "e2e")
    copy_rows, copy_epochs = rows(url, "e2e-again")
    by_key = {t["trial_key"]: t for t in source_rows}
    assert len(copy_rows) == 2
    for t in copy_rows:
        origin = by_key[t["trial_key"]]
        assert t["status"] == "completed" and t["reused_from_id"] == origin["id"]
        assert t["best_val_acc"] == origin["best_val_acc"]
    assert len(copy_epochs) == 2 * 2
    assert len(optuna_trials(url, "e2e-again")) == 2  # reused trials are mirrored at the end of the run
    frame = results.load(url, "e2e-again")
    assert set(frame.reused_from) == {by_key[t["trial_key"]]["id"] for t in copy_rows}


def test_completed_trials_keep_test_accuracy_checkpoints_and_their_environment(trained) -> None:
    url, _, _, _ = trained
    frame = results.load(url, "e2e", detail=True)
    assert len(frame) == 3 and set(frame.validation) == {"holdout"}
    for trial in frame.itertuples():
        assert 0 <= trial.test_acc <= 1 and 0 <= trial.test_acc_final <= 1 and trial.best_epoch in (1, 2)
        # Tune kept the best epoch's checkpoint and the last one, and the row says where
        best, last = checkpoint.load(Path(trial.best_checkpoint)), checkpoint.load(Path(trial.last_checkpoint))
        assert (best["epoch"], last["epoch"]) == (trial.best_epoch, 2)
        assert best["metrics"]["val_acc"] == trial.best_val_acc
        assert trial.code_version == environment.code_version()[:50] == trial.environment["code_version"]
        assert {"rksearch", "git", "torch", "cuda", "cudnn", "device", "hostname", "node_id"} <= set(trial.environment)
        assert trial.environment["node_id"] == trial.node and trial.environment["device"].startswith("cpu")
        assert trial.config["runtime"]["amp"] == "off" and trial.config["runtime"]["device"] == "cpu"


def test_reuse_links_only_trials_of_the_same_code_version_unless_told_any(trained, tmp_path: Path) -> None:
    url, tmp, _, _ = trained
    copy = tmp_path / "other-code.db"
    shutil.copy(url.removeprefix("sqlite:///"), copy)
    other = f"sqlite:///{copy}"
    engine = sa.create_engine(other)
    with engine.begin() as conn:  # as if another rksearch had trained them
        conn.execute(trials.update().values(code_version="0.0.1+elsewhere"))
    engine.dispose()
    outputs = {}
    for reuse in ("true", "any"):
        study, text = study_of(f"reuse-{reuse}", ["space.growth=[4]"], extra=f"reuse: {reuse}\n")
        stream = io.StringIO()
        outputs[reuse] = (run_study(study, text, storage_url=other, storage_path=str(tmp_path / "ck"),
                                    preflight=False, stream=stream), stream.getvalue())
    same_code, printed = outputs["true"]
    assert (same_code.reused, same_code.trained) == (0, 2)
    assert "reuse: linked 0 completed trials; left 2 trained by another code version" in printed
    anything, printed = outputs["any"]
    assert (anything.reused, anything.trained) == (2, 0) and "reuse: linked 2 completed trials" in printed


def test_completed_trials_outside_the_plan_are_not_counted_as_done(trained, tmp_path: Path) -> None:
    """A study resumed after its keys changed (a new protocol or key scheme) says so, and retrains."""
    url, _, _, largest = trained
    copy = tmp_path / "old-keys.db"
    shutil.copy(url.removeprefix("sqlite:///"), copy)
    engine = sa.create_engine(f"sqlite:///{copy}")
    with engine.begin() as conn:  # as if an older rksearch had keyed them
        conn.execute(trials.update().where(trials.c.status == "completed").values(trial_key=trials.c.trial_key + "-old"))
    engine.dispose()
    study, text = study_of("e2e", extra=f"budgets:\n  max_params: {largest - 1}\n")
    stream = io.StringIO()
    out = run_study(study, text, storage_url=f"sqlite:///{copy}", storage_path=str(tmp_path / "ck"),
                    preflight=False, stream=stream, resume=True)
    assert (out.already_done, out.trained) == (0, 3)
    assert "3 completed trials of this study are not in its plan any more" in stream.getvalue()


def test_random_search_trains_num_samples(tmp_path: Path, ray_cluster: None) -> None:  # noqa: F811
    url = f"sqlite:///{tmp_path / 'r.db'}"
    out = run(url, tmp_path, "rand", ["search.algorithm=random", "search.num_samples=2", "train.epochs=1",
                                      "space.lr={loguniform: [0.01, 0.1]}"])
    trial_rows, epoch_rows = rows(url, "rand")
    assert out.trained == 2 and [t["status"] for t in trial_rows] == ["completed"] * 2
    assert len(epoch_rows) == 2 and len({t["dims"]["lr"] for t in trial_rows}) == 2


@pytest.mark.parametrize("algorithm", ["tpe", "multi_objective"])
def test_optuna_searches_train_num_samples(algorithm: str, tmp_path: Path, ray_cluster: None) -> None:  # noqa: F811
    url = f"sqlite:///{tmp_path / 'o.db'}"
    out = run(url, tmp_path, algorithm, [f"search.algorithm={algorithm}", "search.num_samples=2", "train.epochs=1"])
    trial_rows, epoch_rows = rows(url, algorithm)
    trained = [t for t in trial_rows if t["status"] == "completed"]
    assert out.trained == 2 and len(trained) == 2
    assert len({t["trial_key"] for t in trained}) == 2  # a point already trained is never trained again
    assert len(epoch_rows) == 2


def test_a_resumed_tpe_search_tells_its_sampler_every_earlier_trial(tmp_path: Path, ray_cluster: None) -> None:  # noqa: F811
    """The TPE study lives in the results database: a resume loads it, and a draw already
    trained is told to TPE again (as a repeat), never trained twice nor mirrored twice."""
    url = f"sqlite:///{tmp_path / 'tpe.db'}"
    tpe = ["search.algorithm=tpe", "train.epochs=1"]
    run(url, tmp_path, "tpe", [*tpe, "search.num_samples=2"])
    before = optuna_trials(url, "tpe")
    run(url, tmp_path, "tpe", [*tpe, "search.num_samples=3"], resume=True)
    after = optuna_trials(url, "tpe")
    assert after[:len(before)] == before  # every earlier trial still there, untouched
    trained = [t for t in after if "trial_key" in t.user_attrs]
    keys = [t.user_attrs["trial_key"] for t in trained]
    assert len(keys) == 3 and len(set(keys)) == 3 == len(rows(url, "tpe")[0])
    assert all(t.state == optuna.trial.TrialState.COMPLETE and t.intermediate_values == {1: t.value}
               for t in trained)  # fmt: skip
    assert all("repeat_of" in t.user_attrs or "skipped" in t.user_attrs for t in after if t not in trained)
    assert optuna.load_study(study_name="tpe", storage=url).metric_names == ["best_val_acc"]


def test_asha_stops_some_trials_early(tmp_path: Path, ray_cluster: None) -> None:  # noqa: F811
    url = f"sqlite:///{tmp_path / 'a.db'}"
    run(url, tmp_path, "asha", ["train.epochs=3", "space.growth=[4, 5, 6]", "scheduler.type=asha",
                                "scheduler.grace_period=1"])
    trial_rows, epoch_rows = rows(url, "asha")
    statuses = sorted(t["status"] for t in trial_rows)
    assert len(trial_rows) == 6 and set(statuses) <= {"completed", "pruned"}
    pruned = [t for t in trial_rows if t["status"] == "pruned"]
    assert pruned and "completed" in statuses
    assert all(t["epochs_done"] < 3 for t in pruned)
    assert all(t["epochs_done"] == 3 for t in trial_rows if t["status"] == "completed")
    assert_epochs_complete(trial_rows, epoch_rows)
    states = sorted(t.state.name.lower() for t in optuna_trials(url, "asha"))
    assert states == [s.replace("completed", "complete") for s in statuses]


def test_trial_workers_import_nothing_of_the_driver_nor_torchvision() -> None:
    """Every Ray worker imports the trainable's module before its first epoch; the driver's
    Optuna/SQL/plotting stack or torchvision there would cost seconds per worker start."""
    heavy = ("torchvision", "optuna", "sqlalchemy", "alembic", "matplotlib",
             "rksearch.search.engine", "rksearch.store.db", "rksearch.store.writer", "rksearch.store.callback",
             "rksearch.training.readers")
    code = f"import sys, rksearch.search.trainable; print(' '.join(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == []
