"""Alembic revision scripts, oldest first by `down_revision` chain (0001 -> 0002 -> ...)."""
