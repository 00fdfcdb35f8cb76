"""A private PostgreSQL schema per test or benchmark run (no pytest needed, so the
benchmarks can use it too)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa


@contextmanager
def scratch_schema(base_url: str, *, prefix: str = "scratch") -> Iterator[str]:
    """A PostgreSQL URL whose tables land in a new schema of their own, dropped on exit:
    tests and benchmarks share one database without seeing each other's rows."""
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base_url)
    with admin.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in base_url else "?"
    try:
        yield f"{base_url}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
