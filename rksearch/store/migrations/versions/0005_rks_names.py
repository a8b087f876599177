"""Our tables, indexes and sequences renamed ``rks_*``, so Optuna's RDB schema fits beside them.

Optuna's RDBStorage creates ``studies`` and ``trials`` of its own, and on PostgreSQL index,
primary-key and sequence names are global to the schema (Optuna's ``studies_pkey`` would clash
with ours).  Renames only: every row stays where it is, ids and foreign keys included (SQLite
and PostgreSQL both carry foreign keys over to a renamed table).

The two named unique constraints keep their 0001 names (``uq_trials_study_key``,
``uq_epochs_trial_epoch``): Optuna names none of its own, so they cannot clash, and on SQLite
renaming one means rebuilding the table, whose DROP would cascade-delete the epochs.
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TABLES = {"studies": "rks_studies", "trials": "rks_trials", "epochs": "rks_epochs"}

#: the indexes revisions 0001/0002 named, on the trials table: old name -> (new name, columns)
INDEXES = {
    "ix_trials_trial_key_status": ("ix_rks_trials_trial_key_status", ["trial_key", "status"]),
    "ix_trials_reused_from_id": ("ix_rks_trials_reused_from_id", ["reused_from_id"]),
}

#: what PostgreSQL named after the tables by itself (primary keys, the studies' unique name,
#: id sequences; foreign keys are per table but follow suit): old name -> new name
PG_RELATIONS = {f"{old}_{suffix}": f"{new}_{suffix}" for old, new in TABLES.items() for suffix in ("pkey", "id_seq")}
PG_RELATIONS["studies_name_key"] = "rks_studies_name_key"
PG_FOREIGN_KEYS = {"rks_trials": ("trials_study_id_fkey", "rks_trials_study_id_fkey"),
                   "rks_epochs": ("epochs_trial_id_fkey", "rks_epochs_trial_id_fkey")}


def upgrade() -> None:
    for old, new in TABLES.items():
        op.rename_table(old, new)
    if op.get_context().dialect.name == "postgresql":
        _rename_postgresql_names()
    else:  # SQLite cannot rename an index: build it again under its new name
        for old, (new, columns) in INDEXES.items():
            op.drop_index(old, table_name="rks_trials")
            op.create_index(new, "rks_trials", columns)


def _rename_postgresql_names() -> None:
    """Indexes (a primary key's or unique constraint's included) and sequences are relations,
    renamed in place; the names are constants of this file, quoted as identifiers."""
    for old, new in {**PG_RELATIONS, **{old: new for old, (new, _) in INDEXES.items()}}.items():
        kind = "SEQUENCE" if old.endswith("_seq") else "INDEX"
        op.execute(f'ALTER {kind} "{old}" RENAME TO "{new}"')
    for table, (old, new) in PG_FOREIGN_KEYS.items():
        op.execute(f'ALTER TABLE "{table}" RENAME CONSTRAINT "{old}" TO "{new}"')
