"""The results store on SQLite and on a real PostgreSQL server: schema, writes, concurrency."""

from __future__ import annotations

import json
import multiprocessing
import pickle
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from pgfixture import db_url, pg_server, pg_url  # noqa: F401  (fixtures)
from storeload import FakeTrial, describe, epoch_result, process_worker, run_trials, val_acc

from rksearch import results
from rksearch.store import Store, StoreCallback, StoreError, db, open_store
from rksearch.store import callback as callback_module
from rksearch.store.journal import Journal
from rksearch.store.schema import VERSION_TABLE, metadata
from rksearch.store.urls import mask_in_text, redact

N_WORKERS = 8
N_EPOCHS = 4


def _count(url: str, table: str) -> int:
    store = open_store(url)
    try:
        with store.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(sa.table(table))).scalar_one()
    finally:
        store.close()


def _overlapping_work() -> list[list[int]]:
    """Worker w writes trials 2w and 2w+1 and re-writes 2w+2, so every trial has two writers."""
    n_trials = 2 * N_WORKERS
    return [[2 * w, 2 * w + 1, (2 * w + 2) % n_trials] for w in range(N_WORKERS)]


def _assert_all_written(url: str, study: str) -> None:
    df = results.load(url, study, status=None)
    assert len(df) == 2 * N_WORKERS and df["trial_key"].is_unique
    assert set(df["status"]) == {"completed"}
    assert (df["epochs"] == N_EPOCHS).all()
    epochs = results.load_epochs(url, study)
    assert len(epochs) == 2 * N_WORKERS * N_EPOCHS
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    assert _count(url, "rks_epochs") == 2 * N_WORKERS * N_EPOCHS  # nothing outside the study either
    for row in df.itertuples():
        number = int(row.trial_key[3:])
        assert row.final_val_acc == pytest.approx(val_acc(number, N_EPOCHS))


# --------------------------------------------------------------------------- schema


def _upgrade_to(url: str, revision: str) -> None:
    engine = db.create_engine(url)
    with engine.begin() as conn:
        command.upgrade(db._alembic_config(conn), revision)
    engine.dispose()


def test_migration_from_0001_keeps_data(db_url: str) -> None:
    _upgrade_to(db_url, "0001")
    engine = db.create_engine(db_url)
    old = sa.MetaData()
    old.reflect(engine)
    assert "reused_from_id" not in old.tables["trials"].c  # really the old schema
    now = sa.func.now()
    with engine.begin() as conn:
        conn.execute(old.tables["studies"].insert().values(
            id=1, name="old", study_text="x", study_hash="h", status="completed", code_version="0.0.1",
            environment={}, created_at=sa.func.current_timestamp()))  # fmt: skip
        conn.execute(old.tables["trials"].insert().values(
            id=1, study_id=1, trial_key="key0001", model_name="m", canonical="c", dims={"k": 12}, config={},
            status="completed", best_val_acc=0.9, epochs_done=1))  # fmt: skip
        conn.execute(old.tables["epochs"].insert().values(trial_id=1, epoch=1, val_acc=0.9, recorded_at=now))
    engine.dispose()

    store = open_store(db_url)
    df = results.load(db_url, "old")
    assert df[["trial_key", "k", "best_val_acc", "epochs"]].to_dict("records") == [
        {"trial_key": "key0001", "k": 12, "best_val_acc": 0.9, "epochs": 1}
    ]
    assert df["reused_from"].isna().all()
    store.record_epoch(1, "key0001", {"epoch": 2, "val_acc": 0.95, "images_per_s": 10.0})  # new column
    assert results.load_epochs(db_url, "old")["images_per_s"].tolist()[-1] == 10.0
    store.close()


def test_migrated_schema_equals_metadata(db_url: str) -> None:
    """Every revision from nothing gives what a fresh database is given (the metadata)."""
    _upgrade_to(db_url, "head")
    store = open_store(db_url)
    with store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "version_table": VERSION_TABLE})
        assert compare_metadata(context, metadata) == []
    store.close()


def test_newer_schema_is_refused(db_url: str) -> None:
    open_store(db_url).close()
    engine = db.create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.table(VERSION_TABLE, sa.column("version_num")).update().values(version_num="9999"))
    engine.dispose()
    with pytest.raises(StoreError, match="'9999'.*newer"):
        open_store(db_url)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "url, says",
    [
        ("postgresql+psycopg://ada:Secr3tPw@127.0.0.1:{port}/rk", "cannot open"),
        ("not a url", "invalid database URL"),
        ("mysql://ada:Secr3tPw@localhost/rk", "unsupported database"),
        ("sqlite:////no/such/dir/rk.db", "does not exist"),
    ],
)
def test_unusable_url_is_one_clear_line_without_password(url: str, says: str) -> None:
    with pytest.raises(StoreError) as caught:
        open_store(url.format(port=_free_port()))
    message = str(caught.value)
    assert says in message and "\n" not in message
    assert "Secr3tPw" not in message


def test_display_url_masks_password() -> None:
    assert redact("postgresql+psycopg://ada:Secr3tPw@db/rk") == "postgresql+psycopg://ada:***@db/rk"


def test_a_message_quoting_an_unknown_url_has_its_password_masked() -> None:
    text = "cannot open postgresql+psycopg://ada:Secr3tPw@db:5432/rk (and sqlite:///a.db, mysql://bo:x@h)"
    masked = "cannot open postgresql+psycopg://ada:***@db:5432/rk (and sqlite:///a.db, mysql://bo:***@h)"
    assert mask_in_text(text) == masked
    assert mask_in_text("user ada: no password in host:port@x") == "user ada: no password in host:port@x"


# --------------------------------------------------------------------------- writes


def test_study_lifecycle(db_url: str) -> None:
    store = open_store(db_url)
    study = store.begin_study("s", "search: grid\n")
    with pytest.raises(StoreError, match="already exists.*--resume"):
        store.begin_study("s", "search: grid\n")
    with pytest.raises(StoreError, match="already exists.*--resume"):  # asked before anything starts
        store.check_begin("s")
    with pytest.raises(StoreError, match="not a replay"):
        store.check_begin("s", resume=True, replay_of="recorded")
    store.check_begin("s", resume=True)
    store.check_begin("not-yet")
    assert set(results.studies(db_url)["study"]) == {"s"}  # asking wrote nothing
    store.finish_study(study, "interrupted")
    assert store.begin_study("s", "search: grid\n", resume=True) == study
    assert store.begin_study("new", "x", resume=True) != study  # resume of a missing study creates it
    ls = results.studies(db_url).set_index("study")
    assert ls.loc["s", "status"] == "running" and pd.isna(ls.loc["s", "finished_at"])
    with store.engine.connect() as conn:
        env = conn.execute(sa.text("SELECT environment FROM rks_studies WHERE name = 's'")).scalar_one()
    env = env if isinstance(env, dict) else json.loads(env)  # SQLite: JSON text
    assert {"python", "hostname", "devices", "packages"} <= set(env)
    assert env["packages"]["sqlalchemy"] == sa.__version__
    store.close()


def test_node_is_the_ray_node_of_the_latest_epoch(db_url: str) -> None:
    """Tune knows no node IP when a local trial starts; the trainable reports its node id per
    epoch, and after a failover the trial's row names the node that went on with it."""
    store = open_store(db_url)
    study = store.begin_study("s", "x")
    info = describe({"key": "key0001", "k": 12})
    store.trial_started(study, info)  # node unknown at start
    assert results.load(db_url, status=None)["node"].isna().all()
    store.record_epoch(study, "key0001", {**epoch_result(1, 1), "node_id": "a" * 56})
    assert results.load(db_url, status=None)["node"].tolist() == ["a" * 56]
    without_node = {k: v for k, v in epoch_result(1, 2).items() if k != "node_id"}
    store.record_epoch(study, "key0001", without_node)  # a result without a node keeps it
    assert results.load(db_url, status=None)["node"].tolist() == ["a" * 56]
    store.record_epoch(study, "key0001", {**epoch_result(1, 3), "node_id": "b" * 56})
    assert results.load(db_url, status=None)["node"].tolist() == ["b" * 56]
    store.trial_started(study, info)  # a retry starting: the node is kept until it reports
    assert results.load(db_url, status=None)["node"].tolist() == ["b" * 56]
    store.close()


def test_epoch_redelivery_is_idempotent_and_nan_is_null(db_url: str) -> None:
    store = open_store(db_url)
    study = store.begin_study("s", "x")
    info = describe({"key": "key0001", "k": 12})
    store.trial_started(study, info)
    first_start = results.load(db_url, status=None)["started_at"].iloc[0]
    store.trial_started(study, info, node="10.0.0.9")  # a retry keeps the first start time
    for metrics in [epoch_result(1, 1), epoch_result(1, 2), epoch_result(1, 1), epoch_result(1, 2)]:
        store.record_epoch(study, "key0001", metrics)
    store.record_epoch(study, "key0001", {**epoch_result(1, 2), "train_loss": float("nan")})
    epochs = results.load_epochs(db_url)
    assert epochs["epoch"].tolist() == [1, 2]
    assert pd.isna(epochs["train_loss"].iloc[1])
    trial = results.load(db_url, status=None).iloc[0]
    assert trial["epochs"] == 2 and trial["status"] == "running" and trial["node"] == "node-a"  # the epochs' node
    assert trial["started_at"] == first_start
    # an old epoch arriving late changes neither the final accuracy nor the count
    store.record_epoch(study, "key0001", epoch_result(1, 1))
    trial = results.load(db_url, status=None).iloc[0]
    assert trial["final_val_acc"] == pytest.approx(val_acc(1, 2)) and trial["epochs"] == 2
    store.close()


def test_reuse_across_studies(db_url: str) -> None:
    store = open_store(db_url)
    first = store.begin_study("first", "x")
    run_trials(StoreCallback(store, first, describe), [1, 2], N_EPOCHS, redeliver=False)
    store.trial_started(first, describe({"key": "key0003", "k": 12}))  # never completed
    assert store.find_completed("key0003") is None
    source = store.find_completed("key0001")
    assert source is not None

    second = store.begin_study("second", "x")
    store.link_reused(second, describe({"key": "key0001", "k": 13}), source)
    third = store.begin_study("third", "x")
    assert store.find_completed("key0001") == source  # the trained trial, not the copy
    copy_id = results.load(db_url, "second")["trial_id"].iloc[0]
    store.link_reused(third, describe({"key": "key0001", "k": 13}), int(copy_id))

    for study in ("second", "third"):
        df = results.load(db_url, study)
        assert df["reused_from"].tolist() == [source]  # always the trained one
        assert df["final_val_acc"].iloc[0] == pytest.approx(val_acc(1, N_EPOCHS))
        assert len(results.load_epochs(db_url, study)) == N_EPOCHS
    assert store.trial_statuses(second) == {"key0001": "completed"}
    assert len(results.load_epochs(db_url, "first")) == 2 * N_EPOCHS  # source untouched
    store.close()


# --------------------------------------------------------------------------- callback


def test_callback_maps_trial_outcomes(db_url: str, tmp_path: Path) -> None:
    store = open_store(db_url)
    study = store.begin_study("s", "x")
    # the scheduler stopped "pruned"; "stopped" ended with the study (Ctrl-C): not pruned, unfinished
    callback = StoreCallback(store, study, describe, pruned=lambda trial_id: trial_id == "pruned")
    names = ("done", "bad", "pruned", "stopped", "crash", "skip")
    trials = {name: FakeTrial(name, {"key": name, "k": 12}) for name in names}
    for trial in trials.values():
        callback.on_trial_start(0, [], trial)
        callback.on_trial_result(0, [], trial, epoch_result(1, 1))
    store.record_skipped(study, describe({"key": "skip", "k": 12}), "too many FLOPs")
    callback.on_trial_result(0, [], trials["skip"], {"trial_status": "skipped", "epoch": 2})
    trials["done"].last_result = {"trial_status": "completed"}
    trials["bad"].last_result = {"trial_status": "failed", "error": "CUDA out of memory"}
    trials["pruned"].last_result = {"trial_status": "running"}
    trials["stopped"].last_result = {"trial_status": "running"}
    trials["skip"].last_result = {"trial_status": "skipped"}
    error_file = tmp_path / "error.txt"
    error_file.write_text("x" * 10_000 + "ValueError: boom")
    trials["crash"].error_file = str(error_file)
    for name in ("done", "bad", "pruned", "stopped", "skip"):
        callback.on_trial_complete(0, [], trials[name])
    callback.on_trial_error(0, [], trials["crash"])

    df = results.load(db_url, status=None).set_index("trial_key")
    assert df["status"].to_dict() == {"done": "completed", "bad": "failed", "pruned": "pruned",
                                      "stopped": "running", "crash": "failed", "skip": "skipped"}  # fmt: skip
    assert df.loc["bad", "error"] == "CUDA out of memory"
    assert (df.loc["bad", "failure"], df.loc["crash", "failure"]) == ("out_of_memory", "error")
    assert df["failure"].drop(["bad", "crash"]).isna().all()
    assert df.loc["crash", "error"].endswith("ValueError: boom") and len(df.loc["crash", "error"]) < 4100
    assert df.loc["skip", "error"] == "too many FLOPs"
    assert df.loc["done", "wall_seconds"] >= 0 and df.loc["done", "node"] == "node-a"
    assert df.loc["done", "params"] == 12_000 and df.loc["done", "k"] == 12
    store.close()


def test_callback_retries_transient_errors_and_never_raises(tmp_path: Path, monkeypatch, caplog) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    store = open_store(url)
    study = store.begin_study("s", "x")
    monkeypatch.setattr(callback_module, "RETRY_DELAYS_S", (0.0, 0.0))
    real = store.trial_started
    failures = iter([True, True])  # two failures, then the real write

    def flaky(*args):
        if next(failures, False):
            raise sa.exc.OperationalError("INSERT", {}, Exception("database is locked"))
        real(*args)

    monkeypatch.setattr(store, "trial_started", flaky)
    callback = StoreCallback(store, study, describe)
    callback.on_trial_start(0, [], FakeTrial("a", {"key": "a", "k": 12}))
    assert store.trial_statuses(study) == {"a": "running"}

    monkeypatch.setattr(store, "trial_started", lambda *a: (_ for _ in ()).throw(
        sa.exc.OperationalError("INSERT", {}, Exception("server closed the connection"))))  # fmt: skip
    callback.on_trial_start(0, [], FakeTrial("b", {"key": "b", "k": 12}))  # gives up, no raise
    assert callback.fatal is not None and "server closed the connection" in callback.fatal  # no journal: stop

    journal = Journal(tmp_path / "journal.jsonl")
    kept = StoreCallback(store, study, describe, journal)
    kept.on_trial_start(0, [], FakeTrial("b", {"key": "b", "k": 12}))
    assert kept.fatal is None and [e["method"] for e in journal.entries()] == ["trial_started"]
    assert "keeping results in" in caplog.text and store.trial_statuses(study) == {"a": "running"}
    monkeypatch.setattr(store, "trial_started", real)  # the database is back: the next write flushes
    kept.on_trial_start(0, [], FakeTrial("c", {"key": "c", "k": 12}))
    assert store.trial_statuses(study) == {"a": "running", "b": "running", "c": "running"}
    assert not journal.pending()
    store.close()


# --------------------------------------------------------------------------- concurrency


def test_eight_writer_threads_lose_nothing(db_url: str) -> None:
    store = open_store(db_url)
    study = store.begin_study("threads", "x")
    errors: list[BaseException] = []

    def work(numbers: list[int]) -> None:
        try:
            run_trials(StoreCallback(store, study, describe), numbers, N_EPOCHS)
        except BaseException as exc:  # surfaced below: a thread's exception is otherwise lost
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(numbers,)) for numbers in _overlapping_work()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    _assert_all_written(db_url, "threads")
    store.close()


def test_eight_writer_processes_lose_nothing(db_url: str) -> None:
    store = open_store(db_url)
    study = store.begin_study("procs", "x")
    store.close()
    context = multiprocessing.get_context("fork")  # children inherit the imports: fast start
    processes = [context.Process(target=process_worker, args=(db_url, study, numbers, N_EPOCHS))
                 for numbers in _overlapping_work()]  # fmt: skip
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [p.exitcode for p in processes] == [0] * N_WORKERS
    _assert_all_written(db_url, "procs")


def test_reader_during_writes_sees_consistent_data(db_url: str) -> None:
    store = open_store(db_url)
    study = store.begin_study("live", "x")
    done = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            run_trials(StoreCallback(store, study, describe), list(range(12)), 6, redeliver=False)
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    writer = threading.Thread(target=write)
    writer.start()
    reads = 0
    while not done.is_set() or reads < 3:
        trials = results.load(db_url, "live", status=None)
        epochs = results.load_epochs(db_url, "live")  # read after `trials`: can only hold more
        for row in trials.itertuples():
            number = int(row.trial_key[3:])
            # the trial summary and its epochs are written in one transaction
            if row.epochs:
                assert row.final_val_acc == pytest.approx(val_acc(number, row.epochs))
                assert row.best_val_acc == pytest.approx(val_acc(number, row.epochs))
            seen = epochs[epochs["trial_id"] == row.trial_id]["epoch"].tolist()
            assert seen == list(range(1, len(seen) + 1)) and len(seen) >= row.epochs
        reads += 1
    writer.join()
    assert not errors and reads >= 3
    final = results.load(db_url, "live")
    assert len(final) == 12 and (final["epochs"] == 6).all()
    store.close()


def test_callback_pickles_without_password_and_reconnects(db_url: str) -> None:
    """Ray pickles callbacks into tuner.pkl: no engine, no password, and it must still work."""
    store = open_store(db_url)
    study = store.begin_study("s", "x")
    callback = StoreCallback(store, study, describe)
    unconnected = Store(db.create_engine("postgresql+psycopg://ada:Secr3tPw@127.0.0.1:1/rk"))
    frozen = pickle.dumps(StoreCallback(unconnected, study, describe))
    assert b"Secr3tPw" not in frozen and b"ada@127.0.0.1:1/rk" in frozen
    restored = pickle.loads(pickle.dumps(callback))
    assert restored.store is None
    run_trials(restored, [1], 2, redeliver=False)
    assert store.trial_statuses(study) == {"key0001": "completed"}
    store.close()


class RecordingMirror:
    """Stands in for `store.mirror.OptunaMirror` (tested with Optuna in test_optuna_storage and
    test_engine): here only when the callback syncs it, and which trials, are under test."""

    def __init__(self) -> None:
        self.synced: list[list[str]] = []

    def sync(self, store: Store, study_id: int, keys: list[str]) -> int:
        assert set(store.trial_statuses(study_id)) >= set(keys), "synced before the end was written"
        self.synced.append(sorted(keys))
        return len(keys)


def test_the_mirror_gets_the_first_end_at_once_then_ends_together_at_most_every_interval(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'm.db'}")
    study = store.begin_study("s", "x")
    now = [100.0]
    mirror = RecordingMirror()
    callback = StoreCallback(store, study, describe, mirror=mirror, clock=lambda: now[0])
    every = callback_module.MIRROR_EVERY_S

    def end(number: int) -> None:
        run_trials(callback, [number], 1, redeliver=False)

    end(1)
    assert mirror.synced == [["key0001"]]  # the first end: the Optuna study exists from then on
    now[0] += every / 3
    end(2)
    now[0] += every / 3
    end(3)
    callback.on_step_end(0, [])
    assert mirror.synced == [["key0001"]]  # too soon: waiting, but already in our tables
    assert store.trial_statuses(study) == {f"key000{n}": "completed" for n in (1, 2, 3)}
    now[0] += every / 3
    callback.on_step_end(0, [])  # Tune's loop: no trial needs to end for the waiting ones to go
    assert mirror.synced == [["key0001"], ["key0002", "key0003"]]
    now[0] += 10 * every
    callback.on_step_end(0, [])
    assert len(mirror.synced) == 2  # nothing waiting, no sync
    store.close()


# --------------------------------------------------------------------------- the journal


def test_a_failed_append_is_cut_back_and_a_torn_line_cannot_swallow_the_next(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    store = open_store(f"sqlite:///{tmp_path / 'r.db'}")
    entry = store.journal_entry("trial_finished", 1, "k", "completed")
    Journal(path).append(entry)
    size = path.stat().st_size
    # a real write failure: the file may not grow past 10 more bytes (RLIMIT_FSIZE, EFBIG)
    script = f"""
import resource, signal, sys
from rksearch.store.journal import Journal, JournalError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, ({size + 10}, resource.RLIM_INFINITY))
try:
    Journal({str(path)!r}).append({entry!r})
except JournalError as exc:
    print("refused:", exc)
    sys.exit(0)
sys.exit(1)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "cannot write the results journal" in done.stdout, done.stderr[-2000:]
    assert path.stat().st_size == size  # nothing half-written is left behind
    with open(path, "ab") as out:  # what a crash mid-append leaves: a line without its end
        out.write(b'{"db": "sqlite:///x", "meth')
    Journal(path).append({**entry, "args": [1, "k2", "completed"]})
    assert [e["args"][1] for e in Journal(path).entries()] == ["k", "k2"]  # the torn fragment alone is lost
    store.close()


def test_replay_keeps_order_and_time_and_sets_aside_what_the_database_never_takes(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'r.db'}")
    study = store.begin_study("s", "x")
    journal = Journal(tmp_path / "journal.jsonl")
    info = describe({"key": "a", "k": 12})
    written = [store.journal_entry("trial_started", study, info, None),
               store.journal_entry("record_epoch", study, "a", epoch_result(0, 1)),
               store.journal_entry("record_epoch", study, "never-started", epoch_result(0, 1)),  # a bug's write
               store.journal_entry("trial_finished", study, "a", "completed", None, 3.0, None)]
    written[0]["at"] = "2020-01-02T03:04:05+00:00"
    for entry in written:
        journal.append(entry)
    assert store.replay(journal) == 4 and not journal.pending()
    frame = results.load(store.engine.url.render_as_string(hide_password=False), "s")
    assert frame["epochs"].tolist() == [1] and frame["started_at"].iloc[0].year == 2020
    [rejected] = [json.loads(line) for line in journal.rejected_path.read_text().splitlines()]
    assert rejected["args"][1] == "never-started" and "trial_started must come first" in rejected["rejected"]

    journal.append({**written[1], "db": "postgresql+psycopg://u:***@elsewhere/db"})
    with pytest.raises(StoreError, match="elsewhere"):  # never replayed into the wrong database
        store.replay(journal)
    assert journal.pending()
    store.close()


# --------------------------------------------------------------------------- provenance


def test_a_trial_continued_by_other_code_is_mixed_and_never_reused_as_either(db_url: str) -> None:
    store = open_store(db_url)
    study = store.begin_study("upgraded", "x")
    info = describe({"key": "key0001", "k": 12})
    store.trial_started(study, info)
    store.record_epoch(study, "key0001", {"epoch": 1, "val_acc": 0.5, "environment": {"code_version": "0.1.0+aaa"}})
    assert store.find_completed("key0001") is None  # not completed yet
    store.record_epoch(study, "key0001", {"epoch": 2, "val_acc": 0.6, "environment": {"code_version": "0.1.0+aaa"}})
    store.record_epoch(study, "key0001", {"epoch": 3, "val_acc": 0.7, "environment": {"code_version": "0.1.0+bbb"}})
    store.trial_finished(study, "key0001", "completed")
    row = results.load(db_url, "upgraded", detail=True).iloc[0]
    assert row["code_version"] == "mixed"
    assert row["environment"]["code_version"] == "0.1.0+bbb" and row["environment"]["earlier"]["code_version"] == "0.1.0+aaa"
    assert store.find_completed("key0001", "0.1.0+aaa") is None and store.find_completed("key0001", "0.1.0+bbb") is None
    assert store.find_completed("key0001") == row["trial_id"]  # reuse: any still finds it
    store.close()


def test_a_dirty_checkout_names_its_changes(tmp_path: Path) -> None:
    """Two different sets of uncommitted changes on one commit are two code versions."""
    from rksearch.training import environment

    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    git("init", "-q")
    (tmp_path / "f.py").write_text("x = 1\n")
    git("add", "f.py")
    git("commit", "-qm", "one")
    clean = environment._git_describe(tmp_path)
    (tmp_path / "f.py").write_text("x = 2\n")
    environment._git_describe.cache_clear()
    first = environment._git_describe(tmp_path)
    (tmp_path / "f.py").write_text("x = 3\n")
    environment._git_describe.cache_clear()
    second = environment._git_describe(tmp_path)
    environment._git_describe.cache_clear()
    assert "dirty" not in clean and first.startswith(clean + "-dirty.") and second.startswith(clean + "-dirty.")
    assert first != second


def test_a_journaled_checkpoint_location_is_recorded_on_replay(db_url: str, tmp_path: Path) -> None:
    """The database refused the write (a full disk): the checkpoint paths wait in the journal."""
    store = open_store(db_url)
    study = store.begin_study("ck", "x")
    store.trial_started(study, describe({"key": "key0001", "k": 12}))
    journal = Journal(tmp_path / "journal.jsonl")
    for path, best in (("/ck/run-1/t/checkpoint_000000", True), ("/ck/run-1/t/checkpoint_000001", False)):
        journal.append(json.loads(json.dumps(store.journal_entry("record_checkpoint", study, "key0001", path, best))))
    assert store.replay(journal) == 2 and not journal.pending()
    row = results.load(db_url, "ck", status=None).iloc[0]
    assert (row["best_checkpoint"], row["last_checkpoint"]) == ("/ck/run-1/t/checkpoint_000000",
                                                                "/ck/run-1/t/checkpoint_000001")
    store.close()
