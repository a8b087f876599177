"""Optuna in the same database: our schema beside Optuna's RDB schema, and every study mirrored.

The schema tests run on SQLite and on a real PostgreSQL server (`db_url`); a database written
before revision 0005 is built with the real revisions, as the rksearch of its time left it.
"""

from __future__ import annotations

from datetime import datetime, timezone

import optuna
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from pgfixture import db_url, pg_server, pg_url  # noqa: F401  (fixtures)

from rksearch import results
from rksearch.store import db, open_store
from rksearch.store.schema import LEGACY_VERSION_TABLE, VERSION_TABLE

optuna.logging.set_verbosity(optuna.logging.WARNING)

#: what the rows of the old database hold, read back through `results` after the migration
OLD_TRIALS = [{"trial_key": "key0001", "k": 12, "best_val_acc": 0.9, "epochs": 2},
              {"trial_key": "key0002", "k": 16, "best_val_acc": 0.8, "epochs": 1}]


def _database_before_0005(url: str, revision: str) -> None:
    """A database at `revision` with one study, two trials and three epochs, its revision in
    ``alembic_version`` where rksearch before 0005 kept it."""
    engine = db.create_engine(url)
    with engine.begin() as conn:
        config = db._alembic_config(conn)
        command.upgrade(config, revision)
        sa.Table(VERSION_TABLE, sa.MetaData(), autoload_with=conn).drop(conn)
        MigrationContext.configure(conn).stamp(ScriptDirectory.from_config(config), revision)
        old = sa.MetaData()
        old.reflect(conn, only=["studies", "trials", "epochs"])
        conn.execute(old.tables["studies"].insert().values(
            id=1, name="old", study_text="x", study_hash="h", status="completed", code_version="0.0.1",
            environment={}, created_at=sa.func.current_timestamp()))  # fmt: skip
        for number, trial in enumerate(OLD_TRIALS, 1):
            conn.execute(old.tables["trials"].insert().values(
                id=number, study_id=1, trial_key=trial["trial_key"], model_name="m", canonical="c",
                dims={"k": trial["k"]}, config={}, status="completed", best_val_acc=trial["best_val_acc"],
                epochs_done=trial["epochs"]))  # fmt: skip
        at = datetime.now(timezone.utc)
        conn.execute(old.tables["epochs"].insert(), [
            {"trial_id": trial, "epoch": epoch, "val_acc": acc, "recorded_at": at}
            for trial, epoch, acc in ((1, 1, 0.85), (1, 2, 0.9), (2, 1, 0.8))])
    engine.dispose()


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _optuna_round_trip(url: str, name: str) -> None:
    """Optuna's own storage on `url`: a study with one told trial, read back by `load_study`."""
    storage = optuna.storages.RDBStorage(url)
    try:
        study = optuna.create_study(study_name=name, storage=storage)
        study.tell(study.ask({"x": optuna.distributions.FloatDistribution(0, 1)}), 0.5)
        assert len(optuna.load_study(study_name=name, storage=storage).trials) == 1
    finally:
        storage.engine.dispose()


def test_a_database_at_0002_migrates_in_place_and_optuna_opens_it(db_url: str) -> None:
    _database_before_0005(db_url, "0002")
    with pytest.raises(Exception):  # what Optuna did to such a database: refused it half-way
        optuna.storages.RDBStorage(db_url)
    open_store(db_url).close()
    loaded = results.load(db_url, "old")
    assert loaded[["trial_key", "k", "best_val_acc", "epochs"]].to_dict("records") == OLD_TRIALS
    assert results.load_epochs(db_url, "old")["val_acc"].tolist() == [0.85, 0.9, 0.8]
    assert LEGACY_VERSION_TABLE not in _tables(db_url)  # it held only ours: Optuna may stamp its own

    _optuna_round_trip(db_url, "theirs")
    assert {"studies", "trials", "rks_studies", "rks_trials", "rks_epochs", VERSION_TABLE} <= _tables(db_url)
    assert results.load(db_url, "old")["trial_key"].tolist() == ["key0001", "key0002"]  # opens again


def test_a_store_opens_on_a_database_optuna_created_first(db_url: str) -> None:
    _optuna_round_trip(db_url, "theirs")
    store = open_store(db_url)
    try:
        store.begin_study("ours", "x")
    finally:
        store.close()
    assert results.studies(db_url)["study"].tolist() == ["ours"]
    _optuna_round_trip(db_url, "theirs-too")  # their revision untouched: Optuna still opens it
