"""Alembic environment: always run online on the connection `db.migrate` hands over.

`db.migrate` opens the transaction (and, on PostgreSQL, takes an advisory lock inside it) before
calling Alembic, so concurrent openers of a fresh database serialise instead of racing to create
the same tables.  Alembic sees the transaction already open and runs inside it.  The revision
lives in our own version table: Optuna's RDBStorage keeps its own in ``alembic_version``.
"""

from alembic import context

from rksearch.store.schema import VERSION_TABLE, metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, version_table=VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
