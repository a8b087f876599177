"""Reuse provenance on trials (``reused_from_id``) and training throughput on epochs.

Both are nullable additions, so rows written at revision 0001 stay valid as they are: their
trials were trained (not copied) and their throughput was not measured.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("trials", sa.Column("reused_from_id", sa.Integer))
    op.create_index("ix_trials_reused_from_id", "trials", ["reused_from_id"])
    op.add_column("epochs", sa.Column("images_per_s", sa.Float))

