"""The current SQL schema: studies, trials, per-epoch metrics (``rks_*`` tables).

These tables are what the code reads and writes *now*.  An existing database gets there through
the Alembic revisions in ``migrations/versions``; a database without our tables gets this
metadata directly, stamped at the newest revision (`db.migrate`: revision 0001 would create a
``studies`` table, a name Optuna's schema may already hold).  A test compares a database
migrated from nothing with this metadata, so the two cannot drift apart.

SQLAlchemy Core tables rather than ORM classes: every write is a dialect upsert
(``INSERT ... ON CONFLICT``) and every read a select into pandas, so mapped objects would only
add a second copy of each row.

Every name is ours alone (revision 0005): the tables are ``rks_*`` and the Alembic version
table is `VERSION_TABLE`, so Optuna's RDB schema (its own ``studies``, ``trials``, ...,
``alembic_version``) lives in the same database beside ours, and each side migrates its own.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

#: JSON documents (search dimensions, configs, environments): JSONB on PostgreSQL so they
#: can be queried and indexed there, plain JSON text elsewhere.
JSONDoc = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

metadata = sa.MetaData()

#: the Alembic version table of this schema (Optuna's RDBStorage keeps ``alembic_version``)
VERSION_TABLE = "rksearch_alembic_version"
#: where revisions 0001-0004 kept theirs; `db.migrate` carries a revision of ours over from it
LEGACY_VERSION_TABLE = "alembic_version"

studies = sa.Table(
    "rks_studies",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("study_text", sa.Text, nullable=False),
    sa.Column("study_hash", sa.String(64), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("code_version", sa.String(50), nullable=False),
    sa.Column("environment", JSONDoc, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    # revision 0006: the recorded study this one replayed (`rksearch.search.replay`), by name;
    # provenance only, as `reused_from_id`: a replay stays readable when its recording is deleted
    sa.Column("replay_of", sa.String(200)),
    # revision 0006: the compute the study spent (a replay: the recorded compute it simulated),
    # computed from its stored rows when it finishes (`store.compute`); NULL before 0006
    sa.Column("epochs_trained", sa.BigInteger),
    sa.Column("train_flops", sa.Float),
    sa.Column("cpu_hours", sa.Float),
    sa.Column("gpu_hours", sa.Float),
    # what ASHA's pruned trials did not train, against training each to its last epoch
    sa.Column("epochs_saved", sa.BigInteger),
    sa.Column("flops_saved", sa.Float),
)

trials = sa.Table(
    "rks_trials",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("study_id", sa.Integer, sa.ForeignKey("rks_studies.id", ondelete="CASCADE"), nullable=False),
    sa.Column("trial_key", sa.String(128), nullable=False),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("canonical", sa.Text, nullable=False),
    sa.Column("dims", JSONDoc, nullable=False),
    sa.Column("config", JSONDoc, nullable=False),
    sa.Column("params", sa.BigInteger),
    sa.Column("flops", sa.BigInteger),
    sa.Column("macs", sa.BigInteger),
    sa.Column("seed", sa.Integer),
    # a rksearch.training.status.TrialStatus value
    sa.Column("status", sa.String(20), nullable=False),
    # the error text of a failed trial, or the reason a trial was skipped
    sa.Column("error", sa.Text),
    # revision 0003: why a failed trial failed, one of rksearch.training.failures.CATEGORIES
    sa.Column("failure", sa.String(30)),
    # the selection metric (validation: a holdout of train, or the test set where a study says so)
    sa.Column("best_val_acc", sa.Float),
    sa.Column("final_val_acc", sa.Float),
    # revision 0004: the epoch validation chose, and the test set evaluated once at the end on its
    # weights (test_acc) and on the final ones (test_acc_final); nothing searches on these
    sa.Column("best_epoch", sa.Integer),
    sa.Column("test_acc", sa.Float),
    sa.Column("test_acc_final", sa.Float),
    sa.Column("epochs_done", sa.Integer, nullable=False, server_default="0"),
    sa.Column("wall_seconds", sa.Float),
    sa.Column("device", sa.String(100)),
    # the Ray node id that ran the trial's latest epoch (after a failover: the one that finished it)
    sa.Column("node", sa.String(200)),
    sa.Column("started_at", sa.DateTime(timezone=True)),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    # revision 0002: the trial this row was copied from by `reuse: true` (provenance only, not a
    # foreign key: the copy stays valid when the source study is deleted)
    sa.Column("reused_from_id", sa.Integer, index=True),
    # revision 0004: the checkpoint directories Tune keeps (the best epoch's and the last), and
    # what the trial ran on and with, captured by its worker (`environment.trial_environment`)
    sa.Column("best_checkpoint", sa.Text),
    sa.Column("last_checkpoint", sa.Text),
    sa.Column("code_version", sa.String(50)),
    sa.Column("environment", JSONDoc),
    # revision 0006: training images per epoch, as the trial's worker reported them (the
    # training FLOPs of `store.compute` are epochs x these x 3 x forward FLOPs)
    sa.Column("train_images", sa.Integer),
    # the unique constraints keep their 0001 names: Optuna names none of its own (no clash), and
    # renaming one on SQLite means rebuilding the table (see revision 0005)
    sa.UniqueConstraint("study_id", "trial_key", name="uq_trials_study_key"),
    sa.Index("ix_rks_trials_trial_key_status", "trial_key", "status"),
)

epochs = sa.Table(
    "rks_epochs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("trial_id", sa.Integer, sa.ForeignKey("rks_trials.id", ondelete="CASCADE"), nullable=False),
    sa.Column("epoch", sa.Integer, nullable=False),
    sa.Column("train_loss", sa.Float),
    sa.Column("train_acc", sa.Float),
    sa.Column("val_loss", sa.Float),
    sa.Column("val_acc", sa.Float),
    sa.Column("lr", sa.Float),
    sa.Column("seconds", sa.Float),
    # revision 0002: training throughput, for the overhead and speed benchmarks
    sa.Column("images_per_s", sa.Float),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("trial_id", "epoch", name="uq_epochs_trial_epoch"),
)
