"""Replays and compute accounting: which recorded study a study replayed, the compute each
study spent (and what ASHA saved), and each trial's training images per epoch.

All nullable: studies and trials recorded before revision 0006 have none of these; their
compute is simply unknown (`store.compute` leaves it NULL rather than guessing).
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for column in (
        sa.Column("replay_of", sa.String(200)),
        sa.Column("epochs_trained", sa.BigInteger),
        sa.Column("train_flops", sa.Float),
        sa.Column("cpu_hours", sa.Float),
        sa.Column("gpu_hours", sa.Float),
        sa.Column("epochs_saved", sa.BigInteger),
        sa.Column("flops_saved", sa.Float),
    ):
        op.add_column("rks_studies", column)
    op.add_column("rks_trials", sa.Column("train_images", sa.Integer))
