"""Initial schema: studies, trials, per-epoch metrics (the first revision of `rksearch.store.schema`)."""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSONDoc = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "studies",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("study_text", sa.Text, nullable=False),
        sa.Column("study_hash", sa.String(64), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("code_version", sa.String(50), nullable=False),
        sa.Column("environment", JSONDoc, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "trials",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("study_id", sa.Integer, sa.ForeignKey("studies.id", ondelete="CASCADE"), nullable=False),
        sa.Column("trial_key", sa.String(128), nullable=False),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("canonical", sa.Text, nullable=False),
        sa.Column("dims", JSONDoc, nullable=False),
        sa.Column("config", JSONDoc, nullable=False),
        sa.Column("params", sa.BigInteger),
        sa.Column("flops", sa.BigInteger),
        sa.Column("macs", sa.BigInteger),
        sa.Column("seed", sa.Integer),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("best_val_acc", sa.Float),
        sa.Column("final_val_acc", sa.Float),
        sa.Column("epochs_done", sa.Integer, nullable=False, server_default="0"),
        sa.Column("wall_seconds", sa.Float),
        sa.Column("device", sa.String(100)),
        sa.Column("node", sa.String(200)),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("study_id", "trial_key", name="uq_trials_study_key"),
    )
    op.create_index("ix_trials_trial_key_status", "trials", ["trial_key", "status"])
    op.create_table(
        "epochs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("trial_id", sa.Integer, sa.ForeignKey("trials.id", ondelete="CASCADE"), nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("train_loss", sa.Float),
        sa.Column("train_acc", sa.Float),
        sa.Column("val_loss", sa.Float),
        sa.Column("val_acc", sa.Float),
        sa.Column("lr", sa.Float),
        sa.Column("seconds", sa.Float),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("trial_id", "epoch", name="uq_epochs_trial_epoch"),
    )

