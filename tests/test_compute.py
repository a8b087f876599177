"""Compute accounting (`store.compute`, `Store.record_compute`) on hand-computed cases, the
replay mark on a study, and store revision 0006, on SQLite and a real PostgreSQL server.
No Ray: the rows are written through the store's own writer and callback."""

from __future__ import annotations

import pandas as pd
import pytest
import sqlalchemy as sa
from alembic import command
from pgfixture import db_url, pg_server, pg_url  # noqa: F401  (fixtures)
from storeload import FakeTrial, describe, epoch_result

from rksearch import results
from rksearch.store import StoreCallback, StoreError, db, open_store
from rksearch.store.compute import TrialWork, account
from rksearch.store.compute import describe as describe_compute
from rksearch.store.queries import study_compute


def test_account_on_a_known_case() -> None:
    completed = TrialWork("completed", flops=2_000_000, train_images=1000, epochs=5, planned_epochs=5, seconds=50.0)
    pruned = TrialWork("pruned", flops=1_000_000, train_images=1000, epochs=2, planned_epochs=5, seconds=10.0)
    skipped = TrialWork("skipped", flops=9_000_000, train_images=None, epochs=0, planned_epochs=5, seconds=0.0)
    spent = account([completed, pruned, skipped], cpus=2, gpus=0)
    # 5 x 1000 x 3 x 2e6 + 2 x 1000 x 3 x 1e6; 60 s x 2 CPUs; 3 epochs not trained x 1000 x 3 x 1e6
    assert spent.columns() == {"epochs_trained": 7, "train_flops": 3.6e10, "cpu_hours": pytest.approx(120 / 3600),
                               "gpu_hours": 0.0, "epochs_saved": 3, "flops_saved": 9e9}
    line = describe_compute(spent.columns())
    assert line == ("compute: 7 epochs trained, 36 GFLOPs training (epochs x images x 3 x forward FLOPs), "
                    "0.0333 CPU hours (epoch seconds x reserved CPUs); ASHA pruning saved 3 epochs, 9 GFLOPs "
                    "(20% of training every trial to the end)")
    # a trained trial of unknown image count: the FLOPs are unknown, never guessed; the rest stands
    unknown = account([completed, TrialWork("completed", 10**6, None, 1, 1, 4.0)], cpus=1, gpus=1)
    assert unknown.train_flops is None and unknown.epochs_trained == 6 and unknown.gpu_hours == pytest.approx(54 / 3600)
    assert "training FLOPs unknown" in describe_compute(unknown.columns())
    assert "GPU hours (epoch seconds x reserved GPUs)" in describe_compute(unknown.columns())


def test_a_study_records_its_compute_from_its_rows(db_url: str, capsys: pytest.CaptureFixture) -> None:
    store = open_store(db_url)
    source = store.begin_study("elsewhere", "x")
    study = store.begin_study("s", "x")
    callback = StoreCallback(store, study, describe)
    for number, (k, epochs, status) in enumerate([(12, 4, "completed"), (13, 2, "pruned")]):
        trial = FakeTrial(f"t{number}", {"key": f"key{number}", "k": k, "optim": {"epochs": 4}})
        callback.on_trial_start(0, [], trial)
        for epoch in range(1, epochs + 1):  # 1.5 s each (epoch_result)
            trial.last_result = {**epoch_result(number, epoch), "train_images": 100,
                                 "trial_status": "completed" if epoch == 4 else "running"}
            callback.on_trial_result(0, [], trial, trial.last_result)
        callback.pruned = lambda trial_id: True
        callback.on_trial_complete(0, [], trial)
    # a trial the study's interruption left with 3 epochs and no end: what it trained still counts
    cut = FakeTrial("t2", {"key": "key2", "k": 10, "optim": {"epochs": 4}})
    callback.on_trial_start(0, [], cut)
    for epoch in (1, 2, 3):
        callback.on_trial_result(0, [], cut, {**epoch_result(2, epoch), "train_images": 100})
    # a trial reused from another study cost this one nothing
    other = describe({"key": "key9", "k": 20, "optim": {"epochs": 4}})
    store.trial_started(source, other)
    store.record_epoch(source, "key9", {**epoch_result(9, 1), "train_images": 100})
    store.trial_finished(source, "key9", "completed")
    store.link_reused(study, other, store.find_completed("key9"))
    assert set(results.load(db_url, "s", status=None)["status"]) == {"completed", "pruned", "running"}

    spent = store.record_compute(study, cpus=1, gpus=0.5)
    # flops per image are 1e6 x k (storeload.describe): 4 x 100 x 3 x 12e6 + 2 x 100 x 3 x 13e6 + 3 x 100 x 3 x 10e6
    assert spent.epochs_trained == 9 and spent.train_flops == pytest.approx(1.44e10 + 7.8e9 + 9e9)
    assert spent.cpu_hours == pytest.approx(9 * 1.5 / 3600) and spent.gpu_hours == pytest.approx(9 * 1.5 * 0.5 / 3600)
    assert spent.epochs_saved == 2 and spent.flops_saved == pytest.approx(2 * 100 * 3 * 13e6)
    stored = study_compute(db_url, "s")
    assert stored == {"replay_of": None, **{k: pytest.approx(v) for k, v in spent.columns().items()}}
    listed = results.studies(db_url).set_index("study").loc["s"]
    assert listed["epochs_trained"] == 9 and listed["epochs_saved"] == 2
    store.close()
    assert results.main(["show", "s", "--storage", db_url]) == 0
    assert capsys.readouterr().out.rstrip().endswith(
        # 7.8 of (14.4 + 7.8 + 9 spent + 7.8 saved) GFLOPs
        "ASHA pruning saved 2 epochs, 7.8 GFLOPs (20% of training every trial to the end)")


def test_a_replay_is_marked_and_resumed_only_as_one_and_never_reused(db_url: str) -> None:
    store = open_store(db_url)
    replay = store.begin_study("r", "x", replay_of="rec")
    info = describe({"key": "key1", "k": 12})
    store.trial_started(replay, info)
    store.record_epoch(replay, "key1", epoch_result(1, 1))
    store.trial_finished(replay, "key1", "completed")
    store.finish_study(replay, "interrupted")
    with pytest.raises(StoreError, match="was a replay of 'rec': resume it with --replay rec"):
        store.begin_study("r", "x", resume=True)
    assert store.begin_study("r", "x", resume=True, replay_of="rec") == replay
    store.begin_study("s", "x")
    with pytest.raises(StoreError, match="was not a replay: resume it without --replay"):
        store.begin_study("s", "x", resume=True, replay_of="rec")
    assert study_compute(db_url, "r")["replay_of"] == "rec"
    assert store.find_completed("key1") is None  # a simulated result is never reused as a trained one
    store.close()


def test_revision_0006_keeps_earlier_studies_with_unknown_compute(db_url: str) -> None:
    engine = db.create_engine(db_url)
    with engine.begin() as conn:
        command.upgrade(db._alembic_config(conn), "0005")
    old = sa.MetaData()
    old.reflect(engine)
    assert "replay_of" not in old.tables["rks_studies"].c  # really the schema before 0006
    with engine.begin() as conn:
        conn.execute(old.tables["rks_studies"].insert().values(
            id=1, name="old", study_text="x", study_hash="h", status="completed", code_version="0.1.0",
            environment={}, created_at=sa.func.current_timestamp()))  # fmt: skip
        conn.execute(old.tables["rks_trials"].insert().values(
            id=1, study_id=1, trial_key="key1", model_name="m", canonical="c", dims={}, config={"optim": {"epochs": 1}},
            status="completed", flops=10**6, best_val_acc=0.9, epochs_done=1))  # fmt: skip
        conn.execute(old.tables["rks_epochs"].insert().values(trial_id=1, epoch=1, val_acc=0.9, seconds=36.0,
                                                              recorded_at=sa.func.current_timestamp()))
    engine.dispose()

    store = open_store(db_url)  # migrates to 0006
    listed = results.studies(db_url).set_index("study").loc["old"]
    assert listed["replay_of"] is None and pd.isna(listed["epochs_trained"]) and pd.isna(listed["train_flops"])
    assert describe_compute(study_compute(db_url, "old")) is None  # nothing claimed for it
    spent = store.record_compute(1, cpus=1, gpus=0)  # its images were never recorded: FLOPs unknown
    assert spent.train_flops is None and spent.epochs_trained == 1 and spent.cpu_hours == pytest.approx(0.01)
    store.close()
