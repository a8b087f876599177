"""Alembic revisions of the results schema; applied by `rksearch.store.db.migrate` on open.

To change the schema: edit ``rksearch/store/schema.py``, then add ``versions/NNNN_<what>.py``
with ``revision = "NNNN"`` and ``down_revision`` = the previous one, whose ``upgrade()`` takes a
database of the previous revision to the new metadata (``test_schema_matches_migrations`` fails
until it does).  Revisions are frozen history (never edit a released one) and upgrade-only: a
database newer than the code is refused with a clear error, so there is no downgrade path to keep.
"""
