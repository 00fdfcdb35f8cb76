"""Alembic migrations, run in code by :mod:`feedpub.store.migrate` (no alembic.ini)."""
