"""Connecting to the results database: URL checks, engine set-up, schema migration.

Everything that can go wrong before the first trial runs (a mistyped URL, a server that does not
answer, a database written by a newer rksearch) surfaces here as one `StoreError` with a
one-line message, so a study fails at start instead of after hours of training.  Messages carry
the URL with its password masked: credentials must never reach logs or the stored study.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL, Connection, Engine

from rksearch.errors import RksearchError
from rksearch.store.schema import LEGACY_VERSION_TABLE, VERSION_TABLE, metadata
from rksearch.store.urls import redact, scrub

log = logging.getLogger(__name__)

#: the dialects whose upsert (`INSERT ... ON CONFLICT`) the writer uses
SUPPORTED_BACKENDS = ("sqlite", "postgresql")

#: how long a SQLite writer waits for another writer's lock before failing (WAL readers never wait)
SQLITE_BUSY_TIMEOUT_S = 30.0

#: how long to wait for a PostgreSQL server before calling it unreachable
PG_CONNECT_TIMEOUT_S = 10

#: an arbitrary constant: the PostgreSQL advisory lock that serialises concurrent migrations
_MIGRATION_LOCK_ID = 0x726B7365  # "rkse"

_MIGRATIONS = Path(__file__).parent / "migrations"

#: execution option marking a connection as read-only: on SQLite it begins a deferred (shared)
#: transaction instead of taking the write lock up front
READ_ONLY = "rksearch_read_only"


class StoreError(RksearchError, RuntimeError):
    """The results database cannot be used; the message says why in one line."""


def _first_line(text: str) -> str:
    """The first non-blank line of a driver's message (the rest is SQL and tracebacks)."""
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(text).__name__


def _parse(url: str) -> URL:
    try:
        parsed = sa.make_url(url)
    except Exception as exc:
        raise StoreError(f"invalid database URL {redact(url)!r}: expected e.g. sqlite:///rksearch.db "
                         f"or postgresql+psycopg://user@host/db ({type(exc).__name__})") from None
    if parsed.get_backend_name() not in SUPPORTED_BACKENDS:
        raise StoreError(f"unsupported database {parsed.get_backend_name()!r} in {redact(parsed)}: "
                         f"use sqlite:///FILE or postgresql+psycopg://...")
    return parsed


def _sqlite_file(url: URL) -> Path | None:
    """The file of a SQLite URL, or None for an in-memory database."""
    if not url.database or url.database == ":memory:" or url.database.startswith("file:"):
        return None
    return Path(url.database)


def _configure_sqlite(engine: Engine) -> None:
    """WAL so readers never block the writer (nor it them), a busy timeout so writers queue.

    pysqlite's own transaction handling is switched off and replaced by explicit BEGINs: writes
    take the write lock at BEGIN (IMMEDIATE), so a read-then-write transaction cannot deadlock
    against another writer, and reads run in a real (deferred) transaction, so a reader sees one
    snapshot instead of pysqlite's statement-by-statement autocommit.
    """

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        # NORMAL is durable against a crash of the process (the study's failure mode); only a
        # power cut can lose the last commits, which a resumed study re-runs anyway.
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        read_only = conn.get_execution_options().get(READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def create_engine(url: str, *, create: bool = True) -> Engine:
    """An engine for `url`, configured for many short transactions from several threads.

    `create=False` refuses a SQLite file that does not exist yet (a reader's typo should not
    leave an empty database behind).  Raises StoreError for a bad URL or a missing driver.
    """
    parsed = _parse(url)
    if parsed.get_backend_name() == "sqlite":
        path = _sqlite_file(parsed)
        if path is not None and not path.exists():
            if not create:
                raise StoreError(f"no database at {path} ({redact(parsed)})")
            if not path.parent.is_dir():
                raise StoreError(f"cannot create {redact(parsed)}: directory {path.parent} does not exist")
        connect_args: dict = {"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}
    else:
        connect_args = {"connect_timeout": PG_CONNECT_TIMEOUT_S}
    try:
        engine = sa.create_engine(parsed, connect_args=connect_args)
    except Exception as exc:  # a missing driver (e.g. psycopg not installed), bad options
        raise StoreError(f"cannot use {redact(parsed)}: {scrub(_first_line(str(exc)), parsed)}") from None
    if parsed.get_backend_name() == "sqlite":
        _configure_sqlite(engine)
    return engine


@contextlib.contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A read-only transaction that sees one consistent snapshot and never blocks a writer."""
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        else:
            conn = conn.execution_options(**{READ_ONLY: True})
        with conn.begin():
            yield conn


def _alembic_config(conn: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["connection"] = conn
    return config


def _current_revision(conn: Connection, table: str = VERSION_TABLE) -> str | None:
    return MigrationContext.configure(conn, opts={"version_table": table}).get_current_revision()


def _adopt_legacy_revision(conn: Connection, scripts: ScriptDirectory) -> str | None:
    """Our revision where rksearch before 0005 kept it (Optuna's ``alembic_version``), moved to
    our own version table; None when that table is absent or holds Optuna's revision.

    The old table is dropped once our row leaves it (it only ever held ours), so that Optuna's
    RDBStorage finds no foreign revision there and initialises its own schema beside ours.
    """
    legacy = _current_revision(conn, LEGACY_VERSION_TABLE)
    if legacy is None or _known(legacy, scripts) is None:
        return None
    MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).stamp(scripts, legacy)
    old = sa.Table(LEGACY_VERSION_TABLE, sa.MetaData(), sa.Column("version_num", sa.String(32)))
    conn.execute(old.delete().where(old.c.version_num == legacy))
    if conn.execute(sa.select(sa.func.count()).select_from(old)).scalar_one() == 0:
        old.drop(conn)
    return legacy


def _known(revision: str, scripts: ScriptDirectory) -> object | None:
    """The revision script of `revision`, or None if it is not one of ours."""
    try:
        return scripts.get_revision(revision)
    except Exception:
        return None


def _check_known(revision: str | None, scripts: ScriptDirectory, url: URL) -> None:
    if revision is not None and _known(revision, scripts) is None:
        raise StoreError(
            f"{redact(url)} has schema revision {revision!r}, which this rksearch does not know "
            f"(written by a newer version?): upgrade rksearch to read it"
        )


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (creating it in a database without it).

    A quick read first, so opening an up-to-date database takes no write lock; the upgrade itself
    runs in one transaction under a lock (SQLite's write lock, a PostgreSQL advisory lock) and
    re-reads the revision inside it, so concurrent openers of a fresh database upgrade it once.
    A database written before revision 0005 has its revision carried over to our version table
    first.  One without our schema (empty, or Optuna's alone) gets the newest metadata and is
    stamped: replaying revision 0001 there would collide with Optuna's ``studies`` table.
    """
    scripts = ScriptDirectory.from_config(_alembic_config())
    head = scripts.get_current_head()
    with reading(engine) as conn:
        current = _current_revision(conn)
    _check_known(current, scripts, engine.url)
    if current == head:
        return
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK_ID)))
        current = _current_revision(conn) or _adopt_legacy_revision(conn, scripts)
        _check_known(current, scripts, engine.url)
        if current is None:
            log.info("creating the results schema in %s", redact(engine.url))
            metadata.create_all(conn)
            command.stamp(_alembic_config(conn), "head")
        elif current != head:
            log.info("upgrading %s schema from %s to %s", redact(engine.url), current, head)
            command.upgrade(_alembic_config(conn), "head")


def connect(url: str, *, create: bool = True) -> Engine:
    """An engine for `url` whose schema is at the newest revision; StoreError if that fails."""
    engine = create_engine(url, create=create)
    try:
        migrate(engine)
    except StoreError:
        engine.dispose()
        raise
    except Exception as exc:  # unreachable server, authentication, a file that is not a database
        engine.dispose()
        raise StoreError(f"cannot open {redact(engine.url)}: {driver_error(exc, engine.url)}") from None
    return engine


def driver_error(exc: BaseException, url: URL) -> str:
    """A database error in one line: the driver's own message, with `url`'s password scrubbed."""
    return scrub(_first_line(_driver_message(exc)), url)


def _driver_message(exc: BaseException) -> str:
    """The driver's own message when SQLAlchemy wrapped one (it is the informative part)."""
    original = getattr(exc, "orig", None)
    return str(original) if original is not None else str(exc)
