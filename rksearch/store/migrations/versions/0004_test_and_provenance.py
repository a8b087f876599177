"""Test accuracy reported apart from the validation that selects, the kept checkpoints, and each
trial's own environment and code version.

All nullable: trials recorded before revision 0004 have none of these (they were selected and
reported on one split), and `reuse` treats their unknown code version as different.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

JSONDoc = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    for column in (
        sa.Column("best_epoch", sa.Integer),
        sa.Column("test_acc", sa.Float),
        sa.Column("test_acc_final", sa.Float),
        sa.Column("best_checkpoint", sa.Text),
        sa.Column("last_checkpoint", sa.Text),
        sa.Column("code_version", sa.String(50)),
        sa.Column("environment", JSONDoc),
    ):
        op.add_column("trials", column)
