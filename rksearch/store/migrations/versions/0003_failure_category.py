"""Why a trial failed, as a category (``trials.failure``: rksearch.training.failures).

Nullable: a failed trial recorded at revision 0002 has only its error text, and a resumed study
treats its unknown category as an infrastructure fault (it is tried again).
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("trials", sa.Column("failure", sa.String(30)))
